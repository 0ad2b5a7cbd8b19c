// Guix archives both ways between offload and the real guix 1.5.0: the fixture archive
// written by `guix archive --export` (test/fixtures/guix), then two lab Guix hosts, each with
// its own store, guix-daemon and keys, where offload and `guix archive` export and import.
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { GuixDaemon } from "../src/store/guix-daemon.js";
import { GUIX_STORE_DIR } from "../src/guix/paths.js";
import { parseGuixSecretKey } from "../src/guix/keys.js";
import { checkGuixSignature, signHash } from "../src/guix/signature.js";
import { guixHostPaths, startGuixHost, type GuixHost } from "../src/lab/guix-host.js";
import { runInHost, stopHost } from "../src/lab/host.js";
import { readExportStream, writeExportStream, type ExportItem } from "../src/nix/export-stream.js";
import { PACKAGE_ROOT } from "../src/package-root.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const FIXTURES = path.join(import.meta.dirname, "fixtures", "guix");
const SID = path.join(process.env.OFFLOAD_ROOTS_DIR ?? "/var/lib/offload-roots", "sid");
const BIN = path.join(PACKAGE_ROOT, "bin", "offload.js");

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part);
  return Buffer.concat(parts);
}

async function readItems(bytes: Buffer, spoolDir: string): Promise<ExportItem[]> {
  const items: ExportItem[] = [];
  for await (const item of readExportStream(Readable.from([bytes]), { spoolDir, storeDir: GUIX_STORE_DIR })) items.push(item);
  return items;
}

describe("the archive guix archive --export wrote", () => {
  let spool: string;
  beforeAll(() => {
    spool = makeSafeDir("guix-fixture");
  });
  afterAll(() => removeDir(spool));

  test("reads item by item, each signed by key A over exactly what Guix hashed; rewritten, it is the same bytes", async () => {
    const archive = readFileSync(path.join(FIXTURES, "archive.export"));
    const key = parseGuixSecretKey(readFileSync(path.join(FIXTURES, "signing-key.sec")));
    const items = await readItems(archive, spool);
    expect(items.map((item) => item.path)).toEqual(readFileSync(path.join(FIXTURES, "archive.items"), "utf8").trim().split("\n"));
    const [hello, world, greeting] = items;
    expect(world!.references).toEqual([hello!.path]);
    expect(greeting!.deriver).toMatch(/^\/gnu\/store\/[0-9a-z]{32}-greeting\.drv$/);
    for (const item of items) expect(checkGuixSignature(item.signatureBytes, item.itemHash, item.path, [key.publicKey])).toMatchObject({ valid: true });
    const sources = items.map((item) => ({ ...item, nar: Readable.from([readFileSync(item.narFile)]), signature: (hash: Buffer) => signHash(hash, key) }));
    expect((await collect(writeExportStream(sources, GUIX_STORE_DIR))).equals(archive)).toBe(true);
  });
});

(existsSync(`${SID}.stamp`) ? describe : describe.skip)("between lab Guix hosts", () => {
  let dir: string;
  let a: GuixHost;
  let b: GuixHost;
  let nonce = 0;
  const config = (host: GuixHost) => path.join(host.dir, "offload");
  const socketOf = (host: GuixHost) => guixHostPaths(host.dir).daemonSocket;

  /** A command in the host, as root; `script` runs under sh, its output is returned. */
  async function sh(host: GuixHost, script: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return runInHost(host.host, ["sh", "-c", script], { env: { OFFLOAD_CONFIG_DIR: config(host), ...env }, timeoutMs: 120_000 });
  }

  async function ok(host: GuixHost, script: string, env: Record<string, string> = {}): Promise<string> {
    const result = await sh(host, script, env);
    if (result.code !== 0) throw new Error(`${script} in ${host.name}: status ${result.code}: ${result.stderr}`);
    return result.stdout;
  }

  const offload = `node ${BIN}`;

  /** Fresh items in `host`: hello, world (refers to hello) and a build output with a deriver. */
  async function makeItems(host: GuixHost): Promise<{ hello: string; world: string; greeting: string }> {
    nonce++;
    const [hello, world, greeting] = (await ok(host, `guix repl -- ${dir}/items.scm`, { NONCE: `${process.pid}-${nonce}` })).trim().split(" ");
    return { hello: hello!, world: world!, greeting: greeting! };
  }

  async function valid(host: GuixHost, paths: string[]): Promise<string[]> {
    const daemon = await GuixDaemon.connect({ socket: socketOf(host) });
    try {
      return [...(await daemon.queryValidPaths(paths))].sort();
    } finally {
      daemon.close();
    }
  }

  /** Flips one byte of `text`'s first occurrence in the archive (inside a NAR: contents change). */
  function tamper(file: string, text: string): string {
    const bytes = readFileSync(file);
    const at = bytes.indexOf(text);
    expect(at).toBeGreaterThan(0);
    bytes[at]! ^= 0x20;
    const out = `${file}.tampered`;
    writeFileSync(out, bytes);
    return out;
  }

  beforeAll(async () => {
    dir = makeSafeDir("guix-archive");
    mkdirSync(path.join(dir, "busybox", "bin"), { recursive: true });
    copyFileSync(path.join(SID, "bin", "busybox"), path.join(dir, "busybox", "bin", "busybox"));
    symlinkSync("busybox", path.join(dir, "busybox", "bin", "sh"));
    writeFileSync(
      path.join(dir, "items.scm"),
      `(use-modules (guix store) (guix derivations))
(define nonce (getenv "NONCE"))
(with-store s
  (let* ((hello (add-text-to-store s (string-append "hello-" nonce) (string-append "hello, " nonce "\\n") '()))
         (world (add-text-to-store s (string-append "world-" nonce) (string-append "see " hello "\\n") (list hello)))
         (bb (add-to-store s "busybox" #t "sha256" "${dir}/busybox"))
         (drv (derivation s (string-append "greeting-" nonce) (string-append bb "/bin/sh")
                          (list "-c" (string-append "echo greetings " nonce " > $out")) #:sources (list bb))))
    (build-derivations s (list drv))
    (format #t "~a ~a ~a~%" hello world (derivation->output-path drv))))
`,
    );
    [a, b] = await Promise.all([
      startGuixHost({ name: "guix-archive-a", dir: path.join(dir, "a"), shared: [dir] }),
      startGuixHost({ name: "guix-archive-b", dir: path.join(dir, "b"), shared: [dir] }),
    ]);
    for (const host of [a, b]) await ok(host, `${offload} keygen --guix > /dev/null`);
    // b's offload trusts what a's guix-daemon signs; b's guix-daemon trusts what b's offload hands it.
    await ok(b, `${offload} authorize --guix ${guixHostPaths(a.dir).signingKey}`);
    await ok(b, `guix archive --authorize < ${config(b)}/guix-signing-key.pub`);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([a, b].filter(Boolean).map((host) => stopHost(host.host)));
    removeDir(dir);
  });

  test("offload verifies and imports what guix archive --export wrote, into the Guix store through guix-daemon", async () => {
    const items = await makeItems(a);
    const archive = path.join(dir, "from-guix.export");
    await ok(a, `guix archive --export -r ${items.world} ${items.greeting} > ${archive}`);
    const result = await sh(b, `${offload} archive import --guix < ${archive}`);
    expect(result.stderr).toMatch(/imported 3 Guix store item\(s\); signed by Guix key [0-9A-F]{16}…/);
    expect(result.code).toBe(0);
    expect(result.stdout.trim().split("\n").sort()).toEqual([items.hello, items.world, items.greeting].sort());
    const [fromA, fromB] = await Promise.all([a, b].map((host) => GuixDaemon.connect({ socket: socketOf(host) })));
    try {
      for (const item of [items.hello, items.world, items.greeting]) {
        const [there, here] = await Promise.all([fromA!.queryPathInfo(item), fromB!.queryPathInfo(item)]);
        // Guix records a deriver on import only when it is valid there (local-store.cc importPath).
        expect({ ...here, deriver: there.deriver }).toEqual(there);
      }
    } finally {
      fromA!.close();
      fromB!.close();
    }
    expect(await ok(b, `cat ${items.greeting}`)).toBe(`greetings ${process.pid}-${nonce}\n`);
    // Importing again adds nothing and still succeeds.
    expect((await sh(b, `${offload} archive import --guix < ${archive}`)).stderr).toMatch(/imported 0 Guix store item\(s\), 3 already present/);
  });

  test("a tampered or unauthorized archive is refused by offload, nothing imported", async () => {
    const items = await makeItems(a);
    const all = [items.hello, items.world, items.greeting];
    const archive = path.join(dir, "to-tamper.export");
    await ok(a, `guix archive --export -r ${items.world} > ${archive}`);
    const tampered = await sh(b, `${offload} archive import --guix < ${tamper(archive, `hello, ${process.pid}-${nonce}`)}`);
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toMatch(/Guix archive refused, nothing imported: the signature of \/gnu\/store\/\S+-hello-\S+ covers other contents/);
    // Signed by a key b's offload does not trust: a's offload key.
    const unauthorized = path.join(dir, "unauthorized.export");
    await ok(a, `${offload} archive export --guix -r ${items.world} > ${unauthorized}`);
    const refused = await sh(b, `${offload} archive import --guix < ${unauthorized}`);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/is signed by key [0-9A-F]{16}…, which is not in the ACL[\s\S]*fix: if you trust the signer: offload authorize --guix/);
    expect(await valid(b, all)).toEqual([]);
  });

  test("guix archive --import accepts offload's export once offload's key is authorized; refuses it tampered or unauthorized", async () => {
    const items = await makeItems(a);
    const all = [items.hello, items.world];
    const archive = path.join(dir, "from-offload.export");
    await ok(a, `${offload} archive export --guix -r ${items.world} > ${archive}`);
    const unauthorized = await sh(b, `guix archive --import < ${archive}`);
    expect(unauthorized.code).not.toBe(0);
    expect(unauthorized.stderr).toMatch(/unauthorized public key/);
    await ok(b, `guix archive --authorize < ${config(a)}/guix-signing-key.pub`);
    const tampered = await sh(b, `guix archive --import < ${tamper(archive, `hello, ${process.pid}-${nonce}`)}`);
    expect(tampered.code).not.toBe(0);
    expect(tampered.stderr).toMatch(/signed hash doesn't match actual contents/);
    expect(await valid(b, all)).toEqual([]);
    await ok(b, `guix archive --import < ${archive}`);
    expect(await valid(b, all)).toEqual([...all].sort());
    expect(await ok(b, `guix gc --references ${items.world}`)).toBe(`${items.hello}\n`);
  });

  test("offload's export signed with Guix's own key is what guix archive --export writes, byte for byte", async () => {
    const items = await makeItems(a);
    const paths = `${items.world} ${items.greeting}`;
    await ok(a, `guix archive --export -r ${paths} > ${dir}/guix.export`);
    await ok(a, `${offload} archive export --guix -r --key /etc/guix/signing-key.sec ${paths} > ${dir}/offload.export`);
    const guix = readFileSync(path.join(dir, "guix.export"));
    const ours = readFileSync(path.join(dir, "offload.export"));
    expect(createHash("sha256").update(ours).digest("hex")).toBe(createHash("sha256").update(guix).digest("hex"));
  });
});
