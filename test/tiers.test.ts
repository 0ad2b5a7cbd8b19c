// The unit tier (test/tiers.json, jest.config.js) keeps its promise: its test files start nothing real. They
// may spawn Node itself (slots.test.ts holds a lock from another process) and `true`.
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const TEST = fileURLToPath(new URL(".", import.meta.url));
const UNIT = (JSON.parse(readFileSync(`${TEST}/tiers.json`, "utf8")) as { unit: string[] }).unit;
const files = readdirSync(TEST).filter((name) => name.endsWith(".test.ts"));

/** What starts something real: the support modules for executables, lab hosts, sshd, Nix; a named program. */
const REAL = [
  /from "\.\/support\/(cli|lab|lab-config|faults|sshd|nix|hostile-serve)\.js"/,
  /import \{[^}]*\b(runHookTries|HOOK)\b[^}]*\} from "\.\/support\/hook\.js"/,
  /\b(startSshd|startTestLab|startHost)\(/,
  /\b(spawn|spawnSync|execFile|execFileSync|exec|execSync)\(\s*["'`](?!true["'`])/,
  /from "\.\.\/src\/lab\//,
];

test("every unit test file exists", () => {
  expect(UNIT.filter((name) => !files.includes(`${name}.test.ts`))).toEqual([]);
});

test.each(UNIT.filter((name) => name !== "tiers"))("%s.test.ts starts no real program", (name) => {
  const source = readFileSync(`${TEST}/${name}.test.ts`, "utf8");
  expect(REAL.filter((pattern) => pattern.test(source)).map(String)).toEqual([]);
});
