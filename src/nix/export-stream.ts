// The `nix-store --export` / `--import` stream (export-import.cc): per path u64 1, the NAR,
// u64 0x4558494e, path, references, deriver or "", a signature slot (0, or 1 + string);
// u64 0 ends the stream. Nix 2.8 reads and ignores the slot's string; Guix puts its
// signature there, and so do we. Guix's signature covers the SHA-256 of the item's bytes
// from its NAR through its deriver (local-store.cc exportPath): read items carry that hash.
import { createHash, randomBytes } from "node:crypto";
import type { Hash } from "node:crypto";
import { open, rm } from "node:fs/promises";
import { join } from "node:path";
import { OffloadError } from "../errors.js";
import { copyNar } from "./nar-parse.js";
import type { PathInfo } from "./path-info.js";
import { DEFAULT_STORE_DIR, parseStorePath } from "./store-path.js";
import { DEFAULT_MAX_COUNT, WireReader, WireWriter } from "./wire.js";
import type { WireSource } from "./wire.js";

export const EXPORT_MAGIC = 0x4558494e;
/** Enough for any store path: store dir + hash + 211-character name. */
const MAX_PATH_LENGTH = 4096;
/** A Guix signature (a canonical S-expression with a public key) is about 1 KiB. */
const MAX_SIGNATURE_LENGTH = 64 * 1024;

/** One path read from an export stream; its NAR has been spooled to `narFile` and hashed. */
export interface ExportItem extends PathInfo {
  /** Temporary file holding the NAR exactly as received; the caller removes it. */
  narFile: string;
  /** SHA-256 of the item as received, from its NAR through its deriver: what a Guix signature signs. */
  itemHash: Buffer;
  /** The signature slot's bytes as received (a Guix signature is binary, not UTF-8). */
  signatureBytes?: Buffer;
}

export interface ReadExportOptions {
  /** Directory for the spooled NAR files. */
  spoolDir: string;
  storeDir?: string;
}

function bad(message: string): OffloadError {
  return new OffloadError(`export stream: ${message}`, { code: "export-invalid" });
}

function checkStorePath(path: string, storeDir: string, what: string): string {
  try {
    return parseStorePath(path, storeDir).path;
  } catch (error) {
    throw bad(`${what}: ${(error as Error).message}`);
  }
}

async function readStorePath(reader: WireReader, storeDir: string, what: string): Promise<string> {
  return checkStorePath(await reader.string(MAX_PATH_LENGTH, what), storeDir, what);
}

/**
 * Reads an export stream item by item. Each NAR is validated, hashed and written to a new
 * file in `spoolDir` while it arrives (never held in memory). Nothing touches the store.
 * If reading fails, the current item's partial file is removed; files of items already
 * yielded belong to the caller.
 */
export async function* readExportStream(source: WireReader | WireSource, options: ReadExportOptions): AsyncGenerator<ExportItem> {
  const reader = source instanceof WireReader ? source : new WireReader(source);
  const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
  try {
    for (let index = 0; ; index++) {
      const marker = await reader.u64("the next-path marker");
      if (marker === 0n) return;
      if (marker !== 1n) throw bad(`expected 1 (another path) or 0 (end) but found ${marker} (item ${index + 1})`);

      const narFile = join(options.spoolDir, `import-${randomBytes(12).toString("hex")}.nar`);
      let item: ExportItem;
      try {
        item = await readItem(reader, storeDir, narFile);
      } catch (error) {
        await rm(narFile, { force: true });
        throw error;
      }
      yield item;
    }
  } catch (error) {
    if (error instanceof OffloadError && !error.message.startsWith("export stream: ")) {
      throw new OffloadError(`export stream: ${error.message}`, { code: error.code, fix: error.fix, cause: error });
    }
    throw error;
  }
}

async function readItem(reader: WireReader, storeDir: string, narFile: string): Promise<ExportItem> {
  const file = await open(narFile, "wx", 0o600).catch((error: Error) => {
    throw new OffloadError(`export stream: creating ${narFile} failed: ${error.message}`, { code: "export-spool", cause: error });
  });
  const itemHash = createHash("sha256");
  let nar: { narHash: Buffer; narSize: number };
  try {
    nar = await copyNar(reader, async (bytes) => {
      itemHash.update(bytes);
      await file.write(bytes);
    });
  } finally {
    await file.close();
  }
  reader.setTap((bytes) => itemHash.update(bytes));
  try {
    return await readTrailer(reader, storeDir, { narFile, narHash: nar.narHash, narSize: nar.narSize }, itemHash);
  } finally {
    reader.setTap(undefined);
  }
}

/** What follows an item's NAR; `itemHash` sees the bytes up to the deriver, then stops. */
async function readTrailer(
  reader: WireReader,
  storeDir: string,
  nar: Pick<ExportItem, "narFile" | "narHash" | "narSize">,
  itemHash: Hash,
): Promise<ExportItem> {
  const magic = await reader.u64("the export magic");
  if (magic !== BigInt(EXPORT_MAGIC)) {
    throw bad(`expected the magic 0x4558494e after the NAR but found 0x${magic.toString(16)}`);
  }
  const path = await readStorePath(reader, storeDir, "path");
  const count = await reader.num(DEFAULT_MAX_COUNT, "the number of references");
  const references: string[] = [];
  for (let i = 0; i < count; i++) references.push(await readStorePath(reader, storeDir, `reference of ${path}`));
  references.sort();
  for (let i = 1; i < references.length; i++) {
    if (references[i] === references[i - 1]) throw bad(`${path} lists the reference ${references[i]} twice`);
  }
  const deriverText = await reader.string(MAX_PATH_LENGTH, "deriver");
  const deriver = deriverText === "" ? undefined : checkStorePath(deriverText, storeDir, `deriver of ${path}`);
  reader.setTap(undefined);
  const slot = await reader.u64("the signature slot");
  let signatureBytes: Buffer | undefined;
  if (slot === 1n) {
    signatureBytes = Buffer.from(await reader.stringBytes(MAX_SIGNATURE_LENGTH, "the signature"));
  } else if (slot !== 0n) {
    throw bad(`signature slot of ${path} is ${slot}, expected 0 (none) or 1 (one signature)`);
  }
  // An empty string signs nothing.
  const signatures = signatureBytes?.length ? [signatureBytes.toString("utf8")] : [];
  return { path, references, deriver, signatures, ...nar, itemHash: itemHash.digest(), ...(signatureBytes?.length ? { signatureBytes } : {}) };
}

/** One path to write into an export stream. */
export interface ExportSource {
  path: string;
  references: Iterable<string>;
  deriver?: string;
  /**
   * Goes into the signature slot; Nix 2.8's import reads and ignores it. A Buffer goes as it
   * is; a function is given the item's hash (ExportItem.itemHash) to sign, as Guix signs.
   */
  signature?: string | Buffer | ((itemHash: Buffer) => Buffer);
  /** The path's NAR, streamed through unchanged. */
  nar: AsyncIterable<Buffer>;
}

/** Yields the export stream of `items` in the given order (dependencies first for an import). */
export async function* writeExportStream(
  items: AsyncIterable<ExportSource> | Iterable<ExportSource>,
  storeDir: string = DEFAULT_STORE_DIR,
): AsyncGenerator<Buffer> {
  for await (const item of items) {
    parseStorePath(item.path, storeDir);
    const references = [...item.references].sort();
    for (const reference of references) parseStorePath(reference, storeDir);
    if (item.deriver !== undefined) parseStorePath(item.deriver, storeDir);
    yield new WireWriter().u64(1).toBuffer();
    const itemHash = typeof item.signature === "function" ? createHash("sha256") : undefined;
    for await (const chunk of item.nar) {
      itemHash?.update(chunk);
      yield chunk;
    }
    const tail = new WireWriter()
      .u64(EXPORT_MAGIC)
      .string(item.path)
      .strings(references)
      .string(item.deriver ?? "");
    const signature = typeof item.signature === "function" ? item.signature(itemHash!.update(tail.toBuffer()).digest()) : item.signature;
    if (signature === undefined) tail.u64(0);
    else tail.u64(1).string(signature);
    yield tail.toBuffer();
  }
  yield new WireWriter().u64(0).toBuffer();
}
