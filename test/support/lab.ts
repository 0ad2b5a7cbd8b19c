// A private lab for one test file: its own directory, builder names and loopback addresses,
// so suites running in parallel never share an sshd, an alias or a store.
//   let lab: Lab;
//   beforeAll(async () => { lab = await startTestLab(); }, LAB_UP_TIMEOUT_MS);
//   afterAll(() => stopTestLab(lab));
// Then OFFLOAD_CONFIG_DIR=lab.configDir, Nix `--option builders @${lab.nixMachines}`,
// `ssh ...sshArgs(lab, lab.builders[0], "command")`.
import { randomBytes } from "node:crypto";
import { labDown, labUp } from "../../src/lab/index.js";
import type { Lab, LabOptions } from "../../src/lab/index.js";

/** For beforeAll: on a fresh CI machine the first `up` apt-installs nix-bin and openssh-server. */
export const LAB_UP_TIMEOUT_MS = 600_000;

export async function startTestLab(options: LabOptions = {}): Promise<Lab> {
  // Random addresses can collide with another suite's lab (sshd then cannot bind): try others.
  for (let attempt = 1; ; attempt++) {
    const id = randomBytes(3);
    const target = {
      // /var/lib, not /tmp: offload refuses configs under world-writable directories.
      dir: `/var/lib/offload-lab-test-${id.toString("hex")}`,
      prefix: `t${id.toString("hex")}`,
      // 127.<100-227>.<1-254>.11: away from the default lab's 127.0.0.11.
      firstAddress: `127.${100 + (id[0]! % 128)}.${1 + (id[1]! % 254)}.11`,
      ...options,
    };
    try {
      return await labUp(target);
    } catch (error) {
      await labDown(target.dir, { purge: true }).catch(() => undefined);
      if (attempt === 3 || (error as { code?: string }).code !== "lab-sshd-failed") throw error;
    }
  }
}

/** Stops every process of the lab and deletes its directory. */
export async function stopTestLab(lab: Lab | undefined): Promise<void> {
  if (lab !== undefined) await labDown(lab.dir, { purge: true });
}

/** The environment for an offload process that should use the lab's machines and keys. */
export function labEnv(lab: Lab): NodeJS.ProcessEnv {
  return { ...process.env, OFFLOAD_CONFIG_DIR: lab.configDir };
}
