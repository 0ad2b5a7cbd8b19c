// Where offload keeps run-time state: the slot secret, the agent's socket and recent
// per-machine facts. Whoever can write there could plant a fake agent or learn slot
// names, so it must belong to root (or the invoking user) and be writable by nobody else.
import { ensureSafeDir } from "../files/safety.js";

export const DEFAULT_STATE_DIR = "/var/lib/offload";

export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.OFFLOAD_STATE_DIR || DEFAULT_STATE_DIR;
}

/** Creates the state dir if needed and refuses one that others could write to. */
export function ensureStateDir(dir: string): void {
  ensureSafeDir(dir, "state directory", "state-unsafe");
}
