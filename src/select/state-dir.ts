// Where offload keeps run-time state: slot names and recent per-machine facts.
export const DEFAULT_STATE_DIR = "/var/lib/offload";

export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.OFFLOAD_STATE_DIR || DEFAULT_STATE_DIR;
}
