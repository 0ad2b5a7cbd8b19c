// Moving single store paths between the local machine and a build machine's serve session:
// signed uploads and checked downloads. The hook's build and `offload check`'s round trip
// both go through here.
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { finished } from "node:stream/promises";
import { EXIT, OffloadError } from "../errors.js";
import type { SecretKey } from "../nix/keys.js";
import { encodeNix32 } from "../nix/nix32.js";
import type { PathInfo } from "../nix/path-info.js";
import { signPath } from "../nix/signature.js";
import type { SpooledPath } from "./import-verified.js";
import type { ServeClient } from "./serve.js";

/** Transient failure, in the daemon's exit codes: the same build may succeed when retried. */

/** Adds `info` to the remote store with our signature on it, so a remote Nix that checks signatures accepts it. */
export async function uploadSigned(remote: ServeClient, info: PathInfo, nar: AsyncIterable<Buffer>, key: SecretKey): Promise<void> {
  const signature = signPath(info, key);
  const signatures = info.signatures.includes(signature) ? info.signatures : [...info.signatures, signature];
  await remote.addToStoreNar({ ...info, signatures }, nar);
}

/**
 * The path infos of exactly `wanted` on the machine. A machine listing any other path is
 * refused (one trusted to build must not be able to add paths nobody asked for), and so is
 * one that lacks a wanted path.
 */
export async function queryWanted(remote: ServeClient, wanted: readonly string[], machine: string, what: string): Promise<Map<string, PathInfo>> {
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

/** Streams one NAR from the machine into a file in `dir`, checking it is exactly what the machine described. */
export async function spoolNar(remote: ServeClient, info: PathInfo, dir: string, machine: string): Promise<SpooledPath> {
  const narFile = join(dir, `${info.path.slice(info.path.lastIndexOf("/") + 1)}.nar`);
  const file = createWriteStream(narFile, { mode: 0o600 });
  let received = 0;
  try {
    const digest = await remote.dumpStorePath(info.path, (bytes) => {
      received += bytes.length;
      // A machine must not fill this disk by sending more than it declared.
      if (received > info.narSize) {
        throw new OffloadError(`${machine} sent more than the ${info.narSize} bytes it declared for ${info.path}; nothing imported`, {
          code: "output-size-lie",
          fix: `${machine}'s nix-store is not the real one or its store is corrupt: check it (nix-store --verify --check-contents there)`,
          exitCode: EXIT.transient,
        });
      }
      return file.write(bytes) ? undefined : new Promise<void>((resolve) => file.once("drain", resolve));
    });
    checkDigest(digest, info, machine);
  } finally {
    file.end();
    await finished(file);
  }
  return { ...info, narFile };
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
