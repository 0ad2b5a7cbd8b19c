// Deterministic fuzzing of every reader that takes bytes from another machine: mutated valid
// inputs must give an OffloadError (or parse, when the mutation kept them valid), never
// another exception, never a hang, and a restore must never write outside its destination.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OffloadError } from "../src/errors.js";
import { parseDerivation } from "../src/nix/drv.js";
import { readExportStream, writeExportStream } from "../src/nix/export-stream.js";
import { copyNar, dumpPath, parseNar, restoreNar } from "../src/nix/nar.js";
import { encodeNix32 } from "../src/nix/nix32.js";
import { WireReader, WireWriter } from "../src/nix/wire.js";

const SEED = 0x0ff10ad;

/** mulberry32: small, fast, deterministic. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(next() * n);
  const pick = <T>(list: readonly T[]): T => list[int(list.length)];
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));
  return { next, int, pick, bytes };
}
type Rng = ReturnType<typeof prng>;

let tried = 0;
const counts: Record<string, { tried: number; accepted: number }> = {};
function count(reader: string, accepted: boolean): void {
  tried++;
  counts[reader] ??= { tried: 0, accepted: 0 };
  counts[reader].tried++;
  if (accepted) counts[reader].accepted++;
}

/** Feeds bytes in random-sized chunks (1 byte up to all at once). */
async function* chunks(bytes: Buffer, rng: Rng): AsyncGenerator<Buffer> {
  for (let at = 0; at < bytes.length;) {
    const n = rng.pick([1, 3, 8, 13, 64, 4096, bytes.length]);
    yield bytes.subarray(at, at + n);
    at += n;
  }
}

/** true if accepted, false if rejected with an OffloadError; anything else fails the test with the input. */
async function outcome(reader: string, input: Buffer | string, run: () => Promise<unknown> | unknown): Promise<boolean> {
  try {
    await run();
    count(reader, true);
    return true;
  } catch (error) {
    if (error instanceof OffloadError) {
      count(reader, false);
      return false;
    }
    const shown = typeof input === "string" ? JSON.stringify(input) : input.toString("hex");
    throw new Error(`${reader}: ${String(error)} (not an OffloadError) for input ${shown}`, { cause: error });
  }
}

// ---------------------------------------------------------------------------------------------
// Inputs: random trees encoded as NAR, with the tokens' positions kept for targeted mutations.

type Tree = { type: "regular"; executable: boolean; contents: Buffer } | { type: "symlink"; target: Buffer } | { type: "directory"; entries: [Buffer, Tree][] };

const NAMES = ["a", "b", "bin", "lib", "é", "\u{1F600}", "\uFFFD", "Z", "x.y", "-", "..a", ".hidden", "日本"].map((n) => Buffer.from(n));

function randomTree(rng: Rng, depth: number, outside: string): Tree {
  const kind = depth > 3 ? rng.int(2) : rng.int(3);
  if (kind === 0) return { type: "regular", executable: rng.int(2) === 1, contents: rng.bytes(rng.pick([0, 1, 7, 8, 9, 100, 3000])) };
  if (kind === 1) {
    // Links that point out of the destination: a restore that followed one would write there.
    const target = rng.pick([outside, `${outside}/x`, "../../../outside", "a", "/etc", "."]);
    return { type: "symlink", target: Buffer.from(target) };
  }
  const names = [...new Set(Array.from({ length: rng.int(5) }, () => rng.pick(NAMES).toString("latin1")))]
    .map((n) => Buffer.from(n, "latin1"))
    .sort(Buffer.compare);
  return { type: "directory", entries: names.map((n) => [n, randomTree(rng, depth + 1, outside)]) };
}

interface Encoded {
  bytes: Buffer;
  /** Offsets of every u64 (string lengths and the file size). */
  words: number[];
  /** Offsets of padding bytes. */
  padding: number[];
}

/** Encodes a tree exactly as given (entry order included), so broken trees make broken NARs. */
function encodeNar(tree: Tree, magic = "nix-archive-1"): Encoded {
  const parts: Buffer[] = [];
  const words: number[] = [];
  const padding: number[] = [];
  let at = 0;
  const str = (s: string | Buffer) => {
    const b = new WireWriter().string(s).toBuffer();
    words.push(at);
    const length = typeof s === "string" ? Buffer.byteLength(s) : s.length;
    for (let i = 8 + length; i < b.length; i++) padding.push(at + i);
    parts.push(b);
    at += b.length;
  };
  const node = (t: Tree) => {
    str("(");
    str("type");
    if (t.type === "regular") {
      str("regular");
      if (t.executable) {
        str("executable");
        str("");
      }
      str("contents");
      str(t.contents);
    } else if (t.type === "symlink") {
      str("symlink");
      str("target");
      str(t.target);
    } else {
      str("directory");
      for (const [name, child] of t.entries) {
        str("entry");
        str("(");
        str("name");
        str(name);
        str("node");
        node(child);
        str(")");
      }
    }
    str(")");
  };
  str(magic);
  node(tree);
  return { bytes: Buffer.concat(parts), words, padding };
}

function directories(tree: Tree): Extract<Tree, { type: "directory" }>[] {
  if (tree.type !== "directory") return [];
  return [tree, ...tree.entries.flatMap(([, child]) => directories(child))];
}

/** Structural mutations: what an attacker would try on the tree itself. */
function mutateTree(tree: Tree, rng: Rng, outside: string): Tree {
  const copy: Tree = structuredClone(tree);
  const dirs = directories(copy);
  if (dirs.length === 0) return { type: "directory", entries: [[Buffer.from(rng.pick(["..", ".", "", "a/b", "a\0b"])), copy]] };
  const dir = rng.pick(dirs);
  const badNames = ["..", ".", "", "a/b", "/", "a\0", "../x", "x/..", "a".repeat(256)].map((n) => Buffer.from(n));
  switch (rng.int(6)) {
    case 0: // a forbidden name
      dir.entries.push([rng.pick(badNames), { type: "regular", executable: false, contents: Buffer.from("x") }]);
      break;
    case 1: // unsorted
      dir.entries.push([Buffer.from("a"), { type: "regular", executable: false, contents: Buffer.alloc(0) }]);
      dir.entries.unshift([Buffer.from("zz"), { type: "regular", executable: false, contents: Buffer.alloc(0) }]);
      break;
    case 2: // duplicate entry
      dir.entries.push(dir.entries[0] ?? [Buffer.from("d"), { type: "symlink", target: Buffer.from(outside) }]);
      if (dir.entries.length === 1) dir.entries.push(dir.entries[0]);
      break;
    case 3: // symlink, then a directory of the same name holding a file (write through the link)
      dir.entries.push([Buffer.from("~l"), { type: "symlink", target: Buffer.from(outside) }]);
      dir.entries.push([
        Buffer.from("~l"),
        { type: "directory", entries: [[Buffer.from("pwned"), { type: "regular", executable: false, contents: Buffer.from("!") }]] },
      ]);
      break;
    case 4: // bad symlink targets
      dir.entries.push([Buffer.from("~t"), { type: "symlink", target: Buffer.from(rng.pick(["", "a\0b", "x".repeat(5000)])) }]);
      break;
    default: // UTF-16 order instead of byte order
      dir.entries.push([Buffer.from("\u{1F600}~"), { type: "regular", executable: false, contents: Buffer.alloc(0) }]);
      dir.entries.push([Buffer.from("\uFFFD~"), { type: "regular", executable: false, contents: Buffer.alloc(0) }]);
  }
  return copy;
}

const INTERESTING_WORDS = [0n, 1n, 2n, 7n, 8n, 255n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, 0x4558494en];

/** Byte-level mutations that keep the wire format's 8-byte grid in mind. */
function mutateBytes(input: { bytes: Buffer; words?: number[]; padding?: number[] }, rng: Rng): Buffer {
  const b = Buffer.from(input.bytes);
  const words = input.words ?? Array.from({ length: Math.floor(b.length / 8) }, (_, i) => i * 8);
  switch (rng.int(6)) {
    case 0: // flip a few bits
      for (let i = 1 + rng.int(3); i > 0; i--) b[rng.int(b.length)] ^= 1 << rng.int(8);
      return b;
    case 1: // a u64 (length, size, marker) becomes something interesting, e.g. huge
      if (words.length) b.writeBigUInt64LE(rng.pick(INTERESTING_WORDS), rng.pick(words));
      return b;
    case 2: // non-zero padding
      if (input.padding?.length) b[rng.pick(input.padding)] = 1 + rng.int(255);
      else b[rng.int(b.length)] ^= 0xff;
      return b;
    case 3: // truncate
      return b.subarray(0, rng.int(b.length));
    case 4: {
      // drop or repeat an 8-byte word
      const at = rng.pick(words.length ? words : [0]);
      return rng.int(2) ? Buffer.concat([b.subarray(0, at), b.subarray(at + 8)]) : Buffer.concat([b.subarray(0, at + 8), b.subarray(at)]);
    }
    default: // trailing or random garbage
      return rng.int(2) ? Buffer.concat([b, rng.bytes(1 + rng.int(16))]) : rng.bytes(rng.int(64));
  }
}

// ---------------------------------------------------------------------------------------------

let work: string;
let outside: string;
beforeAll(() => {
  // Thousands of spooled and restored files: in memory (tmpfs) where there is one.
  work = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "offload-fuzz-"));
  outside = join(work, "outside");
  mkdirSync(outside);
  mkdirSync(join(work, "restore"));
  mkdirSync(join(work, "spool"));
});
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
  const lines = Object.entries(counts).map(([reader, c]) => `  ${reader}: ${c.tried} inputs, ${c.accepted} accepted`);
  console.log(`fuzz (seed 0x${SEED.toString(16)}): ${tried} inputs tried in total\n${lines.join("\n")}`);
});

async function parseOnly(bytes: Buffer, rng: Rng): Promise<void> {
  const reader = new WireReader(chunks(bytes, rng));
  for await (const _ of parseNar(reader));
  // A NAR from a pipe is followed by whatever comes next; alone, it must end here.
  if (!(await reader.atEnd())) throw new OffloadError("trailing data");
}

describe("NAR reader", () => {
  test("every truncation, word, padding, bit and structure mutation of random trees", async () => {
    const rng = prng(SEED);
    for (let t = 0; t < 40; t++) {
      const enc = encodeNar(randomTree(rng, 0, outside));
      expect(await outcome("nar", enc.bytes, () => parseOnly(enc.bytes, rng))).toBe(true);
      // Every truncation of the first trees: each must be "unexpected end of stream".
      if (t < 6) {
        for (let cut = 0; cut < enc.bytes.length; cut++) {
          expect(await outcome("nar", enc.bytes.subarray(0, cut), () => parseOnly(enc.bytes.subarray(0, cut), rng))).toBe(false);
        }
      }
      for (let i = 0; i < 150; i++) {
        const bytes = mutateBytes(enc, rng);
        await outcome("nar", bytes, () => parseOnly(bytes, rng));
      }
      for (let i = 0; i < 20; i++) {
        const bytes = encodeNar(mutateTree(randomTree(rng, 0, outside), rng, outside)).bytes;
        expect(await outcome("nar", bytes, () => parseOnly(bytes, rng))).toBe(false);
      }
    }
    // Wrong magic is always refused.
    const wrong = encodeNar({ type: "regular", executable: false, contents: Buffer.from("x") }, "nix-archive-2").bytes;
    expect(await outcome("nar", wrong, () => parseOnly(wrong, rng))).toBe(false);
  });

  test("copyNar passes exactly the accepted bytes and hashes them", async () => {
    const rng = prng(SEED + 1);
    for (let t = 0; t < 300; t++) {
      const enc = encodeNar(randomTree(rng, 0, outside));
      const bytes = t % 3 === 0 ? enc.bytes : mutateBytes(enc, rng);
      const copied: Buffer[] = [];
      let result: { narHash: Buffer; narSize: number } | undefined;
      const ok = await outcome("copyNar", bytes, async () => {
        result = await copyNar(new WireReader(chunks(bytes, rng)), (b) => {
          copied.push(Buffer.from(b));
        });
      });
      if (ok) {
        const nar = Buffer.concat(copied);
        expect(bytes.subarray(0, nar.length).equals(nar)).toBe(true);
        expect(result!.narSize).toBe(nar.length);
        expect(result!.narHash.equals(createHash("sha256").update(nar).digest())).toBe(true);
      }
    }
  });

  test("restore: accepted inputs restore to a tree that dumps to the same bytes; nothing is ever written outside", async () => {
    const rng = prng(SEED + 2);
    const base = join(work, "restore");
    for (let i = 0; i < 1500; i++) {
      const tree = randomTree(rng, 0, outside);
      const bytes = i % 4 === 0 ? encodeNar(tree).bytes : i % 4 === 1 ? encodeNar(mutateTree(tree, rng, outside)).bytes : mutateBytes(encodeNar(tree), rng);
      const destination = join(base, `r${i}`);
      const ok = await outcome("restore", bytes, () => restoreNar(chunks(bytes, rng), destination));
      if (ok) {
        const parts: Buffer[] = [];
        for await (const c of dumpPath(destination)) parts.push(c);
        expect(Buffer.concat(parts).equals(bytes)).toBe(true);
        rmSync(destination, { recursive: true, force: true });
      } else {
        expect(existsSync(destination)).toBe(false); // a failed restore removes what it wrote
      }
      expect(readdirSync(outside)).toEqual([]);
    }
    expect(readdirSync(base)).toEqual([]);
  });
});

describe("export stream reader", () => {
  test("mutations of streams of one to three paths; no spooled file survives a failure", async () => {
    const rng = prng(SEED + 3);
    const spool = join(work, "spool");
    const storePath = (name: string) => `/nix/store/${encodeNix32(rng.bytes(20))}-${name}`;
    for (let s = 0; s < 40; s++) {
      const paths = Array.from({ length: 1 + rng.int(3) }, (_, i) => storePath(`p${i}`));
      const items = paths.map((path, i) => ({
        path,
        references: paths.slice(0, i + 1),
        deriver: rng.int(2) ? storePath(`p${i}.drv`) : undefined,
        signature: rng.pick([undefined, "key-1:" + rng.bytes(64).toString("base64"), "(signature (data (hash sha256 #00#)))"]),
        nar: (async function* () {
          yield encodeNar(randomTree(rng, 2, outside)).bytes;
        })(),
      }));
      const parts: Buffer[] = [];
      for await (const c of writeExportStream(items)) parts.push(c);
      const stream = Buffer.concat(parts);
      const read = async (bytes: Buffer) => {
        for await (const item of readExportStream(chunks(bytes, rng), { spoolDir: spool })) rmSync(item.narFile);
      };
      expect(await outcome("export", stream, () => read(stream))).toBe(true);
      const cuts = s < 3 ? Array.from({ length: stream.length }, (_, i) => i) : Array.from({ length: 40 }, () => rng.int(stream.length));
      for (const cut of cuts) {
        expect(await outcome("export", stream.subarray(0, cut), () => read(stream.subarray(0, cut)))).toBe(false);
      }
      for (let i = 0; i < 120; i++) {
        const bytes = mutateBytes({ bytes: stream }, rng);
        await outcome("export", bytes, () => read(bytes));
      }
      expect(readdirSync(spool)).toEqual([]);
    }
  });
});

describe("wire reader", () => {
  test("random read programs over random and mutated bytes", async () => {
    const rng = prng(SEED + 4);
    const valid = new WireWriter().u64(1).string("hello").strings(["a", "bc"]).bool(true).string(rng.bytes(100)).toBuffer();
    for (let i = 0; i < 2500; i++) {
      const bytes = i % 2 ? mutateBytes({ bytes: valid }, rng) : rng.bytes(rng.int(80));
      await outcome("wire", bytes, async () => {
        const r = new WireReader(chunks(bytes, rng));
        for (let op = 0; op < 8; op++) {
          switch (rng.int(9)) {
            case 0:
              await r.u64();
              break;
            case 1:
              await r.num(rng.pick([1, 100, 2 ** 32 - 1, Number.MAX_SAFE_INTEGER]));
              break;
            case 2:
              await r.bool();
              break;
            case 3:
              await r.string(rng.pick([0, 5, 1000]));
              break;
            case 4:
              await r.strings(rng.pick([0, 3, 100]), 100);
              break;
            case 5:
              await r.bytes(rng.int(20));
              break;
            case 6:
              for await (const _ of r.chunks(rng.int(40)));
              break;
            case 7:
              await r.padding(rng.int(16));
              break;
            default:
              await r.atEnd();
          }
        }
      });
    }
  });
});

describe("drv parser", () => {
  const H = "0c9xq7mdfzq0mjx9ib7ql8n5hrm6r4lb";
  const seeds = [
    `Derive([("dev","/nix/store/${H}-x-dev","",""),("out","/nix/store/${H}-x","","")],[("/nix/store/${H}-dep.drv",["dev","out"])],["/nix/store/${H}-src"],"x86_64-linux","/bin/sh",["-c","echo \\"hi\\"\\n\\ttab \\\\ done"],[("builder","/bin/sh"),("name","x"),("out","/nix/store/${H}-x"),("weird","\\r\\n\\t\\"\\\\ é 😀")])`,
    `Derive([("out","/nix/store/${H}-f","r:sha256","${"ab".repeat(32)}")],[],[],"aarch64-linux","builtin:fetchurl",[],[])`,
  ];
  const special = ['"', "\\", "(", ")", "[", "]", ",", "n", "/", "\0", "é"];

  test("truncations and character mutations", () => {
    const rng = prng(SEED + 5);
    let n = 0;
    const check = (text: string) => {
      n++;
      try {
        parseDerivation(text, "/nix/store/fuzz.drv");
        count("drv", true);
      } catch (error) {
        if (!(error instanceof OffloadError)) throw new Error(`drv: ${String(error)} for ${JSON.stringify(text)}`, { cause: error });
        count("drv", false);
      }
    };
    for (const seed of seeds) {
      check(seed);
      for (let cut = 0; cut < seed.length; cut++) check(seed.slice(0, cut));
      for (let i = 0; i < 1200; i++) {
        const at = rng.int(seed.length);
        switch (rng.int(4)) {
          case 0:
            check(seed.slice(0, at) + rng.pick(special) + seed.slice(at + 1));
            break;
          case 1:
            check(seed.slice(0, at) + seed.slice(at + 1 + rng.int(10)));
            break;
          case 2:
            check(seed.slice(0, at) + rng.pick(special) + seed.slice(at));
            break;
          default:
            check(seed.slice(0, at) + seed.slice(rng.int(seed.length)));
        }
      }
    }
    expect(n).toBeGreaterThan(2000);
  });
});

describe("total", () => {
  test("every reader both accepted and refused mutated inputs, of 10,000 or more in all", () => {
    // Mutations that only ever fail (or only pass) would test one side of a reader.
    const outcomes = Object.entries(counts).map(([reader, c]) => [reader, c.accepted > 0, c.tried > c.accepted]);
    expect(outcomes).toEqual(["nar", "copyNar", "restore", "export", "wire", "drv"].map((reader) => [reader, true, true]));
    expect(tried).toBeGreaterThanOrEqual(10_000);
  });
});
