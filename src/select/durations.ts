// How long builds took, per derivation name, scaled to a machine of speed 1: what lets the
// selection see that a long build should wait for a fast machine rather than start on a
// slow one. Recorded by the hook after each build it ran; names (not store paths) are the
// key, so a rebuild of the same package with other inputs finds its predecessor.
import { readFileSync } from "node:fs";
import { writeFileAtomicSync } from "../files/safety.js";
import { basename, join } from "node:path";

export type Durations = ReadonlyMap<string, number>;

function file(stateDir: string): string {
  return join(stateDir, "durations.json");
}

/** "/nix/store/<hash>-hello-2.12.drv" → "hello-2.12". */
export function derivationName(drvPath: string): string {
  return basename(drvPath)
    .replace(/^[^-]*-/, "")
    .replace(/\.drv$/, "");
}

export function readDurations(stateDir: string): Map<string, number> {
  try {
    const records = JSON.parse(readFileSync(file(stateDir), "utf8")) as Record<string, { seconds: number }>;
    return new Map(Object.entries(records).map(([name, record]) => [name, record.seconds]));
  } catch {
    return new Map(); // nothing recorded yet
  }
}

/** Blends a new measurement into the record (builds vary; the last one counts half). */
export function recordDuration(stateDir: string, name: string, seconds: number): void {
  let records: Record<string, { seconds: number; at: number }> = {};
  try {
    records = JSON.parse(readFileSync(file(stateDir), "utf8")) as typeof records;
  } catch {
    // first record
  }
  const previous = records[name]?.seconds;
  records[name] = { seconds: previous === undefined ? seconds : (previous + seconds) / 2, at: Date.now() };
  writeFileAtomicSync(file(stateDir), JSON.stringify(records), 0o644, { durable: false });
}
