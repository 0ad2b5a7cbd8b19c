import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OffloadError } from "../src/errors.js";
import { copyNar, dumpPath, narHashOf, parseNar, restoreNar } from "../src/nix/nar.js";
import { WireReader, WireWriter } from "../src/nix/wire.js";

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "offload-nar-test-"));
});
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

function pseudoRandom(seed: number, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let at = 0, i = 0; at < n; i++) {
    const block = createHash("sha512").update(`${seed}:${i}`).digest();
    block.copy(out, at);
    at += block.length;
  }
  return out;
}

/** A tree with every kind of node and the awkward cases of names, modes and sizes. */
function makeTree(root: string): void {
  mkdirSync(root);
  const p = (...parts: string[]) => join(root, ...parts);
  writeFileSync(p("empty"), "");
  writeFileSync(p("hello"), "hello\n");
  writeFileSync(p("exec"), "#!/bin/sh\necho hi\n");
  chmodSync(p("exec"), 0o755);
  writeFileSync(p("owner-x-only"), "x");
  chmodSync(p("owner-x-only"), 0o700);
  writeFileSync(p("group-x-only"), "g"); // not executable as far as NAR is concerned
  chmodSync(p("group-x-only"), 0o614);
  writeFileSync(p("read-only"), "r");
  chmodSync(p("read-only"), 0o400);
  for (let n = 1; n <= 17; n++) writeFileSync(p(`pad${String(n).padStart(2, "0")}`), "p".repeat(n));
  writeFileSync(p("big"), pseudoRandom(1, 3 * 1024 * 1024 + 5)); // multi-MiB, not a multiple of 8
  writeFileSync(p("chunk-edge"), pseudoRandom(2, 1024 * 1024 - 3)); // straddles the 1 MiB output chunks
  writeFileSync(p("just-over-sync-limit"), pseudoRandom(3, 64 * 1024 + 1));
  symlinkSync("hello", p("link-relative"));
  symlinkSync("/etc/passwd", p("link-absolute"));
  symlinkSync("does/not/exist", p("link-dangling"));
  symlinkSync("sub", p("link-to-dir"));
  symlinkSync("../../../../../../etc", p("link-escaping"));
  mkdirSync(p("empty-dir"));
  mkdirSync(p("sub", "deeper", "deepest"), { recursive: true });
  writeFileSync(p("sub", "file"), "in sub");
  writeFileSync(p("sub", "deeper", "deepest", "leaf"), pseudoRandom(4, 100));
  // Sort order: bytewise, not UTF-16. U+FFFD (EF BF BD) sorts before U+1F600 (F0 9F 98 80)
  // as bytes, after it as UTF-16 code units (FFFD > D83D).
  mkdirSync(p("names"));
  for (const name of ["\uFFFD", "\u{1F600}", "Z", "a", "a-b", "a.b", "a0", "é", "e\u0301", "z", "日本語", "with space", "-dash"]) {
    writeFileSync(p("names", name), name);
  }
  // Not UTF-8 at all: a name is bytes.
  writeFileSync(Buffer.concat([Buffer.from(p("names") + "/"), Buffer.from([0x66, 0xff, 0xfe])]), "latin");
}

/** Type, exec bit, contents and link targets of a tree, keyed by relative path bytes (hex). */
function describeTree(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (path: Buffer, rel: string) => {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) out.set(rel, `link:${readlinkSync(path, { encoding: "buffer" }).toString("hex")}`);
    else if (st.isFile()) {
      const sha = createHash("sha256").update(readFileSync(path)).digest("hex");
      out.set(rel, `file:${st.mode & 0o100 ? "x" : "-"}:${st.size}:${sha}`);
    } else if (st.isDirectory()) {
      out.set(rel, "dir");
      for (const name of readdirSync(path, { encoding: "buffer" })) {
        walk(Buffer.concat([path, Buffer.from("/"), name]), `${rel}/${name.toString("hex")}`);
      }
    } else out.set(rel, "other");
  };
  walk(Buffer.from(root), "");
  return out;
}

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of gen) parts.push(c);
  return Buffer.concat(parts);
}

function nixDump(path: string): Buffer {
  return execFileSync("nix-store", ["--dump", path], { maxBuffer: 1 << 30 });
}

async function* chunked(buf: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let at = 0; at < buf.length; at += size) yield buf.subarray(at, at + size);
}

/** Builds a NAR (or a broken one) from tokens: strings/Buffers are wire strings, bigints u64s. */
function craft(...items: (string | Buffer | bigint)[]): Buffer {
  const w = new WireWriter();
  for (const item of items) {
    if (typeof item === "bigint") w.u64(item);
    else w.string(item);
  }
  return w.toBuffer();
}
const entry = (name: string | Buffer, ...node: (string | Buffer | bigint)[]) => ["entry", "(", "name", name, "node", ...node, ")"];
const file = (contents: string) => ["(", "type", "regular", "contents", contents, ")"];
const link = (target: string) => ["(", "type", "symlink", "target", target, ")"];
const dir = (...entries: (string | Buffer | bigint)[][]) => ["(", "type", "directory", ...entries.flat(), ")"];
const nar = (...node: (string | Buffer | bigint)[]) => craft("nix-archive-1", ...node);

describe("nix-store is available (golden tests need the real Nix 2.8)", () => {
  test("nix-store --version", () => {
    expect(execFileSync("nix-store", ["--version"], { encoding: "utf8" })).toMatch(/nix-store \(Nix\) 2\./);
  });
});

describe("dumpPath equals nix-store --dump byte for byte", () => {
  let tree: string;
  beforeAll(() => {
    tree = join(work, "tree");
    makeTree(tree);
    writeFileSync(join(work, "single"), "a lone file");
    writeFileSync(join(work, "single-exec"), "#!/bin/sh");
    chmodSync(join(work, "single-exec"), 0o755);
    symlinkSync("/nowhere", join(work, "single-link"));
    mkdirSync(join(work, "empty-root"));
  });

  test.each(["tree", "single", "single-exec", "single-link", "empty-root", "tree/sub", "tree/names"])("%s", async (name) => {
    const path = join(work, name);
    const ours = await collect(dumpPath(path));
    const theirs = nixDump(path);
    expect(ours.length).toBe(theirs.length);
    expect(ours.equals(theirs)).toBe(true);
  });

  test("chunks are about 1 MiB, never more", async () => {
    const sizes: number[] = [];
    for await (const c of dumpPath(join(work, "tree"))) sizes.push(c.length);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(1024 * 1024);
    expect(sizes.length).toBeGreaterThan(3);
  });

  test("narHashOf equals sha256 and size of nix-store --dump", async () => {
    const theirs = nixDump(join(work, "tree"));
    const { narHash, narSize } = await narHashOf(join(work, "tree"));
    expect(narSize).toBe(theirs.length);
    expect(narHash.equals(createHash("sha256").update(theirs).digest())).toBe(true);
  });

  test("a missing path and a FIFO are OffloadErrors", async () => {
    await expect(collect(dumpPath(join(work, "missing")))).rejects.toThrow(OffloadError);
    execFileSync("mkfifo", [join(work, "fifo")]);
    await expect(collect(dumpPath(join(work, "fifo")))).rejects.toThrow(/it is a FIFO/);
  });
});

describe("restoreNar equals nix-store --restore", () => {
  test.each(["tree", "single", "single-exec", "single-link", "empty-root"])("%s", async (name) => {
    const narBytes = nixDump(join(work, name));
    const theirs = join(work, `restored-nix-${name}`);
    execFileSync("nix-store", ["--restore", theirs], { input: narBytes });
    const ours = join(work, `restored-ours-${name}`);
    await restoreNar(chunked(narBytes, 4099), ours);
    expect(describeTree(ours)).toEqual(describeTree(theirs));
    expect(describeTree(ours)).toEqual(describeTree(join(work, name)));
    // And the restored tree dumps to the same NAR.
    expect((await collect(dumpPath(ours))).equals(narBytes)).toBe(true);
  });

  test("files are 0444 or 0555, directories 0755", async () => {
    const ours = join(work, "restored-ours-tree");
    expect(lstatSync(join(ours, "hello")).mode & 0o7777).toBe(0o444);
    expect(lstatSync(join(ours, "exec")).mode & 0o7777).toBe(0o555);
    expect(lstatSync(join(ours, "sub")).mode & 0o7777).toBe(0o755);
  });

  test("the destination must not exist, and is left alone", async () => {
    mkdirSync(join(work, "exists"));
    writeFileSync(join(work, "exists", "keep"), "keep");
    await expect(restoreNar(chunked(nixDump(join(work, "tree")), 1 << 16), join(work, "exists"))).rejects.toThrow(/already exists/);
    expect(readFileSync(join(work, "exists", "keep"), "utf8")).toBe("keep");
  });

  test("trailing bytes after the NAR are rejected and the partial tree removed", async () => {
    const bytes = Buffer.concat([nixDump(join(work, "single")), Buffer.alloc(8)]);
    await expect(restoreNar(chunked(bytes, 100), join(work, "trailing"))).rejects.toThrow(/continues after the end/);
    expect(existsSync(join(work, "trailing"))).toBe(false);
  });

  test("a duplicate entry cannot turn a symlink into a way out", async () => {
    const outside = join(work, "outside");
    mkdirSync(outside);
    const evil = nar(...dir(entry("a", ...link(outside)), entry("a", ...dir(entry("pwned", ...file("x"))))));
    await expect(restoreNar(chunked(evil, 7), join(work, "evil"))).rejects.toThrow('NAR: duplicate entry "a"');
    expect(readdirSync(outside)).toEqual([]);
    expect(existsSync(join(work, "evil"))).toBe(false);
  });

  test("a symlink root cannot be written through", async () => {
    const outside = join(work, "outside2");
    mkdirSync(outside);
    symlinkSync(outside, join(work, "dest-link"));
    await expect(restoreNar(chunked(nar(...dir(entry("f", ...file("x")))), 9), join(work, "dest-link"))).rejects.toThrow(/already exists/);
    expect(readdirSync(outside)).toEqual([]);
  });
});

describe("parseNar / copyNar", () => {
  test("copyNar passes the exact bytes, hashes them and leaves the reader after the NAR", async () => {
    const narBytes = nixDump(join(work, "tree"));
    const trailer = new WireWriter().string("after").toBuffer();
    const reader = new WireReader(chunked(Buffer.concat([narBytes, trailer]), 65536));
    const copied: Buffer[] = [];
    const { narHash, narSize } = await copyNar(reader, async (b) => {
      copied.push(Buffer.from(b));
    });
    expect(Buffer.concat(copied).equals(narBytes)).toBe(true);
    expect(narSize).toBe(narBytes.length);
    expect(narHash.equals(createHash("sha256").update(narBytes).digest())).toBe(true);
    expect(await reader.string()).toBe("after");
    expect(await reader.atEnd()).toBe(true);
  });

  test("events describe the tree", async () => {
    const events: string[] = [];
    const narBytes = nar(...dir(entry("d", ...dir(entry("f", ...file("abc")))), entry("l", ...link("t"))));
    for await (const e of parseNar(new WireReader(chunked(narBytes, 3)))) {
      events.push(e.type === "contents" ? `contents:${e.data}` : `${e.type}:${e.path}`);
    }
    // Contents arrive as the source delivers them (here 3-byte chunks), never collected.
    expect(events).toEqual(["directory:", "directory:d", "regular:d/f", "contents:a", "contents:bc", "symlink:l"]);
  });

  const invalid: [string, Buffer, string | RegExp][] = [
    ["wrong magic", craft("nix-archive-2", ...file("x")), 'NAR: input does not start with "nix-archive-1"'],
    ["not a NAR", Buffer.from("hello world, this is not a NAR"), /does not start with/],
    ["empty input", Buffer.alloc(0), "NAR: unexpected end of stream while reading the length of the NAR magic (after 0 bytes)"],
    ["name with /", nar(...dir(entry("a/b", ...file("x")))), "NAR: entry name contains '/': \"a/b\""],
    ["name ..", nar(...dir(entry("..", ...file("x")))), 'NAR: entry name is "..": ".."'],
    ["name .", nar(...dir(entry(".", ...file("x")))), /entry name is "\."/],
    ["empty name", nar(...dir(entry("", ...file("x")))), 'NAR: entry name is empty: ""'],
    ["NUL in name", nar(...dir(entry("a\0b", ...file("x")))), /entry name contains NUL/],
    ["unsorted", nar(...dir(entry("b", ...file("x")), entry("a", ...file("y")))), 'NAR: entries are not sorted: "a" comes after "b"'],
    ["UTF-16 order", nar(...dir(entry("\u{1F600}", ...file("x")), entry("\uFFFD", ...file("y")))), /not sorted/],
    ["unknown type", nar("(", "type", "fifo", ")"), 'NAR: unknown node type "fifo"'],
    ["executable with value", nar("(", "type", "regular", "executable", "yes", "contents", "x", ")"), /executable marker/],
    ["contents before executable", nar("(", "type", "regular", "contents", "x", "executable", "", ")"), /expected "\)" but found "executable"/],
    ["empty symlink target", nar(...link("")), /symlink target is empty/],
    ["huge file size", craft("nix-archive-1", "(", "type", "regular", "contents", 2n ** 62n), /more than the maximum/],
    ["truncated contents", craft("nix-archive-1", "(", "type", "regular", "contents", 100n, "abc"), /unexpected end of stream while reading NAR file contents/],
    ["entry in a file", nar("(", "type", "regular", "contents", "x", "entry", ")"), /expected "\)" but found "entry"/],
    ["missing close", craft("nix-archive-1", "(", "type", "symlink", "target", "x"), /unexpected end of stream/],
  ];
  test.each(invalid)("rejects %s", async (_why, bytes, message) => {
    const run = async () => {
      for await (const _ of parseNar(new WireReader(chunked(bytes, 5))));
    };
    await expect(run()).rejects.toBeInstanceOf(OffloadError);
    await expect(run()).rejects.toThrow(message);
  });

  test("non-zero padding is rejected", async () => {
    const bytes = nar(...file("abc"));
    const at = bytes.indexOf(Buffer.from("abc")) + 3;
    bytes[at] = 1;
    const run = async () => {
      for await (const _ of parseNar(new WireReader(chunked(bytes, 64))));
    };
    await expect(run()).rejects.toThrow(/NAR: wire: non-zero padding after NAR file contents/);
  });
});

describe("Nix 2.8's own parser (documenting where ours is stricter)", () => {
  test("nix-store --restore accepts unsorted entries, ours does not", async () => {
    const unsorted = nar(...dir(entry("b", ...file("x")), entry("a", ...file("y"))));
    const result = spawnSync("nix-store", ["--restore", join(work, "nix-unsorted")], { input: unsorted });
    expect(result.status).toBe(0);
    await expect(restoreNar(chunked(unsorted, 8), join(work, "ours-unsorted"))).rejects.toThrow(/not sorted/);
  });
});
