// `lab down`: stops every builder of the lab (its host, with its sshd, sessions and builds),
// and takes the lab's Include line out of root's ssh config. `purge` also deletes the directory.
import { rm, stat } from "node:fs/promises";
import path from "node:path";
import { OffloadError } from "../errors.js";
import { runningHosts, stopHost } from "./host.js";
import { readGuixLab, readLab, type LabBuilder } from "./lab.js";
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
  const exists = await stat(paths.dir).then(
    () => true,
    () => false,
  );
  // Never delete a directory that is not a lab (a mistyped --dir /var/lib).
  if (options.purge && exists && lab === undefined && (await readGuixLab(paths.dir)) === undefined) {
    throw new OffloadError(`not purging ${paths.dir}: it has no lab.json or guix-lab.json, so it is not a lab directory`, {
      code: "lab-not-found",
      fix: `delete it by hand if it really is an old lab: rm -r ${paths.dir}`,
    });
  }
  for (const builder of lab?.builders ?? []) await stopBuilder(builder);
  await stopStrays(paths.dir);
  const rootSshConfig = lab === undefined ? defaultRootSshConfig() : lab.rootSshConfig;
  if (rootSshConfig !== null) await removeInclude(rootSshConfig, paths.sshConfig);
  if (options.purge) await rm(paths.dir, { recursive: true, force: true });
}

/** Stops the builder's sshd and its host (by directory: records of older labs have no host). */
export async function stopBuilder(builder: Pick<LabBuilder, "name" | "dir" | "sshdConfig" | "pidFile" | "logFile">): Promise<void> {
  await stopSshd(builder);
  await stopHost({ name: builder.name, dir: builder.dir });
}

/**
 * Hosts (but those in `keep`) and sshds of the lab in `dir` that a lost or older lab.json does
 * not list; sshds of builders that keep their hosts have been stopped already.
 */
export async function stopStrays(dir: string, keep: readonly string[] = []): Promise<void> {
  for (const host of await runningHosts()) if (path.dirname(host.dir) === dir && !keep.includes(host.dir)) await stopHost(host);
  await terminateTrees(await processesMatching(labSshdPattern(dir)));
}
