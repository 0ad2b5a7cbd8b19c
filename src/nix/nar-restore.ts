// Writes a NAR out as a filesystem tree, as `nix-store --restore` does, but never outside
// the destination: every directory on a written path is one this restore created from a
// directory node, and every file and link is created exclusively (O_EXCL), so a symlink
// in the archive can never be followed by a later entry.
//
// The filesystem calls are blocking on purpose: each takes microseconds, while a round trip
// through libuv's thread pool was measured at over 100 µs on the 2-core test VM, which made
// restoring 10,000 small files 20 times slower than `nix-store --restore`.
import { closeSync, fchmodSync, mkdirSync, openSync, symlinkSync, writeSync } from "node:fs";
import { rm } from "node:fs/promises";
import { OffloadError } from "../errors.js";
import { parseNar } from "./nar-parse.js";
import { WireReader } from "./wire.js";
import type { WireSource } from "./wire.js";

const SLASH = Buffer.from("/");

function fsError(error: unknown, action: string, path: Buffer): OffloadError {
  const text = error instanceof Error ? error.message : String(error);
  return new OffloadError(`NAR restore: ${action} ${JSON.stringify(path.toString())} failed: ${text}`, {
    code: "nar-restore",
    cause: error,
  });
}

/**
 * Restores one NAR into `destination`, which must not exist (its parent must). Files get
 * mode 0444 or 0555 (like store paths), directories 0755 so the tree can be removed again.
 * On failure whatever was written is removed. A reader is left positioned after the NAR;
 * any other source must end where the NAR does.
 */
export async function restoreNar(source: WireReader | WireSource, destination: string): Promise<void> {
  const reader = source instanceof WireReader ? source : new WireReader(source);
  const root = Buffer.from(destination);
  const at = (path: Buffer): Buffer => (path.length === 0 ? root : Buffer.concat([root, SLASH, path]));
  let created = false;
  let fd: number | undefined;
  let fileName: Buffer = root;
  let left = 0;
  const closeFile = (): void => {
    const handle = fd!;
    fd = undefined;
    try {
      closeSync(handle);
    } catch (error) {
      throw fsError(error, "closing", fileName);
    }
  };
  try {
    for await (const event of parseNar(reader)) {
      if (event.type === "contents") {
        // The parser guarantees `left` bytes arrive in total.
        try {
          for (let done = 0; done < event.data.length;) done += writeSync(fd!, event.data, done);
        } catch (error) {
          throw fsError(error, "writing", fileName);
        }
        left -= event.data.length;
        if (left === 0) closeFile();
        continue;
      }
      const path = at(event.path);
      try {
        if (event.type === "directory") {
          mkdirSync(path, 0o755);
        } else if (event.type === "symlink") {
          symlinkSync(event.target, path);
        } else {
          fileName = path;
          const mode = event.executable ? 0o555 : 0o444;
          fd = openSync(path, "wx", mode);
          fchmodSync(fd, mode); // exact, whatever the umask
          left = event.size;
          if (left === 0) closeFile();
        }
      } catch (error) {
        if (event.path.length === 0 && (error as NodeJS.ErrnoException).code === "EEXIST") {
          throw new OffloadError(`NAR restore: destination ${JSON.stringify(destination)} already exists`, {
            code: "nar-restore",
            fix: "restore into a path that does not exist yet",
          });
        }
        throw error instanceof OffloadError ? error : fsError(error, "creating", path);
      }
      created = true;
    }
    if (!(source instanceof WireReader) && !(await reader.atEnd())) {
      throw new OffloadError("NAR restore: the input continues after the end of the archive", { code: "nar-invalid" });
    }
  } catch (error) {
    if (fd !== undefined) closeSync(fd);
    if (created) await rm(destination, { recursive: true, force: true });
    throw error;
  }
}
