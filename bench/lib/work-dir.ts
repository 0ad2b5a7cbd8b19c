// Scratch directories for benchmarks. offload refuses configs under world-writable
// directories (/tmp), so they live under the user's cache dir, like the tests' safe dirs.
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

const base = join(homedir(), ".cache", "offload-bench");

export function makeWorkDir(prefix: string): string {
  mkdirSync(base, { recursive: true, mode: 0o755 });
  chmodSync(base, 0o755);
  const dir = mkdtempSync(join(base, `${prefix}-`));
  chmodSync(dir, 0o755);
  return dir;
}

export function removeWorkDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
