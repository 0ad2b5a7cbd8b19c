// P4, decision latency: offload-hook fed "try" requests byte for byte as the daemon sends
// them (test/support/hook.ts), for a generated 100-machine config loaded from the cache.
// Decline and postpone are decided without connecting anywhere, so they measure the
// decision itself: settings, config, slot probes of every eligible machine, selection.
// Accept includes connecting to the machine, so it is measured on a one-builder lab.
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { acquireSlot, type Slot } from "../../src/select/slots.js";
import { BASE_SETTINGS, runHookTries as runTries, type HookRun, type Try } from "../../test/support/hook.js";
import { fleetMachines, FLEET_SIZE, writeFleetConfig } from "./fleet.js";
import { offloadEnv, withLab } from "./lab.js";
import { ms, type Row } from "./report.js";
import { median, percentile } from "./stats.js";
import { snapshotHook } from "./snapshot.js";
import { derivationName, recordDuration } from "../../src/select/durations.js";
import { makeSafeDir, removeDir } from "../../test/support/safe-dir.js";

/** The daemon's side, against the snapshot's hook. */
const runHookTries = (env: NodeJS.ProcessEnv, requests: Try[]) => runTries(env, requests, BASE_SETTINGS, snapshotHook());

export interface DecisionOptions {
  /** Tries sent to one hook process per scenario. */
  tries: number;
  /** Hook processes started to time start → first reply. */
  starts: number;
  /** Hook processes started to time start → accept (each connects over SSH). */
  accepts: number;
  log: (line: string) => void;
}

const TARGET_P50 = 20;
const TARGET_FIRST = 150;
const DRV = "/nix/store/0mym5imlj8bclbwws3sf3d10gskmaqv0-bench-decision.drv";
/** Faster than every machine of the fleet: a free local slot always wins, so the answer is "decline". */
const LOCAL_SPEED = 10;
const FEATURE_MIX: string[][] = [[], ["big-parallel"], ["kvm"]];

function tries(count: number, amWilling: boolean): Try[] {
  return Array.from({ length: count }, (_, i) => ({ amWilling, system: "x86_64-linux", drvPath: DRV, features: FEATURE_MIX[i % FEATURE_MIX.length] }));
}

function expectReplies(run: HookRun, reply: string, what: string): void {
  const wrong = run.replies.find((r) => r !== reply);
  if (wrong !== undefined || run.replies.length === 0) {
    throw new Error(
      `${what}: expected "${reply}" from the hook, got "${wrong ?? "nothing"}"${run.messages.length ? ` (${run.messages.slice(-3).join(" / ")})` : ""}`,
    );
  }
}

/** Try → reply of every try after the first (the first also pays for the process start). */
function steadyLatencies(run: HookRun): number[] {
  return run.timings.slice(1).map((t) => t.sinceTry);
}

export async function measureDecisionLatency(options: DecisionOptions): Promise<Row[]> {
  const work = makeSafeDir("p4", "offload-bench");
  const held: Slot[] = [];
  try {
    const clientKey = join(work, "client_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", clientKey]);
    const configDir = writeFleetConfig(join(work, "etc"), clientKey, LOCAL_SPEED);
    const env = { OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(work, "state"), OFFLOAD_CACHE_DIR: join(work, "cache") };
    const x86 = fleetMachines().filter((m) => m.systems.includes("x86_64-linux"));
    const slots = x86.reduce((sum, m) => sum + m.parallelBuilds, 0);

    // Compiles machines.ts into the cache: every later start loads it from there.
    expectReplies(await runHookTries(env, tries(1, true)), "decline", "warm-up");

    const decline = await runHookTries(env, tries(options.tries, true));
    expectReplies(decline, "decline", "local machine faster");
    const starts: number[] = [];
    for (let i = 0; i < options.starts; i++) {
      const run = await runHookTries(env, tries(1, true));
      expectReplies(run, "decline", "start");
      starts.push(run.timings[0]!.sinceStart);
    }
    options.log(`P4: decline p50 ${ms(percentile(steadyLatencies(decline), 50))}, start → first reply median ${ms(median(starts))}`);

    // Every slot of every x86 machine held, as running builds would hold them: builds known to
    // take an hour, so no slot frees soon and the hook answers at once (with builds of unknown
    // length it holds its answer up to DEFAULTS.slotWaitS for a slot, by design).
    const running = "/nix/store/00000000000000000000000000000000-p4-hour-long-build.drv";
    recordDuration(env.OFFLOAD_STATE_DIR, derivationName(running), 3600);
    for (const machine of x86)
      for (let i = 0; i < machine.parallelBuilds; i++) held.push((await acquireSlot(env.OFFLOAD_STATE_DIR, machine.name, machine.parallelBuilds, running))!);
    const postpone = await runHookTries(env, tries(options.tries, false));
    expectReplies(postpone, "postpone", "all slots held");
    options.log(`P4: postpone p50 ${ms(percentile(steadyLatencies(postpone), 50))}`);
    await Promise.all(held.splice(0).map((slot) => slot.release()));

    const accepts = await measureAccepts(options);
    const row = (measure: string, value: number, target: number | undefined): Row => ({
      benchmark: "P4",
      measure,
      offload: ms(value),
      other: "",
      ratio: "",
      target: target === undefined ? "" : `≤ ${target} ms`,
      met: target === undefined ? undefined : value <= target,
    });
    const scenario = (name: string, run: HookRun): Row[] => {
      const latencies = steadyLatencies(run);
      return [
        row(`try → ${name}, p50 of ${latencies.length}`, percentile(latencies, 50), TARGET_P50),
        row(`try → ${name}, p99 of ${latencies.length}`, percentile(latencies, 99), undefined),
      ];
    };
    return [
      ...scenario(`decline (${FLEET_SIZE} machines, local faster)`, decline),
      ...scenario(`postpone (${FLEET_SIZE} machines, all ${slots} x86 slots held)`, postpone),
      row(`process start → first reply (cached config), median of ${starts.length}`, median(starts), TARGET_FIRST),
      row(`process start → first reply, p99 of ${starts.length}`, percentile(starts, 99), undefined),
      row(`1 loopback machine: process start → accept (SSH connect included), median of ${accepts.accept.length}`, median(accepts.accept), undefined),
      row(`1 loopback machine: process start → decline, nothing to probe or connect`, median(accepts.bare), undefined),
    ];
  } finally {
    await Promise.all(held.map((slot) => slot.release()));
    removeDir(work);
  }
}

/**
 * Start → "# accept" on a one-builder lab: what the daemon waits for before each remote
 * build. Alternated with start → decline for a system the machine does not build (no slot,
 * no connection) on the same config: the difference is what claiming and connecting cost.
 */
function measureAccepts(options: DecisionOptions): Promise<{ accept: number[]; bare: number[] }> {
  return withLab("p4", { builders: 1, builderSpecs: [{ features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 1 }] }, async (bench) => {
    const env = offloadEnv(bench);
    const times = { accept: [] as number[], bare: [] as number[] };
    const foreign: Try = { amWilling: false, system: "riscv64-linux", drvPath: DRV };
    // The first also compiles the config cache: not counted.
    for (let i = 0; i <= options.accepts; i++) {
      const run = await runHookTries(env, tries(1, false));
      if (!run.replies[0]?.startsWith("accept"))
        throw new Error(`expected an accept from the lab's builder, got "${run.replies[0] ?? "nothing"}" (${run.messages.slice(-3).join(" / ")})`);
      const bare = await runHookTries(env, [foreign]);
      expectReplies(bare, "decline", "a system no machine builds");
      if (i > 0) {
        times.accept.push(run.timings[0]!.sinceStart);
        times.bare.push(bare.timings[0]!.sinceStart);
      }
    }
    options.log(`P4: start → accept median ${ms(median(times.accept))}, start → decline without probing ${ms(median(times.bare))}`);
    return times;
  });
}
