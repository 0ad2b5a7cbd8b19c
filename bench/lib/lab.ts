// A private lab for one benchmark: its own directory, prefix and loopback addresses (the
// test helper's startTestLab), torn down however the benchmark ends, Ctrl-C included.
// Also the offload side of it: config dirs (the lab's or a variant with other records)
// and a state/cache dir of its own, so no earlier run's slots or facts leak in.
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Lab, LabOptions } from "../../src/lab/index.js";
import { startTestLab, stopTestLab } from "../../test/support/lab.js";
import { makeSafeDir, removeDir } from "../../test/support/safe-dir.js";

export interface BenchLab {
  lab: Lab;
  /** Scratch directory offload accepts (not world-writable): configs, state, cache, .nix files. */
  work: string;
}

export async function withLab<T>(name: string, options: LabOptions, body: (bench: BenchLab) => Promise<T>): Promise<T> {
  const work = makeSafeDir(name, "offload-bench");
  let lab: Lab | undefined;
  // A benchmark interrupted halfway must not leave sshds or Include lines behind.
  const onSignal = () => {
    void stopTestLab(lab).finally(() => {
      removeDir(work);
      process.exit(130);
    });
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    lab = await startTestLab(options);
    return await body({ lab, work });
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await stopTestLab(lab);
    removeDir(work);
  }
}

/** The environment of an offload-hook using `configDir`, with state and cache dirs private to this benchmark. */
export function offloadEnv(bench: BenchLab, configDir = bench.lab.configDir): NodeJS.ProcessEnv {
  return { ...process.env, OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(bench.work, "state"), OFFLOAD_CACHE_DIR: join(bench.work, "cache") };
}

/**
 * A config dir beside the lab's, with the lab's key and ACL, whose machines.ts is the lab's
 * (imported, not copied) plus `extraRecords`, e.g. `localMachine({ speed: 2 })`.
 */
export function configVariant(bench: BenchLab, name: string, extraRecords: string[]): string {
  const dir = join(bench.work, name);
  mkdirSync(dir, { mode: 0o755 });
  copyFileSync(bench.lab.signingKeySecret, join(dir, "signing-key.sec"));
  chmodSync(join(dir, "signing-key.sec"), 0o600);
  copyFileSync(bench.lab.acl, join(dir, "acl"));
  const text = [
    'import { localMachine } from "offload";',
    `import labMachines from ${JSON.stringify(bench.lab.machinesFile)};`,
    `export default [...labMachines, ${extraRecords.join(", ")}];`,
    "",
  ].join("\n");
  writeFileSync(join(dir, "machines.ts"), text, { mode: 0o644 });
  return dir;
}
