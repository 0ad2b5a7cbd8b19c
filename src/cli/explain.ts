// `offload explain`: what the hook would decide for a build right now, and for every other
// machine why not. It gathers the same state (slot locks, recent facts) and calls the same
// selection function as the hook's claim, so the answer cannot drift from what the hook does.
// It reads and connects nowhere a user other than the hook's cannot: such a user gets the
// decision without the build slots, which only the hook's user can see, and is told so.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import type { Command } from "commander";
import { loadConfig, type LoadedConfig } from "../config/load.js";
import { OffloadError } from "../errors.js";
import { reasonLine, reasonsWithFixes } from "../select/failures.js";
import { NO_REMOTE_BUILDS, checkRestrictionNames, interpretSettings, type HookSettings } from "../hook/settings.js";
import { parseDerivation } from "../nix/drv.js";
import { parseNixConfig } from "../remote/probes.js";
import { selectionInput } from "../select/current-state.js";
import { derivationName, readDurations } from "../select/durations.js";
import { machineState, readFacts, recordHash } from "../select/machine-facts.js";
import { selectMachine, type BuildRequest, type Decision, type SelectionInput } from "../select/select.js";
import { stateDir } from "../select/state-dir.js";
import { otherHookUser } from "./hook-user.js";

const run = promisify(execFile);

interface ExplainOptions {
  system?: string;
  features?: string;
  drv?: string;
  json?: boolean;
  config?: string;
  amWilling?: string;
  maxJobs?: string;
  guix?: boolean;
}

export function registerExplain(program: Command): void {
  program
    .command("explain")
    .description("which machine the build hook would choose for a build right now, and why not each other one")
    .option("--system <system>", "the derivation's system, e.g. x86_64-linux")
    .option("--features <a,b>", "its requiredSystemFeatures, comma-separated")
    .option("--drv <path>", "read system and requiredSystemFeatures from this .drv")
    .option("--am-willing <0|1>", "whether the daemon has a free local build slot (default: 1 unless max-jobs is 0)")
    .option("--max-jobs <n>", "the daemon's max-jobs (default: from nix show-config)")
    .option("--guix", 'a build guix-daemon offers (its machines are those with daemon: "guix")')
    .option("--config <file>", "machines.ts to use (default: $OFFLOAD_CONFIG or /etc/offload/machines.ts)")
    .option("--json", "print the decision as JSON")
    .action(explain);
}

async function explain(options: ExplainOptions): Promise<void> {
  const dir = stateDir();
  const hookUser = otherHookUser(dir);
  const config = await loadConfig({ config: options.config });
  // guix-daemon tells its hook only the system; Nix's settings are what its daemon would send.
  const settings: HookSettings = options.guix
    ? {
        ...interpretSettings(
          new Map([
            ["system", options.system ?? ""],
            ["max-jobs", options.maxJobs ?? "1"],
          ]),
          process.env,
        ),
        builders: { kind: "guix" },
      }
    : interpretSettings(await localNixSettings(options), process.env);
  checkRestrictionNames(settings.restriction, config.machines);
  const request = { ...(await buildRequest(options, settings.localState.maxJobs)), ...(options.guix ? { daemon: "guix" as const } : {}) };
  if (hookUser !== undefined) {
    const who = hookUser === 0 ? "root" : `uid ${hookUser}`;
    process.stderr.write(
      `offload: build slots in use are not seen: only ${who} may read ${dir}/slot-secret, from which their names derive; ` +
        `this decision takes every slot as free (run as ${who} to see them)\n`,
    );
  }
  const decision: Decision =
    settings.builders.kind === "none"
      ? { verdict: "decline-permanently", candidates: [], reasons: [], local: "the local machine builds everything", summary: NO_REMOTE_BUILDS }
      : selectMachine(hookUser === undefined ? await selectionInput(config, settings, request, dir) : inputWithoutSlots(config, settings, request, dir));
  const machines = reasonsWithFixes(decision.reasons, config.machines, request);
  if (options.json) {
    const { verdict, summary, local } = decision;
    const candidates = decision.candidates.map((m) => m.name);
    const slotsSeen = hookUser === undefined;
    process.stdout.write(
      `${JSON.stringify({ verdict, summary, local, request, localState: settings.localState, slotsSeen, candidates, machines }, null, 2)}\n`,
    );
    return;
  }
  const lines = [`${decision.verdict}: ${decision.summary}`, `local: ${decision.local}`];
  for (const reason of machines) {
    const mark = reason.code === "chosen" ? "✓" : reason.code === "slower" || reason.code === "local-better" ? "·" : "✗";
    lines.push(`${mark} ${reasonLine(reason)}`);
  }
  process.stdout.write(`${lines.join("\n")}\n`);
}

/**
 * The hook's state as another user may read it: recorded facts and durations, but no slot in
 * use (slots.ts names them with a secret only the hook's user can read, and would create it).
 */
function inputWithoutSlots(config: LoadedConfig, settings: HookSettings, request: BuildRequest, dir: string): SelectionInput {
  const now = Date.now();
  const states = new Map(config.machines.map((machine) => [machine.name, machineState(readFacts(dir, machine.name), 0, now, recordHash(machine))]));
  const estimate = request.drvPath === undefined ? undefined : readDurations(dir).get(derivationName(request.drvPath));
  const { localState, restriction, pollInterval } = settings;
  return { machines: config.machines, local: config.local, localState, request, states, restriction, estimate, pollInterval };
}

/** The request as the daemon would send it: from --drv, or from --system/--features. */
async function buildRequest(options: ExplainOptions, maxJobs: number): Promise<BuildRequest> {
  const list = (value: string | undefined) => (value ?? "").split(/[\s,]+/).filter((word) => word !== "");
  const amWilling = options.amWilling === undefined ? maxJobs > 0 : options.amWilling === "1";
  if (options.amWilling !== undefined && !["0", "1"].includes(options.amWilling)) {
    throw new OffloadError(`--am-willing takes 0 or 1, not ${JSON.stringify(options.amWilling)}`, { code: "usage" });
  }
  if (options.drv) {
    const drv = parseDerivation(await readFile(options.drv, "utf8"), options.drv);
    return {
      system: options.system ?? drv.platform,
      requiredFeatures: options.features === undefined ? list(drv.env.get("requiredSystemFeatures")) : list(options.features),
      amWilling,
      drvPath: options.drv,
    };
  }
  if (!options.system)
    throw new OffloadError("say what is being built: --system SYSTEM [--features a,b], or --drv PATH", {
      code: "usage",
      fix: "offload explain --system x86_64-linux --features kvm",
    });
  return { system: options.system, requiredFeatures: list(options.features), amWilling };
}

/** The settings the daemon would pass the hook, as the local Nix reads them; --max-jobs overrides. */
async function localNixSettings(options: ExplainOptions): Promise<Map<string, string>> {
  let text: string;
  try {
    text = (await run("nix", ["--extra-experimental-features", "nix-command", "show-config"], { timeout: 30_000 })).stdout;
  } catch (error) {
    throw new OffloadError(`cannot read the local Nix settings: ${(error as { stderr?: string }).stderr?.trim() || (error as Error).message}`, {
      code: "nix-config-unreadable",
      fix: "offload explain needs the local nix command (nix show-config) to know what the daemon would do",
      cause: error,
    });
  }
  const settings = parseNixConfig(text.split("\n"));
  if (options.maxJobs !== undefined) {
    if (!/^(\d+|auto)$/.test(options.maxJobs))
      throw new OffloadError(`--max-jobs takes a number or auto, not ${JSON.stringify(options.maxJobs)}`, { code: "usage" });
    settings.set("max-jobs", options.maxJobs);
  }
  return settings;
}
