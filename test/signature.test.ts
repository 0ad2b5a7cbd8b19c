import { OffloadError } from "../src/errors.js";
import { generateKeyPair, parsePublicKey, parseSecretKey } from "../src/nix/keys.js";
import type { PathInfo } from "../src/nix/path-info.js";
import { pathFingerprint, requireTrustedSignature, signPath, verifyPathSignatures } from "../src/nix/signature.js";

// Golden data from real Nix 2.8.0: `nix-store --generate-binary-cache-key host-1 …`, a
// trivial input-addressed derivation whose output refers to a builtins.toFile path,
// `nix store sign --key-file`, then `nix path-info --json --sigs`.
const NIX_SECRET = "host-1:EkV/qKtoO1h8h7bev5zY6UTIiD0mgQ/x5JIohr+Ov2tzf82Cr6oIo3puZPiecFizgwvfzSl+4VCRASr8t8mh4A==";
const NIX_PUBLIC = "host-1:c3/Ngq+qCKN6bmT4nnBYs4ML380pfuFQkQEq/LfJoeA=";
const GOLDEN: PathInfo = {
  path: "/nix/store/ahrs7y0pkxf2brm5kk95klcldfs62bwi-offload-golden",
  deriver: "/nix/store/ffg79ik208wva8n29hnykl3h8307imzy-offload-golden.drv",
  narHash: Buffer.from("Dd/s6l4hFRRueHL9PoECi38yye/u6tCMBH3lknP0DRA=", "base64"),
  narSize: 168,
  references: ["/nix/store/6saphnb2pqc6ms9p1vp2jai3jw713gh4-offload-dep"],
  signatures: ["host-1:9h1ZCbRBU9dSp8P4ULiHlZwVwBzpXSTArb1KkuubTmXOlN3Vwdfpke2OcxjxqzxMfHi2oIlwlHC6uOL/KTUtAQ=="],
};
const NIX_KEY = parsePublicKey(NIX_PUBLIC);

describe("path fingerprint and signatures", () => {
  test("fingerprint matches Nix's format (nix32 hash as `nix-store -q --hash` prints it)", () => {
    expect(pathFingerprint(GOLDEN)).toBe(
      "1;/nix/store/ahrs7y0pkxf2brm5kk95klcldfs62bwi-offload-golden;" +
        "sha256:040dyirr5rbx0j6d1spfxz4k4zwb0a0kxzbjg1p18591bvmfrpqd;168;" +
        "/nix/store/6saphnb2pqc6ms9p1vp2jai3jw713gh4-offload-dep",
    );
    expect(pathFingerprint({ ...GOLDEN, references: [] })).toMatch(/;168;$/);
  });

  test("references are sorted bytewise, whatever order the caller gives", () => {
    const a = "/nix/store/0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
    const b = "/nix/store/zaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-b";
    expect(pathFingerprint({ ...GOLDEN, references: [b, a] })).toMatch(new RegExp(`;${a},${b}$`));
  });

  test("our signature equals the one Nix made with the same key (Ed25519 is deterministic)", () => {
    expect(signPath(GOLDEN, parseSecretKey(NIX_SECRET))).toBe(GOLDEN.signatures[0]);
  });

  test("a Nix-made signature verifies with our verifier", () => {
    const verdict = verifyPathSignatures(GOLDEN, [generateKeyPair("other-1").publicKey, NIX_KEY]);
    expect(verdict).toMatchObject({ valid: true, signature: GOLDEN.signatures[0] });
    expect(verdict.valid && verdict.key.toString()).toBe(NIX_PUBLIC);
  });

  test.each([
    ["narHash", { narHash: Buffer.from(GOLDEN.narHash).fill(0, 0, 1) }],
    ["narSize", { narSize: 169 }],
    ["references (removed)", { references: [] }],
    ["references (added)", { references: [...GOLDEN.references, "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-x"] }],
    ["path", { path: GOLDEN.path.replace("golden", "golder") }],
  ])("tampered %s fails as an invalid signature", (_field, change) => {
    const verdict = verifyPathSignatures({ ...GOLDEN, ...change }, [NIX_KEY]);
    expect(verdict).toMatchObject({ valid: false, code: "invalid-signature" });
    expect(!verdict.valid && verdict.reason).toMatch(/invalid signature by "host-1"/);
  });

  test("the deriver is not signed (Nix leaves it out of the fingerprint)", () => {
    const withoutDeriver: PathInfo = { ...GOLDEN, deriver: undefined };
    expect(verifyPathSignatures(withoutDeriver, [NIX_KEY]).valid).toBe(true);
  });

  test("no signatures, unknown key, malformed signature", () => {
    expect(verifyPathSignatures({ ...GOLDEN, signatures: [] }, [NIX_KEY])).toMatchObject({
      valid: false,
      code: "unsigned",
      reason: `${GOLDEN.path} has no signature`,
    });
    const stranger = generateKeyPair("stranger-1");
    const unknown = verifyPathSignatures({ ...GOLDEN, signatures: [signPath(GOLDEN, stranger)] }, [NIX_KEY]);
    expect(unknown).toMatchObject({ valid: false, code: "unknown-key" });
    expect(!unknown.valid && unknown.reason).toMatch(/signed by unknown key "stranger-1"/);
    for (const bad of ["host-1:", "host-1:AAAA", "host-1:!!", "nocolon"]) {
      expect(verifyPathSignatures({ ...GOLDEN, signatures: [bad] }, [NIX_KEY]).valid).toBe(false);
    }
  });

  test("a key with a trusted NAME but different bytes is not trusted", () => {
    const impostor = generateKeyPair("host-1");
    const forged = { ...GOLDEN, signatures: [signPath(GOLDEN, impostor)] };
    expect(verifyPathSignatures(forged, [NIX_KEY])).toMatchObject({ valid: false, code: "invalid-signature" });
  });

  test("one good signature among bad ones is enough", () => {
    const info = { ...GOLDEN, signatures: ["stranger-1:AAAA", "host-1:AAAA", ...GOLDEN.signatures] };
    expect(verifyPathSignatures(info, [NIX_KEY]).valid).toBe(true);
  });

  test("requireTrustedSignature throws with a fix", () => {
    expect(requireTrustedSignature(GOLDEN, [NIX_KEY]).name).toBe("host-1");
    const error = (() => {
      try {
        requireTrustedSignature(GOLDEN, []);
      } catch (e) {
        return e as OffloadError;
      }
    })();
    expect(error).toBeInstanceOf(OffloadError);
    expect(error).toMatchObject({ code: "unknown-key", fix: expect.stringContaining("offload authorize") });
  });
});
