// The lab with real hosts, sshds and Nix (needs root, as CI has): builders of Nix 2.8 and
// 2.34 answer over ssh, build into their own stores and sign, Nix's own build-remote
// offloads to them, and so does offload-hook from a master host's nix-daemon.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { registerLab } from "../src/cli/lab.js";
import { loadConfig } from "../src/config/load.js";
import { connectMachine } from "../src/remote/ssh.js";
import { openServeSession } from "../src/store/serve-session.js";
import { CLIENT_USER, labDown, labStatus, labUp, onMachine, runInHost, runningHosts, sshArgs, startMasterHost, stopHost } from "../src/lab/index.js";
import { addInclude, removeInclude } from "../src/lab/root-ssh-config.js";
import { labSshdPattern } from "../src/lab/sshd.js";
import { builderSpecsFrom } from "../src/lab/builder-spec.js";
import { resolveLabPlan } from "../src/lab/options.js";
import type { Lab, LabBuilder, LabBuilderSpec } from "../src/lab/index.js";
import { HOOK } from "./support/hook.js";
import { runCommand } from "./support/run-command.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";

const exec = promisify(execFile);
const NIX = ["--extra-experimental-features", "nix-command"];

function trivialDerivation(extra = ""): { expression: string; salt: string } {
  const salt = randomBytes(8).toString("hex");
  const expression =
    `derivation { name = "lab-test"; system = builtins.currentSystem; builder = "/bin/sh"; ` +
    `args = ["-c" "echo $salt > $out"]; salt = "${salt}"; ${extra} }`;
  return { expression, salt };
}

/** nix-build of `expression` by Nix's own build-remote only, with the machines file `nixMachines`; its output path. */
async function buildRemotely(expression: string, nixMachines: string): Promise<string> {
  const options = ["--no-out-link", "--max-jobs", "0", "--option", "substituters", "", "--option", "builders", `@${nixMachines}`];
  return (await exec("nix-build", ["-E", expression, ...options])).stdout.trim();
}

async function ssh(lab: Lab, builder: LabBuilder, command: string): Promise<string> {
  return (await exec("ssh", sshArgs(lab, builder, command))).stdout;
}

async function psLines(text: string): Promise<string[]> {
  const { stdout } = await exec("ps", ["-eo", "pid,stat,args"]);
  return stdout.split("\n").filter((line) => line.includes(text));
}

async function rootSshConfig(lab: Lab): Promise<string> {
  return readFile(lab.rootSshConfig!, "utf8");
}

describe("lab plans", () => {
  test("default builders differ so tests can route by feature; --builder overrides one builder", () => {
    const plan = resolveLabPlan({ builders: 3, builderSpecs: builderSpecsFrom(["b2 features=foo,bar jobs=1 nix=2.34", "b0 speed=1.5"]) });
    expect(plan.builders.map((b) => [b.name, b.address, b.port, b.features, b.mandatoryFeatures, b.speed, b.parallelBuilds, b.nix])).toEqual([
      ["lab-b0", "127.0.0.11", 2222, ["kvm", "nixos-test"], [], 1.5, 2, "2.8"],
      ["lab-b1", "127.0.0.12", 2222, ["big-parallel"], ["benchmark"], 1, 2, "2.8"],
      ["lab-b2", "127.0.0.13", 2222, ["foo", "bar"], [], 1, 1, "2.34"],
    ]);
    expect(resolveLabPlan({ nix: "2.26", builderSpecs: [{ nix: "2.34" }] }).builders.map((b) => b.nix)).toEqual(["2.34", "2.26"]);
    expect(resolveLabPlan({ builderSpecs: builderSpecsFrom(["b3"]) }).builders).toHaveLength(4);
  });

  test("bad options are refused with a fix", () => {
    expect(() => builderSpecsFrom(["b1 feat=x"])).toThrow(/unknown setting "feat"/);
    expect(() => builderSpecsFrom(["x1"])).toThrow(/must start with the builder/);
    expect(() => builderSpecsFrom(["b0 nix=2.9"])).toThrow(/there is no lab Nix "2.9"/);
    expect(() => resolveLabPlan({ firstAddress: "10.0.0.1" })).toThrow(/not a loopback address/);
    expect(() => resolveLabPlan({ firstAddress: "127.0.0.250", builders: 10 })).toThrow(/run past/);
    expect(() => resolveLabPlan({ dir: "/var/lib/my lab" })).toThrow(/not usable/);
    expect(() => resolveLabPlan({ builderSpecs: [{ features: ["a b"] }] })).toThrow(/not a Nix feature name/);
  });
});

describe("offload lab", () => {
  // b0 (kvm, nixos-test) runs this machine's Nix 2.8, b1 (benchmark only) Sid's 2.34.
  const builderSpecs: LabBuilderSpec[] = [{}, { nix: "2.34" }];
  let lab: Lab;
  /** An output built on builder 0, in its store only. */
  let builtOnB0: string;

  beforeAll(async () => {
    lab = await startTestLab({ builderSpecs });
  }, LAB_UP_TIMEOUT_MS);

  afterAll(async () => {
    await stopTestLab(lab);
  });

  test("up twice leaves one working lab: same keys, one host and one sshd per builder, one Include line", async () => {
    const again = await labUp({ dir: lab.dir, prefix: lab.prefix, firstAddress: lab.builders[0]!.address, builderSpecs });
    expect(again.builders.map((b) => [b.name, b.address, b.hostKey, b.signingKey, b.host])).toEqual(
      lab.builders.map((b) => [b.name, b.address, b.hostKey, b.signingKey, b.host]),
    );
    expect(again.signingKey).toBe(lab.signingKey);
    const hosts = await runningHosts();
    for (const builder of lab.builders) {
      expect((await psLines(builder.sshdConfig)).filter((line) => !/\sZ/.test(line))).toHaveLength(1);
      expect(hosts.filter((host) => host.dir === builder.dir)).toEqual([builder.host]);
    }
    const include = `Include ${lab.sshConfig}`;
    const lines = (await rootSshConfig(lab)).split("\n");
    expect(lines[0]).toBe(include);
    expect(lines.filter((line) => line === include)).toHaveLength(1);
  });

  test("each builder answers over ssh with the lab's config: its Nix, its own empty HOME", async () => {
    const [b0, b1] = lab.builders;
    expect(await ssh(lab, b0!, "nix-store --version && echo $HOME")).toMatch(new RegExp(`^nix-store \\(Nix\\) 2\\.8\\.0\n${b0!.home}\n$`));
    expect(await ssh(lab, b1!, "nix-store --version && echo $HOME")).toMatch(new RegExp(`^nix-store \\(Nix\\) 2\\.34\\.\\d+\n${b1!.home}\n$`));
  });

  test("a build on a builder lands in its own store, signed with its key", async () => {
    for (const builder of lab.builders) {
      const { expression, salt } = trivialDerivation();
      const out = (await ssh(lab, builder, `nix-build --no-out-link -E '${expression}'`)).trim();
      expect(out).toMatch(/^\/nix\/store\/[0-9a-z]{32}-lab-test$/);
      expect(await readFile(onMachine(builder.host, out), "utf8")).toBe(`${salt}\n`);
      expect(existsSync(out)).toBe(false); // another machine's store, not ours
      if (builder === lab.builders[0]) builtOnB0 = out;
      const info = await runInHost(builder.host, ["nix", ...NIX, "path-info", "--sigs", out]);
      expect(info.stdout).toContain(`${builder.name}-1:`);
      // The signature checks out against the public key the lab hands to offload.
      const verify = ["nix", ...NIX, "store", "verify", "--no-contents", "--option", "trusted-public-keys", builder.signingKey, "--sigs-needed", "1", out];
      expect(await runInHost(builder.host, verify)).toMatchObject({ code: 0 });
    }
  });

  test("Nix's own build-remote offloads through nix-machines, routed by features", async () => {
    const build = async (extra: string) => {
      const { expression, salt } = trivialDerivation(extra);
      const out = await buildRemotely(expression, lab.nixMachines);
      expect(await readFile(out, "utf8")).toBe(`${salt}\n`); // imported into the local store
      return lab.builders.filter((builder) => existsSync(onMachine(builder.host, out))).map((builder) => builder.name);
    };
    const [b0, b1] = lab.builders;
    expect(await build("")).toEqual([b0!.name]); // b1 only takes "benchmark" derivations
    expect(await build('requiredSystemFeatures = ["benchmark"];')).toEqual([b1!.name]);
  });

  test("builders' Nix trusts offload's lab key: a path it signed is accepted, an unsigned one refused", async () => {
    const { expression } = trivialDerivation();
    const local = (await exec("nix-build", ["-E", expression, "--no-out-link", "--option", "builders", "", "--option", "substituters", ""])).stdout.trim();
    // Through binary caches in the lab directory, which every builder sees: copying from one checks signatures.
    const cache = async (name: string) => {
      const uri = `file://${path.join(lab.dir, name)}`;
      await exec("nix", [...NIX, "copy", "--to", uri, local]);
      return uri;
    };
    const copyFrom = (builder: LabBuilder, uri: string) => runInHost(builder.host, ["nix", ...NIX, "copy", "--from", uri, local]);
    const unsigned = await cache("cache-unsigned");
    for (const builder of lab.builders) {
      const refused = await copyFrom(builder, unsigned);
      expect(`${refused.code} ${refused.stderr}`).toMatch(/^1 .*lacks a (valid )?signature/s);
    }
    await exec("nix", [...NIX, "store", "sign", "--key-file", lab.signingKeySecret, local]);
    const signed = await cache("cache-signed");
    for (const builder of lab.builders) {
      expect(await copyFrom(builder, signed)).toMatchObject({ code: 0 });
      expect(existsSync(onMachine(builder.host, local))).toBe(true);
    }
  });

  test("a master host of Nix 2.34 hands its non-root client's build to offload-hook, which builds it on a lab builder", async () => {
    const dir = path.join(lab.dir, "master");
    const master = await startMasterHost({
      dir,
      nix: "2.34",
      shared: [lab.dir], // the lab's config dir and client key
      nixConf: [`build-hook = ${HOOK}`, "max-jobs = 0"],
      daemonEnv: { OFFLOAD_CONFIG_DIR: lab.configDir, OFFLOAD_STATE_DIR: path.join(dir, "state"), OFFLOAD_CACHE_DIR: path.join(dir, "cache") },
    });
    try {
      const b1 = lab.builders[1]!; // the only one taking "benchmark"
      const { expression, salt } = trivialDerivation('requiredSystemFeatures = ["benchmark"];');
      const built = await runInHost(master, ["nix-build", "--no-out-link", "-E", expression], { user: CLIENT_USER, env: { NIX_REMOTE: "daemon" } });
      expect(`${built.code} ${built.stderr}`).toMatch(/^0 /);
      const out = built.stdout.trim();
      expect(await readFile(onMachine(master, out), "utf8")).toBe(`${salt}\n`);
      expect(existsSync(onMachine(b1.host, out))).toBe(true);
      expect((await runInHost(master, ["nix", ...NIX, "path-info", "--sigs", out])).stdout).toMatch(new RegExp(`\\s${b1.name}-1:`));
    } finally {
      await stopHost(master);
    }
  });

  test("a second lab runs beside it without clashing (as parallel test suites do)", async () => {
    const other = await startTestLab({ builders: 1 });
    try {
      expect(other.builders[0]!.name).not.toBe(lab.builders[0]!.name);
      expect(other.builders[0]!.address).not.toBe(lab.builders[0]!.address);
      const config = await rootSshConfig(lab);
      expect(config).toContain(`Include ${lab.sshConfig}\n`);
      expect(config).toContain(`Include ${other.sshConfig}\n`);
      // Nix's build-remote finds the second lab's alias through root's config as well.
      const { expression } = trivialDerivation();
      expect(existsSync(onMachine(other.builders[0]!.host, await buildRemotely(expression, other.nixMachines)))).toBe(true);
    } finally {
      await stopTestLab(other);
    }
    expect(await rootSshConfig(lab)).not.toContain(other.sshConfig);
    expect((await labStatus(lab.dir)).builders.every((b) => b.running && b.reachable)).toBe(true);
  });

  test("machines.ts and nix-machines carry the host keys the sshds present, and the builders' signing keys", async () => {
    const machines = await readFile(lab.machinesFile, "utf8");
    const nixMachines = (await readFile(lab.nixMachines, "utf8")).trim().split("\n");
    const acl = await readFile(lab.acl, "utf8");
    for (const [index, builder] of lab.builders.entries()) {
      const { stdout } = await exec("ssh-keyscan", ["-t", "ed25519", "-p", String(builder.port), builder.address]);
      const presented = stdout.trim().split(" ").slice(1).join(" ");
      expect(builder.hostKey.startsWith(`${presented} `)).toBe(true);
      expect(machines).toContain(`hostKey: ${JSON.stringify(builder.hostKey)}`);
      expect(machines).toContain(`name: "${builder.address}",\n    port: ${builder.port},`);
      expect(machines).toContain(`signingKey: ${JSON.stringify(builder.signingKey)}`);
      expect(acl).toContain(`\n${builder.signingKey}\n`);
      const fields = nixMachines[index]!.split(" ");
      expect(fields[0]).toBe(`ssh://${builder.name}`);
      expect(Buffer.from(fields[7]!, "base64").toString()).toBe(`${builder.hostKey}\n`);
    }
    const secret = await exec("stat", ["-c", "%a", lab.signingKeySecret, lab.clientKey, lab.machinesFile, lab.dir]);
    expect(secret.stdout.split("\n").slice(0, 4)).toEqual(["600", "600", "644", "755"]);
  });

  test("offload's own config loader accepts the lab's machines.ts (type check, safety, validation)", async () => {
    const loaded = await loadConfig({ config: lab.machinesFile, cacheDir: false });
    expect(loaded.machines.map((m) => [m.name, m.port, m.user, m.hostKey, m.privateKey, m.signingKey, m.features, m.mandatoryFeatures])).toEqual(
      lab.builders.map((b) => [b.address, b.port, "root", b.hostKey, lab.clientKey, b.signingKey, b.features, b.mandatoryFeatures]),
    );
  });

  test("offload's own SSH and serve clients reach a builder's store from its machines.ts record", async () => {
    const { machines } = await loadConfig({ config: lab.machinesFile, cacheDir: false });
    // No ssh config and no known_hosts: only what machines.ts says.
    const connection = await connectMachine(machines[0]!, { sshConfigPath: "/nonexistent", knownHostsFiles: [] });
    try {
      const { client, process } = await openServeSession(connection);
      const infos = await client.queryPathInfos([builtOnB0]);
      expect(infos.get(builtOnB0)?.signatures.some((sig) => sig.startsWith(`${lab.builders[0]!.name}-1:`))).toBe(true);
      process.close();
    } finally {
      connection.close();
    }
  });

  test("status reports every builder running and reachable, also through the CLI", async () => {
    const status = await labStatus(lab.dir);
    expect(status.builders.map((b) => [b.name, b.running, b.reachable, b.signingKeyName])).toEqual(
      lab.builders.map((b) => [b.name, true, true, `${b.name}-1`]),
    );
    const { stdout } = await runCommand(registerLab, lab.configDir, ["lab", "status", "--dir", lab.dir, "--json"]);
    expect(JSON.parse(stdout)).toEqual(status);
  });

  test("a lab under a world-writable directory is refused before anything is written", async () => {
    await expect(labUp({ dir: "/tmp/offload-lab-refused" })).rejects.toMatchObject({ code: "lab-unsafe-dir" });
    expect(existsSync("/tmp/offload-lab-refused")).toBe(false);
  });

  test("the Include goes before any Host block, once, and down removes exactly that line", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "offload-lab-include-"));
    try {
      const config = path.join(dir, "config");
      const original = "# mine\nHost foo\n  HostName 192.0.2.1\n";
      await writeFile(config, original, { mode: 0o600 });
      await addInclude(config, "/var/lib/a/ssh_config");
      await addInclude(config, "/var/lib/b/ssh_config");
      await addInclude(config, "/var/lib/a/ssh_config");
      expect(await readFile(config, "utf8")).toBe(`Include /var/lib/a/ssh_config\nInclude /var/lib/b/ssh_config\n${original}`);
      expect((await stat(config)).mode & 0o777).toBe(0o600);
      await removeInclude(config, "/var/lib/a/ssh_config");
      await removeInclude(config, "/var/lib/b/ssh_config");
      expect(await readFile(config, "utf8")).toBe(original);
      const fresh = path.join(dir, "new", "config");
      await addInclude(fresh, "/var/lib/a/ssh_config");
      expect((await stat(fresh)).mode & 0o777).toBe(0o600);
      expect((await stat(path.dirname(fresh))).mode & 0o777).toBe(0o700);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("down's sweep for unlisted sshds only matches builders of that very lab", () => {
    const listener = "sshd: /usr/sbin/sshd -f /var/lib/lab/lab-b0/sshd_config -E /var/lib/lab/lab-b0/sshd.log [listener]";
    expect(labSshdPattern("/var/lib/lab").test(listener)).toBe(true);
    expect(labSshdPattern("/var/lib").test(listener)).toBe(false);
    expect(labSshdPattern("/var/lib/la").test(listener)).toBe(false);
  });

  test("down leaves no process and removes the Include line", async () => {
    // A live session, so there is a child of the sshd to clean up too: the remote `sleep`
    // (args exactly "sleep 77.4321"; the local ssh client's args only end with it).
    const remoteSleeps = async () => (await psLines("sleep 77.4321")).filter((line) => /^\s*\d+\s+[^Z\s]\S*\s+sleep 77\.4321$/.test(line));
    const session = execFile("ssh", sshArgs(lab, lab.builders[0]!, "sleep 77.4321"));
    session.on("error", () => undefined);
    for (let waited = 0; (await remoteSleeps()).length === 0 && waited < 10_000; waited += 50) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(await remoteSleeps()).toHaveLength(1);
    await labDown(lab.dir);
    expect(await psLines(`${lab.dir}/`)).toEqual([]);
    expect(await remoteSleeps()).toEqual([]);
    expect(await rootSshConfig(lab)).not.toContain(`Include ${lab.sshConfig}`);
    const status = await labStatus(lab.dir);
    expect(status.builders.every((b) => !b.running && !b.reachable)).toBe(true);
    await labDown(lab.dir, { purge: true });
    expect(existsSync(lab.dir)).toBe(false);
  });
});
