// Moving single store paths between the local machine and a build machine's serve session:
// signed uploads and checked downloads. The hook's build and `offload check`'s round trip
// both go through here.
import { once } from "node:events";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { EXIT, OffloadError } from "../errors.js";
import type { SecretKey } from "../nix/keys.js";
import { dumpPath, restoreNar } from "../nix/nar.js";
import { encodeNix32 } from "../nix/nix32.js";
import type { PathInfo } from "../nix/path-info.js";
import { signPath } from "../nix/signature.js";
import { dependenciesFirst } from "./archive-export.js";
import type { RestoredPath } from "./import-verified.js";
import type { ServeClient } from "./serve.js";

/** Transient failure, in the daemon's exit codes: the same build may succeed when retried. */

/** Adds `info` to the remote store with our signature on it, so a remote Nix that checks signatures accepts it. */
export async function uploadSigned(remote: ServeClient, info: PathInfo, nar: AsyncIterable<Buffer>, key: SecretKey): Promise<void> {
  const signature = signPath(info, key);
  const signatures = info.signatures.includes(signature) ? info.signatures : [...info.signatures, signature];
  await remote.addToStoreNar({ ...info, signatures }, nar);
}

export interface FetchOptions {
  /** Sees the path infos before a byte is written (e.g. to refuse a disk too small). */
  beforeWriting?: (infos: readonly PathInfo[]) => void;
  /**
   * Ask for the NARs only once beforeWriting has accepted the infos: a round trip more, but a
   * refusal then costs no NAR byte on the network (otherwise up to an SSH window, ~2 MiB).
   */
  sizesFirst?: boolean;
}

/**
 * Downloads exactly `wanted` from the machine, dependencies first, each NAR restored as it
 * arrives into `<dir>/<name>` (for outputs on their way into the store, a directory of its
 * landing area: the restore overlaps the transfer, the bytes are written once, and nothing is
 * at a store path until the landing has verified them) and checked against what the machine
 * describes. The path infos and every NAR are asked for back to back (unless sizesFirst):
 * one round trip, not one per path. A wanted path the machine lacks is refused once the
 * infos are read (asking for its NAR ends the session, which then explains nothing more).
 * Whatever was written for a refused path is the caller's to remove, with `dir`.
 */
export async function fetchWanted(
  remote: ServeClient,
  wanted: readonly string[],
  dir: string,
  machine: string,
  what: string,
  options: FetchOptions = {},
): Promise<RestoredPath[]> {
  const described = queryWanted(remote, wanted, machine, what).then((infos) => {
    options.beforeWriting?.([...infos.values()]);
    return infos;
  });
  const asked = options.sizesFirst ? described : Promise.resolve();
  const received = wanted.map((path) => asked.then(() => receiveNar(remote, path, described, dir, machine)));
  const [, ...items] = await allInOrder<Map<string, PathInfo> | RestoredPath>([described, ...received]);
  return dependenciesFirst(items as RestoredPath[]);
}

/**
 * Adds `infos` to the remote store, dependencies first, each signed by us (uploadSigned). They
 * are sent back to back, the server adding each after the ones before (its references), and
 * the acknowledgements are read as they come: one round trip, not one per path.
 */
export async function uploadAllSigned(remote: ServeClient, infos: Iterable<PathInfo>, key: SecretKey): Promise<void> {
  await allInOrder(dependenciesFirst(infos).map((info) => uploadSigned(remote, info, dumpPath(info.path), key)));
}

/** Waits for all of `requests`, issued in order on one session (so all settle): the first failure is the cause, later ones follow from it. */
async function allInOrder<T>(requests: Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(requests);
  const failed = results.find((result) => result.status === "rejected");
  if (failed) throw failed.reason;
  return results.map((result) => (result as PromiseFulfilledResult<T>).value);
}

/**
 * The path infos of exactly `wanted` on the machine. A machine listing any other path is
 * refused (one trusted to build must not be able to add paths nobody asked for), and so is
 * one that lacks a wanted path.
 */
async function queryWanted(remote: ServeClient, wanted: readonly string[], machine: string, what: string): Promise<Map<string, PathInfo>> {
  const infos = await remote.queryPathInfos(wanted);
  const offered = [...infos.keys()].find((path) => !wanted.includes(path));
  if (offered !== undefined) {
    throw new OffloadError(`${machine} offered ${offered}, which is not ${what} that was asked for; nothing imported`, {
      code: "output-unasked",
      fix: `${machine}'s nix-store is not the real one or is compromised: check what \`nix-store\` runs there, and its store (nix-store --verify --check-contents)`,
      exitCode: EXIT.transient,
    });
  }
  const absent = wanted.find((path) => !infos.has(path));
  if (absent !== undefined) {
    throw new OffloadError(`${machine} reports success but ${absent} is not valid there`, {
      code: "output-missing",
      fix: `look at ${machine}'s nix-daemon log: its store may be read-only, full or garbage-collected meanwhile`,
      exitCode: EXIT.transient,
    });
  }
  return infos;
}

/** Streams the NAR of `path` from the machine, restoring it as `<dir>/<name>`; it must be exactly what `described` says of it. */
async function receiveNar(remote: ServeClient, path: string, described: Promise<Map<string, PathInfo>>, dir: string, machine: string): Promise<RestoredPath> {
  const tree = join(dir, path.slice(path.lastIndexOf("/") + 1));
  let info: PathInfo | undefined;
  let nar: PassThrough | undefined;
  let restored: Promise<void> | undefined;
  let received = 0;
  try {
    const digest = await remote.dumpStorePath(path, async (bytes) => {
      // The first bytes come after the infos are read (replies arrive in order): only then is anything written.
      info ??= (await described).get(path)!;
      if (!nar) {
        nar = new PassThrough();
        restored = restoreNar(nar, tree); // removes its partial tree if it fails
        restored.catch(() => undefined); // surfaces where awaited
      }
      received += bytes.length;
      // A machine must not fill this disk by sending more than it declared.
      if (received > info.narSize) {
        throw new OffloadError(`${machine} sent more than the ${info.narSize} bytes it declared for ${path}; nothing imported`, {
          code: "output-size-lie",
          fix: `${machine}'s nix-store is not the real one or its store is corrupt: check it (nix-store --verify --check-contents there)`,
          exitCode: EXIT.transient,
        });
      }
      // A restore that failed reads no more: its failure, not a wait for a drain that never comes.
      if (!nar.write(bytes)) await Promise.race([once(nar, "drain"), restored]);
    });
    nar?.end();
    await restored;
    checkDigest(digest, info!, machine);
    return { ...info!, tree };
  } catch (error) {
    nar?.destroy();
    await restored?.catch(() => undefined);
    if (!(error instanceof OffloadError && error.code === "nar-restore")) throw error;
    // The bytes were fine so far; this machine could not write them (full, read-only, …).
    throw new OffloadError(`${path} from ${machine} could not be written here: ${error.message}; nothing imported`, {
      code: "output-unwritable",
      fix: `check the file system of ${dir}: free space (df), nix-collect-garbage -d, or its mount`,
      exitCode: EXIT.transient,
      cause: error,
    });
  }
}

function checkDigest(digest: { narSize: number; narHash: Buffer }, info: PathInfo, machine: string): void {
  if (digest.narSize !== info.narSize || !digest.narHash.equals(info.narHash)) {
    throw new OffloadError(
      `${info.path} from ${machine} changed in transit: received ${digest.narSize} bytes with hash sha256:${encodeNix32(digest.narHash)}, ` +
        `but ${machine} describes ${info.narSize} bytes with hash sha256:${encodeNix32(info.narHash)}; nothing imported`,
      {
        code: "output-corrupt",
        fix: `run the build again; if it persists, check ${machine}'s store (nix-store --verify --check-contents)`,
        exitCode: EXIT.transient,
      },
    );
  }
}
