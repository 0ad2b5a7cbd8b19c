// Nix 2.8's build-remote (src/build-remote/build-remote.cc) as a policy: eligible machines
// (system, required ⊆ supported ∪ mandatory, mandatory ⊆ required) with a free slot; the
// lowest load / speedFactor wins, in INTEGER arithmetic (both are unsigned integers in 2.8),
// ties to the higher speedFactor, then the lower load, then file order. A free remote slot
// always beats the local machine. No free slot: postpone when some machine is eligible and
// the build cannot run locally right now, else decline. Remote load is never looked at.
import type { Policy } from "./policy.js";
import { canBuild, localCanBuild, type SimSite } from "./site.js";

/** A machines-file speedFactor is an integer in 2.8: what the lab's nix-machines writes for a speed. */
export function nixSpeedFactor(speed: number): number {
  return Math.max(1, Math.round(speed));
}

export function nixPolicy(site: SimSite): Policy {
  const machines = site.builders.map((b) => ({ ...b, speedFactor: nixSpeedFactor(b.speed) }));
  return {
    name: "Nix 2.8",
    decide({ derivation, amWilling }, view) {
      const couldBuildLocally = localCanBuild(site, derivation.features);
      const canBuildLocally = amWilling && couldBuildLocally;
      let rightType = false;
      let best: { machine: (typeof machines)[number]; load: number } | undefined;
      for (const m of machines) {
        if (!canBuild(m, derivation.features)) continue;
        rightType = true;
        const load = view.running(m.name); // slots whose lock is held
        if (load >= m.slots) continue;
        const score = Math.floor(load / m.speedFactor);
        const bestScore = best && Math.floor(best.load / best.machine.speedFactor);
        if (
          !best ||
          score < bestScore! ||
          (score === bestScore && (m.speedFactor > best.machine.speedFactor || (m.speedFactor === best.machine.speedFactor && load < best.load)))
        ) {
          best = { machine: m, load };
        }
      }
      if (best) return { verdict: "accept", machine: best.machine.name };
      return rightType && !canBuildLocally ? { verdict: "postpone" } : { verdict: "decline" };
    },
  };
}
