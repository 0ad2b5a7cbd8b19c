// Starts `nix-store --serve --write` on a build machine over an SSH connection and speaks
// the serve protocol on that channel, as Nix's ssh:// store does.

import type { RemoteProcess, SshConnection } from "../remote/ssh.js";
import { shellQuote } from "../remote/shell-quote.js";
import { ServeClient } from "./serve.js";

export interface ServeSessionOptions {
  /** The machine's `remoteStore`: passed as `--store`. */
  remoteStore?: string;
  /** Default "nix-store" (Nix's remote-program). */
  remoteProgram?: string;
  /** Names the machine in messages. Default: the connection's machine name. */
  label?: string;
}

export interface ServeSession {
  client: ServeClient;
  /** The remote process. Its stderr (build logs, errors) is read from the first byte: see stderrTail and onStderr. */
  process: RemoteProcess;
  /** The last few KiB of the remote command's stderr, quoted when it fails (e.g. "No space left on device"). */
  stderrTail(): string;
  /** Receives stderr as it arrives (the remote build log). */
  onStderr(listener: (chunk: Buffer) => void): void;
}

const STDERR_TAIL = 8192;

/** Reads `process`'s stderr from now on, keeping a tail and passing it to listeners. */
export function readStderr(process: RemoteProcess): Pick<ServeSession, "stderrTail" | "onStderr"> {
  let tail = "";
  const listeners: ((chunk: Buffer) => void)[] = [];
  process.stderr.on("data", (chunk: Buffer) => {
    tail = (tail + chunk.toString()).slice(-STDERR_TAIL);
    for (const listener of listeners) listener(chunk);
  });
  return { stderrTail: () => tail, onStderr: (listener) => void listeners.push(listener) };
}

/** The remote command line of a serve session, as the remote shell gets it. */
export function serveCommand(options: Pick<ServeSessionOptions, "remoteStore" | "remoteProgram"> = {}): string {
  const words = [options.remoteProgram ?? "nix-store", "--serve", "--write"];
  if (options.remoteStore !== undefined) words.push("--store", options.remoteStore);
  return words.map(shellQuote).join(" ");
}

export async function openServeSession(connection: SshConnection, options: ServeSessionOptions = {}): Promise<ServeSession> {
  const process = await connection.exec(serveCommand(options));
  // From the first byte: a server that dies during the greeting has said why on stderr.
  const stderr = readStderr(process);
  try {
    const client = await ServeClient.connect(
      { stdin: process.stdin, stdout: process.stdout, exit: process.exit, stderrTail: stderr.stderrTail },
      { label: options.label ?? connection.target.name },
    );
    return { client, process, ...stderr };
  } catch (error) {
    process.close();
    throw error;
  }
}
