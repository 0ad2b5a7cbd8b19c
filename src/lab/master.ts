// The master side of a lab for tests: a host of a chosen Nix release whose nix-daemon runs,
// with a non-root client user, so that `nix-build` there (as root, or as the client through
// the daemon) can hand builds to offload-hook and the lab's builders. The lab's client key
// and config dir are under the lab directory: share it.
//   const master = await startMasterHost({ dir: `${lab.dir}/master`, nix: "2.34", shared: [lab.dir],
//     nixConf: [`build-hook = ${HOOK}`], daemonEnv: { OFFLOAD_CONFIG_DIR: lab.configDir } });
//   await runInHost(master, ["nix-build", …], { user: CLIENT_USER, env: { NIX_REMOTE: "daemon" } });
import { ensureUser, startHost, startNixDaemon, type Host, type NixRelease } from "./host.js";

/** The non-root user of a master host: a member of nix-users, so it reaches the daemon. */
export const CLIENT_USER = "offload-client";

export interface MasterHostOptions {
  /** Its directory (its /nix and /etc/nix). */
  dir: string;
  nix: NixRelease;
  /** Paths to see inside, e.g. the lab directory and the test's files. */
  shared?: string[];
  /** Lines for its /etc/nix/nix.conf, which its nix-daemon reads (e.g. build-hook, max-jobs). */
  nixConf?: string[];
  /** The nix-daemon's environment besides PATH and HOME, which its build hook inherits. */
  daemonEnv?: Record<string, string>;
}

export async function startMasterHost(options: MasterHostOptions): Promise<Host> {
  const host = await startHost({ name: "master", nix: options.nix, dir: options.dir, shared: options.shared, nixConf: options.nixConf });
  await ensureUser(host, CLIENT_USER);
  await startNixDaemon(host, { env: options.daemonEnv });
  return host;
}
