import { Readable } from "node:stream";
import { OffloadError } from "../src/errors.js";
import { WireReader, WireWriter, paddingLength } from "../src/nix/wire.js";

/** Splits a buffer into chunks of the given sizes (cycling), to exercise chunk boundaries. */
function* split(buf: Buffer, sizes: number[]): Generator<Buffer> {
  let at = 0;
  for (let i = 0; at < buf.length; i++) {
    const n = sizes[i % sizes.length];
    yield buf.subarray(at, at + n);
    at += n;
  }
}

async function* asAsync(it: Iterable<Buffer>): AsyncGenerator<Buffer> {
  for (const b of it) yield b;
}

describe("WireWriter", () => {
  test("numbers, strings, padding", () => {
    const b = new WireWriter().u64(1).bool(true).string("abc").strings(["", "12345678"]).raw(Buffer.from("x")).toBuffer();
    expect(b.toString("hex")).toBe(
      "0100000000000000" +
        "0100000000000000" +
        "0300000000000000" +
        "6162630000000000" +
        "0200000000000000" +
        "0000000000000000" +
        "0800000000000000" +
        "3132333435363738" +
        "78",
    );
    expect(
      new WireWriter()
        .u64(2n ** 64n - 1n)
        .toBuffer()
        .toString("hex"),
    ).toBe("ffffffffffffffff");
  });

  test("rejects non-integers and out-of-range numbers", () => {
    expect(() => new WireWriter().u64(-1)).toThrow(OffloadError);
    expect(() => new WireWriter().u64(1.5)).toThrow(OffloadError);
    expect(() => new WireWriter().u64(2n ** 64n)).toThrow(OffloadError);
  });

  test("paddingLength", () => {
    expect([0, 1, 7, 8, 9].map(paddingLength)).toEqual([0, 7, 1, 0, 7]);
  });
});

describe("WireReader", () => {
  const message = new WireWriter()
    .u64(0x4558494e)
    .bool(false)
    .string("hello, wire")
    .strings(["a", "bb", "ccc"])
    .string(Buffer.alloc(1000, 7))
    .u64(2n ** 40n)
    .toBuffer();

  async function readAll(r: WireReader) {
    const magic = await r.num();
    const flag = await r.bool();
    const s = await r.string();
    const list = await r.strings();
    const len = await r.num();
    const parts: Buffer[] = [];
    for await (const c of r.chunks(len)) parts.push(Buffer.from(c));
    await r.padding(len);
    const big = await r.u64();
    return { magic, flag, s, list, data: Buffer.concat(parts), big, end: await r.atEnd() };
  }

  test.each([[[1]], [[3, 5]], [[7]], [[8]], [[13, 1, 64]], [[100000]]])("reads across chunk sizes %j", async (sizes) => {
    const r = new WireReader(asAsync(split(message, sizes)));
    const got = await readAll(r);
    expect(got).toEqual({
      magic: 0x4558494e,
      flag: false,
      s: "hello, wire",
      list: ["a", "bb", "ccc"],
      data: Buffer.alloc(1000, 7),
      big: 2n ** 40n,
      end: true,
    });
    expect(r.position).toBe(message.length);
  });

  test("reads from a Readable", async () => {
    const r = new WireReader(Readable.from(split(message, [17])));
    expect((await readAll(r)).s).toBe("hello, wire");
  });

  test("tap sees exactly the consumed bytes", async () => {
    const r = new WireReader(asAsync(split(message, [3, 11])));
    const seen: Buffer[] = [];
    r.setTap((b) => seen.push(Buffer.from(b)));
    await readAll(r);
    expect(Buffer.concat(seen).equals(message)).toBe(true);
  });

  test("premature end of stream is a clear OffloadError at every cut", async () => {
    for (let cut = 0; cut < message.length; cut++) {
      const r = new WireReader(asAsync([message.subarray(0, cut)]));
      const err = await readAll(r).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(OffloadError);
      expect((err as OffloadError).message).toMatch(/^unexpected end of stream while reading /);
    }
  });

  test("num rejects values above the maximum", async () => {
    const r = new WireReader(
      asAsync([
        new WireWriter()
          .u64(2 ** 32)
          .u64(5)
          .toBuffer(),
      ]),
    );
    await expect(r.num()).rejects.toThrow(/more than the maximum 4294967295/);
    await expect(r.num(4)).rejects.toThrow(OffloadError);
  });

  test("bool rejects values other than 0 and 1", async () => {
    await expect(new WireReader(asAsync([new WireWriter().u64(2).toBuffer()])).bool()).rejects.toThrow(OffloadError);
  });

  test("string rejects non-zero padding and over-long lengths", async () => {
    const bad = new WireWriter().string("abc").toBuffer();
    bad[8 + 5] = 1;
    await expect(new WireReader(asAsync([bad])).string()).rejects.toThrow(/non-zero padding/);
    const long = new WireWriter().string("abcdef").toBuffer();
    await expect(new WireReader(asAsync([long])).string(5)).rejects.toThrow(/6 bytes is longer than the limit of 5/);
    const huge = new WireWriter().u64(2n ** 63n).toBuffer();
    await expect(new WireReader(asAsync([huge])).string()).rejects.toThrow(/longer than the limit/);
  });

  test("strings rejects too many elements", async () => {
    const b = new WireWriter().strings(["a", "b", "c"]).toBuffer();
    await expect(new WireReader(asAsync([b])).strings(2)).rejects.toThrow(OffloadError);
  });

  test("source errors become OffloadErrors", async () => {
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(4);
      throw new Error("connection reset");
    }
    await expect(new WireReader(failing()).u64()).rejects.toThrow(/reading stream failed: connection reset/);
  });

  test("carries many chunks linearly (no quadratic concatenation)", async () => {
    const payload = Buffer.alloc(64 * 1024 * 1024, 1);
    const framed = new WireWriter().u64(payload.length).toBuffer();
    const r = new WireReader(asAsync([framed, ...split(payload, [4096])]));
    const n = await r.num(2 ** 40);
    let total = 0;
    const start = process.hrtime.bigint();
    for await (const c of r.chunks(n)) total += c.length;
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    expect(total).toBe(payload.length);
    expect(ms).toBeLessThan(5000);
  });
});
