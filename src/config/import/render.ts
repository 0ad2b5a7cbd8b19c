// Imported machines as a commented machines.ts: one buildMachine() per machine, the source
// line it came from above it, and a comment for everything that did not carry over.
import { formatLocation } from "../../errors.js";
import { isComplete, type Field, type Format, type Imported, type ImportedMachine } from "./model.js";

export const FORMAT_NAMES: Record<Format, string> = {
  nix1: "a Nix 1.x remote-systems.conf",
  nix: "a Nix machines file or builders value",
  "nixos-json": "NixOS's nix.buildMachines as JSON",
  guix: "Guix's machines.scm",
};

/** The order fields are written in: as types/index.d.ts documents them. */
const FIELD_ORDER: Field[] = [
  "name",
  "host",
  "port",
  "daemon",
  "user",
  "systems",
  "hostKey",
  "privateKey",
  "parallelBuilds",
  "speed",
  "features",
  "mandatoryFeatures",
  "overloadThreshold",
  "remoteStore",
  "signingKey",
  "useSubstitutes",
  "connectTimeout",
  "enabled",
];

const MAX_QUOTE = 110;

export function renderMachinesTs(imported: Imported, origin: string): string {
  const lines = [
    `// Imported by \`offload import\` from ${comment(origin)}, ${FORMAT_NAMES[imported.format]}.`,
    "// Check it with `offload check --static` (and --config FILE when it is not /etc/offload/machines.ts);",
    "// an editor documents every field given the tsconfig.json that `offload init` writes beside it.",
    ...(imported.format === "guix"
      ? [
          "// Before offload uses these machines: trust the key each one signs with here (`offload authorize",
          "// --guix` its /etc/guix/signing-key.pub, or signingKey per machine), and authorize offload's Guix key",
          "// on each (guix archive --authorize); a machine without hostKey must be in root's known_hosts.",
        ]
      : [
          "// Before offload uses these machines: let each one sign what it builds (secret-key-files in its",
          "// nix.conf) and trust that key here (`offload authorize KEY.pub`, or signingKey per machine); a",
          "// machine without hostKey must be in root's known_hosts (offload never trusts a host on first use).",
        ]),
    ...imported.header.map((line) => `// ${comment(line)}`),
    'import { buildMachine } from "offload";',
    "",
    "export default [",
  ];
  imported.machines.forEach((machine, index) => {
    if (index > 0) lines.push("");
    lines.push(...renderMachine(machine));
  });
  lines.push("];", "");
  return lines.join("\n");
}

function renderMachine(machine: ImportedMachine): string[] {
  const source = machine.source.replace(/\s+/g, " ");
  const quoted = source.length > MAX_QUOTE ? `${source.slice(0, MAX_QUOTE - 1)}…` : source;
  const lines = [`  // ${comment(`${formatLocation(machine.at)}: ${quoted}`)}`, ...machine.notes.map((note) => `  // ${comment(note)}`)];
  const fields = FIELD_ORDER.filter((field) => machine.options[field] !== undefined).map((field) => `    ${field}: ${literal(machine.options[field])},`);
  const record = ["  buildMachine({", ...fields, "  }),"];
  if (isComplete(machine)) return [...lines, ...record];
  // Without its name or systems a record would fail the check: it waits, commented out, for the user to finish it.
  return fields.length === 0 ? lines : [...lines, ...record.map((line) => `  // ${line.slice(2)}`)];
}

function literal(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(literal).join(", ")}]`;
  return JSON.stringify(value);
}

/** Text safe inside a `//` comment: a line break (including JavaScript's U+2028/9) would end it. */
function comment(text: string): string {
  return text.replace(/[\r\n\u2028\u2029]+/g, " ");
}
