// All-or-nothing import of store paths that arrived from elsewhere (a machine's build
// outputs, a signed archive), their NARs already spooled to local files and hashed while
// spooling. Everything is checked first: each path signed over its fingerprint by a
// trusted key, each reference present locally or earlier in the set. Only then does
// anything enter the store, dependencies first, keeping the signatures. A store failure
// part-way removes what this run added.
import { spawnSync } from "node:child_process";
import { createReadStream } from "node:fs";
import { OffloadError, asOffloadError } from "../errors.js";
import type { PublicKey } from "../nix/keys.js";
import type { PathInfo } from "../nix/path-info.js";
import { verifyPathSignatures, type SignatureVerdict } from "../nix/signature.js";
import { openLocalStore } from "./local-store.js";

/** A path whose NAR sits in `narFile`; narHash and narSize were computed from that file's bytes. */
export interface SpooledPath extends PathInfo {
  narFile: string;
}

/**
 * A path whose NAR was restored as it arrived, into `tree`: a directory of the store's landing
 * area (its file system, no store path). narHash and narSize were computed from the bytes restored.
 */
export interface RestoredPath extends PathInfo {
  tree: string;
}

type Refusal = Extract<SignatureVerdict, { valid: false }>["code"] | "duplicate-path" | "reference-order" | "missing-reference";

export type { Refusal };

export interface VerifyOptions {
  /** Keys whose signatures are accepted. */
  trustedKeys: readonly PublicKey[];
  /** The machine whose pinned signingKey `trustedKeys` is (else they are the ACL), for messages. */
  pinnedBy?: string;
  /** What is being imported, for messages: e.g. "archive" or "outputs from builder1". */
  origin: string;
  /** How to fix each kind of refusal, in the words of the caller's situation. */
  fixes: Record<Refusal, string>;
}

export interface VerifiedImportOptions extends VerifyOptions {
  /** Store to import into (nix-store --store); default the local store. */
  store?: string;
  /** Environment for nix-store (default: this process's). */
  env?: NodeJS.ProcessEnv;
  nixStore?: string;
}

export interface ImportedPath {
  path: string;
  /** Name of the trusted key whose signature was accepted. */
  signer: string;
  /** False when the path was already valid in the store (nothing to add). */
  added: boolean;
}

/** Imports `items` (in dependency order); throws, having imported nothing, if any check fails. */
export async function importVerified(items: readonly SpooledPath[], options: VerifiedImportOptions): Promise<ImportedPath[]> {
  const store = await openLocalStore({ store: options.store, env: options.env, nixStore: options.nixStore });
  const added: string[] = [];
  try {
    const signers = await verifySpooled(items, options, store.client);
    // lock: the server holds temporary GC roots on these paths until the session ends.
    const present = await store.client.queryValidPaths(
      items.map((item) => item.path),
      { lock: true },
    );
    const imported: ImportedPath[] = [];
    for (const item of items) {
      const isNew = !present.has(item.path);
      if (isNew) {
        const { narFile, ...info } = item;
        await store.client.addToStoreNar(info, createReadStream(narFile));
        added.push(item.path);
      }
      imported.push({ path: item.path, signer: signers.get(item.path)!, added: isNew });
    }
    await store.close();
    return imported;
  } catch (error) {
    await store.close();
    if (added.length === 0) throw error;
    throw rolledBack(error, added, options);
  }
}

/** A store asked which paths are valid; `lock` keeps them from the garbage collector while the session lasts. */
export interface ValidityQueries {
  queryValidPaths(paths: Iterable<string>, options: { lock?: boolean }): Promise<Set<string>>;
}

/**
 * Checks `items` (in dependency order) before any of them may enter a store: every path is
 * listed once and signed by a trusted key, and every reference is earlier in the set or
 * valid in `store`. Returns each path's signer; throws a refusal naming the first problem.
 */
export async function verifySpooled(items: readonly PathInfo[], options: VerifyOptions, store: ValidityQueries): Promise<Map<string, string>> {
  const refuse = (message: string, code: Refusal) =>
    new OffloadError(`${options.origin} refused, nothing imported: ${message}`, { code, fix: options.fixes[code] });
  const signers = new Map<string, string>();
  items.forEach((item, index) => {
    const where = `item ${index + 1} of ${items.length}`;
    const verdict = verifyPathSignatures(item, options.trustedKeys, options.pinnedBy);
    if (!verdict.valid) throw refuse(`${verdict.reason} (${where})`, verdict.code);
    signers.set(item.path, verdict.key.name);
  });
  await checkImportOrder(items, options.origin, refuse, (paths) => store.queryValidPaths(paths, { lock: true }));
  return signers;
}

export type OrderRefusal = "duplicate-path" | "reference-order" | "missing-reference";

/**
 * Checks that `items` can be imported in their order: every path listed once, every
 * reference earlier in the set or valid in the store (`queryValid`). Shared with Guix imports.
 */
export async function checkImportOrder(
  items: readonly Pick<PathInfo, "path" | "references">[],
  origin: string,
  refuse: (message: string, code: OrderRefusal) => OffloadError,
  queryValid: (paths: Set<string>) => Promise<Set<string>>,
): Promise<void> {
  const position = new Map<string, number>();
  items.forEach((item, index) => {
    if (position.has(item.path)) throw refuse(`${item.path} appears twice (item ${index + 1} of ${items.length})`, "duplicate-path");
    position.set(item.path, index);
  });
  const outside = new Set<string>();
  items.forEach((item, index) => {
    for (const reference of item.references) {
      const at = position.get(reference);
      if (at === undefined) outside.add(reference);
      else if (at > index) throw refuse(`${item.path} refers to ${reference}, which comes later (dependencies must come first)`, "reference-order");
    }
  });
  const valid = await queryValid(outside);
  const missing = [...outside].filter((reference) => !valid.has(reference)).sort();
  if (missing.length > 0) {
    const referrer = items.find((item) => item.references.includes(missing[0]!))!;
    throw refuse(
      `${referrer.path} refers to ${missing[0]}, which is neither in the ${origin} nor in the store` +
        (missing.length > 1 ? ` (${missing.length} missing references in all)` : ""),
      "missing-reference",
    );
  }
}

/** Deletes the paths this run added and says how that went. */
function rolledBack(error: unknown, added: string[], options: VerifiedImportOptions): OffloadError {
  const failure = asOffloadError(error);
  const storeArgs = options.store === undefined ? [] : ["--store", options.store];
  const result = spawnSync(options.nixStore ?? "nix-store", [...storeArgs, "--delete", ...[...added].reverse()], {
    env: options.env ?? process.env,
    encoding: "utf8",
  });
  if (result.status === 0) {
    return new OffloadError(`import failed, removed the ${added.length} path(s) it had added: ${failure.message}`, {
      code: failure.code,
      fix: failure.fix,
      cause: error,
    });
  }
  const why = (result.stderr || result.error?.message || `nix-store --delete exited with ${result.status}`).trim();
  return new OffloadError(`import failed and removing what it added failed too (${why}): ${failure.message}`, {
    code: failure.code,
    fix: `nix-store ${storeArgs.join(" ")} --delete ${added.join(" ")}`.replace(/\s+/g, " "),
    cause: error,
  });
}
