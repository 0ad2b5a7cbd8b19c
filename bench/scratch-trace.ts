import { freshSalt, writeExpressions } from "./lib/derivations.js";
import { withLab } from "./lib/lab.js";
import { timedNixBuild } from "./lib/nix-build.js";
import { writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
const plain = { features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 2 };
await withLab("trace", { builders: 2, builderSpecs: [plain, plain], network: true, rootSshConfig: false }, async (bench) => {
  const { trivial } = writeExpressions(bench.work);
  for (let i = 0; i < 8; i++) {
    if (i === 2) for (const b of bench.lab.builders) writeFileSync(join(b.home, ".bashrc"), "sleep 0.5\n");
    const run = await timedNixBuild(bench, { kind: "offload", maxJobs: 0 }, [trivial, "--argstr", "salt", freshSalt("t"), "-vv"]);
    console.log(`--- ${new Date().toISOString()} ${Math.round(run.ms)} ms`);
    if (i >= 3) for (const line of run.lines) if (/offload/.test(line.text)) console.log(`${Math.round(line.at)} ${line.text.slice(0, 150)}`);
    await new Promise((r) => setTimeout(r, 2500));
  }
  console.log(readFileSync(join(bench.work, "state", "agent.log"), "utf8"));
});
