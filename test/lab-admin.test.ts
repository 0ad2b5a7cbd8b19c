// The lab's builders used from an administrator's own config dir, as README says: a
// machines.ts of the /etc/offload kind (here a temporary OFFLOAD_CONFIG_DIR, with its own
// `offload keygen` key and no ACL) imports the lab's records; `offload check` passes on it,
// and keeps passing across lab down/up. `lab up` never writes there, and never overwrites a
// lab file a person edited: it stops and says where the edit belongs.
import { existsSync, readdirSync, renameSync, statSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { registerLab } from "../src/cli/lab.js";
import { labDown, labUp, type Lab } from "../src/lab/index.js";
import { resolveLabPlan } from "../src/lab/options.js";
import { runCli } from "./support/cli.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";
import { runCommand } from "./support/run-command.js";

const REAL_CONFIG_DIR = "/etc/offload";

let lab: Lab;
let dir: string;
let etc: string;
let env: NodeJS.ProcessEnv;
let realBefore: string;

/** What /etc/offload holds (names, sizes, times), to show the lab never touched it. */
function realConfigDir(): string {
  if (!existsSync(REAL_CONFIG_DIR)) return "absent";
  return JSON.stringify(
    readdirSync(REAL_CONFIG_DIR, { recursive: true })
      .sort()
      .map((name) => [name, statSync(join(REAL_CONFIG_DIR, String(name))).mtimeMs]),
  );
}

beforeAll(async () => {
  realBefore = realConfigDir();
  lab = await startTestLab({ builders: 1 });
  dir = makeSafeDir("lab-admin");
  etc = join(dir, "etc");
  env = { OFFLOAD_CONFIG_DIR: etc, OFFLOAD_STATE_DIR: join(dir, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") };
  expect((await runCli(["init", etc], env)).code).toBe(0);
  expect((await runCli(["keygen"], env)).code).toBe(0);
  await writeFile(
    join(etc, "machines.ts"),
    [
      'import { localMachine } from "offload";',
      `import lab from ${JSON.stringify(lab.machinesFile)};`,
      "export default [localMachine({ speed: 1 }), ...lab];",
      "",
    ].join("\n"),
    { mode: 0o644 },
  );
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  await stopTestLab(lab);
  if (dir) removeDir(dir);
});

/** `offload lab up` as an administrator types it, again on this lab. */
const upAgain = () =>
  runCommand(registerLab, etc, [
    "lab",
    "up",
    "--dir",
    lab.dir,
    "--prefix",
    lab.prefix,
    "--address",
    lab.builders[0]!.address,
    "--builders",
    "1",
    "--no-install",
  ]);

async function expectCheckPasses(): Promise<void> {
  const result = await runCli(["check"], env);
  expect(result.stderr).toBe("");
  expect(result.stdout).toContain(`${etc}/machines.ts: 1 machine`);
  expect(result.stdout).toContain("all 1 machine(s) passed");
  expect(result.code).toBe(0);
}

test("a config dir of one's own imports the lab's records: check passes, with no ACL and the config's own key", async () => {
  expect(existsSync(join(etc, "acl"))).toBe(false); // each record pins its builder's signingKey
  await expectCheckPasses();
});

test("lab down and up again keep it working; up says how to import its machines and writes nothing there", async () => {
  const mine = await readFile(join(etc, "machines.ts"), "utf8");
  const records = await readFile(lab.machinesFile, "utf8");
  await labDown(lab.dir);
  const { stdout } = await upAgain();
  expect(stdout).toContain(
    `use it from /etc/offload/machines.ts (${lab.machinesFile} is rewritten by each lab up: do not edit it):\n  import lab from "${lab.machinesFile}";\n  export default [...lab, /* your machines */];\n`,
  );
  expect(stdout).toContain(`or alone, with the lab's own key and ACL: OFFLOAD_CONFIG_DIR=${lab.configDir}\n`);
  expect(await readFile(lab.machinesFile, "utf8")).toBe(records); // same keys: the same records
  expect(await readFile(join(etc, "machines.ts"), "utf8")).toBe(mine);
  await expectCheckPasses();
});

test("an edited lab file is not overwritten: up stops before changing anything, naming the file and where the edit belongs", async () => {
  const edited = (await readFile(lab.machinesFile, "utf8")).replace(/speed: \d+(\.\d+)?,/, "speed: 7,");
  await writeFile(lab.machinesFile, edited);
  const knownHosts = `${await readFile(lab.knownHosts, "utf8")}# mine\n`;
  await writeFile(lab.knownHosts, knownHosts);
  const before = statSync(lab.state).mtimeMs;
  const refused = labUp({ dir: lab.dir, prefix: lab.prefix, firstAddress: lab.builders[0]!.address, builders: 1, install: false });
  await expect(refused).rejects.toMatchObject({
    code: "lab-file-edited",
    message: "lab up rewrites the files it owns and would lose these edits; nothing was changed",
    problems: [
      {
        message: `${lab.knownHosts} was changed after offload lab up wrote it`,
        fix: `lab up owns this file: mv ${lab.knownHosts} ${lab.knownHosts}.mine to keep your version, then run lab up again`,
      },
      {
        message: `${lab.machinesFile} was changed after offload lab up wrote it`,
        fix:
          `keep your machines in /etc/offload/machines.ts, which can use the lab's: import lab from "${lab.machinesFile}"; export default [...lab, …]. ` +
          `Then mv ${lab.machinesFile} ${lab.machinesFile}.mine and run lab up again`,
      },
    ],
  });
  expect(await readFile(lab.machinesFile, "utf8")).toBe(edited);
  expect(await readFile(lab.knownHosts, "utf8")).toBe(knownHosts);
  expect(statSync(lab.state).mtimeMs).toBe(before);
  // The fix as given: the edits kept aside, up writes its files again, the config still works.
  for (const file of [lab.machinesFile, lab.knownHosts]) renameSync(file, `${file}.mine`);
  await upAgain();
  expect(await readFile(`${lab.machinesFile}.mine`, "utf8")).toBe(edited);
  expect(await readFile(lab.machinesFile, "utf8")).not.toContain("speed: 7,");
  await expectCheckPasses();
});

test("a lab is refused in, under or above /etc/offload, which it never touches", () => {
  for (const dir of [REAL_CONFIG_DIR, `${REAL_CONFIG_DIR}/lab`, "/etc"]) {
    expect(() => resolveLabPlan({ dir })).toThrow(`a lab in ${dir} would write into /etc/offload, which is yours`);
  }
  expect(realConfigDir()).toBe(realBefore);
});
