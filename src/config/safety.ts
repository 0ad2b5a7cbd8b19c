// The daemon runs machines.ts as root, so whoever can write it (or any directory above it,
// or any file it imports) owns the build machine. Refuse like sshd's StrictModes does.
import { realpathSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { OffloadError } from "../errors.js";

/**
 * Checks each file and every directory above it, both as named and after resolving
 * symlinks (whoever can swap a link is as dangerous as whoever can edit its target).
 * Throws on the first problem found.
 */
export function checkCodeFilesSafety(files: Iterable<string>): void {
  const owners = new Set([0, process.getuid?.() ?? 0]);
  const checked = new Set<string>();
  for (const file of files) {
    for (const start of new Set([file, realpathSync(file)])) {
      for (let path = start; !checked.has(path); path = dirname(path)) {
        checked.add(path);
        checkOne(file, path, owners);
        if (dirname(path) === path) break;
      }
    }
  }
}

function checkOne(file: string, path: string, owners: Set<number>): void {
  const stat = statSync(path);
  const kind = stat.isDirectory() ? "directory" : "file";
  if (!owners.has(stat.uid)) {
    throw new OffloadError(`refusing ${file}: ${kind} ${path} is owned by uid ${stat.uid}, not root or the invoking user`, {
      code: "config-unsafe",
      fix: `chown root ${path}`,
    });
  }
  if ((stat.mode & 0o022) !== 0) {
    const who = (stat.mode & 0o002) !== 0 ? "world" : "group";
    throw new OffloadError(`refusing ${file}: ${kind} ${path} is ${who}-writable, and this code runs as root`, {
      code: "config-unsafe",
      fix: `chmod go-w ${path}`,
    });
  }
}
