// Nix 1.x remote-systems.conf ($NIX_REMOTE_SYSTEMS, read by build-remote.pl): one machine per
// line, `#` comments, columns `user@host systems key maxJobs [speed [features [mandatory]]]`.
// No `;`, no includes, no host key column; the host is passed to ssh as is (aliases work).
import type { ImportedMachine, Warn } from "./model.js";
import { entryFromColumns, machineFromNixEntry, tokenize } from "./nix-entry.js";

export function importNix1RemoteSystems(text: string, file: string, warn: Warn): ImportedMachine[] {
  return text.split("\n").flatMap((rawLine, index) => {
    const line = rawLine.replace(/#.*/, "").trimEnd();
    if (line.trim() === "") return [];
    const tokens = tokenize(line, { file, line: index + 1, column: 1 });
    // build-remote.pl took int() of a missing max jobs: 0, a machine it never used.
    return [machineFromNixEntry(entryFromColumns(tokens, line.trim(), 0), warn)];
  });
}
