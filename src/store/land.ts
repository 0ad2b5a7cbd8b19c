// How verified build outputs enter the local Nix store while the daemon holds their locks.
//
// The daemon flock()s `<output>.lock` for the whole hook run. Nix's own build-remote runs
// in-process and tells its store that the locks are held; a separate importer cannot since
// Nix 2.29 removed NIX_HELD_LOCKS (PR #12639), and any `nix-store --import` or
// `AddToStoreNar` then waits on those locks forever. So offload acts for the lock holder,
// as Guix's offload does: it writes each output's files itself, then registers them with
// `nix-store --register-validity --hash-given` (which takes no path lock; it canonicalises
// ownership, modes and times as a local build's outputs get) and adds the builder's
// signatures through `nix-daemon --stdio` (AddSignatures takes no path lock either). The
// result is what build-remote registers: references, deriver, NAR hash and size, signatures.
// Both processes are started while the machine builds (startLanding), so that their start
// is not added after the transfer.
//
// Outputs arrive already restored, as they were received, into a scratch directory of the
// store's landing area (same file system, no store path: transfer.ts fetchWanted). Nothing
// is at a store path before every one is verified; then they are renamed into place, so no
// half-written tree ever sits at a store path, and if registration fails they are removed
// again, leaving the store as it was.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OffloadError } from "../errors.js";
import { encodeNix32 } from "../nix/nix32.js";
import type { PathInfo } from "../nix/path-info.js";
import { DEFAULT_STORE_DIR, hashPart } from "../nix/store-path.js";
import { lastLines } from "./nix-stderr.js";
import { startNixWorker, type NixWorker } from "./nix-worker.js";
import { verifySpooled, type ImportedPath, type RestoredPath, type VerifyOptions } from "./import-verified.js";
import { deadScratch, keepScratch, makeScratch, removeScratch } from "../files/scratch.js";

export interface LandOptions extends VerifyOptions {
  /** Where the files go; the store's real directory. Default /nix/store. */
  storeDir?: string;
  /** Problems that leave the outputs valid but not as complete as intended (a signature not recorded). */
  warn: (line: string) => void;
  /** Environment of the nix commands (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** The landing's processes, started ahead (startLanding); ended here whatever happens. */
  ahead?: LandingProcesses;
}

/** The two processes a landing uses: the registration, and a worker that answers its queries and adds the signatures. */
export interface LandingProcesses {
  registration: PendingNix;
  worker: NixWorker;
}

/**
 * Starts the landing's processes now, for a landing to come: their start (tens of ms each)
 * then overlaps the build and transfer instead of following them. Until the landing writes
 * to it, the registration only waits for its input; if the hook dies or lands nothing, its
 * input ends empty and it exits having registered nothing.
 */
export function startLanding(options: Pick<LandOptions, "env"> = {}): LandingProcesses {
  return {
    registration: startRegistration(options),
    worker: startNixWorker(options),
  };
}

/** Ends the landing's processes (again, harmlessly): whatever they were not given, they do not do. */
export function endLanding(processes: LandingProcesses): void {
  processes.registration.cancel();
  void processes.worker.close();
}

/**
 * Verifies `items` (dependencies first), then puts the ones not yet valid into the store;
 * all or nothing. The worker's queries never write, so they take no path lock; their
 * temporary GC roots keep the references alive until the new paths are registered.
 */
export async function landVerified(items: readonly RestoredPath[], options: LandOptions): Promise<ImportedPath[]> {
  const processes = options.ahead ?? startLanding(options);
  try {
    const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
    const signers = await verifySpooled(items, options, processes.worker);
    const present = await processes.worker.queryValidPaths(
      items.map((item) => item.path),
      { lock: true },
    );
    const fresh = items.filter((item) => !present.has(item.path));
    if (fresh.length > 0) await land(fresh, storeDir, processes, options);
    return items.map((item) => ({ path: item.path, signer: signers.get(item.path)!, added: !present.has(item.path) }));
  } finally {
    endLanding(processes);
  }
}

/** A landing's record of the signatures still to add, inside its staging directory. */
const SIGNATURES = "signatures";

/**
 * Writes, renames into place and registers `items`, then records their signatures. The
 * signatures are written down first, in the staging directory: a hook killed between the
 * registration and the recording leaves them there, and the next hook records them
 * (finishLandings) — the paths are verified and valid meanwhile, only not yet signed.
 */
async function land(items: readonly RestoredPath[], storeDir: string, processes: LandingProcesses, options: LandOptions): Promise<void> {
  const staging = makeScratch(landingDir(storeDir));
  const placed: string[] = [];
  try {
    writeSignatureRecord(items, join(staging, SIGNATURES));
    for (const item of items) {
      const target = join(storeDir, baseName(item.path));
      // Not valid (checked above) and locked by the daemon we act for: whatever is there is
      // the leftover of an interrupted build, which Nix itself would delete before writing.
      rmSync(target, { recursive: true, force: true });
      renameSync(item.tree, target);
      placed.push(target);
    }
    // Stopped from here on (SIGTERM), the paths may be registered: the signature record stays
    // for the next hook, as after a SIGKILL.
    keepScratch(staging);
    await processes.registration.finish(registration(items));
  } catch (error) {
    for (const target of placed) rmSync(target, { recursive: true, force: true });
    removeScratch(staging);
    throw error;
  }
  try {
    for (const item of items) if (item.signatures.length > 0) await processes.worker.addSignatures(item.path, item.signatures);
  } catch (error) {
    // The outputs are verified and valid; only the record of who signed them is missing.
    options.warn(`offload: warning: ${items.length} output(s) are valid but their signatures were not recorded: ${(error as Error).message}`);
  } finally {
    removeScratch(staging);
  }
}

/** Where outputs are restored before they are renamed into place: in the store directory, so on its file system. */
export function landingDir(storeDir: string = DEFAULT_STORE_DIR): string {
  return join(storeDir, ".offload-landing");
}

/** `nix-store --register-validity --hash-given` input: path, hash, size, deriver, reference count, references. */
export function registration(items: readonly PathInfo[]): string {
  return items
    .map(
      (item) =>
        [item.path, `sha256:${encodeNix32(item.narHash)}`, item.narSize, item.deriver ?? "", item.references.length, ...item.references].join("\n") + "\n",
    )
    .join("");
}

/** A path's .narinfo: the record of its signatures, in Nix's own format (`nix store copy-sigs` could read a directory of them). */
export function narInfo(item: PathInfo): string {
  return [
    `StorePath: ${item.path}`,
    `URL: nar/${hashPart(item.path)}.nar`,
    "Compression: none",
    `NarHash: sha256:${encodeNix32(item.narHash)}`,
    `NarSize: ${item.narSize}`,
    `References: ${item.references.map(baseName).join(" ")}`,
    ...(item.deriver ? [`Deriver: ${baseName(item.deriver)}`] : []),
    ...item.signatures.map((signature) => `Sig: ${signature}`),
    "",
  ].join("\n");
}

/** Writes the .narinfo of each signed item into `dir`. */
function writeSignatureRecord(items: readonly PathInfo[], dir: string): void {
  mkdirSync(dir);
  for (const item of items) if (item.signatures.length > 0) writeFileSync(join(dir, `${hashPart(item.path)}.narinfo`), narInfo(item));
}

/** The paths and signatures a landing's record holds. */
function readSignatureRecord(dir: string): Array<{ path: string; signatures: string[] }> {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith(".narinfo"))
    .map((name) => readFileSync(join(dir, name), "utf8"))
    .map((text) => ({ path: /^StorePath: (.*)$/m.exec(text)?.[1] ?? "", signatures: [...text.matchAll(/^Sig: (.*)$/gm)].map((match) => match[1]!) }))
    .filter((record) => record.path !== "" && record.signatures.length > 0);
}

/**
 * At a hook's start: finishes what hooks killed mid-landing left in the landing area.
 * Signatures recorded for paths that got registered are added (the paths are valid and
 * were verified); everything else there is removed. Returns how many paths it signed.
 */
export async function finishLandings(options: { storeDir?: string; env?: NodeJS.ProcessEnv; warn: (line: string) => void }): Promise<number> {
  const area = landingDir(options.storeDir);
  let signed = 0;
  let worker: NixWorker | undefined;
  try {
    for (const dir of deadScratch(area)) {
      const records = readSignatureRecord(join(dir, SIGNATURES));
      try {
        if (records.length > 0) {
          worker ??= startNixWorker(options);
          const valid = await worker.queryValidPaths(records.map((record) => record.path));
          for (const record of records.filter((record) => valid.has(record.path))) {
            await worker.addSignatures(record.path, record.signatures);
            signed++;
          }
        }
      } catch (error) {
        options.warn(`offload: warning: could not record the signatures an interrupted landing left: ${(error as Error).message}`);
      }
      rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    void worker?.close();
  }
  return signed;
}

const NIX_COMMAND_TIMEOUT_MS = 60_000;

/** The registration, started and waiting for its input. */
export interface PendingNix {
  /** Writes `input`, ends it, and waits for the command to finish: its stdout, or its stderr as the error. */
  finish(input: string): Promise<string>;
  /** Ends its input empty, unless finish did; it exits on its own. */
  cancel(): void;
}

/** `nix-store --register-validity --hash-given`, started and waiting for the registration to write. */
function startRegistration(options: Pick<LandOptions, "env">): PendingNix {
  const argv = ["nix-store", "--register-validity", "--hash-given"];
  const child = spawn(argv[0]!, argv.slice(1), { env: options.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => (stderr = (stderr + chunk).slice(-4096)));
  let timer: NodeJS.Timeout | undefined;
  let exited = false;
  const result = new Promise<string>((resolve, reject) => {
    child.once("error", (error) => {
      exited = true;
      clearTimeout(timer);
      reject(
        new OffloadError(`cannot run ${argv[0]}: ${error.message}`, {
          code: "register-failed",
          fix: `put Nix's ${argv[0]} on the PATH of the daemon that runs the hook`,
          cause: error,
        }),
      );
    });
    child.once("close", (status, signal) => {
      exited = true;
      clearTimeout(timer);
      if (status === 0) return resolve(stdout);
      const why = lastLines(stderr) || (signal ? `killed by ${signal}` : `exit status ${status}`);
      reject(
        new OffloadError(`${argv.join(" ")} failed: ${why}`, { code: "register-failed", fix: "check the local store: nix-store --verify --check-contents" }),
      );
    });
  });
  result.catch(() => undefined); // a command that fails while waiting for its input is reported by finish, or was not needed
  child.stdin.on("error", () => undefined); // an early exit is reported by "close"
  let ended = false;
  return {
    finish(input) {
      ended = true;
      // Bounded from here: it takes milliseconds; a minute means the store is stuck (e.g. its database locked).
      if (!exited) timer = setTimeout(() => child.kill("SIGKILL"), NIX_COMMAND_TIMEOUT_MS);
      child.stdin.end(input);
      return result;
    },
    cancel() {
      if (!ended) child.stdin.end();
      ended = true;
    },
  };
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
