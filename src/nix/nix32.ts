// Nix's base-32 ("nix32"): its own alphabet (no e, o, u, t) and its own bit order — the
// last character holds the lowest bits of byte 0 — so no ordinary base32 library fits.
import { OffloadError } from "../errors.js";

const ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz";
const DIGIT = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DIGIT[ALPHABET.charCodeAt(i)] = i;

/** Number of nix32 characters for `bytes` bytes: 52 for sha256, 32 for a store path hash. */
export function nix32Length(bytes: number): number {
  return bytes === 0 ? 0 : Math.floor((bytes * 8 - 1) / 5) + 1;
}

export function encodeNix32(buf: Buffer): string {
  let out = "";
  for (let n = nix32Length(buf.length) - 1; n >= 0; n--) {
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    const c = (buf[i] >> j) | (i + 1 < buf.length ? buf[i + 1] << (8 - j) : 0);
    out += ALPHABET[c & 31];
  }
  return out;
}

export function decodeNix32(s: string): Buffer {
  const size = Math.floor((s.length * 5) / 8);
  if (nix32Length(size) !== s.length) {
    throw new OffloadError(`nix32: ${s.length} is not a valid length for a nix32 string: ${JSON.stringify(s)}`, {
      code: "nix32-invalid",
    });
  }
  const out = Buffer.alloc(size);
  for (let n = 0; n < s.length; n++) {
    const code = s.charCodeAt(s.length - n - 1);
    const digit = code < 128 ? DIGIT[code] : -1;
    if (digit < 0) {
      throw new OffloadError(`nix32: invalid character ${JSON.stringify(s[s.length - n - 1])} in ${JSON.stringify(s)}`, {
        code: "nix32-invalid",
      });
    }
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    out[i] |= (digit << j) & 0xff;
    const carry = digit >> (8 - j);
    if (i + 1 < size) out[i + 1] |= carry;
    else if (carry !== 0) {
      // Bits beyond the last byte: the string does not come from encodeNix32 of any hash.
      throw new OffloadError(`nix32: ${JSON.stringify(s)} has bits set beyond its ${size} bytes`, {
        code: "nix32-invalid",
      });
    }
  }
  return out;
}
