// What Nix knows about one valid store path: the unit that is signed, sent and verified.

export interface PathInfo {
  /** Full store path, e.g. /nix/store/<hash>-<name>. */
  path: string;
  /** Full store path of the deriver .drv, or undefined. */
  deriver?: string;
  /** Full store paths this path refers to, sorted bytewise (may include itself). */
  references: string[];
  /** sha256 of the NAR serialisation, raw 32 bytes. */
  narHash: Buffer;
  narSize: number;
  /** Signatures, each "keyname:base64". */
  signatures: string[];
  /** Content address, e.g. "fixed:r:sha256:...", or undefined. */
  contentAddress?: string;
}
