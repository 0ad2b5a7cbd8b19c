import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { OffloadError } from "../src/errors.js";
import { decodeNix32, encodeNix32, nix32Length } from "../src/nix/nix32.js";

function bytes(seed: string, n: number): Buffer {
  return createHash("sha512").update(seed).digest().subarray(0, n);
}

describe("nix32", () => {
  test("lengths match Nix: 52 for sha256, 32 for a store path hash", () => {
    expect(nix32Length(32)).toBe(52);
    expect(nix32Length(20)).toBe(32);
    expect(nix32Length(0)).toBe(0);
  });

  test("encoding equals nix-hash --to-base32 (golden, real Nix)", () => {
    const sha256 = Array.from({ length: 20 }, (_, i) => bytes(`s${i}`, 32));
    const sha1 = Array.from({ length: 20 }, (_, i) => bytes(`t${i}`, 20));
    const run = (type: string, list: Buffer[]) =>
      execFileSync("nix-hash", ["--type", type, "--to-base32", ...list.map((b) => b.toString("hex"))], { encoding: "utf8" })
        .trim()
        .split("\n");
    expect(sha256.map(encodeNix32)).toEqual(run("sha256", sha256));
    expect(sha1.map(encodeNix32)).toEqual(run("sha1", sha1));
  });

  test("decode inverts encode for every length", () => {
    for (let n = 0; n <= 64; n++) {
      const b = bytes(`len${n}`, Math.min(n, 64));
      expect(decodeNix32(encodeNix32(b)).equals(b)).toBe(true);
    }
  });

  test("known value", () => {
    expect(encodeNix32(Buffer.alloc(32))).toBe("0".repeat(52));
    expect(encodeNix32(Buffer.alloc(20, 0xff))).toBe("z".repeat(32));
  });

  test("rejects bad characters, lengths and overflowing bits", () => {
    expect(() => decodeNix32("e".repeat(32))).toThrow(OffloadError);
    expect(() => decodeNix32("0".repeat(31) + "u")).toThrow(/invalid character "u"/);
    expect(() => decodeNix32("0".repeat(33))).toThrow(/not a valid length/);
    // 52 chars carry 260 bits: the first char may only use the low 1 bit... of 256.
    expect(() => decodeNix32("z" + "0".repeat(51))).toThrow(/bits set beyond/);
    expect(() => decodeNix32("0".repeat(31) + "é")).toThrow(/invalid character/);
  });
});
