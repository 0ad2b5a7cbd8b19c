// The checks ssh itself makes of a private key file, without reading the key: cheap enough
// for validating machines.ts on every load (parsing needs ssh2, ~40 ms just to load).
import { statSync } from "node:fs";
import { userInfo } from "node:os";
import { OffloadError } from "../errors.js";

export function unreadable(path: string, why: string, fix: string, cause?: unknown): OffloadError {
  return new OffloadError(`SSH private key ${path} ${why}`, { code: "key-file-unreadable", fix, cause });
}

/**
 * A key another user may not read is root's, as the build hook runs as root: the cause is
 * who runs offload, not the key. Undefined for other errors, and for root.
 */
export function deniedToUser(path: string, error: unknown): OffloadError | undefined {
  const code = (error as NodeJS.ErrnoException).code;
  if ((code !== "EACCES" && code !== "EPERM") || (process.getuid?.() ?? 0) === 0) return undefined;
  return unreadable(path, `is not readable by ${userInfo().username}: run offload as root, as the build hook runs`, "sudo offload …", error);
}

/** Throws unless `path` exists and is private to its owner. */
export function checkKeyFile(path: string): void {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      throw unreadable(path, "does not exist", `ssh-keygen -t ed25519 -N '' -f ${path}   (then add ${path}.pub to the machine's authorized_keys)`, error);
    }
    throw deniedToUser(path, error) ?? unreadable(path, `cannot be examined: ${(error as Error).message}`, `ls -l ${path}`, error);
  }
  // ssh refuses keys with any group/other permission bits; refusing here gives the same answer earlier.
  if ((mode & 0o077) !== 0) {
    throw new OffloadError(`SSH private key ${path} is accessible by others (mode ${(mode & 0o777).toString(8).padStart(4, "0")})`, {
      code: "key-file-too-open",
      fix: `chmod 600 ${path}`,
    });
  }
}
