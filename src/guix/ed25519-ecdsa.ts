// ECDSA over the Ed25519 curve, as libgcrypt does it for Guix's default keys
// (`guix archive --generate-key` asks for `(ecdsa (curve Ed25519) (flags rfc6979))`).
// This is not EdDSA: the secret is a plain scalar d, Q = d·G, and a signature is the ECDSA
// pair (r, s) with r = x(k·G) mod n taken from the Edwards x coordinate. OpenSSL, and so
// Node's crypto, has Ed25519 only as EdDSA, hence this file. The nonce k is RFC 6979's
// (HMAC-SHA-256), so a signature is a function of key and hash, byte-identical to
// libgcrypt's (the tests check it against signatures made by the real `guix authenticate`).
//
// Arithmetic in extended twisted Edwards coordinates (Hisil et al. 2008, a = -1). Scalar
// multiplication walks fixed 4-bit windows and adds a table entry for every window, zero
// digits included, so its sequence of operations does not depend on the secret (JavaScript
// BigInt itself is not constant-time; the key stays on this machine).
import { createHmac } from "node:crypto";
import { OffloadError } from "../errors.js";

const P = 2n ** 255n - 19n;
/** The order of the base point (ℓ); scalars, r and s live modulo it. */
export const N = 2n ** 252n + 27742317777372353535851937790883648493n;
/** Bits of N: a 256-bit hash is shifted right by 256 − 253 before use (libgcrypt's _gcry_dsa_normalize_hash). */
const N_BITS = 253n;

type Point = readonly [x: bigint, y: bigint, z: bigint, t: bigint];

const mod = (a: bigint, m: bigint = P): bigint => {
  const r = a % m;
  return r < 0n ? r + m : r;
};

function power(base: bigint, exponent: bigint, m: bigint): bigint {
  let result = 1n;
  let b = mod(base, m);
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % m;
    b = (b * b) % m;
  }
  return result;
}

/** Inverse modulo a prime (P and N are both prime), by Fermat: the same steps whatever `a` is (for secrets). */
const invert = (a: bigint, m: bigint): bigint => power(a, m - 2n, m);

/** Inverse by the extended Euclidean algorithm: about 10 times faster, for public values only. */
function invertPublic(a: bigint, m: bigint): bigint {
  let [r0, r1, s0, s1] = [m, mod(a, m), 0n, 1n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1, s0, s1] = [r1, r0 - q * r1, s1, s0 - q * s1];
  }
  return mod(s0, m);
}

const D = mod(-121665n * invert(121666n, P));
const D2 = mod(2n * D);
const SQRT_M1 = power(2n, (P - 1n) / 4n, P);

const IDENTITY: Point = [0n, 1n, 1n, 0n];
const GX = 15112221349535400772501151409588531511454012693041857206046113283949847762202n;
const GY = 46316835694926478169428394003475163141307993866256225615783033603165251855960n;
const BASE: Point = [GX, GY, 1n, mod(GX * GY)];

function add([x1, y1, z1, t1]: Point, [x2, y2, z2, t2]: Point): Point {
  const a = mod((y1 - x1) * (y2 - x2));
  const b = mod((y1 + x1) * (y2 + x2));
  const c = mod(D2 * mod(t1 * t2));
  const d = mod(2n * z1 * z2);
  const e = b - a;
  const f = d - c;
  const g = d + c;
  const h = b + a;
  return [mod(e * f), mod(g * h), mod(f * g), mod(e * h)];
}

function double([x1, y1, z1]: Point): Point {
  const a = mod(x1 * x1);
  const b = mod(y1 * y1);
  const c = mod(2n * z1 * z1);
  const h = a + b;
  const e = mod(h - (x1 + y1) * (x1 + y1));
  const g = a - b;
  const f = c + g;
  return [mod(e * f), mod(g * h), mod(f * g), mod(e * h)];
}

/** [0·P, 1·P, …, 15·P] */
function windowTable(point: Point): Point[] {
  const table: Point[] = [IDENTITY, point];
  for (let i = 2; i < 16; i++) table.push(add(table[i - 1]!, point));
  return table;
}

const BASE_TABLE = windowTable(BASE);

/** Σ scalar·table-point over the pairs, with one shared chain of doublings (Straus–Shamir). */
function multiply(...terms: Array<[scalar: bigint, table: Point[]]>): Point {
  let result = IDENTITY;
  for (let shift = 252n; shift >= 0n; shift -= 4n) {
    result = double(double(double(double(result))));
    for (const [scalar, table] of terms) result = add(result, table[Number((scalar >> shift) & 15n)]!);
  }
  return result;
}

function affineX([x, , z]: Point, inverse: typeof invert = invert): bigint {
  return mod(x * inverse(z, P));
}

/** RFC 8032's 32-byte encoding (y little-endian, the sign of x in the top bit): how libgcrypt writes q. */
function encodePoint(point: Point): Buffer {
  const zInverse = invert(point[2], P);
  const x = mod(point[0] * zInverse);
  const y = mod(point[1] * zInverse);
  const bytes = Buffer.from(y.toString(16).padStart(64, "0"), "hex").reverse();
  if (x & 1n) bytes[31]! |= 0x80;
  return bytes;
}

/** The point of a 32-byte encoding, or undefined when it is none (RFC 8032 §5.1.3). */
function decodePoint(encoded: Buffer): Point | undefined {
  if (encoded.length !== 32) return undefined;
  const bytes = Buffer.from(encoded);
  const sign = BigInt(bytes[31]! >> 7);
  bytes[31]! &= 0x7f;
  const y = BigInt(`0x${bytes.reverse().toString("hex")}`);
  if (y >= P) return undefined;
  // x² = (y² − 1) / (d·y² + 1); its square root as RFC 8032 takes it.
  const x2 = mod((y * y - 1n) * invertPublic(D * y * y + 1n, P));
  let x = power(x2, (P + 3n) / 8n, P);
  if (mod(x * x - x2) !== 0n) x = mod(x * SQRT_M1);
  if (mod(x * x - x2) !== 0n) return undefined;
  if (x === 0n && sign === 1n) return undefined;
  if ((x & 1n) !== sign) x = P - x;
  return [x, y, 1n, mod(x * y)];
}

export function bytesToBigInt(bytes: Buffer): bigint {
  return bytes.length === 0 ? 0n : BigInt(`0x${bytes.toString("hex")}`);
}

/** Minimal unsigned big-endian bytes (libgcrypt's GCRYMPI_FMT_USG). */
export function bigIntToBytes(value: bigint, length = 0): Buffer {
  const hex = value.toString(16);
  const bytes = Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
  const minimal = value === 0n ? Buffer.alloc(0) : bytes;
  return length > minimal.length ? Buffer.concat([Buffer.alloc(length - minimal.length), minimal]) : minimal;
}

/** The public point d·G, encoded. */
export function publicPoint(d: bigint): Buffer {
  return encodePoint(multiply([mod(d, N), BASE_TABLE]));
}

function hashScalar(hash: Buffer): bigint {
  const excess = BigInt(hash.length * 8) - N_BITS;
  return excess > 0n ? bytesToBigInt(hash) >> excess : bytesToBigInt(hash);
}

/** RFC 6979 §3.2's k for secret d and a SHA-256 hash, as libgcrypt's _gcry_dsa_gen_rfc6979_k makes it. */
function deterministicK(d: bigint, hash: Buffer): bigint {
  const hmac = (key: Buffer, ...parts: Buffer[]) => createHmac("sha256", key).update(Buffer.concat(parts)).digest();
  const x = bigIntToBytes(d, 32);
  const z1 = hashScalar(hash);
  const h = bigIntToBytes(z1 >= N ? z1 - N : z1, 32);
  let v = Buffer.alloc(32, 1);
  let k = Buffer.alloc(32, 0);
  k = hmac(k, v, Buffer.from([0]), x, h);
  v = hmac(k, v);
  k = hmac(k, v, Buffer.from([1]), x, h);
  v = hmac(k, v);
  for (;;) {
    v = hmac(k, v);
    const candidate = bytesToBigInt(v) >> (256n - N_BITS);
    if (candidate >= 1n && candidate < N) return candidate;
    k = hmac(k, v, Buffer.from([0]));
    v = hmac(k, v);
  }
}

/**
 * The ECDSA signature (r, s) of a SHA-256 `hash` by the secret d. libgcrypt's Ed25519 ECDSA
 * keys hold a d of 256 random bits, not reduced modulo N; RFC 6979's nonce is derived from d
 * as it is, so d is taken as given.
 */
export function sign(d: bigint, hash: Buffer): { r: bigint; s: bigint } {
  const e = hashScalar(hash);
  const k = deterministicK(d, hash);
  const r = mod(affineX(multiply([k, BASE_TABLE])), N);
  const s = mod(invert(k, N) * (e + mod(d, N) * r), N);
  // Either is 0 with probability ~2^-252 (RFC 6979 would then move on to another k).
  if (r === 0n || s === 0n) throw new OffloadError("degenerate ECDSA signature", { code: "internal" });
  return { r, s };
}

/** Whether (r, s) is an ECDSA signature of `hash` by the key whose encoded point is `q`. */
export function verify(q: Buffer, hash: Buffer, r: bigint, s: bigint): boolean {
  if (r < 1n || r >= N || s < 1n || s >= N) return false;
  const point = decodePoint(q);
  if (point === undefined) return false;
  const w = invertPublic(s, N);
  const sum = multiply([mod(hashScalar(hash) * w, N), BASE_TABLE], [mod(r * w, N), windowTable(point)]);
  return mod(affineX(sum, invertPublic), N) === r;
}
