// Nix's wire encoding (serialise.cc): u64 little-endian numbers, strings as length + bytes +
// zero padding to 8. Shared by NAR, export streams and the serve protocol.
import type { Readable } from "node:stream";
import { OffloadError } from "../errors.js";

export const MAX_U32 = 2 ** 32 - 1;
/** Longest string read when the caller names no limit: protects memory from a hostile peer. */
export const DEFAULT_MAX_STRING = 16 * 1024 * 1024;
/** Most list elements read when the caller names no limit. */
export const DEFAULT_MAX_COUNT = 1024 * 1024;

const MAX_U64 = 2n ** 64n - 1n;
const ZEROS = Buffer.alloc(8);
const EMPTY = Buffer.alloc(0);

/** Zero bytes that follow `length` bytes to reach a multiple of 8. */
export function paddingLength(length: number): number {
  return (8 - (length % 8)) % 8;
}

function invalid(message: string): OffloadError {
  return new OffloadError(message, { code: "wire-invalid" });
}

/** Builds one small message in memory (for large payloads write the parts to the sink directly). */
export class WireWriter {
  private readonly parts: Buffer[] = [];

  u64(n: number | bigint): this {
    if (typeof n === "number" ? !Number.isSafeInteger(n) || n < 0 : n < 0n || n > MAX_U64) {
      throw invalid(`wire: ${n} is not an unsigned 64-bit integer`);
    }
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64LE(BigInt(n));
    this.parts.push(b);
    return this;
  }

  bool(b: boolean): this {
    return this.u64(b ? 1 : 0);
  }

  string(s: string | Buffer): this {
    const bytes = typeof s === "string" ? Buffer.from(s, "utf8") : s;
    this.u64(bytes.length);
    this.parts.push(bytes);
    const pad = paddingLength(bytes.length);
    if (pad > 0) this.parts.push(ZEROS.subarray(0, pad));
    return this;
  }

  strings(list: Iterable<string>): this {
    const items = [...list];
    this.u64(items.length);
    for (const s of items) this.string(s);
    return this;
  }

  raw(b: Buffer): this {
    this.parts.push(b);
    return this;
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** Nix's order of string sets (std::set<std::string>): bytewise, not by locale or UTF-16 units. */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export type WireSource = Readable | AsyncIterable<Buffer | Uint8Array | string>;

/**
 * Reads the wire encoding from a byte stream. Incoming chunks are queued as they are and
 * sliced without copying where a value lies within one chunk, so throughput stays linear
 * however many GiB pass through.
 */
export class WireReader {
  private readonly iterator: AsyncIterator<unknown>;
  private queue: Buffer[] = [];
  private head = 0; // index of the first unconsumed chunk in queue
  private offset = 0; // consumed bytes of queue[head]
  private buffered = 0; // unconsumed bytes in queue
  private ended = false;
  private consumed = 0;
  private tap: ((bytes: Buffer) => void) | undefined;

  constructor(source: WireSource) {
    this.iterator = (source as AsyncIterable<unknown>)[Symbol.asyncIterator]();
  }

  /** Bytes consumed so far (for error messages). */
  get position(): number {
    return this.consumed;
  }

  /** Calls `tap` with every byte consumed from now on, in order (e.g. to hash or copy a NAR exactly). */
  setTap(tap: ((bytes: Buffer) => void) | undefined): void {
    this.tap = tap;
  }

  /** True when the stream ended with nothing left unconsumed. */
  async atEnd(): Promise<boolean> {
    while (this.buffered === 0 && !this.ended) await this.pull();
    return this.buffered === 0;
  }

  async u64(what = "a number"): Promise<bigint> {
    return (await this.bytes(8, what)).readBigUInt64LE(0);
  }

  /** A u64 that must be ≤ max (Nix's readNum); returned as a plain number. */
  async num(max: number = MAX_U32, what = "a number"): Promise<number> {
    const b = await this.bytes(8, what);
    const high = b.readUInt32LE(4);
    const value = high * 2 ** 32 + b.readUInt32LE(0);
    if (high >= 2 ** 21 || value > max) {
      throw invalid(`wire: ${what} is ${b.readBigUInt64LE(0)}, more than the maximum ${max} (at byte ${this.consumed - 8})`);
    }
    return value;
  }

  async bool(what = "a boolean"): Promise<boolean> {
    return (await this.num(1, what)) === 1;
  }

  /** Exactly n bytes, in memory: for small values only (see chunks() for file contents). */
  async bytes(n: number, what = "bytes"): Promise<Buffer> {
    while (this.buffered < n) await this.pullOrFail(what);
    return this.take(n);
  }

  /** Checks the zero padding that follows `length` bytes of data. */
  async padding(length: number, what = "padding"): Promise<void> {
    const pad = paddingLength(length);
    if (pad === 0) return;
    const b = await this.bytes(pad, what);
    if (!b.equals(ZEROS.subarray(0, pad))) {
      throw invalid(`wire: non-zero padding after ${what} (at byte ${this.consumed - pad})`);
    }
  }

  async stringBytes(maxLength: number = DEFAULT_MAX_STRING, what = "a string"): Promise<Buffer> {
    const b = await this.bytes(8, `the length of ${what}`);
    const high = b.readUInt32LE(4);
    const length = high * 2 ** 32 + b.readUInt32LE(0);
    if (high >= 2 ** 21 || length > maxLength) {
      throw invalid(`wire: ${what} of ${b.readBigUInt64LE(0)} bytes is longer than the limit of ${maxLength} bytes (at byte ${this.consumed - 8})`);
    }
    const data = await this.bytes(length, what);
    await this.padding(length, what);
    return data;
  }

  async string(maxLength: number = DEFAULT_MAX_STRING, what = "a string"): Promise<string> {
    return (await this.stringBytes(maxLength, what)).toString("utf8");
  }

  async strings(maxCount: number = DEFAULT_MAX_COUNT, maxLength: number = DEFAULT_MAX_STRING, what = "a string list"): Promise<string[]> {
    const count = await this.num(maxCount, `the length of ${what}`);
    const out: string[] = [];
    for (let i = 0; i < count; i++) out.push(await this.string(maxLength, `an element of ${what}`));
    return out;
  }

  /** Yields the next n bytes as they arrive, without collecting them (big file contents). */
  async *chunks(n: number, what = "data"): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buffered === 0) await this.pullOrFail(what);
      const first = this.queue[this.head];
      const k = Math.min(left, first.length - this.offset);
      const piece = first.subarray(this.offset, this.offset + k);
      this.advance(k);
      left -= k;
      yield piece;
    }
  }

  private take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.queue[this.head];
    let out: Buffer;
    if (first.length - this.offset >= n) {
      out = first.subarray(this.offset, this.offset + n);
      this.advance(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.queue[this.head];
        const k = Math.min(n - filled, chunk.length - this.offset);
        chunk.copy(out, filled, this.offset, this.offset + k);
        filled += k;
        this.advance(k, false);
      }
      this.tap?.(out);
    }
    return out;
  }

  /** Consumes k bytes of queue[head] (k ≤ what it has left). */
  private advance(k: number, tapped = true): void {
    const chunk = this.queue[this.head];
    if (tapped && this.tap) this.tap(chunk.subarray(this.offset, this.offset + k));
    this.offset += k;
    this.buffered -= k;
    this.consumed += k;
    if (this.offset === chunk.length) {
      this.queue[this.head] = EMPTY; // let the chunk be collected
      this.head++;
      this.offset = 0;
    }
  }

  private async pullOrFail(what: string): Promise<void> {
    if (!(await this.pull())) {
      throw new OffloadError(`unexpected end of stream while reading ${what} (after ${this.consumed + this.buffered} bytes)`, {
        code: "wire-eof",
      });
    }
  }

  /** Queues the next chunk; false at end of stream. */
  private async pull(): Promise<boolean> {
    if (this.ended) return false;
    let result: IteratorResult<unknown>;
    try {
      result = await this.iterator.next();
    } catch (error) {
      if (error instanceof OffloadError) throw error;
      throw new OffloadError(`reading stream failed: ${error instanceof Error ? error.message : String(error)}`, {
        code: "wire-io",
        cause: error,
      });
    }
    if (result.done) {
      this.ended = true;
      return false;
    }
    const value = result.value;
    const chunk = Buffer.isBuffer(value)
      ? value
      : value instanceof Uint8Array
        ? Buffer.from(value.buffer, value.byteOffset, value.byteLength)
        : Buffer.from(String(value), "utf8");
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head >= 1024) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (chunk.length > 0) {
      this.queue.push(chunk);
      this.buffered += chunk.length;
    }
    return true;
  }
}
