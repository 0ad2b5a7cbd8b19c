// Guix's signatures on archive items (guix/pki.scm `signature-sexp`, guix/scripts/
// authenticate.scm): an S-expression holding what was signed, the signature and the signer,
//
//   (signature (data (flags rfc6979) (hash sha256 #H#))
//              (sig-val (ecdsa (r #R#) (s #S#)))
//              (public-key (ecc (curve Ed25519) (q #Q#))))
//
// written in libgcrypt's advanced form, whose atoms may be raw bytes (a quoted string with
// bytes ≥ 0xA1): it is bytes, never text. H is the SHA-256 of the item as exported (see
// ExportItem.itemHash). Checks run in Guix's order (`%signature-status`), so a refusal has
// the name Guix would give it.
import { OffloadError } from "../errors.js";
import { bigIntToBytes, bytesToBigInt } from "./ed25519-ecdsa.js";
import { publicKeyFromSexp, type GuixPublicKey, type GuixSecretKey } from "./keys.js";
import { advancedSexp, atom, findToken, isAtom, parseSexp, tokenValue, type Sexp } from "./sexp.js";

/** The signature S-expression (its advanced form's bytes) over a SHA-256 `hash`. */
export function signHash(hash: Buffer, key: GuixSecretKey): Buffer {
  if (hash.length !== 32) throw new OffloadError(`a Guix signature covers a 32-byte SHA-256, not ${hash.length} bytes`, { code: "internal" });
  const { r, s } = key.signHash(hash);
  return advancedSexp([
    atom("signature"),
    [atom("data"), [atom("flags"), atom("rfc6979")], [atom("hash"), atom("sha256"), hash]],
    [atom("sig-val"), [atom("ecdsa"), [atom("r"), bigIntToBytes(r)], [atom("s"), bigIntToBytes(s)]]],
    key.publicKey.sexp,
  ]);
}

export type GuixRefusal = "unsigned" | "corrupt-signature" | "unauthorized-key" | "hash-mismatch" | "invalid-signature";

export type GuixSignatureVerdict = { valid: true; key: GuixPublicKey } | { valid: false; code: GuixRefusal; reason: string };

const refuse = (code: GuixRefusal, reason: string): GuixSignatureVerdict => ({ valid: false, code, reason });

/** The hash a signature claims to cover: `(hash sha256 #H#)` in its data, or undefined. */
function signedHash(data: Sexp[]): Buffer | undefined {
  const hash = findToken(data, "hash");
  return hash && isAtom(hash[1], "sha256") && Buffer.isBuffer(hash[2]) && hash[2].length === 32 ? hash[2] : undefined;
}

/**
 * Checks the signature slot of `item` (its bytes, or undefined when the slot is empty) against
 * `hash`, the SHA-256 of the item as received, and the authorized keys.
 */
export function checkGuixSignature(signature: Buffer | undefined, hash: Buffer, item: string, acl: readonly GuixPublicKey[]): GuixSignatureVerdict {
  if (signature === undefined || signature.length === 0) return refuse("unsigned", `${item} has no signature`);
  let sexp: Sexp[];
  try {
    sexp = parseSexp(signature);
  } catch (error) {
    return refuse("corrupt-signature", `the signature of ${item} is not an S-expression: ${(error as OffloadError).message}`);
  }
  const subject = findToken(sexp, "public-key");
  const data = findToken(sexp, "data");
  if (!isAtom(sexp[0], "signature") || subject === undefined || data === undefined) {
    return refuse("corrupt-signature", `the signature of ${item} lacks its data or its public key`);
  }
  let key: GuixPublicKey;
  try {
    key = publicKeyFromSexp(subject);
  } catch (error) {
    // Guix would look an unsupported key up in its ACL; ours holds supported keys only.
    return refuse("unauthorized-key", `${item} is signed by a key offload cannot use: ${(error as OffloadError).message}`);
  }
  const known = acl.find((candidate) => candidate.equals(key));
  if (known === undefined) return refuse("unauthorized-key", `${item} is signed by key ${key.id}…, which is not in the ACL`);
  const claimed = signedHash(data);
  if (claimed === undefined || !claimed.equals(hash)) {
    return refuse("hash-mismatch", `the signature of ${item} covers other contents: the item was altered after it was signed`);
  }
  const values = findToken(sexp, "sig-val");
  const ecdsa = values && findToken(values, "ecdsa");
  const r = ecdsa && tokenValue(ecdsa, "r");
  const s = ecdsa && tokenValue(ecdsa, "s");
  if (r === undefined || s === undefined || !known.verify(hash, bytesToBigInt(r), bytesToBigInt(s))) {
    return refuse("invalid-signature", `${item} has an invalid signature by key ${key.id}… (forged, or damaged in transit)`);
  }
  return { valid: true, key: known };
}
