// A config dir of its own for one test: the lab's offload signing key and ACL, and a
// machines.ts of lab builders with whatever a test changes in their records.
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Lab, LabBuilder } from "../../src/lab/index.js";

/** The record `offload lab up` writes for `builder`, load ignored (loopback builders share this host's CPUs). */
export function labRecord(lab: Lab, builder: LabBuilder, changes: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: builder.address,
    port: builder.port,
    user: "root",
    systems: [builder.system],
    hostKey: builder.hostKey,
    privateKey: lab.clientKey,
    parallelBuilds: builder.parallelBuilds,
    speed: builder.speed,
    features: builder.features,
    mandatoryFeatures: builder.mandatoryFeatures,
    overloadThreshold: null,
    signingKey: builder.signingKey,
    ...changes,
  };
}

export interface LabConfigOptions {
  /** Replaces the lab's ACL (one key per line). */
  acl?: string;
  /** Appended to the list as is, e.g. `localMachine({ speed: 3 })`. */
  extra?: string;
}

/** Writes <base>/<name>/{signing-key.sec,acl,machines.ts}; returns that directory. */
export function writeLabConfig(base: string, name: string, lab: Lab, records: Record<string, unknown>[], options: LabConfigOptions = {}): string {
  const configDir = join(base, name);
  mkdirSync(configDir, { mode: 0o755 });
  copyFileSync(lab.signingKeySecret, join(configDir, "signing-key.sec"));
  chmodSync(join(configDir, "signing-key.sec"), 0o600);
  if (options.acl === undefined) copyFileSync(lab.acl, join(configDir, "acl"));
  else writeFileSync(join(configDir, "acl"), options.acl, { mode: 0o644 });
  writeMachinesTs(configDir, records, options.extra);
  return configDir;
}

/** <configDir>/machines.ts: a buildMachine() per record, then `extra` as is. */
export function writeMachinesTs(configDir: string, records: Record<string, unknown>[], extra?: string): string {
  const lines = [...records.map((record) => `  buildMachine(${JSON.stringify(record)}),`), ...(extra ? [`  ${extra},`] : [])];
  const file = join(configDir, "machines.ts");
  writeFileSync(file, `import { buildMachine, localMachine } from "offload";\nexport default [\n${lines.join("\n")}\n];\n`, { mode: 0o644 });
  return file;
}

/** Environment for `offload` using that config dir, its own state dir and a shared compile cache. */
export function configEnv(base: string, configDir: string): Record<string, string> {
  return { OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(configDir, "state"), OFFLOAD_CACHE_DIR: join(base, "cache") };
}

/** <base>/<name>: the lab's own machines.ts (a copy), key and ACL; state and cache dirs go in it too. */
export function copyLabConfig(lab: Lab, base: string, name: string): string {
  const config = join(base, name);
  mkdirSync(config, { mode: 0o755 });
  for (const file of ["signing-key.sec", "acl"]) copyFileSync(join(lab.configDir, file), join(config, file));
  chmodSync(join(config, "signing-key.sec"), 0o600);
  writeFileSync(join(config, "machines.ts"), readFileSync(lab.machinesFile, "utf8"));
  return config;
}
