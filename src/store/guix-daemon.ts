// Client for guix-daemon's worker protocol (nix/nix-daemon/nix-daemon.cc and
// nix/libstore/worker-protocol.hh in Guix's tree: Nix 1.x's protocol, version 0x164 in Guix
// 1.5) over its Unix socket, or a build machine's socket forwarded over SSH as `guix offload`
// reaches it: the few operations offload needs to read, write and build in a Guix store
// through the daemon that owns it. The greeting and the daemon's messages while an operation
// works (log lines, requests for input — ImportPaths reads its archive that way —, output —
// ExportPath writes its archive that way —, then "last" or "error") are worker-connection.ts.
import { DEFAULT_GUIX_SOCKET } from "../guix/paths.js";
import { connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { OffloadError } from "../errors.js";
import { WireWriter, type WireReader } from "../nix/wire.js";
import { WorkerConnection, type WorkerDialect } from "./worker-connection.js";

/** Guix 1.5 speaks 0x164; the daemon shapes its replies by the client's minor version, 0x63 needs nothing newer. */
const GUIX: WorkerDialect = {
  daemon: "guix-daemon",
  clientVersion: 0x163,
  brokenError: (message, cause) => new OffloadError(`guix-daemon: ${message}`, { code: "guix-daemon-protocol", cause }),
  daemonError: (message, exitCode) => new OffloadError(`guix-daemon: ${message}`, { code: "guix-daemon-error", exitCode }),
};

const enum Op {
  AddTextToStore = 8,
  BuildPaths = 9,
  AddTempRoot = 11,
  SetOptions = 19,
  QueryValidPaths = 31,
  QueryPathInfo = 26,
  ExportPath = 16,
  ImportPaths = 27,
  CollectGarbage = 20,
}

/** gcDeleteSpecific: delete the given paths if nothing refers to them. */
const GC_DELETE_SPECIFIC = 3;
const CONNECT_TIMEOUT_MS = 10_000;
/** A daemon that sends nothing for this long is taken as hung (exports stream continuously). */
const IDLE_TIMEOUT_MS = 300_000;

export interface GuixPathInfo {
  path: string;
  deriver?: string;
  /** SHA-256 of the NAR. */
  narHash: Buffer;
  narSize: number;
  references: string[];
}

export interface GuixDaemonOptions {
  /** Default $GUIX_DAEMON_SOCKET, else /var/guix/daemon-socket/socket. */
  socket?: string;
  /** The daemon's log lines for the client (e.g. "importing path …", a build's output). */
  log?: (line: string) => void;
}

/** What a build on the daemon may take (guix/store.scm `set-build-options`); 0 = no limit. */
export interface GuixBuildOptions {
  maxSilentTime: number;
  buildTimeout: number;
  useSubstitutes: boolean;
  /** Whether that daemon may hand the build on to its own build hook. */
  offload: boolean;
}

export class GuixDaemon {
  private constructor(
    private readonly connection: WorkerConnection,
    /** Where the daemon is: its socket's path (and machine). */
    readonly path: string,
  ) {}

  /** Connects to a local daemon's socket and exchanges the greeting; the connection acts as the calling user. */
  static async connect(options: GuixDaemonOptions = {}): Promise<GuixDaemon> {
    const path = options.socket ?? process.env.GUIX_DAEMON_SOCKET ?? DEFAULT_GUIX_SOCKET;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const connection = connect({ path });
      const timer = setTimeout(() => connection.destroy(new Error(`no connection within ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
      connection.once("connect", () => (clearTimeout(timer), resolve(connection)));
      connection.once("error", (error) => (clearTimeout(timer), reject(error)));
    }).catch((error: Error) => {
      throw new OffloadError(`cannot reach guix-daemon at ${path}: ${error.message}`, {
        code: "guix-daemon-unreachable",
        fix: "start guix-daemon (e.g. systemctl start guix-daemon), or point GUIX_DAEMON_SOCKET at its socket",
        cause: error,
      });
    });
    socket.setTimeout(IDLE_TIMEOUT_MS, () =>
      socket.destroy(new OffloadError(`guix-daemon: no answer within ${IDLE_TIMEOUT_MS / 1000} s`, { code: "guix-daemon-protocol" })),
    );
    return GuixDaemon.over(socket, path, options);
  }

  /**
   * Speaks to the daemon at the other end of `stream` (e.g. a machine's socket forwarded over
   * SSH, named `where` in messages). No idle limit here: a remote build may be silent for as
   * long as its max-silent-time allows, and that daemon enforces it.
   */
  static async over(stream: Duplex, where: string, options: GuixDaemonOptions = {}): Promise<GuixDaemon> {
    return new GuixDaemon(await WorkerConnection.open(stream, where, GUIX, options.log), where);
  }

  /** The daemon's protocol version (0x164 for Guix 1.5). */
  get version(): number {
    return this.connection.version;
  }

  /** Where the daemon's log lines go (settable: a build's output goes to the build log). */
  get log(): (line: string) => void {
    return this.connection.log;
  }

  set log(log: (line: string) => void) {
    this.connection.log = log;
  }

  close(): void {
    this.connection.close();
  }

  private get reader(): WireReader {
    return this.connection.reader;
  }

  private send(message: WireWriter): Promise<void> {
    return this.connection.send(message);
  }

  async queryValidPaths(paths: Iterable<string>): Promise<Set<string>> {
    await this.send(new WireWriter().u64(Op.QueryValidPaths).strings(paths));
    await this.connection.worked();
    return new Set(await this.reader.strings(1 << 20, 4096, "valid paths"));
  }

  /** What the store registered for a valid `path`. */
  async queryPathInfo(path: string): Promise<GuixPathInfo> {
    await this.send(new WireWriter().u64(Op.QueryPathInfo).string(path));
    await this.connection.worked();
    const deriver = await this.reader.string(4096, "deriver");
    const hash = await this.reader.string(128, "NAR hash");
    const references = await this.reader.strings(1 << 20, 4096, "references");
    await this.reader.u64("registration time");
    const narSize = Number(await this.reader.u64("NAR size"));
    if (!/^[0-9a-f]{64}$/.test(hash)) throw this.connection.protocolError(`NAR hash of ${path} is not base16 SHA-256: ${JSON.stringify(hash)}`);
    return { path, deriver: deriver || undefined, narHash: Buffer.from(hash, "hex"), narSize, references: references.sort() };
  }

  /**
   * `path` as one item of an export stream (NAR, magic, path, references, deriver, then 0 for
   * "no signature", or with `sign` 1 and the daemon's signature by its own key), streamed; the daemon refuses a path whose contents no
   * longer match its registered hash. Read it to the end before the next operation.
   */
  async *exportPath(path: string, options: { sign?: boolean } = {}): AsyncGenerator<Buffer> {
    await this.send(
      new WireWriter()
        .u64(Op.ExportPath)
        .string(path)
        .u64(options.sign ? 1 : 0),
    );
    yield* this.connection.work();
    await this.reader.u64("the end of the export");
  }

  /**
   * Imports an export stream (ending with 0). The daemon checks each item's signature
   * against its own ACL (/etc/guix/acl) with `guix authenticate`, then registers it.
   * Returns the imported paths.
   */
  async importPaths(stream: AsyncIterable<Buffer>): Promise<string[]> {
    await this.send(new WireWriter().u64(Op.ImportPaths));
    await this.connection.worked(stream);
    return this.reader.strings(1 << 20, 4096, "imported paths");
  }

  /** Deletes `paths` if nothing refers to them and no root holds them; returns those deleted. */
  async deletePaths(paths: Iterable<string>): Promise<string[]> {
    // action, paths, ignoreLiveness, maxFreed, an obsolete field, two removed options (minor ≥ 5).
    await this.send(new WireWriter().u64(Op.CollectGarbage).u64(GC_DELETE_SPECIFIC).strings(paths).u64(0).u64(0).u64(0).u64(0).u64(0));
    await this.connection.worked();
    const deleted = await this.reader.strings(1 << 20, 4096, "deleted paths");
    await this.reader.u64("bytes freed");
    await this.reader.u64("an obsolete field");
    return deleted;
  }

  /**
   * Sets the options of this connection's builds. Laid out for client version 0x163
   * (nix-daemon.cc's wopSetOptions): the limits travel as name/value pairs.
   */
  async setOptions(options: GuixBuildOptions): Promise<void> {
    const pairs: Array<[string, string]> = [["print-extended-build-trace", "0"]];
    if (options.buildTimeout > 0) pairs.push(["build-timeout", String(options.buildTimeout)]);
    if (options.maxSilentTime > 0) pairs.push(["build-max-silent-time", String(options.maxSilentTime)]);
    const message = new WireWriter()
      .u64(Op.SetOptions)
      .bool(false) // keep failed
      .bool(false) // keep going
      .bool(false) // fallback
      .u64(0) // verbosity
      .bool(options.offload)
      .u64(1) // build verbosity: the build's output comes as log lines
      .u64(0) // log type
      .bool(false) // print build trace
      .bool(options.useSubstitutes)
      .u64(pairs.length);
    for (const [name, value] of pairs) message.string(name).string(value);
    await this.send(message);
    await this.connection.worked();
  }

  /** Builds `paths` (derivations), passing their output to the log as it comes; throws the daemon's error when one fails. */
  async buildPaths(paths: readonly string[]): Promise<void> {
    await this.send(new WireWriter().u64(Op.BuildPaths).strings(paths).u64(0));
    await this.connection.worked();
    await this.reader.u64("the build's result");
  }

  /** Keeps `path` from the garbage collector while this connection lasts. */
  async addTempRoot(path: string): Promise<void> {
    await this.send(new WireWriter().u64(Op.AddTempRoot).string(path));
    await this.connection.worked();
    await this.reader.u64("the result");
  }

  /** Adds a text file to the store (as `add-text-to-store`); returns its store path. */
  async addTextToStore(name: string, text: string | Buffer, references: readonly string[] = []): Promise<string> {
    await this.send(new WireWriter().u64(Op.AddTextToStore).string(name).string(text).strings(references));
    await this.connection.worked();
    return this.reader.string(4096, "the new path");
  }
}
