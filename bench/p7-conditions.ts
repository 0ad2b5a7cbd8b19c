// P7 conditions a user meets (issue 12): offload vs Nix 2.8's and Nix 2.34's build-remote in
// a fast lab, behind a slow login shell, over 20 ms / 100 Mbit/s, and on busy builders.
// Usage: npm run build && node scripts/run-ts.mjs bench/p7-conditions.ts [--reps N] [--batch-reps N] [--quick] [--only a,b,c,d-hog,d-own] [--chart FILE.svg]
import { hasFlag, numberOption, progress, runAlone } from "./lib/cli.js";
import { measureConditions } from "./lib/conditions.js";

const quick = hasFlag("--quick");
const at = (name: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
await runAlone("P7 conditions", async () => {
  const { rows, results } = await measureConditions({
    trivialRepetitions: numberOption("--reps", quick ? 3 : 5),
    batchRepetitions: numberOption("--batch-reps", quick ? 1 : 3),
    only: at("--only") === undefined ? undefined : new Set(at("--only")!.split(",")),
    chart: at("--chart"),
    log: progress,
  });
  for (const result of results) for (const note of result.notes) console.log(`${result.key}: ${note}`);
  for (const result of results)
    console.log(
      `${result.key}: first build in this condition: ${Object.entries(result.first)
        .map(([tool, value]) => `${tool} ${Math.round(value)} ms`)
        .join(", ")}`,
    );
  return rows;
});
