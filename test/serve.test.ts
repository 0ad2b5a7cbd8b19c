// The serve-protocol client against real Nix 2.8: a local `nix-store --serve --write` on the
// default store and on chroot stores, and the same over SSH to a loopback sshd.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFileSync, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OffloadError } from "../src/errors.js";
import { generateKeyPair } from "../src/nix/keys.js";
import { parseDerivation } from "../src/nix/drv.js";
import type { Derivation } from "../src/nix/drv.js";
import { decodeNix32 } from "../src/nix/nix32.js";
import type { PathInfo } from "../src/nix/path-info.js";
import { signPath } from "../src/nix/signature.js";
import { connectMachine } from "../src/remote/ssh.js";
import type { SshConnection } from "../src/remote/ssh.js";
import { openLocalStore } from "../src/store/local-store.js";
import type { LocalStore } from "../src/store/local-store.js";
import { openServeSession } from "../src/store/serve-session.js";
import { ServeClient } from "../src/store/serve.js";
import type { Lab } from "../src/lab/index.js";
import { startTestLab, stopTestLab } from "./support/lab.js";
import { startSshd } from "./support/sshd.js";
import type { TestSshd } from "./support/sshd.js";

const NO_NETWORK = ["--option", "substituters", ""];

function run(program: string, args: string[], env: NodeJS.ProcessEnv = process.env): string {
  return execFileSync(program, args, { encoding: "utf8", env, stdio: ["ignore", "pipe", "pipe"] }).trim();
}

/** A .drv of the default store, parsed. */
function derivationAt(drvPath: string): Derivation {
  return parseDerivation(readFileSync(drvPath, "utf8"), drvPath);
}

function nixExpression(dir: string, name: string, script: string): string {
  const file = join(dir, `${name}.nix`);
  writeFileSync(
    file,
    `derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; ` +
      `args = [ "-c" ${JSON.stringify(script)} ]; salt = "${Date.now()}-${Math.random()}"; }\n`,
  );
  return file;
}

async function collectNar(client: ServeClient, path: string): Promise<{ bytes: Buffer; narHash: Buffer; narSize: number }> {
  const parts: Buffer[] = [];
  const digest = await client.dumpStorePath(path, (bytes) => {
    parts.push(Buffer.from(bytes));
  });
  return { bytes: Buffer.concat(parts), ...digest };
}

async function* chunked(bytes: Buffer, size = 1000): AsyncGenerator<Buffer> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

let work: string;
let local: LocalStore;
let fileA: string; // a flat file added with nix-store --add
let dirB: string; // a directory (file, executable, symlink)
let src: string; // builtins.toFile source, referenced by out
let out: string; // a built output: references src, deriver known
let drv: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "offload-serve-test-"));
  const salt = `${process.pid}-${Date.now()}`;
  writeFileSync(join(work, "a.txt"), `file a ${salt}\n`);
  fileA = run("nix-store", ["--add", join(work, "a.txt")]);
  const tree = join(work, "b");
  mkdirSync(join(tree, "sub"), { recursive: true });
  writeFileSync(join(tree, "sub", "data"), `data ${salt}\n`.repeat(5000));
  writeFileSync(join(tree, "run.sh"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
  symlinkSync("sub/data", join(tree, "link"));
  dirB = run("nix-store", ["--add", tree]);
  const expr = join(work, "out.nix");
  writeFileSync(
    expr,
    `let src = builtins.toFile "offload-src" "source ${salt}"; in derivation { name = "offload-out"; ` +
      `system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "cat \${src} > $out; echo \${src} >> $out" ]; }\n`,
  );
  drv = run("nix-instantiate", [...NO_NETWORK, expr]);
  out = run("nix-store", [...NO_NETWORK, "--realise", drv]);
  src = run("nix-store", ["--query", "--references", out]);
  local = await openLocalStore();
});

afterAll(async () => {
  await local?.close();
  execFileSync("chmod", ["-R", "u+w", work]);
  rmSync(work, { recursive: true, force: true });
});

/** A fresh chroot store whose builds can reach /bin/sh, and the env that points nix at it. */
function chrootStore(name: string): { dir: string; env: NodeJS.ProcessEnv } {
  const dir = join(work, name);
  const conf = join(work, `${name}.conf`);
  writeFileSync(conf, `store = ${dir}\nextra-sandbox-paths = /bin /lib /lib64 /usr\nsubstituters =\n`);
  return { dir, env: { ...process.env, NIX_USER_CONF_FILES: conf } };
}

describe("ServeClient against a local nix-store --serve --write", () => {
  test("handshake: Nix 2.8 speaks serve protocol 2.7", () => {
    expect(local.client.remoteVersion).toBe(0x207);
  });

  test("queryValidPaths returns the valid subset", async () => {
    const absent = `/nix/store/${"0".repeat(32)}-offload-absent`;
    expect(await local.client.queryValidPaths([fileA, absent, out])).toEqual(new Set([fileA, out]));
    expect(await local.client.queryValidPaths([absent], { lock: true })).toEqual(new Set());
    expect(await local.client.queryValidPaths([])).toEqual(new Set());
  });

  test("queryPathInfos equals nix-store --query --hash/--references/--deriver/--size", async () => {
    const infos = await local.client.queryPathInfos([out, fileA, `/nix/store/${"1".repeat(32)}-offload-absent`]);
    expect([...infos.keys()].sort()).toEqual([fileA, out].sort());
    for (const path of [out, fileA]) {
      const info = infos.get(path)!;
      expect(info.path).toBe(path);
      expect(info.narHash).toEqual(decodeNix32(run("nix-store", ["--query", "--hash", path]).slice("sha256:".length)));
      expect(info.narSize).toBe(Number(run("nix-store", ["--query", "--size", path])));
      const references = run("nix-store", ["--query", "--references", path]);
      expect(info.references).toEqual(references === "" ? [] : references.split("\n").sort());
      const deriver = run("nix-store", ["--query", "--deriver", path]);
      expect(info.deriver).toBe(deriver === "unknown-deriver" ? undefined : deriver);
    }
    expect(infos.get(out)!.references).toEqual([src]);
    expect(infos.get(out)!.deriver).toBe(drv);
    // nix-store --add makes content-addressed paths
    expect(infos.get(fileA)!.contentAddress).toMatch(/^fixed:r:sha256:/);
  });

  test("dumpStorePath yields exactly the bytes of nix-store --dump", async () => {
    for (const path of [fileA, dirB, out]) {
      const nar = await collectNar(local.client, path);
      const expected = execFileSync("nix-store", ["--dump", path]);
      expect(nar.bytes.equals(expected)).toBe(true);
      expect(nar.narSize).toBe(expected.length);
      expect(nar.narHash).toEqual(decodeNix32(run("nix-store", ["--query", "--hash", path]).slice("sha256:".length)));
    }
  });

  test("queryClosure equals nix-store --query --requisites", async () => {
    const expected = run("nix-store", ["--query", "--requisites", out]).split("\n");
    expect(await local.client.queryClosure([out], false)).toEqual(new Set(expected));
    // with includeOutputs the .drv's closure gains its built output
    expect((await local.client.queryClosure([drv], true)).has(out)).toBe(true);
  });

  test("concurrent requests are serialized and each gets its own reply", async () => {
    const [valid, infos, nar, closure] = await Promise.all([
      local.client.queryValidPaths([fileA, dirB]),
      local.client.queryPathInfos([dirB]),
      collectNar(local.client, dirB),
      local.client.queryClosure([out], false),
    ]);
    expect(valid).toEqual(new Set([fileA, dirB]));
    expect(infos.get(dirB)!.narSize).toBe(nar.narSize);
    expect(closure).toEqual(new Set([out, src]));
  });

  test("a request the server dies on becomes a protocol error quoting its stderr; the client stays failed", async () => {
    const doomed = await openLocalStore();
    const missing = `/nix/store/${"2".repeat(32)}-offload-missing`;
    let failure: unknown;
    try {
      await doomed.client.dumpStorePath(missing, () => {});
    } catch (error) {
      failure = error;
    }
    expect(failure).toBeInstanceOf(OffloadError);
    expect((failure as OffloadError).code).toBe("protocol");
    expect((failure as OffloadError).message).toMatch(/expected the reply to DumpStorePath, but the connection ended \(server exited with 1\).*is not valid/s);
    await expect(doomed.client.queryValidPaths([fileA])).rejects.toBe(failure);
    await doomed.close();
  });

  test("paths that are not store paths are refused before they reach (and kill) the server", async () => {
    await expect(local.client.queryValidPaths(["/etc/passwd"])).rejects.toMatchObject({ code: "protocol" });
    expect(await local.client.queryValidPaths([fileA])).toEqual(new Set([fileA]));
  });

  test("a missing nix-store binary → nix-store-not-found", async () => {
    await expect(openLocalStore({ nixStore: "/nonexistent/nix-store" })).rejects.toMatchObject({ code: "nix-store-not-found" });
  });
});

describe("ServeClient facing broken servers and sources", () => {
  /** ServeClient on an arbitrary child process (stderr collected). */
  async function attach(program: string, args: string[]) {
    const child = spawn(program, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exit = new Promise<{ code: number | null; signal?: string }>((resolve) =>
      child.once("close", (code, signal) => resolve(code === null ? { code, signal: signal ?? undefined } : { code })),
    );
    const connecting = ServeClient.connect({ stdin: child.stdin!, stdout: child.stdout!, exit, stderrTail: () => stderr }, { label: "test server" });
    return { child, exit, connecting };
  }

  test("text instead of the greeting (a chatty shell startup file) → protocol mismatch quoting it", async () => {
    const { connecting } = await attach("sh", ["-c", "echo 'Welcome to builder'; cat > /dev/null"]);
    await expect(connecting).rejects.toMatchObject({
      code: "protocol",
      message: expect.stringContaining('got "Welcome '),
      fix: expect.stringContaining(".bashrc"),
    });
  });

  test("a server older than protocol 2.5 is refused", async () => {
    const { connecting } = await attach("sh", ["-c", "printf '\\313\\356\\122\\124\\0\\0\\0\\0\\004\\002\\0\\0\\0\\0\\0\\0'; cat > /dev/null"]);
    await expect(connecting).rejects.toMatchObject({ code: "protocol", message: expect.stringContaining("serve protocol 2.4") });
  });

  test("a server killed mid-upload → protocol error naming how it ended", async () => {
    const { dir } = chrootStore("killed");
    const { child, connecting } = await attach("nix-store", ["--serve", "--write", "--store", dir]);
    const client = await connecting;
    child.kill("SIGKILL");
    const info = (await local.client.queryPathInfos([dirB])).get(dirB)!;
    const nar = (await collectNar(local.client, dirB)).bytes;
    await expect(client.addToStoreNar(info, chunked(nar))).rejects.toMatchObject({
      code: "protocol",
      message: expect.stringMatching(/expected the reply to AddToStoreNar, but the connection ended \(server exited with SIGKILL\)/),
    });
  });

  test("a failing download sink keeps its identity (download-sink)", async () => {
    const session = await openLocalStore();
    const failure = session.client.dumpStorePath(dirB, () => {
      throw new Error("no space left on device");
    });
    await expect(failure).rejects.toMatchObject({ code: "download-sink", message: expect.stringContaining("no space left") });
    await session.close();
  });

  test("a failing upload source keeps its identity (upload-source) and leaves the client unusable", async () => {
    const { dir, env } = chrootStore("source");
    const target = await openLocalStore({ store: dir, env });
    const info = (await local.client.queryPathInfos([dirB])).get(dirB)!;
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(16);
      throw new Error("disk on fire");
    }
    const failure = target.client.addToStoreNar(info, failing());
    await expect(failure).rejects.toMatchObject({ code: "upload-source", message: expect.stringContaining("disk on fire") });
    await expect(target.client.queryValidPaths([dirB])).rejects.toMatchObject({ code: "upload-source" });
    await target.close();
  });
});

describe("ServeClient writing into a chroot store", () => {
  test("addToStoreNar keeps signatures, deriver and references", async () => {
    const { dir, env } = chrootStore("sigs");
    const target = await openLocalStore({ store: dir, env });
    try {
      const key = generateKeyPair("offload-test-1");
      const infos = await local.client.queryPathInfos([src, out]);
      for (const path of [src, out]) {
        const info = infos.get(path)!;
        const signed: PathInfo = { ...info, signatures: [signPath(info, key)] };
        const nar = await collectNar(local.client, path);
        await target.client.addToStoreNar(signed, chunked(nar.bytes));
      }
      const copied = await target.client.queryPathInfos([src, out]);
      expect(copied.get(out)).toMatchObject({ deriver: drv, references: [src], narSize: infos.get(out)!.narSize });
      expect(copied.get(out)!.narHash).toEqual(infos.get(out)!.narHash);
      expect(copied.get(out)!.signatures).toEqual([signPath(infos.get(out)!, key)]);
      const shown = run("nix", ["path-info", "--store", dir, "--sigs", "--extra-experimental-features", "nix-command", out]);
      expect(shown).toContain(signPath(infos.get(out)!, key));
      expect(execFileSync("cat", [join(dir, out)]).toString()).toContain(src);
    } finally {
      await target.close();
    }
  });

  test("addToStoreNar refuses a NAR whose length differs from narSize", async () => {
    const { dir, env } = chrootStore("short");
    const target = await openLocalStore({ store: dir, env });
    const info = (await local.client.queryPathInfos([fileA])).get(fileA)!;
    const nar = await collectNar(local.client, fileA);
    await expect(target.client.addToStoreNar(info, chunked(nar.bytes.subarray(0, nar.bytes.length - 8)))).rejects.toMatchObject({
      code: "upload-source",
      message: expect.stringContaining("fewer bytes than narSize"),
    });
    await target.close();
  });

  test("NIX_HELD_LOCKS in env lets an import proceed while another process holds the output lock (as the daemon does)", async () => {
    const { dir, env } = chrootStore("locks");
    const info = (await local.client.queryPathInfos([fileA])).get(fileA)!;
    const nar = (await collectNar(local.client, fileA)).bytes;
    await (await openLocalStore({ store: dir, env })).close(); // creates the store directories
    const lockFile = join(dir, `${fileA}.lock`);
    // Its own process group, so that flock and its sleep (which inherits the lock) end together.
    const holder = spawn("flock", [lockFile, "sleep", "60"], { stdio: "ignore", detached: true });
    const release = () => {
      if (holder.exitCode === null && holder.signalCode === null) process.kill(-holder.pid!, "SIGTERM");
    };
    for (let i = 0; i < 50 && !existsSync(lockFile); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    try {
      const blocked = await openLocalStore({ store: dir, env });
      let done = false;
      const adding = blocked.client.addToStoreNar(info, chunked(nar)).then(() => (done = true));
      // Waiting for the lock, as the kernel says (a "->" line of /proc/locks for its inode), within 10 s.
      const waiter = new RegExp(`^\\d+: -> .*:${statSync(lockFile).ino} `, "m");
      const waiting = () => waiter.test(readFileSync("/proc/locks", "utf8"));
      for (let i = 0; i < 200 && !waiting(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(waiting()).toBe(true);
      expect(done).toBe(false);
      const held = await openLocalStore({ store: dir, env: { ...env, NIX_HELD_LOCKS: fileA } });
      await held.client.addToStoreNar(info, chunked(nar));
      expect(await held.client.queryValidPaths([fileA])).toEqual(new Set([fileA]));
      await held.close();
      release();
      await adding; // once the lock is free it finds the path valid and finishes
      await blocked.close();
    } finally {
      release();
    }
  });

  test("importPaths takes a nix-store --export stream", async () => {
    const { dir, env } = chrootStore("import");
    const target = await openLocalStore({ store: dir, env });
    try {
      const stream = execFileSync("nix-store", ["--export", src, out]);
      await target.client.importPaths(chunked(stream, 4096));
      expect(await target.client.queryValidPaths([src, out])).toEqual(new Set([src, out]));
    } finally {
      await target.close();
    }
  });

  test("buildDerivation builds a trivial derivation (Built, output valid) and reports a failing one", async () => {
    const { dir, env } = chrootStore("build");
    const target = await openLocalStore({ store: dir, env });
    try {
      const goodDrv = run("nix-instantiate", [...NO_NETWORK, nixExpression(work, "offload-good", "echo $salt > $out")]);
      const good = derivationAt(goodDrv);
      const result = await target.client.buildDerivation(goodDrv, good, good.inputSrcs, { maxSilentTime: 60, buildTimeout: 120 });
      expect(result).toMatchObject({ status: "Built", statusCode: 0, success: true, errorMsg: "", timesBuilt: 1 });
      expect(result.startTime).toBeGreaterThan(1.6e9);
      expect(result.stopTime).toBeGreaterThanOrEqual(result.startTime);
      const goodOut = good.outputs.get("out")!.path;
      // Nix 2.8 reports realisations even for input-addressed outputs; outPath arrives as a base name
      expect([...result.builtOutputs.keys()]).toEqual([expect.stringMatching(/^sha256:[0-9a-f]{64}!out$/)]);
      expect([...result.builtOutputs.values()]).toEqual([{ outPath: goodOut, signatures: [] }]);
      expect(await target.client.queryValidPaths([goodOut])).toEqual(new Set([goodOut]));
      expect(execFileSync("cat", [join(dir, goodOut)]).toString()).toBe(`${good.env.get("salt")}\n`);

      const again = await target.client.buildDerivation(goodDrv, good, good.inputSrcs, { maxSilentTime: 60, buildTimeout: 120 });
      expect(again).toMatchObject({ status: "AlreadyValid", success: true });

      const badDrv = run("nix-instantiate", [...NO_NETWORK, nixExpression(work, "offload-bad", "echo doomed-build-log >&2; exit 3")]);
      const bad = derivationAt(badDrv);
      const failed = await target.client.buildDerivation(badDrv, bad, bad.inputSrcs, { maxSilentTime: 60, buildTimeout: 120 });
      expect(failed).toMatchObject({ status: "PermanentFailure", statusCode: 3, success: false });
      expect(failed.errorMsg).toContain(`builder for '${badDrv}' failed with exit code 3`);
      // the build log goes to the server's stderr, which the client leaves to its owner
      expect(target.stderrText()).toContain("doomed-build-log");
      // the connection is still usable after a failed build
      expect(await target.client.queryValidPaths([goodOut])).toEqual(new Set([goodOut]));
    } finally {
      await target.close();
    }
  });

  test("buildDerivation with a buildTimeout → TimedOut", async () => {
    const { dir, env } = chrootStore("timeout");
    const target = await openLocalStore({ store: dir, env });
    try {
      const slowDrv = run("nix-instantiate", [...NO_NETWORK, nixExpression(work, "offload-slow", "/usr/bin/sleep 30; echo > $out")]);
      const slow = derivationAt(slowDrv);
      const result = await target.client.buildDerivation(slowDrv, slow, slow.inputSrcs, { maxSilentTime: 0, buildTimeout: 1 });
      expect(result).toMatchObject({ status: "TimedOut", success: false });
    } finally {
      await target.close();
    }
  });
});

describe("ServeClient over SSH to a loopback builder with its own chroot store", () => {
  const HOST = "127.0.0.62";
  let sshd: TestSshd;
  let connection: SshConnection;

  beforeAll(async () => {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, HOST, resolve));
    const port = (probe.address() as { port: number }).port;
    await new Promise((resolve) => probe.close(resolve));
    sshd = await startSshd({ host: HOST, port });
    connection = await connectMachine(
      { name: HOST, port, privateKey: sshd.clientKeyPath, hostKey: sshd.hostKeyLine, connectTimeout: 10 },
      { sshConfigPath: join(sshd.dir, "none"), knownHostsFiles: [], homeDir: sshd.dir },
    );
  });

  afterAll(async () => {
    connection?.close();
    await sshd?.stop();
  });

  test("handshake, queryValidPaths, upload, buildDerivation and download over one exec channel", async () => {
    const session = await openServeSession(connection, { label: "loopback builder" });
    const { client } = session;
    try {
      expect(client.remoteVersion).toBe(0x207);
      expect(await client.queryValidPaths([fileA])).toEqual(new Set()); // a separate store
      const info = (await local.client.queryPathInfos([fileA])).get(fileA)!;
      await client.addToStoreNar(info, chunked((await collectNar(local.client, fileA)).bytes));
      expect(await client.queryValidPaths([fileA])).toEqual(new Set([fileA]));

      // the .drv exists only locally: BuildDerivation carries the whole derivation
      const drvPath = run("nix-instantiate", [...NO_NETWORK, nixExpression(work, "offload-remote", "echo $salt > $out; echo remote-log-line >&2")]);
      const basic = derivationAt(drvPath);
      const result = await client.buildDerivation(drvPath, basic, basic.inputSrcs, { maxSilentTime: 60, buildTimeout: 120 });
      expect(result).toMatchObject({ status: "Built", success: true });
      const output = basic.outputs.get("out")!.path;
      expect(await client.queryValidPaths([output])).toEqual(new Set([output]));
      const nar = await collectNar(client, output);
      // nix-store --dump reads the file system path as given, even with --store: name the chroot's real path
      expect(nar.bytes.equals(execFileSync("nix-store", ["--dump", join(sshd.storeDir, output)]))).toBe(true);
      expect(session.stderrTail()).toContain("remote-log-line");
    } finally {
      client.close();
      expect(await session.process.exit).toEqual({ code: 0 });
    }
  });

  test("closing the session interrupts a running remote build (the server watches its stdin)", async () => {
    const session = await openServeSession(connection);
    session.process.stderr.resume();
    const marker = 3000 + Math.floor(Math.random() * 999);
    const drvPath = run("nix-instantiate", [...NO_NETWORK, nixExpression(work, "offload-endless", `/usr/bin/sleep ${marker}; echo > $out`)]);
    const derivation = derivationAt(drvPath);
    const building = session.client.buildDerivation(drvPath, derivation, derivation.inputSrcs, { maxSilentTime: 0, buildTimeout: 0 });
    const running = () => execFileSync("ps", ["-eo", "args"], { encoding: "utf8" }).includes(`/usr/bin/sleep ${marker}`);
    for (let i = 0; i < 100 && !running(); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(running()).toBe(true);
    const started = Date.now();
    session.client.close();
    await expect(building).rejects.toMatchObject({ code: "protocol", message: expect.stringContaining("the connection ended") });
    await session.process.exit;
    for (let i = 0; i < 50 && running(); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(running()).toBe(false);
    expect(Date.now() - started).toBeLessThan(8000);
  });

  test("remoteStore is passed as --store (shell-quoted)", async () => {
    const other = join(work, "remote store with space");
    const session = await openServeSession(connection, { remoteStore: other });
    const info = (await local.client.queryPathInfos([fileA])).get(fileA)!;
    await session.client.addToStoreNar(info, chunked((await collectNar(local.client, fileA)).bytes));
    session.client.close();
    await session.process.exit;
    expect(run("nix-store", ["--store", other, "--check-validity", "--print-invalid", fileA])).toBe("");
  });

  test("a remote without nix-store → nix-store-not-found", async () => {
    await expect(openServeSession(connection, { remoteProgram: "nix-store-not-installed" })).rejects.toMatchObject({
      code: "nix-store-not-found",
    });
  });
});

describe("ServeClient to a lab builder configured like production", () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await startTestLab({ builders: 1 });
  }, 180_000);

  afterAll(() => stopTestLab(lab));

  test("an alias from root's ~/.ssh/config (via Include, with HostKeyAlias and UserKnownHostsFile) reaches a builder that signs its builds", async () => {
    const builder = lab.builders[0]!;
    // Nothing but the name: address, port, user, key and known_hosts all come from the ssh config.
    const connection = await connectMachine({ name: builder.name });
    try {
      expect(connection.target).toMatchObject({ host: builder.address, port: builder.port, knownHostsName: builder.name });
      const session = await openServeSession(connection);
      const drvPath = run("nix-instantiate", [...NO_NETWORK, nixExpression(work, "offload-lab", "echo $salt > $out")]);
      const derivation = derivationAt(drvPath);
      const result = await session.client.buildDerivation(drvPath, derivation, derivation.inputSrcs, { maxSilentTime: 60, buildTimeout: 120 });
      expect(result).toMatchObject({ status: "Built", success: true });
      const output = derivation.outputs.get("out")!.path;
      const info = (await session.client.queryPathInfos([output])).get(output)!;
      const keyName = builder.signingKey.split(":")[0]!;
      expect(info.signatures).toEqual([expect.stringMatching(new RegExp(`^${keyName}:`))]);
      session.client.close();
      expect(await session.process.exit).toEqual({ code: 0 });
    } finally {
      connection.close();
    }
  });
});

describe("ServeClient as an untrusted user, through a nix-daemon (a non-root SSH login)", () => {
  const NOBODY = 65534;
  const trustedKey = generateKeyPair("offload-trusted-1");
  let dir: string;
  let daemon: ChildProcess;
  let socket: string;

  beforeAll(async () => {
    // nobody must reach the socket, so not under the 0700 test directory
    dir = mkdtempSync(join(tmpdir(), "offload-daemon-test-"));
    chmodSync(dir, 0o755);
    mkdirSync(join(dir, "home"));
    chownSync(join(dir, "home"), NOBODY, NOBODY);
    socket = join(dir, "socket");
    const conf = join(dir, "nix.conf");
    writeFileSync(
      conf,
      `store = ${join(dir, "store")}\nextra-sandbox-paths = /bin /lib /lib64 /usr\nsubstituters =\ntrusted-public-keys = ${trustedKey.publicKey.toString()}\n`,
    );
    daemon = spawn("nix-daemon", [], { env: { ...process.env, NIX_USER_CONF_FILES: conf, NIX_DAEMON_SOCKET_PATH: socket }, stdio: "ignore" });
    for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((resolve) => setTimeout(resolve, 50));
  });

  afterAll(async () => {
    if (daemon.exitCode === null) {
      const exited = new Promise((resolve) => daemon.once("exit", resolve));
      daemon.kill();
      await exited;
    }
    execFileSync("chmod", ["-R", "u+w", dir]);
    rmSync(dir, { recursive: true, force: true });
  });

  /** `nix-store --serve --write` as nobody, its store being the daemon's. */
  async function untrusted(): Promise<{ client: ServeClient; close: () => Promise<void> }> {
    const child = spawn("nix-store", ["--serve", "--write", "--store", "daemon"], {
      uid: NOBODY,
      gid: NOBODY,
      env: { PATH: process.env.PATH, HOME: join(dir, "home"), NIX_DAEMON_SOCKET_PATH: socket },
    });
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exit = new Promise<{ code: number | null }>((resolve) => child.once("close", (code) => resolve({ code })));
    const client = await ServeClient.connect({ stdin: child.stdin!, stdout: child.stdout!, exit, stderrTail: () => stderr }, { label: "nobody" });
    return {
      client,
      close: async () => {
        client.close();
        await exit;
      },
    };
  }

  test("unsigned input-addressed uploads are refused as remote-not-trusted; signed by a trusted key they are accepted", async () => {
    const infos = await local.client.queryPathInfos([src, out]);
    const first = await untrusted();
    // content-addressed paths (builtins.toFile, nix-store --add) need no signature at all
    await first.client.addToStoreNar({ ...infos.get(src)!, signatures: [] }, chunked((await collectNar(local.client, src)).bytes));
    const outNar = (await collectNar(local.client, out)).bytes;
    await expect(first.client.addToStoreNar({ ...infos.get(out)!, signatures: [] }, chunked(outNar))).rejects.toMatchObject({
      code: "remote-not-trusted",
      message: expect.stringContaining("lacks a valid signature"),
    });
    await first.close();

    const second = await untrusted();
    await second.client.addToStoreNar({ ...infos.get(out)!, signatures: [signPath(infos.get(out)!, trustedKey)] }, chunked(outNar));
    expect(await second.client.queryValidPaths([src, out])).toEqual(new Set([src, out]));
    await second.close();
  });

  test("BuildDerivation of an input-addressed derivation is refused as remote-not-trusted", async () => {
    const session = await untrusted();
    const drvPath = run("nix-instantiate", [...NO_NETWORK, nixExpression(work, "offload-untrusted", "echo $salt > $out")]);
    const derivation = derivationAt(drvPath);
    await expect(session.client.buildDerivation(drvPath, derivation, derivation.inputSrcs, { maxSilentTime: 60, buildTimeout: 120 })).rejects.toMatchObject({
      code: "remote-not-trusted",
      message: expect.stringContaining("not privileged to build input-addressed derivations"),
    });
    await session.close();
  });
});
