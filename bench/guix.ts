// GUIX: offload as guix-daemon's build hook vs Guix's own `guix offload`, same two Guix
// build machines, alternating (see docs/benchmarks.md, "GUIX").
// Usage: npm run build && node scripts/run-ts.mjs bench/guix.ts [--reps N] [--quick]
import { hasFlag, numberOption, progress, runAlone } from "./lib/cli.js";
import { measureGuix } from "./lib/guix.js";

const repetitions = numberOption("--reps", hasFlag("--quick") ? 1 : 3);
await runAlone("GUIX offload vs guix offload", () => measureGuix({ repetitions, log: progress }));
