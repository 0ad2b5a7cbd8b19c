// A lower bound on any schedule's makespan for a graph on a site: no policy, however clever,
// finishes sooner. The largest of
// - the critical path, each derivation at the speed of the fastest machine that can build it;
// - all work over the site's total capacity (Σ speed × slots, the local machine included);
// - for each feature, the work requiring it over the capacity of the machines that have it.
import type { SimGraph } from "./graphs.js";
import { fastestSpeed, localCanBuild, type SimSite } from "./site.js";

export interface Bound {
  value: number;
  criticalPath: number;
  work: number;
  /** Which term is the bound. */
  limitedBy: string;
}

export function lowerBound(graph: SimGraph, site: SimSite): Bound {
  const machines = [
    ...site.builders.map((b) => ({ speed: b.speed, slots: b.slots, has: (f: string) => b.features.includes(f) || b.mandatoryFeatures.includes(f) })),
    { speed: site.local.speed, slots: site.local.maxJobs, has: (f: string) => localCanBuild(site, [f]) },
  ];
  const finish: number[] = [];
  for (const d of graph.derivations) {
    // Generated graphs list dependencies before dependents.
    finish[d.id] = Math.max(0, ...d.deps.map((dep) => finish[dep]!)) + d.duration / fastestSpeed(site, d.features);
  }
  const criticalPath = Math.max(...finish);
  const capacity = (ms: typeof machines) => ms.reduce((sum, m) => sum + m.speed * m.slots, 0);
  const work = graph.derivations.reduce((sum, d) => sum + d.duration, 0) / capacity(machines);
  const terms: [string, number][] = [
    ["critical path", criticalPath],
    ["total work", work],
  ];
  const features = new Set(graph.derivations.flatMap((d) => d.features));
  for (const feature of features) {
    const needing = graph.derivations.filter((d) => d.features.includes(feature)).reduce((sum, d) => sum + d.duration, 0);
    terms.push([`${feature} work`, needing / capacity(machines.filter((m) => m.has(feature)))]);
  }
  const [limitedBy, value] = terms.reduce((a, b) => (b[1] > a[1] ? b : a));
  return { value, criticalPath, work, limitedBy };
}
