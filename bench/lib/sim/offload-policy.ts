// offload's policy in the simulator: the hook's own selectMachine over the records a
// machines.ts for SITE would hold (with its localMachine), never a copy of it.
import { buildMachine, localMachine } from "../../../src/config/records.js";
import { selectMachine, type MachineState } from "../../../src/select/select.js";
import type { Policy } from "./policy.js";
import type { SimSite } from "./site.js";

export function offloadPolicy(site: SimSite): Policy {
  const machines = site.builders.map((b) =>
    buildMachine({ name: b.name, systems: [site.system as `${string}-${string}`], parallelBuilds: b.slots, speed: b.speed, features: b.features, mandatoryFeatures: b.mandatoryFeatures }),
  );
  const local = localMachine({ speed: site.local.speed, features: site.local.features });
  const localState = { systems: [site.system], features: site.local.features, maxJobs: site.local.maxJobs };
  return {
    name: "offload",
    decide({ derivation, amWilling }, view) {
      // The hook knows slots from the kernel locks and load from its last connection; the
      // simulator gives it the load of that moment (one busy CPU per running build).
      const states = new Map<string, MachineState>(
        site.builders.map((b) => [b.name, { slotsInUse: view.running(b.name), load: view.running(b.name) / b.cores }]),
      );
      const decision = selectMachine({ machines, local, localState, request: { system: site.system, requiredFeatures: derivation.features, amWilling }, states });
      if (decision.verdict === "accept") return { verdict: "accept", machine: decision.candidates[0]!.name };
      if (decision.verdict === "postpone") return { verdict: "postpone" };
      return { verdict: "decline" };
    },
  };
}
