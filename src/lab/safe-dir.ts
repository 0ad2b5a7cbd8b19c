// offload refuses a machines.ts when it or any directory above it is writable by group or
// others (it runs as root). A lab under /tmp would be written fine and then refused, so
// refuse the directory before writing anything.
import path from "node:path";
import { OffloadError } from "../errors.js";
import { pathProblem } from "../files/safety.js";

/** Checks the parents of `dir` (root's, not group/world-writable); `up` gives the directory itself mode 0755. */
export async function assertSafeLabDir(dir: string): Promise<void> {
  for (let current = path.dirname(dir); ; current = path.dirname(current)) {
    const problem = pathProblem(current, new Set([0]));
    if (problem) {
      const what = problem.problem === "owner" ? `is ${problem.detail}` : `is writable by group or others (mode ${problem.mode.toString(8)})`;
      throw new OffloadError(`cannot put a lab in ${dir}: ${current} ${what}, so offload would refuse its machines.ts`, {
        code: "lab-unsafe-dir",
        fix: "choose a --dir whose parents are root's and not group/world-writable, e.g. /var/lib/offload-lab (not under /tmp)",
      });
    }
    if (path.dirname(current) === current) return;
  }
}
