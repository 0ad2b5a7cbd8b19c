// What offload reads of a process from /proc/PID/stat: its state (Z: a zombie, dead but not
// yet reaped), its parent, and when it started (with the pid, the process's identity).
import { readFileSync } from "node:fs";

export interface ProcStat {
  state: string;
  ppid: number;
  /** Clock ticks after boot. */
  startTicks: number;
}

/** The fields of a /proc/PID/stat line; the command name may hold spaces and parentheses. */
export function parseProcStat(text: string): ProcStat {
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is stat's 3rd field (state): ppid is the 4th, starttime the 22nd.
  return { state: fields[0] ?? "", ppid: Number(fields[1]), startTicks: Number(fields[19]) };
}

/** The process's stat, or undefined when there is no such process (it exited). */
export function readProcStat(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}
