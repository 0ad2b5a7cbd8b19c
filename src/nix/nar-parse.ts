// Strict NAR parser: reads exactly one NAR from a wire stream (whose end is found only by
// parsing, e.g. after the serve protocol's DumpStorePath) and rejects anything that
// `nix-store --dump` could not have produced.
import { createHash } from "node:crypto";
import { OffloadError } from "../errors.js";
import { MAX_DEPTH, MAX_FILE_SIZE, MAX_NAME_LENGTH, MAX_TARGET_LENGTH, NAR_MAGIC, entryNameProblem, quote } from "./nar-format.js";
import type { WireReader } from "./wire.js";

/**
 * What a NAR contains, in order. Paths are relative to the root, in bytes (entry names need
 * not be UTF-8), components joined by "/", the root being empty. A "regular" event is
 * followed by "contents" events carrying exactly `size` bytes.
 */
export type NarEvent =
  | { type: "directory"; path: Buffer }
  | { type: "regular"; path: Buffer; executable: boolean; size: number }
  | { type: "contents"; data: Buffer }
  | { type: "symlink"; path: Buffer; target: Buffer };

/** Longer than any token ("nix-archive-1" has 13 bytes). */
const MAX_TOKEN_LENGTH = 16;
const EMPTY = Buffer.alloc(0);
const SLASH = Buffer.from("/");

function bad(message: string): OffloadError {
  return new OffloadError(`NAR: ${message}`, { code: "nar-invalid" });
}

async function token(reader: WireReader): Promise<string> {
  return (await reader.stringBytes(MAX_TOKEN_LENGTH, "a NAR token")).toString("latin1");
}

async function expectToken(reader: WireReader, expected: string): Promise<void> {
  const got = await token(reader);
  if (got !== expected) throw bad(`expected ${JSON.stringify(expected)} but found ${JSON.stringify(got)}`);
}

interface Directory {
  path: Buffer;
  previous: Buffer | undefined;
}

/** Parses one NAR from `reader`, consuming exactly its bytes; throws OffloadError on any deviation. */
export async function* parseNar(reader: WireReader): AsyncGenerator<NarEvent> {
  try {
    // A first "string" too long to be the magic means this is not a NAR at all; an early end
    // of stream stays what it is (e.g. a dropped connection).
    const magic = await reader.stringBytes(MAX_TOKEN_LENGTH, "the NAR magic").catch((error: unknown) => {
      if (error instanceof OffloadError && error.code === "wire-invalid") return undefined;
      throw error;
    });
    if (magic?.toString("latin1") !== NAR_MAGIC) throw bad(`input does not start with ${JSON.stringify(NAR_MAGIC)}`);
    const stack: Directory[] = [];
    let pending: Buffer | undefined = EMPTY;
    for (;;) {
      if (pending !== undefined) {
        const path: Buffer = pending;
        pending = undefined;
        await expectToken(reader, "(");
        await expectToken(reader, "type");
        const kind = await token(reader);
        if (kind === "directory") {
          if (stack.length >= MAX_DEPTH) throw bad(`directories are nested more than ${MAX_DEPTH} deep`);
          yield { type: "directory", path };
          stack.push({ path, previous: undefined });
        } else {
          if (kind === "regular") {
            let field = await token(reader);
            let executable = false;
            if (field === "executable") {
              if ((await token(reader)) !== "") throw bad("executable marker has a non-empty value");
              executable = true;
              field = await token(reader);
            }
            if (field !== "contents") throw bad(`expected "contents" but found ${JSON.stringify(field)}`);
            const size = await reader.num(MAX_FILE_SIZE, "a NAR file size");
            yield { type: "regular", path, executable, size };
            for await (const data of reader.chunks(size, "NAR file contents")) yield { type: "contents", data };
            await reader.padding(size, "NAR file contents");
          } else if (kind === "symlink") {
            await expectToken(reader, "target");
            const target = await reader.stringBytes(MAX_TARGET_LENGTH, "a NAR symlink target");
            if (target.length === 0) throw bad("symlink target is empty");
            if (target.includes(0)) throw bad(`symlink target contains NUL: ${quote(target)}`);
            yield { type: "symlink", path, target };
          } else {
            throw bad(`unknown node type ${JSON.stringify(kind)}`);
          }
          await expectToken(reader, ")");
          if (stack.length === 0) return;
          await expectToken(reader, ")"); // closes the entry holding this node
        }
      }
      const dir = stack[stack.length - 1];
      const field = await token(reader);
      if (field === ")") {
        stack.pop();
        if (stack.length === 0) return;
        await expectToken(reader, ")"); // closes the entry holding this directory
        continue;
      }
      if (field !== "entry") throw bad(`expected "entry" or ")" but found ${JSON.stringify(field)}`);
      await expectToken(reader, "(");
      await expectToken(reader, "name");
      const name = await reader.stringBytes(MAX_NAME_LENGTH, "a NAR entry name");
      const problem = entryNameProblem(name);
      if (problem) throw bad(`${problem}: ${quote(name)}`);
      if (dir.previous !== undefined && Buffer.compare(dir.previous, name) >= 0) {
        throw bad(dir.previous.equals(name) ? `duplicate entry ${quote(name)}` : `entries are not sorted: ${quote(name)} comes after ${quote(dir.previous)}`);
      }
      dir.previous = name;
      await expectToken(reader, "node");
      pending = dir.path.length === 0 ? name : Buffer.concat([dir.path, SLASH, name]);
    }
  } catch (error) {
    if (error instanceof OffloadError && !error.message.startsWith("NAR: ")) {
      throw new OffloadError(`NAR: ${error.message}`, { code: error.code, fix: error.fix, cause: error });
    }
    throw error;
  }
}

/** Hand the sink writes of about this size rather than every token separately. */
const COPY_BATCH = 256 * 1024;

/**
 * Passes the exact bytes of one NAR from `reader` to `onBytes` while validating it, and
 * returns its sha256 and size (e.g. to spool a remote NAR to a file and check it before
 * import). Memory use is bounded by the batch size, not the NAR's.
 */
export async function copyNar(reader: WireReader, onBytes: (bytes: Buffer) => void | Promise<void>): Promise<{ narHash: Buffer; narSize: number }> {
  const hash = createHash("sha256");
  let narSize = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = async (): Promise<void> => {
    if (pendingBytes === 0) return;
    const batch = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    await onBytes(batch);
  };
  reader.setTap((bytes) => {
    hash.update(bytes);
    narSize += bytes.length;
    pending.push(bytes);
    pendingBytes += bytes.length;
  });
  try {
    for await (const _ of parseNar(reader)) {
      if (pendingBytes >= COPY_BATCH) await flush();
    }
  } finally {
    reader.setTap(undefined);
  }
  await flush();
  return { narHash: hash.digest(), narSize };
}
