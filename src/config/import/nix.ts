// Nix 2.x machines: /etc/nix/machines or a `builders` value. Entries are separated by newlines
// and `;`, `#` comments run to the end of the line, `@FILE` includes another machines file,
// columns are whitespace-separated and `-` leaves one at its default (machines.cc).
import { dirname, isAbsolute, join, resolve } from "node:path";
import type { SourceLocation } from "../../errors.js";
import { importError, type ImportedMachine, type Warn } from "./model.js";
import { entryFromColumns, machineFromNixEntry, tokenize } from "./nix-entry.js";

/** Reads an included file; undefined when it does not exist. */
export type ReadFile = (path: string) => string | undefined;

/** Nix has no limit; this only stops include loops that a stack of files would not catch. */
const MAX_INCLUDE_DEPTH = 16;

export interface NixSource {
  text: string;
  /** As shown in messages. */
  file: string;
  /** Directory `@FILE` includes are relative to. */
  dir: string;
}

export function importNixMachines(source: NixSource, read: ReadFile, warn: Warn): ImportedMachine[] {
  return entries(source, read, [], warn);
}

function entries(source: NixSource, read: ReadFile, including: string[], warn: Warn): ImportedMachine[] {
  const machines: ImportedMachine[] = [];
  source.text.split("\n").forEach((rawLine, index) => {
    const line = rawLine.replace(/#.*/, "").replace(/\r$/, "");
    let offset = 0;
    for (const piece of line.split(";")) {
      const lead = piece.length - piece.trimStart().length;
      const entry = piece.trim();
      const at: SourceLocation = { file: source.file, line: index + 1, column: offset + lead + 1 };
      offset += piece.length + 1;
      if (entry === "") continue;
      if (entry.startsWith("@")) {
        machines.push(...include(entry.slice(1).trim(), at, source, read, including, warn));
        continue;
      }
      machines.push(machineFromNixEntry(entryFromColumns(tokenize(entry, at), entry, undefined), warn));
    }
  });
  return machines;
}

function include(path: string, at: SourceLocation, from: NixSource, read: ReadFile, including: string[], warn: Warn): ImportedMachine[] {
  if (path === "") throw importError(at, "@ must be followed by the path of a machines file");
  // Nix reads the path as given (relative to the daemon's directory); relative to the including file is what users mean.
  const full = resolve(from.dir, path);
  if (including.includes(full)) throw importError(at, `@${path} includes itself (through ${including.join(" -> ")})`);
  if (including.length >= MAX_INCLUDE_DEPTH) throw importError(at, `@${path}: includes nest deeper than ${MAX_INCLUDE_DEPTH}`);
  const text = read(full);
  // Nix skips a missing file silently; an import must not lose machines unseen.
  if (text === undefined) throw importError(at, `@${path}: ${full} does not exist`);
  // Shown relative to the including file as the user named that, so messages read like the config.
  const shown = isAbsolute(path) || from.file.startsWith("<") ? full : join(dirname(from.file), path);
  return entries({ text, file: shown, dir: dirname(full) }, read, [...including, full], warn);
}
