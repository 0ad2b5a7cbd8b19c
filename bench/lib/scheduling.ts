// P6, scheduling: synthetic build graphs replayed through the simulated Nix 2.8 daemon with
// three hooks (offload's selectMachine, Nix 2.8's build-remote, Guix's offload), each
// makespan compared with a lower bound no schedule can beat. Deterministic: same seed, same figures.
import { writeFileSync } from "node:fs";
import { lowerBound, type Bound } from "./sim/bound.js";
import { barChart } from "./sim/chart.js";
import { simulate, type SimResult } from "./sim/daemon.js";
import { benchmarkGraphs, type SimGraph } from "./sim/graphs.js";
import { guixPolicy } from "./sim/guix-policy.js";
import { nixPolicy } from "./sim/nix-policy.js";
import { offloadPolicy } from "./sim/offload-policy.js";
import type { Policy } from "./sim/policy.js";
import { Rng } from "./sim/rng.js";
import { SITE, type SimSite } from "./sim/site.js";
import type { Row } from "./report.js";

export interface SchedulingOptions {
  seed: number;
  graphs: number;
  /** Where to write the chart, if anywhere. */
  chart?: string;
}

export interface GraphOutcome {
  graph: SimGraph;
  bound: Bound;
  results: { policy: string; result: SimResult }[];
}

const WITHIN_BOUND = 1.1;
const BETTER_THAN_NIX = 0.8;

function policies(graph: SimGraph): Policy[] {
  // Guix shuffles: a seed per graph keeps it reproducible.
  return [offloadPolicy(SITE), nixPolicy(SITE), guixPolicy(SITE, new Rng(graph.seed * 7919)), offloadPolicy(SITE, recordedDurations(graph))];
}

/**
 * What the hook's record of a previous build of the same graph says each derivation took:
 * the real durations, each off by up to ±30% (a rebuild is never timed the same).
 */
function recordedDurations(graph: SimGraph): Map<string, number> {
  const rng = new Rng(graph.seed * 104729);
  return new Map(graph.derivations.map((d) => [d.name, d.duration * (0.7 + 0.6 * rng.next())]));
}

export function runScheduling(options: SchedulingOptions): { rows: Row[]; outcomes: GraphOutcome[] } {
  const outcomes = benchmarkGraphs(options.seed, options.graphs).map((graph): GraphOutcome => ({
    graph,
    bound: lowerBound(graph, SITE),
    results: policies(graph).map((policy) => ({ policy: policy.name, result: simulate(graph, SITE, policy) })),
  }));
  const over = (value: number, bound: number) => `${value.toFixed(0)} s (+${((value / bound - 1) * 100).toFixed(0)}%)`;
  const rows = outcomes.map(({ graph, bound, results }): Row => {
    const [offload, nix, guix, withHistory] = results.map((r) => r.result.makespan) as [number, number, number, number];
    return {
      benchmark: "P6",
      measure: `${graph.name} (${graph.derivations.length} drvs), bound ${bound.value.toFixed(0)} s (${bound.limitedBy})`,
      offload: over(offload, bound.value),
      other: `Nix ${over(nix, bound.value)}; Guix ${over(guix, bound.value)}; offload with history ${over(withHistory, bound.value)}`,
      ratio: `${(offload / nix).toFixed(2)}× Nix`,
      target: `≤ +10% bound, ≤ 0.8× Nix`,
      met: offload <= WITHIN_BOUND * bound.value && offload <= BETTER_THAN_NIX * nix,
    };
  });
  // Geometric means: every graph weighs the same whatever its length.
  const geomean = (values: number[]) => Math.exp(values.reduce((sum, v) => sum + Math.log(v), 0) / values.length);
  const relative = (index: number) => geomean(outcomes.map((o) => o.results[index]!.result.makespan / o.bound.value));
  const vsNix = geomean(outcomes.map((o) => o.results[0]!.result.makespan / o.results[1]!.result.makespan));
  const historyVsNix = geomean(outcomes.map((o) => o.results[3]!.result.makespan / o.results[1]!.result.makespan));
  rows.push({
    benchmark: "P6",
    measure: `all ${outcomes.length} graphs: geometric mean of makespan / bound`,
    offload: `${relative(0).toFixed(2)}× bound`,
    other: `Nix ${relative(1).toFixed(2)}×; Guix ${relative(2).toFixed(2)}×`,
    ratio: `${vsNix.toFixed(2)}× Nix`,
    target: `≤ 1.10× bound, ≤ 0.8× Nix`,
    met: relative(0) <= WITHIN_BOUND && vsNix <= BETTER_THAN_NIX,
  });
  rows.push({
    benchmark: "P6",
    measure: `all ${outcomes.length} graphs, durations recorded by a previous build (±30%)`,
    offload: `${relative(3).toFixed(2)}× bound`,
    other: `Nix ${relative(1).toFixed(2)}×; Guix ${relative(2).toFixed(2)}×`,
    ratio: `${historyVsNix.toFixed(2)}× Nix`,
    target: `≤ 1.10× bound, ≤ 0.8× Nix`,
    met: relative(3) <= WITHIN_BOUND && historyVsNix <= BETTER_THAN_NIX,
  });
  if (options.chart) {
    const groups = outcomes.map((o) => ({ label: o.graph.name, bars: o.results.map((r) => ({ label: r.policy, value: r.result.makespan / o.bound.value })) }));
    writeFileSync(options.chart, barChart("P6: simulated makespan / lower bound (lower is better; 1.0 = the lower bound)", groups, "makespan ÷ lower bound"));
  }
  return { rows, outcomes };
}

/** Where each policy's time went, per graph: the lines docs/benchmarks.md explains the figures with. */
export function describeOutcomes(outcomes: readonly GraphOutcome[]): string[] {
  const lines: string[] = [];
  for (const { graph, bound, results } of outcomes) {
    lines.push(`${graph.name}: bound ${bound.value.toFixed(0)} s (critical path ${bound.criticalPath.toFixed(0)} s, work/capacity ${bound.work.toFixed(0)} s)`);
    for (const { policy, result } of results) {
      const machines = [...result.machines].map(([name, m]) => `${name} ${m.builds} builds/${m.busy.toFixed(0)} s`).join(", ");
      const worst = result.worstPlacement;
      lines.push(
        `  ${policy.padEnd(8)} ${result.makespan.toFixed(0).padStart(5)} s  ${machines}; ${result.postpones} postpones; ` +
          `idle remote slot-s: ${result.idle.postponed.toFixed(0)} while a build was postponed, ${result.idle.forLocalSlot.toFixed(0)} while one queued for a local slot; ` +
          (worst ? `worst placement ${worst.name} on ${worst.machine}: ${worst.ran.toFixed(0)} s instead of ${worst.fastest.toFixed(0)} s` : ""),
      );
    }
  }
  return lines;
}

/**
 * What-ifs that locate offload's distance from the bound: the same graphs with the slow
 * builder removed from the site, and with a near-zero poll interval. Each line: makespan / bound
 * (of the real site), per graph.
 */
export function whatIfs(options: SchedulingOptions): string[] {
  const variants: [string, SimSite][] = [
    ["as simulated", SITE],
    ["without the slow builder", { ...SITE, builders: SITE.builders.filter((b) => b.name !== "slow") }],
    ["poll interval 0.01 s", { ...SITE, pollInterval: 0.01 }],
  ];
  const graphs = benchmarkGraphs(options.seed, options.graphs);
  const lines = [`offload makespan / bound   ${graphs.map((g) => g.name.padStart(12)).join("")}`];
  for (const [name, site] of variants) {
    const cells = graphs.map((g) => (simulate(g, site, offloadPolicy(site)).makespan / lowerBound(g, SITE).value).toFixed(2).padStart(12));
    lines.push(`${name.padEnd(26)} ${cells.join("")}`);
  }
  return lines;
}
