// `offload archive import`: all-or-nothing import of a signed export stream. The whole
// stream is spooled first (NAR hash and size recomputed while reading), then handed to the
// verified import shared with the hook: a signature by an ACL key over each path's
// fingerprint, every reference present locally or earlier in the archive, and only then,
// dependencies first, into the store with the signatures kept.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { OffloadError } from "../errors.js";
import { readExportStream, type ExportItem } from "../nix/export-stream.js";
import type { PublicKey } from "../nix/keys.js";
import type { WireSource } from "../nix/wire.js";
import { importVerified, type ImportedPath, type VerifiedImportOptions } from "./import-verified.js";

export interface ImportArchiveOptions {
  /** Keys whose signatures are accepted (the ACL). */
  trustedKeys: readonly PublicKey[];
  /** Store to import into (nix-store --store), e.g. a chroot store directory; default the local store. */
  store?: string;
  /** Environment for nix-store (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Where NARs are spooled before import; default the system temp directory. */
  tempDir?: string;
  /** The nix-store binary; default "nix-store" from PATH. */
  nixStore?: string;
}

const ARCHIVE_FIXES: VerifiedImportOptions["fixes"] = {
  unsigned: "export it with `offload archive export`, which signs every item",
  "unknown-key": "if you trust the signer: offload authorize /path/to/its/signing-key.pub",
  "invalid-signature": "do not use this archive: it was corrupted or tampered with after signing; export it again",
  "duplicate-path": "export the archive again",
  "reference-order": "export the archive again with `offload archive export`, which orders dependencies first",
  "missing-reference": "export with `offload archive export --recursive` (the whole closure), or import the missing paths first",
};

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
    return await importVerified(items, {
      trustedKeys: options.trustedKeys,
      origin: "archive",
      fixes: ARCHIVE_FIXES,
      store: options.store,
      env: options.env,
      nixStore: options.nixStore,
    });
  } finally {
    await rm(spoolDir, { recursive: true, force: true });
  }
}
