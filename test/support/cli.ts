// Runs the built `offload` executable (dist/, made by `npm run build`) as a user would.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const BIN = fileURLToPath(new URL("../../bin/offload.js", import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** With `uid`: as that user (and group), with nothing of this process's environment but PATH. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, input?: string, uid?: number): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child =
      uid === undefined
        ? spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } })
        : spawn("setpriv", ["--reuid", String(uid), "--regid", String(uid), "--clear-groups", "--", process.execPath, BIN, ...args], { env: { PATH: process.env.PATH, ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? "");
  });
}
