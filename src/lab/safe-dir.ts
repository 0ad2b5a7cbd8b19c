// offload refuses a machines.ts when it or any directory above it is writable by group or
// others (it runs as root). A lab under /tmp would be written fine and then refused, so
// refuse the directory before writing anything.
import { stat } from "node:fs/promises";
import path from "node:path";
import { OffloadError } from "../errors.js";

/** Checks the parents of `dir`; `up` gives the directory itself mode 0755. */
export async function assertSafeLabDir(dir: string): Promise<void> {
  for (let current = path.dirname(dir); ; current = path.dirname(current)) {
    const info = await stat(current).catch(() => undefined);
    if (info !== undefined && (info.uid !== 0 || (info.mode & 0o022) !== 0)) {
      const problem = info.uid !== 0 ? `is owned by uid ${info.uid}` : `is writable by group or others (mode ${(info.mode & 0o7777).toString(8)})`;
      throw new OffloadError(`cannot put a lab in ${dir}: ${current} ${problem}, so offload would refuse its machines.ts`, {
        code: "lab-unsafe-dir",
        fix: "choose a --dir whose parents are root's and not group/world-writable, e.g. /var/lib/offload-lab (not under /tmp)",
      });
    }
    if (path.dirname(current) === current) return;
  }
}
