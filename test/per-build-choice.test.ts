// Per-build choice of machines as the person at the terminal sees it, through a real
// nix-daemon of Nix 2.8 and 2.34. Nix passes a client's `--builders` on only from trusted
// users, the empty value from anyone, and drops the others' (2.8 without a word, 2.34 with a
// warning). So the hook says in every build's log which machines the build may use and why,
// and takes `--builders ''` to mean what it means in Nix: no remote builds.
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { CLIENT_USER, startMasterHost } from "../src/lab/index.js";
import { runInHost, stopHost, type Host, type NixRelease } from "../src/lab/host.js";
import { HOOK } from "./support/hook.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { configEnv, labRecord, writeLabConfig } from "./support/lab-config.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

let lab: Lab;
let dir: string;
let configDir: string;
let expression: string;

beforeAll(async () => {
  // Both take any build; b0 is the faster.
  lab = await startTestLab({
    builders: 2,
    builderSpecs: [
      { features: [], mandatoryFeatures: [], speed: 2 },
      { features: [], mandatoryFeatures: [], speed: 1 },
    ],
  });
  const [b0, b1] = lab.builders as [LabBuilder, LabBuilder];
  dir = makeSafeDir("per-build-choice");
  // Names of their own, apart from the addresses: what --builders 'offload:only=…' names.
  configDir = writeLabConfig(dir, "config", lab, [labRecord(lab, b0, { name: "b0", host: b0.address }), labRecord(lab, b1, { name: "b1", host: b1.address })]);
  // Where the non-root client can read it.
  expression = join(lab.dir, "choice.nix");
  writeFileSync(
    expression,
    `{ salt }: derivation { name = "choice-\${salt}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo $salt > $out" ]; }\n`,
  );
  chmodSync(expression, 0o644);
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  await stopTestLab(lab);
  if (dir) removeDir(dir);
});

describe.each(["2.8", "2.34"] as NixRelease[])("through a nix-daemon of Nix %s", (release) => {
  let master: Host;

  beforeAll(async () => {
    // Both versions read build-hook from nix.conf (docs/compatibility.md).
    master = await startMasterHost({
      dir: join(lab.dir, `master-${release.replace(".", "-")}`),
      nix: release,
      shared: [lab.dir, dir],
      nixConf: [`build-hook = ${HOOK}`, "max-jobs = 0"],
      daemonEnv: configEnv(dir, configDir),
    });
  }, LAB_UP_TIMEOUT_MS);

  afterAll(async () => {
    if (master) await stopHost(master);
  });

  /** nix-build through the master's daemon, as its non-root client or as root (whom the daemon trusts). */
  async function build(user: "client" | "root", options: string[]) {
    const argv = ["nix-build", expression, "--argstr", "salt", `${release}-${user}-${Date.now()}-${Math.random()}`, "--no-out-link", ...options];
    return runInHost(master, argv, { env: { NIX_REMOTE: "daemon" }, user: user === "client" ? CLIENT_USER : undefined, timeoutMs: 120_000 });
  }

  test("a non-root user's --builders 'offload:only=…' is dropped by Nix: the build log says what was in effect instead", async () => {
    const result = await build("client", ["--builders", "offload:only=b1"]);
    expect(result.code).toBe(0);
    // With the choice dropped, the faster machine builds.
    expect(result.stderr).toContain("' on 'b0'");
    expect(result.stderr).toMatch(
      /offload: machines for this build: any in machines\.ts \(builders = "[^"]*" is Nix's own machine list, which offload ignores; Nix passes a per-build --builders 'offload:…' on only from trusted users\)/,
    );
    // What Nix itself says of it.
    const warning = "ignoring the client-specified setting 'builders', because it is a restricted setting and you are not a trusted user";
    if (release === "2.8") expect(result.stderr).not.toContain(warning);
    else expect(result.stderr).toContain(warning);
  });

  test("root's --builders 'offload:only=…' reaches the hook, and the log says so", async () => {
    const result = await build("root", ["--builders", "offload:only=b1"]);
    expect(result.code).toBe(0);
    expect(result.stderr).toContain("' on 'b1'");
    expect(result.stderr).toContain(`offload: machines for this build: only b1 (builders = "offload:only=b1")`);
    // A name machines.ts does not have fails the build, naming the machines it has.
    const unknown = await build("root", ["--builders", "offload:only=nc-b0"]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain('no machine called "nc-b0" in machines.ts (named by builders = "offload:only=nc-b0"); its machines are b0, b1');
    expect(unknown.stderr).not.toContain("unexpected EOF");
  });

  test("--builders '' from a non-root user reaches the hook: no remote builds, and it says so", async () => {
    const result = await build("client", ["--builders", "", "--max-jobs", "1"]);
    expect(result.code).toBe(0);
    expect(result.stderr).toContain("offload: builders is empty (--builders '', or builders = in nix.conf), which in Nix means no remote builds");
    expect(result.stderr).not.toMatch(/' on 'b[01]'/);
  });
});
