// The SSH transport against a real OpenSSH sshd on loopback.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import type { Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OffloadError } from "../src/errors.js";
import { fingerprintOf, hostFieldMatches, parseOpenSshPublicKey } from "../src/remote/host-keys.js";
import { resolveSshTarget } from "../src/remote/ssh-config.js";
import { connectMachine } from "../src/remote/ssh.js";
import type { MachineTarget, RemoteProcess } from "../src/remote/ssh.js";
import { generateKey, startSshd } from "./support/sshd.js";
import type { TestSshd } from "./support/sshd.js";

const HOST = "127.0.0.61";

async function freePort(host: string): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function collect(process: RemoteProcess): Promise<{ stdout: string; stderr: string; code: number | null }> {
  let stdout = "";
  let stderr = "";
  process.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  process.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  process.stdin.end();
  const { code } = await process.exit;
  return { stdout, stderr, code };
}

async function refusal(promise: Promise<unknown>): Promise<OffloadError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(OffloadError);
    return error as OffloadError;
  }
  throw new Error("expected the connection to be refused");
}

let sshd: TestSshd;
let work: string;
let emptyKnownHosts: string;

beforeAll(async () => {
  sshd = await startSshd({ host: HOST, port: await freePort(HOST) });
  work = mkdtempSync(join(tmpdir(), "offload-ssh-test-"));
  emptyKnownHosts = join(work, "known_hosts.empty");
  writeFileSync(emptyKnownHosts, "");
});

afterAll(async () => {
  await sshd?.stop();
  rmSync(work, { recursive: true, force: true });
});

function machine(extra: Partial<MachineTarget> = {}): MachineTarget {
  return { name: HOST, port: sshd.port, privateKey: sshd.clientKeyPath, connectTimeout: 5, ...extra };
}

// No ~/.ssh of the test machine leaks in.
const isolated = () => ({
  sshConfigPath: join(work, "no-ssh-config"),
  systemSshConfigPath: null,
  knownHostsFiles: [emptyKnownHosts],
  homeDir: work,
});

describe("host keys", () => {
  test("fingerprintOf matches ssh-keygen -lf", () => {
    const printed = execFileSync("ssh-keygen", ["-lf", join(sshd.dir, "host_key.pub")], { encoding: "utf8" }).split(" ")[1];
    expect(fingerprintOf(parseOpenSshPublicKey(sshd.hostKeyLine).blob)).toBe(printed);
  });

  test("parseOpenSshPublicKey rejects a line whose type and blob disagree", () => {
    const { blob } = parseOpenSshPublicKey(sshd.hostKeyLine);
    expect(() => parseOpenSshPublicKey(`ssh-rsa ${blob.toString("base64")}`)).toThrow(/blob is a "ssh-ed25519" key/);
    expect(() => parseOpenSshPublicKey("ssh-ed25519")).toThrow(OffloadError);
  });

  test("known_hosts host patterns: lists, wildcards, negation", () => {
    expect(hostFieldMatches("a,b,[127.0.0.1]:2222", "[127.0.0.1]:2222")).toBe(true);
    expect(hostFieldMatches("*.example.org,!bad.example.org", "good.example.org")).toBe(true);
    expect(hostFieldMatches("*.example.org,!bad.example.org", "bad.example.org")).toBe(false);
    expect(hostFieldMatches("127.0.0.1", "[127.0.0.1]:2222")).toBe(false);
  });
});

describe("~/.ssh/config resolution", () => {
  test("Include (relative to ~/.ssh, globbed, nested in a Host block) is followed; first value wins", () => {
    const home = join(work, "include-home");
    mkdirSync(join(home, ".ssh", "conf.d"), { recursive: true });
    writeFileSync(join(home, ".ssh", "conf.d", "10-builder.conf"), "Host inc-builder\n  HostName 10.0.0.7\n  Port 2207\n  UserKnownHostsFile ~/kh1 %d/kh2\n");
    writeFileSync(join(home, ".ssh", "conf.d", "20-later.conf"), "Host inc-builder\n  Port 9999\n  User nix\n");
    writeFileSync(join(home, ".ssh", "only-for-x.conf"), "Host other\n  User other-user\n");
    writeFileSync(join(home, ".ssh", "config"), "Include conf.d/*.conf\nHost x-box\n  Include only-for-x.conf\n  IdentityFile ~/.ssh/x_%r_%h\n");
    const system = join(work, "include-system-config");
    writeFileSync(system, "User system-default\n");
    const options = { sshConfigPath: join(home, ".ssh", "config"), systemSshConfigPath: system, homeDir: home };
    expect(resolveSshTarget({ name: "inc-builder" }, options)).toMatchObject({
      host: "10.0.0.7",
      port: 2207,
      user: "nix",
      knownHostsName: "[10.0.0.7]:2207",
      keySource: "default",
      identityFiles: [join(home, ".ssh", "id_ed25519"), join(home, ".ssh", "id_rsa")],
      knownHostsFiles: [join(home, "kh1"), join(home, "kh2"), "/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"],
    });
    // the IdentityFile after the Include still belongs to Host x-box; the system config fills in User
    expect(resolveSshTarget({ name: "x-box" }, options)).toMatchObject({
      host: "x-box",
      port: 22,
      user: "system-default",
      identityFiles: [join(home, ".ssh", "x_system-default_x-box")],
      keySource: "ssh-config",
    });
    writeFileSync(join(home, "jump-config"), "Host behind-jump\n  ProxyJump bastion\n");
    expect(() => resolveSshTarget({ name: "behind-jump" }, { ...options, sshConfigPath: join(home, "jump-config") })).toThrow(/ProxyJump bastion/);
    // the machine record beats the config
    expect(resolveSshTarget({ name: "inc-builder", port: 22, user: "root", privateKey: "/k" }, options)).toMatchObject({
      port: 22,
      user: "root",
      identityFiles: ["/k"],
      knownHostsName: "10.0.0.7",
    });
  });
});

describe("connectMachine against a real sshd", () => {
  test("pinned host key: runs a command, separates stdout, stderr and exit code", async () => {
    const connection = await connectMachine(machine({ hostKey: sshd.hostKeyLine }), isolated());
    try {
      const result = await collect(await connection.exec("echo out; echo err >&2; exit 3"));
      expect(result).toEqual({ stdout: "out\n", stderr: "err\n", code: 3 });
      const cat = await connection.exec("cat");
      let echoed = "";
      cat.stdout.on("data", (chunk: Buffer) => (echoed += chunk.toString()));
      cat.stdin.end("through stdin");
      expect(await cat.exit).toEqual({ code: 0 });
      expect(echoed).toBe("through stdin");
    } finally {
      connection.close();
    }
  });

  test("a different pinned key is refused, naming both fingerprints", async () => {
    const otherLine = generateKey(join(work, "other_host_key"));
    const error = await refusal(connectMachine(machine({ hostKey: otherLine }), isolated()));
    expect(error.code).toBe("host-key-mismatch");
    expect(error.message).toContain(fingerprintOf(parseOpenSshPublicKey(otherLine).blob));
    expect(error.message).toContain(fingerprintOf(parseOpenSshPublicKey(sshd.hostKeyLine).blob));
  });

  test("a pinned key of a type the host does not have (RSA pin, ed25519 host) is a mismatch", async () => {
    const rsaLine = generateKey(join(work, "rsa_host_key"), "rsa");
    const error = await refusal(connectMachine(machine({ hostKey: rsaLine }), isolated()));
    expect(error.code).toBe("host-key-mismatch");
    expect(error.message).toContain("offers no host key of the pinned/known type (ssh-rsa)");
  });

  test("an unknown host is refused with its fingerprint and the exact line to pin", async () => {
    const error = await refusal(connectMachine(machine(), isolated()));
    expect(error.code).toBe("host-key-unknown");
    const printed = execFileSync("ssh-keygen", ["-lf", join(sshd.dir, "host_key.pub")], { encoding: "utf8" }).split(" ")[1]!;
    expect(error.message).toContain(printed);
    const [type, blob] = sshd.hostKeyLine.split(" ");
    expect(error.fix).toContain(`hostKey: "${type} ${blob}"`);
    expect(error.fix).toContain(`[${HOST}]:${sshd.port} ${type} ${blob}`);
  });

  test("a plain [host]:port known_hosts entry (in a comma list) is accepted", async () => {
    const file = join(work, "known_hosts.plain");
    writeFileSync(file, `# comment\nsomewhere,[${HOST}]:${sshd.port} ${sshd.hostKeyLine}\n`);
    const connection = await connectMachine(machine(), { ...isolated(), knownHostsFiles: [file] });
    expect((await collect(await connection.exec("true"))).code).toBe(0);
    connection.close();
  });

  test("a hashed known_hosts entry (ssh-keygen -H) is accepted", async () => {
    const file = join(work, "known_hosts.hashed");
    writeFileSync(file, `[${HOST}]:${sshd.port} ${sshd.hostKeyLine}\n`);
    execFileSync("ssh-keygen", ["-q", "-H", "-f", file]);
    const connection = await connectMachine(machine(), { ...isolated(), knownHostsFiles: [file] });
    expect((await collect(await connection.exec("true"))).code).toBe(0);
    connection.close();
  });

  test("a known_hosts entry with another key for the host is a mismatch, not unknown", async () => {
    const file = join(work, "known_hosts.wrong");
    writeFileSync(file, `[${HOST}]:${sshd.port} ${generateKey(join(work, "wrong_host_key"))}\n`);
    const error = await refusal(connectMachine(machine(), { ...isolated(), knownHostsFiles: [file] }));
    expect(error.code).toBe("host-key-mismatch");
    expect(error.message).toContain(`${file}:1`);
  });

  test("a ~/.ssh/config alias supplies HostName, Port, User and IdentityFile", async () => {
    const config = join(work, "ssh_config");
    writeFileSync(config, `Host builder-alias\n  HostName ${HOST}\n  Port ${sshd.port}\n  User root\n  IdentityFile ${sshd.clientKeyPath}\n`);
    const connection = await connectMachine({ name: "builder-alias", hostKey: sshd.hostKeyLine, connectTimeout: 5 }, { ...isolated(), sshConfigPath: config });
    expect(connection.target).toMatchObject({ host: HOST, port: sshd.port, user: "root" });
    expect((await collect(await connection.exec("whoami"))).stdout).toBe("root\n");
    connection.close();
  });

  test("IdentityFile keys are tried in turn like ssh: missing, too-open and unauthorized ones do not block the good one", async () => {
    const stranger = join(work, "stranger_first");
    generateKey(stranger);
    const loose = join(work, "loose_first");
    copyFileSync(sshd.clientKeyPath, loose);
    chmodSync(loose, 0o644);
    const config = join(work, "ssh_config_many_keys");
    writeFileSync(
      config,
      `Host many-keys\n  HostName ${HOST}\n  Port ${sshd.port}\n  IdentityFile ${join(work, "absent")}\n  IdentityFile ${loose}\n  IdentityFile ${stranger}\n  IdentityFile ${sshd.clientKeyPath}\n`,
    );
    const connection = await connectMachine({ name: "many-keys", hostKey: sshd.hostKeyLine }, { ...isolated(), sshConfigPath: config });
    expect((await collect(await connection.exec("true"))).code).toBe(0);
    connection.close();
    // with nothing usable left, the most telling problem is reported
    writeFileSync(config, `Host many-keys\n  HostName ${HOST}\n  IdentityFile ${join(work, "absent")}\n  IdentityFile ${loose}\n`);
    await expect(connectMachine({ name: "many-keys", hostKey: sshd.hostKeyLine }, { ...isolated(), sshConfigPath: config })).rejects.toMatchObject({
      code: "key-file-too-open",
    });
  });

  test("a key the server does not authorize → auth-refused naming the authorized_keys line", async () => {
    const stranger = join(work, "stranger_key");
    const publicLine = generateKey(stranger);
    const error = await refusal(connectMachine(machine({ hostKey: sshd.hostKeyLine, privateKey: stranger }), isolated()));
    expect(error.code).toBe("auth-refused");
    expect(error.fix).toContain(publicLine.split(" ").slice(0, 2).join(" "));
    expect(error.fix).toContain("authorized_keys");
  });

  test("a closed port → tcp-refused", async () => {
    const port = await freePort(HOST);
    const error = await refusal(connectMachine(machine({ port, hostKey: sshd.hostKeyLine }), isolated()));
    expect(error.code).toBe("tcp-refused");
  });

  test("a server that accepts TCP but never speaks SSH → unreachable after connectTimeout", async () => {
    const sockets: import("node:net").Socket[] = [];
    const silent: Server = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, HOST, resolve));
    const port = (silent.address() as { port: number }).port;
    const started = Date.now();
    try {
      const error = await refusal(connectMachine(machine({ port, hostKey: sshd.hostKeyLine, connectTimeout: 1 }), isolated()));
      expect(error.code).toBe("unreachable");
      expect(Date.now() - started).toBeGreaterThanOrEqual(950);
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      sockets.forEach((socket) => socket.destroy());
      silent.close();
    }
  });

  test("a group/world-readable private key → key-file-too-open with chmod fix", async () => {
    const loose = join(work, "loose_key");
    copyFileSync(sshd.clientKeyPath, loose);
    chmodSync(loose, 0o644);
    const error = await refusal(connectMachine(machine({ hostKey: sshd.hostKeyLine, privateKey: loose }), isolated()));
    expect(error.code).toBe("key-file-too-open");
    expect(error.fix).toBe(`chmod 600 ${loose}`);
  });

  test("a missing or passphrase-protected key → key-file-unreadable", async () => {
    const missing = await refusal(connectMachine(machine({ privateKey: join(work, "nope") }), isolated()));
    expect(missing.code).toBe("key-file-unreadable");
    const locked = join(work, "locked_key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "secret", "-f", locked]);
    const error = await refusal(connectMachine(machine({ hostKey: sshd.hostKeyLine, privateKey: locked }), isolated()));
    expect(error.code).toBe("key-file-unreadable");
    expect(error.message).toMatch(/passphrase/);
  });

  test("a connection that dies under a running command settles its exit (code null) instead of hanging", async () => {
    const connection = await connectMachine(machine({ hostKey: sshd.hostKeyLine }), isolated());
    const sleeper = await connection.exec("echo running; exec sleep 60");
    sleeper.stderr.resume();
    await new Promise((resolve) => sleeper.stdout.once("data", resolve)); // the command runs
    sleeper.stdout.resume();
    // The per-connection sshd processes are children of the sshd this test started.
    execFileSync("pkill", ["-KILL", "-P", String(sshd.pid)]);
    const started = Date.now();
    expect(await sleeper.exit).toEqual({ code: null });
    expect(Date.now() - started).toBeLessThan(5000);
    connection.close();
  });

  test("a missing remote command surfaces as exit 127", async () => {
    const connection = await connectMachine(machine({ hostKey: sshd.hostKeyLine }), isolated());
    const result = await collect(await connection.exec("nix-store-does-not-exist --serve"));
    expect(result.code).toBe(127);
    expect(result.stderr).toMatch(/not found/);
    connection.close();
  });
});
