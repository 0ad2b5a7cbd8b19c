// Where offload keeps run-time state: the slot secret, the agent's socket and recent
// per-machine facts. Whoever can write there could plant a fake agent or learn slot
// names, so it must belong to root (or the invoking user) and be writable by nobody else.
import { mkdirSync, statSync } from "node:fs";
import { OffloadError } from "../errors.js";

export const DEFAULT_STATE_DIR = "/var/lib/offload";

export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.OFFLOAD_STATE_DIR || DEFAULT_STATE_DIR;
}

/** Creates the state dir if needed and refuses one that others could write to. */
export function ensureStateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const stat = statSync(dir);
  const me = process.getuid?.() ?? 0;
  if (stat.uid !== me && stat.uid !== 0) {
    throw new OffloadError(`refusing state directory ${dir}: it belongs to uid ${stat.uid}`, { code: "state-unsafe", fix: `chown root ${dir}` });
  }
  if ((stat.mode & 0o022) !== 0) {
    throw new OffloadError(`refusing state directory ${dir}: others can write to it (mode ${(stat.mode & 0o777).toString(8)})`, {
      code: "state-unsafe",
      fix: `chmod go-w ${dir}`,
    });
  }
}
