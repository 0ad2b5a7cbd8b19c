// Guix's keys, signatures and ACLs against bytes the real guix 1.5.0 wrote (test/fixtures/guix,
// see its README), and live against the real `guix authenticate` of the sid root.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { inspect } from "node:util";
import { registerAcl } from "../src/cli/acl.js";
import { registerKeys } from "../src/cli/keys.js";
import { OffloadError } from "../src/errors.js";
import { authorizeGuixKey, formatGuixAcl, parseGuixAcl, readGuixAcl } from "../src/guix/acl.js";
import { generateGuixKeyPair, parseGuixPublicKey, parseGuixSecretKey, readGuixSecretKeyFile, type GuixSecretKey } from "../src/guix/keys.js";
import { advancedSexp, canonicalSexp, findToken, parseSexp, type Sexp } from "../src/guix/sexp.js";
import { checkGuixSignature, signHash } from "../src/guix/signature.js";
import { runCommand } from "./support/run-command.js";

const FIXTURES = path.join(import.meta.dirname, "fixtures", "guix");
const fixture = (name: string) => readFileSync(path.join(FIXTURES, name));
const SID = path.join(process.env.OFFLOAD_ROOTS_DIR ?? "/var/lib/offload-roots", "sid");

/** `guix authenticate` replies: "CODE LEN:TEXT", one after another. */
function replies(bytes: Buffer): Array<{ code: number; text: Buffer }> {
  const out = [];
  for (let at = 0; at < bytes.length;) {
    const header = /^(\d+) (\d+):/.exec(bytes.subarray(at, at + 24).toString("latin1"))!;
    const start = at + header[0].length;
    out.push({ code: Number(header[1]), text: bytes.subarray(start, start + Number(header[2])) });
    at = start + Number(header[2]);
  }
  return out;
}

const signedHashOf = (signature: Buffer) => findToken(parseSexp(signature), "hash")![2] as Buffer;
const keyA = parseGuixSecretKey(fixture("signing-key.sec"));
const keyB = parseGuixPublicKey(fixture("other-key.pub"));
const signatures = replies(fixture("authenticate-sign.out")).map((reply) => reply.text);
const quoted = replies(fixture("quoted-signature.out"))[0]!.text;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "offload-guix-keys-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function refusal(fn: () => unknown): OffloadError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(OffloadError);
    return error as OffloadError;
  }
  throw new Error("expected an OffloadError");
}

describe("S-expressions", () => {
  test("what Guix wrote reads and prints back byte for byte (libgcrypt's advanced form)", () => {
    const written = [fixture("signing-key.pub"), fixture("signing-key.sec"), fixture("other-key.pub"), fixture("acl"), quoted, ...signatures];
    expect(signatures.length).toBeGreaterThan(32);
    for (const bytes of written) expect(advancedSexp(parseSexp(bytes)).equals(bytes)).toBe(true);
    // The fixtures cover every encoding libgcrypt picks: tokens, hex, and a quoted string with raw bytes.
    expect(quoted.toString("latin1")).toMatch(/\(r "\\tB[\s\S]*"\)/);
    expect(signatures.some((signature) => /\((r|s) #[0-9A-F]{62}#\)/.test(signature.toString("latin1")))).toBe(true);
  });

  test("the canonical form, and every form of atom libgcrypt reads", () => {
    const parsed = parseSexp('(a "b\\x41\\101\\n\\\r\n" #01 02# |AwQ=| 3:x y (nested-list_1 +.*/:=))');
    expect(canonicalSexp(parsed).toString("latin1")).toBe("(1:a4:bAA\n2:\x01\x022:\x03\x043:x y(13:nested-list_16:+.*/:=))");
    expect(parseSexp(canonicalSexp(parsed))).toEqual(parsed);
    // An atom starting with a digit or holding spaces is a string; a leading 0 byte or control bytes make hex.
    const atoms = (...values: Buffer[]) => advancedSexp(values).toString("latin1");
    expect(
      atoms(
        Buffer.from("1abc"),
        Buffer.from("a b"),
        Buffer.from(""),
        Buffer.from([0, 1]),
        Buffer.from([0x41, 0xa1, 0x22]),
        Buffer.from([0x41, 0x80]),
        Buffer.from([0xa1]),
      ),
    ).toBe('("1abc" "a b" "" #0001# "A\xa1\\"" #4180# #A1#)\n');
  });

  test("malformed input is refused with a position", () => {
    const bad = (text: string, pattern: RegExp) => expect(refusal(() => parseSexp(text)).message).toMatch(pattern);
    bad("(a", /unexpected end/);
    bad('(a "b)', /unterminated quoted string/);
    bad("(a #0#)", /invalid hex/);
    bad("(a 12)", /numbers are not tokens/);
    bad("(a 9:x)", /runs past the end/);
    bad("(a [hint]b)", /display hints/);
    bad("(a) (b)", /trailing data/);
    bad("a", /must start with '\('/);
    bad(`${"(".repeat(100)}${")".repeat(100)}`, /nested deeper/);
  });
});

describe("keys", () => {
  test("Guix's key pair: the secret's public half, and both printed exactly as Guix wrote them", () => {
    expect(keyA.publicKey.equals(parseGuixPublicKey(fixture("signing-key.pub")))).toBe(true);
    expect(keyA.publicKey.toString()).toBe(fixture("signing-key.pub").toString("latin1"));
    expect(keyA.exportSecret()).toBe(fixture("signing-key.sec").toString("latin1"));
  });

  test("a generated pair round-trips and never shows its secret", () => {
    const key = generateGuixKeyPair();
    const again = parseGuixSecretKey(key.exportSecret());
    expect(again.publicKey.equals(key.publicKey)).toBe(true);
    expect(parseGuixPublicKey(key.publicKey.toString()).equals(key.publicKey)).toBe(true);
    const d = /\(d (#[0-9A-F]+#|"[^"]*")\)/.exec(key.exportSecret())![1]!;
    for (const shown of [String(key), `${key}`, inspect(key), JSON.stringify({ key }), inspect({ nested: key })]) expect(shown).not.toContain(d);
  });

  test("keys offload cannot use are refused, saying why", () => {
    expect(refusal(() => parseGuixPublicKey(fixture("signing-key.sec"))).message).toMatch(/SECRET key/);
    expect(refusal(() => parseGuixPublicKey("(public-key (ecc (curve Ed25519) (flags eddsa) (q #00#)))")).message).toMatch(/EdDSA/);
    expect(refusal(() => parseGuixPublicKey("(public-key (rsa (n #00C0#) (e #010001#)))")).message).toMatch(/not an ECC key/);
    expect(refusal(() => parseGuixPublicKey("(public-key (ecc (curve NIST P-256) (q #04#)))")).message).toMatch(/Ed25519 curve/);
    expect(refusal(() => parseGuixPublicKey("name:AAAA")).message).toMatch(/not a Guix key/);
    const mixed = fixture("signing-key.sec")
      .toString("latin1")
      .replace(/\(q #[0-9A-F]+#\)/, `(q #${keyB.q.toString("hex").toUpperCase()}#)`);
    expect(refusal(() => parseGuixSecretKey(mixed)).message).toMatch(/q does not match its d/);
  });

  test("a secret key file others can read is refused; a missing one points to keygen --guix", async () => {
    const file = path.join(dir, "loose.sec");
    await writeFile(file, keyA.exportSecret(), { mode: 0o640 });
    await chmod(file, 0o640);
    await expect(readGuixSecretKeyFile(file)).rejects.toMatchObject({ code: "unsafe-permissions" });
    await expect(readGuixSecretKeyFile(path.join(dir, "missing.sec"))).rejects.toMatchObject({ code: "missing-secret-key", fix: "offload keygen --guix" });
  });
});

describe("signatures", () => {
  test("every signature guix authenticate made verifies, and ours are the same bytes (RFC 6979 nonces)", () => {
    for (const signature of signatures) {
      const hash = signedHashOf(signature);
      expect(checkGuixSignature(signature, hash, "item", [keyB, keyA.publicKey])).toMatchObject({ valid: true });
      expect(signHash(hash, keyA).equals(signature)).toBe(true);
    }
    const quotedKey = parseGuixSecretKey(fixture("quoted-key.sec"));
    expect(signHash(signedHashOf(quoted), quotedKey).equals(quoted)).toBe(true);
    expect(checkGuixSignature(quoted, signedHashOf(quoted), "item", [quotedKey.publicKey])).toMatchObject({ valid: true });
  });

  test("refusals, in Guix's order and with Guix's names", () => {
    const signature = signatures[0]!;
    const hash = signedHashOf(signature);
    const code = (bytes: Buffer | undefined, over: Buffer, acl = [keyA.publicKey]) => {
      const verdict = checkGuixSignature(bytes, over, "/gnu/store/x", acl);
      return verdict.valid ? "valid" : verdict.code;
    };
    expect(code(undefined, hash)).toBe("unsigned");
    expect(code(Buffer.from("(signature (data"), hash)).toBe("corrupt-signature");
    expect(code(Buffer.from("(signature (sig-val (ecdsa (r #01#) (s #01#))))"), hash)).toBe("corrupt-signature");
    expect(code(signature, hash, [keyB])).toBe("unauthorized-key");
    const other = Buffer.from(hash);
    other[0]! ^= 1;
    expect(code(signature, other)).toBe("hash-mismatch");
    // The same signature sexp with the hash swapped: a valid structure whose signature no longer fits.
    const forged = parseSexp(signature);
    (findToken(forged, "hash")![2] as Buffer)[0]! ^= 1;
    expect(code(advancedSexp(forged), other)).toBe("invalid-signature");
    const sValue = findToken(parseSexp(signature), "s")![1] as Buffer;
    const tweaked = parseSexp(signature);
    findToken(tweaked, "s")![1] = Buffer.from(sValue.map((byte, index) => (index === sValue.length - 1 ? byte ^ 1 : byte)));
    expect(code(advancedSexp(tweaked), hash)).toBe("invalid-signature");
  });
});

describe("ACLs", () => {
  test("Guix's ACL reads as its keys and is written back byte for byte", async () => {
    const entries = parseGuixAcl(fixture("acl"), "acl");
    // Guix puts a newly authorized key first: A came with the ACL, then B was authorized.
    expect(entries.map((entry: Sexp) => canonicalSexp(entry))).toEqual([canonicalSexp(keyB.sexp), canonicalSexp(keyA.publicKey.sexp)]);
    expect(formatGuixAcl(entries).equals(fixture("acl"))).toBe(true);
    const file = path.join(dir, "guix-acl");
    expect(await authorizeGuixKey(keyA.publicKey, file)).toBe(true);
    expect(await authorizeGuixKey(keyB, file)).toBe(true);
    expect(await authorizeGuixKey(keyA.publicKey, file)).toBe(false);
    expect((await readFile(file)).equals(fixture("acl"))).toBe(true);
    expect((await readGuixAcl(file)).map((key) => key.id)).toEqual([keyB.id, keyA.publicKey.id]);
  });

  test("a file that is not (acl (entry KEY (tag (guix import))) …) is refused", async () => {
    expect(refusal(() => parseGuixAcl(Buffer.from("(acl (entry (public-key x) (tag (guix export))))"), "f")).code).toBe("invalid-acl");
    expect(refusal(() => parseGuixAcl(Buffer.from("(not-an-acl)"), "f")).code).toBe("invalid-acl");
    const file = path.join(dir, "rsa-acl");
    await writeFile(file, "(acl (entry (public-key (rsa (n #00C0#) (e #010001#))) (tag (guix import))))");
    await expect(readGuixAcl(file)).rejects.toMatchObject({ code: "invalid-acl" });
  });
});

// The sid root's guix, run directly with chroot (no daemon needed), its configuration in the root's /tmp.
(existsSync(`${SID}.stamp`) ? describe : describe.skip)("with the real guix authenticate", () => {
  /** Runs `guix authenticate` with `files` as its configuration directory; `requests` gets that directory's path inside. */
  async function authenticate(files: Record<string, string | Buffer>, requests: (config: string) => string): Promise<Array<{ code: number; text: Buffer }>> {
    const inside = `/tmp/offload-guix-keys-${randomBytes(6).toString("hex")}`;
    const config = path.join(SID, inside);
    await rm(config, { recursive: true, force: true });
    execFileSync("mkdir", ["-m", "700", config]);
    try {
      for (const [name, content] of Object.entries(files)) await writeFile(path.join(config, name), content, { mode: 0o600 });
      const output = execFileSync("chroot", [SID, "env", "-i", "PATH=/usr/bin:/bin", `GUIX_CONFIGURATION_DIRECTORY=${inside}`, "guix", "authenticate"], {
        input: Buffer.from(requests(inside), "latin1"),
        stdio: ["pipe", "pipe", "ignore"],
      });
      return replies(output);
    } finally {
      await rm(config, { recursive: true, force: true });
    }
  }
  const request = (verb: string, ...args: Array<string | Buffer>) =>
    `${verb} ${args.map((arg) => `${Buffer.byteLength(arg, "latin1")}:${Buffer.isBuffer(arg) ? arg.toString("latin1") : arg}`).join(" ")}\n`;

  test("Guix verifies what a key from offload keygen --guix signs, and signs with that key what offload signs", async () => {
    const key: GuixSecretKey = generateGuixKeyPair();
    const hash = createHash("sha256").update(randomBytes(16)).digest();
    const ours = signHash(hash, key);
    const [verified, signed, other] = await authenticate(
      { acl: formatGuixAcl([key.publicKey.sexp]), "offload.sec": key.exportSecret(), "offload.pub": key.publicKey.toString() },
      (config) => request("verify", ours) + request("sign", `${config}/offload.sec`, hash.toString("hex")) + request("verify", signatures[0]!),
    );
    expect(verified).toEqual({ code: 0, text: Buffer.from(hash.toString("hex")) });
    expect(signed!.code).toBe(0);
    expect(signed!.text.equals(ours)).toBe(true);
    // Key A is not in that ACL: Guix refuses, as offload does.
    expect(other!.code).toBe(500);
    expect(other!.text.toString()).toMatch(/unauthorized public key/);
  });
});

describe("offload keygen --guix and authorize --guix", () => {
  test("keygen writes Guix's format (0600/0644), prints the public key, refuses to overwrite", async () => {
    const config = path.join(dir, "config");
    const { stdout } = await runCommand(registerKeys, config, ["keygen", "--guix"]);
    const secretFile = path.join(config, "guix-signing-key.sec");
    const publicFile = path.join(config, "guix-signing-key.pub");
    expect((await stat(secretFile)).mode & 0o777).toBe(0o600);
    expect((await stat(publicFile)).mode & 0o777).toBe(0o644);
    const key = await readGuixSecretKeyFile(secretFile);
    expect(stdout).toBe(key.publicKey.toString());
    expect(await readFile(publicFile, "utf8")).toBe(stdout);
    await expect(runCommand(registerKeys, config, ["keygen", "--guix"])).rejects.toMatchObject({ code: "key-exists" });
    await expect(runCommand(registerKeys, config, ["keygen", "--guix", "--name", "x"])).rejects.toMatchObject({ code: "usage" });
    await runCommand(registerKeys, config, ["keygen", "--guix", "--force"]);
    expect((await readGuixSecretKeyFile(secretFile)).publicKey.equals(key.publicKey)).toBe(false);
    // The Nix pair is another one, untouched.
    expect(existsSync(path.join(config, "signing-key.sec"))).toBe(false);
  });

  test("authorize --guix adds a Guix public key to guix-acl; a Nix key is refused", async () => {
    const config = path.join(dir, "authorize");
    const { stderr } = await runCommand(registerAcl, config, ["authorize", "--guix", path.join(FIXTURES, "other-key.pub")]);
    expect(stderr).toContain(`authorized Guix key ${keyB.id}`);
    expect((await readGuixAcl(path.join(config, "guix-acl"))).map((key) => key.id)).toEqual([keyB.id]);
    const nix = path.join(dir, "nix.pub");
    await writeFile(nix, `host-1:${randomBytes(32).toString("base64")}`);
    await expect(runCommand(registerAcl, config, ["authorize", "--guix", nix])).rejects.toMatchObject({ code: "invalid-key" });
  });
});
