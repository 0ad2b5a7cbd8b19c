// After "# accept": send the inputs the machine lacks, build there, bring the outputs back
// and import them only once every one is verified. One linear flow, like Nix's
// build-remote, over the shared store primitives.
import { statfsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { BuildMachine } from "../../types/index.js";
import { EXIT, OffloadError } from "../errors.js";
import { parseDerivation, type Derivation } from "../nix/drv.js";
import type { PublicKey, SecretKey } from "../nix/keys.js";
import type { PathInfo } from "../nix/path-info.js";
import { DEFAULT_STORE_DIR } from "../nix/store-path.js";
import type { MachineLink } from "../agent/machine-link.js";
import { resolveSshTarget, type ResolvedSshTarget } from "../remote/ssh-config.js";
import { tcpReachable } from "../remote/tcp.js";
import { endLanding, landingDir, landVerified, startLanding, type LandingProcesses } from "../store/land.js";
import type { NixWorker } from "../store/nix-worker.js";
import { outputFixes, pinnedBy } from "../store/machine-trust.js";
import { makeScratch, removeScratch } from "../files/scratch.js";
import type { ServeClient } from "../store/serve.js";
import type { BuildResult } from "../store/serve-build.js";
import { fetchWanted, uploadAllSigned } from "../store/transfer.js";
import type { HookSettings } from "./settings.js";

export interface BuildJob {
  link: MachineLink;
  drvPath: string;
  /** The input closure the daemon sent (the .drv itself is not in it). */
  inputs: string[];
  /** Names of the outputs still missing locally. */
  wantedOutputs: string[];
  settings: HookSettings;
  signingKey: SecretKey;
  /** Keys whose signature on an output is accepted: the machine's pinned key, else the ACL. */
  trustedKeys: readonly PublicKey[];
  /** Progress and problems, one line each (shown by the daemon). */
  say: (line: string) => void;
  buildLog: (bytes: Buffer | string) => void;
  /** Aborted when the daemon stopped the hook (served by the agent): the build ends, and nothing lands. */
  stopped?: AbortSignal;
}

/** Builds, verifies and imports; returns the seconds the remote build itself took. */
export async function buildOnMachine(job: BuildJob): Promise<number> {
  // The local store's processes (its queries and signatures, the outputs' registration),
  // started now: their start (tens of ms) overlaps the remote's work instead of adding to
  // every build. They register nothing if no output lands.
  const local = startLanding();
  try {
    return await buildWith(job, local);
  } finally {
    endLanding(local);
  }
}

async function buildWith(job: BuildJob, local: LandingProcesses): Promise<number> {
  const name = job.link.machine.name;
  // Ending the session stops whatever the machine is doing for this build.
  job.stopped?.addEventListener("abort", () => job.link.close(), { once: true });
  const drv = parseDerivation(await readFile(job.drvPath, "utf8"), job.drvPath);
  const remote = job.link.session.client;
  await moving(uploadInputs(job, remote, local.worker), job, `sending inputs to ${name}`);
  job.link.session.onStderr((chunk) => job.buildLog(chunk));
  const started = Date.now();
  const result = await enforceTimeouts(
    remote.buildDerivation(job.drvPath, drv, buildInputs(drv, job.inputs), {
      maxSilentTime: job.settings.maxSilentTime,
      buildTimeout: job.settings.buildTimeout,
      maxLogSize: job.settings.maxLogSize,
    }),
    job,
  );
  if (!result.success) throw buildFailure(result, job.drvPath, name);
  const seconds = (Date.now() - started) / 1000;
  await fetchOutputs(job, drv, remote, local);
  return seconds;
}

/**
 * Runs `work` while checking once a second whether `expired` names a reason to give up;
 * then ends the session (which stops whatever the machine was doing) and fails with it.
 */
function watched<T>(work: Promise<T>, job: BuildJob, expired: () => OffloadError | undefined | Promise<OffloadError | undefined>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let checking = false;
    const watch = setInterval(() => {
      if (checking) return;
      checking = true;
      void Promise.resolve(expired()).then((failure) => {
        checking = false;
        if (!failure) return;
        clearInterval(watch);
        job.link.close();
        reject(failure);
      });
    }, 1000);
    work.then(
      (value) => (clearInterval(watch), resolve(value)),
      (error: unknown) => (clearInterval(watch), reject(error)),
    );
  });
}

/** How long a transfer may move no byte when the daemon sets no max-silent-time. */
const DEFAULT_STALL_S = 120;

/** A transfer fails once no byte has moved for max-silent-time (or DEFAULT_STALL_S): a machine that stops sending must not hold the build and its slot forever. */
function moving<T>(work: Promise<T>, job: BuildJob, what: string): Promise<T> {
  const limit = job.settings.maxSilentTime > 0 ? job.settings.maxSilentTime : DEFAULT_STALL_S;
  const client = job.link.session.client;
  let moved = client.bytesMoved;
  let movedAt = Date.now();
  return watched(work, job, () => {
    if (client.bytesMoved !== moved) {
      moved = client.bytesMoved;
      movedAt = Date.now();
      return undefined;
    }
    if (Date.now() - movedAt <= limit * 1000) return undefined;
    return new OffloadError(`${what} stalled: no byte moved for ${limit} s`, {
      code: "transfer-stalled",
      fix: `check the network to ${job.link.machine.name} and that its nix-store is not hung (a full disk, a frozen machine); the build is retried`,
      exitCode: EXIT.transient,
    });
  });
}

/** The hook's own deadline comes this long after the remote's, whose message says more when it works. */
const TIMEOUT_GRACE_S = 5;

/**
 * Nix 2.8's `nix-store --serve` cannot pass timeouts on to a remote nix-daemon (the FIXME in
 * its opServe): a non-root login's builds would never time out. So the hook enforces the
 * daemon's timeout and max-silent-time itself too, a little later, by ending the session
 * (which stops the remote build).
 */
function enforceTimeouts<T>(build: Promise<T>, job: BuildJob): Promise<T> {
  const { buildTimeout, maxSilentTime } = job.settings;
  if (buildTimeout === 0 && maxSilentTime === 0) return build;
  const started = Date.now();
  let lastOutput = started;
  job.link.session.onStderr(() => (lastOutput = Date.now()));
  return watched(build, job, async () => {
    const now = Date.now();
    if (buildTimeout > 0 && now - started > (buildTimeout + TIMEOUT_GRACE_S) * 1000) return timedOut(job, `timed out after ${buildTimeout} seconds`);
    if (!(maxSilentTime > 0 && now - lastOutput > (maxSilentTime + TIMEOUT_GRACE_S) * 1000)) return undefined;
    // Silence from here is a silent build, or a link that carries nothing any more: tell them apart.
    const lost = await connectionLost(job.link.machine);
    if (lost) return lost;
    return timedOut(job, `timed out after ${maxSilentTime} seconds of silence`);
  });
}

function timedOut(job: BuildJob, why: string): OffloadError {
  return new OffloadError(`building ${job.drvPath} on ${job.link.machine.name} ${why}; the machine did not stop it, so offload did`, {
    code: "build-TimedOut",
    fix: "make the build finish sooner, or raise the daemon's timeout / max-silent-time",
    exitCode: EXIT.timedOut,
  });
}

/** How long the machine's SSH port may take to accept a connection before its link counts as lost. */
const LINK_PROBE_MS = 3000;

/** An error naming the lost connection when the machine's SSH port no longer accepts connections, else undefined. */
async function connectionLost(machine: BuildMachine): Promise<OffloadError | undefined> {
  let target: ResolvedSshTarget;
  try {
    target = resolveSshTarget(machine);
  } catch {
    return undefined; // it resolved when the session was made; nothing to learn here
  }
  if (await tcpReachable(target.host, target.port, LINK_PROBE_MS)) return undefined;
  return new OffloadError(
    `lost the connection to ${machine.name}: nothing came for the build, and ${target.host}:${target.port} does not answer a new connection within ${LINK_PROBE_MS / 1000} s`,
    {
      code: "connection-lost",
      fix: `check the network to ${machine.name} (and that it is up); the build is retried elsewhere or later`,
      exitCode: EXIT.transient,
    },
  );
}

/** Nix's hook sends the whole input closure as inputSrcs, except for derivations without input derivations. */
function buildInputs(drv: Derivation, inputs: string[]): string[] {
  return drv.inputDrvs.size > 0 ? inputs : drv.inputSrcs;
}

/** Sends each input the machine lacks, dependencies first, signed by us so a remote Nix that checks signatures accepts it. */
async function uploadInputs(job: BuildJob, remote: ServeClient, local: NixWorker): Promise<void> {
  if (job.inputs.length === 0) return; // nothing to ask about, lock or substitute: a round trip saved
  const present = await remote.queryValidPaths(job.inputs, { lock: true, substitute: job.link.machine.useSubstitutes || job.settings.buildersUseSubstitutes });
  const missing = job.inputs.filter((path) => !present.has(path));
  if (missing.length > 0) await uploadMissing(job, local, remote, missing);
}

async function uploadMissing(job: BuildJob, local: NixWorker, remote: ServeClient, missing: string[]): Promise<void> {
  const infos = await local.queryPathInfos(missing);
  const absent = missing.filter((path) => !infos.has(path));
  if (absent.length > 0) {
    throw new OffloadError(`input ${absent[0]} is not valid in the local store`, {
      code: "input-missing",
      fix: "the store changed under the build (a garbage collection?): build again",
      exitCode: EXIT.transient,
    });
  }
  await uploadAllSigned(remote, infos.values(), job.signingKey);
  const bytes = [...infos.values()].reduce((sum, info) => sum + info.narSize, 0);
  job.say(`offload: copied ${missing.length} input path(s) (${mebibytes(bytes)}) to ${job.link.machine.name}`);
}

/** Brings back the outputs the daemon still wants, verified before a single one enters the store. */
async function fetchOutputs(job: BuildJob, drv: Derivation, remote: ServeClient, local: LandingProcesses): Promise<void> {
  const name = job.link.machine.name;
  const wanted = job.wantedOutputs.map((output) => {
    const path = drv.outputs.get(output)?.path;
    if (!path)
      throw new OffloadError(`${job.drvPath} has no output "${output}" with a known path`, {
        code: "output-unknown",
        fix: "offload builds input-addressed derivations whose output paths the .drv names; build this one locally (--max-jobs 1)",
        exitCode: EXIT.permanent,
      });
    return path;
  });
  // Restored as they arrive, in the store's landing area: written once, and at no store path until verified.
  const receiving = makeScratch(landingDir());
  try {
    const free = freeBytes(DEFAULT_STORE_DIR);
    const items = await moving(
      fetchWanted(remote, wanted, receiving, name, `an output of ${job.drvPath}`, {
        beforeWriting: (infos) => checkLocalSpace(job, infos, free),
        sizesFirst: free < AMPLE_FREE_BYTES,
      }),
      job,
      `fetching the outputs of ${job.drvPath} from ${name}`,
    );
    if (job.stopped?.aborted) {
      throw new OffloadError(`the daemon stopped the hook building ${job.drvPath}; nothing was imported`, {
        code: "hook-stopped",
        fix: "none needed: the daemon decides whether to build it again",
        exitCode: EXIT.transient,
      });
    }
    const landed = await landVerified(items, {
      trustedKeys: job.trustedKeys,
      pinnedBy: pinnedBy(job.link.machine),
      origin: `outputs of ${job.drvPath} from ${name}`,
      fixes: outputFixes(job.link.machine),
      warn: (line) => job.buildLog(`${line}\n`),
      ahead: local,
    });
    const signers = [...new Set(landed.map((path) => path.signer))].join(", ");
    job.say(`offload: ${landed.length} output(s) of ${job.drvPath} built on ${name}, signature by ${signers} verified`);
  } finally {
    removeScratch(receiving);
  }
}

function freeBytes(dir: string): number {
  const { bavail, bsize } = statfsSync(dir);
  return bavail * bsize;
}

/**
 * With this much free here, the outputs' NARs are asked for along with their sizes: only
 * outputs of half a GiB or more could then be refused for want of room, after up to an SSH
 * window of their NAR has come for nothing. With less, their sizes are checked first.
 */
const AMPLE_FREE_BYTES = 1024 ** 3;

/** The store needs the outputs' size: refuse before writing a byte, not half-way with ENOSPC. */
function checkLocalSpace(job: BuildJob, infos: readonly PathInfo[], free: number): void {
  const needed = infos.reduce((sum, info) => sum + info.narSize, 0);
  if (free < needed) {
    throw new OffloadError(
      `the outputs of ${job.drvPath} need ${mebibytes(needed)} in ${DEFAULT_STORE_DIR}, but it has only ${mebibytes(free)} free here; nothing fetched`,
      {
        code: "local-disk-full",
        fix: "free space on this machine: nix-collect-garbage -d",
        exitCode: EXIT.transient,
      },
    );
  }
}

function buildFailure(result: BuildResult, drvPath: string, machine: string): OffloadError {
  const exitCode =
    result.status === "TimedOut"
      ? EXIT.timedOut
      : result.status === "TransientFailure" || result.status === "MiscFailure" || result.status === "Unknown"
        ? EXIT.transient
        : EXIT.permanent;
  const message = result.errorMsg.trim() || `build of ${drvPath} failed with status ${result.status}`;
  return new OffloadError(`build on ${machine} failed (${result.status}): ${message}`, {
    code: `build-${result.status}`,
    fix: buildFix(result.status, machine),
    exitCode,
  });
}

/** What to do about a build that failed on a machine: its own log says why it failed. */
export function buildFix(status: string, machine: string): string {
  return status === "TimedOut"
    ? "make the build finish sooner, or raise the daemon's timeout / max-silent-time"
    : `the build's log above says why; if it builds elsewhere, look at ${machine} (offload check ${machine})`;
}

function mebibytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
