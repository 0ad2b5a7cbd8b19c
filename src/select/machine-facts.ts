// Recent facts about each machine (load, a failed connection), shared between hook processes
// through small files in the state dir. Deciding must take milliseconds, so the hook never
// connects just to ask; it uses what the last connection to the machine found, while fresh.
import { DEFAULTS } from "../defaults.js";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { writeFileAtomicSync } from "../files/safety.js";
import { join } from "node:path";
import type { BuildMachine } from "../../types/index.js";
import { isLoginRefusal } from "./failures.js";
import type { MachineState } from "./select.js";

export interface MachineFacts {
  /** Normalized load (1-minute loadavg / CPUs) and when it was measured. */
  load?: { value: number; at: number };
  /**
   * The last connection failure, and when; with its code and the hash of the machine's
   * record then (recordHash), so that a changed record is tried again at once.
   */
  failure?: { message: string; at: number; code?: string; record?: string };
  /** When its store was last found too full, and the message saying so. */
  diskLow?: { message: string; at: number };
  /** The last successful build, for `offload status`. */
  lastBuild?: { drvPath: string; at: number };
}

/** A measured load says little after a minute (it is a 1-minute average). */
export const LOAD_FRESH_MS = 60_000;
const FAILURE_BACKOFF_MS = DEFAULTS.failureBackoffS * 1000;

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
  writeFileAtomicSync(file, JSON.stringify(merged), 0o644, { durable: false });
}

/** A machine just reached again (by `offload check`) is no longer skipped for its last failure. */
export function forgetFailure(stateDir: string, machine: string): void {
  if (readFacts(stateDir, machine).failure) recordFacts(stateDir, machine, { failure: undefined });
}

/** Identifies a machine's record as machines.ts defines it now: a fixed hostKey, port or user changes it. */
export function recordHash(machine: BuildMachine): string {
  return createHash("sha256").update(JSON.stringify(machine)).digest("hex").slice(0, 16);
}

/**
 * The selection function's view of a machine: slots in use plus the facts still fresh at
 * `now`. A failure recorded against another version of its record (`record`) is forgotten.
 */
export function machineState(facts: MachineFacts, slotsInUse: number, now: number, record?: string): MachineState {
  const state: MachineState = { slotsInUse };
  if (facts.load && now - facts.load.at < LOAD_FRESH_MS) state.load = facts.load.value;
  const failure = facts.failure;
  if (failure && now - failure.at < FAILURE_BACKOFF_MS && (failure.record === undefined || failure.record === record)) {
    state.unreachable = `${isLoginRefusal(failure.code) ? "login refused" : "unreachable"}: ${failure.message}`;
  }
  if (facts.diskLow && now - facts.diskLow.at < FAILURE_BACKOFF_MS) state.diskLow = facts.diskLow.message;
  return state;
}
