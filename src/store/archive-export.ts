// `offload archive export`: store paths as a Nix export stream (so plain `nix-store --import`
// takes it too) whose signature slots hold our Nix-format signature over each path's
// fingerprint. That one signature vouches for the NAR's hash and size and for the
// references, and any Nix store can keep it as an ordinary path signature.
import { realpath } from "node:fs/promises";
import { OffloadError } from "../errors.js";
import { writeExportStream, type ExportSource } from "../nix/export-stream.js";
import type { SecretKey } from "../nix/keys.js";
import type { PathInfo } from "../nix/path-info.js";
import { byteOrder } from "../nix/wire.js";
import { signPath } from "../nix/signature.js";
import { DEFAULT_STORE_DIR, HASH_PART_LENGTH, isStorePath } from "../nix/store-path.js";
import type { ServeClient } from "./serve.js";

/** Orders path infos so every path comes after the paths it refers to (ties by path, for stable output). */
export function dependenciesFirst<T extends PathInfo>(infos: Iterable<T>): T[] {
  const byPath = new Map<string, T>();
  for (const info of infos) byPath.set(info.path, info);
  const order: T[] = [];
  const state = new Map<string, "open" | "done">();
  const sorted = [...byPath.values()].sort((a, b) => byteOrder(a.path, b.path));
  // Iterative depth-first search: closures can be deep enough to exhaust the call stack.
  for (const root of sorted) {
    if (state.has(root.path)) continue;
    const stack: Array<{ info: T; next: number }> = [{ info: root, next: 0 }];
    state.set(root.path, "open");
    while (stack.length > 0) {
      const frame = stack[stack.length - 1]!;
      const reference = frame.info.references[frame.next++];
      if (reference === undefined) {
        stack.pop();
        state.set(frame.info.path, "done");
        order.push(frame.info);
        continue;
      }
      const dependency = byPath.get(reference);
      if (dependency === undefined || reference === frame.info.path) continue; // outside the set, or a self-reference
      const seen = state.get(reference);
      if (seen === "open") {
        throw new OffloadError(`store paths ${frame.info.path} and ${reference} refer to each other`, {
          code: "reference-cycle",
          fix: "the store is inconsistent: nix-store --verify --check-contents",
        });
      }
      if (seen === undefined) {
        state.set(reference, "open");
        stack.push({ info: dependency, next: 0 });
      }
    }
  }
  return order;
}

/**
 * The store path a command-line argument means: a store path, a file inside one, or a
 * symlink to one (like ./result).
 */
export async function resolveStorePath(argument: string, storeDir: string = DEFAULT_STORE_DIR): Promise<string> {
  const topLevel = (path: string) => {
    if (!path.startsWith(`${storeDir}/`)) return undefined;
    const base = path.slice(storeDir.length + 1).split("/")[0]!;
    const candidate = `${storeDir}/${base}`;
    return base.length > HASH_PART_LENGTH && isStorePath(candidate, storeDir) ? candidate : undefined;
  };
  const direct = topLevel(argument);
  if (direct) return direct;
  const resolved = await realpath(argument).catch(() => undefined);
  const viaLink = resolved === undefined ? undefined : topLevel(resolved);
  if (viaLink) return viaLink;
  throw new OffloadError(`${argument} is not a store path, nor a link to one`, {
    code: "not-a-store-path",
    fix: `give paths under ${storeDir}, e.g. from \`nix-build --no-out-link\` or \`readlink -f ./result\``,
  });
}

/** Path infos of `paths` (their closure when recursive), dependencies first. */
export async function pathsToExport(store: ServeClient, paths: string[], recursive: boolean): Promise<PathInfo[]> {
  // Checked first: the server dies on a closure query for an invalid path.
  const valid = await store.queryValidPaths(paths);
  const missing = paths.filter((path) => !valid.has(path));
  if (missing.length > 0) {
    throw new OffloadError(`not valid in the store: ${missing.join(", ")}`, {
      code: "invalid-path",
      fix: "build or fetch it first (nix-build / nix-store --realise), then export",
    });
  }
  const wanted = recursive ? await store.queryClosure(paths, false) : valid;
  const infos = await store.queryPathInfos(wanted);
  const vanished = [...wanted].filter((path) => !infos.has(path));
  if (vanished.length > 0) {
    throw new OffloadError(`store paths disappeared during the export (garbage collected?): ${vanished.join(", ")}`, {
      code: "invalid-path",
      fix: "run the export again",
    });
  }
  return dependenciesFirst(infos.values());
}

/**
 * The signed export stream of `infos` (in the given order), NARs streamed from the store.
 * Each NAR is checked against the hash the store registered, since that is what is signed:
 * a corrupt store path makes the export fail instead of producing an unverifiable archive.
 */
export function exportArchive(store: ServeClient, infos: PathInfo[], secretKey: SecretKey): AsyncGenerator<Buffer> {
  async function* items(): AsyncGenerator<ExportSource> {
    for (const info of infos) {
      yield {
        path: info.path,
        references: info.references,
        deriver: info.deriver,
        signature: signPath(info, secretKey),
        nar: checkedNar(store, info),
      };
    }
  }
  return writeExportStream(items());
}

/**
 * dumpStorePath delivers the NAR through a callback; this hands the chunks over as an
 * async iterable, one at a time, so a slow consumer (a pipe) holds back the store.
 */
async function* checkedNar(store: ServeClient, info: PathInfo): AsyncGenerator<Buffer> {
  const chunks: Buffer[] = [];
  let wakeConsumer: (() => void) | undefined;
  let resumeProducer: (() => void) | undefined;
  let finished = false;
  let discard = false;
  let failure: unknown;
  let digest: { narHash: Buffer; narSize: number } | undefined;
  const wake = () => {
    wakeConsumer?.();
    wakeConsumer = undefined;
  };
  const transfer = store
    .dumpStorePath(info.path, (bytes) => {
      if (discard) return;
      chunks.push(bytes);
      wake();
      return new Promise<void>((resolve) => (resumeProducer = resolve));
    })
    .then(
      (result) => (digest = result),
      (error: unknown) => (failure = error),
    )
    .finally(() => {
      finished = true;
      wake();
    });
  try {
    for (;;) {
      const chunk = chunks.shift();
      if (chunk !== undefined) {
        yield chunk;
        resumeProducer?.();
        continue;
      }
      if (finished) break;
      await new Promise<void>((resolve) => (wakeConsumer = resolve));
    }
  } finally {
    // If the consumer stopped early, let the transfer run to its end so the connection stays in step.
    discard = true;
    resumeProducer?.();
    await transfer;
  }
  if (failure !== undefined) throw failure;
  if (!digest!.narHash.equals(info.narHash) || digest!.narSize !== info.narSize) {
    throw new OffloadError(`${info.path} in the store does not match its registered NAR hash/size (corrupted store?)`, {
      code: "store-corrupt",
      fix: `nix-store --verify-path ${info.path}   (then nix-store --repair-path ${info.path}, or rebuild it)`,
    });
  }
}
