// Client for `nix-store --serve --write` (the protocol of ssh:// stores), over any pair of
// streams: an ssh2 exec channel or a local child process. Byte layouts follow Nix 2.8's
// opServe (nix-store.cc) and LegacySSHStore (legacy-ssh-store.cc).

import type { Readable, Writable } from "node:stream";
import { OffloadError } from "../errors.js";
import { decodeNix32 } from "../nix/nix32.js";
import type { PathInfo } from "../nix/path-info.js";
import { DEFAULT_STORE_DIR, isStorePath } from "../nix/store-path.js";
import { copyNar } from "../nix/nar.js";
import { WireReader, WireWriter, byteOrder } from "../nix/wire.js";
import { readBuildResult, writeBasicDerivation, writeBuildOptions } from "./serve-build.js";
import type { BasicDerivation, BuildOptions, BuildResult } from "./serve-build.js";

const SERVE_MAGIC_1 = 0x390c9deb;
const SERVE_MAGIC_2 = 0x5452eecb;
/**
 * 2.7 is what every Nix from 2.4 on speaks (up to at least 2.18). The server shapes its
 * replies by our version, so claiming 2.7 keeps them to what this client reads.
 */
export const CLIENT_VERSION = 0x207;

const enum Command {
  QueryValidPaths = 1,
  QueryPathInfos = 2,
  DumpStorePath = 3,
  ImportPaths = 4,
  QueryClosure = 7,
  BuildDerivation = 8,
  AddToStoreNar = 9,
}

/** The server process: its stdin and stdout carry the protocol; its stderr is left to the caller (build logs). */
export interface ServeIo {
  stdin: Writable;
  stdout: Readable;
  /** Exit status of the server process, used to explain a connection that ended (127: nix-store missing). */
  exit?: Promise<{ code: number | null; signal?: string }>;
  /** Recent stderr text of the server, quoted when it dies (the caller reads stderr, not us). */
  stderrTail?: () => string;
}

export interface ServeOptions {
  /** Names the server in messages, e.g. "builder1" or "local store". */
  label?: string;
  /** Store directory of the remote store's paths. Default /nix/store. */
  storeDir?: string;
}

/** The result of streaming one NAR: its sha256 and length. */
export interface NarDigest {
  narHash: Buffer;
  narSize: number;
}

/** Nix prints NAR hashes as `sha256:<nix32>`; Hash::parseAny also accepts base16 and base64. */
export function parseNarHash(text: string): Buffer {
  const bare = text.startsWith("sha256:") ? text.slice("sha256:".length) : text;
  let hash: Buffer | undefined;
  if (bare.length === 52) hash = decodeNix32(bare);
  else if (/^[0-9a-f]{64}$/i.test(bare)) hash = Buffer.from(bare, "hex");
  else if (bare.length === 44) hash = Buffer.from(bare, "base64");
  if (hash?.length !== 32) {
    throw new OffloadError(`not a sha256 NAR hash: ${JSON.stringify(text)}`, { code: "protocol" });
  }
  return hash;
}

export class ServeClient {
  /** The server's protocol version, e.g. 0x207 for Nix 2.8. */
  readonly remoteVersion: number;
  private readonly io: ServeIo;
  private readonly reader: WireReader;
  private readonly label: string;
  private readonly storeDir: string;
  /** Requests go out in call order, each once the one before is written. */
  private sending: Promise<unknown> = Promise.resolve();
  /** Replies are read in the same order, each once the one before is read. */
  private reading: Promise<unknown> = Promise.resolve();
  /** Set once a command failed mid-exchange: the byte stream is out of step, nothing more can be read. */
  private broken: OffloadError | undefined;
  /** Set once a request could not be written whole: nothing more may be sent after it. */
  private unsent: unknown;
  private writeError: Error | undefined;
  /** Sends waiting for "drain", woken when the server exits (a dead ssh peer may never drain). */
  private readonly exitWaiters = new Set<() => void>();
  private exited = false;
  private sent = 0;

  private constructor(io: ServeIo, reader: WireReader, remoteVersion: number, options: ServeOptions) {
    this.io = io;
    this.reader = reader;
    this.remoteVersion = remoteVersion;
    this.label = options.label ?? "nix-store --serve";
    this.storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
    void io.exit?.then(() => {
      this.exited = true;
      for (const wake of [...this.exitWaiters]) wake();
    });
  }

  /** Exchanges the greeting: we send magic and version together; the server answers with its own. */
  static async connect(io: ServeIo, options: ServeOptions = {}): Promise<ServeClient> {
    const label = options.label ?? "nix-store --serve";
    const reader = new WireReader(io.stdout);
    // Registered before the first write: a dead server makes writes fail with EPIPE, and the
    // read side explains that better, so the write error is only kept.
    let pending: Error | undefined;
    const onWriteError = (error: Error) => (pending ??= error);
    io.stdin.on("error", onWriteError);
    io.stdin.write(new WireWriter().u64(SERVE_MAGIC_1).u64(CLIENT_VERSION).toBuffer());
    let remoteVersion: number;
    try {
      const magic = await reader.bytes(8, "the server's greeting");
      if (magic.readBigUInt64LE(0) !== BigInt(SERVE_MAGIC_2)) {
        // Typically text from a shell startup file or an error message instead of the protocol.
        throw new OffloadError(`${label}: protocol mismatch: expected the serve greeting, got ${JSON.stringify(magic.toString("latin1"))}…`, {
          code: "protocol",
          fix: "make sure nothing (e.g. .bashrc) prints to stdout in non-interactive SSH sessions of the remote user",
        });
      }
      remoteVersion = await reader.num(undefined, "the server's protocol version");
    } catch (error) {
      io.stdin.end();
      throw await explainFailure(error, io, label, "the server's greeting");
    }
    if ((remoteVersion & 0xff00) !== 0x200 || (remoteVersion & 0xff) < 5) {
      io.stdin.end();
      throw new OffloadError(`${label} speaks serve protocol ${versionText(remoteVersion)}; need 2.5 or newer (Nix ≥ 2.1)`, {
        code: "protocol",
        fix: "upgrade Nix on that machine",
      });
    }
    const connected = new ServeClient(io, reader, remoteVersion, options);
    connected.writeError = pending;
    io.stdin.off("error", onWriteError);
    io.stdin.on("error", (error) => (connected.writeError ??= error));
    return connected;
  }

  /**
   * Continues a session someone else has already greeted (offload agent hands out warm
   * sessions): `remoteVersion` is what the server answered then.
   */
  static resume(io: ServeIo, remoteVersion: number, options: ServeOptions = {}): ServeClient {
    const client = new ServeClient(io, new WireReader(io.stdout), remoteVersion, options);
    io.stdin.on("error", (error) => (client.writeError ??= error));
    return client;
  }

  /** Both sides speak the lower of the two versions (Nix 2.35 answers 2.8 but then speaks our 2.7). */
  /** Bytes received and sent so far: a transfer that stops moving them has stalled. */
  get bytesMoved(): number {
    return this.reader.position + this.sent;
  }

  private get minor(): number {
    return Math.min(this.remoteVersion, CLIENT_VERSION) & 0xff;
  }

  /** Which of `paths` are valid. `lock` adds temporary GC roots on the server; `substitute` lets it fetch missing ones. */
  async queryValidPaths(paths: Iterable<string>, options: { lock?: boolean; substitute?: boolean } = {}): Promise<Set<string>> {
    const set = this.pathSet(paths);
    return this.exchange(
      "QueryValidPaths",
      () =>
        this.send(
          new WireWriter()
            .u64(Command.QueryValidPaths)
            .bool(options.lock ?? false)
            .bool(options.substitute ?? false)
            .strings(set)
            .toBuffer(),
        ),
      async () => new Set(await this.reader.strings(undefined, undefined, "the valid path set")),
    );
  }

  /** Path infos of the valid ones among `paths` (invalid paths are silently absent, as Nix does). */
  async queryPathInfos(paths: Iterable<string>): Promise<Map<string, PathInfo>> {
    const set = this.pathSet(paths);
    return this.exchange(
      "QueryPathInfos",
      () => this.send(new WireWriter().u64(Command.QueryPathInfos).strings(set).toBuffer()),
      async () => {
        const infos = new Map<string, PathInfo>();
        for (;;) {
          const path = await this.reader.string(undefined, "a path info's store path (or the terminating empty string)");
          if (path === "") return infos;
          const deriver = await this.reader.string(undefined, "the deriver");
          const references = await this.reader.strings(undefined, undefined, "the references");
          await this.reader.u64("the download size"); // always equal to narSize in Nix 2.8
          const narSize = await this.reader.num(Number.MAX_SAFE_INTEGER, "the NAR size");
          // Order per opServe: narHash, content address, then signatures (not sigs-then-ca).
          const narHash = parseNarHash(await this.reader.string(undefined, "the NAR hash"));
          const contentAddress = await this.reader.string(undefined, "the content address");
          const signatures = await this.reader.strings(undefined, undefined, "the signatures");
          infos.set(path, {
            path,
            ...(deriver === "" ? {} : { deriver }),
            references: references.sort(byteOrder),
            narHash,
            narSize,
            signatures,
            ...(contentAddress === "" ? {} : { contentAddress }),
          });
        }
      },
    );
  }

  /**
   * Streams the NAR of `path` to onBytes. The server sends it without a length or trailer,
   * so the NAR is parsed to find its end; an invalid path kills the server (Nix throws).
   */
  async dumpStorePath(path: string, onBytes: (bytes: Buffer) => void | Promise<void>): Promise<NarDigest> {
    const [checked] = this.pathSet([path]);
    return this.exchange(
      "DumpStorePath",
      () => this.send(new WireWriter().u64(Command.DumpStorePath).string(checked!).toBuffer()),
      // A failing sink (disk full) is ours, not the server's: keep it apart from stream errors.
      () =>
        copyNar(this.reader, async (bytes) => {
          try {
            await onBytes(bytes);
          } catch (error) {
            if (error instanceof OffloadError) throw error; // the sink's own verdict, e.g. more bytes than declared
            const text = error instanceof Error ? error.message : String(error);
            throw new OffloadError(`storing the NAR of ${path} failed: ${text}`, { code: "download-sink", cause: error });
          }
        }),
    );
  }

  /** Sends an export stream (`nix-store --export` format); the server imports without checking signatures. */
  async importPaths(exportStream: AsyncIterable<Buffer>): Promise<void> {
    return this.exchange(
      "ImportPaths",
      async () => {
        await this.send(new WireWriter().u64(Command.ImportPaths).toBuffer());
        for await (const chunk of fromSource(exportStream, "the export stream")) await this.send(chunk);
      },
      () => this.expectOne("ImportPaths"),
    );
  }

  /** Adds one path from its NAR, keeping info's signatures, deriver and content address. */
  async addToStoreNar(info: PathInfo, nar: AsyncIterable<Buffer>): Promise<void> {
    const [path] = this.pathSet([info.path]);
    const references = this.pathSet(info.references);
    if (info.narSize <= 0) throw new OffloadError(`addToStoreNar ${info.path}: narSize must be positive`, { code: "upload-source" });
    return this.exchange(
      "AddToStoreNar",
      async () => {
        const header = new WireWriter()
          .u64(Command.AddToStoreNar)
          .string(path!)
          .string(info.deriver ?? "")
          // Nix's own client sends base16 without "sha256:"; the server's Hash::parseAny takes either.
          .string(info.narHash.toString("hex"))
          .strings(references)
          .u64(0) // registrationTime: 0 lets the server use its current time
          .u64(info.narSize)
          .bool(false) // ultimate: the path was not built by that store
          .strings([...info.signatures].sort(byteOrder))
          .string(info.contentAddress ?? "");
        await this.send(header.toBuffer());
        let sent = 0;
        for await (const chunk of fromSource(nar, `the NAR of ${info.path}`)) {
          sent += chunk.length;
          if (sent > info.narSize) break;
          await this.send(chunk);
        }
        // The server reads exactly narSize bytes; any other amount desynchronises the stream.
        if (sent !== info.narSize) {
          throw new OffloadError(`addToStoreNar ${info.path}: the NAR has ${sent > info.narSize ? "more" : "fewer"} bytes than narSize ${info.narSize}`, {
            code: "upload-source",
          });
        }
      },
      () => this.expectOne("AddToStoreNar"),
    );
  }

  /** The closure of `paths` on the server; `includeOutputs` adds the valid outputs of derivations in it. */
  async queryClosure(paths: Iterable<string>, includeOutputs: boolean): Promise<Set<string>> {
    const set = this.pathSet(paths);
    return this.exchange(
      "QueryClosure",
      () => this.send(new WireWriter().u64(Command.QueryClosure).bool(includeOutputs).strings(set).toBuffer()),
      async () => new Set(await this.reader.strings(undefined, undefined, "the closure")),
    );
  }

  /**
   * Builds `drv` on the server. Its inputs (`inputSrcs`: the whole input closure, as Nix's hook
   * sends it) must already be valid there. The log arrives on the server's stderr, which the
   * caller must keep draining or the build stalls. Closing stdin (close()) interrupts the build.
   */
  async buildDerivation(drvPath: string, drv: BasicDerivation, inputSrcs: Iterable<string>, options: BuildOptions): Promise<BuildResult> {
    const [path] = this.pathSet([drvPath]);
    const inputs = this.pathSet(inputSrcs);
    const out = new WireWriter().u64(Command.BuildDerivation).string(path!);
    writeBasicDerivation(out, drv, inputs);
    writeBuildOptions(out, options, this.minor);
    return this.exchange(
      "BuildDerivation",
      () => this.send(out.toBuffer()),
      () => readBuildResult(this.reader, this.minor, this.storeDir),
    );
  }

  /** Ends the session: the server sees end of input and exits. */
  close(): void {
    this.broken ??= new OffloadError(`${this.label}: the serve connection is closed`, { code: "protocol" });
    this.io.stdin.end();
  }

  private pathSet(paths: Iterable<string>): string[] {
    const list = [...new Set(paths)].sort(byteOrder);
    // The server dies on anything else (parseStorePath throws), taking the connection with it.
    const bad = list.find((path) => !isStorePath(path, this.storeDir));
    if (bad !== undefined) throw new OffloadError(`${this.label}: not a store path: ${JSON.stringify(bad)}`, { code: "protocol" });
    return list;
  }

  private async expectOne(command: string): Promise<void> {
    const reply = await this.reader.num(undefined, `the ${command} acknowledgement`);
    if (reply !== 1) throw new OffloadError(`${this.label}: ${command} answered ${reply}, expected 1`, { code: "protocol" });
  }

  /**
   * One command: its request is written as soon as the requests before it are, its reply
   * read once theirs are. The protocol has no request ids and the server answers in order,
   * so commands issued back to back share one round trip. The server ends the session on a
   * command it cannot carry out (a path it lacks): a later command then fails, with that
   * explanation, after the earlier replies have been read.
   */
  private exchange<T>(command: string, send: () => Promise<void>, read: () => Promise<T>): Promise<T> {
    const sent = this.sending.then(async () => {
      // After a half-written request the server reads our next one as part of it: send nothing more.
      if (this.broken ?? this.unsent) throw this.broken ?? this.unsent;
      try {
        await send();
      } catch (error) {
        this.unsent = error;
        throw error;
      }
    });
    this.sending = sent.catch(() => undefined);
    const run = async (): Promise<T> => {
      if (this.broken) throw this.broken;
      try {
        await sent;
        return await read();
      } catch (error) {
        this.broken = await explainFailure(error, this.io, this.label, `the reply to ${command}`);
        throw this.broken;
      }
    };
    const result = this.reading.then(run, run);
    this.reading = result.catch(() => undefined);
    return result;
  }

  private async send(data: Buffer): Promise<void> {
    this.sent += data.length;
    const stdin = this.io.stdin;
    const gone = () =>
      this.writeError ??
      (stdin.destroyed || stdin.writableEnded ? new Error("the server's input is closed") : this.exited ? new Error("the server exited") : undefined);
    const early = gone();
    if (early) throw writeFailed(early);
    if (stdin.write(data)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (error?: Error) => {
        this.exitWaiters.delete(onExit);
        stdin.off("drain", onDrain);
        stdin.off("error", done);
        stdin.off("close", onClose);
        if (error) reject(writeFailed(error));
        else resolve();
      };
      const onDrain = () => done();
      const onClose = () => done(new Error("the server's input closed"));
      // A dead remote behind ssh may just stop taking data: the server's exit ends the wait too.
      const onExit = () => done(new Error("the server exited"));
      stdin.on("drain", onDrain);
      stdin.on("error", done);
      stdin.on("close", onClose);
      this.exitWaiters.add(onExit);
      // The pipe may have broken before we started listening (its events are gone by then).
      const late = gone();
      if (late) done(late);
    });
  }
}

/** Our own input failing (a local file, a generator) is not the server's fault: it keeps its identity. */
async function* fromSource(source: AsyncIterable<Buffer>, what: string): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of source) yield chunk;
  } catch (error) {
    const fix = error instanceof OffloadError ? error.fix : undefined;
    throw new OffloadError(`reading ${what} failed: ${error instanceof Error ? error.message : String(error)}`, { code: "upload-source", fix, cause: error });
  }
}

function writeFailed(error: Error): OffloadError {
  return new OffloadError(`writing to the server failed: ${error.message}`, { code: "wire-write", cause: error });
}

function versionText(version: number): string {
  return `${version >> 8}.${version & 0xff}`;
}

/**
 * Turns a failure during an exchange into a "protocol" error that says what was expected,
 * or into the more specific cause the server's exit status and stderr reveal.
 */
async function explainFailure(error: unknown, io: ServeIo, label: string, expected: string): Promise<OffloadError> {
  // Errors that did not come from the server's side of the pipe keep their own identity.
  if (error instanceof OffloadError && !/^(wire|nar|nix32)-/.test(error.code)) return error;
  // The NAR parser reports a truncated NAR in its own words, and a write fails with EPIPE:
  // when the server is gone, its exit status and stderr are the real story.
  const code = error instanceof OffloadError ? error.code : "";
  const ended = code === "wire-eof" || code === "wire-write" || io.stdout.readableEnded;
  // A server that died has usually exited by the time we saw end of stream; wait briefly for its status.
  let timer: NodeJS.Timeout | undefined;
  const status =
    ended && io.exit ? await Promise.race([io.exit, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), 2000)))]) : undefined;
  clearTimeout(timer);
  const stderr = io.stderrTail?.().trim() ?? "";
  // During a build stderr is the build's log: quote only Nix's own last error line then,
  // never log lines; otherwise whatever the server said last.
  const said = lastErrorLine(stderr) ?? (expected.includes("BuildDerivation") ? undefined : stderr.split("\n").at(-1)?.trim() || undefined);
  const detail = said === undefined ? "" : `: ${said}`;
  const cause = error;
  if (status?.code === 127) {
    return new OffloadError(`${label}: nix-store was not found on the machine${detail}`, {
      code: "nix-store-not-found",
      fix: "install Nix there, or make nix-store reachable in the PATH of non-interactive SSH sessions (e.g. a symlink in /usr/local/bin)",
      cause,
    });
  }
  // A non-root login goes through the remote nix-daemon, which refuses these to untrusted users.
  if (/lacks a valid signature/.test(said ?? "")) {
    return new OffloadError(`${label}: the remote Nix refused an unsigned path${detail}`, {
      code: "remote-not-trusted",
      fix: "add offload's public signing key to trusted-public-keys in the remote /etc/nix/nix.conf, or log in as root / a trusted-users member",
      cause,
    });
  }
  if (/not privileged/.test(said ?? "")) {
    return new OffloadError(`${label}: the remote Nix does not trust this SSH user${detail}`, {
      code: "remote-not-trusted",
      fix: "log in as root, or add the SSH user to trusted-users in the remote /etc/nix/nix.conf (and restart nix-daemon)",
      cause,
    });
  }
  if (/No space left on device/.test(said ?? "")) {
    return new OffloadError(`${label}: its store is full${detail}`, {
      code: "remote-disk-full",
      fix: `free space on ${label}: nix-collect-garbage -d there (and see offload check ${label}'s disk step)`,
      cause,
    });
  }
  const how = status ? ` (server exited with ${status.code ?? status.signal ?? "unknown status"})` : "";
  const what = error instanceof Error ? error.message : String(error);
  return new OffloadError(`${label}: expected ${expected}, but ${ended ? `the connection ended${how}` : what}${detail}`, {
    code: "protocol",
    cause,
  });
}

/** The last line in which Nix reports an error ("error: …", possibly indented under a trace), if any. */
function lastErrorLine(stderr: string): string | undefined {
  const lines = stderr.split("\n").map((line) => line.trim());
  for (let i = lines.length - 1; i >= 0; i--) if (lines[i]!.startsWith("error:")) return lines[i];
  return undefined;
}
