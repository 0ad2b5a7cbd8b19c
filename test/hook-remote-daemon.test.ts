// Builds on machines where the SSH user is not root and Nix goes through that machine's own
// nix-daemon: the production setup with a `nix` user, on builders of Nix 2.8 and 2.34 (each
// a lab host with its own store). Nix 2.8's `nix-store --serve` cannot pass the daemon's
// timeouts on to a remote nix-daemon, so the hook enforces them itself; outputs are built
// by the remote daemon, signed by it, fetched and landed here.
import { execFile } from "node:child_process";
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { ensureUser, startNixDaemon } from "../src/lab/host.js";
import { parsePublicKey } from "../src/nix/keys.js";
import { verifyPathSignatures } from "../src/nix/signature.js";
import { HOOK } from "./support/hook.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { configEnv, labRecord, writeLabConfig } from "./support/lab-config.js";
import { isValidPath, nixPathInfo } from "./support/nix.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const run = promisify(execFile);
const USER = "offload-remote";

let lab: Lab;
let dir: string;

beforeAll(async () => {
  lab = await startTestLab({
    builders: 2,
    builderSpecs: [
      { features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 2, nix: "2.8" },
      { features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 2, nix: "2.34" },
    ],
  });
  dir = makeSafeDir("hook-remote-daemon");
  // Each machine's own nix-daemon trusts the SSH user (its builds are signed with the machine's key).
  for (const builder of lab.builders) {
    await ensureUser(builder.host, USER);
    appendFileSync(builder.nixConf, `trusted-users = root ${USER}\n`);
    await startNixDaemon(builder.host);
  }
  writeFileSync(
    join(dir, "build.nix"),
    `{ salt, seconds }: derivation { name = "remote-daemon"; inherit salt; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo started >&2; /bin/sleep \${toString seconds}; echo $salt > $out" ]; }\n`,
  );
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  await stopTestLab(lab);
  if (dir) removeDir(dir);
});

describe.each([0, 1])("builder %i (a non-root login through its nix-daemon)", (index) => {
  let builder: LabBuilder;
  let env: NodeJS.ProcessEnv;
  beforeAll(() => {
    builder = lab.builders[index]!;
    const configDir = writeLabConfig(dir, `remote-daemon-${index}`, lab, [labRecord(lab, builder, { user: USER })]);
    env = { ...process.env, ...configEnv(dir, configDir) };
  });

  function nixBuild(salt: string, seconds: number, options: string[] = []) {
    const args = [join(dir, "build.nix"), "--argstr", "salt", salt, "--arg", "seconds", String(seconds)];
    return run("nix-build", [...args, "--option", "build-hook", HOOK, "--max-jobs", "0", "--option", "substituters", "", "--no-out-link", ...options], {
      env,
      timeout: 120_000,
    }).then(
      ({ stdout, stderr }) => ({ ok: true, stdout: stdout.trim(), stderr }),
      (error: { stdout: string; stderr: string }) => ({ ok: false, stdout: error.stdout.trim(), stderr: error.stderr }),
    );
  }

  test("a build goes through the remote daemon: output signed there, verified and landed here", async () => {
    const result = await nixBuild(`ok-${index}-${Date.now()}`, 0);
    expect(result.stderr).toContain("started");
    expect(result.ok).toBe(true);
    expect(isValidPath(result.stdout)).toBe(true);
    const verdict = verifyPathSignatures(nixPathInfo(result.stdout), [parsePublicKey(builder.signingKey)]);
    expect(verdict.valid).toBe(true);
  });

  test("the daemon's timeout is enforced although the remote nix-daemon may never get it", async () => {
    const started = Date.now();
    const result = await nixBuild(`timeout-${index}-${started}`, 60, ["--option", "timeout", "2"]);
    expect(result.ok).toBe(false);
    expect(result.stderr).toContain("started"); // the build really ran on the machine, through its daemon
    expect(result.stderr).toMatch(/timed out after 2 seconds/);
    expect(result.stderr).toContain("failed with exit code 101");
    expect(Date.now() - started).toBeLessThan(30_000); // not the builder's 60 s
  });
});
