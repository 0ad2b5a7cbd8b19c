// The fault lab for tests and benchmarks: a lab whose builders each live in a network
// namespace of their own (network faults: src/lab/network.ts), a master host whose nix-build
// and nix-daemon hand builds to offload-hook, and the faults that are not the network's: a
// builder's sshd killed or its whole host frozen, a builder's store on a small tmpfs, hooks
// killed at chosen or random points. Then what must be left afterwards: nothing.
//
//   const fl = await startFaultLab("faults", { builders: 2, daemonConfig: "all" });
//   const configDir = fl.config("cut", [fl.lab.builders[0]!]);
//   const building = fl.nixBuild(configDir, { salt, mib: 20 }, { options: ["--option", "max-silent-time", "10"] });
//   await waitFor("the download", () => receivedBytes(fl) > 2 << 20);
//   await cutLink(fl.lab.builders[0]!.host);
//   const result = await building.done;      // { code, stdout, stderr, seconds }
//   fl.clientBuild({ salt });                // as the non-root client, through the daemon's hook
//   const namespaces = await faultLabNamespaces(fl);
//   await stopFaultLab(fl);  expect(await faultLabLeftovers(fl, namespaces)).toEqual([]);
import { startTicks, ticksSinceBoot } from "./proc-ticks.js";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CLIENT_USER, inHost, networkLeftovers, runInHost, runningHosts, startHost, startMasterHost, stopHost } from "../../src/lab/index.js";
import type { Host, Lab, LabBuilder, LabOptions } from "../../src/lab/index.js";
import { namespaceOf, pidInOwnNamespace, processesInNamespaces, processTree, signal } from "../../src/lab/processes.js";
import { builderNixConf } from "../../src/lab/render.js";
import { startSshd, sshdPid, stopSshd } from "../../src/lab/sshd.js";
import { acquireSlot } from "../../src/select/slots.js";
import { HOOK } from "./hook.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./lab.js";
import { configEnv, labRecord, writeLabConfig } from "./lab-config.js";
import { makeSafeDir, removeDir } from "./safe-dir.js";

export { LAB_UP_TIMEOUT_MS };

/**
 * One derivation per call of `fault.nix`: an output of `mib` MiB of random bytes (else a line),
 * after `sleep` seconds of building that prints a line a second; `blob` is an input path that
 * must be uploaded; `deps` are outputs it depends on (a graph).
 */
const FAULT_NIX = `{ salt, name ? "fault", mib ? "0", sleep ? "0", blob ? "", deps ? [] }:
derivation {
  inherit name salt mib sleep deps;
  system = builtins.currentSystem;
  builder = "/bin/sh";
  blob = if blob == "" then "" else builtins.storePath blob;
  args = [ "-c" ''
    i=0; while [ $i -lt $sleep ]; do echo "building $name: $i s" >&2; /bin/sleep 1; i=$((i + 1)); done
    if [ $mib -gt 0 ]; then /usr/bin/head -c "$mib"M /dev/urandom > $out; else echo $name $salt > $out; fi
    for d in $deps; do echo $d >> $out; done
    [ -z "$blob" ] || /usr/bin/wc -c < $blob >> $out
  '' ];
}
`;

export interface FaultLab {
  lab: Lab;
  master: Host;
  /** Config dirs (root's only, as offload wants them). */
  dir: string;
  /** fault.nix, in the lab directory: the master's non-root client reads it too. */
  nixFile: string;
  /** The config dir of the master's nix-daemon's hook (FaultLabOptions.daemonConfig), every builder in it. */
  daemonConfigDir?: string;
  /** A config dir `<dir>/<name>` whose machines are `builders`; `changes` alter every record. */
  config(name: string, builders: readonly LabBuilder[], changes?: Record<string, unknown>): string;
  /** `nix-build` of fault.nix as root (in the master unless `on` names another host), through offload-hook only (--max-jobs 0). */
  nixBuild(configDir: string, build: FaultBuild, how?: NixBuildOptions): RunningBuild;
  /** `nix-build` of fault.nix as the master's non-root client, through its nix-daemon and the daemon's hook. */
  clientBuild(build: FaultBuild): RunningBuild;
}

export interface NixBuildOptions {
  /** More nix-build options, e.g. ["--option", "max-silent-time", "10"]. */
  options?: string[];
  /** Added to the hook's environment. */
  env?: Record<string, string>;
  /** The host to build in. Default the master. */
  on?: Host;
}

export interface FaultBuild {
  salt: string;
  name?: string;
  mib?: number;
  sleep?: number;
  /** A store path of the master to upload as an input. */
  blob?: string;
  /** Other derivations of fault.nix this one depends on (built first, each through the hook). */
  deps?: Omit<FaultBuild, "deps">[];
}

export interface BuildOutcome {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

export interface FaultLabOptions extends LabOptions {
  /** Lines for the master's nix.conf, which its nix-build and nix-daemon read. */
  masterNixConf?: string[];
  /** The master's nix-daemon runs offload-hook with a config dir of this name holding every builder. Default: no hook. */
  daemonConfig?: string;
  /** The build hook the master's builds run. Default HOOK (its own process each time); SERVED_HOOK hands it to the agent. */
  hook?: string;
}

/** A networked test lab and a master host of Nix 2.8 (with a nix-daemon and a non-root client) sharing its directories. */
export async function startFaultLab(name: string, options: FaultLabOptions = {}): Promise<FaultLab> {
  const { masterNixConf = [], daemonConfig, hook = HOOK, ...labOptions } = options;
  const hookOptions = ["--option", "build-hook", hook, "--max-jobs", "0"];
  const lab = await startTestLab({ network: true, ...labOptions });
  const dir = makeSafeDir(name);
  const nixFile = join(lab.dir, "fault.nix");
  writeFileSync(nixFile, FAULT_NIX, { mode: 0o644 });
  const config = (configName: string, builders: readonly LabBuilder[], changes: Record<string, unknown> = {}) =>
    writeLabConfig(
      dir,
      configName,
      lab,
      builders.map((builder) => labRecord(lab, builder, changes)),
    );
  const daemonConfigDir = daemonConfig === undefined ? undefined : config(daemonConfig, lab.builders);
  const master = await startMasterHost({
    dir: join(lab.dir, "master"),
    nix: "2.8", // reads build-hook from nix.conf (2.25 to 2.33 would need NIX_CONFIG)
    shared: [lab.dir, dir],
    nixConf: [...(daemonConfigDir ? [`build-hook = ${hook}`, "max-jobs = 0"] : []), ...masterNixConf],
    daemonEnv: daemonConfigDir ? hookEnv(dir, daemonConfigDir) : undefined,
  });
  return {
    lab,
    master,
    dir,
    nixFile,
    daemonConfigDir,
    config,
    nixBuild: (configDir, build, { options = [], env = {}, on = master } = {}) =>
      startNixBuild(on, { ...hookEnv(dir, configDir), ...env }, [...buildArgs(nixFile, build), ...hookOptions, "--no-out-link", ...options]),
    clientBuild: (build) => startNixBuild(master, {}, [...buildArgs(nixFile, build), "--no-out-link"], CLIENT_USER),
  };
}

/** The hook's environment for a config dir of the fault lab (its own state dir, a shared compile cache). */
export function hookEnv(dir: string, configDir: string): Record<string, string> {
  return configEnv(dir, configDir) as Record<string, string>;
}

/** fault.nix and the arguments that make it `build` (for nix-build or nix-instantiate). */
function buildArgs(nixFile: string, build: FaultBuild): string[] {
  return [nixFile, "--arg", "deps", depsExpression(nixFile, build.deps ?? []), ...argstrs(build)];
}

/** fault.nix's string arguments that `build` sets. */
function fields(build: Omit<FaultBuild, "deps">): [string, string][] {
  const values: [string, string | number | undefined][] = [
    ["salt", build.salt],
    ["name", build.name],
    ["mib", build.mib],
    ["sleep", build.sleep],
    ["blob", build.blob],
  ];
  return values.flatMap(([key, value]): [string, string][] => (value === undefined ? [] : [[key, String(value)]]));
}

function argstrs(build: Omit<FaultBuild, "deps">): string[] {
  return fields(build).flatMap(([key, value]) => ["--argstr", key, value]);
}

function depsExpression(nixFile: string, deps: readonly Omit<FaultBuild, "deps">[]): string {
  const call = (dep: Omit<FaultBuild, "deps">) =>
    `(import ${nixFile} { ${fields(dep)
      .map(([key, value]) => `${key} = ${JSON.stringify(value)};`)
      .join(" ")} })`;
  return `[ ${deps.map(call).join(" ")} ]`;
}

export interface RunningBuild {
  /** What nix-build has printed on stderr so far (the build log streams there). */
  log(): string;
  done: Promise<BuildOutcome>;
}

/** No nix-build of a test may take longer; then it is killed and counts as failed. */
const NIX_BUILD_LIMIT_MS = 600_000;

/** Starts nix-build in `host` with `env` (as `user` through its daemon when given); `done` never rejects. */
export function startNixBuild(host: Host, env: Record<string, string>, args: string[], user?: string): RunningBuild {
  const started = Date.now();
  const { file, args: argv } = inHost(host, ["nix-build", ...args], { env: user ? { ...env, NIX_REMOTE: "daemon" } : env, user });
  // Its own process group: a build past the limit is killed with everything it started here.
  const child = spawn(file, argv, { stdio: ["ignore", "pipe", "pipe"], detached: true });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const limit = setTimeout(() => signal(-child.pid!, "SIGKILL"), NIX_BUILD_LIMIT_MS);
  const done = new Promise<BuildOutcome>((resolve) => {
    child.once(
      "error",
      (error) => (clearTimeout(limit), resolve({ code: null, stdout, stderr: `${stderr}${error.message}`, seconds: (Date.now() - started) / 1000 })),
    );
    child.once("close", (code) => (clearTimeout(limit), resolve({ code, stdout: stdout.trim(), stderr, seconds: (Date.now() - started) / 1000 })));
  });
  return { log: () => stderr, done };
}

/** The output path of `build` (evaluated in the master, nothing built). */
export async function outputPath(fl: FaultLab, build: FaultBuild): Promise<string> {
  const drv = (await runInHost(fl.master, ["nix-instantiate", ...buildArgs(fl.nixFile, build)])).stdout.trim();
  return (await runInHost(fl.master, ["nix-store", "--query", "--outputs", drv])).stdout.trim();
}

/** A fresh blob of `mib` random MiB added to the master's store (an input to upload). */
export async function addBlob(fl: FaultLab, mib: number): Promise<string> {
  const name = `blob-${randomBytes(4).toString("hex")}`;
  const result = await runInHost(fl.master, [
    "sh",
    "-c",
    `f=$(mktemp -d)/${name} && head -c ${mib}M /dev/urandom > "$f" && nix-store --add "$f" && rm -r "$(dirname "$f")"`,
  ]);
  if (result.code !== 0) throw new Error(`adding a blob: ${result.stderr}`);
  return result.stdout.trim();
}

export async function isValidIn(host: Host, path: string): Promise<boolean> {
  return (await runInHost(host, ["nix-store", "--check-validity", path])).code === 0;
}

/** `nix-store --verify --check-contents` in the host: its status and what it complained about. */
export async function verifyStore(host: Host): Promise<{ code: number | null; complaints: string[] }> {
  const result = await runInHost(host, ["nix-store", "--verify", "--check-contents"], { timeoutMs: 300_000 });
  return { code: result.code, complaints: result.stderr.split("\n").filter((line) => /error|modified|invalid|corrupt/i.test(line)) };
}

/** Waits until `probe` yields a value, polling every `everyMs`; throws after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs / 1000} s`);
    await sleep(everyMs);
  }
}

/** Scratch entries of hooks in a state dir's spool and in the master's landing dir. */
export function scratchLeft(fl: FaultLab, configDir: string): { spool: string[]; landing: string[] } {
  return { spool: scratchNames(join(configDir, "state", "spool")), landing: scratchNames(landingArea(fl)) };
}

function landingArea(fl: FaultLab): string {
  return join(fl.master.dir, "nix", "store", ".offload-landing");
}

function scratchNames(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

/** Bytes of the files in the master's landing area (outputs restored as they arrive: a download under way), or 0. */
export function receivedBytes(fl: FaultLab): number {
  const landing = landingArea(fl);
  let bytes = 0;
  for (const scratch of scratchNames(landing)) {
    for (const entry of readdirSync(join(landing, scratch), { recursive: true, withFileTypes: true })) {
      if (entry.isFile()) bytes += statSync(join(entry.parentPath, entry.name), { throwIfNoEntry: false })?.size ?? 0;
    }
  }
  return bytes;
}

/** Whether every slot of each builder in the config dir's state is free: acquiring all of them succeeds. */
export async function allSlotsFree(configDir: string, builders: readonly LabBuilder[]): Promise<boolean> {
  const state = join(configDir, "state");
  const slots = await Promise.all(
    builders.flatMap((builder) => Array.from({ length: builder.parallelBuilds }, () => acquireSlot(state, builder.address, builder.parallelBuilds))),
  );
  await Promise.all(slots.map((slot) => slot?.release()));
  return slots.every((slot) => slot !== undefined);
}

/**
 * Processes of the hook run with this config dir, as this machine sees them: node
 * bin/offload-hook.js, or the script bin/offload-hook (whose hook the agent serves, or which
 * became node dist/hook.js when no agent ran).
 */
export function hookPids(configDir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc").filter((entry) => /^\d+$/.test(entry))) {
    try {
      // The hook's own argv, not a nix-build whose --option build-hook names it.
      const script = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0")[1] ?? "";
      const hook = ["/bin/offload-hook.js", "/bin/offload-hook", "/dist/hook.js"].some((end) => script.endsWith(end));
      if (hook && readFileSync(`/proc/${name}/environ`, "utf8").includes(`OFFLOAD_CONFIG_DIR=${configDir}\0`)) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** The hook (of this config dir) whose scratch is in the master's landing area (named by its pid in the master's namespace), as this machine sees it. */
export async function landingHook(fl: FaultLab, configDir: string): Promise<number | undefined> {
  const owners = new Set(scratchNames(landingArea(fl)).map((name) => Number(name.split("-")[0])));
  for (const pid of hookPids(configDir)) if (owners.has((await pidInOwnNamespace(pid)) ?? 0)) return pid;
  return undefined;
}

/** Processes running a command line that contains `text` in the host (e.g. one build's marker). */
export async function processesInHost(host: Host, text: string): Promise<number[]> {
  const members = await processesInNamespaces([(await namespaceOf(host.anchorPid, "pid"))!]);
  return members.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").includes(text);
    } catch {
      return false;
    }
  });
}

const sshdFiles = (builder: LabBuilder) => ({ sshdConfig: builder.sshdConfig, pidFile: builder.pidFile, logFile: builder.logFile });

/** SIGKILLs the builder's sshd with its sessions and everything they run (nix-store --serve, builds). */
export async function killSshd(builder: LabBuilder): Promise<number> {
  const listener = await sshdPid(sshdFiles(builder));
  const tree = await processTree(listener === undefined ? [] : [listener]);
  for (const pid of tree) signal(pid, "SIGKILL");
  return tree.length;
}

/** Starts the builder's sshd again (after killSshd). */
export async function restartSshd(builder: LabBuilder): Promise<void> {
  await stopSshd(sshdFiles(builder)); // its pid file, and any session that survived
  await startSshd(sshdFiles(builder), builder);
}

/** SIGKILLs the builder's `nix-store --serve` processes (its sshd lives on). */
export async function killRemoteNixStore(builder: LabBuilder): Promise<number> {
  const pids = await processesInHost(builder.host, "nix-store --serve");
  for (const pid of pids) signal(pid, "SIGKILL");
  return pids.length;
}

/** SIGSTOPs every process of the builder's host but its anchor: a frozen machine. Returns the thaw. */
export async function freezeBuilder(builder: LabBuilder): Promise<() => void> {
  const frozen = (await processesInNamespaces([(await namespaceOf(builder.host.anchorPid, "pid"))!])).filter((pid) => pid !== builder.host.anchorPid);
  for (const pid of frozen) signal(pid, "SIGSTOP");
  return () => {
    for (const pid of frozen) signal(pid, "SIGCONT");
  };
}

/**
 * Restarts the builder's host with its /nix on a fresh tmpfs of `storeMiB` (undefined: its
 * own directory again), and its sshd; updates `builder.host`. The address stays: it follows
 * from the directory.
 */
export async function restartWithStore(lab: Lab, builder: LabBuilder, storeMiB: number | undefined): Promise<void> {
  await stopSshd(sshdFiles(builder));
  const nixConf = builderNixConf({ dir: lab.dir, signingKey: lab.signingKey }, builder);
  builder.host = await startHost({ name: builder.name, nix: builder.nix, dir: builder.dir, shared: [lab.dir], nixConf, network: true, storeMiB });
  if (builder.host.network?.address !== builder.address)
    throw new Error(`${builder.name} came back at ${builder.host.network?.address}, not ${builder.address}`);
  await startSshd(sshdFiles(builder), builder);
}

/** The agent of a state dir: its pid as its host sees it (from agent.log), or undefined. */
export function agentPid(configDir: string): number | undefined {
  const log = join(configDir, "state", "agent.log");
  if (!existsSync(log)) return undefined;
  const pids = [...readFileSync(log, "utf8").matchAll(/\(pid (\d+)\)/g)].map((match) => Number(match[1]));
  return pids.at(-1);
}

/** How many hooks the agent of this config dir served (its log says each). */
export function servedHooks(configDir: string): number {
  const log = join(configDir, "state", "agent.log");
  return existsSync(log) ? [...readFileSync(log, "utf8").matchAll(/ hook \d+: (served|stopped by the daemon)/g)].length : 0;
}

/** Peak resident memory (VmHWM) of a process of the host, in KiB; undefined when it has gone. */
export async function peakRssKiB(host: Host, pid: number): Promise<number | undefined> {
  const status = await runInHost(host, ["cat", `/proc/${pid}/status`]);
  const match = /^VmHWM:\s+(\d+) kB/m.exec(status.stdout);
  return match ? Number(match[1]) : undefined;
}

/** Stops the master and the lab (every host, sshd and link), removes the test directory. */
export async function stopFaultLab(fl: FaultLab | undefined): Promise<void> {
  if (fl === undefined) return;
  await stopHost(fl.master);
  await stopTestLab(fl.lab);
  removeDir(fl.dir);
}

/** Whatever of the fault lab is still there: hosts, processes in its namespaces, mounts, links. Empty after stopFaultLab. */
export async function faultLabLeftovers(fl: FaultLab, namespaces: LabNamespaces): Promise<string[]> {
  const hosts = (await runningHosts()).filter((host) => host.dir.startsWith(`${fl.lab.dir}/`)).map((host) => `host ${host.name} (anchor ${host.anchorPid})`);
  const inLab = new Set([...(await processesInNamespaces(namespaces.filter((ns) => !ns.startsWith("net:")))), ...inNetNamespaces(namespaces)]);
  // A namespace's number is freed with it and given to the next namespace made on this machine
  // (the lowest free one): once the lab is stopped, a host of another test run can have its
  // numbers. Its processes started after they were taken; a leftover of this lab's did not.
  const processes = [...inLab].filter((pid) => !((startTicks(pid) ?? 0) > namespaces.takenAt)).map((pid) => `process ${pid}: ${commandLine(pid)}`);
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4] ?? "")
    .filter((point) => point.startsWith(fl.lab.dir) || point.startsWith(fl.dir))
    .map((point) => `mount ${point}`);
  const dirs = [fl.lab.dir, fl.dir].filter((dir) => existsSync(dir)).map((dir) => `directory ${dir}`);
  return [...hosts, ...processes, ...mounts, ...(await ownNetworkLeftovers(fl)), ...dirs];
}

/**
 * The lab's links left on this machine (its end, or a peer end never moved into its host),
 * and the guard route unless another lab's link is still there: labs of other test runs on
 * this machine share the route, and their links are not this lab's leftovers.
 */
async function ownNetworkLeftovers(fl: FaultLab): Promise<string[]> {
  const digests = [fl.master, ...fl.lab.builders.map((builder) => builder.host)].flatMap((host) =>
    host.network ? [host.network.link.replace(/^ofl-/, "")] : [],
  );
  const left = await networkLeftovers();
  const links = left.filter((item) => item.startsWith("link "));
  const ours = links.filter((item) => digests.some((digest) => item === `link ofl-${digest}` || item === `link ofp-${digest}`));
  return [...ours, ...(links.length === ours.length ? left.filter((item) => !item.startsWith("link ")) : [])];
}

/** Namespaces (as "pid:[n]", "net:[n]", …) and when they were taken, in clock ticks since boot (/proc/<pid>/stat's unit). */
export type LabNamespaces = string[] & { takenAt: number };

/** The PID, mount and network namespaces of the lab's hosts: processes left in them would be leftovers. */
export async function faultLabNamespaces(fl: FaultLab): Promise<LabNamespaces> {
  const hosts = [fl.master, ...fl.lab.builders.map((builder) => builder.host)];
  const found = await Promise.all(hosts.flatMap((host) => (["pid", "mnt"] as const).map((kind) => namespaceOf(host.anchorPid, kind))));
  const own = netNamespace("self");
  const networks = fl.lab.builders.map((builder) => netNamespace(String(builder.host.anchorPid))).filter((ns) => ns !== own);
  const list = [...found, ...networks].filter((namespace): namespace is string => namespace !== undefined);
  return Object.assign(list, { takenAt: ticksSinceBoot() });
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim();
  } catch {
    return "(gone)";
  }
}

function netNamespace(pid: string): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined; // gone
  }
}

/** Processes in any of the network namespaces among `namespaces` (processes.ts knows PID and mount ones only). */
function inNetNamespaces(namespaces: readonly string[]): number[] {
  const wanted = new Set(namespaces.filter((ns) => ns.startsWith("net:")));
  if (wanted.size === 0) return [];
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name) && wanted.has(netNamespace(name) ?? ""))
    .map(Number);
}
