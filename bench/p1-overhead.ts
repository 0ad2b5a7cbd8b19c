// P1 per-build overhead, offload vs Nix's build-remote (see docs/benchmarks.md).
// Usage: npm run build && node scripts/run-ts.mjs bench/p1-overhead.ts [--reps N] [--quick]
import { hasFlag, numberOption, progress, runAlone } from "./lib/cli.js";
import { measureOverhead } from "./lib/overhead.js";

const repetitions = numberOption("--reps", hasFlag("--quick") ? 5 : 10);
await runAlone("P1 per-build overhead", () => measureOverhead({ repetitions, log: progress }));
