// The daemon's worker protocol (worker-protocol.hh), as both daemons offload talks to speak
// it: guix-daemon (Nix 1.x's protocol, 0x164 in Guix 1.5) and nix-daemon (1.10 to 1.38). A
// client of an old minor version gets the old shapes from either: log lines where newer
// clients get activities (minor < 20), an error as message and status (minor < 26). This
// file is the greeting and the daemon's messages while an operation works; the operations
// are in guix-daemon.ts and nix-worker.ts. Numbers and strings are Nix's wire encoding.
import type { Duplex } from "node:stream";
import type { OffloadError } from "../errors.js";
import { WireReader, WireWriter } from "../nix/wire.js";

const WORKER_MAGIC_1 = 0x6e697863;
const WORKER_MAGIC_2 = 0x6478696f;

const enum Stderr {
  Next = 0x6f6c6d67,
  Read = 0x64617461,
  Write = 0x64617416,
  Last = 0x616c7473,
  Error = 0x63787470,
}

/** Which daemon a connection speaks to: how its messages and failures are named. */
export interface WorkerDialect {
  /** "guix-daemon" or "nix-daemon", in messages. */
  daemon: string;
  /** The protocol version this client announces; the daemon shapes its replies by its minor version. */
  clientVersion: number;
  /** A broken exchange: `message` says what broke. */
  brokenError(message: string, cause?: unknown): OffloadError;
  /** An error the daemon reported, with Nix's exit code for it (100 permanent, 101 timed out, 1 transient). */
  daemonError(message: string, exitCode: number): OffloadError;
}

/** Hands out a byte stream in pieces of at most the size the daemon asks for. */
class ChunkSource {
  private readonly iterator: AsyncIterator<Buffer>;
  private rest: Buffer = Buffer.alloc(0);

  constructor(source: AsyncIterable<Buffer>) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  async take(max: number): Promise<Buffer> {
    while (this.rest.length === 0) {
      const next = await this.iterator.next();
      if (next.done) return this.rest;
      this.rest = next.value;
    }
    const piece = this.rest.subarray(0, max);
    this.rest = this.rest.subarray(piece.length);
    return piece;
  }
}

export class WorkerConnection {
  readonly reader: WireReader;
  /** The daemon's protocol version. */
  version = 0;

  private constructor(
    private readonly stream: Duplex,
    private readonly dialect: WorkerDialect,
    /** Where the daemon's log lines go (settable: a build's output goes to the build log). */
    public log: (line: string) => void,
  ) {
    this.reader = new WireReader(stream);
  }

  /** Greets the daemon at the other end of `stream` (named `where` in messages) and reads its startup messages. */
  static async open(stream: Duplex, where: string, dialect: WorkerDialect, log: (line: string) => void = () => undefined): Promise<WorkerConnection> {
    const connection = new WorkerConnection(stream, dialect, log);
    try {
      await connection.send(new WireWriter().u64(WORKER_MAGIC_1));
      if ((await connection.reader.u64("the daemon's greeting")) !== BigInt(WORKER_MAGIC_2))
        throw connection.protocolError(`${where} does not speak ${dialect.daemon}'s protocol`);
      const version = await connection.reader.num(0xffff, "the daemon's protocol version");
      if (version >> 8 !== 1) throw connection.protocolError(`unsupported protocol version 0x${version.toString(16)}`);
      connection.version = version;
      // No CPU affinity (minor ≥ 14), no reserved space (minor ≥ 11).
      await connection.send(new WireWriter().u64(dialect.clientVersion).u64(0).u64(0));
      await connection.worked();
    } catch (error) {
      connection.close();
      throw error;
    }
    return connection;
  }

  close(): void {
    this.stream.destroy();
  }

  protocolError(message: string, cause?: unknown): OffloadError {
    return this.dialect.brokenError(message, cause);
  }

  async send(message: WireWriter | Buffer): Promise<void> {
    const bytes = Buffer.isBuffer(message) ? message : message.toBuffer();
    await new Promise<void>((resolve, reject) => {
      // A stream destroyed meanwhile (a daemon process that exited) may never call back.
      const closed = () => reject(this.protocolError("writing failed: the connection is closed"));
      if (this.stream.destroyed) return closed();
      this.stream.once("close", closed);
      this.stream.write(bytes, (error) => {
        this.stream.off("close", closed);
        if (error) reject(this.protocolError(`writing failed: ${error.message}`, error));
        else resolve();
      });
    });
  }

  /**
   * The daemon's messages while it works: yields what it writes, answers its reads from
   * `input`, passes log lines on; ends at "last", throws its error.
   */
  async *work(input?: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    const source = input === undefined ? undefined : new ChunkSource(input);
    for (;;) {
      const code = Number(await this.reader.u64("a daemon message"));
      if (code === Stderr.Last) return;
      if (code === Stderr.Next) {
        this.log((await this.reader.string(1 << 20, "a log line")).replace(/\n$/, ""));
      } else if (code === Stderr.Write) {
        yield await this.reader.stringBytes(1 << 26, "output data");
      } else if (code === Stderr.Read) {
        const max = await this.reader.num(1 << 26, "the size of a read");
        if (source === undefined) throw this.protocolError("the daemon asked for input where none belongs");
        await this.send(new WireWriter().string(await source.take(max)));
      } else if (code === Stderr.Error) {
        const message = (await this.reader.string(1 << 20, "an error message")).trim();
        // Worker::exitStatus: 101 timed out, 100 (or more) a permanent failure, else transient.
        const status = Number(await this.reader.u64("the error status"));
        const exitCode = status === 101 ? 101 : status >= 100 ? 100 : 1;
        throw this.dialect.daemonError(message, exitCode);
      } else {
        throw this.protocolError(`unknown message 0x${code.toString(16)}`);
      }
    }
  }

  /** The daemon's messages of an operation that writes nothing back before its result, `input` answering its reads. */
  async worked(input?: AsyncIterable<Buffer>): Promise<void> {
    for await (const _ of this.work(input)) throw this.protocolError("unexpected output from the daemon");
  }
}
