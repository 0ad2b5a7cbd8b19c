// The main job against the real things: Nix 2.8's nix-build (and nix-daemon with a
// non-root client) hands a multi-derivation graph to offload-hook, which builds it on
// loopback builders (own sshd, chroot store, signing key) chosen by system, feature and
// mandatory feature, and imports only outputs whose signatures verify.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { startSshd, stopSshd } from "../src/lab/sshd.js";
import { generateKeyPair, parsePublicKey } from "../src/nix/keys.js";
import { verifyPathSignatures } from "../src/nix/signature.js";
import { HOOK, runHookTries } from "./support/hook.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const run = promisify(execFile);
const NIX = ["--extra-experimental-features", "nix-command"];

let lab: Lab;
let dir: string;
let fast: LabBuilder; // kvm, speed 2
let bench: LabBuilder; // takes only derivations requiring "benchmark"
let spare: LabBuilder; // plain, speed 1: the victim of the fault-injection tests

beforeAll(async () => {
  lab = await startTestLab({
    builders: 3,
    builderSpecs: [
      { features: ["kvm"], speed: 2, parallelBuilds: 2 },
      { features: ["big-parallel"], mandatoryFeatures: ["benchmark"], speed: 1, parallelBuilds: 2 },
      { features: [], speed: 1, parallelBuilds: 2 },
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

function hookEnv(configDir: string): NodeJS.ProcessEnv {
  return { ...process.env, OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(configDir, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") };
}

/** nix-build of one attribute of the graph through offload-hook, building nothing locally. */
function nixBuild(env: NodeJS.ProcessEnv, attribute: string, salt: string, marker = "", extra: string[] = []) {
  const args = [join(dir, "graph.nix"), "-A", attribute, "--argstr", "salt", salt, "--argstr", "marker", marker];
  const options = ["--option", "build-hook", HOOK, "--max-jobs", "0", "--option", "substituters", "", "--no-out-link", ...extra];
  return run("nix-build", [...args, ...options], { env, maxBuffer: 16 << 20 }).then(
    ({ stdout, stderr }) => ({ ok: true, stdout: stdout.trim(), stderr }),
    (error: { stdout: string; stderr: string }) => ({ ok: false, stdout: error.stdout.trim(), stderr: error.stderr }),
  );
}

async function drvOf(attribute: string, salt: string, marker = ""): Promise<string> {
  const { stdout } = await run("nix-instantiate", [join(dir, "graph.nix"), "-A", attribute, "--argstr", "salt", salt, "--argstr", "marker", marker]);
  return stdout.trim();
}

async function outputOf(attribute: string, salt: string, marker = ""): Promise<string> {
  return (await run("nix-store", ["--query", "--outputs", await drvOf(attribute, salt, marker)])).stdout.trim();
}

async function isValid(path: string): Promise<boolean> {
  return run("nix-store", ["--check-validity", path]).then(() => true, () => false);
}

async function pathInfo(path: string) {
  const { stdout } = await run("nix", [...NIX, "path-info", "--json", "--sigs", path]);
  const [info] = JSON.parse(stdout) as { path: string; narHash: string; narSize: number; references: string[]; signatures?: string[] }[];
  // `nix path-info --json` prints the hash in SRI form, sha256-<base64>.
  return { path, narHash: Buffer.from(info!.narHash.replace(/^sha256-/, ""), "base64"), narSize: info!.narSize, references: info!.references, signatures: info!.signatures ?? [] };
}

test("a multi-derivation graph is built on the machines routing demands, outputs signed and verified", async () => {
  const salt = `graph-${Date.now()}`;
  const result = await nixBuild(hookEnv(configFor("graph")), "top", salt);
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
    const info = await pathInfo(path);
    const verdict = verifyPathSignatures(info, lab.builders.map((b) => parsePublicKey(b.signingKey)));
    expect(verdict.valid && verdict.key.name).toBe(builder.signingKey.split(":")[0]);
    // Nix itself agrees the signature is valid.
    await run("nix", [...NIX, "store", "verify", "--no-contents", "--sigs-needed", "1", "--trusted-public-keys", builder.signingKey, path]);
  }
  expect(readFileSync(result.stdout, "utf8")).toContain(await outputOf("benchmark", salt));
  // Each build's duration is recorded (scaled to speed 1) for later scheduling decisions.
  const durations = JSON.parse(readFileSync(join(dir, "graph", "state", "durations.json"), "utf8")) as Record<string, { seconds: number }>;
  expect(Object.keys(durations).sort()).toEqual(["bench-leaf", "kvm-leaf", "plain-leaf", "top"]);
  for (const record of Object.values(durations)) expect(record.seconds).toBeGreaterThan(0);
});

test.each([
  ["timeout", "3", /timed out after 3 seconds/],
  ["max-silent-time", "2", /timed out after 2 seconds of silence/],
])("the daemon's %s is enforced on the remote, the log streams live, and Nix sees exit status 101", async (setting, seconds, message) => {
  const started = Date.now();
  const result = await nixBuild(hookEnv(configFor(`timeout-${setting}`)), "slow", `${setting}-${started}`, "", ["--option", setting, seconds]);
  expect(result.ok).toBe(false);
  expect(Date.now() - started).toBeLessThan(20_000); // not the builder's 30 s
  expect(result.stderr).toContain("hello-from-the-remote-builder");
  expect(result.stderr).toMatch(message);
  expect(result.stderr).toContain("failed with exit code 101");
});

test("a machine whose store is nearly full gets no build: postpone, with the reason and the fix", async () => {
  const env = { ...hookEnv(configFor("disk-low", { builders: [spare] })), OFFLOAD_MIN_FREE_MIB: String(1024 ** 3), OFFLOAD_AGENT: "0" };
  const run = await runHookTries(env, [{ amWilling: false, system: spare.system, drvPath: await drvOf("plain", `disk-${Date.now()}`) }]);
  expect(run.replies).toEqual(["postpone"]);
  const text = run.messages.join("\n");
  expect(text).toMatch(new RegExp(`${spare.address} has only [0-9.]+ [MG]iB free for .*/nix/store \\(minimum 1048576\\.0 GiB\\)`));
  expect(text).toContain(`${spare.address}: disk low: `);
  expect(text).toContain("nix-collect-garbage");
});

describe("outputs that must not be imported", () => {
  const onlySpare = (name: string, variant: Variant = {}) => configFor(name, { builders: [spare], ...variant });

  async function expectRejected(configDir: string, salt: string, message: RegExp, marker = "") {
    const path = await outputOf("plain", salt, marker);
    const result = await nixBuild(hookEnv(configDir), "plain", salt, marker);
    expect(result.ok).toBe(false);
    expect(result.stderr).toMatch(message);
    expect(result.stderr).toContain("nothing imported");
    expect(await isValid(path)).toBe(false);
  }

  test("signed by a key the machine's pin does not name", async () => {
    const stranger = generateKeyPair("stranger-1").publicKey.toString();
    await expectRejected(onlySpare("pinned-other", { signingKey: () => stranger }), `pin-${Date.now()}`, /signed by unknown key "[^"]+-b2-1"/);
  });

  test("signed by a key that is not in the ACL", async () => {
    const configDir = onlySpare("not-in-acl", { signingKey: () => undefined });
    writeFileSync(join(configDir, "acl"), `${fast.signingKey}\n`);
    await expectRejected(configDir, `acl-${Date.now()}`, /signed by unknown key .*not in the ACL/);
  });

  test("unsigned, from a machine without secret-key-files", async () => {
    const original = readFileSync(spare.nixConf, "utf8");
    writeFileSync(spare.nixConf, original.replace(/^secret-key-files.*$/m, ""));
    try {
      await expectRejected(onlySpare("unsigned"), `unsigned-${Date.now()}`, /has no signature/);
    } finally {
      writeFileSync(spare.nixConf, original);
    }
  });

  test("altered in transit by a wrapper that flips bytes of the machine's output", async () => {
    // The machine's nix-store now runs through a filter that rewrites a marker in what it sends.
    const wrapperDir = join(dir, "tamper-bin");
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
      await expectRejected(onlySpare("tampered"), `tamper-${Date.now()}`, /changed in transit/, "TAMPER-ME");
    } finally {
      await restart(config);
    }
  });
});

test("through a running nix-daemon with a non-root client (multi-user mode)", async () => {
  await run("sh", ["-c", "id offload-test >/dev/null 2>&1 || useradd --system --no-create-home offload-test"]);
  const configDir = configFor("multi-user");
  // The client is not root: its files and the socket live where it can reach them.
  const shared = `/var/lib/offload-test-mu-${process.pid}`;
  mkdirSync(shared, { mode: 0o755 });
  chmodSync(shared, 0o755);
  copyFileSync(join(dir, "graph.nix"), join(shared, "graph.nix"));
  const socket = join(shared, "daemon-socket");
  const daemon: ChildProcess = spawn("nix-daemon", [], {
    env: {
      ...hookEnv(configDir),
      NIX_DAEMON_SOCKET_PATH: socket,
      // The daemon's own settings: untrusted clients cannot choose the hook.
      NIX_CONFIG: `build-hook = ${HOOK}\nmax-jobs = 0\nsubstituters =\n`,
    },
    stdio: "ignore",
  });
  try {
    for (let i = 0; i < 50 && !(await run("test", ["-S", socket]).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 100));
    const salt = `multi-user-${Date.now()}`;
    const { stdout, stderr } = await run(
      "runuser",
      ["-u", "offload-test", "--", "env", "NIX_REMOTE=daemon", `NIX_DAEMON_SOCKET_PATH=${socket}`, "nix-build", join(shared, "graph.nix"), "-A", "top", "--argstr", "salt", salt, "--argstr", "marker", "", "--no-out-link"],
      { maxBuffer: 16 << 20 },
    );
    expect(stderr).toContain("signature by");
    const top = stdout.trim();
    expect(top).toBe(await outputOf("top", salt));
    expect(await isValid(top)).toBe(true);
    const info = await pathInfo(top);
    expect(info.signatures.some((signature) => signature.startsWith(`${fast.signingKey.split(":")[0]}:`))).toBe(true);
  } finally {
    daemon.kill();
    removeDir(shared);
  }
});
