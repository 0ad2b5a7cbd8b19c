// How a Guix build's outputs come back: the builder's guix-daemon exports each wanted output
// signed by its own key (the stream `guix archive --export` writes); offload spools it,
// checks every item before writing a byte to the store, then puts the files at their store
// paths for guix-daemon to register.
//
// guix-daemon holds the outputs' locks while its hook runs and registers the outputs itself
// after the hook exits 0 (scanning their references), so, as Guix's own offload does, the
// hook only writes files. Unlike Guix's offload it restores each output into a scratch
// directory inside the store directory and renames it into place once all are verified
// and restored: no half-written tree ever sits at a store path, and a hook killed at any
// point leaves at most complete, unregistered outputs, which the daemon deletes before it
// next builds them.
import { createReadStream, existsSync, renameSync, rmSync, statfsSync } from "node:fs";
import { basename, join } from "node:path";
import { OffloadError } from "../errors.js";
import { readExportStream, type ExportItem } from "../nix/export-stream.js";
import { restoreNar } from "../nix/nar.js";
import { WireWriter } from "../nix/wire.js";
import { makeScratch, removeScratch } from "../files/scratch.js";
import type { GuixDaemon } from "./guix-daemon.js";
import { GUIX_STORE_DIR } from "../guix/paths.js";
import type { GuixPublicKey } from "../guix/keys.js";
import { checkGuixSignature, type GuixRefusal } from "../guix/signature.js";

export interface GuixLandOptions {
  /** The keys whose signature is accepted: the machine's pinned key, else offload's Guix ACL. */
  trustedKeys: readonly GuixPublicKey[];
  /** The machine whose pinned key (signingKey) must have signed, when it is not any ACL key. */
  pinnedBy?: string;
  /** "outputs of X from M", for messages. */
  origin: string;
  /** The fix for each refusal. */
  fixes: Record<GuixRefusal | "unexpected-path", string>;
  /** Where items are spooled while they arrive (a scratch directory is made in it). */
  spoolDir: string;
  /** Where the store's files are on this machine. Default /gnu/store. */
  storeDir?: string;
}

export interface GuixLanded {
  path: string;
  /** Id of the key whose signature was accepted. */
  signer: string;
}

/**
 * The signed export of `outputs` from `remote`, verified and written to the local store, or
 * an error having written nothing there. `local` tells which outputs are valid already
 * (those are left alone: the daemon only asks for missing ones, but a path it holds must never be touched).
 */
export async function fetchGuixOutputs(remote: GuixDaemon, local: GuixDaemon, outputs: readonly string[], options: GuixLandOptions): Promise<GuixLanded[]> {
  const storeDir = options.storeDir ?? GUIX_STORE_DIR;
  const spool = makeScratch(options.spoolDir);
  try {
    const items: ExportItem[] = [];
    for await (const item of readExportStream(signedExport(remote, outputs), { spoolDir: spool, storeDir: GUIX_STORE_DIR })) items.push(item);
    const signers = verifyOutputs(items, outputs, options);
    const valid = await local.queryValidPaths(outputs);
    const fresh = items.filter((item) => !valid.has(item.path));
    checkSpace(fresh, storeDir, options.origin);
    await place(fresh, storeDir);
    return items.map((item) => ({ path: item.path, signer: signers.get(item.path)! }));
  } finally {
    removeScratch(spool);
  }
}

/** The export stream of `paths`, each item signed by the remote daemon, framed as `guix archive --export` frames it. */
export async function* signedExport(remote: GuixDaemon, paths: readonly string[]): AsyncGenerator<Buffer> {
  for (const path of paths) {
    yield new WireWriter().u64(1).toBuffer();
    yield* remote.exportPath(path, { sign: true });
  }
  yield new WireWriter().u64(0).toBuffer();
}

/** Every item is a wanted output, once, signed over exactly the bytes received by a trusted key; returns each path's signer. */
function verifyOutputs(items: readonly ExportItem[], outputs: readonly string[], options: GuixLandOptions): Map<string, string> {
  const signers = new Map<string, string>();
  for (const item of items) {
    if (!outputs.includes(item.path) || signers.has(item.path)) {
      throw refused(`${item.path} is not one of the outputs asked for (or came twice)`, "unexpected-path", options);
    }
    const verdict = checkGuixSignature(item.signatureBytes, item.itemHash, item.path, options.trustedKeys);
    if (!verdict.valid) {
      const pinned = verdict.code === "unauthorized-key" && options.pinnedBy !== undefined;
      throw refused(
        pinned ? verdict.reason.replace(/which is not in the ACL$/, `not by the signingKey of ${options.pinnedBy} in machines.ts`) : verdict.reason,
        verdict.code,
        options,
      );
    }
    signers.set(item.path, verdict.key.id);
  }
  const missing = outputs.filter((path) => !signers.has(path));
  if (missing.length > 0) throw refused(`${missing.join(", ")} did not come`, "unexpected-path", options);
  return signers;
}

function refused(reason: string, code: GuixRefusal | "unexpected-path", options: GuixLandOptions): OffloadError {
  return new OffloadError(`${options.origin} refused, nothing imported: ${reason}`, {
    code: code === "unexpected-path" ? "output-unexpected" : `output-${code}`,
    fix: options.fixes[code],
  });
}

/** The store must hold the outputs (restored beside the spool): refuse before writing, not half-way with ENOSPC. */
function checkSpace(items: readonly ExportItem[], storeDir: string, origin: string): void {
  const needed = items.reduce((sum, item) => sum + item.narSize, 0);
  const { bavail, bsize } = statfsSync(storeDir);
  if (bavail * bsize >= needed) return;
  throw new OffloadError(
    `${origin} need ${(needed / 2 ** 20).toFixed(1)} MiB in ${storeDir}, which has ${((bavail * bsize) / 2 ** 20).toFixed(1)} MiB free; nothing imported`,
    {
      code: "local-disk-full",
      fix: "free space on this machine: guix gc",
      exitCode: 1,
    },
  );
}

/** Restores each item into a scratch directory of the store, then renames all into place. */
async function place(items: readonly ExportItem[], storeDir: string): Promise<void> {
  if (items.length === 0) return;
  const staging = makeScratch(join(storeDir, ".offload-landing"));
  try {
    for (const item of items) await restoreNar(createReadStream(item.narFile), join(staging, basename(item.path)));
    for (const item of items) {
      // Left by an earlier, killed attempt: complete but unregistered (valid ones were filtered out).
      const target = join(storeDir, basename(item.path));
      if (existsSync(target)) rmSync(target, { recursive: true, force: true });
      renameSync(join(staging, basename(item.path)), target);
    }
  } finally {
    removeScratch(staging);
  }
}
