// Guix's offload (guix/scripts/offload.scm) as a policy: machines whose systems and features
// fit (Guix has no mandatory features); none → decline. Shuffle them, take a slot on each
// that has one free, sort those by speed (descending, the shuffle breaking ties), and accept
// the first whose normalized load (capped at 1.0) is under its overload threshold (0.8).
// Nothing acceptable → postpone. Guix never weighs building locally against a machine.
import type { Policy } from "./policy.js";
import type { Rng } from "./rng.js";
import type { SimSite } from "./site.js";

const OVERLOAD_THRESHOLD = 0.8;

export function guixPolicy(site: SimSite, rng: Rng): Policy {
  return {
    name: "Guix",
    decide({ derivation }, view) {
      const eligible = site.builders.filter((b) => derivation.features.every((f) => b.features.includes(f)));
      if (eligible.length === 0) return { verdict: "decline" };
      const withSlot = rng.shuffle([...eligible]).filter((b) => view.running(b.name) < b.slots);
      // Array.prototype.sort is stable: equal speeds keep their shuffled order.
      withSlot.sort((a, b) => b.speed - a.speed);
      const chosen = withSlot.find((b) => Math.min(1, view.running(b.name) / b.cores) < OVERLOAD_THRESHOLD);
      return chosen ? { verdict: "accept", machine: chosen.name } : { verdict: "postpone" };
    },
  };
}
