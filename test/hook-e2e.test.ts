// The main job against the real things, for every Nix users run: a master host of Nix 2.8,
// 2.26 and 2.34 (own /nix/store; nix-build as root, and a nix-daemon with a non-root client)
// hands a multi-derivation graph to offload-hook, which builds it on lab builders of Nix
// 2.34 and 2.8 (own sshd and store) chosen by system, feature and mandatory feature, and
// lands only outputs whose signatures verify — registered as Nix's own build-remote would
// register them, although the daemon holds their locks (Nix 2.29 removed NIX_HELD_LOCKS).
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { CLIENT_USER, startMasterHost } from "../src/lab/index.js";
import { onMachine, runInHost, stopHost, type Host, type NixRelease } from "../src/lab/host.js";
import { startSshd, stopSshd } from "../src/lab/sshd.js";
import { buildHookLocation, parseNixVersion } from "../src/nix/daemon-version.js";
import { generateKeyPair, parsePublicKey } from "../src/nix/keys.js";
import { decodeNix32 } from "../src/nix/nix32.js";
import { verifyPathSignatures } from "../src/nix/signature.js";
import { acquireSlot } from "../src/select/slots.js";
import { HOOK, runHookTries } from "./support/hook.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const NIX = ["--extra-experimental-features", "nix-command"];
const MASTERS: NixRelease[] = ["2.8", "2.26", "2.34"];

let lab: Lab;
let dir: string;
let fast: LabBuilder; // kvm, speed 2, Nix 2.34
let bench: LabBuilder; // takes only derivations requiring "benchmark", Nix 2.8
let spare: LabBuilder; // plain, speed 1, Nix 2.8: the victim of the fault-injection tests

beforeAll(async () => {
  lab = await startTestLab({
    builders: 3,
    builderSpecs: [
      { features: ["kvm"], speed: 2, parallelBuilds: 2, nix: "2.34" },
      { features: ["big-parallel"], mandatoryFeatures: ["benchmark"], speed: 1, parallelBuilds: 2, nix: "2.8" },
      { features: [], speed: 1, parallelBuilds: 2, nix: "2.8" },
    ],
  });
  [fast, bench, spare] = lab.builders as [LabBuilder, LabBuilder, LabBuilder];
  dir = makeSafeDir("hook-e2e");
  writeFileSync(join(dir, "graph.nix"), GRAPH, { mode: 0o644 });
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  await stopTestLab(lab);
  if (dir) removeDir(dir);
});

/** A top derivation over three leaves: one plain, one requiring "benchmark", one requiring "kvm". */
const GRAPH = `{ salt, marker ? "" }:
let
  mk = name: attrs: derivation ({
    inherit name salt marker;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo $name $salt $marker > $out; for i in $deps; do echo $i >> $out; done" ];
  } // attrs);
in rec {
  plain = mk "plain-leaf" { };
  benchmark = mk "bench-leaf" { requiredSystemFeatures = [ "benchmark" ]; };
  kvm = mk "kvm-leaf" { requiredSystemFeatures = [ "kvm" ]; };
  top = mk "top" { deps = [ plain benchmark kvm ]; };
  # Talks, then sleeps: for log streaming and the timeouts the hook must forward.
  slow = derivation {
    name = "slow"; inherit salt;
    system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo hello-from-the-remote-builder >&2; /bin/sleep 30; echo done > $out" ];
  };
}
`;

interface Variant {
  builders?: LabBuilder[];
  /** Replaces a builder's pinned signing key. */
  signingKey?: (builder: LabBuilder) => string | undefined;
}

/** A config dir with the lab's offload key and ACL and a machines.ts for `variant`. Loopback builders share this host's load, so load is ignored. */
function configFor(name: string, variant: Variant = {}): string {
  const configDir = join(dir, name);
  mkdirSync(configDir, { mode: 0o755 });
  copyFileSync(lab.signingKeySecret, join(configDir, "signing-key.sec"));
  chmodSync(join(configDir, "signing-key.sec"), 0o600);
  copyFileSync(lab.acl, join(configDir, "acl"));
  const records = (variant.builders ?? lab.builders).map((b) => {
    const signingKey = variant.signingKey ? variant.signingKey(b) : b.signingKey;
    return `  buildMachine(${JSON.stringify({
      name: b.address,
      port: b.port,
      user: "root",
      systems: [b.system],
      hostKey: b.hostKey,
      privateKey: lab.clientKey,
      parallelBuilds: b.parallelBuilds,
      speed: b.speed,
      features: b.features,
      mandatoryFeatures: b.mandatoryFeatures,
      overloadThreshold: null,
      ...(signingKey ? { signingKey } : {}),
    })}),`;
  });
  writeFileSync(join(configDir, "machines.ts"), `import { buildMachine } from "offload";\nexport default [\n${records.join("\n")}\n];\n`, { mode: 0o644 });
  return configDir;
}

function hookEnv(configDir: string): Record<string, string> {
  return { OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(configDir, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") };
}

interface PathInfoJson {
  path: string;
  deriver?: string | null;
  narHash: Buffer;
  narSize: number;
  references: string[];
  signatures: string[];
}

/** `nix path-info --json --sigs`, whose shape changed (2.19: an object keyed by path; SRI or sha256:nix32 hashes). */
function parsePathInfo(path: string, stdout: string): PathInfoJson {
  const parsed = JSON.parse(stdout) as unknown;
  const raw = (Array.isArray(parsed) ? parsed[0] : (parsed as Record<string, unknown>)[path]) as {
    narHash: string;
    narSize: number;
    references: string[];
    deriver?: string | null;
    signatures?: string[];
  };
  const hash = raw.narHash.startsWith("sha256-") ? Buffer.from(raw.narHash.slice(7), "base64") : decodeNix32(raw.narHash.replace(/^sha256:/, ""));
  const full = (p: string) => (p.startsWith("/") ? p : `/nix/store/${p}`);
  return {
    path,
    deriver: raw.deriver ? full(raw.deriver) : null,
    narHash: hash,
    narSize: raw.narSize,
    references: raw.references.map(full).sort(),
    signatures: [...(raw.signatures ?? [])].sort(),
  };
}

describe.each(MASTERS)("master Nix %s", (release) => {
  let master: Host;
  let version = "";

  beforeAll(async () => {
    master = await startMasterHost({ dir: join(lab.dir, `master-${release.replace(".", "-")}`), nix: release, shared: [lab.dir, dir] });
    version = parseNixVersion((await inMaster(["nix-store", "--version"])).stdout)!.text;
  }, LAB_UP_TIMEOUT_MS);
  afterAll(async () => {
    if (master) await stopHost(master);
  });

  async function inMaster(argv: string[], env: Record<string, string> = {}, user?: string) {
    return runInHost(master, argv, { env, user, timeoutMs: 120_000 });
  }

  /** nix-build of one attribute of the graph through offload-hook, as root, building nothing locally. */
  async function nixBuild(configDir: string, attribute: string, salt: string, marker = "", extra: string[] = []) {
    const args = [join(dir, "graph.nix"), "-A", attribute, "--argstr", "salt", salt, "--argstr", "marker", marker];
    const options = ["--option", "build-hook", HOOK, "--max-jobs", "0", "--no-out-link", ...extra];
    const result = await inMaster(["nix-build", ...args, ...options], hookEnv(configDir));
    return { ok: result.code === 0, stdout: result.stdout.trim(), stderr: result.stderr };
  }

  async function outputOf(attribute: string, salt: string, marker = ""): Promise<string> {
    const drv = (
      await inMaster(["nix-instantiate", join(dir, "graph.nix"), "-A", attribute, "--argstr", "salt", salt, "--argstr", "marker", marker])
    ).stdout.trim();
    return (await inMaster(["nix-store", "--query", "--outputs", drv])).stdout.trim();
  }

  async function isValid(path: string): Promise<boolean> {
    return (await inMaster(["nix-store", "--check-validity", path])).code === 0;
  }

  async function pathInfo(host: Host, path: string): Promise<PathInfoJson> {
    const result = await runInHost(host, ["nix", ...NIX, "path-info", "--json", "--sigs", path]);
    if (result.code !== 0) throw new Error(`nix path-info ${path}: ${result.stderr}`);
    return parsePathInfo(path, result.stdout);
  }

  test("a multi-derivation graph is built where routing demands, landed as build-remote would land it, signatures verified", async () => {
    const salt = `graph-${release}-${Date.now()}`;
    const configDir = configFor(`graph-${release}`);
    const result = await nixBuild(configDir, "top", salt);
    expect(result.stderr).not.toMatch(/error|refused/i);
    expect(result.ok).toBe(true);

    // Each output carries the signature of the builder that made it: proof of where it was built.
    const expected: [string, LabBuilder][] = [
      ["plain", fast], // no features: the fastest machine
      ["benchmark", bench], // the only machine taking "benchmark", which is mandatory there
      ["kvm", fast], // the only machine with kvm
      ["top", fast],
    ];
    for (const [attribute, builder] of expected) {
      const path = await outputOf(attribute, salt);
      expect(await isValid(path)).toBe(true);
      const here = await pathInfo(master, path);
      const verdict = verifyPathSignatures(
        here,
        lab.builders.map((b) => parsePublicKey(b.signingKey)),
      );
      expect(verdict.valid && verdict.key.name).toBe(builder.signingKey.split(":")[0]);
      // What Nix's build-remote registers is the builder's path info (copyPaths keeps it): compare field by field.
      expect(here).toEqual(await pathInfo(builder.host, path));
      // Nix itself agrees the signature is valid.
      const verify = await inMaster([
        "nix",
        ...NIX,
        "store",
        "verify",
        "--no-contents",
        "--sigs-needed",
        "1",
        "--trusted-public-keys",
        builder.signingKey,
        path,
      ]);
      expect(verify.stderr).not.toMatch(/error/);
      expect(verify.code).toBe(0);
    }
    expect(readFileSync(onMachine(master, result.stdout), "utf8")).toContain(await outputOf("benchmark", salt));
    // The whole store checks out, contents included; no landing leftovers.
    const check = await inMaster(["nix-store", "--verify", "--check-contents"]);
    expect(check.stderr).not.toMatch(/error|modified|invalid/i);
    expect(check.code).toBe(0);
    expect(readdirSync(join(master.dir, "nix", "store", ".offload-landing"))).toEqual([]);
    // Each build's duration is recorded (scaled to speed 1) for later scheduling decisions.
    const durations = JSON.parse(readFileSync(join(configDir, "state", "durations.json"), "utf8")) as Record<string, { seconds: number }>;
    expect(Object.keys(durations).sort()).toEqual(["bench-leaf", "kvm-leaf", "plain-leaf", "top"]);
    const versions = JSON.parse(readFileSync(join(configDir, "state", "daemon-version.json"), "utf8")) as { version: { text: string } };
    expect(versions.version.text).toBe(version);
  });

  test.each([
    ["timeout", "3", /timed out after 3 seconds/],
    // Nix 2.8 says "of silence"; the 2.34 builder that takes this build does not.
    ["max-silent-time", "2", /timed out after 2 seconds/],
  ])("the daemon's %s is enforced and the log streams live", async (setting, seconds, message) => {
    const started = Date.now();
    const result = await nixBuild(configFor(`timeout-${setting}-${release}`), "slow", `${setting}-${release}-${started}`, "", ["--option", setting, seconds]);
    expect(result.ok).toBe(false);
    expect(Date.now() - started).toBeLessThan(20_000); // not the builder's 30 s
    expect(result.stderr).toContain("hello-from-the-remote-builder");
    expect(result.stderr).toMatch(message);
    // Up to 2.28 the daemon reads the hook's 101 as "timed out"; from 2.29 any failure is MiscFailure.
    if (release !== "2.34") expect(result.stderr).toContain("failed with exit code 101");
  });

  describe("outputs that must not be imported", () => {
    const onlySpare = (name: string, variant: Variant = {}) => configFor(`${name}-${release}`, { builders: [spare], ...variant });

    async function expectRejected(configDir: string, salt: string, message: RegExp, marker = "") {
      const path = await outputOf("plain", salt, marker);
      const result = await nixBuild(configDir, "plain", salt, marker);
      expect(result.ok).toBe(false);
      expect(result.stderr).toMatch(message);
      expect(result.stderr).toContain("nothing imported");
      expect(await isValid(path)).toBe(false);
      expect(readdirSync(join(master.dir, "nix", "store")).filter((name) => path.endsWith(name))).toEqual([]);
    }

    test("signed by a key the machine's pin does not name", async () => {
      const stranger = generateKeyPair("stranger-1").publicKey.toString();
      await expectRejected(
        onlySpare("pinned-other", { signingKey: () => stranger }),
        `pin-${release}-${Date.now()}`,
        /signed by "[^"]+-b2-1", which does not match the pinned signingKey "stranger-1" of /,
      );
    });

    test("signed by a key that is not in the ACL", async () => {
      const configDir = onlySpare("not-in-acl", { signingKey: () => undefined });
      writeFileSync(join(configDir, "acl"), `${fast.signingKey}\n`);
      await expectRejected(configDir, `acl-${release}-${Date.now()}`, /signed by unknown key .*not in the ACL/);
    });

    test("unsigned, from a machine without secret-key-files", async () => {
      const original = readFileSync(spare.nixConf, "utf8");
      writeFileSync(spare.nixConf, original.replace(/^secret-key-files.*$/m, ""));
      try {
        await expectRejected(onlySpare("unsigned"), `unsigned-${release}-${Date.now()}`, /has no signature/);
      } finally {
        writeFileSync(spare.nixConf, original);
      }
    });

    test("altered in transit by a wrapper that flips bytes of the machine's output", async () => {
      // The machine's nix-store now runs through a filter that rewrites a marker in what it sends.
      const wrapperDir = join(dir, `tamper-bin-${release}`);
      mkdirSync(wrapperDir, { mode: 0o755 });
      writeFileSync(
        join(wrapperDir, "nix-store"),
        `#!/bin/sh\n/usr/bin/nix-store "$@" | perl -e '$|=1; binmode STDIN; binmode STDOUT; while (sysread(STDIN, $b, 65536)) { $b =~ s/TAMPER-ME/TAMPER-OK/g; syswrite(STDOUT, $b) }'\n`,
        { mode: 0o755 },
      );
      const config = readFileSync(spare.sshdConfig, "utf8");
      const files = { sshdConfig: spare.sshdConfig, pidFile: spare.pidFile, logFile: spare.logFile };
      const restart = async (text: string) => {
        writeFileSync(spare.sshdConfig, text);
        await stopSshd(files);
        await startSshd(files, { address: spare.address, port: spare.port });
      };
      await restart(config.replace(/^SetEnv (.*)$/m, `SetEnv $1 PATH=${wrapperDir}:/usr/bin:/bin`));
      try {
        await expectRejected(onlySpare("tampered"), `tamper-${release}-${Date.now()}`, /changed in transit/, "TAMPER-ME");
      } finally {
        await restart(config);
      }
    });
  });

  test("through the master's nix-daemon with a non-root client (multi-user mode)", async () => {
    const configDir = configFor(`multi-user-${release}`);
    // The client reads the expression; root's ~/.cache is not for it.
    const shared = join(lab.dir, `client-${release}`);
    mkdirSync(shared, { mode: 0o755 });
    copyFileSync(join(dir, "graph.nix"), join(shared, "graph.nix"));
    chmodSync(join(shared, "graph.nix"), 0o644);
    const hook = `build-hook = ${HOOK}`;
    // Where the daemon really takes build-hook from depends on its version (2.25–2.33 ignore nix.conf).
    const daemonConf =
      buildHookLocation(parseNixVersion(`nix (Nix) ${version}`)!) === "nix.conf"
        ? { nixConf: [hook, "max-jobs = 0"], daemonEnv: hookEnv(configDir) }
        : { nixConf: ["max-jobs = 0"], daemonEnv: { ...hookEnv(configDir), NIX_CONFIG: hook } };
    await stopHost(master);
    master = await startMasterHost({ dir: master.dir, nix: release, shared: [lab.dir, dir], ...daemonConf });
    const salt = `multi-user-${release}-${Date.now()}`;
    const result = await inMaster(
      ["nix-build", join(shared, "graph.nix"), "-A", "top", "--argstr", "salt", salt, "--argstr", "marker", "", "--no-out-link"],
      { NIX_REMOTE: "daemon" },
      CLIENT_USER,
    );
    expect(result.stderr).toContain("signature by");
    expect(result.code).toBe(0);
    const top = result.stdout.trim();
    expect(top).toBe(await outputOf("top", salt));
    expect(await isValid(top)).toBe(true);
    expect((await pathInfo(master, top)).signatures.some((signature) => signature.startsWith(`${fast.signingKey.split(":")[0]}:`))).toBe(true);
  });
});

test("SIGTERM (how Nix 2.35 stops a hook) ends a building hook at once and frees its slot", async () => {
  const master = await startMasterHost({ dir: join(lab.dir, "master-sigterm"), nix: "2.34", shared: [lab.dir, dir] });
  try {
    const configDir = configFor("sigterm", { builders: [spare] });
    const salt = `sigterm-${Date.now()}`;
    const args = [
      join(dir, "graph.nix"),
      "-A",
      "slow",
      "--argstr",
      "salt",
      salt,
      "--argstr",
      "marker",
      "",
      "--option",
      "build-hook",
      HOOK,
      "--max-jobs",
      "0",
      "--no-out-link",
    ];
    const building = runInHost(master, ["nix-build", ...args], { env: hookEnv(configDir), timeoutMs: 60_000 });
    // The hook: a process of ours whose environment names this config dir.
    const hookPid = async () => {
      for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
        try {
          if (
            readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("offload-hook.js") &&
            readFileSync(`/proc/${pid}/environ`, "utf8").includes(`OFFLOAD_CONFIG_DIR=${configDir}\0`)
          )
            return Number(pid);
        } catch {
          // gone meanwhile
        }
      }
      return undefined;
    };
    let pid: number | undefined;
    // Wait until the remote build runs (it holds the slot and talks, then sleeps 30 s).
    for (let i = 0; i < 200 && !(pid = await hookPid()); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(pid).toBeDefined();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const sent = Date.now();
    process.kill(pid!, "SIGTERM");
    for (let i = 0; i < 100 && (await hookPid()) === pid; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(Date.now() - sent).toBeLessThan(500); // Nix 2.35 sends SIGKILL after 500 ms
    const result = await building;
    expect(result.code).not.toBe(0);
    // Both of the machine's slots are free again.
    const slots = await Promise.all([acquireSlot(join(configDir, "state"), spare.address, 2), acquireSlot(join(configDir, "state"), spare.address, 2)]);
    expect(slots.every((slot) => slot !== undefined)).toBe(true);
    await Promise.all(slots.map((slot) => slot!.release()));
    const spool = join(configDir, "state", "spool");
    expect(existsSync(spool) ? readdirSync(spool) : []).toEqual([]);
  } finally {
    await stopHost(master);
  }
});

test("a machine whose store is nearly full gets no build: postpone, with the reason and the fix", async () => {
  const env = { ...hookEnv(configFor("disk-low", { builders: [spare] })), OFFLOAD_MIN_FREE_MIB: String(1024 ** 3), OFFLOAD_AGENT: "0" };
  const drvPath = execFileSync("nix-instantiate", [join(dir, "graph.nix"), "-A", "plain", "--argstr", "salt", `disk-${Date.now()}`, "--argstr", "marker", ""], {
    encoding: "utf8",
  }).trim();
  const run = await runHookTries(env, [{ amWilling: false, system: spare.system, drvPath }]);
  expect(run.replies).toEqual(["postpone"]);
  const text = run.messages.join("\n");
  expect(text).toMatch(new RegExp(`${spare.address} has only [0-9.]+ [MG]iB free for .*/nix/store \\(minimum 1048576\\.0 GiB\\)`));
  expect(text).toContain(`${spare.address}: disk low: `);
  expect(text).toContain("nix-collect-garbage");
});
