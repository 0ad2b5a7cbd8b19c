import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { OffloadError } from "../src/errors.js";
import { readExportStream, writeExportStream } from "../src/nix/export-stream.js";
import type { ExportItem, ExportSource } from "../src/nix/export-stream.js";
import { dumpPath } from "../src/nix/nar.js";
import { encodeNix32 } from "../src/nix/nix32.js";

let work: string;
let spool: string;
const toDelete: string[] = [];
const derivations: string[] = [];
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "offload-export-test-"));
  spool = join(work, "spool");
  mkdirSync(spool);
});
afterAll(() => {
  // Nix deletes referrers before what they refer to within one call; .drv files only once
  // their outputs are gone (keep-derivations keeps them alive until then).
  spawnSync("nix-store", ["--delete", ...toDelete], { stdio: "ignore" });
  spawnSync("nix-store", ["--delete", ...derivations], { stdio: "ignore" });
  rmSync(work, { recursive: true, force: true });
});

function nix(args: string[], input?: Buffer): string {
  return execFileSync("nix-store", args, { input, encoding: "utf8", maxBuffer: 1 << 30 }).trim();
}

function nixBytes(args: string[]): Buffer {
  return execFileSync("nix-store", args, { maxBuffer: 1 << 30 });
}

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of gen) parts.push(c);
  return Buffer.concat(parts);
}

/** Reads all items; on failure removes the spooled files of items already received, as a caller must. */
async function readAll(bytes: Buffer, chunk = 4096): Promise<ExportItem[]> {
  const items: ExportItem[] = [];
  try {
    for await (const item of readExportStream(Readable.from(split(bytes, chunk)), { spoolDir: spool })) items.push(item);
  } catch (error) {
    for (const item of items) rmSync(item.narFile);
    throw error;
  }
  return items;
}

function* split(buf: Buffer, size: number): Generator<Buffer> {
  for (let at = 0; at < buf.length; at += size) yield buf.subarray(at, at + size);
}

function sha256(b: Buffer): Buffer {
  return createHash("sha256").update(b).digest();
}

function fakeStorePath(name: string): string {
  return `/nix/store/${encodeNix32(randomBytes(20))}-${name}`;
}

describe("reading a real nix-store --export", () => {
  let closure: string[];
  let exported: Buffer;
  let items: ExportItem[];

  beforeAll(async () => {
    const unique = randomBytes(8).toString("hex");
    const file = join(work, "closure.nix");
    writeFileSync(
      file,
      `let dep = derivation { name = "offload-export-dep"; system = builtins.currentSystem; builder = "/bin/sh";
                             args = [ "-c" "echo ${unique} > $out" ]; };
       in derivation { name = "offload-export-top"; system = builtins.currentSystem; builder = "/bin/sh";
                       args = [ "-c" "/bin/mkdir $out; echo \${dep} > $out/dep; echo $out > $out/self; printf '\\\\0' > $out/nul" ]; }`,
    );
    const top = execFileSync("nix-build", ["--no-out-link", "--option", "substituters", "", file], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    }).trim();
    closure = nix(["--query", "--requisites", top]).split("\n");
    toDelete.push(...closure);
    derivations.push(...closure.map((p) => nix(["--query", "--deriver", p])));
    exported = nixBytes(["--export", ...closure]);
    items = await readAll(exported);
  });

  test("every path with its references, deriver, hash and size as the store knows them", () => {
    expect(items.map((i) => i.path).sort()).toEqual([...closure].sort());
    for (const item of items) {
      expect(item.references).toEqual(nix(["--query", "--references", item.path]).split("\n").filter(Boolean).sort());
      expect(item.deriver).toBe(nix(["--query", "--deriver", item.path]));
      expect(`sha256:${encodeNix32(item.narHash)}`).toBe(nix(["--query", "--hash", item.path]));
      expect(String(item.narSize)).toBe(nix(["--query", "--size", item.path]));
      expect(item.signatures).toEqual([]);
      const nar = readFileSync(item.narFile);
      expect(nar.equals(nixBytes(["--dump", item.path]))).toBe(true);
      expect(sha256(nar).equals(item.narHash)).toBe(true);
    }
    // The top path refers to its dependency and to itself.
    const top = items[items.length - 1];
    expect(top.references).toContain(top.path);
    expect(top.references).toContain(items[0].path);
  });

  test("our writer reproduces Nix's export byte for byte", async () => {
    const sources: ExportSource[] = items.map((i) => ({ ...i, nar: createReadStream(i.narFile) }));
    expect((await collect(writeExportStream(sources))).equals(exported)).toBe(true);
  });

  test("every chunk size gives the same result", async () => {
    for (const size of [1, 7, 8, 1000, 1 << 20]) {
      const again = await readAll(exported, size);
      expect(again.map(({ narFile: _, ...rest }) => rest)).toEqual(items.map(({ narFile: _, ...rest }) => rest));
    }
  });
});

describe("our export stream imports with the real nix-store --import", () => {
  test("two paths (one referring to the other and itself), with Nix and Guix style signatures", async () => {
    const unique = randomBytes(8).toString("hex");
    const depTree = join(work, "dep-tree");
    mkdirSync(depTree);
    writeFileSync(join(depTree, "data"), `dependency ${unique}\n`);
    const dep = fakeStorePath("offload-import-dep");
    const top = fakeStorePath("offload-import-top");
    const topFile = join(work, "top-file");
    writeFileSync(topFile, `${dep}\n${top}\n`);
    const deriver = fakeStorePath("offload-import-top.drv");
    const nixSignature = `offload-test-1:${randomBytes(64).toString("base64")}`;
    const guixSignature = `(signature\n (data\n  (flags rfc6979)\n  (hash sha256 #${randomBytes(32).toString("hex").toUpperCase()}#))\n (sig-val (ecdsa (r #00#) (s #01#))))`;
    const sources: ExportSource[] = [
      { path: dep, references: [], signature: guixSignature, nar: dumpPath(depTree) },
      { path: top, references: [top, dep], deriver, signature: nixSignature, nar: dumpPath(topFile) },
    ];
    const stream = await collect(writeExportStream(sources));
    const imported = nix(["--import"], stream).split("\n");
    toDelete.push(dep, top);
    expect(imported).toEqual([dep, top]);

    expect(nix(["--query", "--references", top]).split("\n").sort()).toEqual([dep, top].sort());
    expect(nix(["--query", "--deriver", top])).toBe(deriver);
    expect(nix(["--query", "--deriver", dep])).toBe("unknown-deriver");
    expect(nixBytes(["--dump", dep]).equals(await collect(dumpPath(depTree)))).toBe(true);
    expect(nix(["--query", "--hash", top])).toBe(`sha256:${encodeNix32(sha256(await collect(dumpPath(topFile))))}`);

    // Our reader gives the signatures back as they were written (opaque strings).
    const back = await readAll(stream);
    expect(back.map((i) => i.signatures)).toEqual([[guixSignature], [nixSignature]]);
    expect(back[1].references).toEqual([dep, top].sort());
    expect(back[1].deriver).toBe(deriver);
  });
});

describe("rejecting bad export streams", () => {
  async function validStream(): Promise<Buffer> {
    const tree = join(work, `t-${randomBytes(4).toString("hex")}`);
    writeFileSync(tree, "content");
    return collect(writeExportStream([{ path: fakeStorePath("x"), references: [], deriver: fakeStorePath("x.drv"), signature: "k:sig", nar: dumpPath(tree) }]));
  }

  test("truncation anywhere is an OffloadError and leaves no spooled file", async () => {
    const bytes = await validStream();
    const before = new Set(readdirSync(spool));
    for (let cut = 0; cut < bytes.length; cut++) {
      await expect(readAll(bytes.subarray(0, cut), 13)).rejects.toBeInstanceOf(OffloadError);
    }
    expect(readdirSync(spool).filter((f) => !before.has(f))).toEqual([]);
  });

  test("wrong marker, magic, path and slot", async () => {
    const bytes = await validStream();
    const before = new Set(readdirSync(spool));
    const marker = Buffer.from(bytes);
    marker[0] = 2;
    await expect(readAll(marker)).rejects.toThrow("export stream: expected 1 (another path) or 0 (end) but found 2 (item 1)");
    const magicAt = bytes.indexOf(Buffer.from("4e49584500000000", "hex"));
    const magic = Buffer.from(bytes);
    magic[magicAt] = 0;
    await expect(readAll(magic)).rejects.toThrow(/expected the magic 0x4558494e/);
    const pathAt = bytes.indexOf(Buffer.from("/nix/store/"));
    const path = Buffer.from(bytes);
    path.write("/nix/stor/", pathAt);
    await expect(readAll(path)).rejects.toThrow(/export stream: path: invalid store path/);
    const slotAt = bytes.length - 8 - 8 - 8 - 8; // slot, "k:sig" (len + padded 8), end marker
    const slot = Buffer.from(bytes);
    expect(slot.readBigUInt64LE(slotAt)).toBe(1n);
    slot[slotAt] = 3;
    await expect(readAll(slot)).rejects.toThrow(/signature slot of .* is 3/);
    // Failed items leave no spooled NAR behind.
    expect(readdirSync(spool).filter((f) => !before.has(f))).toEqual([]);
  });

  test("a stream without the final 0 is truncated", async () => {
    const bytes = await validStream();
    await expect(readAll(bytes.subarray(0, bytes.length - 8))).rejects.toThrow(/export stream: unexpected end of stream while reading the next-path marker/);
  });
});
