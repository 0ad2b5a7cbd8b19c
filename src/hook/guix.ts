// guix-daemon's build hook: the Guix dialect. The daemon runs `$GUIX offload SYSTEM
// MAX-SILENT-TIME PRINT-BUILD-TRACE BUILD-TIMEOUT` (nix/libstore/build.cc and
// guix/scripts/offload.scm in Guix's tree) and then, on stdin, one line per build it offers:
// `AMWILLING SYSTEM DRVPATH FEATURES…`. Replies are `# accept`, `# decline` or `# postpone`
// lines on stderr; any other stderr line reaches the person building. After an accept the
// daemon writes a line of input paths (the .drv included) and a line of the outputs' paths,
// then closes stdin; fd 4 is the build log. Exit 0 means the outputs are in the store (the
// daemon registers them), 100 a permanent failure, 101 a timeout, anything else transient.
//
// What is decided, and with what, is the Nix hook's (run.ts): the same machines.ts, selection,
// slots, facts and failure messages. What differs lives here: the text protocol, the
// machine's guix-daemon reached over SSH, Guix's keys, and outputs written for the daemon to
// register (guix/land.ts).
import { DEFAULTS } from "../defaults.js";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { EXIT, OffloadError, asOffloadError, formatError } from "../errors.js";
import { decisionText } from "../select/failures.js";
import { guixAclPath, readGuixAcl } from "../guix/acl.js";
import { configDir } from "../files/config-dir.js";
import { exportGuixArchive, guixPathsToExport } from "../store/guix-archive.js";
import { GuixDaemon } from "../store/guix-daemon.js";
import { GUIX_STORE_DIR } from "../guix/paths.js";
import { guixPublicKeyPath, guixSecretKeyPath, readGuixSecretKeyFile, type GuixPublicKey, type GuixSecretKey } from "../guix/keys.js";
import { fetchGuixOutputs } from "../store/guix-land.js";
import { guixMachineTrustedKeys, guixOutputFixes } from "../store/machine-trust.js";
import { linkGuixMachine, type GuixLink } from "../agent/guix-link.js";
import { derivationName, recordDuration } from "../select/durations.js";
import { recordFacts } from "../select/machine-facts.js";
import type { BuildRequest } from "../select/select.js";
import { ensureStateDir, stateDir } from "../select/state-dir.js";
import { sweepScratch } from "../files/scratch.js";
import { buildFix } from "./build.js";
import { claimMachine } from "./claim.js";
import { loadHookConfig } from "./run.js";
import { checkRestrictionNames, interpretSettings, machinesInEffect, type HookSettings } from "./settings.js";

export interface GuixHookIo {
  input: Readable;
  /** stderr: replies, and lines for the person building. */
  control: (text: string) => void;
  /** fd 4, or undefined when the daemon opened none. */
  buildLog?: (bytes: Buffer | string) => void;
  /** Aborted when the daemon stopped the hook while it was served by the agent (a hook process just dies). */
  stopped?: AbortSignal;
}

/** The daemon's arguments after `offload`. */
export interface GuixHookArguments {
  system: string;
  maxSilentTime: number;
  printBuildTrace: boolean;
  buildTimeout: number;
}

export function parseGuixHookArguments(argv: readonly string[]): GuixHookArguments {
  const [system, maxSilentTime, printBuildTrace, buildTimeout] = argv;
  const seconds = (text: string | undefined) => (text !== undefined && /^\d+$/.test(text) ? Number(text) : NaN);
  if (!system || Number.isNaN(seconds(maxSilentTime)) || Number.isNaN(seconds(buildTimeout)) || printBuildTrace === undefined) {
    throw new OffloadError(
      `offload was started as guix-daemon's hook with ${JSON.stringify(argv.join(" "))}; expected SYSTEM MAX-SILENT-TIME PRINT-BUILD-TRACE BUILD-TIMEOUT`,
      {
        code: "guix-hook-arguments",
        fix: "only guix-daemon runs this (GUIX=…/offload-guix, then `offload` as its first argument); run `offload check` by hand",
      },
    );
  }
  return {
    system,
    maxSilentTime: seconds(maxSilentTime),
    printBuildTrace: printBuildTrace === "true" || printBuildTrace === "1",
    buildTimeout: seconds(buildTimeout),
  };
}

function parseRequest(line: string): BuildRequest {
  const [amWilling, system, drvPath, ...features] = line.split(" ").filter((word) => word !== "");
  if (!system || !drvPath?.endsWith(".drv") || (amWilling !== "0" && amWilling !== "1")) {
    throw new OffloadError(`guix-daemon sent ${JSON.stringify(line)}, not a build request (AMWILLING SYSTEM DRV FEATURES…)`, { code: "wire-guix-request" });
  }
  return { amWilling: amWilling === "1", system, drvPath, requiredFeatures: features, daemon: "guix" };
}

/** Where the exchange stands, for failing cleanly. */
type Stage = "between-requests" | "asked" | "accepted";

export async function runGuixHook(argv: readonly string[], io: GuixHookIo, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  // The daemon's stdin, one line at a time; undefined at its end.
  const lines = createInterface({ input: io.input, crlfDelay: Infinity })[Symbol.asyncIterator]();
  const nextLine = async (): Promise<string | undefined> => {
    const line = await lines.next();
    return line.done ? undefined : line.value;
  };
  const say = (text: string) => io.control(`${text}\n`);
  // Moved on by the closures below (an object, so the checks after them see the change).
  const exchange: { stage: Stage } = { stage: "between-requests" };
  const nextRequest = async () => {
    const line = await nextLine();
    if (line === undefined) return undefined;
    exchange.stage = "asked";
    return parseRequest(line);
  };
  const reply = (verdict: "decline" | "postpone") => {
    io.control(`# ${verdict}\n`);
    exchange.stage = "between-requests";
  };
  const accept = async () => {
    io.control("# accept\n");
    exchange.stage = "accepted";
    const inputs = (await nextLine()) ?? "";
    const outputs = (await nextLine()) ?? "";
    const paths = (line: string) => line.split(" ").filter((path) => path !== "");
    return { inputs: paths(inputs), outputs: paths(outputs) };
  };

  try {
    const args = parseGuixHookArguments(argv);
    const state = stateDir(env);
    ensureStateDir(state);
    const spoolDir = join(state, "spool");
    sweepScratch(spoolDir);
    sweepScratch(join(GUIX_STORE_DIR, ".offload-landing"));
    const settings: HookSettings = {
      ...interpretSettings(
        new Map([
          ["system", args.system],
          // guix-daemon does not say; amWilling tells whether it can build this one now.
          ["max-jobs", "1"],
          ["max-silent-time", String(args.maxSilentTime)],
          ["timeout", String(args.buildTimeout)],
        ]),
        env,
      ),
      builders: { kind: "guix" },
    };
    const config = await loadHookConfig(env);
    const machines = config?.machines.filter((machine) => machine.daemon === "guix") ?? [];
    if (!config || machines.length === 0) {
      // Guix's "no machines": decline every build (it has no decline-permanently).
      while (await nextRequest()) reply("decline");
      return EXIT.success;
    }
    checkRestrictionNames(settings.restriction, config.machines);
    const trust = configDir(env);
    const key = await readGuixSecretKeyFile(guixSecretKeyPath(trust));
    const acl = await readGuixAcl(guixAclPath(trust));

    for (;;) {
      const request = await nextRequest();
      if (!request) return EXIT.success;
      const claim = await claimMachine<GuixLink>(request, {
        config,
        settings,
        stateDir: state,
        say,
        warn: say,
        minFreeBytes: (Number(env.OFFLOAD_MIN_FREE_MIB) || DEFAULTS.minFreeMiB) * 1024 * 1024,
        connect: (machine) => linkGuixMachine(machine),
      });
      if (claim.verdict !== "accept") {
        // Every line reaches the person building (no verbosity levels): only a decline the
        // daemon may not be able to build itself (it has no free slot, or max-jobs is 0) is worth one.
        const { decision } = claim;
        if (claim.verdict === "decline" && !request.amWilling) {
          say(decisionText(decision, config.machines, request));
        }
        reply(claim.verdict === "postpone" ? "postpone" : "decline");
        continue;
      }
      const { link, slot } = claim;
      // Ending the connection stops whatever the machine does for this build; nothing lands after it.
      io.stopped?.addEventListener("abort", () => link.close(), { once: true });
      try {
        const trustedKeys = guixMachineTrustedKeys(link.machine, acl);
        const { inputs, outputs } = await accept();
        // guix-daemon has no per-build choice; a restriction from the environment is worth a line.
        if (settings.restriction) io.buildLog?.(`${machinesInEffect(settings)}\n`);
        say(`offload: ${claim.decision.summary}`);
        try {
          const seconds = await buildOnGuixMachine({
            link,
            drvPath: request.drvPath!,
            inputs,
            outputs,
            settings,
            key,
            trustedKeys,
            spoolDir,
            say,
            buildLog: (bytes) => io.buildLog?.(bytes),
          });
          try {
            recordFacts(state, link.machine.name, { lastBuild: { drvPath: request.drvPath!, at: Date.now() } });
            recordDuration(state, derivationName(request.drvPath!), seconds * link.machine.speed);
          } catch (error) {
            say(`offload: could not record the build in ${state}: ${asOffloadError(error).message}`);
          }
          return EXIT.success;
        } catch (error) {
          const failure = asOffloadError(error);
          // fd 4 reaches the person building too, and the build's log keeps it.
          (io.buildLog ?? say)(`offload: ${formatError(failure)}\n`);
          return failure.code === "internal" ? EXIT.transient : failure.exitCode;
        }
      } finally {
        link.close();
        await slot.release();
      }
    }
  } catch (error) {
    const text = `offload: ${formatError(asOffloadError(error))}`;
    // The person building must read the reason, not a daemon's "bad hook reply": fail the
    // build the daemon asks about with it (accepting it as offload's), as the Nix hook does.
    if (!(error instanceof OffloadError && error.code.startsWith("wire-"))) {
      try {
        if (exchange.stage === "between-requests") await nextRequest();
        if (exchange.stage === "asked") await accept();
      } catch {
        // the daemon hung up: the line below is all that can be said
      }
    }
    if (exchange.stage === "accepted" && io.buildLog) io.buildLog(`${text}\n`);
    else say(text);
    return EXIT.transient;
  }
}

interface GuixJob {
  link: GuixLink;
  drvPath: string;
  /** The input closure, the .drv included. */
  inputs: string[];
  /** The output paths the daemon still lacks. */
  outputs: string[];
  settings: HookSettings;
  key: GuixSecretKey;
  trustedKeys: readonly GuixPublicKey[];
  spoolDir: string;
  say: (line: string) => void;
  buildLog: (bytes: Buffer | string) => void;
}

/** Sends what the machine lacks, builds there, lands the verified outputs; returns the seconds the build took. */
async function buildOnGuixMachine(job: GuixJob): Promise<number> {
  const { machine, daemon: remote } = job.link;
  const local = await GuixDaemon.connect();
  try {
    await remote.setOptions({
      maxSilentTime: job.settings.maxSilentTime,
      buildTimeout: job.settings.buildTimeout,
      useSubstitutes: machine.useSubstitutes,
      offload: false,
    });
    // Kept from the machine's garbage collector until the build is done (as Guix's offload does).
    await remote.addTempRoot(job.drvPath);
    await sendInputs(job, local);
    remote.log = (line) => job.buildLog(`${line}\n`);
    const started = Date.now();
    await remote.buildPaths([job.drvPath]).catch((error: unknown) => {
      const failure = asOffloadError(error);
      throw new OffloadError(`build of ${job.drvPath} on ${machine.name} failed: ${failure.message.replace(/^guix-daemon: /, "")}`, {
        code: failure.code === "guix-daemon-error" ? "build-failed" : failure.code,
        fix: failure.exitCode === EXIT.timedOut ? buildFix("TimedOut", machine.name) : (failure.fix ?? buildFix("Failed", machine.name)),
        exitCode: failure.exitCode,
        cause: error,
      });
    });
    const seconds = (Date.now() - started) / 1000;
    remote.log = () => undefined;
    const landed = await fetchGuixOutputs(remote, local, job.outputs, {
      trustedKeys: job.trustedKeys,
      pinnedBy: machine.signingKey ? machine.name : undefined,
      origin: `outputs of ${job.drvPath} from ${machine.name}`,
      fixes: guixOutputFixes(machine),
      spoolDir: job.spoolDir,
    });
    const signers = [...new Set(landed.map((path) => path.signer))].join(", ");
    job.say(`offload: ${landed.length} output(s) of ${job.drvPath} built on ${machine.name}, signature by ${signers} verified`);
    return seconds;
  } finally {
    local.close();
  }
}

/** The inputs the machine lacks, dependencies first, signed by offload's Guix key (which its /etc/guix/acl must list). */
async function sendInputs(job: GuixJob, local: GuixDaemon): Promise<void> {
  const { machine, daemon: remote } = job.link;
  const present = await remote.queryValidPaths(job.inputs);
  const missing = job.inputs.filter((path) => !present.has(path));
  if (missing.length === 0) return;
  const infos = await guixPathsToExport(local, missing, false);
  const bytes = infos.reduce((sum, info) => sum + info.narSize, 0);
  job.say(
    `offload: sending ${infos.length} store item(s) (${bytes < 2 ** 20 ? `${Math.ceil(bytes / 1024)} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`}) to ${machine.name}`,
  );
  await remote.importPaths(exportGuixArchive(local, infos, job.key)).catch((error: unknown) => {
    const failure = asOffloadError(error);
    const refused = /authoriz|signature/i.test(failure.message);
    throw new OffloadError(`${machine.name} did not take the inputs: ${failure.message.replace(/^guix-daemon: /, "")}`, {
      code: refused ? "guix-key-not-authorized" : failure.code,
      fix: refused ? `on ${machine.name}: guix archive --authorize < (the contents of ${guixPublicKeyPath()} here)` : failure.fix,
      exitCode: EXIT.transient,
      cause: error,
    });
  });
}
