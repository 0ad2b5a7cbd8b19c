// Temporary directories that offload's safety checks accept: not under /tmp (world-writable)
// but under the user's home, whose parents are root's or the user's own. Tests and
// benchmarks each have their own area under ~/.cache.
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export function makeSafeDir(prefix: string, area = "offload-tests"): string {
  const base = join(homedir(), ".cache", area);
  mkdirSync(base, { recursive: true, mode: 0o755 });
  chmodSync(base, 0o755);
  const dir = mkdtempSync(join(base, `${prefix}-`));
  chmodSync(dir, 0o755);
  return dir;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
