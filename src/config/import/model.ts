// What every importer produces: machines as read from another tool's configuration, with
// comments for whatever did not carry over. render.ts writes them out as a machines.ts.
import { homedir } from "node:os";
import type { BuildMachineOptions } from "../../../types/index.js";
import { OffloadError, type SourceLocation } from "../../errors.js";
import { checkKeyFile } from "../../remote/key-file.js";
import { buildMachineFieldProblem } from "../validate.js";

export type Field = keyof BuildMachineOptions;

export const FORMATS = ["nix1", "nix", "nixos-json", "guix"] as const;
export type Format = (typeof FORMATS)[number];

export interface ImportedMachine {
  /** Where the machine is defined in the imported file. */
  at: SourceLocation;
  /** The definition as written, on one line: quoted above the record. */
  source: string;
  /** Only values offload accepts (see setField). */
  options: Partial<Record<Field, unknown>>;
  /** Comments written with the record: what offload cannot represent, TODOs. */
  notes: string[];
  /** A required field could not be read: the record is written commented out, for the user to finish. */
  incomplete: boolean;
}

export interface Imported {
  format: Format;
  machines: ImportedMachine[];
  /** Comments for the top of the file, about the whole import. */
  header: string[];
}

/** Reports a warning: one line on stderr, starting with the file:line:col it is about. */
export type Warn = (at: SourceLocation, message: string) => void;

/** Whether the machine becomes a record; otherwise it is written commented out, for the user to finish. */
export function isComplete(machine: ImportedMachine): boolean {
  return !machine.incomplete && machine.options.name !== undefined && machine.options.systems !== undefined;
}

export function newMachine(at: SourceLocation, source: string): ImportedMachine {
  return { at, source, options: {}, notes: [], incomplete: false };
}

/** What offload has no field for stays in the output as a comment, and the user hears about it. */
export function keepAsComment(machine: ImportedMachine, at: SourceLocation, text: string, warn: Warn): void {
  machine.notes.push(text);
  warn(at, text);
}

/**
 * Sets a field when offload accepts the value, so the output passes `offload check --static`;
 * a value the other tool took but offload refuses is kept as a comment instead. A key file
 * missing on this machine is still imported (the path is what the user configured), with a warning.
 */
export function setField(machine: ImportedMachine, field: Field, value: unknown, at: SourceLocation, warn: Warn): void {
  if (field === "privateKey" && typeof value === "string" && value.trim() !== "") {
    // ssh expands ~ in -i and IdentityFile; offload takes paths as they are. The daemon's ssh runs as root.
    const path = value.startsWith("~/") ? `${homedir()}${value.slice(1)}` : value;
    machine.options.privateKey = path;
    try {
      checkKeyFile(path);
    } catch (error) {
      warn(at, `${(error as Error).message} here, so \`offload check\` fails until that changes (or drop privateKey to use root's default key)`);
    }
    return;
  }
  const problem = buildMachineFieldProblem(field, value);
  if (problem) keepAsComment(machine, at, `${field} ${JSON.stringify(value)} not imported: it ${problem}`, warn);
  else machine.options[field] = value;
}

/** A malformed input: the import stops, nothing is written. */
export function importError(at: SourceLocation, message: string): OffloadError {
  return new OffloadError(message, { code: "import-invalid", location: at });
}
