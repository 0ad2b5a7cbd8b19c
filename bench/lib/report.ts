// What every benchmark returns and how the suite prints it: one row per figure, with the
// target it is held against, so `npm run bench` ends in a single table.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { formatTable } from "../../src/cli/table.js";

export interface Row {
  benchmark: string;
  measure: string;
  offload: string;
  /** Nix's build-remote (or whatever the row compares against), "" when nothing. */
  other: string;
  /** offload relative to the other, as the target states it ("0.42×", "5.1× faster"). */
  ratio: string;
  target: string;
  /** undefined: the row has no target of its own. */
  met?: boolean;
}

export function printRows(rows: readonly Row[]): void {
  const header = ["bench", "measure", "offload", "compared with", "ratio", "target", "met"];
  const cells = rows.map((r) => [r.benchmark, r.measure, r.offload, r.other, r.ratio, r.target, r.met === undefined ? "" : r.met ? "yes" : "NO"]);
  console.log(formatTable(header, cells));
}

/** Date, CPU, versions, load: what a figure needs to be compared with another run's. */
export function machineLine(): string {
  const model = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? cpus()[0]?.model ?? "unknown CPU";
  const nix = execFileSync("nix-build", ["--version"], { encoding: "utf8" }).trim();
  // Other work on the machine skews timings: the load average says how much there was.
  const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  return `${new Date().toISOString().replace(/\.\d+Z$/, "Z")}, nproc ${cpus().length}, ${model}, ${nix}, node ${process.version}, loadavg ${load}`;
}

export const ms = (value: number) => `${value.toFixed(value < 10 ? 1 : 0)} ms`;
export const seconds = (valueMs: number) => `${(valueMs / 1000).toFixed(2)} s`;
