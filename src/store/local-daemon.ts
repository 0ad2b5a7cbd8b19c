// The Nix that runs this machine's builds and the build hook it really uses. That is the
// nix-daemon serving this machine's daemon socket (found in /proc), else — no daemon — the
// `nix` on PATH, with which root's builds use the store directly. Its hook follows from its
// version's rules (daemon-version.ts) over what it read: its environment (NIX_CONFIG,
// NIX_CONF_DIR, …), nix.conf with its includes, and the user config files.
import { execFile } from "node:child_process";
import { existsSync, readFileSync, readdirSync, readlinkSync, realpathSync, statSync, type Stats } from "node:fs";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { OffloadError } from "../errors.js";
import { parseProcStat } from "../files/proc-stat.js";
import { atLeast, effectiveBuildHook, hookSupport, parseNixVersion, type EffectiveHook, type HookAssignment, type NixVersion } from "../nix/daemon-version.js";
import { PACKAGE_ROOT } from "../package-root.js";
import { readNixConf, type ConfSetting, type ReadConf } from "./nix-conf.js";

const run = promisify(execFile);

export type Env = Record<string, string | undefined>;

/** The executable offload installs as the build hook. */
export const OFFLOAD_HOOK = join(PACKAGE_ROOT, "bin", "offload-hook");

export interface DaemonProcess {
  pid: number;
  argv: string[];
  /** Its executable as /proc names it. */
  executable: string;
  /** The executable was deleted or replaced since the daemon started (Nix upgraded under it). */
  replaced: boolean;
  env: Env;
  uid: number;
  /** Milliseconds since the epoch. */
  startedAt: number;
  /** The systemd unit it runs in, e.g. "nix-daemon.service"; undefined when started otherwise. */
  unit?: string;
  /** Its root directory as a path on this machine ("/proc/PID/root"): its files are read through it. */
  root: string;
}

export interface Systemd {
  /** Whether systemd knows the unit (a unit file exists). */
  hasUnit(unit: string): Promise<boolean>;
  systemctl(args: string[]): Promise<void>;
}

/** Where the facts come from: this machine, or fakes in tests. */
export interface LocalSystem {
  /** This machine's root: files offload writes are below it ("/" except in tests). */
  root: string;
  /** Offload's own environment, which root's daemonless builds share. */
  env: Env;
  uid: number;
  findDaemon(): Promise<DaemonProcess | undefined>;
  /** `--version` output of the daemon's executable, or of the `nix` on PATH. */
  versionOutput(daemon: DaemonProcess | undefined): Promise<string>;
  /** undefined when systemd does not manage services here. */
  systemd(): Promise<Systemd | undefined>;
}

export interface LocalNix {
  daemon?: DaemonProcess;
  version: NixVersion;
  /** The environment it read its settings from (the daemon's, or offload's own without a daemon). */
  env: Env;
  /** Its nix.conf, as a path it sees. */
  nixConf: string;
  /**
   * Its user's own config file (root's ~/.config/nix/nix.conf), as it names it: where offload
   * install writes for Nix 2.25–2.33. Read unless NIX_USER_CONF_FILES leaves it out.
   */
  userConf: string;
  /** Where it reads build-hook, in the order Nix applies them: nix.conf, each user config file (also one that does not exist), NIX_CONFIG. */
  layers: ConfLayer[];
  effective: EffectiveHook;
  /** A file it read changed after the daemon started: it may run something else than the files say. */
  changedAfterStart?: { file: string; mtime: Date };
  /** The systemd unit of nix-daemon, when systemd manages it here (running, or started on demand). */
  unit?: string;
  /** This machine's root (LocalSystem.root), for the files offload writes. */
  root: string;
}

/** One place Nix reads settings from (a file with its includes, or NIX_CONFIG) and its build-hook lines. */
export interface ConfLayer {
  layer: HookAssignment["layer"];
  /** The file as the Nix sees it, or "NIX_CONFIG". */
  file: string;
  /** Its build-hook lines and its includes', in order; none for a file that does not exist. */
  hooks: ConfSetting[];
}

const DEFAULT_UNIT = "nix-daemon.service";

/** Finds this machine's Nix and works out the build hook it uses. */
export async function inspectLocalNix(system: LocalSystem = thisSystem()): Promise<LocalNix> {
  const daemon = await system.findDaemon();
  const output = await system.versionOutput(daemon);
  const version = parseNixVersion(output);
  if (!version) {
    throw new OffloadError(
      `cannot tell the version of ${daemon ? `nix-daemon (pid ${daemon.pid}, ${daemon.executable})` : "nix"}: it printed ${JSON.stringify(output.trim().slice(0, 80))}`,
      {
        code: "nix-version-unknown",
        fix: daemon ? `check that ${daemon.executable} is Nix's nix-daemon` : "put Nix's nix on root's PATH",
      },
    );
  }
  const env = daemon?.env ?? system.env;
  const root = daemon?.root ?? system.root;
  const read = readUnder(root);
  const nixConf = `${env.NIX_CONF_DIR || "/etc/nix"}/nix.conf`;
  const main = readNixConf(nixConf, read);
  const layers: ConfLayer[] = [{ layer: "nix.conf", file: nixConf, hooks: buildHooks(main.settings) }];
  const files = [...main.files];
  const userConf = personalConfFile(env, version, homeOf(daemon?.uid ?? system.uid, env, version, root, read));
  // Every user config file, also one that does not exist (yet): offload install may write it.
  // Nix applies them last to first (getConfigDirs puts the most personal first).
  for (const file of userConfFiles(env, userConf).reverse()) {
    const parsed = readNixConf(file, read);
    layers.push({ layer: "user-conf", file, hooks: buildHooks(parsed.settings) });
    files.push(...parsed.files);
  }
  if (env.NIX_CONFIG !== undefined) {
    // Nix names NIX_CONFIG's "file" so; an include there is relative to the daemon's directory, which offload ignores.
    const parsed = readNixConf("NIX_CONFIG", (file) => (file === "NIX_CONFIG" ? env.NIX_CONFIG : undefined));
    layers.push({ layer: "NIX_CONFIG", file: "NIX_CONFIG", hooks: buildHooks(parsed.settings) });
  }
  const systemd = await system.systemd();
  const unit = systemd && (daemon ? daemon.unit : (await systemd.hasUnit(DEFAULT_UNIT)) ? DEFAULT_UNIT : undefined);
  return {
    ...(daemon ? { daemon } : {}),
    version,
    env,
    nixConf,
    userConf,
    layers,
    effective: effectiveBuildHook(version, layers.flatMap(hookAssignments)),
    ...(daemon ? changedAfter(daemon, files, root) : {}),
    ...(unit ? { unit } : {}),
    root: system.root,
  };
}

function buildHooks(settings: readonly ConfSetting[]): ConfSetting[] {
  return settings.filter((s) => s.name === "build-hook");
}

/** A layer's build-hook lines as effectiveBuildHook takes them. */
export function hookAssignments({ layer, hooks }: ConfLayer): HookAssignment[] {
  return hooks.map((s) => ({ layer, value: s.value, where: layer === "NIX_CONFIG" ? "NIX_CONFIG" : `${s.file}:${s.line}` }));
}

/** Nix's user config files (nixUserConfFiles), most personal first; `personal` from personalConfFile. */
export function userConfFiles(env: Env, personal: string): string[] {
  if (env.NIX_USER_CONF_FILES !== undefined) return env.NIX_USER_CONF_FILES.split(":").filter((file) => file !== "");
  const shared = (env.XDG_CONFIG_DIRS ?? "/etc/xdg")
    .split(":")
    .filter((dir) => dir !== "")
    .map((dir) => `${dir}/nix/nix.conf`);
  return [personal, ...shared];
}

/** The user's own nix.conf (getConfigDir): set-but-empty variables count, as in Nix's getEnv. NIX_CONFIG_HOME appeared in 2.25. */
export function personalConfFile(env: Env, version: NixVersion, home: string): string {
  const dir = (atLeast(version, 2, 25) ? env.NIX_CONFIG_HOME : undefined) ?? `${env.XDG_CONFIG_HOME ?? `${home}/.config`}/nix`;
  return `${dir}/nix.conf`;
}

/**
 * Nix's getHome(): $HOME, else (a daemon under systemd has none) the passwd entry's, read from
 * the Nix's /etc/passwd. From 2.10 a $HOME that exists counts only when the user owns it.
 */
function homeOf(uid: number, env: Env, version: NixVersion, root: string, read: ReadConf): string {
  if (env.HOME !== undefined) {
    if (!atLeast(version, 2, 10)) return env.HOME;
    try {
      if (statSync(join(root, env.HOME)).uid === uid) return env.HOME;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return env.HOME;
    }
  }
  const entry = (read("/etc/passwd") ?? "")
    .split("\n")
    .map((line) => line.split(":"))
    .find((fields) => fields[2] === String(uid));
  return entry?.[5] || (uid === 0 ? "/root" : "/");
}

// A start time from /proc is good to 1/100 s (clock ticks, /proc/uptime): closer is a tie.
const START_TIME_SLACK_MS = 100;

function changedAfter(daemon: DaemonProcess, files: readonly string[], root: string): Pick<LocalNix, "changedAfterStart"> {
  for (const file of files) {
    const mtime = statUnder(root, file)?.mtime;
    if (mtime && mtime.getTime() > daemon.startedAt + START_TIME_SLACK_MS) return { changedAfterStart: { file, mtime } };
  }
  return {};
}

/** Reads files as a Nix whose root is `root` sees them; a missing file is undefined, other failures are errors. */
function readUnder(root: string): ReadConf {
  return (file) => {
    try {
      return readFileSync(join(root, file), "utf8");
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") return undefined;
      throw new OffloadError(`cannot read ${file}: ${(error as Error).message}`, {
        code: code === "EACCES" ? "permission-denied" : "read-failed",
        fix: "run this as root",
      });
    }
  };
}

function statUnder(root: string, file: string): Stats | undefined {
  try {
    return statSync(join(root, file));
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------
// Verdicts: whether that Nix runs offload's hook, worded for `offload check` and install.

export type HookVerdict = { ok: true; detail: string } | { ok: false; error: OffloadError };

/** "nix-daemon 2.26.3 (pid 812, nix-daemon.service)" or "nix 2.8.0 (no nix-daemon runs: root's builds use the store directly)". */
export function describeNix(nix: LocalNix): string {
  if (!nix.daemon) return `nix ${nix.version.text} (no nix-daemon runs: root's builds use the store directly)`;
  return `nix-daemon ${nix.version.text} (pid ${nix.daemon.pid}, ${nix.unit ?? "not started by systemd"})`;
}

/** Whether `value` (a build-hook setting) runs `hook`: its first word is that file, through symlinks. */
export function runsHook(value: string | undefined, hook: string, root: string): boolean {
  const first = value?.split(" ")[0];
  if (!first) return false;
  const real = (file: string) => {
    try {
      return realpathSync(join(root, file));
    } catch {
      return join(root, file);
    }
  };
  return real(first) === real(hook);
}

export function usesOffloadHook(nix: LocalNix, hook = OFFLOAD_HOOK): boolean {
  return runsHook(nix.effective.value, hook, nix.root);
}

/** Whether this Nix runs offload's hook, and if not, why and what to do: the `daemon` step of `offload check`. */
export function hookVerdict(nix: LocalNix, hook = OFFLOAD_HOOK): HookVerdict {
  const who = describeNix(nix);
  const support = hookSupport(nix.version);
  if (!support.supported) return { ok: false, error: new OffloadError(`${who}: ${support.why}`, { code: "nix-version-unsupported", fix: support.fix }) };
  const { effective } = nix;
  if (runsHook(effective.value, `${hook}.js`, nix.root)) {
    return {
      ok: false,
      error: new OffloadError(`${who} runs ${describeHook(effective)}: offload's hook, but the entry that starts Node for every build`, {
        code: "daemon-hook-not-offload",
        fix: `offload install (it sets build-hook = ${hook}, which \`offload agent\` serves without a Node start per build)`,
      }),
    };
  }
  if (!runsHook(effective.value, hook, nix.root)) {
    return {
      ok: false,
      error: new OffloadError(`${who} runs ${describeHook(effective)}, not offload's hook`, { code: "daemon-hook-not-offload", fix: notOffloadFix(effective) }),
    };
  }
  const restart = restartReason(nix);
  if (restart)
    return {
      ok: false,
      error: new OffloadError(`${who} ${restart}: it may still run another build-hook than ${describeHook(effective)}`, {
        code: "daemon-restart-needed",
        fix: restartFix(nix),
      }),
    };
  return { ok: true, detail: runningText(nix) };
}

/** "nix-daemon 2.26.3 (pid 812, nix-daemon.service) runs offload's hook (NIX_CONFIG)": for a Nix whose hook is offload's. */
export function runningText(nix: LocalNix): string {
  return `${describeNix(nix)} runs offload's hook (${nix.effective.from!.where})`;
}

/** What the daemon runs, e.g. "build-hook = /x/hook (/etc/nix/nix.conf:3)" or "Nix's own build-remote (build-hook is not set)". */
export function describeHook(effective: EffectiveHook): string {
  if (effective.ignored) return `Nix's own build-remote: Nix 2.25–2.33 ignore build-hook in nix.conf (${effective.ignored.where})`;
  if (!effective.from) return "Nix's own build-remote (build-hook is not set)";
  return effective.value === ""
    ? `no build hook (build-hook is empty at ${effective.from.where})`
    : `build-hook = ${effective.value} (${effective.from.where})`;
}

function notOffloadFix(effective: EffectiveHook): string {
  if (!effective.from || effective.ignored) return "offload install";
  switch (effective.from.layer) {
    case "nix.conf":
      return `remove build-hook at ${effective.from.where}, then run \`offload install\``;
    case "user-conf":
      return `remove build-hook at ${effective.from.where} (it overrides nix.conf), then run \`offload install\``;
    case "NIX_CONFIG":
      return "remove build-hook from NIX_CONFIG in nix-daemon's environment, then run `offload install`";
  }
}

/** Why a running daemon may not run what its files say now, if it may not. */
export function restartReason(nix: LocalNix): string | undefined {
  if (!nix.daemon) return undefined;
  if (nix.daemon.replaced) return `runs an executable replaced since it started (${nix.daemon.executable}: Nix was upgraded?)`;
  if (nix.changedAfterStart)
    return `started at ${iso(nix.daemon.startedAt)}, before ${nix.changedAfterStart.file} changed (${iso(nix.changedAfterStart.mtime.getTime())})`;
  return undefined;
}

/** The command that restarts the daemon: systemctl, or for one started by hand, kill and its own command line again. */
export function restartFix(nix: LocalNix): string {
  const daemon = nix.daemon!;
  if (nix.unit) return `systemctl restart ${nix.unit} (or \`offload install\`, which restarts it)`;
  return `restart nix-daemon as it was started: kill ${daemon.pid}; ${daemon.argv.join(" ")} &`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");
}

// ---------------------------------------------------------------------------------------
// This machine: /proc, `--version`, systemctl.

const VERSION_TIMEOUT_MS = 10_000;
const SYSTEMCTL_TIMEOUT_MS = 90_000;

export function thisSystem(): LocalSystem {
  return {
    root: "/",
    env: process.env,
    uid: process.getuid?.() ?? 0,
    findDaemon: () => Promise.resolve(findDaemon(process.env)),
    versionOutput: async (daemon) => {
      // /proc/PID/exe is the very file the daemon runs, even when an upgrade replaced it on disk.
      const file = daemon ? `/proc/${daemon.pid}/exe` : "nix";
      try {
        return (await run(file, ["--version"], { timeout: VERSION_TIMEOUT_MS, encoding: "utf8" })).stdout;
      } catch (error) {
        throw new OffloadError(
          `cannot run ${daemon ? `nix-daemon's executable ${daemon.executable}` : "nix"} --version: ${(error as Error).message.split("\n")[0]}`,
          {
            code: "nix-version-unknown",
            fix: daemon
              ? `restart nix-daemon (pid ${daemon.pid}): its executable may have been replaced`
              : "install Nix (apt install nix-bin), or put its nix on root's PATH",
          },
        );
      }
    },
    systemd: async () => {
      if (!existsSync("/run/systemd/system")) return undefined; // sd_booted(): systemd is PID 1 here
      return {
        hasUnit: async (unit) => {
          const shown = await run("systemctl", ["show", "--property=LoadState", "--value", unit], { timeout: SYSTEMCTL_TIMEOUT_MS, encoding: "utf8" }).catch(
            () => undefined,
          );
          return shown?.stdout.trim() === "loaded";
        },
        systemctl: async (args) => {
          try {
            await run("systemctl", args, { timeout: SYSTEMCTL_TIMEOUT_MS, encoding: "utf8" });
          } catch (error) {
            const stderr = (error as { stderr?: string }).stderr?.trim();
            throw new OffloadError(`systemctl ${args.join(" ")} failed: ${stderr || (error as Error).message.split("\n")[0]}`, {
              code: "systemctl-failed",
              fix: `run \`systemctl ${args.join(" ")}\` yourself and see \`journalctl -u ${args.at(-1)}\``,
            });
          }
        },
      };
    },
  };
}

/** Nix's daemon socket for an environment (NIX_DAEMON_SOCKET_PATH, else under NIX_STATE_DIR). */
function daemonSocket(env: Env): string {
  return env.NIX_DAEMON_SOCKET_PATH || `${env.NIX_STATE_DIR || "/nix/var/nix"}/daemon-socket/socket`;
}

/** Whether a command line is nix-daemon's (`nix-daemon …`, or `nix daemon …` of the new CLI). */
export function isDaemonCommand(argv: readonly string[]): boolean {
  const name = basename(argv[0] ?? "");
  return name === "nix-daemon" || (name === "nix" && argv[1] === "daemon");
}

/**
 * The nix-daemon serving this machine's socket: of the daemons found in /proc (not their
 * per-connection children, which have the same command line), those whose view of their
 * socket is the same file as ours. That singles out this machine's daemon also among the
 * daemons of chroots and mount namespaces, which /proc shows too. When two match, the
 * younger one bound the socket last and is the one clients reach.
 */
function findDaemon(env: Env): DaemonProcess | undefined {
  const ours = statOrUndefined(daemonSocket(env));
  if (!ours) return undefined;
  const daemons = readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .map((name) => daemonCandidate(Number(name)))
    .filter((candidate) => candidate !== undefined);
  const pids = new Set(daemons.map((d) => d.pid));
  const serving: DaemonProcess[] = [];
  for (const candidate of daemons.filter((d) => !pids.has(d.ppid))) {
    const daemon = inspectProcess(candidate);
    if (daemon && sameFile(statOrUndefined(join(daemon.root, daemonSocket(daemon.env))), ours)) serving.push(daemon);
  }
  return serving.sort((a, b) => b.startedAt - a.startedAt)[0];
}

interface Candidate {
  pid: number;
  ppid: number;
  argv: string[];
  startTicks: number;
}

function daemonCandidate(pid: number): Candidate | undefined {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8")
      .split("\0")
      .filter((word, i, all) => word !== "" || i < all.length - 1);
    if (!isDaemonCommand(argv)) return undefined;
    const { ppid, startTicks } = parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
    return { pid, argv, ppid, startTicks };
  } catch {
    return undefined; // it exited meanwhile
  }
}

// USER_HZ: the unit of /proc's clock ticks, 100 on every Linux architecture Nix runs on.
const TICKS_PER_SECOND = 100;

function inspectProcess(candidate: Candidate): DaemonProcess | undefined {
  const { pid } = candidate;
  let environ: string;
  let executable: string;
  let owner: Stats;
  try {
    environ = readFileSync(`/proc/${pid}/environ`, "utf8");
    executable = readlinkSync(`/proc/${pid}/exe`);
    owner = statSync(`/proc/${pid}`);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ESRCH") return undefined;
    throw new OffloadError(`cannot inspect nix-daemon (pid ${pid}): ${(error as Error).message}`, {
      code: "permission-denied",
      fix: "run this as root: only root can read the environment of root's nix-daemon",
    });
  }
  const uptime = Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]);
  // Only nix-daemon's own unit: a daemon started by hand from another service's shell is in that service's cgroup.
  const unit = /\/(nix-daemon[^/\n]*\.service)$/m.exec(readFileSync(`/proc/${pid}/cgroup`, "utf8"))?.[1];
  return {
    pid,
    argv: candidate.argv,
    executable: executable.replace(/ \(deleted\)$/, ""),
    replaced: executable.endsWith(" (deleted)"),
    env: parseEnviron(environ),
    uid: owner.uid,
    startedAt: Date.now() - uptime * 1000 + (candidate.startTicks / TICKS_PER_SECOND) * 1000,
    ...(unit ? { unit } : {}),
    root: `/proc/${pid}/root`,
  };
}

function parseEnviron(text: string): Env {
  const env: Env = {};
  for (const entry of text.split("\0")) {
    const at = entry.indexOf("=");
    if (at > 0) env[entry.slice(0, at)] = entry.slice(at + 1);
  }
  return env;
}

function statOrUndefined(file: string): Stats | undefined {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}

function sameFile(a: Stats | undefined, b: Stats): boolean {
  return a !== undefined && a.dev === b.dev && a.ino === b.ino;
}
