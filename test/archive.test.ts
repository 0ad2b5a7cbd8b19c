// Signed archives against the real Nix 2.8 store: export from it, delete the paths, import
// them back (or fail to, leaving the store untouched).
import { execFileSync, spawnSync } from "node:child_process";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { OffloadError } from "../src/errors.js";
import { readExportStream, writeExportStream, type ExportSource } from "../src/nix/export-stream.js";
import { generateKeyPair, type SecretKey } from "../src/nix/keys.js";
import { dumpPath } from "../src/nix/nar.js";
import { signPath } from "../src/nix/signature.js";
import { dependenciesFirst, exportArchive, pathsToExport, resolveStorePath } from "../src/store/archive-export.js";
import { importArchive, type ImportArchiveOptions } from "../src/store/archive-import.js";
import { openLocalStore } from "../src/store/local-store.js";
import type { PathInfo } from "../src/nix/path-info.js";
import { buildTestClosure, deletePaths, hasNix, isValidPath, nix, nixPathInfo, type TestClosure } from "./support/nix.js";

const describeNix = hasNix() ? describe : describe.skip;

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function info(path: string, references: string[]): PathInfo {
  return { path, references, narHash: Buffer.alloc(32), narSize: 8, signatures: [] };
}

describe("dependenciesFirst", () => {
  const p = (c: string) => `/nix/store/${c.repeat(32)}-${c}`;
  test("orders dependencies before referrers, ignores self and outside references", () => {
    const order = dependenciesFirst([info(p("a"), [p("b"), p("a")]), info(p("b"), [p("c"), p("z")]), info(p("d"), []), info(p("c"), [])]).map((i) => i.path);
    expect(order).toEqual([p("c"), p("b"), p("a"), p("d")]);
  });
  test("a deep chain does not exhaust the stack", () => {
    const names = Array.from({ length: 20000 }, (_, i) => `/nix/store/${"a".repeat(32)}-n${i}`);
    const infos = names.map((name, i) => info(name, i + 1 < names.length ? [names[i + 1]!] : []));
    expect(dependenciesFirst(infos)[0]!.path).toBe(names.at(-1));
  });
  test("a reference cycle is an error", () => {
    expect(() => dependenciesFirst([info(p("a"), [p("b")]), info(p("b"), [p("a")])])).toThrow(/refer to each other/);
  });
});

describeNix("signed archives with Nix 2.8", () => {
  let dir: string;
  let key: SecretKey;
  const built: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "offload-archive-"));
    key = generateKeyPair("archive-test-1");
  });
  afterAll(async () => {
    deletePaths(built.reverse());
    await rm(dir, { recursive: true, force: true });
  });

  function fresh(): TestClosure & { nonce: string } {
    const closure = buildTestClosure("archive");
    built.push(closure.lib, closure.app);
    return { ...closure, nonce: /offload-lib-(.*)$/.exec(closure.lib)![1]! };
  }

  async function exportPaths(paths: string[], recursive: boolean, signer: SecretKey = key, from?: string): Promise<Buffer> {
    const store = await openLocalStore({ store: from });
    try {
      return await collect(exportArchive(store.client, await pathsToExport(store.client, paths, recursive), signer));
    } finally {
      await store.close();
    }
  }

  function importBuffer(archive: Buffer, options: Partial<ImportArchiveOptions> = {}) {
    return importArchive(Readable.from([archive]), { trustedKeys: [key.publicKey], tempDir: dir, ...options });
  }

  async function refused(archive: Buffer, closure: TestClosure, options: Partial<ImportArchiveOptions> = {}) {
    deletePaths([closure.app, closure.lib]);
    const error = (await importBuffer(archive, options).then(
      () => undefined,
      (e: unknown) => e,
    )) as OffloadError;
    expect(error).toBeInstanceOf(OffloadError);
    // Nothing entered the store.
    expect(isValidPath(closure.lib)).toBe(false);
    expect(isValidPath(closure.app)).toBe(false);
    return error;
  }

  test("export: dependencies first, each item signed over its fingerprint; non-recursive exports just the path", async () => {
    const { lib, app } = fresh();
    const archive = await exportPaths([app], true);
    const items = [];
    for await (const item of readExportStream(Readable.from([archive]), { spoolDir: dir })) {
      await rm(item.narFile);
      items.push(item);
    }
    expect(items.map((item) => item.path)).toEqual([lib, app]);
    for (const item of items) {
      const stored = nixPathInfo(item.path);
      expect(item.narHash).toEqual(stored.narHash);
      expect(item.signatures).toEqual([signPath(stored, key)]);
    }
    expect(items[1]!.references).toEqual([lib]);
    const single = await exportPaths([app], false);
    expect(single.length).toBeLessThan(archive.length);
    expect(single.includes(Buffer.from(`lib ${/offload-lib-(.*)$/.exec(lib)![1]}\n`))).toBe(false);
  });

  test("exporting an invalid path says so (also with --recursive)", async () => {
    const { app } = fresh();
    const missing = app.replace(/-offload-app-/, "-offload-nope-");
    for (const recursive of [false, true]) {
      await expect(exportPaths([app, missing], recursive)).rejects.toMatchObject({
        code: "invalid-path",
        message: `not valid in the store: ${missing}`,
      });
    }
  });

  test("resolveStorePath accepts links and files inside store paths", async () => {
    const { app } = fresh();
    const link = path.join(dir, "result");
    await rm(link, { force: true });
    execFileSync("ln", ["-s", app, link]);
    expect(await resolveStorePath(link)).toBe(app);
    expect(await resolveStorePath(`${app}/bin/app`)).toBe(app);
    await expect(resolveStorePath(dir)).rejects.toMatchObject({ code: "not-a-store-path" });
  });

  test("a good archive imports with its signatures, which Nix then verifies with our key", async () => {
    const { lib, app } = fresh();
    const archive = await exportPaths([app], true);
    deletePaths([app, lib]);
    expect(isValidPath(lib) || isValidPath(app)).toBe(false);

    const imported = await importBuffer(archive);
    expect(imported).toEqual([
      { path: lib, signer: "archive-test-1", added: true },
      { path: app, signer: "archive-test-1", added: true },
    ]);
    for (const p of [lib, app]) {
      const stored = nixPathInfo(p);
      expect(stored.signatures).toEqual([signPath(stored, key)]);
    }
    expect(nixPathInfo(app).references).toEqual([lib]);
    const verify = nix(["store", "verify", "--trusted-public-keys", key.publicKey.toString(), "--sigs-needed", "1", "-r", app]);
    expect(verify.stderr).not.toMatch(/untrusted|error/);
    expect(verify.status).toBe(0);
    const otherKey = generateKeyPair("archive-test-1").publicKey.toString();
    expect(nix(["store", "verify", "--trusted-public-keys", otherKey, "--sigs-needed", "1", app]).status).not.toBe(0);
    expect(execFileSync(`${app}/bin/app`, { encoding: "utf8" })).toMatch(/^lib archive-/);

    // Importing again adds nothing.
    expect((await importBuffer(archive)).map((item) => item.added)).toEqual([false, false]);
  });

  test("plain `nix-store --import` accepts our archive (filled signature slot)", async () => {
    const { lib, app } = fresh();
    const archive = await exportPaths([app], true);
    deletePaths([app, lib]);
    const result = spawnSync("nix-store", ["--import"], { input: archive, encoding: "utf8" });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(result.stdout.trim().split("\n")).toEqual([lib, app]);
    expect(isValidPath(lib) && isValidPath(app)).toBe(true);
    // Nix 2.8 reads the slot and drops it: the path arrives unsigned.
    expect(nixPathInfo(app).signatures).toEqual([]);
  });

  test("unsigned item: refused, nothing imported", async () => {
    const closure = fresh();
    const items: ExportSource[] = [closure.lib, closure.app].map((p) => {
      const stored = nixPathInfo(p);
      return { path: p, references: stored.references, nar: dumpPath(p) };
    });
    const archive = await collect(writeExportStream(items));
    const error = await refused(archive, closure);
    expect(error.code).toBe("unsigned");
    expect(error.message).toMatch(/nothing imported: .*-offload-lib-.* has no signature \(item 1 of 2\)/);
  });

  test("signature by a key not in the ACL: refused, nothing imported", async () => {
    const closure = fresh();
    const stranger = generateKeyPair("stranger-1");
    const error = await refused(await exportPaths([closure.app], true, stranger), closure);
    expect(error.code).toBe("unknown-key");
    expect(error.message).toMatch(/signed by unknown key "stranger-1"/);
    expect(error.fix).toMatch(/offload authorize/);
  });

  test("a flipped NAR byte in the second item: refused, the first is not imported either", async () => {
    const closure = fresh();
    const archive = await exportPaths([closure.app], true);
    const at = archive.indexOf(Buffer.from(`cat ${closure.lib}/data`));
    expect(at).toBeGreaterThan(0);
    archive[at] ^= 0x01;
    const error = await refused(archive, closure);
    expect(error.code).toBe("invalid-signature");
    expect(error.message).toMatch(/invalid signature by "archive-test-1".*\(item 2 of 2\)/);
  });

  test("a NAR of a different size (well-formed, 8 bytes longer file): refused", async () => {
    const closure = fresh();
    const archive = await exportPaths([closure.app], true);
    const contents = Buffer.from(`lib ${closure.nonce}\n`);
    const at = archive.indexOf(contents);
    expect(archive.readBigUInt64LE(at - 8)).toBe(BigInt(contents.length));
    archive.writeBigUInt64LE(BigInt(contents.length + 8), at - 8);
    const longer = Buffer.concat([archive.subarray(0, at + contents.length), Buffer.from("EXTRA!!\n"), archive.subarray(at + contents.length)]);
    const error = await refused(longer, closure);
    expect(error.code).toBe("invalid-signature");
    expect(error.message).toMatch(/NAR hash, size or references differ/);
  });

  test("a truncated archive: refused, nothing imported", async () => {
    const closure = fresh();
    const archive = await exportPaths([closure.app], true);
    const error = await refused(archive.subarray(0, archive.length - 100), closure);
    expect(error.message).toMatch(/^archive refused, nothing imported: export stream: /);
    expect(error.fix).toMatch(/export it again/);
    await expect(importBuffer(Buffer.alloc(0))).rejects.toMatchObject({ message: expect.stringMatching(/^archive refused/) });
    await expect(importBuffer(Buffer.from("not an archive at all"))).rejects.toMatchObject({
      message: expect.stringMatching(/^archive refused/),
    });
  });

  test("a reference neither in the archive nor in the store: refused", async () => {
    const closure = fresh();
    const error = await refused(await exportPaths([closure.app], false), closure);
    expect(error.code).toBe("missing-reference");
    expect(error.message).toContain(`refers to ${closure.lib}, which is neither in the archive nor in the store`);
    expect(error.fix).toMatch(/--recursive/);
  });

  test("dependencies after their referrers: refused", async () => {
    const closure = fresh();
    const items: ExportSource[] = [closure.app, closure.lib].map((p) => {
      const stored = nixPathInfo(p);
      return { path: p, references: stored.references, signature: signPath(stored, key), nar: dumpPath(p) };
    });
    const error = await refused(await collect(writeExportStream(items)), closure);
    expect(error.code).toBe("reference-order");
  });

  test("a store failure part-way removes what the run had added", async () => {
    const closure = fresh();
    const archive = await exportPaths([closure.app], true);
    // A nix-store that dies when asked to add the second path (its name's second
    // appearance on the wire: after the validity query, in the AddToStoreNar header).
    const wrapper = path.join(dir, "failing-nix-store.mjs");
    await writeFile(
      wrapper,
      `#!/usr/bin/env node
import { spawn } from "node:child_process";
const real = spawn("nix-store", process.argv.slice(2), { stdio: ["pipe", "inherit", "inherit"] });
real.on("exit", (code) => process.exit(code ?? 1));
if (!process.argv.includes("--serve")) process.stdin.pipe(real.stdin);
else {
  const needle = Buffer.from(${JSON.stringify(closure.app)});
  let seen = Buffer.alloc(0);
  process.stdin.on("data", (chunk) => {
    seen = Buffer.concat([seen, chunk]);
    const first = seen.indexOf(needle);
    if (first >= 0 && seen.indexOf(needle, first + 1) >= 0) {
      real.kill("SIGKILL");
      return;
    }
    real.stdin.write(chunk);
  });
  process.stdin.on("end", () => real.stdin.end());
}
`,
    );
    await chmod(wrapper, 0o755);
    const error = await refused(archive, closure, { nixStore: wrapper });
    expect(error.message).toMatch(/^import failed, removed the 1 path\(s\) it had added/);
  });

  test("CLI: keygen, archive export > file, authorize, archive import < file", async () => {
    const { lib, app } = fresh();
    const config = path.join(dir, "cli-config");
    const env = { ...process.env, OFFLOAD_CONFIG_DIR: config };
    const offload = (args: string[], stdio: { input?: Buffer } = {}) => {
      const result = spawnSync("node", [path.resolve("scripts/run-ts.mjs"), path.resolve("src/cli/main.ts"), ...args], {
        env,
        input: stdio.input,
        maxBuffer: 64 * 1024 * 1024,
      });
      return { status: result.status, stdout: result.stdout, stderr: result.stderr.toString() };
    };
    expect(offload(["keygen", "--name", "cli-test-1"]).status).toBe(0);
    const exported = offload(["archive", "export", "--recursive", app]);
    expect(exported.stderr).toMatch(/exported 2 path\(s\), signed by cli-test-1/);
    expect(exported.status).toBe(0);
    deletePaths([app, lib]);

    const noAcl = offload(["archive", "import"], { input: exported.stdout });
    expect(noAcl.status).toBe(1);
    expect(noAcl.stderr).toMatch(/no keys are authorized[\s\S]*fix: offload authorize/);
    expect(isValidPath(lib)).toBe(false);

    expect(offload(["authorize", path.join(config, "signing-key.pub")]).status).toBe(0);
    const imported = offload(["archive", "import"], { input: exported.stdout });
    expect(imported.stderr).toMatch(/imported 2 path\(s\); signed by cli-test-1/);
    expect(imported.stdout.toString()).toBe(`${lib}\n${app}\n`);
    expect(imported.status).toBe(0);
    expect(nixPathInfo(app).signatures).toHaveLength(1);

    const tampered = Buffer.from(exported.stdout);
    tampered[tampered.indexOf(Buffer.from(`cat ${lib}/data`))] ^= 1;
    deletePaths([app, lib]);
    const refusedCli = offload(["archive", "import"], { input: tampered });
    expect(refusedCli.status).toBe(1);
    expect(refusedCli.stderr).toMatch(/^offload: archive refused, nothing imported: .* invalid signature by "cli-test-1"/);
    expect(refusedCli.stderr).toMatch(/\n {2}fix: /);
    expect(isValidPath(lib) || isValidPath(app)).toBe(false);
  });

  test("import into a separate (chroot) store keeps the signatures; export from it imports back here", async () => {
    const { lib, app } = fresh();
    const chroot = await mkdtemp(path.join(dir, "chroot-"));
    const imported = await importBuffer(await exportPaths([app], true), { store: chroot });
    expect(imported.map((item) => item.added)).toEqual([true, true]);
    expect(isValidPath(app, chroot)).toBe(true);
    const stored = nixPathInfo(app, chroot);
    expect(stored.signatures).toEqual([signPath(stored, key)]);
    const verify = nix(["store", "verify", "--store", chroot, "--trusted-public-keys", key.publicKey.toString(), "--sigs-needed", "1", "-r", app]);
    expect(verify.status).toBe(0);

    // Back the other way: the NARs now come out of the chroot store through the serve protocol.
    const back = await exportPaths([app], true, key, chroot);
    deletePaths([app, lib]);
    expect((await importBuffer(back)).map((item) => item.path)).toEqual([lib, app]);
    expect(nixPathInfo(app).narHash).toEqual(stored.narHash);
  });

  test("a reference missing from the target chroot store: refused, the chroot store stays empty", async () => {
    const { lib, app } = fresh();
    const chroot = await mkdtemp(path.join(dir, "chroot-"));
    const error = (await importBuffer(await exportPaths([app], false), { store: chroot }).catch((e: unknown) => e)) as OffloadError;
    expect(error.code).toBe("missing-reference");
    expect(isValidPath(app, chroot) || isValidPath(lib, chroot)).toBe(false);
    // The same archive is fine where the reference exists.
    expect((await importBuffer(await exportPaths([app], false))).map((item) => item.added)).toEqual([false]);
  });
});
