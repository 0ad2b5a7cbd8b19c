// `lab down`: stops every sshd of the lab with all its sessions and builds, and takes the
// lab's Include line out of root's ssh config. `purge` also deletes the directory.
import { rm, stat } from "node:fs/promises";
import path from "node:path";
import { OffloadError } from "../errors.js";
import { readLab } from "./lab.js";
import { labPaths } from "./layout.js";
import { processesMatching, terminateTrees } from "./processes.js";
import { assertRoot } from "./root.js";
import { defaultRootSshConfig, removeInclude } from "./root-ssh-config.js";
import { labSshdPattern, stopSshd } from "./sshd.js";

export interface LabDownOptions {
  /** Also delete the lab directory (keys, stores, configs). */
  purge?: boolean;
}

export async function labDown(dir: string, options: LabDownOptions = {}): Promise<void> {
  assertRoot("offload lab down");
  const paths = labPaths(path.resolve(dir));
  const lab = await readLab(paths.dir).catch(() => undefined);
  const exists = await stat(paths.dir).then(() => true, () => false);
  // Never delete a directory that is not a lab (a mistyped --dir /var/lib).
  if (options.purge && exists && lab === undefined) {
    throw new OffloadError(`not purging ${paths.dir}: it has no lab.json, so it is not a lab directory`, {
      code: "lab-not-found",
      fix: `delete it by hand if it really is an old lab: rm -r ${paths.dir}`,
    });
  }
  for (const builder of lab?.builders ?? []) await stopSshd(builder);
  // Builders a lost or older lab.json does not list.
  await terminateTrees(await processesMatching(labSshdPattern(paths.dir)));
  const rootSshConfig = lab === undefined ? defaultRootSshConfig() : lab.rootSshConfig;
  if (rootSshConfig !== null) await removeInclude(rootSshConfig, paths.sshConfig);
  if (options.purge) await rm(paths.dir, { recursive: true, force: true });
}
