// Step 5 of loading: check every record the config produced, field by field, and report
// each problem at the record or field that causes it. Checks what types cannot: values,
// spreads and computed records, files on disk, and records not made by buildMachine().
import type { BuildMachine, BuildMachineOptions, LocalMachine, LocalMachineOptions } from "../../types/index.js";
import { OffloadError, type SourceLocation } from "../errors.js";
import { parseGuixPublicKey } from "../guix/keys.js";
import { parsePublicKey } from "../nix/keys.js";
import { parseOpenSshPublicKey } from "../remote/host-keys.js";
import { checkKeyFile } from "../remote/key-file.js";
import { originOf } from "./records.js";
import type { RecordLocations } from "./typecheck.js";

export interface Machines {
  machines: BuildMachine[];
  local?: LocalMachine;
}

type Check = (value: unknown) => string | undefined;

const FEATURE = /^[A-Za-z0-9][A-Za-z0-9_.+-]*$/;
const SYSTEM = /^[A-Za-z0-9_]+-[A-Za-z0-9_]+$/;

const string: Check = (v) => (typeof v === "string" && v.trim() !== "" ? undefined : "must be a non-empty string");
const boolean: Check = (v) => (typeof v === "boolean" ? undefined : "must be true or false");
const positive: Check = (v) => (typeof v === "number" && Number.isFinite(v) && v > 0 ? undefined : "must be a positive finite number");
const positiveInteger: Check = (v) => (Number.isInteger(v) && (v as number) > 0 ? undefined : "must be a positive integer");
const features: Check = (v) => {
  if (!Array.isArray(v)) return "must be an array of feature names";
  const bad = v.find((f) => typeof f !== "string" || !FEATURE.test(f));
  return bad === undefined ? undefined : `has an ill-formed feature name ${JSON.stringify(bad)} (letters, digits and _ . + - only)`;
};
const throwsToText =
  (parse: (v: string) => unknown): Check =>
  (v) => {
    if (typeof v !== "string") return "must be a string";
    try {
      parse(v);
      return undefined;
    } catch (error) {
      // The fix travels in the same line: a config problem is reported as text.
      const fix = error instanceof OffloadError ? error.fix : undefined;
      return `${(error as Error).message}${fix ? `; fix: ${fix}` : ""}`;
    }
  };

/** Every field a record may have, with its check. Unlisted fields are rejected. */
const BUILD_MACHINE_FIELDS: Record<keyof BuildMachineOptions, Check> = {
  name: (v) => string(v) ?? (/[\s/]/.test(v as string) ? "must not contain spaces or slashes" : undefined),
  host: (v) => string(v) ?? (/\s/.test(v as string) ? "must not contain spaces" : undefined),
  port: (v) => (Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535 ? undefined : "must be an integer from 1 to 65535"),
  daemon: (v) => (v === "nix" || v === "guix" ? undefined : `must be "nix" or "guix"`),
  user: string,
  systems: (v) => {
    if (!Array.isArray(v) || v.length === 0) return 'must be a non-empty array of system types such as "x86_64-linux"';
    const bad = v.find((s) => typeof s !== "string" || !SYSTEM.test(s));
    return bad === undefined ? undefined : `has ${JSON.stringify(bad)}, which is not a system type of the form "arch-os" (e.g. "x86_64-linux")`;
  },
  hostKey: throwsToText(parseOpenSshPublicKey),
  privateKey: (v) => string(v) ?? throwsToText(checkKeyFile)(v),
  parallelBuilds: positiveInteger,
  speed: positive,
  features,
  mandatoryFeatures: features,
  overloadThreshold: (v) => (v === null || (typeof v === "number" && v > 0 && v <= 1) ? undefined : "must be a number in (0, 1], or null to ignore load"),
  remoteStore: (v) => string(v),
  // Which format is right depends on `daemon`: checked with the whole record (signingKeyProblem).
  signingKey: (v) => string(v),
  useSubstitutes: boolean,
  connectTimeout: positive,
  enabled: boolean,
};

/** A Nix machine signs with a Nix key (`name:base64`), a Guix machine with a Guix key (an S-expression). */
function signingKeyProblem(key: string, daemon: BuildMachine["daemon"]): string | undefined {
  if (daemon !== "guix") {
    if (key.trimStart().startsWith("("))
      return `this is a Guix key, but the machine's daemon is "nix"; a Nix machine's key is "name:base64" (its nix-store --generate-binary-cache-key public key), or set daemon: "guix"`;
    return throwsToText((v) => parsePublicKey(v))(key);
  }
  return throwsToText((v) => parseGuixPublicKey(v, "signingKey"))(key);
}

/** Why `value` cannot be `field` of a buildMachine() record, or undefined (e.g. for `offload import`). */
export function buildMachineFieldProblem(field: keyof BuildMachineOptions, value: unknown, daemon: BuildMachine["daemon"] = "nix"): string | undefined {
  return BUILD_MACHINE_FIELDS[field](value) ?? (field === "signingKey" ? signingKeyProblem(value as string, daemon) : undefined);
}

const LOCAL_MACHINE_FIELDS: Record<keyof LocalMachineOptions, Check> = {
  speed: positive,
  features,
  enabled: boolean,
};

export function validateMachines(
  configPath: string,
  value: unknown,
  locate: (line: number, column: number) => SourceLocation | undefined,
  locations: RecordLocations,
): Machines {
  if (!Array.isArray(value)) {
    throw new OffloadError(`the default export of ${configPath} must be an array of machines, not ${describe(value)}`, {
      code: "config-invalid",
      fix: "export default [ buildMachine({ ... }), ... ]",
    });
  }
  const problems: OffloadError[] = [];
  const machines: BuildMachine[] = [];
  const names = new Map<string, SourceLocation | undefined>();
  let local: LocalMachine | undefined;

  value.forEach((record: unknown, index) => {
    const origin = originOf(record);
    const call = origin?.site ? locate(origin.site.line, origin.site.column) : undefined;
    const fieldsAt = call ? fieldLocations(locations, call) : {};
    const problem = (message: string, field?: string, fix?: string) =>
      problems.push(new OffloadError(message, { code: "config-invalid", location: (field && fieldsAt[field]) || call, fix }));

    if (!origin) {
      problem(
        `element ${index} of the default export is ${describe(record)}, not a machine record`,
        undefined,
        "make every element a buildMachine({ ... }) or localMachine({ ... }) call",
      );
      return;
    }
    const machine = record as BuildMachine | LocalMachine;
    const label =
      machine.kind === "build-machine" ? `machine ${typeof machine.name === "string" ? JSON.stringify(machine.name) : `#${index}`}` : "localMachine";
    const options = origin.options;
    if (typeof options !== "object" || options === null || Array.isArray(options)) {
      problem(`${label}: expected an object of options, got ${describe(options)}`);
      return;
    }
    const checks: Record<string, Check> = machine.kind === "build-machine" ? BUILD_MACHINE_FIELDS : LOCAL_MACHINE_FIELDS;
    const given = options as Record<string, unknown>;
    for (const field of Object.keys(given)) {
      if (!(field in checks)) {
        problem(`${label}: unknown field "${field}"`, field, `known fields: ${Object.keys(checks).join(", ")}`);
      } else if (given[field] !== undefined) {
        const error = checks[field]!(given[field]);
        if (error) problem(`${label}: ${field}: ${error}`, field);
      }
    }
    if (machine.kind === "local-machine") {
      if (local) problem("more than one localMachine() record", undefined, "keep a single localMachine({ ... })");
      local = machine;
      return;
    }
    if (typeof given.signingKey === "string") {
      const error = signingKeyProblem(given.signingKey, machine.daemon);
      if (error) problem(`${label}: signingKey: ${error}`, "signingKey");
    }
    for (const required of ["name", "systems"] as const) {
      if (given[required] === undefined) problem(`${label}: missing required field "${required}"`);
    }
    if (typeof machine.name === "string") {
      if (names.has(machine.name)) {
        const first = names.get(machine.name);
        problem(
          `duplicate machine name ${JSON.stringify(machine.name)}${first ? ` (first defined at ${first.file}:${first.line}:${first.column})` : ""}`,
          "name",
          "names identify machines in slots, logs and `offload explain`: give each record its own name",
        );
      }
      names.set(machine.name, fieldsAt.name ?? call);
    }
    machines.push(machine);
  });

  if (problems.length > 0) {
    throw new OffloadError(`${configPath} has ${problems.length} invalid setting${problems.length === 1 ? "" : "s"}`, {
      code: "config-invalid",
      problems,
    });
  }
  return { machines, local };
}

/** Field positions of the record created at `call`; the nearest call on the same line if V8 and TypeScript disagree on the column. */
function fieldLocations(locations: RecordLocations, call: SourceLocation): Record<string, SourceLocation> {
  const exact = locations[`${call.file}:${call.line}:${call.column}`];
  if (exact) return exact.fields;
  const sameLine = Object.values(locations).filter((r) => r.call.file === call.file && r.call.line === call.line);
  sameLine.sort((a, b) => Math.abs(a.call.column - call.column) - Math.abs(b.call.column - call.column));
  return sameLine[0]?.fields ?? {};
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "a plain object";
  return `${typeof value === "string" ? "the string" : `a ${typeof value}`} ${JSON.stringify(value) ?? String(value)}`;
}
