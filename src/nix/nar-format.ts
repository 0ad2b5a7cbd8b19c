// The NAR format's fixed parts (archive.cc), shared by the dumper and the parser.
import { WireWriter } from "./wire.js";

export const NAR_MAGIC = "nix-archive-1";
/** Linux NAME_MAX: a longer entry name could not be restored anyway. */
export const MAX_NAME_LENGTH = 255;
/** Linux PATH_MAX minus the terminating NUL. */
export const MAX_TARGET_LENGTH = 4095;
/** Deeper trees than this cannot be restored within PATH_MAX (each level costs at least 2 bytes). */
export const MAX_DEPTH = 2048;
/** Files are addressed as JavaScript numbers. */
export const MAX_FILE_SIZE = Number.MAX_SAFE_INTEGER;

/** A token as it appears on the wire (length, bytes, padding). */
export function encodedToken(token: string | Buffer): Buffer {
  return new WireWriter().string(token).toBuffer();
}

/** Why `name` cannot be a directory entry name, or undefined if it can. */
export function entryNameProblem(name: Buffer): string | undefined {
  if (name.length === 0) return "entry name is empty";
  if (name.length > MAX_NAME_LENGTH) return `entry name is longer than ${MAX_NAME_LENGTH} bytes`;
  if ((name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)) {
    return `entry name is ${JSON.stringify(name.toString("latin1"))}`;
  }
  if (name.includes(0x2f)) return "entry name contains '/'";
  if (name.includes(0)) return "entry name contains NUL";
  return undefined;
}

/** Quotes bytes for an error message (names need not be UTF-8). */
export function quote(bytes: Buffer): string {
  const text = bytes.length > 80 ? bytes.subarray(0, 80).toString("utf8") + "…" : bytes.toString("utf8");
  return JSON.stringify(text);
}
