// The defaults editors show (types/index.d.ts @default tags) are the ones offload applies
// (src/defaults.ts, used by buildMachine() and localMachine()).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildMachine, localMachine } from "../src/config/records.js";
import { DEFAULTS } from "../src/defaults.js";
import { PACKAGE_ROOT } from "../src/package-root.js";

/** `field → @default text` for each field of the interface `name` in types/index.d.ts. */
function documentedDefaults(name: string): Map<string, string> {
  const text = readFileSync(join(PACKAGE_ROOT, "types", "index.d.ts"), "utf8");
  const body = new RegExp(`export interface ${name} \\{([\\s\\S]*?)\\n\\}`).exec(text)![1]!;
  const defaults = new Map<string, string>();
  for (const match of body.matchAll(/\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*(\w+)\?:/g)) {
    const tag = /@default (.*)/.exec(match[1]!)?.[1]?.trim();
    if (tag !== undefined) defaults.set(match[2]!, tag);
  }
  return defaults;
}

test.each([
  ["BuildMachineOptions", DEFAULTS.buildMachine, buildMachine({ name: "m", systems: ["x86_64-linux"] })],
  ["LocalMachineOptions", DEFAULTS.localMachine, localMachine({})],
] as const)("%s: every default applied is the one documented, and is what a bare record gets", (name, defaults, record) => {
  const documented = documentedDefaults(name);
  for (const [field, value] of Object.entries(defaults)) {
    expect([field, documented.get(field)]).toEqual([field, JSON.stringify(value)]);
    expect([field, (record as unknown as Record<string, unknown>)[field]]).toEqual([field, value]);
  }
  // Every optional field says what leaving it out means.
  const text = readFileSync(join(PACKAGE_ROOT, "types", "index.d.ts"), "utf8");
  const optional = [...new RegExp(`export interface ${name} \\{([\\s\\S]*?)\\n\\}`).exec(text)![1]!.matchAll(/^ {2}(\w+)\?:/gm)].map((m) => m[1]);
  expect(optional.filter((field) => !documented.has(field!))).toEqual([]);
});
