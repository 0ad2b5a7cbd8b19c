// Recent facts about each machine (load, a failed connection), shared between hook processes
// through small files in the state dir. Deciding must take milliseconds, so the hook never
// connects just to ask; it uses what the last connection to the machine found, while fresh.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MachineState } from "./select.js";

export interface MachineFacts {
  /** Normalized load (1-minute loadavg / CPUs) and when it was measured. */
  load?: { value: number; at: number };
  /** The last connection failure, and when. */
  failure?: { message: string; at: number };
  /** When its store was last found too full, and the message saying so. */
  diskLow?: { message: string; at: number };
  /** The last successful build, for `offload status`. */
  lastBuild?: { drvPath: string; at: number };
}

/** A measured load says little after a minute (it is a 1-minute average). */
export const LOAD_FRESH_MS = 60_000;
/** After a failed connection, skip the machine this long instead of retrying it for every derivation. */
export const FAILURE_BACKOFF_MS = 30_000;

function factsFile(stateDir: string, machine: string): string {
  return join(stateDir, "machines", `${encodeURIComponent(machine)}.json`);
}

export function readFacts(stateDir: string, machine: string): MachineFacts {
  try {
    return JSON.parse(readFileSync(factsFile(stateDir, machine), "utf8")) as MachineFacts;
  } catch {
    return {};
  }
}

/** Merges `update` into the machine's facts (atomically: readers never see half a file). */
export function recordFacts(stateDir: string, machine: string, update: Partial<MachineFacts>): void {
  const file = factsFile(stateDir, machine);
  mkdirSync(join(stateDir, "machines"), { recursive: true, mode: 0o755 });
  const merged = { ...readFacts(stateDir, machine), ...update };
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, JSON.stringify(merged));
  renameSync(temporary, file);
}

/** The selection function's view of a machine: slots in use plus the facts still fresh at `now`. */
export function machineState(facts: MachineFacts, slotsInUse: number, now: number): MachineState {
  const state: MachineState = { slotsInUse };
  if (facts.load && now - facts.load.at < LOAD_FRESH_MS) state.load = facts.load.value;
  if (facts.failure && now - facts.failure.at < FAILURE_BACKOFF_MS) state.unreachable = facts.failure.message;
  if (facts.diskLow && now - facts.diskLow.at < FAILURE_BACKOFF_MS) state.diskLow = facts.diskLow.message;
  return state;
}
