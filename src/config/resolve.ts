// Which machines.ts to load: --config, then $OFFLOAD_CONFIG, then /etc/offload/machines.ts.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { OffloadError } from "../errors.js";

export const DEFAULT_CONFIG = "/etc/offload/machines.ts";

export interface ResolvedConfig {
  path: string;
  /** Where the path came from, for messages. */
  source: "--config" | "$OFFLOAD_CONFIG" | "default";
}

export function resolveConfigPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): ResolvedConfig {
  const candidate: ResolvedConfig = option
    ? { path: resolve(option), source: "--config" }
    : env.OFFLOAD_CONFIG
      ? { path: resolve(env.OFFLOAD_CONFIG), source: "$OFFLOAD_CONFIG" }
      : { path: DEFAULT_CONFIG, source: "default" };
  if (!existsSync(candidate.path)) {
    throw new OffloadError(`no machines config at ${candidate.path} (from ${candidate.source})`, {
      code: "config-missing",
      fix:
        candidate.source === "default"
          ? "run `offload init` to write a commented /etc/offload/machines.ts, or pass --config FILE"
          : `create ${candidate.path} (\`offload init DIR\` writes a template) or point ${candidate.source} elsewhere`,
    });
  }
  return candidate;
}
