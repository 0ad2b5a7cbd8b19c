// P2 batch of 10 independent leaves on 2 slots, offload vs Nix's build-remote (see docs/benchmarks.md).
// Usage: npm run build && node scripts/run-ts.mjs bench/p2-batch.ts [--reps N] [--quick]
import { measureBatch } from "./lib/batch.js";
import { hasFlag, numberOption, progress, runAlone } from "./lib/cli.js";

const repetitions = numberOption("--reps", hasFlag("--quick") ? 1 : 3);
await runAlone("P2 batch", () => measureBatch({ repetitions, log: progress }));
