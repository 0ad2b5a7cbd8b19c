// The few command-line options the benchmarks share, and how a benchmark run alone ends:
// its rows as a table, a one-line message (not a stack trace) when it fails.
import { machineLine, printRows, type Row } from "./report.js";

export function hasFlag(name: string): boolean {
  return process.argv.includes(name);
}

/** `--name N`: a positive number, or `fallback` when absent. */
export function numberOption(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  if (at === -1) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!(value > 0)) {
    console.error(`${name} needs a positive number, got ${JSON.stringify(process.argv[at + 1] ?? "")}`);
    process.exit(2);
  }
  return value;
}

export const progress = (line: string) => process.stderr.write(`${line}\n`);

export async function runAlone(title: string, run: () => Promise<Row[]>): Promise<void> {
  try {
    const rows = await run();
    console.log(`${title} — ${machineLine()}`);
    printRows(rows);
  } catch (error) {
    console.error(`${title} failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  }
}
