// Signatures on store paths, exactly as Nix makes and checks them (path-info.cc): an
// Ed25519 signature over the path's fingerprint, so one signature vouches for the NAR's
// hash and size and for the reference graph, not just for the name.
import { OffloadError } from "../errors.js";
import type { PublicKey, SecretKey } from "./keys.js";
import { encodeNix32 } from "./nix32.js";
import type { PathInfo } from "./path-info.js";
import { byteOrder } from "./wire.js";

export type SignedFields = Pick<PathInfo, "path" | "narHash" | "narSize" | "references">;

/** `1;<path>;sha256:<nix32 narHash>;<narSize>;<sorted references joined by ",">` */
export function pathFingerprint(info: SignedFields): string {
  if (info.narHash.length !== 32) {
    throw new OffloadError(`narHash of ${info.path} has ${info.narHash.length} bytes, expected a 32-byte sha256`, {
      code: "invalid-path-info",
    });
  }
  if (!Number.isSafeInteger(info.narSize) || info.narSize < 0) {
    throw new OffloadError(`narSize of ${info.path} is not a size: ${info.narSize}`, { code: "invalid-path-info" });
  }
  // Sorted here too: a caller's unsorted list must not yield a signature Nix rejects.
  const references = [...info.references].sort(byteOrder);
  return `1;${info.path};sha256:${encodeNix32(info.narHash)};${info.narSize};${references.join(",")}`;
}

/** Nix's signature string "keyname:base64" for this path. */
export function signPath(info: SignedFields, secretKey: SecretKey): string {
  return secretKey.sign(pathFingerprint(info));
}

export type SignatureVerdict =
  { valid: true; key: PublicKey; signature: string } | { valid: false; reason: string; code: "unsigned" | "unknown-key" | "invalid-signature" };

/** Name of the key a "name:base64" signature claims, or undefined when malformed. */
export function signatureKeyName(signature: string): string | undefined {
  const colon = signature.indexOf(":");
  return colon > 0 ? signature.slice(0, colon) : undefined;
}

/**
 * Finds a signature on `info` made by one of `trustedKeys` (looked up by name, as Nix does).
 * Otherwise says why not: no signature, only signatures by unknown keys, or a signature by
 * a trusted key that does not match (tampered NAR hash, size or references, or a forgery).
 * `pinnedBy` names the machine whose pinned signingKey `trustedKeys` is, else they are the ACL.
 */
export function verifyPathSignatures(
  info: SignedFields & Pick<PathInfo, "signatures">,
  trustedKeys: readonly PublicKey[],
  pinnedBy?: string,
): SignatureVerdict {
  if (info.signatures.length === 0) {
    return { valid: false, code: "unsigned", reason: `${info.path} has no signature` };
  }
  const fingerprint = pathFingerprint(info);
  const unknown: string[] = [];
  const invalid: string[] = [];
  for (const signature of info.signatures) {
    const name = signatureKeyName(signature) ?? "";
    const keys = trustedKeys.filter((key) => key.name === name);
    if (keys.length === 0) {
      unknown.push(name);
      continue;
    }
    const raw = decodeSignature(signature.slice(name.length + 1));
    const key = raw && keys.find((candidate) => candidate.verify(fingerprint, raw));
    if (key) return { valid: true, key, signature };
    invalid.push(name);
  }
  if (invalid.length > 0) {
    return {
      valid: false,
      code: "invalid-signature",
      reason: `${info.path} has an invalid signature by ${quoteList(invalid)}: ` + "its NAR hash, size or references differ from what the key signed",
    };
  }
  return {
    valid: false,
    code: "unknown-key",
    reason: pinnedBy
      ? `${info.path} is signed by ${quoteList(unknown)}, which does not match the pinned signingKey ${quoteList(trustedKeys.map((key) => key.name))} of ${pinnedBy}`
      : `${info.path} is signed by unknown key ${quoteList(unknown)} (not in the ACL)`,
  };
}

function decodeSignature(encoded: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/]{86}==$/.test(encoded)) return undefined;
  return Buffer.from(encoded, "base64");
}

function quoteList(names: string[]): string {
  return [...new Set(names)].map((name) => JSON.stringify(name)).join(", ");
}

/** Throws an OffloadError (with the fix) unless a trusted key signed `info`; returns that key. */
export function requireTrustedSignature(info: SignedFields & Pick<PathInfo, "signatures">, trustedKeys: readonly PublicKey[]): PublicKey {
  const verdict = verifyPathSignatures(info, trustedKeys);
  if (verdict.valid) return verdict.key;
  const fix = {
    unsigned: "sign it on the machine that made it (its offload signing key) before sending it",
    "unknown-key": "if you trust the signer: offload authorize /path/to/its/signing-key.pub",
    "invalid-signature": "do not import it: the data was corrupted or tampered with in transit; send it again",
  }[verdict.code];
  throw new OffloadError(verdict.reason, { code: verdict.code, fix });
}
