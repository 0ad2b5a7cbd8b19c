// Guix archives: what `guix archive --export` writes and `--import` reads. The framing is
// Nix's export stream; each item's signature slot holds a Guix signature (signature.ts)
// over the SHA-256 of the item's bytes from its NAR through its deriver.
//
// Export reads the Guix store through guix-daemon (ExportPath without signing: the daemon
// checks each path against its registered hash) and signs each item with offload's Guix key.
// Import is all or nothing: the whole archive is spooled, every item checked against
// offload's Guix ACL (the signature, then duplicates, order, references present), and only
// then handed to guix-daemon's ImportPaths. That daemon verifies again, against its own ACL
// (/etc/guix/acl), which offload cannot change: so each item goes in re-signed by offload's
// Guix key, which the daemon must trust. Guix keeps no signature in its store, so nothing is
// lost by re-signing; offload's ACL is what decided.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { OffloadError, asOffloadError } from "../errors.js";
import { readExportStream, writeExportStream, type ExportItem } from "../nix/export-stream.js";
import { WireWriter, type WireSource } from "../nix/wire.js";
import { checkImportOrder, type OrderRefusal } from "./import-verified.js";
import { guixAclHas, guixConfigDir } from "../guix/acl.js";
import { GuixDaemon, type GuixPathInfo } from "./guix-daemon.js";
import { GUIX_STORE_DIR } from "../guix/paths.js";
import { guixPublicKeyPath, type GuixPublicKey, type GuixSecretKey } from "../guix/keys.js";
import { checkGuixSignature, signHash, type GuixRefusal } from "../guix/signature.js";

/**
 * Path infos of `paths` (their closure when recursive), dependencies first, in exactly
 * Guix's order (guix/store.scm `topologically-sorted`): depth first from each path in the
 * order given, references in store order, each path after its references. As in Guix, the
 * walk goes through the whole closure even when only `paths` are exported.
 */
export async function guixPathsToExport(daemon: GuixDaemon, paths: readonly string[], recursive: boolean): Promise<GuixPathInfo[]> {
  const valid = await daemon.queryValidPaths(paths);
  const missing = paths.filter((item) => !valid.has(item));
  if (missing.length > 0) {
    throw new OffloadError(`not valid in the Guix store: ${missing.join(", ")}`, {
      code: "invalid-path",
      fix: "build it first (guix build …), then export",
    });
  }
  const wanted = new Set(paths);
  const order: GuixPathInfo[] = [];
  const visited = new Set<string>();
  // Iterative: closures can be deep enough to exhaust the call stack.
  for (const root of paths) {
    if (visited.has(root)) continue;
    visited.add(root);
    const stack = [{ info: await daemon.queryPathInfo(root), next: 0 }];
    while (stack.length > 0) {
      const frame = stack[stack.length - 1]!;
      const reference = frame.info.references[frame.next++];
      if (reference === undefined) {
        stack.pop();
        if (recursive || wanted.has(frame.info.path)) order.push(frame.info);
      } else if (!visited.has(reference)) {
        visited.add(reference);
        stack.push({ info: await daemon.queryPathInfo(reference), next: 0 });
      }
    }
  }
  return order;
}

/** One item as the daemon exports it, signed: `u64 1`, its bytes through the deriver, then our signature. */
async function* signedItem(daemon: GuixDaemon, info: GuixPathInfo, key: GuixSecretKey): AsyncGenerator<Buffer> {
  yield new WireWriter().u64(1).toBuffer();
  const hash = createHash("sha256");
  // The daemon's item ends with its empty signature slot, u64 0: held back, replaced by ours.
  let held = Buffer.alloc(0);
  for await (const chunk of daemon.exportPath(info.path)) {
    const bytes = held.length === 0 ? chunk : Buffer.concat([held, chunk]);
    const pass = bytes.subarray(0, Math.max(0, bytes.length - 8));
    held = Buffer.from(bytes.subarray(pass.length));
    hash.update(pass);
    if (pass.length > 0) yield pass;
  }
  if (!held.equals(Buffer.alloc(8)))
    throw new OffloadError(`guix-daemon's export of ${info.path} does not end with an empty signature slot`, { code: "guix-daemon-protocol" });
  yield new WireWriter().u64(1).string(signHash(hash.digest(), key)).toBuffer();
}

/** The signed archive of `infos` (in the given order), read from the store through `daemon`. */
export async function* exportGuixArchive(daemon: GuixDaemon, infos: readonly GuixPathInfo[], key: GuixSecretKey): AsyncGenerator<Buffer> {
  for (const info of infos) yield* signedItem(daemon, info, key);
  yield new WireWriter().u64(0).toBuffer();
}

export interface GuixImportOptions {
  /** Keys whose signatures are accepted: offload's Guix ACL. */
  acl: readonly GuixPublicKey[];
  /** offload's Guix key: what the daemon is given to check, in place of the verified signatures. */
  key: GuixSecretKey;
  daemon: GuixDaemon;
  /** Guix's own configuration directory, whose acl must list `key`'s public half. Default guixConfigDir(). */
  guixConfigDir?: string;
  /** Where the archive is spooled; default the system temp directory. */
  tempDir?: string;
}

export interface GuixImported {
  path: string;
  /** The ACL key whose signature was accepted (its id). */
  signer: string;
  /** False when the path was already valid. */
  added: boolean;
}

const FIXES: Record<GuixRefusal | OrderRefusal, string> = {
  unsigned: "export it with `guix archive --export` or `offload archive export --guix`, which sign every item",
  "corrupt-signature": "do not use this archive: its signatures are damaged; export it again",
  "unauthorized-key": "if you trust the signer: offload authorize --guix /path/to/its/signing-key.pub",
  "hash-mismatch": "do not use this archive: it was altered after it was signed; export it again",
  "invalid-signature": "do not use this archive: it was corrupted or tampered with after signing; export it again",
  "duplicate-path": "export the archive again",
  "reference-order": "export the archive again (guix archive --export orders dependencies first)",
  "missing-reference": "export the whole closure (guix archive --export -r, offload archive export --guix -r), or import the missing items first",
};

function refusal(message: string, code: GuixRefusal | OrderRefusal): OffloadError {
  return new OffloadError(`Guix archive refused, nothing imported: ${message}`, { code, fix: FIXES[code] });
}

/** Checks every item against the ACL and the order; returns each path's signer. Nothing is written. */
export async function verifyGuixItems(items: readonly ExportItem[], acl: readonly GuixPublicKey[], daemon: GuixDaemon): Promise<Map<string, string>> {
  const signers = new Map<string, string>();
  items.forEach((item, index) => {
    const verdict = checkGuixSignature(item.signatureBytes, item.itemHash, item.path, acl);
    if (!verdict.valid) throw refusal(`${verdict.reason} (item ${index + 1} of ${items.length})`, verdict.code);
    signers.set(item.path, verdict.key.id);
  });
  await checkImportOrder(items, "archive", refusal, (paths) => daemon.queryValidPaths(paths));
  return signers;
}

/** Imports a Guix archive into the Guix store of `options.daemon`; throws, having imported nothing, if a check fails. */
export async function importGuixArchive(source: WireSource, options: GuixImportOptions): Promise<GuixImported[]> {
  const guixAcl = path.join(options.guixConfigDir ?? guixConfigDir(), "acl");
  if (!(await guixAclHas(guixAcl, options.key.publicKey))) {
    throw new OffloadError(`guix-daemon would refuse what offload imports: offload's Guix key is not in ${guixAcl}`, {
      code: "guix-daemon-untrusted",
      fix: `guix archive --authorize < ${guixPublicKeyPath()}`,
    });
  }
  const spoolDir = await mkdtemp(path.join(options.tempDir ?? tmpdir(), "offload-guix-import-"));
  try {
    const items: ExportItem[] = [];
    try {
      for await (const item of readExportStream(source, { spoolDir, storeDir: GUIX_STORE_DIR })) items.push(item);
    } catch (error) {
      if (!(error instanceof OffloadError)) throw error;
      throw new OffloadError(`Guix archive refused, nothing imported: ${error.message}`, {
        code: error.code,
        fix: "the archive is damaged or incomplete: export it again (and check the transfer)",
        cause: error,
      });
    }
    const signers = await verifyGuixItems(items, options.acl, options.daemon);
    const present = await options.daemon.queryValidPaths(items.map((item) => item.path));
    const fresh = items.filter((item) => !present.has(item.path));
    if (fresh.length > 0) await importResigned(fresh, options);
    return items.map((item) => ({ path: item.path, signer: signers.get(item.path)!, added: !present.has(item.path) }));
  } finally {
    await rm(spoolDir, { recursive: true, force: true });
  }
}

/**
 * Hands verified items to the daemon, each signed by offload over the bytes it is given, on a
 * connection of its own: the daemon imports item by item, so after a failure part-way the
 * items it added are deleted again (once that connection, whose temporary roots hold them, is closed).
 */
async function importResigned(items: readonly ExportItem[], options: GuixImportOptions): Promise<void> {
  const sources = items.map((item) => ({
    path: item.path,
    references: item.references,
    deriver: item.deriver,
    // Opened only when its turn comes: an archive may hold more items than there are file descriptors.
    nar: (async function* () {
      yield* createReadStream(item.narFile);
    })(),
    signature: (hash: Buffer) => signHash(hash, options.key),
  }));
  const importer = await GuixDaemon.connect({ socket: options.daemon.path });
  try {
    await importer.importPaths(writeExportStream(sources, GUIX_STORE_DIR));
    importer.close();
  } catch (error) {
    importer.close();
    const failure = asOffloadError(error);
    const paths = items.map((item) => item.path);
    const rollback = async () => {
      const added = [...(await options.daemon.queryValidPaths(paths))];
      const deleted = added.length === 0 ? [] : await options.daemon.deletePaths(added);
      return added.filter((path) => !deleted.includes(path));
    };
    const left = await rollback().catch(() => paths);
    const cleanup = left.length === 0 ? "nothing of it is left in the store" : `${left.length} item(s) it may have added are still there`;
    throw new OffloadError(`import into the Guix store failed (${cleanup}): ${failure.message}`, {
      code: failure.code,
      fix: left.length === 0 ? failure.fix : `guix gc --delete ${left.join(" ")}${failure.fix ? `; then: ${failure.fix}` : ""}`,
      cause: error,
    });
  }
}
