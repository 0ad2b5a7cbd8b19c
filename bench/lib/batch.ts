// P2, a batch: 10 independent trivial leaves in one nix-build, two build slots in total
// (two builders of one slot each), through Nix's build-remote and through offload twice:
// remote only, and with the local machine competing (a localMachine() record, nix.conf's max-jobs).
import { freshSalt, writeExpressions } from "./derivations.js";
import { configVariant, withLab } from "./lab.js";
import { timedNixBuild, type Builder, type TimedBuild } from "./nix-build.js";
import { seconds, type Row } from "./report.js";
import { median } from "./stats.js";

export interface BatchOptions {
  repetitions: number;
  log: (line: string) => void;
}

const LEAVES = 10;
const TARGET = 4;
/** Faster than the lab's speed-1 builders, so a free local slot wins (what a developer's laptop often is). */
const LOCAL_SPEED = 2;

/** Where offload built each leaf, from its "built on <machine>" lines; the rest were built locally. */
function placement(run: TimedBuild): string {
  const remote = run.lines.filter((line) => / built on \S+, signature/.test(line.text)).length;
  return `${remote} remote, ${LEAVES - remote} local`;
}

export function measureBatch(options: BatchOptions): Promise<Row[]> {
  const specs = [
    { features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 1 },
    { features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 1 },
  ];
  return withLab("p2", { builders: 2, builderSpecs: specs }, async (bench) => {
    const { leaves } = writeExpressions(bench.work);
    const withLocal = configVariant(bench, "with-local", [`localMachine({ speed: ${LOCAL_SPEED} })`]);
    const variants: [string, Builder][] = [
      ["offload, remote only (max-jobs 0)", { kind: "offload", maxJobs: 0 }],
      [`offload + local machine (speed ${LOCAL_SPEED}, nix.conf max-jobs)`, { kind: "offload", configDir: withLocal }],
      ["nix", { kind: "nix" }],
    ];
    const build = (builder: Builder, tag: string) =>
      timedNixBuild(bench, builder, [leaves, "--argstr", "salt", freshSalt(tag), "--arg", "count", String(LEAVES)]);
    // Not counted: warms offload's config caches, ssh and Nix.
    for (const [, builder] of variants) await build(builder, "warm");
    const times = variants.map(() => [] as number[]);
    const placements: string[] = [];
    for (let i = 0; i < options.repetitions; i++) {
      for (let k = 0; k < variants.length; k++) {
        const v = (k + i) % variants.length; // rotate who goes first
        const run = await build(variants[v]![1], `p2-${v}`);
        times[v]!.push(run.ms);
        if (v === 1) placements.push(placement(run));
      }
      options.log(`P2 ${i + 1}/${options.repetitions}: ${variants.map(([name], v) => `${name.split(" (")[0]} ${seconds(times[v]!.at(-1)!)}`).join(", ")}`);
    }
    const nix = median(times[2]!);
    return variants.slice(0, 2).map(([name], v): Row => {
      const offload = median(times[v]!);
      return {
        benchmark: "P2",
        measure: `${LEAVES} leaves, 2 slots: ${name}${v === 1 ? `; built ${[...new Set(placements)].join(" or ")}` : ""}`,
        offload: seconds(offload),
        other: `Nix ${seconds(nix)}`,
        ratio: `${(nix / offload).toFixed(2)}× faster`,
        target: `≥ ${TARGET}× faster`,
        met: nix / offload >= TARGET,
      };
    });
  });
}
