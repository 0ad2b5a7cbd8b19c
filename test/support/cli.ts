// Runs the built `offload` executable (dist/, made by `npm run build`) as a user would.
import { spawn, spawnSync } from "node:child_process";
import { cpSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const BIN = fileURLToPath(new URL("../../bin/offload.js", import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * With `uid`: as that user (and group), with nothing of this process's environment but PATH,
 * running `bin` (default this package's; a user who cannot read this package — a clone in
 * root's home — needs a copy elsewhere: readableCopy()).
 */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, input?: string, uid?: number, bin = BIN): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child =
      uid === undefined
        ? spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env } })
        : // cwd /: this process's may be closed to that user (a clone in root's home), and children inherit it
          spawn("setpriv", ["--reuid", String(uid), "--regid", String(uid), "--clear-groups", "--", process.execPath, bin, ...args], {
            env: { PATH: process.env.PATH, ...env },
            cwd: "/",
          });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? "");
  });
}

/** This package's `offload` as `uid` can run it: this one when that user can read it, else a copy of what it runs from in `dir` (readable by all). */
export function readableCli(uid: number, dir: string): string {
  const readable = spawnSync("setpriv", ["--reuid", String(uid), "--regid", String(uid), "--clear-groups", "--", "test", "-r", BIN]).status === 0;
  if (readable) return BIN;
  const root = join(dirname(BIN), "..");
  const copy = join(dir, "package");
  for (const entry of ["package.json", "bin", "dist", "types", "node_modules"]) cpSync(join(root, entry), join(copy, entry), { recursive: true });
  spawnSync("chmod", ["-R", "a+rX", copy]); // the modes of a root-only clone may be stricter
  return join(copy, "bin", "offload.js");
}
