// Which machines.ts to load: --config, then $OFFLOAD_CONFIG, then machines.ts in the
// config directory (/etc/offload, or $OFFLOAD_CONFIG_DIR) beside the keys and the ACL.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { OffloadError } from "../errors.js";
import { configDir } from "../files/config-dir.js";

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
      : { path: join(configDir(env), "machines.ts"), source: "default" };
  if (!existsSync(candidate.path)) {
    throw new OffloadError(`no machines config at ${candidate.path} (from ${candidate.source})`, {
      code: "config-missing",
      fix:
        candidate.source === "default"
          ? `run \`offload init ${configDir(env)}\` to write a commented machines.ts there, or pass --config FILE`
          : `create ${candidate.path} (\`offload init DIR\` writes a template) or point ${candidate.source} elsewhere`,
    });
  }
  return candidate;
}
