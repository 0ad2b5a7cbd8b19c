// Guix hosts for the lab: a host of the sid root (host.ts; guix 1.5.0 lives there) in which
// /gnu, /var/guix, /var/log/guix and /etc/guix are directories of the host's own, a
// guix-daemon runs on the default socket, /etc/guix holds a signing key of its own, and
// optionally an sshd lets others in as root by key (what guix-daemon and guix/scripts/offload.scm
// need). Two of them and `configureGuixOffload` make a pair for Guix's own `guix offload`.
//
//   const builder = await startGuixHost({ name: "gb", dir: "/var/lib/x/gb", ssh: { address: "127.0.0.29", port: 2429, authorizedKeys: [masterKey] } });
//   const master = await startGuixHost({ name: "gm", dir: "/var/lib/x/gm", daemonArgs: ["--max-jobs=0"] });
//   await configureGuixOffload(master, [builder], "/var/lib/x/gm/id_guix");
//   await runInHost(master.host, ["guix", "repl", "--", "build.scm"]);
//   await stopHost(master.host);                     // daemon, sshd and mounts go with it
//
// The mounts are made inside the host's mount namespace after it started, so host.ts needs
// to know nothing of Guix; they vanish with the host.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { OffloadError, type FailureCode } from "../errors.js";
import { writeFileAtomic } from "../files/safety.js";
import { runInHost, startDaemon, startHost, stopHost, type Host } from "./host.js";
import { ensureSshKey } from "./keys.js";
import { startSshd, type SshdListen } from "./sshd.js";

/** The root guix comes from: sid's, Debian's guix 1.5.0. */
const GUIX_HOST_NIX = "2.34";
/** What a Guix host has of its own, inside → its directory's subdirectory. */
const OWN_DIRECTORIES: Array<[inside: string, own: string]> = [
  ["/gnu", "gnu"],
  ["/var/guix", "var-guix"],
  ["/var/log/guix", "var-log-guix"],
  ["/etc/guix", "etc-guix"],
];

export interface GuixSshSpec extends SshdListen {
  /** OpenSSH public key lines allowed to log in as root. */
  authorizedKeys: string[];
}

export interface GuixHostSpec {
  /** Lowercase letters, digits and -. */
  name: string;
  /** Its own directory: gnu/, var-guix/, etc-guix/, logs, sshd files. */
  dir: string;
  /** More paths of this machine to see at the same place inside. */
  shared?: string[];
  /** guix-daemon's arguments after `--build-users-group= --disable-chroot --no-substitutes` (e.g. --max-jobs=0). */
  daemonArgs?: string[];
  /** guix-daemon's environment besides PATH and HOME, e.g. GUIX=<a build hook's entry point>. */
  daemonEnv?: Record<string, string>;
  /** An sshd in the host on this address and port (this machine's network), root login by key. */
  ssh?: GuixSshSpec;
}

export interface GuixHost {
  host: Host;
  name: string;
  dir: string;
  /** Its /etc/guix/signing-key.pub. */
  signingKey: string;
  /** Present with an sshd: where it listens and its host key line ("ssh-ed25519 AAAA…"). */
  ssh?: SshdListen & { hostKey: string };
}

/** Where the files of a Guix host with directory `dir` are, as seen from this machine. */
export function guixHostPaths(dir: string) {
  const own = (inside: string) => path.join(dir, OWN_DIRECTORIES.find(([at]) => at === inside)![1]);
  return {
    gnu: own("/gnu"),
    etcGuix: own("/etc/guix"),
    /** guix-daemon's socket, /var/guix/daemon-socket/socket inside. */
    daemonSocket: path.join(own("/var/guix"), "daemon-socket", "socket"),
    daemonLog: path.join(dir, "guix-daemon.log"),
    signingKey: path.join(own("/etc/guix"), "signing-key.pub"),
    acl: path.join(own("/etc/guix"), "acl"),
    machines: path.join(own("/etc/guix"), "machines.scm"),
    sshdConfig: path.join(dir, "sshd_config"),
    sshHostKey: path.join(dir, "ssh_host_ed25519_key"),
    authorizedKeys: path.join(dir, "authorized_keys"),
    sshdPid: path.join(dir, "sshd.pid"),
    sshdLog: path.join(dir, "sshd.log"),
  };
}

function guixHostError(name: string, message: string, code: FailureCode, fix: string): OffloadError {
  return new OffloadError(`Guix host ${name}: ${message}`, { code, fix });
}

/** Runs `argv` in the host as root; its stdout, or an OffloadError with its stderr. */
async function mustRun(host: Host, argv: string[], input?: string): Promise<string> {
  const result = await runInHost(host, argv, { input, timeoutMs: 120_000 });
  if (result.code !== 0) {
    throw guixHostError(
      host.name,
      `${argv.join(" ")} failed: ${result.stderr.trim() || `status ${result.code}`}`,
      "guix-host-command-failed",
      `see ${host.dir}`,
    );
  }
  return result.stdout;
}

async function startGuixDaemon(host: Host, spec: GuixHostSpec): Promise<void> {
  const files = guixHostPaths(spec.dir);
  const argv = ["guix-daemon", "--build-users-group=", "--disable-chroot", "--no-substitutes", ...(spec.daemonArgs ?? [])];
  await startDaemon(host, argv, { env: spec.daemonEnv, socket: files.daemonSocket, log: files.daemonLog });
}

function sshdConfig(spec: GuixHostSpec & { ssh: GuixSshSpec }): string {
  const files = guixHostPaths(spec.dir);
  return [
    `# Guix host ${spec.name} (offload lab)`,
    `ListenAddress ${spec.ssh.address}`,
    `Port ${spec.ssh.port}`,
    `HostKey ${files.sshHostKey}`,
    `PidFile ${files.sshdPid}`,
    "PermitRootLogin prohibit-password",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    `AuthorizedKeysFile ${files.authorizedKeys}`,
    // `guix offload` reaches the builder's guix-daemon through a forwarded Unix socket.
    "AllowStreamLocalForwarding yes",
    "PrintMotd no",
    "",
  ].join("\n");
}

async function startGuixSshd(spec: GuixHostSpec & { ssh: GuixSshSpec }): Promise<string> {
  const files = guixHostPaths(spec.dir);
  const hostKey = await ensureSshKey(files.sshHostKey, `guix-host-${spec.name}`);
  await writeFileAtomic(files.authorizedKeys, spec.ssh.authorizedKeys.map((line) => `${line.trim()}\n`).join(""), 0o644);
  await writeFileAtomic(files.sshdConfig, sshdConfig(spec), 0o644);
  await startSshd({ sshdConfig: files.sshdConfig, pidFile: files.sshdPid, logFile: files.sshdLog }, spec.ssh);
  // The "ssh-ed25519 AAAA…" part: what a build-machine's host-key field holds.
  return hostKey.split(" ").slice(0, 2).join(" ");
}

/**
 * Starts the Guix host (replacing one in the same directory): its own Guix directories, its
 * guix-daemon, its signing key (made once, kept across restarts), its sshd if asked for.
 */
export async function startGuixHost(spec: GuixHostSpec): Promise<GuixHost> {
  const dir = path.resolve(spec.dir);
  const host = await startHost({ name: spec.name, nix: GUIX_HOST_NIX, dir, shared: spec.shared });
  try {
    const mounts: string[] = [];
    for (const [inside, own] of OWN_DIRECTORIES) {
      await mkdir(path.join(dir, own), { recursive: true, mode: 0o755 });
      await mkdir(path.join(host.root, inside), { recursive: true, mode: 0o755 });
      mounts.push(`mount --bind ${path.join(dir, own)} ${inside}`);
    }
    await mkdir(path.join(guixHostPaths(dir).gnu, "store"), { recursive: true, mode: 0o755 });
    await mustRun(host, ["sh", "-ec", mounts.join("\n")]);
    await startGuixDaemon(host, { ...spec, dir });
    const files = guixHostPaths(dir);
    if (!(await readFile(files.signingKey, "utf8").catch(() => ""))) await mustRun(host, ["guix", "archive", "--generate-key"]);
    const signingKey = await readFile(files.signingKey, "utf8");
    const ssh = spec.ssh && { ...spec.ssh, hostKey: await startGuixSshd({ ...spec, dir, ssh: spec.ssh }) };
    return { host, name: spec.name, dir, signingKey, ...(ssh ? { ssh: { address: ssh.address, port: ssh.port, hostKey: ssh.hostKey } } : {}) };
  } catch (error) {
    await stopHost(host);
    throw error;
  }
}

/** Makes `host`'s guix-daemon accept archives signed by `publicKey` (a Guix key's text). */
export async function authorizeInGuixHost(host: GuixHost, publicKey: string): Promise<void> {
  await mustRun(host.host, ["guix", "archive", "--authorize"], publicKey);
}

export interface GuixOffloadOptions {
  system?: string;
  parallelBuilds?: number;
  /**
   * Normalized load above which `guix offload` skips a machine; default none (#f): lab hosts
   * share this machine's /proc/loadavg, so one busy test would make every builder "overloaded".
   */
  overloadThreshold?: number;
}

/** Where a build machine's sshd listens; a host without one cannot be a build machine. */
function builderSsh(builder: GuixHost): NonNullable<GuixHost["ssh"]> {
  if (!builder.ssh) throw guixHostError(builder.name, "it has no sshd, so it cannot be a build machine", "guix-host-invalid", "start it with `ssh`");
  return builder.ssh;
}

/** /etc/guix/machines.scm listing `builders` (each with an sshd), logging in as root with `privateKey`. */
export function machinesScm(builders: readonly GuixHost[], privateKey: string, options: GuixOffloadOptions = {}): string {
  const records = builders.map((builder) => {
    const ssh = builderSsh(builder);
    return [
      "  (build-machine",
      `    (name ${JSON.stringify(ssh.address)})`,
      `    (port ${ssh.port})`,
      `    (systems (list ${JSON.stringify(options.system ?? "x86_64-linux")}))`,
      `    (host-key ${JSON.stringify(ssh.hostKey)})`,
      `    (user "root")`,
      `    (private-key ${JSON.stringify(privateKey)})`,
      `    (overload-threshold ${options.overloadThreshold ?? "#f"})`,
      `    (parallel-builds ${options.parallelBuilds ?? 1}))`,
    ].join("\n");
  });
  return `;; written by offload's lab (src/lab/guix-host.ts)\n(list\n${records.join("\n")})\n`;
}

/**
 * The machines.ts record (a `buildMachine({…})` expression) through which offload's hook
 * builds on `builder` (which has an sshd), logging in as root with `privateKey`; its
 * signingKey pinned, so offload's Guix ACL need not list it.
 */
export function guixMachineRecord(builder: GuixHost, privateKey: string, options: Omit<GuixOffloadOptions, "system"> & { systems?: string[] } = {}): string {
  const ssh = builderSsh(builder);
  const fields: Record<string, unknown> = {
    name: builder.name,
    host: ssh.address,
    port: ssh.port,
    daemon: "guix",
    systems: options.systems ?? ["x86_64-linux"],
    hostKey: ssh.hostKey,
    privateKey,
    signingKey: builder.signingKey.trim(),
    parallelBuilds: options.parallelBuilds ?? 1,
    // As machinesScm: lab hosts share this machine's load.
    overloadThreshold: options.overloadThreshold ?? null,
  };
  return `buildMachine({ ${Object.entries(fields)
    .map(([name, value]) => `${name}: ${JSON.stringify(value)}`)
    .join(", ")} })`;
}

/**
 * Sets up Guix's own `guix offload` from `master` to `builders`: an SSH key for the master
 * (at `privateKey`, made once; its public half goes into each builder's authorized keys),
 * both sides' signing keys authorized on the other, and the master's machines.scm.
 */
export async function configureGuixOffload(
  master: GuixHost,
  builders: readonly GuixHost[],
  privateKey: string,
  options: GuixOffloadOptions = {},
): Promise<void> {
  const publicLine = await ensureSshKey(privateKey, `guix-offload-${master.name}`);
  for (const builder of builders) {
    const authorized = guixHostPaths(builder.dir).authorizedKeys;
    const lines = (await readFile(authorized, "utf8").catch(() => "")).split("\n").filter(Boolean);
    if (!lines.includes(publicLine)) await writeFile(authorized, [...lines, publicLine, ""].join("\n"), { mode: 0o644 });
    await authorizeInGuixHost(master, builder.signingKey);
    await authorizeInGuixHost(builder, master.signingKey);
  }
  await writeFileAtomic(guixHostPaths(master.dir).machines, machinesScm(builders, privateKey, options), 0o644);
}
