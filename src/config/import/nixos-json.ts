// NixOS's nix.buildMachines as JSON, what `nix eval --json …config.nix.buildMachines` prints:
// a list of { hostName, sshUser, sshKey, system, systems, maxJobs, speedFactor,
// supportedFeatures, mandatoryFeatures, publicHostKey, protocol }. The NixOS module turns each
// into a machines line (protocol://sshUser@hostName …), so they are imported as one.
import type { SourceLocation } from "../../errors.js";
import { importError, keepAsComment, type ImportedMachine, type Warn } from "./model.js";
import { machineFromNixEntry } from "./nix-entry.js";

type Json = { at: SourceLocation } & (
  | { kind: "object"; entries: Map<string, Json> }
  | { kind: "array"; items: Json[] }
  | { kind: "string"; value: string }
  | { kind: "number"; value: number }
  | { kind: "boolean"; value: boolean }
  | { kind: "null" }
);

/** The options of nix.buildMachines, in the order of a machines line's columns. */
const COLUMNS = ["hostName", "systems", "sshKey", "maxJobs", "speedFactor", "supportedFeatures", "mandatoryFeatures", "publicHostKey"] as const;
const KNOWN = new Set<string>([...COLUMNS, "sshUser", "system", "protocol"]);

export function importNixosMachines(text: string, file: string, warn: Warn): ImportedMachine[] {
  const root = readJson(text, file);
  const list = machineList(root);
  return list.items.map((item, index) => {
    if (item.kind !== "object") throw importError(item.at, `buildMachines[${index}] is ${describe(item)}, not an attribute set`);
    const field = (name: string) => {
      const value = item.entries.get(name);
      return value === undefined || value.kind === "null" ? undefined : value;
    };
    const string = (name: string) => {
      const value = field(name);
      if (value !== undefined && value.kind !== "string") throw importError(value.at, `${name} must be a string, not ${describe(value)}`);
      return value?.value;
    };
    const strings = (name: string) => {
      const value = field(name);
      if (value === undefined) return undefined;
      const bad = value.kind === "array" ? value.items.find((element) => element.kind !== "string") : value;
      if (bad) throw importError(bad.at, `${name} must be a list of strings, not ${describe(value.kind === "array" ? bad : value)}`);
      return (value as Json & { kind: "array" }).items.map((element) => (element as Json & { kind: "string" }).value);
    };
    const count = (name: string) => {
      const value = field(name);
      if (value !== undefined && (value.kind !== "number" || value.value < 0))
        throw importError(value.at, `${name} must be a number ≥ 0, not ${describe(value)}`);
      return value?.value;
    };

    const hostName = string("hostName");
    if (hostName === undefined || hostName === "") throw importError(item.at, `buildMachines[${index}] has no hostName`);
    const protocol = string("protocol");
    if (protocol !== undefined && protocol !== "ssh" && protocol !== "ssh-ng") {
      throw importError(field("protocol")!.at, `protocol must be "ssh", "ssh-ng" or null, not ${JSON.stringify(protocol)}`);
    }
    const user = string("sshUser");
    // The module's rule: `system` (when set) and `systems` together; none means Nix's default.
    const systems = [...(string("system") === undefined ? [] : [string("system")!]), ...(strings("systems") ?? [])];
    const machine = machineFromNixEntry(
      {
        at: item.at,
        source: `hostName ${JSON.stringify(hostName)}`,
        columnAt: (column) => field(COLUMNS[column] ?? "")?.at ?? item.at,
        storeUri: `${protocol === undefined ? "" : `${protocol}://`}${user === undefined ? "" : `${user}@`}${hostName}`,
        systems: systems.length > 0 ? systems : undefined,
        sshKey: string("sshKey"),
        maxJobs: count("maxJobs"),
        speedFactor: count("speedFactor"),
        supportedFeatures: strings("supportedFeatures"),
        mandatoryFeatures: strings("mandatoryFeatures"),
        publicHostKey: string("publicHostKey"),
        extra: [],
      },
      warn,
    );
    for (const [name, value] of item.entries) {
      if (!KNOWN.has(name))
        keepAsComment(machine, value.at, `${name} = ${JSON.stringify(plain(value))}: not a nix.buildMachines option offload knows; not imported`, warn);
    }
    return machine;
  });
}

/** A list of machines, or an attribute set holding one as `buildMachines` or `nix.buildMachines`. */
function machineList(root: Json): Json & { kind: "array" } {
  let value = root;
  for (const key of ["nix", "buildMachines"]) {
    if (value.kind === "object" && value.entries.has(key)) value = value.entries.get(key)!;
  }
  if (value.kind !== "array") {
    throw importError(
      value.at,
      `expected the JSON of nix.buildMachines (a list), found ${describe(value)}; print it with: nix eval --json .#nixosConfigurations.HOST.config.nix.buildMachines`,
    );
  }
  return value;
}

function describe(value: Json): string {
  switch (value.kind) {
    case "object":
      return "an attribute set";
    case "array":
      return "a list";
    case "null":
      return "null";
    default:
      return `the ${value.kind} ${JSON.stringify(value.value)}`;
  }
}

function plain(value: Json): unknown {
  switch (value.kind) {
    case "object":
      return Object.fromEntries([...value.entries].map(([key, entry]) => [key, plain(entry)]));
    case "array":
      return value.items.map(plain);
    case "null":
      return null;
    default:
      return value.value;
  }
}

const STRING = /"(?:[^"\\\u0000-\u001f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/y;
const NUMBER = /-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;

/** JSON with the position of every value: JSON.parse reports neither where it failed nor where a value was. */
function readJson(text: string, file: string): Json {
  let offset = 0;
  let line = 1;
  let lineStart = 0;
  const here = (): SourceLocation => ({ file, line, column: offset - lineStart + 1 });
  const fail = (what: string) =>
    importError(here(), offset >= text.length ? `unexpected end of JSON, expected ${what}` : `expected ${what} in JSON, found ${JSON.stringify(text[offset])}`);
  const space = () => {
    for (; offset < text.length && /\s/.test(text[offset]!); offset++) {
      if (text[offset] === "\n") {
        line++;
        lineStart = offset + 1;
      }
    }
  };
  const literal = (word: string) => text.startsWith(word, offset) && ((offset += word.length), true);
  const stringAt = (): string => {
    STRING.lastIndex = offset;
    const match = STRING.exec(text);
    if (!match) throw fail("a complete string");
    offset += match[0].length;
    return JSON.parse(match[0]) as string;
  };
  const value = (): Json => {
    space();
    const at = here();
    const c = text[offset];
    if (c === "{") {
      offset++;
      const entries = new Map<string, Json>();
      space();
      if (!literal("}")) {
        do {
          space();
          if (text[offset] !== '"') throw fail("a quoted attribute name");
          const key = stringAt();
          space();
          if (!literal(":")) throw fail('":"');
          entries.set(key, value());
          space();
        } while (literal(","));
        if (!literal("}")) throw fail('"," or "}"');
      }
      return { kind: "object", entries, at };
    }
    if (c === "[") {
      offset++;
      const items: Json[] = [];
      space();
      if (!literal("]")) {
        do items.push(value());
        while ((space(), literal(",")));
        if (!literal("]")) throw fail('"," or "]"');
      }
      return { kind: "array", items, at };
    }
    if (c === '"') return { kind: "string", value: stringAt(), at };
    if (literal("true")) return { kind: "boolean", value: true, at };
    if (literal("false")) return { kind: "boolean", value: false, at };
    if (literal("null")) return { kind: "null", at };
    NUMBER.lastIndex = offset;
    const number = NUMBER.exec(text);
    if (!number) throw fail("a value");
    offset += number[0].length;
    return { kind: "number", value: Number(number[0]), at };
  };
  const root = value();
  space();
  if (offset < text.length) throw fail("the end of the input");
  return root;
}
