// Every benchmark of issue 6 (and GUIX, issue 10's offload vs guix offload; P7, issue 12's conditions users meet) in one run, one table at the end (see docs/benchmarks.md).
// Each brings up its own private lab and tears it down. --quick: fewer repetitions and a
// 64 MiB P3 input (not the target's 256 MiB). --only P1,P4: a subset.
// Usage: npm run bench [-- --quick] [-- --only P1,P3]
import { measureBatch } from "./lib/batch.js";
import { measureConditions } from "./lib/conditions.js";
import { hasFlag, progress } from "./lib/cli.js";
import { measureDecisionLatency } from "./lib/decision-latency.js";
import { measureGuix, type GuixMedians } from "./lib/guix.js";
import { measureOverhead } from "./lib/overhead.js";
import { machineLine, printRows, type Row } from "./lib/report.js";
import { checkNixPolicy } from "./lib/nix-policy-check.js";
import { runScheduling } from "./lib/scheduling.js";
import { measureTransfer } from "./lib/transfer.js";
import { PACKAGE_ROOT } from "../src/package-root.js";
import { join } from "node:path";

const quick = hasFlag("--quick");
const onlyAt = process.argv.indexOf("--only");
const only = onlyAt === -1 ? undefined : new Set(process.argv[onlyAt + 1]?.toUpperCase().split(","));

/** GUIX's medians, for P7's chart (GUIX runs first). */
let guix: GuixMedians | undefined;

const benchmarks: [string, () => Promise<Row[]>][] = [
  ["P1", () => measureOverhead({ repetitions: quick ? 5 : 10, log: progress })],
  ["P2", () => measureBatch({ repetitions: quick ? 1 : 3, log: progress })],
  ["P3", () => measureTransfer({ bigMiB: quick ? 64 : 256, smallFiles: 5000, repetitions: quick ? 1 : 4, log: progress })],
  ["P4", () => measureDecisionLatency({ tries: quick ? 100 : 500, starts: quick ? 10 : 30, accepts: quick ? 3 : 10, log: progress })],
  ["GUIX", () => measureGuix({ repetitions: quick ? 1 : 3, log: progress, medians: (medians) => (guix = medians) })],
  ["P6", async () => [...runScheduling({ seed: 1, graphs: 8, chart: join(PACKAGE_ROOT, "docs", "p6-makespans.svg") }).rows, ...(await checkNixPolicy())]],
  [
    "P7",
    async () =>
      (
        await measureConditions({
          trivialRepetitions: quick ? 3 : 5,
          batchRepetitions: quick ? 1 : 3,
          chart: join(PACKAGE_ROOT, "docs", "p7-conditions.svg"),
          guix,
          log: progress,
        })
      ).rows,
  ],
];

const started = Date.now();
const rows: Row[] = [];
const failed: string[] = [];
for (const [name, run] of benchmarks) {
  if (only && !only.has(name)) continue;
  progress(`${name}…`);
  try {
    rows.push(...(await run()));
  } catch (error) {
    // One broken benchmark must not hide the others' figures.
    failed.push(`${name} failed: ${error instanceof Error ? error.message : String(error)}`);
    progress(failed.at(-1)!);
  }
}
console.log(`offload benchmarks${quick ? " (--quick)" : ""} — ${machineLine()} — ${((Date.now() - started) / 60000).toFixed(1)} min`);
printRows(rows);
for (const line of failed) console.log(line);
if (failed.length > 0) process.exitCode = 1;
