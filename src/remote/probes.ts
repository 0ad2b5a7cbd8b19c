// Small facts read from a machine over an open connection, each by one short shell command:
// what `offload check` verifies and `offload status` shows.
import { GUIX_STORE_DIR } from "../guix/paths.js";
import type { BuildMachine } from "../../types/index.js";
import { runRemote, type RemoteResult } from "./remote-command.js";
import { shellQuote } from "./shell-quote.js";
import type { RemoteProcess, SshConnection } from "./ssh.js";

const PROBE_TIMEOUT_MS = 10_000;
/** The load is read while a build waits to be accepted: a short bound. */
const LOAD_TIMEOUT_MS = 3000;

async function probe(connection: SshConnection, command: string): Promise<RemoteResult> {
  return runRemote(connection, command, PROBE_TIMEOUT_MS);
}

/** Remote error text as one line: each failure is reported on one. */
export function oneLine(text: string): string {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .join(" | ");
}

/**
 * Seconds the machine's clock is ahead of ours (negative: behind). The remote shell says
 * when it runs and reads the time only when our go-ahead arrives, so the measured window is
 * one network round trip, not channel setup and process start; the remote read its clock
 * within that window, assumed in its middle.
 */
export async function readClockSkew(connection: SshConnection): Promise<{ skew: number; uncertainty: number } | undefined> {
  // "ready" once the shell runs (it may start slowly on a busy machine), then the time on our "go".
  const process = await connection.exec("echo ready; read go; date +%s.%N");
  process.stderr.resume();
  let text = "";
  let sent = 0;
  let timer: NodeJS.Timeout | undefined;
  const received = await new Promise<number | undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), PROBE_TIMEOUT_MS);
    process.stdout.on("data", (chunk: Buffer) => {
      text += chunk.toString();
      const lines = text.split("\n");
      if (sent === 0 && lines.length > 1) {
        sent = Date.now();
        process.stdin.write("go\n");
      } else if (sent > 0 && lines.length > 2) resolve(Date.now());
    });
    // Not on "exit": it can overtake the last output; the end of stdout comes after all of it.
    process.stdout.once("end", () => resolve(undefined));
  });
  clearTimeout(timer);
  process.close();
  const remote = Number(text.split("\n")[1]);
  if (received === undefined || !Number.isFinite(remote)) return undefined;
  return { skew: remote - (sent + received) / 2000, uncertainty: (received - sent) / 2000 };
}

/** Seconds since the machine booted. */
export async function readUptime(connection: SshConnection): Promise<number | undefined> {
  const result = await probe(connection, "cat /proc/uptime");
  const seconds = Number(result.stdout.trim().split(/\s+/)[0]);
  return result.code === 0 && Number.isFinite(seconds) ? seconds : undefined;
}

export interface DiskSpace {
  /** The directory measured. */
  dir: string;
  freeBytes: number;
  totalBytes: number;
}

/** Free and total space of the file system holding `dir` (POSIX df, 1 KiB blocks). */
export async function readDiskSpace(connection: SshConnection, dir: string): Promise<DiskSpace | undefined> {
  const result = await probe(connection, `df -Pk ${shellQuote(dir)}`);
  // Filesystem 1024-blocks Used Available Capacity Mounted-on
  const fields = result.stdout.trim().split("\n").at(-1)?.split(/\s+/) ?? [];
  const total = Number(fields[1]);
  const available = Number(fields[3]);
  if (result.code !== 0 || !Number.isFinite(total) || !Number.isFinite(available)) return undefined;
  return { dir, freeBytes: available * 1024, totalBytes: total * 1024 };
}

/**
 * Where a store keeps its files: a chroot store ("/srv/nix", "local?root=/srv/nix") under its
 * root, any other store (auto, daemon, a socket) in /nix/store.
 */
export function storeFilesDir(storeUri: string | undefined): string {
  const uri = storeUri ?? "";
  const root = uri.startsWith("/") ? uri.split("?")[0] : /[?&]root=([^&]+)/.exec(uri)?.[1];
  return `${root ? decodeURIComponent(root).replace(/\/+$/, "") : ""}/nix/store`;
}

/** Where a build machine keeps its store's files: /gnu/store for Guix, else its Nix store's. */
export function machineStoreDir(machine: Pick<BuildMachine, "daemon" | "remoteStore">): string {
  return machine.daemon === "guix" ? GUIX_STORE_DIR : storeFilesDir(machine.remoteStore);
}

export type NixStoreVersion = { found: true; version: string } | { found: false; code: number | null; stderr: string };

/** `nix-store --version` in a non-interactive session, as the serve protocol will run it (on `store`, since Nix opens it even for this). */
export async function readNixStoreVersion(connection: SshConnection, store?: string): Promise<NixStoreVersion> {
  const result = await probe(connection, `nix-store${store === undefined ? "" : ` --store ${shellQuote(store)}`} --version`);
  if (result.code !== 0) return { found: false, code: result.code, stderr: oneLine(result.stderr) };
  return { found: true, version: result.stdout.trim().replace(/^nix-store \(Nix\) /, "") };
}

/**
 * The machine's Nix settings as its SSH sessions see them (`nix show-config`: nix.conf,
 * NIX_CONFIG, NIX_USER_CONF_FILES), plus the login's user and groups for trusted-users.
 * undefined when `nix` is not there (old or partial installations have only nix-store).
 */
export async function readNixConfig(connection: SshConnection): Promise<{ settings: Map<string, string>; user: string; groups: string[] } | undefined> {
  // Nix ≥ 2.4 needs the experimental feature; older ones do not know the flag.
  const command = "id -un; id -Gn; nix --extra-experimental-features nix-command show-config 2>/dev/null || nix show-config";
  const result = await probe(connection, command);
  if (result.code !== 0) return undefined;
  const [user = "", groups = "", ...lines] = result.stdout.split("\n");
  return {
    settings: parseNixConfig(lines),
    user: user.trim(),
    groups: groups
      .trim()
      .split(/\s+/)
      .filter((g) => g !== ""),
  };
}

/** `name = value` lines, as `nix show-config` prints them. */
export function parseNixConfig(lines: readonly string[]): Map<string, string> {
  const settings = new Map<string, string>();
  for (const line of lines) {
    const at = line.indexOf(" = ");
    if (at > 0) settings.set(line.slice(0, at), line.slice(at + 3).trim());
  }
  return settings;
}

/** What one reading of a HealthProbe says; each field is absent when the machine does not have it. */
export interface HealthReading {
  /** 1-minute load average (not divided by CPUs). */
  loadAverage?: number;
  cpus?: number;
  /** Share of the last 10 s in which some runnable task waited for a CPU (/proc/pressure/cpu "some avg10"), 0–1. */
  cpuPressure?: number;
  freeBytes?: number;
  /** Seconds the machine's clock is ahead of ours (negative: behind). */
  clockSkew?: number;
}

/** How long one reading may take: a machine that does not answer within it counts as unreadable this time. */
const READING_TIMEOUT_MS = 5000;
const END = "offload-health-end";

/**
 * A shell kept running on an open connection that answers each newline on its stdin with
 * the machine's load, CPU pressure, free store space and clock. Each reading is one round
 * trip: no new channel and no login shell per reading (a slow ~/.bashrc is paid once).
 */
export class HealthProbe {
  private text = "";
  private waiting: ((lines: string[] | undefined) => void)[] = [];
  private pending: Promise<HealthReading> | undefined;

  private constructor(private readonly process: RemoteProcess) {
    process.stderr.resume();
    process.stdout.on("data", (chunk: Buffer) => {
      this.text += chunk.toString();
      for (let end = this.text.indexOf(`${END}\n`); end >= 0; end = this.text.indexOf(`${END}\n`)) {
        const lines = this.text.slice(0, end).split("\n");
        this.text = this.text.slice(end + END.length + 1);
        this.waiting.shift()?.(lines);
      }
    });
    void process.exit.then(() => {
      for (const waiter of this.waiting.splice(0)) waiter(undefined);
    });
  }

  /** Starts the shell on `connection` for the store files in `storeDir`. */
  static async start(connection: SshConnection, storeDir: string): Promise<HealthProbe> {
    // POSIX sh (whatever the login shell runs it with); builtins where they do (read), so a reading forks only df and date.
    const script = [
      "n=$(nproc 2>/dev/null || echo 0)",
      "while read -r _; do",
      '  read -r l _ < /proc/loadavg; echo "load $l $n"',
      '  if [ -r /proc/pressure/cpu ]; then read -r p < /proc/pressure/cpu; echo "pressure $p"; fi',
      `  echo "df $(df -Pk ${shellQuote(storeDir)} 2>/dev/null | tail -n 1)"`,
      '  echo "clock $(date +%s.%N)"',
      `  echo ${END}`,
      "done",
    ].join("\n");
    return new HealthProbe(await connection.exec(script));
  }

  /** One reading; concurrent callers share it. undefined fields: not readable (or no answer within READING_TIMEOUT_MS). */
  read(): Promise<HealthReading> {
    this.pending ??= this.readOnce().finally(() => (this.pending = undefined));
    return this.pending;
  }

  private async readOnce(): Promise<HealthReading> {
    const sent = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const lines = await new Promise<string[] | undefined>((resolve) => {
      this.waiting.push(resolve);
      timer = setTimeout(() => {
        this.waiting = this.waiting.filter((waiter) => waiter !== resolve);
        resolve(undefined);
      }, READING_TIMEOUT_MS);
      this.process.stdin.write("\n");
    });
    clearTimeout(timer);
    const received = Date.now();
    return lines === undefined ? {} : parseHealthLines(lines, (sent + received) / 2000);
  }

  close(): void {
    this.process.close();
  }
}

/** The lines of one HealthProbe answer; `midpoint`: our clock (s) halfway through the round trip. */
export function parseHealthLines(lines: readonly string[], midpoint: number): HealthReading {
  const reading: HealthReading = {};
  for (const line of lines) {
    const [kind, ...fields] = line.trim().split(/\s+/);
    if (kind === "load") {
      const [load, cpus] = fields.map(Number);
      if (Number.isFinite(load)) reading.loadAverage = load;
      if (cpus! > 0) reading.cpus = cpus;
    } else if (kind === "pressure") {
      const avg10 = Number(/avg10=([\d.]+)/.exec(line)?.[1]);
      if (Number.isFinite(avg10)) reading.cpuPressure = avg10 / 100;
    } else if (kind === "df") {
      // Filesystem 1024-blocks Used Available Capacity Mounted-on
      const available = Number(fields[3]);
      if (Number.isFinite(available)) reading.freeBytes = available * 1024;
    } else if (kind === "clock") {
      const remote = Number(fields[0]);
      if (Number.isFinite(remote)) reading.clockSkew = remote - midpoint;
    }
  }
  return reading;
}

/** What the hook checks before building on a machine; each is absent when it could not be read. */
export interface MachineHealth {
  /** 1-minute load average per CPU (only read where an overloadThreshold applies). */
  load?: number;
  /** Free bytes on the file system of its store. */
  freeBytes?: number;
  /** Seconds its clock is ahead of ours (negative: behind). */
  clockSkew?: number;
}

/** Load, free store space and clock skew, read in parallel on extra channels (a probe that fails is just absent). */
export async function readHealth(connection: SshConnection, machine: BuildMachine): Promise<MachineHealth> {
  const absent = () => undefined;
  const [load, disk, clock] = await Promise.all([
    // The load matters only where a threshold applies.
    machine.overloadThreshold === null ? undefined : readLoad(connection).catch(absent),
    readDiskSpace(connection, machineStoreDir(machine)).catch(absent),
    readClockSkew(connection).catch(absent),
  ]);
  return { load, freeBytes: disk?.freeBytes, clockSkew: clock?.skew };
}

/** Normalized load: the 1-minute load average divided by the CPU count (Guix's measure). */
export async function readLoad(connection: SshConnection): Promise<number | undefined> {
  const result = await runRemote(connection, "cat /proc/loadavg; nproc", LOAD_TIMEOUT_MS);
  if (result.timedOut) return undefined;
  const [loadavg, cpus] = result.stdout.trim().split("\n");
  const load = Number(loadavg?.split(" ")[0]);
  const count = Number(cpus);
  return Number.isFinite(load) && count > 0 ? load / count : undefined;
}
