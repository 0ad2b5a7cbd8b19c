// Synthetic build graphs: DAGs of derivations with durations spanning two orders of
// magnitude, some requiring features, in the shapes real builds take (many leaves under a
// few joins; a toolchain chain everything hangs off; random layered packages; long chains).
// Every derivation has at least one remote machine of SITE that can build it.
import { Rng } from "./rng.js";

export interface SimDerivation {
  id: number;
  /** The daemon handles ready derivations in name order (its goal key), so names fix the order. */
  name: string;
  /** Seconds at speed 1. */
  duration: number;
  features: string[];
  deps: number[];
}

export interface SimGraph {
  name: string;
  seed: number;
  derivations: SimDerivation[];
}

class GraphBuilder {
  readonly derivations: SimDerivation[] = [];
  constructor(
    readonly rng: Rng,
    readonly prefix: string,
  ) {}

  add(duration: number, features: string[], deps: number[]): number {
    const id = this.derivations.length;
    this.derivations.push({ id, name: `${this.prefix}-${String(id).padStart(4, "0")}`, duration: Math.round(duration), features, deps: [...new Set(deps)] });
    return id;
  }

  /** Most builds need nothing special; some want big-parallel (the big ones) or kvm (VM tests). */
  features(big: boolean): string[] {
    if (big && this.rng.chance(0.5)) return ["big-parallel"];
    return this.rng.chance(0.05) ? ["kvm"] : [];
  }

  pick(from: number, to: number, count: number): number[] {
    return Array.from({ length: count }, () => this.rng.int(from, to));
  }
}

/** 100 independent leaves, 10 joins over 10 leaves each, one top. */
function wide(seed: number): SimGraph {
  const g = new GraphBuilder(new Rng(seed), "wide");
  const leaves = Array.from({ length: 100 }, () => g.add(g.rng.logUniform(10, 120), g.features(false), []));
  const joins = Array.from({ length: 10 }, () => {
    const big = g.rng.chance(0.3);
    return g.add(big ? g.rng.logUniform(200, 600) : g.rng.logUniform(30, 120), g.features(big), g.pick(0, leaves.length - 1, 10));
  });
  g.add(30, [], joins);
  return { name: `wide-${seed}`, seed, derivations: g.derivations };
}

/** A chain of 6 long big-parallel toolchain builds; 60 packages on random toolchain stages; 8 VM tests. */
function toolchain(seed: number): SimGraph {
  const g = new GraphBuilder(new Rng(seed), "tool");
  const chain: number[] = [];
  for (let i = 0; i < 6; i++) chain.push(g.add(g.rng.logUniform(300, 900), ["big-parallel"], chain.slice(-1)));
  const packages = Array.from({ length: 60 }, () => {
    const big = g.rng.chance(0.1);
    return g.add(big ? g.rng.logUniform(300, 900) : g.rng.logUniform(20, 300), g.features(big), [chain[g.rng.int(0, chain.length - 1)]!]);
  });
  for (let i = 0; i < 8; i++) g.add(g.rng.logUniform(60, 200), ["kvm"], g.pick(packages[0]!, packages.at(-1)!, 3));
  return { name: `toolchain-${seed}`, seed, derivations: g.derivations };
}

/** 150 packages, each on 0–3 of the 40 before it; 15% long builds, half of them big-parallel. */
function layered(seed: number): SimGraph {
  const g = new GraphBuilder(new Rng(seed), "pkg");
  for (let i = 0; i < 150; i++) {
    const big = g.rng.chance(0.15);
    const deps = i === 0 ? [] : g.pick(Math.max(0, i - 40), i - 1, g.rng.int(0, 3));
    g.add(big ? g.rng.logUniform(300, 1500) : g.rng.logUniform(5, 120), g.features(big), deps);
  }
  return { name: `layered-${seed}`, seed, derivations: g.derivations };
}

/** 10 chains of 12, each link now and then also depending on another chain's previous link. */
function chains(seed: number): SimGraph {
  const g = new GraphBuilder(new Rng(seed), "chain");
  let previous: number[] = [];
  for (let depth = 0; depth < 12; depth++) {
    previous = Array.from({ length: 10 }, (_, c) => {
      const deps = depth === 0 ? [] : [previous[c]!, ...(g.rng.chance(0.2) ? [previous[g.rng.int(0, 9)]!] : [])];
      const big = g.rng.chance(0.1);
      return g.add(big ? g.rng.logUniform(200, 600) : g.rng.logUniform(20, 200), g.features(big), deps);
    });
  }
  return { name: `chains-${seed}`, seed, derivations: g.derivations };
}

/** The graphs P6 replays; `count` of them, shapes taking turns, seeds from `seed` on. */
export function benchmarkGraphs(seed: number, count: number): SimGraph[] {
  const shapes = [wide, toolchain, layered, chains];
  return Array.from({ length: count }, (_, i) => shapes[i % shapes.length]!(seed + i));
}
