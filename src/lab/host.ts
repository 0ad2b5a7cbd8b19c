// A host: a machine of its own on this one, for the lab. It is a mount namespace in which
// /nix and /etc/nix are the host's own directories, so that its store is at the real
// /nix/store, and whose root is either this machine's (Nix 2.8, Debian 12's nix-bin) or a
// Debian root made by scripts/roots.sh (trixie: Nix 2.26, sid: Nix 2.34), entered with
// chroot; and a PID namespace with its own /proc. Users and the rest of the file system
// are the machine's, or the root's: hosts of one root share it but /nix, /etc/nix and /proc.
// The network is the machine's too, unless the host is started with `network: true`: then it
// has a network namespace of its own, linked to this machine by a veth pair, with an address
// of its own that faults can be injected into (network.ts). With `storeMiB` its /nix is a
// tmpfs of that size (store and database together, so they always agree), to fill up.
//
//   const host = await startHost({ name: "b0", nix: "2.34", dir: "/var/lib/x/b0", shared: ["/var/lib/x"] });
//   await runInHost(host, ["nix-store", "--version"]);   // { code: 0, stdout: "nix-store (Nix) 2.34.8\n", … }
//   const { file, args } = inHost(host, ["/usr/sbin/sshd", "-f", …]);   // for spawn/execFile
//   await ensureUser(host, "alice");                     // a non-root user who may use the nix-daemon
//   await startNixDaemon(host);                          // then runInHost(host, […], { user: "alice" })
//   const b = await startHost({ name: "b1", nix: "2.8", dir: "/var/lib/x/b1", network: true, storeMiB: 64 });
//   b.network.address                                    // "10.213.37.6", reachable from this machine only
//   await stopHost(host);                                // nothing of it runs, nothing stays mounted
//
// A host lives as long as its anchor, the init (pid 1) of its PID namespace: `unshare`
// starts it, it makes the mounts, then becomes a loop that reaps orphans, renamed
// "offload-host <name> <nix> <dir>[ net=<address>][ store=<MiB>]" so that it can be found
// again by its command line (no pid file to go stale). Every command enters its namespaces
// with nsenter, then the root with chroot. When the anchor dies the kernel kills every
// process of the PID namespace, daemons and processes in mount namespaces of their own
// included (Nix 2.34's nix-daemon makes one); the mounts vanish with the last of them, and
// so does a network namespace with its end of the veth pair. stopHost removes what lives on
// this machine's side: the other end of the link, and the tmpfs of a sized store.
//
// Its directory holds nix/ (its /nix), etc-nix/ (its /etc/nix, nix.conf written here) and
// nix-daemon.log. Inside a Debian root, some paths of the machine are bind-mounted at the
// same absolute path: offload's package root, the host's directory, `shared`, and this
// machine's node as /usr/local/bin/node (so bin/offload-hook.js runs there too).
import { spawn } from "node:child_process";
import { appendFile, chmod, chown, mkdir, open, readFile, stat } from "node:fs/promises";
import { connect } from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { OffloadError, type FailureCode } from "../errors.js";
import { PACKAGE_ROOT } from "../package-root.js";
import { shellQuote } from "../remote/shell-quote.js";
import { writeFileAtomic } from "../files/safety.js";
import { withFileLock } from "./file-lock.js";
import { attachLink, hasLink, hostNetwork, prepareLink, releaseLink, type HostNetwork } from "./network.js";
import { run } from "./run.js";
import { namespaceOf, processesInNamespaces, runningProcesses, signal, terminate, waitGone } from "./processes.js";

/** Which Nix a host runs: this machine's, or that of the Debian root holding it. */
export type NixRelease = "2.8" | "2.26" | "2.34";

/** The Debian suite of each release's root; 2.8 is this machine's own Nix. */
const SUITES: Record<NixRelease, string | null> = { "2.8": null, "2.26": "trixie", "2.34": "sid" };

export const NIX_RELEASES = Object.keys(SUITES) as NixRelease[];

export function isNixRelease(value: string): value is NixRelease {
  return Object.hasOwn(SUITES, value);
}

export interface HostSpec {
  /** For messages and the anchor's command line: lowercase letters, digits and -. */
  name: string;
  nix: NixRelease;
  /** The host's own directory (its /nix, /etc/nix); created if missing. */
  dir: string;
  /** More paths of this machine to see at the same place inside (only Debian roots need them). */
  shared?: string[];
  /** Lines for its /etc/nix/nix.conf after the settings every host has. */
  nixConf?: string[];
  /** A network namespace of its own, linked to this machine (network.ts). Default: this machine's network. */
  network?: boolean;
  /** Its /nix is a fresh tmpfs of this many MiB (lost when the host stops). Default: the directory's nix/. */
  storeMiB?: number;
}

export interface Host {
  name: string;
  nix: NixRelease;
  /** Its root directory: "/" for this machine's Nix, else a Debian root. */
  root: string;
  dir: string;
  anchorPid: number;
  /** Present when it has a network of its own: its address, and this machine's end of the link. */
  network?: HostNetwork;
  /** Present when its /nix is a tmpfs of this size. */
  storeMiB?: number;
}

/** Where the files of a host with directory `dir` are, as seen from this machine. */
export function hostPaths(dir: string) {
  const nix = path.join(dir, "nix");
  return {
    nix,
    etcNix: path.join(dir, "etc-nix"),
    /** Its /etc/nix/nix.conf: edits take effect with the next Nix command run inside. */
    nixConf: path.join(dir, "etc-nix", "nix.conf"),
    /** Its nix-daemon's socket, /nix/var/nix/daemon-socket/socket inside. */
    daemonSocket: path.join(nix, "var", "nix", "daemon-socket", "socket"),
    daemonLog: path.join(dir, "nix-daemon.log"),
  };
}

/** Where this machine sees `file`, a path under /nix inside the host (e.g. a store path). */
export function onMachine(host: Pick<Host, "dir">, file: string): string {
  if (!file.startsWith("/nix/")) throw new OffloadError(`${file} is not under /nix`, { code: "internal" });
  return path.join(hostPaths(host.dir).nix, file.slice("/nix/".length));
}

// What `sudo -i` would give, with /usr/local/bin first for the shared node.
const PATH = "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const ANCHOR = /^offload-host ([a-z][a-z0-9-]*) (\S+) (\/\S*)( net=[0-9.]+)?( store=\d+)? -c /;
// The anchor: says it is ready once it has its name, then reaps whatever ends up its child.
const ANCHOR_LOOP = "echo ready; while :; do sleep 86400 & wait $!; done";
const SAFE_PATH = /^\/[A-Za-z0-9._/+-]*$/;
const SAFE_NAME = /^[a-z][a-z0-9-]*$/;
// Debian's nix-setup-systemd makes /nix/var/nix/daemon-socket 0770 root:nix-users: only
// members reach the daemon. Hosts do the same (Debian roots lack that package and group).
const NIX_USERS = "nix-users";
const START_TIMEOUT_MS = 10_000;

function rootsDir(): string {
  return process.env.OFFLOAD_ROOTS_DIR ?? "/var/lib/offload-roots";
}

function rootOf(nix: NixRelease): string {
  const suite = SUITES[nix];
  return suite === null ? "/" : path.join(rootsDir(), suite);
}

/** `file` (absolute) as this machine sees it inside `root`. */
function inRoot(root: string, file: string): string {
  return root === "/" ? file : path.join(root, file);
}

function hostError(host: { name: string }, message: string, code: FailureCode, fix: string): OffloadError {
  return new OffloadError(`host ${host.name}: ${message}`, { code, fix });
}

async function assertRootReady(nix: NixRelease, root: string): Promise<void> {
  if (root === "/") return;
  // scripts/roots.sh writes the stamp only once the root is complete.
  const stamp = `${root}.stamp`;
  if (
    !(await stat(stamp).then(
      () => true,
      () => false,
    ))
  ) {
    throw new OffloadError(`there is no Debian ${SUITES[nix]} root for Nix ${nix} (${stamp} is missing)`, {
      code: "host-root-missing",
      fix: "build it once (about a minute): bash scripts/roots.sh in offload's repository",
    });
  }
}

/** The settings every host has, then `extra`: the text of its /etc/nix/nix.conf. */
function hostNixConf(host: { name: string; nix: NixRelease }, extra: readonly string[] = []): string {
  return [
    `# /etc/nix/nix.conf of host ${host.name} (offload lab, Nix ${host.nix})`,
    // No build users: Debian roots have no nixbld accounts, and hosts sharing build uids would
    // kill each other's builds (Nix kills every process of a build user). Without build users
    // there is no sandbox either, as on a default Debian install.
    "build-users-group =",
    "sandbox = false",
    // Loopback only: asking cache.nixos.org would just time out.
    "substituters =",
    ...extra,
    "",
  ].join("\n");
}

/** Paths to bind-mount into a Debian root: none nested in another (it comes with that one). */
function sharedPaths(spec: HostSpec): string[] {
  const all = [...new Set([PACKAGE_ROOT, spec.dir, ...(spec.shared ?? [])].map((file) => path.resolve(file)))];
  return all.filter((file) => !all.some((other) => other !== file && file.startsWith(`${other === "/" ? "" : other}/`)));
}

/** Creates the mount point for `source` at `target`: a directory, or an empty file for a file. */
async function mountPoint(source: string, target: string): Promise<void> {
  if ((await stat(source)).isDirectory()) {
    await mkdir(target, { recursive: true });
  } else {
    await mkdir(path.dirname(target), { recursive: true });
    await appendFile(target, "");
  }
}

/** What the anchor is called: everything runningHosts needs to know about the host. */
function anchorName(spec: HostSpec, network: HostNetwork | undefined): string {
  const options = [...(network ? [` net=${network.address}`] : []), ...(spec.storeMiB === undefined ? [] : [` store=${spec.storeMiB}`])];
  return `offload-host ${spec.name} ${spec.nix} ${spec.dir}${options.join("")}`;
}

/** The shell script the anchor runs: the mounts, then the anchor's loop under its name. */
async function anchorScript(spec: HostSpec, root: string, network: HostNetwork | undefined): Promise<string> {
  const files = hostPaths(spec.dir);
  const binds: [string, string][] = [
    [files.nix, inRoot(root, "/nix")],
    [files.etcNix, inRoot(root, "/etc/nix")],
  ];
  // Its own /proc: Nix needs /proc/self/exe, and `ps` there shows the host's processes only.
  const lines = ["set -e", `mount -t proc proc ${shellQuote(inRoot(root, "/proc"))}`];
  if (root !== "/") {
    lines.push(`mount --rbind /dev ${shellQuote(path.join(root, "dev"))}`);
    binds.push(...sharedPaths(spec).map((file): [string, string] => [file, path.join(root, file)]));
    binds.push([process.execPath, path.join(root, "usr/local/bin/node")]);
  }
  for (const [source, target] of binds) {
    await mountPoint(source, target);
    lines.push(`mount --bind ${shellQuote(source)} ${shellQuote(target)}`);
  }
  lines.push(`exec -a ${shellQuote(anchorName(spec, network))} /bin/bash -c ${shellQuote(ANCHOR_LOOP)}`);
  return lines.join("\n");
}

async function writeNixConf(spec: HostSpec): Promise<void> {
  const file = hostPaths(spec.dir).nixConf;
  await mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
  await writeFileAtomic(file, hostNixConf(spec, spec.nixConf), 0o644);
}

/** Every host running on this machine, found by its anchor's command line. */
export async function runningHosts(): Promise<Host[]> {
  const hosts: Host[] = [];
  for (const { pid, cmdline } of await runningProcesses()) {
    const match = ANCHOR.exec(cmdline);
    if (!match || !isNixRelease(match[2]!)) continue;
    const [name, nix, dir, net, store] = [match[1]!, match[2], match[3]!, match[4], match[5]];
    hosts.push({
      name,
      nix,
      root: rootOf(nix),
      dir,
      anchorPid: pid,
      ...(net === undefined ? {} : { network: hostNetwork(dir, net.slice(" net=".length)) }),
      ...(store === undefined ? {} : { storeMiB: Number(store.slice(" store=".length)) }),
    });
  }
  return hosts;
}

/**
 * Starts the host (replacing one running in the same directory) and returns once its mounts
 * are made. Its /etc/nix/nix.conf is rewritten from `spec.nixConf`.
 */
export async function startHost(given: HostSpec): Promise<Host> {
  const dir = path.resolve(given.dir);
  const spec = { ...given, dir, shared: (given.shared ?? []).map((file) => path.resolve(file)) };
  if (!SAFE_NAME.test(spec.name))
    throw hostError(spec, "its name is not usable", "host-invalid", "use lowercase letters, digits and -, starting with a letter");
  for (const file of [dir, ...spec.shared]) {
    if (!SAFE_PATH.test(file)) {
      throw hostError(spec, `path ${JSON.stringify(file)} is not usable`, "host-invalid", "use absolute paths of letters, digits and . _ - + / only");
    }
  }
  if (spec.storeMiB !== undefined && !(Number.isInteger(spec.storeMiB) && spec.storeMiB >= 16)) {
    throw hostError(spec, `a store of ${spec.storeMiB} MiB is not usable`, "host-invalid", "use a whole number of MiB, at least 16");
  }
  const root = rootOf(spec.nix);
  await assertRootReady(spec.nix, root);
  await stopHost(spec);

  const nixDir = hostPaths(dir).nix;
  await mkdir(nixDir, { recursive: true, mode: 0o755 });
  // Mounted here, on this machine, before the anchor binds it as /nix: seen at the same place from both sides.
  if (spec.storeMiB !== undefined)
    await run("mount", ["-t", "tmpfs", "-o", `size=${spec.storeMiB}m,mode=0755`, "offload-store", nixDir], { code: "host-start-failed" });
  await writeNixConf(spec);
  const network = spec.network ? await prepareLink(dir) : undefined;
  const script = await anchorScript(spec, root, network);

  const namespaces = ["--mount", "--pid", ...(network ? ["--net"] : [])];
  const child = spawn("unshare", [...namespaces, "--fork", "--kill-child", "--propagation", "private", "--", "/bin/bash", "-c", script], {
    detached: true, // it outlives `offload lab up`
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const outcome = await new Promise<string | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(`no "ready" within ${START_TIMEOUT_MS / 1000} s`), START_TIMEOUT_MS);
    const done = (why: string | undefined) => (clearTimeout(timer), resolve(why));
    child.stdout.on("data", () => stdout.includes("ready\n") && done(undefined));
    child.once("error", (error) => done(error.message));
    child.once("exit", (code, signal) => done(`its setup exited (${signal ?? `status ${code}`})`));
  });
  child.stdout.destroy();
  child.stderr.destroy();
  child.unref();
  // child.pid is `unshare`, which only waits for its child, the anchor: find that one.
  const host = outcome === undefined ? (await runningHosts()).find((running) => running.dir === dir) : undefined;
  if (host === undefined) {
    if (child.exitCode === null) child.kill("SIGKILL"); // --kill-child: the anchor goes with it
    await stopHost(spec); // the link and the tmpfs on this machine's side
    const why = `${outcome ?? "its anchor is not running"}${stderr.trim() ? `: ${stderr.trim()}` : ""}`;
    const fix = "hosts need root, unshare and nsenter (util-linux), mount, PID and network namespaces (in a container: --privileged)";
    throw hostError(spec, `did not start: ${why}`, "host-start-failed", fix);
  }
  if (network) {
    try {
      await attachLink(dir, network, host.anchorPid);
    } catch (error) {
      await stopHost(host);
      throw error;
    }
  }
  return host;
}

/**
 * The host running in `spec.dir` when it runs `spec.nix` (it keeps the shared paths it was
 * started with), else a new one; either way its nix.conf is written from `spec`.
 */
export async function ensureHost(spec: HostSpec): Promise<Host> {
  const dir = path.resolve(spec.dir);
  const running = (await runningHosts()).find(
    (host) => host.dir === dir && host.nix === spec.nix && (host.network !== undefined) === (spec.network ?? false) && host.storeMiB === spec.storeMiB,
  );
  if (running === undefined) return startHost(spec);
  await writeNixConf({ ...spec, dir });
  return running;
}

/** How long the processes of a stopped host may take to end after SIGKILL. */
const HOST_STOP_MS = 15_000;

/**
 * Ends every process of the host, then its anchor; its mounts go with them. No-op when it does
 * not run. Found by directory, so a stale `anchorPid` does no harm.
 */
export async function stopHost(host: Pick<Host, "name" | "dir">): Promise<void> {
  let networked = false;
  for (const anchor of (await runningHosts()).filter((running) => running.dir === host.dir)) {
    networked ||= anchor.network !== undefined;
    const [pids, mounts] = await Promise.all([namespaceOf(anchor.anchorPid, "pid"), namespaceOf(anchor.anchorPid, "mnt")]);
    if (pids === undefined || mounts === undefined) continue; // ended meanwhile
    // SIGTERM first, so that daemons end as they would on a shutdown; the anchor's death then
    // makes the kernel SIGKILL whatever is left. It goes last: while it lives, no other
    // namespace can get these identifiers.
    await terminate((await processesInNamespaces([pids])).filter((pid) => pid !== anchor.anchorPid));
    // An init gets no SIGTERM from outside its namespace unless it handles it: SIGKILL at once.
    signal(anchor.anchorPid, "SIGKILL");
    // Outside the PID namespace but in the mount namespace, `unshare` and nsenter wait for
    // their children there: they end with them. A process killed in the middle of a disk
    // write ends only once the write does, seconds later on a busy disk (a CI run's parallel
    // suites): a SIGKILLed process still there after HOST_STOP_MS is stuck.
    const left = await waitGone(await processesInNamespaces([pids, mounts]), HOST_STOP_MS);
    if (left.length > 0) {
      throw hostError(host, `processes ${left.join(", ")} of it did not end`, "host-stop-failed", `kill -KILL ${left.join(" ")}, then stop it again`);
    }
  }
  // This machine's side, also of a host whose start failed half-way or whose anchor was killed.
  if (networked || (await hasLink(host.dir))) await releaseLink(host.dir);
  await unmountStore(host.dir);
}

/** Unmounts the tmpfs a host with `storeMiB` had as /nix, if it is there. */
async function unmountStore(dir: string): Promise<void> {
  const nixDir = hostPaths(dir).nix;
  const mounts = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").map((line) => line.split(" ")[4]);
  // Lazily: a process of this machine looking into it must not keep the host from stopping.
  if (mounts.includes(nixDir)) await run("umount", ["--lazy", nixDir], { code: "host-stop-failed" });
}

export interface InHostOptions {
  /** Run as this user, one made by ensureUser (HOME /home/<user>); default root. */
  user?: string;
  /** Environment besides PATH, HOME and USER; nothing of the caller's is passed on. */
  env?: Record<string, string>;
}

/** The program and arguments that run `argv` in the host, for spawn or execFile. */
export function inHost(host: Host, argv: readonly string[], options: InHostOptions = {}): { file: string; args: string[] } {
  const user = options.user ?? "root";
  const chroot = host.root === "/" ? [] : ["chroot", host.root];
  // setpriv, not su/runuser: no PAM, no login shell, nothing between us and the command.
  const setpriv = options.user === undefined ? [] : ["setpriv", `--reuid=${user}`, `--regid=${user}`, "--init-groups"];
  const env = Object.entries({ PATH, HOME: user === "root" ? "/root" : `/home/${user}`, USER: user, ...options.env }).map(
    ([name, value]) => `${name}=${value}`,
  );
  return {
    // With -p nsenter forks: the command is its child, in the host's PID namespace. -n: its
    // network namespace, which is this machine's unless it was started with a network.
    file: "nsenter",
    args: ["-t", String(host.anchorPid), "-m", "-p", "-n", "--", ...chroot, ...setpriv, "env", "-i", ...env, ...argv],
  };
}

export interface RunInHostOptions extends InHostOptions {
  input?: string | Buffer;
  /** Default 300 s; then the command is killed and this throws. */
  timeoutMs?: number;
}

export interface HostResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `argv` in the host and returns how it ended (a non-zero status is a result, not an error). */
export function runInHost(host: Host, argv: readonly string[], options: RunInHostOptions = {}): Promise<HostResult> {
  const { file, args } = inHost(host, argv, options);
  const timeoutMs = options.timeoutMs ?? 300_000;
  return new Promise((resolve, reject) => {
    // Its own process group, which nsenter's child (the command) shares: a timeout kills both.
    const child = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      process.kill(-child.pid!, "SIGKILL");
      const fix = "see what it waits for; pass a longer timeoutMs if it is just slow";
      reject(hostError(host, `${argv.join(" ")} did not finish within ${timeoutMs / 1000} s`, "host-command-timeout", fix));
    }, timeoutMs);
    child.once(
      "error",
      (error) => (clearTimeout(timer), reject(hostError(host, `cannot run ${file}: ${error.message}`, "host-command-failed", "install util-linux"))),
    );
    child.once("close", (code) => (clearTimeout(timer), resolve({ code, stdout, stderr })));
    child.stdin.on("error", () => undefined); // it may exit without reading its input
    child.stdin.end(options.input ?? "");
  });
}

/** Runs a shell script as root in the host; its stdout, or an OffloadError with its stderr. */
async function rootShell(host: Host, script: string): Promise<string> {
  const result = await runInHost(host, ["sh", "-c", script]);
  if (result.code !== 0) {
    const by = `nsenter -t ${host.anchorPid} -m -p${host.root === "/" ? "" : ` chroot ${host.root}`} sh -c '…'`;
    throw hostError(host, `${script} failed: ${result.stderr.trim() || `status ${result.code}`}`, "host-command-failed", `run it by hand to see why: ${by}`);
  }
  return result.stdout;
}

// useradd and groupadd of parallel hosts in one root would race between "exists?" and "add".
function withUsersLock<T>(host: Host, action: () => Promise<T>): Promise<T> {
  return withFileLock(inRoot(host.root, "/var/lib/offload-users.lock"), { timeoutMs: 60_000, staleMs: 120_000 }, action);
}

/** The gid of nix-users in the host's root, made when missing. */
async function nixUsersGid(host: Host): Promise<number> {
  return withUsersLock(host, async () =>
    Number((await rootShell(host, `groupadd --force --system ${NIX_USERS} && getent group ${NIX_USERS} | cut -d: -f3`)).trim()),
  );
}

/**
 * A non-root user in the host's root (this machine's for 2.8), member of nix-users so that it
 * reaches the nix-daemon, with home /home/<name>. Not locked: sshd lets it log in with a key.
 * Users are the root's, so every host of that root has them. Idempotent.
 */
export async function ensureUser(host: Host, name: string): Promise<void> {
  if (!SAFE_NAME.test(name)) throw hostError(host, `user name ${JSON.stringify(name)} is not usable`, "host-invalid", "use lowercase letters, digits and -");
  await withUsersLock(host, () =>
    rootShell(
      host,
      `groupadd --force --system ${NIX_USERS} && ` +
        `{ id -u ${name} >/dev/null 2>&1 || useradd --system --create-home --home-dir /home/${name} --shell /bin/sh --user-group ${name}; } && ` +
        `usermod --append --groups ${NIX_USERS} --password '*' ${name}`,
    ),
  );
}

function socketAccepts(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const connection = connect({ path: socket });
    connection.once("connect", () => (connection.destroy(), resolve(true)));
    connection.once("error", () => resolve(false));
  });
}

/**
 * Starts a nix-daemon in the host (once per host; it ends with the host) and returns when its
 * socket accepts connections. Clients in the host reach it with NIX_REMOTE=daemon as root or
 * as a user made by ensureUser. `env` is its environment besides PATH and HOME (e.g. what its
 * build hook needs).
 */
export async function startNixDaemon(host: Host, options: { env?: Record<string, string> } = {}): Promise<void> {
  const files = hostPaths(host.dir);
  const socketDir = path.dirname(files.daemonSocket);
  await mkdir(socketDir, { recursive: true });
  await chown(socketDir, 0, await nixUsersGid(host));
  await chmod(socketDir, 0o770);
  await startDaemon(host, ["nix-daemon"], { env: options.env, socket: files.daemonSocket, log: files.daemonLog });
}

/**
 * Starts `argv` (a daemon) in the host, its output into `log`, and returns once `socket`
 * accepts connections (the socket file appears at bind(), before the daemon listens).
 */
export async function startDaemon(host: Host, argv: readonly string[], options: { env?: Record<string, string>; socket: string; log: string }): Promise<void> {
  const log = await open(options.log, "w");
  const { file, args } = inHost(host, argv, { env: options.env });
  const daemon = spawn(file, args, { detached: true, stdio: ["ignore", log.fd, log.fd] });
  await log.close();
  daemon.unref();
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (daemon.exitCode === null && Date.now() < deadline) {
    if (await socketAccepts(options.socket)) return;
    await sleep(25);
  }
  const tail = (await readFile(options.log, "utf8").catch(() => "")).trim().split("\n").slice(-5).join("\n");
  const status = daemon.exitCode === null ? "" : ` (exit status ${daemon.exitCode})`;
  const message = `its ${argv[0]} did not accept connections within ${START_TIMEOUT_MS / 1000} s${status}: ${tail || "no log"}`;
  throw hostError(host, message, "host-daemon-failed", `see ${options.log}`);
}
