// Serialises a filesystem tree as a NAR, byte for byte as `nix-store --dump` does.
import { createHash } from "node:crypto";
import { closeSync, constants, lstatSync, openSync, readSync, readdirSync, readlinkSync } from "node:fs";
import type { Stats } from "node:fs";
import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { OffloadError } from "../errors.js";
import { NAR_MAGIC, encodedToken } from "./nar-format.js";

/** Size of the chunks yielded. */
const YIELD_SIZE = 1024 * 1024;
/** Size of the buffers filled (and of each read from a big file): fewer, larger reads. */
const CHUNK_SIZE = 4 * YIELD_SIZE;
/**
 * Metadata calls and reads of files up to this size are blocking: for trees of many small
 * files the thread-pool round trips of async I/O would cost more than the calls themselves
 * (each blocks for microseconds; big files are read asynchronously).
 */
const SYNC_READ_LIMIT = 64 * 1024;

const T = {
  magic: encodedToken(NAR_MAGIC),
  open: encodedToken("("),
  close: encodedToken(")"),
  type: encodedToken("type"),
  regular: encodedToken("regular"),
  executable: encodedToken("executable"),
  empty: encodedToken(""),
  contents: encodedToken("contents"),
  symlink: encodedToken("symlink"),
  target: encodedToken("target"),
  directory: encodedToken("directory"),
  entry: encodedToken("entry"),
  name: encodedToken("name"),
  node: encodedToken("node"),
};

const SLASH = Buffer.from("/");

/** Fills fixed-size chunks; full ones wait in `ready` until the generator yields them. */
class Output {
  buf = Buffer.allocUnsafe(CHUNK_SIZE);
  pos = 0;
  ready: Buffer[] = [];

  put(b: Buffer): void {
    if (this.pos + b.length > CHUNK_SIZE) this.flush();
    b.copy(this.buf, this.pos);
    this.pos += b.length;
  }

  /** A u64 length (the string's or the file's) followed later by data and padding. */
  putLength(n: number): void {
    if (this.pos + 8 > CHUNK_SIZE) this.flush();
    this.buf.writeUInt32LE(n % 2 ** 32, this.pos);
    this.buf.writeUInt32LE(Math.floor(n / 2 ** 32), this.pos + 4);
    this.pos += 8;
  }

  putPadding(length: number): void {
    const pad = (8 - (length % 8)) % 8;
    if (pad === 0) return;
    if (this.pos + pad > CHUNK_SIZE) this.flush();
    this.buf.fill(0, this.pos, this.pos + pad);
    this.pos += pad;
  }

  putString(bytes: Buffer): void {
    this.putLength(bytes.length);
    this.put(bytes);
    this.putPadding(bytes.length);
  }

  flush(): void {
    if (this.pos === 0) return;
    this.ready.push(this.buf.subarray(0, this.pos));
    this.buf = Buffer.allocUnsafe(CHUNK_SIZE);
    this.pos = 0;
  }

  *drain(): Generator<Buffer> {
    while (this.ready.length > 0) {
      const b = this.ready.shift()!;
      for (let at = 0; at < b.length; at += YIELD_SIZE) yield b.subarray(at, at + YIELD_SIZE);
    }
  }
}

interface Frame {
  path: Buffer;
  names: Buffer[];
  next: number;
}

function fsError(error: unknown, action: string, path: Buffer): OffloadError {
  const text = error instanceof Error ? error.message : String(error);
  return new OffloadError(`NAR: ${action} ${JSON.stringify(path.toString())} failed: ${text}`, { code: "nar-dump", cause: error });
}

function changed(path: Buffer): OffloadError {
  return new OffloadError(`NAR: ${JSON.stringify(path.toString())} shrank while it was being archived`, {
    code: "nar-dump",
    fix: "archive paths that nothing is writing to (store paths are immutable)",
  });
}

function kindOf(st: Stats): string {
  if (st.isFIFO()) return "a FIFO";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  return "of an unknown type";
}

/**
 * Yields the NAR of `path` in chunks of about 1 MiB, reading files as it goes: memory use
 * stays constant whatever the tree's size. Directory entries are sorted bytewise, names
 * are taken as raw bytes (they need not be UTF-8), and only the owner-execute bit matters.
 */
export async function* dumpPath(path: string): AsyncGenerator<Buffer> {
  const out = new Output();
  out.put(T.magic);
  const stack: Frame[] = [];
  let pending: Buffer | undefined = Buffer.from(path);
  for (;;) {
    if (pending !== undefined) {
      const node: Buffer = pending;
      pending = undefined;
      let st: Stats;
      try {
        st = lstatSync(node);
      } catch (error) {
        throw fsError(error, "reading the status of", node);
      }
      out.put(T.open);
      out.put(T.type);
      if (st.isDirectory()) {
        out.put(T.directory);
        let names: Buffer[];
        try {
          names = readdirSync(node, { encoding: "buffer" });
        } catch (error) {
          throw fsError(error, "listing", node);
        }
        names.sort(Buffer.compare);
        stack.push({ path: node, names, next: 0 });
      } else {
        if (st.isFile()) {
          out.put(T.regular);
          if (st.mode & 0o100) {
            out.put(T.executable);
            out.put(T.empty);
          }
          out.put(T.contents);
          out.putLength(st.size);
          if (st.size <= SYNC_READ_LIMIT) readSmallFile(node, st.size, out);
          else {
            for await (const _ of readBigFile(node, st.size, out)) yield* out.drain();
          }
          out.putPadding(st.size);
        } else if (st.isSymbolicLink()) {
          let target: Buffer;
          try {
            target = readlinkSync(node, { encoding: "buffer" });
          } catch (error) {
            throw fsError(error, "reading the symlink", node);
          }
          out.put(T.symlink);
          out.put(T.target);
          out.putString(target);
        } else {
          throw new OffloadError(`NAR: cannot archive ${JSON.stringify(node.toString())}: it is ${kindOf(st)}`, {
            code: "nar-dump",
          });
        }
        out.put(T.close);
        if (stack.length === 0) break;
        out.put(T.close); // the entry holding this node
      }
    }
    const top = stack[stack.length - 1];
    if (top.next < top.names.length) {
      const name = top.names[top.next++];
      out.put(T.entry);
      out.put(T.open);
      out.put(T.name);
      out.putString(name);
      out.put(T.node);
      pending = Buffer.concat([top.path, SLASH, name]);
    } else {
      out.put(T.close);
      stack.pop();
      if (stack.length === 0) break;
      out.put(T.close); // the entry holding this directory
    }
    yield* out.drain();
  }
  out.flush();
  yield* out.drain();
}

function readSmallFile(path: Buffer, size: number, out: Output): void {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    throw fsError(error, "opening", path);
  }
  try {
    if (out.pos + size > CHUNK_SIZE) out.flush();
    let left = size;
    while (left > 0) {
      const n = readSync(fd, out.buf, out.pos, left, null);
      if (n === 0) throw changed(path);
      out.pos += n;
      left -= n;
    }
  } catch (error) {
    throw error instanceof OffloadError ? error : fsError(error, "reading", path);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads straight into the output chunks, keeping one read in flight while a full chunk is
 * yielded, so that the disk and the consumer (hashing, ssh) work at the same time.
 * Yields (nothing) whenever a chunk is full.
 */
async function* readBigFile(path: Buffer, size: number, out: Output): AsyncGenerator<void> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    throw fsError(error, "opening", path);
  }
  let left = size; // bytes not yet read
  const start = (): Promise<number> =>
    handle.read(out.buf, out.pos, Math.min(left, CHUNK_SIZE - out.pos), null).then(
      (r) => r.bytesRead,
      (error: unknown) => Promise.reject(fsError(error, "reading", path)),
    );
  if (out.pos === CHUNK_SIZE) out.flush();
  let inflight: Promise<number> | undefined = start();
  try {
    while (inflight !== undefined) {
      const n = await inflight;
      inflight = undefined;
      if (n === 0) throw changed(path);
      out.pos += n;
      left -= n;
      const full = out.pos === CHUNK_SIZE;
      if (full) out.flush();
      if (left > 0) inflight = start();
      if (full) yield;
    }
  } finally {
    await inflight?.catch(() => undefined); // never close under a pending read
    await handle.close();
  }
}

/** sha256 and length of the NAR of `path`, computed while streaming it. */
export async function narHashOf(path: string): Promise<{ narHash: Buffer; narSize: number }> {
  const hash = createHash("sha256");
  let narSize = 0;
  for await (const chunk of dumpPath(path)) {
    hash.update(chunk);
    narSize += chunk.length;
  }
  return { narHash: hash.digest(), narSize };
}
