// Evidence that the simulator's Nix 2.8 policy is Nix's: three 4-second builds through the
// real Nix 2.8 build-remote on a lab with a speed-2 builder of 2 slots and a speed-1 builder
// of 1 slot, against the placements nixPolicy predicts for the same tries. The case is chosen
// where the arithmetic matters: with one build running on the speed-2 builder its
// load / speedFactor is 1/2, which is 0 in 2.8's integer division (a tie with the idle
// builder, broken by speed: the busy fast one) but 0.5 in floating point (the idle slow one).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { LabBuilder } from "../../src/lab/index.js";
import { withLab } from "./lab.js";
import { timedNixBuild } from "./nix-build.js";
import type { Row } from "./report.js";
import type { SimDerivation } from "./sim/graphs.js";
import { nixPolicy } from "./sim/nix-policy.js";
import type { SimSite } from "./sim/site.js";

const BUILDS = 3;
const SLEEPERS = `{ salt }: builtins.genList (i: derivation {
  name = "sleeper-\${toString i}"; inherit salt;
  system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "/bin/sleep 4; echo $salt > $out" ];
}) ${BUILDS}
`;

/** What nixPolicy answers to the daemon's tries, one per build in name order, nothing finishing meanwhile (4 s builds). */
function predicted(builders: LabBuilder[]): string[] {
  const site: SimSite = {
    system: builders[0]!.system,
    local: { speed: 1, maxJobs: 0, features: [] },
    builders: builders.map((b) => ({
      name: b.name,
      speed: b.speed,
      slots: b.parallelBuilds,
      cores: b.parallelBuilds,
      features: b.features,
      mandatoryFeatures: b.mandatoryFeatures,
    })),
    pollInterval: 5,
  };
  const policy = nixPolicy(site);
  const running = new Map(builders.map((b) => [b.name, 0]));
  return Array.from({ length: BUILDS }, (_, i) => {
    const derivation: SimDerivation = { id: i, name: `sleeper-${i}`, duration: 4, features: [], deps: [] };
    const reply = policy.decide({ derivation, amWilling: false }, { running: (m) => running.get(m)!, now: () => 0, builds: () => [] });
    if (reply.verdict !== "accept") return reply.verdict;
    running.set(reply.machine, running.get(reply.machine)! + 1);
    return reply.machine;
  });
}

export function checkNixPolicy(): Promise<Row[]> {
  const specs = [
    { features: [], mandatoryFeatures: [], speed: 2, parallelBuilds: 2 },
    { features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 1 },
  ];
  return withLab("nix-policy", { builders: 2, builderSpecs: specs }, async (bench) => {
    const file = join(bench.work, "sleepers.nix");
    writeFileSync(file, SLEEPERS, { mode: 0o644 });
    // -v: Nix then says "building '<drv>' on 'ssh://<alias>'" for each placement.
    const run = await timedNixBuild(bench, { kind: "nix" }, [file, "--argstr", "salt", `${process.pid}-${Date.now()}`, "-v"]);
    const real = new Map<string, string>();
    for (const { text } of run.lines) {
      const match = /building '[^']*-(sleeper-\d+)\.drv' on 'ssh:\/\/([^']+)'/.exec(text);
      if (match) real.set(match[1]!, match[2]!);
    }
    const actual = Array.from({ length: BUILDS }, (_, i) => real.get(`sleeper-${i}`) ?? "?");
    const expected = predicted(bench.lab.builders);
    const short = (names: string[]) => names.map((name) => name.replace(`${bench.lab.prefix}-`, "")).join(", ");
    return [
      {
        benchmark: "P6",
        measure: `simulated Nix policy vs real Nix 2.8: ${BUILDS} builds on (speed 2, 2 slots) + (speed 1, 1 slot)`,
        offload: "",
        other: `real: ${short(actual)}; simulated: ${short(expected)}`,
        ratio: "",
        target: "the same placements",
        met: actual.join() === expected.join(),
      },
    ];
  });
}
