// Soak: many builds of mixed sizes and graphs through bin/offload-hook (the hook `offload
// install` sets: the agent serves it) on 3 networked builders, two nix-builds at a time (root
// on the master, and its non-root client through the master's nix-daemon), while a fault
// injector cuts links, kills and restarts sshd, freezes builders, kills remote nix-stores and
// SIGKILLs hooks (the scripts the agent serves) at random moments. Afterwards every build has
// either succeeded with outputs signed by a builder, or failed with a one-line reason and a
// nonzero status; every valid soak path is signed and the store verifies with its contents;
// no slot is held, no scratch is left, the agent's memory stayed bounded; and the lab leaves
// nothing behind.
//
// OFFLOAD_SOAK_BUILDS (default 40) nix-builds, started until OFFLOAD_SOAK_SECONDS (default 150)
// have passed; OFFLOAD_SOAK_SEED picks the builds and faults; OFFLOAD_SOAK_REPORT names a file
// for the figures (JSON). `npm run soak` runs 200 builds.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { writeFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { clearFaults, cutLink, restoreLink, runInHost } from "../src/lab/index.js";
import type { LabBuilder } from "../src/lab/index.js";
import { signal } from "../src/lab/processes.js";
import {
  LAB_UP_TIMEOUT_MS,
  addBlob,
  agentPid,
  allSlotsFree,
  faultLabLeftovers,
  faultLabNamespaces,
  freezeBuilder,
  hookPids,
  killRemoteNixStore,
  killSshd,
  peakRssKiB,
  restartSshd,
  scratchLeft,
  servedHooks,
  startFaultLab,
  stopFaultLab,
  verifyStore,
  type BuildOutcome,
  type FaultBuild,
  type FaultLab,
  type RunningBuild,
} from "./support/faults.js";
import { SERVED_HOOK } from "./support/hook.js";

const BUILDS = Number(process.env.OFFLOAD_SOAK_BUILDS ?? 40);
const SECONDS = Number(process.env.OFFLOAD_SOAK_SECONDS ?? (BUILDS > 40 ? 1800 : 150));
const SEED = Number(process.env.OFFLOAD_SOAK_SEED ?? Date.now() % 1_000_000);
/** The hook's stall bound for every build here (the master's nix.conf). */
const SILENCE = 10;
/** The agent relays whole NARs with backpressure: its peak stays far below this. */
const AGENT_PEAK_LIMIT_KIB = 200 * 1024;
const NIX = ["--extra-experimental-features", "nix-command"];

/** mulberry32: the same seed gives the same builds and faults. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = random(SEED);
const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)]!;
const between = (low: number, high: number) => low + rand() * (high - low);

type Kind = "tiny" | "1MiB" | "20MiB" | "graph" | "upload";
const KINDS: Kind[] = ["tiny", "tiny", "tiny", "1MiB", "1MiB", "20MiB", "graph", "graph", "graph", "upload"];

let fl: FaultLab | undefined;
let blobs: string[] = [];

beforeAll(async () => {
  fl = await startFaultLab("soak", {
    builders: 3,
    builderSpecs: [
      { speed: 2, features: [], mandatoryFeatures: [], nix: "2.8" },
      { speed: 1, features: [], mandatoryFeatures: [], nix: "2.8" },
      { speed: 1, features: [], mandatoryFeatures: [], nix: "2.34" },
    ],
    daemonConfig: "soak",
    masterNixConf: [`max-silent-time = ${SILENCE}`],
    hook: SERVED_HOOK,
  });
  blobs = [await addBlob(fl, 1), await addBlob(fl, 1), await addBlob(fl, 20)];
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  if (fl) for (const builder of fl.lab.builders) await clearFaults(builder.host).catch(() => undefined);
  await stopFaultLab(fl);
}, 120_000);

function soakBuild(kind: Kind, n: number): FaultBuild {
  const salt = `${SEED}-${n}`;
  const leaf = (name: string, mib: number, sleep = 0) => ({ name, salt, mib, sleep });
  switch (kind) {
    case "tiny":
      return leaf(`soak-tiny-${n}`, 0, Math.floor(between(0, 3)));
    case "1MiB":
      return leaf(`soak-1mib-${n}`, 1);
    case "20MiB":
      return leaf(`soak-20mib-${n}`, 20);
    case "upload":
      return { name: `soak-upload-${n}`, salt, blob: pick(blobs) };
    case "graph":
      return { ...leaf(`soak-graph-${n}`, 0, 1), deps: [leaf(`soak-dep-a-${n}`, 0, 1), leaf(`soak-dep-b-${n}`, 1), leaf(`soak-dep-c-${n}`, 0, 2)] };
  }
}

interface SoakRecord {
  n: number;
  kind: Kind;
  as: "root" | "client";
  outcome: BuildOutcome;
}

/** The line that says why a build failed: offload's (the last it wrote), else Nix's own (a killed hook says nothing). */
function reasonLines(stderr: string): { line: string; next: string | undefined } | undefined {
  const lines = stderr.split("\n");
  const failure = (line: string) =>
    /^offload: /.test(line) && !/^offload: (machines for this build|copied|\d+ output\(s\)|the agent's session|cannot build on)/.test(line);
  let at = lines.findLastIndex(failure);
  // A hook killed while it waited after "postpone": Nix says so, then that it cannot build anything.
  if (at < 0) at = lines.findIndex((line) => line.startsWith("build hook died unexpectedly"));
  if (at < 0) at = lines.findIndex((line) => line.startsWith("error: "));
  return at < 0 ? undefined : { line: lines[at]!, next: lines[at + 1] };
}

const REASONS: [string, RegExp][] = [
  ["transfer stalled", /stalled: no byte moved/],
  ["connection ended", /connection ended/],
  ["build silent (link cut or frozen mid-build)", /seconds of silence/],
  // A cut link mid-build: silence past max-silent-time, and the machine's port does not answer.
  ["link lost mid-build", /lost the connection to \S+: nothing came for the build/],
  ["machine unreachable", /unreachable|SSH handshake|refused|closed the connection/],
  ["hook killed", /signal 9|Killed|killed/],
  // What Nix says when its hook dies before replying to a "try".
  ["hook killed before it replied", /unexpected EOF reading a line/],
  ["hook killed while it waited (postponed)", /build hook died unexpectedly/],
];

function reasonKind(line: string): string {
  return REASONS.find(([, pattern]) => pattern.test(line))?.[0] ?? `other: ${line}`;
}

interface InjectedFaults {
  [kind: string]: number;
}

/** Injects one fault at a time at random moments until `stop()` says so; returns what it did. */
async function injectFaults(soak: FaultLab, configDir: string, stop: () => boolean): Promise<InjectedFaults> {
  const counts: InjectedFaults = {};
  const count = (kind: string) => (counts[kind] = (counts[kind] ?? 0) + 1);
  const builders = soak.lab.builders;
  while (!stop()) {
    await sleep(between(1500, 5000));
    if (stop()) break;
    const builder: LabBuilder = pick(builders);
    const fault = pick(["cut", "cut", "sshd", "hook", "hook", "freeze", "nix-store"] as const);
    if (fault === "cut") {
      // Short cuts are ridden out; cuts past max-silent-time fail a transfer.
      const seconds = between(1, SILENCE + 5);
      await cutLink(builder.host);
      await sleep(seconds * 1000);
      await restoreLink(builder.host);
      count(seconds > SILENCE ? "link cut past max-silent-time" : "link cut shorter than max-silent-time");
    } else if (fault === "sshd") {
      await killSshd(builder);
      await sleep(between(500, 3000));
      await restartSshd(builder);
      count("sshd killed and restarted");
    } else if (fault === "freeze") {
      const thaw = await freezeBuilder(builder);
      await sleep(between(1000, 8000));
      thaw();
      count("builder frozen (SIGSTOP, then SIGCONT)");
    } else if (fault === "nix-store") {
      if ((await killRemoteNixStore(builder)) > 0) count("remote nix-store killed");
    } else {
      // Hooks of root's nix-build and of the daemon alike: both run with this config dir.
      const hooks = hookPids(configDir);
      if (hooks.length > 0) {
        signal(pick(hooks), "SIGKILL");
        count("hook SIGKILLed");
      }
    }
  }
  return counts;
}

test(
  `soak: ${BUILDS} builds, 2 at a time, under injected faults`,
  async () => {
    const soak = fl!;
    const configDir = soak.daemonConfigDir!;
    const started = Date.now();
    const records: SoakRecord[] = [];
    let next = 0;
    const deadline = started + SECONDS * 1000;
    // Two streams: root's nix-build (hook settings on the command line) and the client's through the daemon.
    const stream = async (as: SoakRecord["as"]) => {
      while (next < BUILDS && Date.now() < deadline) {
        const n = next++;
        const kind = pick(KINDS);
        const build = soakBuild(kind, n);
        const running: RunningBuild = as === "root" ? soak.nixBuild(configDir, build) : soak.clientBuild(build);
        records.push({ n, kind, as, outcome: await running.done });
      }
    };
    let streaming = true;
    const faults = injectFaults(soak, configDir, () => !streaming);
    await Promise.all([stream("root"), stream("client")]);
    streaming = false;
    const injected = await faults;
    const buildSeconds = (Date.now() - started) / 1000;
    for (const builder of soak.lab.builders) await clearFaults(builder.host);

    // Killed hooks leave scratch that only the next hook sweeps: one more build, undisturbed,
    // retried while the machines' failures are still remembered (30 s): the fleet recovers.
    const faultsEnded = Date.now();
    let sweeper = await soak.nixBuild(configDir, { name: "soak-sweeper", salt: `${SEED}-sweeper` }).done;
    while (sweeper.code !== 0 && Date.now() - faultsEnded < 60_000) {
      await sleep(5000);
      sweeper = await soak.nixBuild(configDir, { name: "soak-sweeper", salt: `${SEED}-sweeper` }).done;
    }
    const recoverySeconds = (Date.now() - faultsEnded) / 1000;

    const succeeded = records.filter((record) => record.outcome.code === 0);
    const failed = records.filter((record) => record.outcome.code !== 0);
    const reasons: { [kind: string]: number } = {};
    const notOneLine: string[] = [];
    const failures: { n: number; kind: Kind; as: string; code: number | null; reason: string; stderr?: string }[] = [];
    for (const record of failed) {
      const reason = reasonLines(record.outcome.stderr);
      const kind = reason ? reasonKind(reason.line) : "no reason given";
      reasons[kind] = (reasons[kind] ?? 0) + 1;
      // Unexplained failures keep all that nix-build printed, to see what happened.
      const unexplained = kind === "no reason given" || kind.startsWith("other: ");
      failures.push({
        n: record.n,
        kind: record.kind,
        as: record.as,
        code: record.outcome.code,
        reason: reason?.line ?? "",
        ...(unexplained ? { stderr: record.outcome.stderr } : {}),
      });
      // offload's reason may go on with indented lines (its fix, each machine's reason); Nix's own lines are Nix's business,
      // and so is a message of offload's about another derivation of the graph, built meanwhile.
      if (reason?.line.startsWith("offload: ") && reason.next !== undefined && !/^( {2}|error: |offload: |$)/.test(reason.next))
        notOneLine.push(`${reason.line} ⏎ ${reason.next}`);
    }

    // Every valid soak output (of failed graphs too) is complete and signed by a builder, says Nix itself.
    const all = (await runInHost(soak.master, ["nix", ...NIX, "path-info", "--all"], { timeoutMs: 120_000 })).stdout.split("\n");
    const soakPaths = all.filter((path) => /-soak-/.test(path) && !path.endsWith(".drv"));
    const keys = soak.lab.builders.map((builder) => builder.signingKey).join(" ");
    const signed = await runInHost(
      soak.master,
      ["nix", ...NIX, "store", "verify", "--no-contents", "--sigs-needed", "1", "--trusted-public-keys", keys, ...soakPaths],
      { timeoutMs: 300_000 },
    );
    const store = await verifyStore(soak.master);
    const agent = agentPid(configDir);
    const agentPeakKiB = agent === undefined ? undefined : await peakRssKiB(soak.master, agent);
    const scratch = scratchLeft(soak, configDir);
    const slotsFree = await allSlotsFree(configDir, soak.lab.builders);

    const report = {
      date: new Date().toISOString(),
      seed: SEED,
      builds: records.length,
      derivations: records.reduce((sum, record) => sum + (record.kind === "graph" ? 4 : 1), 0),
      byKind: Object.fromEntries(KINDS.map((kind) => [kind, records.filter((record) => record.kind === kind).length])),
      byUser: { root: records.filter((record) => record.as === "root").length, client: records.filter((record) => record.as === "client").length },
      succeeded: succeeded.length,
      failed: failed.length,
      reasons,
      notOneLine,
      injected,
      buildSeconds,
      recoverySeconds,
      validSoakPaths: soakPaths.length,
      agentPeakMiB: agentPeakKiB === undefined ? null : Math.round(agentPeakKiB / 1024),
      servedHooks: servedHooks(configDir),
      signaturesVerified: signed.code === 0,
      // What `nix store verify` named: valid soak paths without a builder's signature.
      unsigned: signed.stderr.split("\n").filter((line) => line.includes("/nix/store/") && !line.startsWith("checking ")),
      storeVerified: store.code === 0 && store.complaints.length === 0,
      slotsFree,
      scratchLeft: scratch.spool.length + scratch.landing.length,
      failures,
    };
    // The report, with the whole output of the failures nothing explains.
    process.stdout.write(`soak report: ${JSON.stringify({ ...report, failures: failures.filter((failure) => failure.stderr !== undefined) }, null, 2)}\n`);
    if (process.env.OFFLOAD_SOAK_REPORT) writeFileSync(process.env.OFFLOAD_SOAK_REPORT, `${JSON.stringify(report, null, 2)}\n`);

    expect(sweeper.code).toBe(0);
    // The agent served the hooks (the first starts it, in a process of its own).
    expect(report.servedHooks).toBeGreaterThan(records.length / 2);
    // Builds start until OFFLOAD_SOAK_SECONDS; far fewer than asked means builds hang.
    expect(records.length).toBeGreaterThanOrEqual(Math.min(BUILDS, 10));
    for (const record of succeeded) expect(record.outcome.stdout).toMatch(/^\/nix\/store\/\S+-soak-/);
    expect(reasons["no reason given"]).toBeUndefined();
    expect(Object.keys(reasons).filter((kind) => kind.startsWith("other: "))).toEqual([]);
    expect(notOneLine).toEqual([]);
    expect(soakPaths.length).toBeGreaterThanOrEqual(succeeded.length);
    expect(signed.stderr).not.toMatch(/error|lacks|untrusted/i);
    expect(signed.code).toBe(0);
    expect(store).toEqual({ code: 0, complaints: [] });
    expect(slotsFree).toBe(true);
    expect(scratch).toEqual({ spool: [], landing: [] });
    expect(agentPeakKiB).toBeDefined();
    expect(agentPeakKiB!).toBeLessThan(AGENT_PEAK_LIMIT_KIB);

    // And then nothing of it is left on this machine.
    const namespaces = await faultLabNamespaces(soak);
    fl = undefined;
    await stopFaultLab(soak);
    expect(await faultLabLeftovers(soak, namespaces)).toEqual([]);
  },
  (SECONDS + 600) * 1000,
);
