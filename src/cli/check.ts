// `offload check`: load machines.ts through the whole pipeline and show what it defines,
// then (unless --static) diagnose every selected machine in parallel.
import { DEFAULTS } from "../defaults.js";
import type { Command } from "commander";
import type { BuildMachine } from "../../types/index.js";
import { checkDaemon, daemonLine } from "../check/daemon.js";
import { checkGuixDaemon } from "../store/local-guix-daemon.js";
import { machineAddress } from "../check/machine-status.js";
import type { GuixCheckKeys } from "../check/guix-steps.js";
import { readGuixAcl } from "../guix/acl.js";
import { guixSecretKeyPath, readGuixSecretKeyFile } from "../guix/keys.js";
import { STEPS, checkMachine, type CheckContext, type MachineReport } from "../check/machine-check.js";
import { createProgress } from "../check/progress.js";
import { loadConfig, type LoadedConfig } from "../config/load.js";
import { OffloadError, asOffloadError, formatLocation } from "../errors.js";
import { readSecretKeyFile } from "../nix/keys.js";
import { readAcl } from "../store/acl.js";
import { secretKeyPath } from "../files/config-dir.js";
import { checkPrivate } from "../files/safety.js";
import { forgetFailure } from "../select/machine-facts.js";
import { stateDir } from "../select/state-dir.js";
import { assertHookUser } from "./hook-user.js";
import { formatTable } from "./table.js";

interface CheckOptions {
  static?: boolean;
  config?: string;
  json?: boolean;
  minFree: string;
  maxClockSkew: string;
}

export function registerCheck(program: Command): void {
  program
    .command("check")
    .argument("[regex]", "check only the machines whose name matches")
    .description(
      "validate machines.ts, check that the local nix-daemon runs offload's hook, then test every machine: SSH, Nix, trust, features, a signed test build, load, disk, clock",
    )
    .option("--static", "check the configuration only, without contacting the machines")
    .option("--config <file>", "machines.ts to use (default: $OFFLOAD_CONFIG or /etc/offload/machines.ts)")
    .option("--json", "print the result as JSON")
    .option("--min-free <MiB>", "fail a machine with less free space in its store (the hook skips it then)", String(DEFAULTS.minFreeMiB))
    .option("--max-clock-skew <seconds>", "fail a machine whose clock differs more from ours", String(DEFAULTS.maxClockSkewS))
    .action(async (regex: string | undefined, options: CheckOptions) => {
      if (!options.static) assertHookUser(stateDir());
      const loaded = await checkStatic(options);
      if (!loaded || options.static) return;
      await checkRemote(loaded, selectMachines(loaded.machines, regex), options);
    });
}

async function checkStatic(options: CheckOptions): Promise<LoadedConfig | undefined> {
  let loaded: LoadedConfig;
  try {
    loaded = await loadConfig({ config: options.config });
  } catch (error) {
    if (!options.json) throw error;
    const failure = asOffloadError(error);
    const problems = failure.problems.length > 0 ? failure.problems : [failure];
    process.stdout.write(`${JSON.stringify({ ok: false, error: failure.message, problems: problems.map(problemJson) }, null, 2)}\n`);
    process.exitCode = 1;
    return undefined;
  }
  if (options.json) {
    if (options.static)
      process.stdout.write(`${JSON.stringify({ ok: true, config: loaded.path, machines: loaded.machines, local: loaded.local ?? null }, null, 2)}\n`);
    return loaded;
  }
  process.stdout.write(`${loaded.path}: ${loaded.machines.length} machine${loaded.machines.length === 1 ? "" : "s"}${loaded.fromCache ? " (cached)" : ""}\n`);
  if (loaded.machines.length > 0) process.stdout.write(`${machineTable(loaded.machines)}\n`);
  if (loaded.local) process.stdout.write(`local machine: speed ${loaded.local.speed}${loaded.local.enabled ? "" : " (disabled)"}\n`);
  return loaded;
}

export function selectMachines(machines: readonly BuildMachine[], regex: string | undefined): BuildMachine[] {
  if (regex === undefined) return [...machines];
  let pattern: RegExp;
  try {
    pattern = new RegExp(regex);
  } catch (error) {
    throw new OffloadError(`not a regular expression: ${regex} (${(error as Error).message})`, { code: "usage", fix: "quote it, e.g. 'build-0[12]'" });
  }
  const selected = machines.filter((machine) => pattern.test(machine.name));
  if (selected.length === 0) {
    throw new OffloadError(`no machine name matches /${regex}/`, {
      code: "no-machine",
      fix: `machines: ${machines.map((m) => m.name).join(", ") || "(none)"}`,
    });
  }
  return selected;
}

async function checkRemote(loaded: LoadedConfig, machines: BuildMachine[], options: CheckOptions): Promise<void> {
  const context: CheckContext = {
    signingKey: await ourSigningKey(),
    acl: await readAcl(),
    ...(await ourGuixKeys(machines)),
    minFreeBytes: numberOption(options.minFree, "--min-free") * 1024 * 1024,
    maxClockSkew: numberOption(options.maxClockSkew, "--max-clock-skew"),
  };
  // The local step first: machines are of no use if the daemon never asks offload's hook.
  // Which daemon: the one whose machines machines.ts lists (Nix's when it lists none).
  const guixOnly = loaded.machines.length > 0 && loaded.machines.every((machine) => machine.daemon === "guix");
  const daemon = guixOnly ? checkGuixDaemon() : await checkDaemon();
  if (!options.json) process.stdout.write(`\n${daemonLine(daemon)}\n`);
  if (daemon.status === "fail") process.exitCode = 1;
  if (machines.length === 0 && !options.json) return; // nothing to contact: the static part said it all
  if (!options.json) process.stdout.write(`\nchecking ${machines.length} machine${machines.length === 1 ? "" : "s"}:\n`);
  const progress = options.json
    ? undefined
    : createProgress(
        machines.map((m) => m.name),
        process.stdout,
      );
  // Never aborting on one machine: checkMachine reports failures instead of throwing.
  const reports = await Promise.all(
    machines.map(async (machine) => {
      const report = await checkMachine(machine, context, (step) => progress?.step(machine.name, step));
      // Logged in: the hook's back-off from an earlier failure (say, a hostKey now fixed) ends.
      if (report.steps[0]?.status === "ok") forgetFailure(stateDir(), machine.name);
      progress?.done(report);
      return report;
    }),
  );
  const ok = reports.every((report) => report.ok) && daemon.status !== "fail";
  process.exitCode = ok ? 0 : 1;
  if (options.json) {
    process.stdout.write(
      `${JSON.stringify({ ok, config: loaded.path, daemon, machines: reports.map((report, i) => ({ ...report, address: machineAddress(machines[i]!) })) }, null, 2)}\n`,
    );
    return;
  }
  const problems = reports.flatMap((report) =>
    report.steps
      .filter((s) => s.status === "fail" || s.status === "warn")
      .map((s) => `${s.status === "fail" ? "✗" : "!"} ${report.machine} ${s.step}: ${s.detail}${s.fix ? ` — fix: ${s.fix}` : ""}`),
  );
  if (problems.length > 0) process.stdout.write(`\n${problems.join("\n")}\n`);
  process.stdout.write(`\n${summaryTable(reports)}\n${STEPS_LEGEND}\n`);
  const failed = reports.filter((report) => !report.ok).length;
  process.stdout.write(failed === 0 ? `all ${reports.length} machine(s) passed\n` : `${failed} of ${reports.length} machine(s) failed\n`);
  if (daemon.status === "fail") process.stdout.write(`${daemonLine(daemon)}\n`);
}

/** The key the round trip signs with; a problem with it fails that step on every machine, with its fix. */
async function ourSigningKey(): Promise<CheckContext["signingKey"]> {
  try {
    await checkPrivate(secretKeyPath(), "offload signing key");
    return await readSecretKeyFile(secretKeyPath());
  } catch (error) {
    const failure = asOffloadError(error);
    return new OffloadError(`offload's signing key is not usable: ${failure.message}`, { code: failure.code, fix: failure.fix ?? "offload keygen" });
  }
}

/** offload's Guix key and ACL, read only when a Guix machine is checked; a problem fails that machine's round trip. */
async function ourGuixKeys(machines: readonly BuildMachine[]): Promise<GuixCheckKeys> {
  if (!machines.some((machine) => machine.daemon === "guix")) return { guixKey: undefined, guixAcl: [] };
  const guixKey = await readGuixSecretKeyFile(guixSecretKeyPath()).catch((error: unknown) => {
    const failure = asOffloadError(error);
    return new OffloadError(`offload's Guix signing key is not usable: ${failure.message}`, {
      code: failure.code,
      fix: failure.fix ?? "offload keygen --guix",
    });
  });
  return { guixKey, guixAcl: await readGuixAcl() };
}

function numberOption(value: string, name: string): number {
  const number = Number(value);
  if (!Number.isFinite(number) || number < 0) throw new OffloadError(`${name} must be a non-negative number, not ${JSON.stringify(value)}`, { code: "usage" });
  return number;
}

const STEP_MARKS = { ok: "✓", warn: "!", fail: "✗", skipped: "-" } as const;
const STEPS_LEGEND = `STEPS, in order: ${STEPS.join(", ")} (✓ passed, ! warning, ✗ failed, - skipped; on a Guix machine nix-store is its guix-daemon)`;

function summaryTable(reports: MachineReport[]): string {
  const rows = reports.map((report) => {
    const { facts } = report;
    return [
      report.machine,
      report.ok ? "ok" : "FAILED",
      report.steps.map((s) => STEP_MARKS[s.status]).join(""),
      facts.nixVersion ?? "-",
      facts.signer ?? "-",
      facts.load === undefined ? "-" : facts.load.toFixed(2),
      facts.freeBytes === undefined ? "-" : `${(facts.freeBytes / 1024 ** 3).toFixed(1)}G`,
      facts.clockSkew === undefined ? "-" : `${facts.clockSkew >= 0 ? "+" : ""}${facts.clockSkew.toFixed(2)}s`,
      `${report.seconds.toFixed(1)}s`,
    ];
  });
  return formatTable(["MACHINE", "RESULT", "STEPS", "NIX", "SIGNED BY", "LOAD", "FREE", "CLOCK", "TIME"], rows);
}

function problemJson(problem: OffloadError) {
  return {
    code: problem.code,
    message: problem.message,
    location: problem.location ? formatLocation(problem.location) : null,
    fix: problem.fix ?? null,
  };
}

function machineTable(machines: BuildMachine[]): string {
  const rows = machines.map((m) => [
    m.name + (m.enabled ? "" : " (disabled)"),
    machineAddress(m),
    m.systems.join(","),
    String(m.parallelBuilds),
    String(m.speed),
    [...m.features, ...m.mandatoryFeatures.map((f) => `${f}!`)].join(",") || "-",
  ]);
  return `${formatTable(["NAME", "ADDRESS", "SYSTEMS", "SLOTS", "SPEED", "FEATURES (! = mandatory)"], rows)}`;
}
