// P6 scheduling simulator: offload's selectMachine vs Nix 2.8's and Guix's policies on
// synthetic build graphs, against a lower bound (see docs/benchmarks.md for the model).
// Usage: node scripts/run-ts.mjs bench/simulate.ts [--seed N] [--graphs N] [--chart FILE.svg] [--details] [--what-if] [--check-nix]
// --check-nix: also compares the simulated Nix policy with the real Nix 2.8 on a lab (needs root).
import { hasFlag, numberOption, runAlone } from "./lib/cli.js";
import { checkNixPolicy } from "./lib/nix-policy-check.js";
import { describeOutcomes, runScheduling, whatIfs } from "./lib/scheduling.js";

const at = process.argv.indexOf("--chart");
const options = { seed: numberOption("--seed", 1), graphs: numberOption("--graphs", 8), chart: at === -1 ? undefined : process.argv[at + 1] };
await runAlone("P6 scheduling (simulated)", async () => {
  const { rows, outcomes } = runScheduling(options);
  if (hasFlag("--details")) for (const line of describeOutcomes(outcomes)) console.log(line);
  if (hasFlag("--what-if")) for (const line of whatIfs(options)) console.log(line);
  return hasFlag("--check-nix") ? [...rows, ...(await checkNixPolicy())] : rows;
});
