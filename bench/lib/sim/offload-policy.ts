// offload's policy in the simulator: the hook's own selectMachine over the records a
// machines.ts for SITE would hold (with its localMachine), never a copy of it.
import { buildMachine, localMachine } from "../../../src/config/records.js";
import { selectMachine, type MachineState } from "../../../src/select/select.js";
import type { Policy, SiteView } from "./policy.js";
import type { SimSite } from "./site.js";

/**
 * `history`: seconds at speed 1 that earlier builds of each derivation took (the state dir's
 * record of a previous build of the same graph); without it the hook knows no durations.
 */
export function offloadPolicy(site: SimSite, history?: ReadonlyMap<string, number>): Policy {
  const machines = site.builders.map((b) =>
    buildMachine({
      name: b.name,
      systems: [site.system as `${string}-${string}`],
      parallelBuilds: b.slots,
      speed: b.speed,
      features: b.features,
      mandatoryFeatures: b.mandatoryFeatures,
    }),
  );
  const local = localMachine({ speed: site.local.speed, features: site.local.features });
  const localState = { systems: [site.system], features: site.local.features, maxJobs: site.local.maxJobs };
  return {
    name: history ? "offload (history)" : "offload",
    decide({ derivation, amWilling }, view) {
      // The hook knows slots from the kernel locks and load from its last connection; the
      // simulator gives it the load of that moment (one busy CPU per running build).
      const states = new Map<string, MachineState>(
        site.builders.map((b) => [
          b.name,
          { slotsInUse: view.running(b.name), load: view.running(b.name) / b.cores, freeIn: history && freeIn(b.name, b.speed, view, history) },
        ]),
      );
      const decision = selectMachine({
        machines,
        local,
        localState,
        request: { system: site.system, requiredFeatures: derivation.features, amWilling },
        states,
        estimate: history?.get(derivation.name),
        pollInterval: site.pollInterval,
      });
      if (decision.verdict === "accept") return { verdict: "accept", machine: decision.candidates[0]!.name };
      if (decision.verdict === "postpone") return { verdict: "postpone" };
      return { verdict: "decline" };
    },
  };
}

/** Seconds until the first of a machine's running builds is expected to end, by their recorded durations. */
function freeIn(machine: string, speed: number, view: SiteView, history: ReadonlyMap<string, number>): number | undefined {
  const remaining = view.builds(machine).map(({ derivation, startedAt }) => {
    const recorded = history.get(derivation.name);
    return recorded === undefined ? undefined : Math.max(0, recorded / speed - (view.now() - startedAt));
  });
  if (remaining.length === 0 || remaining.some((r) => r === undefined)) return undefined;
  return Math.min(...(remaining as number[]));
}
