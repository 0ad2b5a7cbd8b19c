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
  /** Recent stderr of the remote command, if the caller collects it (quoted when the server dies). */
  stderrTail?: () => string;
}

export interface ServeSession {
  client: ServeClient;
  /** The remote process; its stderr carries build logs and is the caller's to drain. */
  process: RemoteProcess;
}

/** The remote command line of a serve session, as the remote shell gets it. */
export function serveCommand(options: Pick<ServeSessionOptions, "remoteStore" | "remoteProgram"> = {}): string {
  const words = [options.remoteProgram ?? "nix-store", "--serve", "--write"];
  if (options.remoteStore !== undefined) words.push("--store", options.remoteStore);
  return words.map(shellQuote).join(" ");
}

export async function openServeSession(connection: SshConnection, options: ServeSessionOptions = {}): Promise<ServeSession> {
  const process = await connection.exec(serveCommand(options));
  try {
    const client = await ServeClient.connect(
      { stdin: process.stdin, stdout: process.stdout, exit: process.exit, stderrTail: options.stderrTail },
      { label: options.label ?? connection.target.name },
    );
    return { client, process };
  } catch (error) {
    process.close();
    throw error;
  }
}
