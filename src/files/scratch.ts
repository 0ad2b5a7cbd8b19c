// Directories that exist only while one operation runs (spooled NARs, outputs on their way
// into the store). Each lives in a dedicated parent, named after the process that made it,
// so that:
// - a process told to stop (the daemon sends the hook SIGTERM from Nix 2.35 on, and SIGKILL
//   500 ms later) removes its own at once, synchronously, from its signal handler;
// - what a killed process left behind is swept by the next one (its pid is no longer alive).
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { readProcStat } from "./proc-stat.js";
import { join } from "node:path";

const live = new Set<string>();

/** A new private directory `<parent>/<pid>-XXXXXX` (parent created 0700 if missing). */
export function makeScratch(parent: string): string {
  mkdirSync(parent, { recursive: true, mode: 0o700 });
  const dir = mkdtempSync(join(parent, `${process.pid}-`));
  live.add(dir);
  return dir;
}

export function removeScratch(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  live.delete(dir);
}

/**
 * From now on `dir` outlives a termination of this process (removeAllScratch leaves it) and is
 * the next process's to finish: for a landing whose registration may be under way.
 */
export function keepScratch(dir: string): void {
  live.delete(dir);
}

/** For signal handlers: removes every scratch directory of this process still there. */
export function removeAllScratch(): void {
  for (const dir of live) removeScratch(dir);
}

/** Removes what dead processes left in `parent`; returns how many. */
export function sweepScratch(parent: string): number {
  const dead = deadScratch(parent);
  for (const dir of dead) rmSync(dir, { recursive: true, force: true });
  return dead.length;
}

/** The directories in `parent` whose process is gone. */
export function deadScratch(parent: string): string[] {
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return []; // never used yet
  }
  return names
    .filter((name) => {
      const pid = Number(/^(\d+)-/.exec(name)?.[1]);
      return pid && pid !== process.pid && !alive(pid);
    })
    .map((name) => join(parent, name));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"; // someone else's, but alive
  }
  // A killed process nobody has reaped yet (a detached agent's parent may never) is gone too.
  const stat = readProcStat(pid);
  return stat !== undefined && stat.state !== "Z";
}
