// A timed child process whose stdin and stdout can be files (for raw `ssh … cat` transfers).
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";

export interface TimedOptions {
  /** File fed to stdin (default: none). */
  stdinFile?: string;
  /** File stdout is written to (default: discarded). */
  stdoutFile?: string;
}

/** Wall time in ms of `command args`; rejects with its stderr when it fails. */
export function timedCommand(command: string, args: readonly string[], options: TimedOptions = {}): Promise<number> {
  const stdin = options.stdinFile === undefined ? "ignore" : openSync(options.stdinFile, "r");
  const stdout = options.stdoutFile === undefined ? "ignore" : openSync(options.stdoutFile, "w");
  return new Promise<number>((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(command, args, { stdio: [stdin, stdout, "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if (code === 0) resolve(ms);
      else reject(new Error(`${command} ${args.join(" ")} exited with ${code}: ${stderr.trim().split("\n").slice(-3).join(" / ")}`));
    });
  }).finally(() => {
    for (const fd of [stdin, stdout]) if (typeof fd === "number") closeSync(fd);
  });
}
