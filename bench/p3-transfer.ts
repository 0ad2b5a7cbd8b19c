// P3 transfer of a big input closure and a big output, offload vs raw ssh vs Nix's build-remote (see docs/benchmarks.md).
// Usage: npm run build && node scripts/run-ts.mjs bench/p3-transfer.ts [--big-mib N] [--small-files N] [--reps N] [--quick]
import { hasFlag, numberOption, progress, runAlone } from "./lib/cli.js";
import { measureTransfer } from "./lib/transfer.js";

const quick = hasFlag("--quick");
const bigMiB = numberOption("--big-mib", quick ? 64 : 256);
const smallFiles = numberOption("--small-files", 5000);
const repetitions = numberOption("--reps", quick ? 1 : 4); // even: each tool goes first as often
await runAlone("P3 transfer", () => measureTransfer({ bigMiB, smallFiles, repetitions, log: progress }));
