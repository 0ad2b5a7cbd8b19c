// The local Nix store through `nix-daemon --stdio`, which speaks the daemon's worker protocol
// on its stdin and stdout: with no daemon socket, or as root (the hook's user), over the
// store itself, trusting its caller (it cannot tell who is on a pipe); else forwarded to the
// daemon. A build's hook asks it what the upload and the landing need to know (valid paths,
// path infos, with temporary GC roots), and has it add the builder's signatures to the
// landed outputs, the one landing step `nix-store` has no command for (AddSignatures takes no
// output lock). One process for all of that, started with the build so that its start (tens
// of ms, as for any nix command) overlaps the remote's work.
import { spawn } from "node:child_process";
import { Duplex } from "node:stream";
import { OffloadError } from "../errors.js";
import type { PathInfo } from "../nix/path-info.js";
import { byteOrder, WireWriter } from "../nix/wire.js";
import { lastLines } from "./nix-stderr.js";
import { WorkerConnection, type WorkerDialect } from "./worker-connection.js";

/**
 * 1.18, the oldest minor Nix 2.34 accepts (2.8 takes ≥ 1.10): activities come as plain log
 * lines (< 1.20) and errors as message and status (< 1.26), the shapes guix-daemon uses.
 */
const NIX: WorkerDialect = {
  daemon: "nix-daemon",
  clientVersion: 0x112,
  brokenError: (message, cause) => new OffloadError(`nix-daemon: ${message}`, { code: "nix-daemon-protocol", cause }),
  daemonError: (message, exitCode) => new OffloadError(`nix-daemon: ${message}`, { code: "nix-daemon-error", exitCode }),
};

const enum Op {
  AddTempRoot = 11,
  QueryPathInfo = 26,
  QueryValidPaths = 31,
  AddSignatures = 37,
}

/** These take milliseconds; a minute means the store is stuck (e.g. its database locked). */
const ANSWER_TIMEOUT_MS = 60_000;
const STDERR_TAIL = 4096;
/** How long a failure waits for the process's last words on stderr. */
const EXIT_WAIT_MS = 1000;

export interface NixWorker {
  /** Adds `signatures` to the valid `path` (LocalStore::addSignatures: no path lock). */
  addSignatures(path: string, signatures: readonly string[]): Promise<void>;
  /** Which of `paths` are valid; `lock` first makes each a temporary GC root while this worker lives (as `nix-store --serve` does). */
  queryValidPaths(paths: Iterable<string>, options?: { lock?: boolean }): Promise<Set<string>>;
  /** Path infos of the valid ones among `paths` (invalid paths are absent). */
  queryPathInfos(paths: Iterable<string>): Promise<Map<string, PathInfo>>;
  /** Ends the connection; `nix-daemon --stdio` exits at the end of its input (and its temporary roots go with it): settles then. */
  close(): Promise<void>;
}

/** Starts `nix-daemon --stdio` and greets it; the operations wait for the greeting. */
export function startNixWorker(options: { env?: NodeJS.ProcessEnv } = {}): NixWorker {
  const child = spawn("nix-daemon", ["--stdio"], { env: options.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => (stderr = (stderr + chunk).slice(-STDERR_TAIL)));
  let spawnError: Error | undefined;
  child.once("error", (error) => (spawnError = error));
  let ended: string | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once("close", (status, signal) => {
      ended = signal ? `it was killed by ${signal}` : `it exited with status ${status}`;
      resolve();
    }),
  );
  child.stdin.on("error", () => undefined); // an early exit is reported as the end of its output
  const stream = Duplex.from({ readable: child.stdout, writable: child.stdin });
  stream.on("error", () => undefined); // reaches the operation waiting on it, through its read or write
  child.once("error", (error) => stream.destroy(error)); // not started: nothing will come
  const opening = WorkerConnection.open(stream, "nix-daemon --stdio", NIX);
  opening.catch(() => undefined); // reported by the first operation

  // One operation at a time: the replies on the connection come in the order of the requests.
  let queue: Promise<unknown> = Promise.resolve();
  function answer<T>(what: string, operation: (connection: WorkerConnection) => Promise<T>): Promise<T> {
    const turn = queue.then(() => answerNow(what, operation));
    queue = turn.catch(() => undefined);
    return turn;
  }

  /** Runs `operation` once greeted, within ANSWER_TIMEOUT_MS; a failure says what nix-daemon said. */
  async function answerNow<T>(what: string, operation: (connection: WorkerConnection) => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    let timedOut: string | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = `no answer within ${ANSWER_TIMEOUT_MS / 1000} s`;
        child.kill("SIGKILL");
        reject(new Error(timedOut));
      }, ANSWER_TIMEOUT_MS);
    });
    try {
      return await Promise.race([opening.then(operation), late]);
    } catch (error) {
      // The daemon's own error when it sent one; else why the connection broke, as it said on stderr.
      const said = error instanceof OffloadError && error.code === "nix-daemon-error" ? error.message.replace(/^nix-daemon: /, "") : timedOut;
      // A broken connection is a process that exited or is exiting: what it said last is why.
      if (said === undefined && spawnError === undefined) await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, EXIT_WAIT_MS))]);
      const why = said ?? spawnError?.message ?? (lastLines(stderr) || ended || (error as Error).message);
      throw new OffloadError(`nix-daemon --stdio could not ${what}: ${why}`, {
        code: spawnError ? "nix-daemon-not-found" : "nix-daemon-failed",
        fix: spawnError ? "put Nix's nix-daemon on the PATH of the daemon that runs the hook" : "check the local store: nix-store --verify --check-contents",
        cause: error,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  return {
    addSignatures: (path, signatures) =>
      answer(`add signatures to ${path}`, async (connection) => {
        await connection.send(new WireWriter().u64(Op.AddSignatures).string(path).strings(signatures));
        await connection.worked();
        await connection.reader.u64("the result");
      }),
    queryValidPaths: (paths, { lock = false } = {}) =>
      answer("query valid paths", async (connection) => {
        const list = [...paths];
        // Requests back to back, then the replies in order: one round trip, however many paths.
        const requests = new WireWriter();
        if (lock) for (const path of list) requests.u64(Op.AddTempRoot).string(path);
        await connection.send(requests.u64(Op.QueryValidPaths).strings(list));
        if (lock)
          for (const _ of list) {
            await connection.worked();
            await connection.reader.u64("the result");
          }
        await connection.worked();
        return new Set(await connection.reader.strings(1 << 20, 4096, "valid paths"));
      }),
    queryPathInfos: (paths) =>
      answer("query path infos", async (connection) => {
        const list = [...paths];
        const requests = new WireWriter();
        for (const path of list) requests.u64(Op.QueryPathInfo).string(path);
        await connection.send(requests);
        const infos = new Map<string, PathInfo>();
        for (const path of list) {
          await connection.worked();
          const info = await readPathInfo(connection, path);
          if (info) infos.set(path, info);
        }
        return infos;
      }),
    close: () => {
      child.stdin.end();
      void opening.then(
        (connection) => connection.close(),
        () => undefined,
      );
      return exited;
    },
  };
}

/** QueryPathInfo's reply for client minor 18 (≥ 17: a validity flag first; ≥ 16: ultimate, signatures, content address). */
async function readPathInfo(connection: WorkerConnection, path: string): Promise<PathInfo | undefined> {
  const reader = connection.reader;
  if (!(await reader.bool("whether the path is valid"))) return undefined;
  const deriver = await reader.string(4096, "the deriver");
  const hash = await reader.string(128, "the NAR hash");
  const references = await reader.strings(1 << 20, 4096, "the references");
  await reader.u64("the registration time");
  const narSize = await reader.num(Number.MAX_SAFE_INTEGER, "the NAR size");
  await reader.bool("whether the path was built here");
  const signatures = await reader.strings(1 << 16, 4096, "the signatures");
  const contentAddress = await reader.string(4096, "the content address");
  if (!/^[0-9a-f]{64}$/.test(hash)) throw connection.protocolError(`NAR hash of ${path} is not base16 SHA-256: ${JSON.stringify(hash)}`);
  return {
    path,
    ...(deriver === "" ? {} : { deriver }),
    references: references.sort(byteOrder),
    narHash: Buffer.from(hash, "hex"),
    narSize,
    signatures,
    ...(contentAddress === "" ? {} : { contentAddress }),
  };
}
