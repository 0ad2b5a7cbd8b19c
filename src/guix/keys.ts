// Guix's signing keys: libgcrypt S-expressions, `(public-key (ecc (curve Ed25519) (q Q)))`
// and `(private-key (ecc (curve Ed25519) (q Q) (d D)))`, the pair `guix archive
// --generate-key` writes to /etc/guix/signing-key.{pub,sec}. Only that default kind is
// supported: ECDSA on the Ed25519 curve (ed25519-ecdsa.ts). offload's own Guix pair lives
// next to its Nix pair as guix-signing-key.{sec,pub}, in exactly Guix's format, so the
// public half goes straight to `guix archive --authorize`.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { inspect } from "node:util";
import { OffloadError } from "../errors.js";
import { configDir } from "../files/config-dir.js";
import { checkPrivate, fileError } from "../files/safety.js";
import { bigIntToBytes, bytesToBigInt, N, publicPoint, sign, verify } from "./ed25519-ecdsa.js";
import { advancedSexp, atom, findToken, isAtom, parseSexp, tokenValue, type Sexp } from "./sexp.js";

export function guixSecretKeyPath(dir: string = configDir()): string {
  return path.join(dir, "guix-signing-key.sec");
}

export function guixPublicKeyPath(dir: string = configDir()): string {
  return path.join(dir, "guix-signing-key.pub");
}

const KEY_FIX = "use a key made by `guix archive --generate-key` (or `offload keygen --guix`): ECDSA on Ed25519, Guix's default";

function invalidKey(message: string, source: string): OffloadError {
  return new OffloadError(`${message}${source ? ` in ${source}` : ""}`, { code: "invalid-key", fix: KEY_FIX });
}

/** The (ecc …) list of a key, checked to be on Ed25519 with ECDSA, and its q. */
function eccParameters(key: Sexp[], kind: "public-key" | "private-key", source: string): { ecc: Sexp[]; q: Buffer } {
  if (!isAtom(key[0], kind)) {
    const other = kind === "public-key" ? "private-key" : "public-key";
    const hint = isAtom(key[0], "private-key") ? " (this is a SECRET key: never share it)" : "";
    throw invalidKey(`expected a Guix ${kind} but found ${isAtom(key[0], other) ? other : "something else"}${hint}`, source);
  }
  const ecc = key[1];
  if (key.length !== 2 || Buffer.isBuffer(ecc) || ecc === undefined) throw invalidKey(`the ${kind} has no single algorithm list`, source);
  if (!isAtom(ecc[0], "ecc")) throw invalidKey(`the ${kind} is not an ECC key (only Guix's default ECDSA/Ed25519 keys are supported)`, source);
  const curve = tokenValue(ecc, "curve");
  if (curve?.toString("latin1") !== "Ed25519") throw invalidKey(`the ${kind} is not on the Ed25519 curve`, source);
  const flags = findToken(ecc, "flags");
  if (flags && flags.slice(1).some((flag) => isAtom(flag, "eddsa"))) {
    throw invalidKey(`the ${kind} is an EdDSA key; only Guix's default ECDSA/Ed25519 keys are supported`, source);
  }
  const q = tokenValue(ecc, "q");
  if (q?.length !== 32) throw invalidKey(`the ${kind} has no 32-byte q`, source);
  return { ecc, q };
}

export class GuixPublicKey {
  /** The encoded point Q (32 bytes). */
  readonly q: Buffer;

  constructor(q: Buffer) {
    if (q.length !== 32) throw invalidKey(`a Guix public key's q has ${q.length} bytes, expected 32`, "");
    this.q = Buffer.from(q);
  }

  get sexp(): Sexp[] {
    return [atom("public-key"), [atom("ecc"), [atom("curve"), atom("Ed25519")], [atom("q"), this.q]]];
  }

  /** As Guix writes signing-key.pub: libgcrypt's advanced form. */
  toString(): string {
    return advancedSexp(this.sexp).toString("latin1");
  }

  /** A short name for messages: the first 16 hex digits of q. */
  get id(): string {
    return this.q.toString("hex").slice(0, 16).toUpperCase();
  }

  equals(other: GuixPublicKey): boolean {
    return this.q.equals(other.q);
  }

  verify(hash: Buffer, r: bigint, s: bigint): boolean {
    return verify(this.q, hash, r, s);
  }
}

export class GuixSecretKey {
  readonly publicKey: GuixPublicKey;
  readonly #d: bigint;

  /** `d` as the key file has it: Guix's are 256 random bits, not reduced modulo the group order. */
  constructor(d: bigint) {
    if (d < 1n || d >= 2n ** 256n || d % N === 0n) throw invalidKey("a Guix secret key's d is out of range", "");
    this.#d = d;
    this.publicKey = new GuixPublicKey(publicPoint(d));
  }

  /** As Guix writes signing-key.sec. Only for writing the key file. */
  exportSecret(): string {
    // libgcrypt reads d as an unsigned number; a leading zero keeps a high bit from reading as a sign.
    const d = bigIntToBytes(this.#d);
    const bytes = d[0]! & 0x80 ? Buffer.concat([Buffer.alloc(1), d]) : d;
    const sexp = [atom("private-key"), [atom("ecc"), [atom("curve"), atom("Ed25519")], [atom("q"), this.publicKey.q], [atom("d"), bytes]]];
    return advancedSexp(sexp).toString("latin1");
  }

  /** The ECDSA pair (r, s) over a SHA-256 hash. */
  signHash(hash: Buffer): { r: bigint; s: bigint } {
    return sign(this.#d, hash);
  }

  // Keep the secret out of console.log, util.inspect, JSON and string interpolation.
  toString(): string {
    return `GuixSecretKey(${this.publicKey.id})`;
  }

  toJSON(): string {
    return this.toString();
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

function parseKeyText(text: Buffer | string, source: string): Sexp[] {
  try {
    return parseSexp(text);
  } catch (error) {
    throw invalidKey(`not a Guix key: ${(error as OffloadError).message}`, source);
  }
}

/** A public key from its S-expression (as parsed). */
export function publicKeyFromSexp(sexp: Sexp[], source = ""): GuixPublicKey {
  return new GuixPublicKey(eccParameters(sexp, "public-key", source).q);
}

export function parseGuixPublicKey(text: Buffer | string, source = ""): GuixPublicKey {
  return publicKeyFromSexp(parseKeyText(text, source), source);
}

export function parseGuixSecretKey(text: Buffer | string, source = ""): GuixSecretKey {
  const { ecc, q } = eccParameters(parseKeyText(text, source), "private-key", source);
  const d = tokenValue(ecc, "d");
  if (d === undefined || d.length === 0) throw invalidKey("the private-key has no d", source);
  const value = bytesToBigInt(d);
  if (value < 1n || value >= 2n ** 256n || value % N === 0n) throw invalidKey("the private-key's d is out of range", source);
  const key = new GuixSecretKey(value);
  // A q that is not d·G would make signatures that name a key which did not make them.
  if (!key.publicKey.q.equals(q)) {
    throw new OffloadError(`the Guix secret key${source ? ` in ${source}` : ""} is corrupt: its q does not match its d`, {
      code: "invalid-key",
      fix: "regenerate it: offload keygen --guix --force",
    });
  }
  return key;
}

export function generateGuixKeyPair(): GuixSecretKey {
  // Like libgcrypt's: 256 random bits (the chance of a multiple of N is nil).
  return new GuixSecretKey(bytesToBigInt(randomBytes(32)));
}

async function readKeyFile(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (error) {
    throw fileError(error, `read the ${what}`, file);
  }
}

/** Reads a Guix secret key file, refusing one that group or others can access (Guix refuses it too). */
export async function readGuixSecretKeyFile(file: string): Promise<GuixSecretKey> {
  await checkPrivate(file, "Guix secret key").catch((error: unknown) => {
    if (error instanceof OffloadError && error.code === "missing-secret-key") {
      throw new OffloadError(error.message, { code: error.code, fix: "offload keygen --guix" });
    }
    throw error;
  });
  return parseGuixSecretKey(await readKeyFile(file, "Guix secret key"), file);
}

export async function readGuixPublicKeyFile(file: string): Promise<GuixPublicKey> {
  return parseGuixPublicKey(await readKeyFile(file, "Guix public key"), file);
}
