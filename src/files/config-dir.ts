// Where offload keeps its trust material (signing key pairs, ACLs): /etc/offload, or
// $OFFLOAD_CONFIG_DIR. The rules for those files are in safety.ts.
import path from "node:path";

export const DEFAULT_CONFIG_DIR = "/etc/offload";

/** $OFFLOAD_CONFIG_DIR, else /etc/offload. */
export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.OFFLOAD_CONFIG_DIR;
  return fromEnv && fromEnv.length > 0 ? path.resolve(fromEnv) : DEFAULT_CONFIG_DIR;
}

export function secretKeyPath(dir: string = configDir()): string {
  return path.join(dir, "signing-key.sec");
}

export function publicKeyPath(dir: string = configDir()): string {
  return path.join(dir, "signing-key.pub");
}

export function aclPath(dir: string = configDir()): string {
  return path.join(dir, "acl");
}
