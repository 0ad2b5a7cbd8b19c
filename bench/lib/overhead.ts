// P1, per-build overhead: one trivial derivation built again and again (fresh salt each
// time) through offload-hook and through Nix's build-remote, alternating, on the same
// loopback builder; plus the same build locally with no hook, the floor both pay anyway.
import { freshSalt, writeExpressions } from "./derivations.js";
import { sshArgs } from "../../src/lab/index.js";
import { withLab } from "./lab.js";
import { timedNixBuild, type Builder } from "./nix-build.js";
import { ms, type Row } from "./report.js";
import { median } from "./stats.js";
import { timedCommand } from "./timed.js";

export interface OverheadOptions {
  repetitions: number;
  log: (line: string) => void;
}

const TARGET = 0.3;

export function measureOverhead(options: OverheadOptions): Promise<Row[]> {
  // One plain builder with one slot: both tools must use the same machine every time.
  return withLab("p1", { builders: 1, builderSpecs: [{ features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 1 }] }, async (bench) => {
    const { trivial } = writeExpressions(bench.work);
    const builders: Record<"offload" | "nix" | "local", Builder> = { offload: { kind: "offload", maxJobs: 0 }, nix: { kind: "nix" }, local: { kind: "local" } };
    // "ssh": `ssh <alias> true`, one connection's cost, which Nix pays per build.
    const times: Record<keyof typeof builders | "ssh", number[]> = { offload: [], nix: [], local: [], ssh: [] };
    const connect = () => timedCommand("ssh", sshArgs(bench.lab, bench.lab.builders[0]!, "true"));
    const order = Object.keys(builders) as (keyof typeof builders)[];
    // Not in the medians: compiles offload's config cache, starts its agent (which keeps SSH
    // connections between builds), warms ssh, Nix and the page cache for all three. Reported apart.
    const first: Partial<Record<keyof typeof builders, number>> = {};
    for (const kind of order) first[kind] = (await timedNixBuild(bench, builders[kind], [trivial, "--argstr", "salt", freshSalt("warm")])).ms;
    for (let i = 0; i < options.repetitions; i++) {
      // Rotating who goes first keeps any drift (caches, CPU frequency) from favouring one side.
      for (const kind of [...order.slice(i % 3), ...order.slice(0, i % 3)]) {
        const run = await timedNixBuild(bench, builders[kind], [trivial, "--argstr", "salt", freshSalt(`p1-${kind}`)]);
        times[kind].push(run.ms);
      }
      times.ssh.push(await connect());
      options.log(`P1 ${i + 1}/${options.repetitions}: offload ${ms(times.offload.at(-1)!)}, nix ${ms(times.nix.at(-1)!)}, local ${ms(times.local.at(-1)!)}`);
    }
    const [offload, nix, floor] = [median(times.offload), median(times.nix), median(times.local)];
    const ratio = (offload - floor) / (nix - floor);
    return [
      {
        benchmark: "P1",
        measure: `trivial build, median of ${options.repetitions}`,
        offload: ms(offload),
        other: `Nix ${ms(nix)}`,
        ratio: `${(offload / nix).toFixed(2)}×`,
        target: `≤ ${TARGET}× Nix`,
        met: offload / nix <= TARGET,
      },
      {
        benchmark: "P1",
        measure: "first build after lab setup (offload: compiles the config, starts its agent)",
        offload: ms(first.offload!),
        other: `Nix ${ms(first.nix!)}`,
        ratio: `${(first.offload! / first.nix!).toFixed(2)}×`,
        target: "",
      },
      { benchmark: "P1", measure: "local build, no builders (floor)", offload: "", other: ms(floor), ratio: "", target: "" },
      { benchmark: "P1", measure: "one ssh connection (ssh <alias> true), for scale", offload: "", other: ms(median(times.ssh)), ratio: "", target: "" },
      {
        benchmark: "P1",
        measure: "overhead = median − floor",
        offload: ms(offload - floor),
        other: `Nix ${ms(nix - floor)}`,
        ratio: `${ratio.toFixed(2)}×`,
        target: `≤ ${TARGET}× Nix`,
        met: ratio <= TARGET,
      },
    ];
  });
}
