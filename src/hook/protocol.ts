// The build hook's side of Nix's hook protocol (Nix's src/build-remote/build-remote.cc and
// derivation-goal.cc `tryBuildHook`, unchanged from 2.8 to 2.35): settings and
// "try" requests arrive on stdin in the wire encoding; replies and log messages go back
// on stderr; the build log goes to fd 4.
import type { SessionLender } from "../agent/agent-client.js";
import { fstatSync, writeSync } from "node:fs";
import type { Readable } from "node:stream";
import type { NixVersion } from "../nix/daemon-version.js";
import { WireReader, type WireSource } from "../nix/wire.js";
import { parentNixVersion } from "./daemon.js";
import type { BuildRequest } from "../select/select.js";

export type Reply = "decline" | "decline-permanently" | "postpone";

/** Nix's verbosity levels, as used in `@nix` log messages. */
export const enum Level {
  Error = 0,
  Warn = 1,
  Notice = 2,
  Info = 3,
  Talkative = 4,
  Chatty = 5,
  Debug = 6,
}

export interface HookIo {
  input: WireSource;
  /** The control channel (the daemon reads the hook's stderr). */
  control: (line: string) => void;
  /** The build log (fd 4), or undefined when there is none. */
  buildLog?: (bytes: Buffer | string) => void;
  /** The version of the Nix that started the hook, when it can be told (not for a hook run by hand or a test). */
  daemonVersion?: (stateDir: string) => Promise<NixVersion | undefined>;
  /** Aborted when the daemon stopped the hook while it was served by the agent (a hook process just dies). */
  stopped?: AbortSignal;
  /** The serving agent's sessions, when the agent serves the hook. */
  lender?: SessionLender;
}

/** The real process: stdin, stderr, and fd 4 if the daemon opened it. */
export function processIo(env: NodeJS.ProcessEnv = process.env): HookIo {
  // bin/offload-hook says whether the daemon opened fd 4: by the time node runs its own code,
  // node may have opened a descriptor 4 of its own. Started directly, the hook can only look.
  const logFd = env.OFFLOAD_BUILD_LOG_FD === undefined ? (isOpen(4) ? 4 : undefined) : env.OFFLOAD_BUILD_LOG_FD === "4" ? 4 : undefined;
  return {
    input: process.stdin as Readable,
    // Synchronous writes: a reply must reach the daemon before anything that follows it.
    control: (line) => writeAll(2, Buffer.from(line)),
    buildLog: logFd === undefined ? undefined : (bytes) => writeAll(logFd!, typeof bytes === "string" ? Buffer.from(bytes) : bytes),
    daemonVersion: (stateDir) => parentNixVersion(stateDir),
  };
}

function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false; // run by hand, not by the daemon
  }
}

/** Writes all of `bytes` to `fd`, synchronously. */
export function writeAll(fd: number, bytes: Buffer): void {
  for (let done = 0; done < bytes.length;) done += writeSync(fd, bytes, done);
}

/** Where the exchange stands: what the daemon expects from the hook next. */
type Stage = "settings" | "between-requests" | "asked" | "accepted";

export class HookChannel {
  private readonly reader: WireReader;
  private stage: Stage = "settings";

  constructor(private readonly io: HookIo) {
    this.reader = new WireReader(io.input);
  }

  /** The daemon's settings, sent first: `u64 1, name, value` pairs ended by `u64 0`. */
  async readSettings(): Promise<Map<string, string>> {
    const settings = new Map<string, string>();
    while (await this.reader.bool("the settings marker")) {
      const name = await this.reader.string(undefined, "a setting's name");
      settings.set(name, await this.reader.string(undefined, `the value of setting ${name}`));
    }
    this.stage = "between-requests";
    return settings;
  }

  /** The next "try", or undefined when the daemon is done with this hook (end of input). */
  async nextRequest(): Promise<BuildRequest | undefined> {
    if (await this.reader.atEnd()) return undefined;
    const word = await this.reader.string(16, "the request");
    if (word !== "try") return undefined;
    const amWilling = await this.reader.bool("amWilling");
    const system = await this.reader.string(undefined, "the system");
    const drvPath = await this.reader.string(undefined, "the derivation path");
    const requiredFeatures = await this.reader.strings(undefined, undefined, "the required features");
    this.stage = "asked";
    return { amWilling, system, drvPath, requiredFeatures };
  }

  reply(verdict: Reply): void {
    this.io.control(`# ${verdict}\n`);
    this.stage = "between-requests";
  }

  /** Accepts the build for `machine`; the daemon then sends what the build needs. */
  async accept(machine: string): Promise<{ inputs: string[]; wantedOutputs: string[] }> {
    this.io.control(`# accept\n${machine}\n`);
    this.stage = "accepted";
    const inputs = await this.reader.strings(undefined, undefined, "the input paths");
    const wantedOutputs = await this.reader.strings(undefined, undefined, "the wanted outputs");
    return { inputs, wantedOutputs };
  }

  /** A message the daemon shows at `level` (after accept, plain stderr lines are dropped). */
  message(level: Level, text: string): void {
    this.io.control(`@nix ${JSON.stringify({ action: "msg", level, msg: text })}\n`);
  }

  buildLog(bytes: Buffer | string): void {
    this.io.buildLog?.(bytes);
  }

  /**
   * Fails the build the daemon asks about (or asks about next) with `text` as its log, so
   * the person running it reads offload's reason as the build's last log lines, not
   * "unexpected EOF reading a line" from a hook that just exited. The hook accepts it as
   * machine "offload" (no reply means failure), reads what the daemon then sends, and
   * logs the reason. Returns false where the exchange cannot carry that any more.
   */
  async failRequest(text: string): Promise<boolean> {
    try {
      if (this.stage === "settings") await this.readSettings();
      if (this.stage === "between-requests" && !(await this.nextRequest())) return false;
      if (this.stage !== "asked") return false;
      await this.accept("offload");
    } catch {
      return false; // the daemon hung up or sent something else: nothing more can be said
    }
    if (this.io.buildLog) this.buildLog(`${text}\n`);
    else this.message(Level.Error, text);
    return true;
  }
}
