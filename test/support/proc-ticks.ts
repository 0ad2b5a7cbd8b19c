// When processes started, in clock ticks since boot (/proc/<pid>/stat's unit): namespace
// numbers are reused at once, so a leftover check tells this test's processes from those of a
// host another test made afterwards by their start time.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }));

export function ticksSinceBoot(): number {
  return Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]) * CLOCK_TICKS;
}

/** When `pid` started, in clock ticks since boot; undefined when it is gone. */
export function startTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // After "pid (comm) ": state is field 3, starttime field 22.
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
  } catch {
    return undefined;
  }
}
