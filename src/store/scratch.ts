// Directories that exist only while one operation runs (spooled NARs, outputs being put into
// the store). Each is registered here so that a process told to stop (the daemon sends the
// hook SIGTERM from Nix 2.35 on, and SIGKILL 500 ms later) can remove them at once,
// synchronously, from its signal handler.
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";

const live = new Set<string>();

/** A new private directory `<parent>/<prefix>XXXXXX`, removed by removeScratch or on termination. */
export function makeScratch(parent: string, prefix: string): string {
  const dir = mkdtempSync(join(parent, prefix));
  live.add(dir);
  return dir;
}

export function removeScratch(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  live.delete(dir);
}

/** For signal handlers: removes every scratch directory still there. */
export function removeAllScratch(): void {
  for (const dir of live) removeScratch(dir);
}
