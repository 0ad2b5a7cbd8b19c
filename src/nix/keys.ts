// Nix's Ed25519 signing keys, byte-compatible with `nix-store --generate-binary-cache-key`:
// "name:base64" where the secret is 64 bytes (seed then public key) and the public key 32.
// A SecretKey never shows its secret half when printed, logged or serialised.
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { inspect } from "node:util";
import { OffloadError } from "../errors.js";
import { checkPrivate, readTextFile } from "../files/safety.js";

// DER wrappers that turn raw Ed25519 bytes into keys Node's crypto accepts (RFC 8410).
const PRIVATE_DER_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const PUBLIC_DER_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

export const SEED_BYTES = 32;
export const PUBLIC_KEY_BYTES = 32;
export const SECRET_KEY_BYTES = 64;
export const SIGNATURE_BYTES = 64;

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Key names are looked up verbatim in trusted-public-keys: no colon, no whitespace. */
export function validateKeyName(name: string): void {
  if (name.length === 0 || /[:\s]/.test(name)) {
    throw new OffloadError(`invalid key name ${JSON.stringify(name)}: it must be non-empty, without ":" or spaces`, {
      code: "invalid-key-name",
      fix: 'use a name like "myhost-1"',
    });
  }
}

export class PublicKey {
  readonly name: string;
  /** Raw 32-byte Ed25519 public key. */
  readonly bytes: Buffer;
  readonly #key: KeyObject;

  constructor(name: string, bytes: Buffer) {
    validateKeyName(name);
    if (bytes.length !== PUBLIC_KEY_BYTES) {
      throw new OffloadError(`public key "${name}" has ${bytes.length} bytes, expected ${PUBLIC_KEY_BYTES}`, {
        code: "invalid-key",
      });
    }
    this.name = name;
    this.bytes = Buffer.from(bytes);
    this.#key = createPublicKey({ key: Buffer.concat([PUBLIC_DER_PREFIX, bytes]), format: "der", type: "spki" });
  }

  /** "name:base64", the format of signing-key.pub and trusted-public-keys entries. */
  toString(): string {
    return `${this.name}:${this.bytes.toString("base64")}`;
  }

  equals(other: PublicKey): boolean {
    return this.name === other.name && this.bytes.equals(other.bytes);
  }

  /** Checks a raw 64-byte detached signature over `data`. */
  verify(data: Buffer | string, signature: Buffer): boolean {
    if (signature.length !== SIGNATURE_BYTES) return false;
    return cryptoVerify(null, toBuffer(data), this.#key, signature);
  }
}

export class SecretKey {
  readonly name: string;
  readonly publicKey: PublicKey;
  readonly #seed: Buffer;
  readonly #key: KeyObject;

  constructor(name: string, seed: Buffer) {
    validateKeyName(name);
    if (seed.length !== SEED_BYTES) {
      throw new OffloadError(`secret key seed has ${seed.length} bytes, expected ${SEED_BYTES}`, { code: "invalid-key" });
    }
    this.name = name;
    this.#seed = Buffer.from(seed);
    this.#key = createPrivateKey({ key: Buffer.concat([PRIVATE_DER_PREFIX, seed]), format: "der", type: "pkcs8" });
    const spki = createPublicKey(this.#key).export({ format: "der", type: "spki" });
    this.publicKey = new PublicKey(name, spki.subarray(PUBLIC_DER_PREFIX.length));
  }

  /** "name:base64(seed ‖ public)", the format of signing-key.sec. Only for writing the key file. */
  exportSecret(): string {
    return `${this.name}:${Buffer.concat([this.#seed, this.publicKey.bytes]).toString("base64")}`;
  }

  /** Raw 64-byte detached Ed25519 signature (deterministic, like libsodium's). */
  signRaw(data: Buffer | string): Buffer {
    return cryptoSign(null, toBuffer(data), this.#key);
  }

  /** Nix's signature string "name:base64(signature)". */
  sign(data: Buffer | string): string {
    return `${this.name}:${this.signRaw(data).toString("base64")}`;
  }

  // Keep the secret out of console.log, util.inspect, JSON and string interpolation.
  toString(): string {
    return `SecretKey(${this.name})`;
  }

  toJSON(): string {
    return this.toString();
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

function toBuffer(data: Buffer | string): Buffer {
  return typeof data === "string" ? Buffer.from(data, "utf8") : data;
}

/** Splits "name:base64" like Nix (at the first colon) and decodes the base64 strictly. */
function splitKey(text: string, what: string, source: string): { name: string; bytes: Buffer } {
  // Key files are written without a newline, but hand-edited ones often have one.
  const trimmed = text.trim();
  const colon = trimmed.indexOf(":");
  const where = source ? ` in ${source}` : "";
  if (colon <= 0 || colon === trimmed.length - 1) {
    throw new OffloadError(`${what}${where} is not of the form NAME:BASE64`, { code: "invalid-key" });
  }
  const name = trimmed.slice(0, colon);
  const encoded = trimmed.slice(colon + 1);
  if (!BASE64.test(encoded)) {
    throw new OffloadError(`${what} "${name}"${where} is not valid base64`, { code: "invalid-key" });
  }
  validateKeyName(name);
  return { name, bytes: Buffer.from(encoded, "base64") };
}

/** Parses a public key ("name:base64" of 32 bytes). `source` names the file for messages. */
export function parsePublicKey(text: string, source = ""): PublicKey {
  const { name, bytes } = splitKey(text, "public key", source);
  if (bytes.length !== PUBLIC_KEY_BYTES) {
    const hint = bytes.length === SECRET_KEY_BYTES ? " (this looks like a SECRET key: never share it)" : "";
    throw new OffloadError(`public key "${name}"${source ? ` in ${source}` : ""} has ${bytes.length} bytes, expected ${PUBLIC_KEY_BYTES}${hint}`, {
      code: "invalid-key",
      fix: "use the .pub file written by `offload keygen` or `nix-store --generate-binary-cache-key`",
    });
  }
  return new PublicKey(name, bytes);
}

/** Parses a secret key ("name:base64" of seed ‖ public). Never echoes the key material. */
export function parseSecretKey(text: string, source = ""): SecretKey {
  const { name, bytes } = splitKey(text, "secret key", source);
  const where = source ? ` in ${source}` : "";
  if (bytes.length !== SECRET_KEY_BYTES) {
    throw new OffloadError(`secret key "${name}"${where} has ${bytes.length} bytes, expected ${SECRET_KEY_BYTES}`, {
      code: "invalid-key",
      fix: "use the .sec file written by `offload keygen` or `nix-store --generate-binary-cache-key`",
    });
  }
  const key = new SecretKey(name, bytes.subarray(0, SEED_BYTES));
  // libsodium signs with the stored public half; a mismatched one would make signatures
  // that nobody can verify, so a corrupt file is refused up front.
  if (!key.publicKey.bytes.equals(bytes.subarray(SEED_BYTES))) {
    throw new OffloadError(`secret key "${name}"${where} is corrupt: its public half does not match its seed`, {
      code: "invalid-key",
      fix: "regenerate the key pair with `offload keygen --force`",
    });
  }
  return key;
}

export function generateKeyPair(name: string): SecretKey {
  const { privateKey } = generateKeyPairSync("ed25519");
  const pkcs8 = privateKey.export({ format: "der", type: "pkcs8" });
  return new SecretKey(name, pkcs8.subarray(PRIVATE_DER_PREFIX.length));
}

/** Reads a secret key file, refusing one that group or others can access. */
export async function readSecretKeyFile(file: string): Promise<SecretKey> {
  await checkPrivate(file, "secret key");
  return parseSecretKey(await readTextFile(file, "secret key"), file);
}

export async function readPublicKeyFile(file: string): Promise<PublicKey> {
  return parsePublicKey(await readTextFile(file, "public key"), file);
}
