// Runs a program with an argument vector (never a shell) and turns failure into an
// OffloadError that carries the program's own words.
import { execFile } from "node:child_process";
import { OffloadError, type FailureCode } from "../errors.js";

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** What to tell the user when the program fails. */
  fix?: string;
  code?: FailureCode;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env: options.env ?? process.env, timeout: options.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (!error) return resolve({ stdout, stderr });
      const why = stderr.trim() || error.message;
      reject(
        new OffloadError(`${[file, ...args].join(" ")} failed: ${why}`, {
          code: options.code ?? "lab-command-failed",
          fix: options.fix,
          cause: error,
        }),
      );
    });
  });
}
