// Temporary directories that offload's safety checks accept: not under /tmp (world-writable)
// but under the user's home, whose parents are root's or the user's own.
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

const base = join(homedir(), ".cache", "offload-tests");

export function makeSafeDir(prefix: string): string {
  mkdirSync(base, { recursive: true, mode: 0o755 });
  chmodSync(base, 0o755);
  const dir = mkdtempSync(join(base, `${prefix}-`));
  chmodSync(dir, 0o755);
  return dir;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
