// `offload archive import`: all-or-nothing import of a signed export stream. The whole
// stream is spooled and checked first (NAR hash and size recomputed while reading, a
// signature by an ACL key over each path's fingerprint, every reference present locally
// or earlier in the archive); only then does anything enter the store, dependencies
// first, keeping the signatures. A store failure part-way removes what this run added.
import { spawnSync } from "node:child_process";
import { createReadStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { OffloadError } from "../errors.js";
import { readExportStream, type ExportItem } from "../nix/export-stream.js";
import type { PublicKey } from "../nix/keys.js";
import { verifyPathSignatures } from "../nix/signature.js";
import type { WireSource } from "../nix/wire.js";
import { openLocalStore, type LocalStore } from "./local-store.js";

export interface ImportArchiveOptions {
  /** Keys whose signatures are accepted (the ACL). */
  trustedKeys: readonly PublicKey[];
  /** Store to import into (nix-store --store), e.g. a chroot store directory; default the local store. */
  store?: string;
  /** Environment for nix-store, e.g. with NIX_HELD_LOCKS when the daemon holds output locks. */
  env?: NodeJS.ProcessEnv;
  /** Where NARs are spooled before import; default the system temp directory. */
  tempDir?: string;
  /** The nix-store binary; default "nix-store" from PATH. */
  nixStore?: string;
}

export interface ImportedPath {
  path: string;
  /** Name of the ACL key whose signature was accepted. */
  signer: string;
  /** False when the path was already valid in the store (nothing to add). */
  added: boolean;
}

const SIGNATURE_FIXES = {
  unsigned: "export it with `offload archive export`, which signs every item",
  "unknown-key": "if you trust the signer: offload authorize /path/to/its/signing-key.pub",
  "invalid-signature": "do not use this archive: it was corrupted or tampered with after signing; export it again",
} as const;

function refuse(message: string, code: string, fix: string): OffloadError {
  return new OffloadError(`archive refused, nothing imported: ${message}`, { code, fix });
}

/** Checks every item, in memory and against the store, before anything is imported. */
async function verifyArchive(items: ExportItem[], trustedKeys: readonly PublicKey[], store: LocalStore): Promise<Map<string, string>> {
  const signers = new Map<string, string>();
  const position = new Map<string, number>();
  items.forEach((item, index) => {
    const where = `item ${index + 1} of ${items.length}`;
    if (position.has(item.path)) {
      throw refuse(`${item.path} appears twice (${where})`, "archive-duplicate", "export the archive again");
    }
    position.set(item.path, index);
    const verdict = verifyPathSignatures(item, trustedKeys);
    if (!verdict.valid) throw refuse(`${verdict.reason} (${where})`, verdict.code, SIGNATURE_FIXES[verdict.code]);
    signers.set(item.path, verdict.key.name);
  });

  const outside = new Set<string>();
  items.forEach((item, index) => {
    for (const reference of item.references) {
      const at = position.get(reference);
      if (at === undefined) outside.add(reference);
      else if (at > index) {
        throw refuse(
          `${item.path} refers to ${reference}, which comes later in the archive (dependencies must come first)`,
          "archive-order",
          "export the archive again with `offload archive export`, which orders dependencies first",
        );
      }
    }
  });
  // lock: the server keeps temporary GC roots on these until the session ends, so the
  // references checked here cannot be collected before the import registers the items.
  const valid = await store.client.queryValidPaths(outside, { lock: true });
  const missing = [...outside].filter((reference) => !valid.has(reference)).sort();
  if (missing.length > 0) {
    const referrer = items.find((item) => item.references.includes(missing[0]!))!;
    throw refuse(
      `${referrer.path} refers to ${missing[0]}, which is neither in the archive nor in the store` +
        (missing.length > 1 ? ` (${missing.length} missing references in all)` : ""),
      "missing-reference",
      "export with `offload archive export --recursive` (the whole closure), or import the missing paths first",
    );
  }
  return signers;
}

/** Deletes paths this run added; returns an error text when that failed too. */
function rollBack(added: string[], options: ImportArchiveOptions): string | undefined {
  if (added.length === 0) return undefined;
  const storeArgs = options.store === undefined ? [] : ["--store", options.store];
  const result = spawnSync(options.nixStore ?? "nix-store", [...storeArgs, "--delete", ...added.reverse()], {
    env: options.env ?? process.env,
    encoding: "utf8",
  });
  if (result.status === 0) return undefined;
  return (result.stderr || result.error?.message || `nix-store --delete exited with ${result.status}`).trim();
}

/** Imports a signed archive; throws (having imported nothing) if any item fails a check. */
export async function importArchive(source: WireSource, options: ImportArchiveOptions): Promise<ImportedPath[]> {
  const spoolDir = await mkdtemp(path.join(options.tempDir ?? tmpdir(), "offload-import-"));
  try {
    const items: ExportItem[] = [];
    try {
      for await (const item of readExportStream(source, { spoolDir })) items.push(item);
    } catch (error) {
      if (!(error instanceof OffloadError)) throw error;
      throw new OffloadError(`archive refused, nothing imported: ${error.message}`, {
        code: error.code,
        fix: "the archive is damaged or incomplete: export it again (and check the transfer)",
        cause: error,
      });
    }

    const store = await openLocalStore({ store: options.store, env: options.env, nixStore: options.nixStore });
    const added: string[] = [];
    try {
      const signers = await verifyArchive(items, options.trustedKeys, store);
      const present = await store.client.queryValidPaths(
        items.map((item) => item.path),
        { lock: true },
      );
      const imported: ImportedPath[] = [];
      for (const item of items) {
        const isNew = !present.has(item.path);
        if (isNew) {
          const { narFile: _spooled, ...info } = item;
          await store.client.addToStoreNar(info, createReadStream(item.narFile));
          added.push(item.path);
        }
        imported.push({ path: item.path, signer: signers.get(item.path)!, added: isNew });
      }
      await store.close();
      return imported;
    } catch (error) {
      await store.close();
      if (added.length === 0) throw error;
      const failure = error instanceof OffloadError ? error : new OffloadError(String(error), { cause: error });
      const rollBackError = rollBack([...added], options);
      if (rollBackError === undefined) {
        throw new OffloadError(`import failed, removed the ${added.length} path(s) it had added: ${failure.message}`, {
          code: failure.code,
          fix: failure.fix,
          cause: error,
        });
      }
      throw new OffloadError(`import failed and removing what it added failed too (${rollBackError}): ${failure.message}`, {
        code: failure.code,
        fix: `nix-store ${options.store === undefined ? "" : `--store ${options.store} `}--delete ${added.join(" ")}`,
        cause: error,
      });
    }
  } finally {
    await rm(spoolDir, { recursive: true, force: true });
  }
}
