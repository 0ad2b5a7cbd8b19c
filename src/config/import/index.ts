// `offload import`'s engine: detect the format, read the machines, apply ssh_config and
// known_hosts, and write a machines.ts. Pure apart from the files it is told to read.
import { formatLocation } from "../../errors.js";
import { importGuixMachines } from "./guix.js";
import { isComplete, keepAsComment, type Format, type Imported, type ImportedMachine, type Warn } from "./model.js";
import { importNixMachines, type ReadFile } from "./nix.js";
import { importNix1RemoteSystems } from "./nix1.js";
import { importNixosMachines } from "./nixos-json.js";
import { renderMachinesTs } from "./render.js";
import { applySshSources, type SshSources } from "./ssh-sources.js";

export interface ImportOptions extends SshSources {
  /** The format; detected from the text when undefined. */
  from?: Format;
  /** The input as shown in comments and messages ("<stdin>" for standard input). */
  file: string;
  /** Directory that `@FILE` includes of a Nix machines file are relative to. */
  dir: string;
  read: ReadFile;
  warn: Warn;
}

export interface ImportOutput {
  format: Format;
  machines: number;
  /** The machines.ts. */
  text: string;
}

export function importMachines(text: string, options: ImportOptions): ImportOutput {
  const format = options.from ?? detectFormat(text);
  const { file, warn } = options;
  const machines = (() => {
    switch (format) {
      case "nix1":
        return importNix1RemoteSystems(text, file, warn);
      case "nix":
        return importNixMachines({ text, file, dir: options.dir }, options.read, warn);
      case "nixos-json":
        return importNixosMachines(text, file, warn);
      case "guix":
        return importGuixMachines(text, file, warn);
    }
  })();
  if (options.sshConfig !== undefined || options.knownHosts.length > 0) applySshSources(machines, options, warn);
  setAsideDuplicates(machines, warn);
  const imported: Imported = { format, machines, header: format === "guix" ? GUIX_HEADER : [] };
  return { format, machines: machines.filter(isComplete).length, text: renderMachinesTs(imported, file) };
}

const GUIX_HEADER = [
  'These machines come from Guix, so they are daemon: "guix": guix-daemon\'s builds go to them once',
  "its GUIX is offload's bin/offload-guix (README, Guix); Nix's builds do not.",
];

/**
 * Which format a text is in: JSON starts with [ or {, Scheme with ( ' or ` after its comments, and
 * the rest are machines lines. Those are read as Nix 2.x's, which also reads every Nix 1.x
 * line that has its max jobs column the same way (--from nix1 for one that lacks it).
 */
export function detectFormat(text: string): Format {
  const start = text.replace(/^(\s+|;[^\n]*|#\|[\s\S]*?\|#|#![\s\S]*?!#)+/, "");
  if (start.startsWith("[") || start.startsWith("{")) return "nixos-json";
  if (/^['`(]/.test(start)) return "guix";
  return "nix";
}

/** offload identifies machines by name: a second machine of the same name waits, commented out. */
function setAsideDuplicates(machines: ImportedMachine[], warn: Warn): void {
  const first = new Map<unknown, ImportedMachine>();
  for (const machine of machines) {
    const name = machine.options.name;
    if (!isComplete(machine)) continue;
    const earlier = first.get(name);
    if (!earlier) {
      first.set(name, machine);
      continue;
    }
    machine.incomplete = true;
    keepAsComment(
      machine,
      machine.at,
      `${JSON.stringify(name)} is already the machine of ${formatLocation(earlier.at)}: offload names machines uniquely; merge the two, or name this one by an ssh_config alias`,
      warn,
    );
  }
}
