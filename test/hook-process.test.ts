// The real offload-hook executable, as Nix runs it (hook-protocol.test.ts has the protocol
// cases in-process): its replies and exit status on its own pipes, and through a real
// nix-build a broken machines.ts is the build's failure message.
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPair } from "../src/nix/keys.js";
import { HOOK, runHookTries } from "./support/hook.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const DRV = "/nix/store/0mym5imlj8bclbwws3sf3d10gskmaqv0-plain-leaf.drv";

let dir: string;
beforeAll(() => {
  dir = makeSafeDir("hook-process");
});
afterAll(() => removeDir(dir));

/** A config dir with keys, an ACL and the given machines.ts body; returns the hook's environment. */
function setup(name: string, machines: string): NodeJS.ProcessEnv {
  const configDir = join(dir, name);
  mkdirSync(configDir, { mode: 0o755 });
  writeFileSync(join(configDir, "signing-key.sec"), generateKeyPair(`${name}-1`).exportSecret(), { mode: 0o600 });
  writeFileSync(join(configDir, "acl"), `${generateKeyPair("builder-1").publicKey.toString()}\n`, { mode: 0o644 });
  writeFileSync(join(configDir, "machines.ts"), `import { buildMachine } from "offload";\nexport default [\n${machines}\n];\n`, { mode: 0o644 });
  return { OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(dir, name, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") };
}

test("the executable: a broken machines.ts fails the build it is asked about, exit 1, the reason as an @nix message", async () => {
  const env = setup("broken", `buildMachine({ name: "x", systems: ["x86_64-linux"], speed: -1 }),`);
  const run = await runHookTries(env, [{ amWilling: true, system: "x86_64-linux", drvPath: DRV }]);
  expect(run.replies).toEqual(["accept offload"]);
  expect(run.code).toBe(1);
  expect(run.messages.join("\n")).toMatch(/offload: .*machines\.ts has 1 invalid setting\n?.*speed: must be a positive finite number/s);
});

test('through a real nix-build, a broken machines.ts is the build\'s failure message, never "unexpected EOF"', async () => {
  const env = setup("broken-real", `buildMachine({ name: "x", systems: ["x86_64-linux"], parallelBuild: 2 }),`);
  writeFileSync(
    join(dir, "one.nix"),
    `derivation { name = "broken-config-${Date.now()}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }\n`,
  );
  const result = spawnSync(
    "nix-build",
    [join(dir, "one.nix"), "--option", "build-hook", HOOK, "--max-jobs", "0", "--option", "substituters", "", "--no-out-link"],
    {
      env: { ...process.env, ...env },
      encoding: "utf8",
    },
  );
  expect(result.status).not.toBe(0);
  expect(result.stderr).toContain("parallelBuild");
  expect(result.stderr).toContain("parallelBuilds");
  expect(result.stderr).not.toContain("unexpected EOF");
});
