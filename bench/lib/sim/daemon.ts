// The Nix 2.8 daemon's worker loop (worker.cc, derivation-goal.cc) driving a build hook, as
// a discrete-event simulation. What matters for scheduling, as the real one does it:
// - Goals that are awake are worked on in passes, in goal-key (name) order. A ready
//   derivation's goal sends the hook a "try" with amWilling = (running local builds <
//   max-jobs), computed at that moment: goals declined earlier in the same pass have not
//   started yet, so several can be told "a local slot is free" for the same slot.
// - accept: the build runs on that machine, holding one of its slots, for duration / speed.
// - decline: the goal tries a local build in the next pass; when max-jobs builds already
//   run it waits for a build slot (woken when ANY child, local or remote, finishes) and then
//   asks the hook again.
// - postpone: the goal waits for a while; all such goals are woken together once the poll
//   interval has passed since the last such wake-up (or since the first goal started
//   waiting), not when a machine frees up.
// Connecting, copying and deciding take no time here: only the placement decisions count.
import type { SimDerivation, SimGraph } from "./graphs.js";
import type { Policy } from "./policy.js";
import { canBuild, fastestSpeed, localCanBuild, type SimSite } from "./site.js";

const LOCAL = "local";

export interface SimResult {
  makespan: number;
  /** Per machine ("local" included): builds run, and seconds busy summed over slots. */
  machines: Map<string, { builds: number; busy: number }>;
  postpones: number;
  /**
   * Remote slot-seconds left idle while a derivation that slot could build was waiting:
   * postponed (the poll interval's cost), or queued for a local slot after a decline.
   */
  idle: { postponed: number; forLocalSlot: number };
  /** The build that lost most time to its machine: seconds it ran, and on the fastest machine that could build it. */
  worstPlacement?: { name: string; machine: string; ran: number; fastest: number };
}

interface RunningBuild {
  id: number;
  machine: string;
  start: number;
  end: number;
}

export function simulate(graph: SimGraph, site: SimSite, policy: Policy): SimResult {
  const derivations = graph.derivations;
  const byName = (a: number, b: number) => (derivations[a]!.name < derivations[b]!.name ? -1 : 1);
  const dependents = derivations.map(() => [] as number[]);
  for (const d of derivations) for (const dep of d.deps) dependents[dep]!.push(d.id);
  const missingDeps = derivations.map((d) => d.deps.length);
  const state = derivations.map(() => "tryToBuild" as "tryToBuild" | "tryLocalBuild");

  const speed = new Map<string, number>([[LOCAL, site.local.speed], ...site.builders.map((b) => [b.name, b.speed] as const)]);
  const slots = new Map<string, number>(site.builders.map((b) => [b.name, b.slots]));
  const runningOn = new Map<string, number>([[LOCAL, 0], ...site.builders.map((b) => [b.name, 0] as const)]);
  const result: SimResult = {
    makespan: 0,
    machines: new Map([...runningOn.keys()].map((m) => [m, { builds: 0, busy: 0 }])),
    postpones: 0,
    idle: { postponed: 0, forLocalSlot: 0 },
  };

  let now = 0;
  let awake = new Set<number>(derivations.filter((d) => d.deps.length === 0).map((d) => d.id));
  const waitingForAWhile = new Set<number>();
  const wantingToBuild = new Set<number>();
  let lastWokenUp: number | undefined;
  const running: RunningBuild[] = [];
  let done = 0;
  const view = {
    running: (machine: string) => runningOn.get(machine)!,
    now: () => now,
    builds: (machine: string) => running.filter((r) => r.machine === machine).map((r) => ({ derivation: derivations[r.id]!, startedAt: r.start })),
  };

  /** Charges `seconds` of every remote slot that is free while a waiting derivation could have used it. */
  const chargeIdle = (seconds: number) => {
    for (const [why, waiting] of [
      ["postponed", waitingForAWhile],
      ["forLocalSlot", wantingToBuild],
    ] as const) {
      for (const b of site.builders) {
        const free = b.slots - runningOn.get(b.name)!;
        const could = [...waiting].filter((id) => canBuild(b, derivations[id]!.features)).length;
        result.idle[why] += Math.min(free, could) * seconds;
      }
    }
  };
  const start = (d: SimDerivation, machine: string) => {
    const count = runningOn.get(machine)! + 1;
    if (machine !== LOCAL && count > slots.get(machine)!) throw new Error(`${policy.name} accepted ${d.name} on ${machine}, which has no free slot`);
    runningOn.set(machine, count);
    const end = now + d.duration / speed.get(machine)!;
    running.push({ id: d.id, machine, start: now, end });
    const fastest = d.duration / fastestSpeed(site, d.features);
    const worst = result.worstPlacement;
    if (!worst || end - now - fastest > worst.ran - worst.fastest) result.worstPlacement = { name: d.name, machine, ran: end - now, fastest };
    const stats = result.machines.get(machine)!;
    stats.builds++;
    stats.busy += end - now;
  };

  const work = (id: number) => {
    const d = derivations[id]!;
    if (state[id] === "tryToBuild") {
      const reply = policy.decide({ derivation: d, amWilling: runningOn.get(LOCAL)! < site.local.maxJobs }, view);
      if (reply.verdict === "accept") start(d, reply.machine);
      else if (reply.verdict === "postpone") {
        result.postpones++;
        waitingForAWhile.add(id);
      } else {
        state[id] = "tryLocalBuild";
        awake.add(id);
      }
      return;
    }
    if (!localCanBuild(site, d.features))
      throw new Error(`${policy.name} declined ${d.name} (features ${d.features.join(", ")}), which the local machine cannot build`);
    if (runningOn.get(LOCAL)! < site.local.maxJobs) {
      start(d, LOCAL);
    } else {
      state[id] = "tryToBuild";
      wantingToBuild.add(id);
    }
  };

  while (done < derivations.length) {
    while (awake.size > 0) {
      const pass = [...awake].sort(byName);
      awake = new Set();
      for (const id of pass) work(id);
    }
    // waitForInput: until the next build ends or the postponed goals' poll interval is up.
    if (waitingForAWhile.size > 0) lastWokenUp ??= now;
    else lastWokenUp = undefined;
    const nextEnd = Math.min(...running.map((r) => r.end));
    const nextPoll = lastWokenUp === undefined ? Infinity : lastWokenUp + site.pollInterval;
    const after = Math.min(nextEnd, nextPoll);
    if (after === Infinity) throw new Error(`${policy.name}: nothing runs and nothing waits, but ${derivations.length - done} derivations are not built`);
    chargeIdle(after - now);
    now = after;

    running.sort((a, b) => a.end - b.end);
    while (running.length > 0 && running[0]!.end <= now) {
      const finished = running.shift()!;
      runningOn.set(finished.machine, runningOn.get(finished.machine)! - 1);
      done++;
      // childTerminated: every goal waiting for a build slot gets another go.
      for (const id of wantingToBuild) awake.add(id);
      wantingToBuild.clear();
      for (const dependent of dependents[finished.id]!) if (--missingDeps[dependent] === 0) awake.add(dependent);
    }
    if (lastWokenUp !== undefined && waitingForAWhile.size > 0 && lastWokenUp + site.pollInterval <= now) {
      lastWokenUp = now;
      for (const id of waitingForAWhile) awake.add(id);
      waitingForAWhile.clear();
    }
  }
  result.makespan = now;
  return result;
}
