// The daemon runs machines.ts as root, so whoever can write it (or any directory above it,
// or any file it imports) owns the build machine. Refuse like sshd's StrictModes does.
import { OffloadError } from "../errors.js";
import { unsafePathIn } from "../files/safety.js";

/** Checks each file and every directory above it (files/safety.ts); throws on the first problem found. */
export function checkCodeFilesSafety(files: Iterable<string>): void {
  for (const file of files) {
    const problem = unsafePathIn([file]);
    if (!problem) continue;
    const why = problem.problem === "owner" ? `is ${problem.detail}, not root or the invoking user` : `is ${problem.detail}, and this code runs as root`;
    throw new OffloadError(`refusing ${file}: ${problem.kind} ${problem.path} ${why}`, { code: "config-unsafe", fix: problem.fix });
  }
}
