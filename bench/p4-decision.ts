// P4 decision latency of offload-hook for a 100-machine config (see docs/benchmarks.md).
// Usage: npm run build && node scripts/run-ts.mjs bench/p4-decision.ts [--tries N] [--starts N] [--quick]
import { hasFlag, numberOption, progress, runAlone } from "./lib/cli.js";
import { measureDecisionLatency } from "./lib/decision-latency.js";

const quick = hasFlag("--quick");
const tries = numberOption("--tries", quick ? 100 : 500);
const starts = numberOption("--starts", quick ? 10 : 30);
const accepts = numberOption("--accepts", quick ? 3 : 10);
await runAlone("P4 decision latency", () => measureDecisionLatency({ tries, starts, accepts, log: progress }));
