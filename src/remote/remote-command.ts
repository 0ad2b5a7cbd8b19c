// One short shell command on a machine, its output collected, never waiting forever: a
// machine that stops answering mid-command must not hang `check`, `status` or the hook.
import type { SshConnection } from "./ssh.js";

export interface RemoteResult {
  /** Exit code; null when killed by a signal, when the connection died or on timeout. */
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export async function runRemote(connection: SshConnection, command: string, timeoutMs: number): Promise<RemoteResult> {
  const process = await connection.exec(command);
  let stdout = "";
  let stderr = "";
  process.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  process.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  let timer: NodeJS.Timeout | undefined;
  // "exit" can come before the last output: wait for the end of stdout too.
  const status = await Promise.race([
    Promise.all([process.exit, new Promise((resolve) => process.stdout.once("end", resolve))]).then(([exit]) => exit),
    new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (status === undefined) {
    process.close();
    return { code: null, stdout, stderr, timedOut: true };
  }
  return { code: status.code, stdout, stderr, timedOut: false };
}
