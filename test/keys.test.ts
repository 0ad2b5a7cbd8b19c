import { execFileSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { inspect } from "node:util";
import { generateKeyPair, parsePublicKey, parseSecretKey, readSecretKeyFile, SecretKey } from "../src/nix/keys.js";
import { OffloadError } from "../src/errors.js";
import { registerKeys } from "../src/cli/keys.js";
import { runCommand } from "./support/run-command.js";

// RFC 8032 §7.1, test 1: proves the raw seed/public/signature layout, not just round trips.
const SEED = Buffer.from("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", "hex");
const PUBLIC = Buffer.from("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "hex");
const SIGNATURE_OF_EMPTY = Buffer.from(
  "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
  "hex",
);

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "offload-keys-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function hasNix(): boolean {
  try {
    execFileSync("nix-store", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

describe("keys", () => {
  test("RFC 8032 vector: public half, secret layout and deterministic signature", () => {
    const key = new SecretKey("rfc-1", SEED);
    expect(key.publicKey.bytes).toEqual(PUBLIC);
    expect(key.signRaw(Buffer.alloc(0))).toEqual(SIGNATURE_OF_EMPTY);
    expect(key.sign("")).toBe(`rfc-1:${SIGNATURE_OF_EMPTY.toString("base64")}`);
    expect(key.exportSecret()).toBe(`rfc-1:${Buffer.concat([SEED, PUBLIC]).toString("base64")}`);
    expect(key.publicKey.toString()).toBe(`rfc-1:${PUBLIC.toString("base64")}`);
    expect(key.publicKey.verify(Buffer.alloc(0), SIGNATURE_OF_EMPTY)).toBe(true);
    expect(key.publicKey.verify(Buffer.from("x"), SIGNATURE_OF_EMPTY)).toBe(false);
  });

  test("generate, format and parse round trip", () => {
    const key = generateKeyPair("host-1");
    const parsed = parseSecretKey(key.exportSecret());
    expect(parsed.name).toBe("host-1");
    expect(parsed.publicKey.equals(key.publicKey)).toBe(true);
    expect(parsePublicKey(key.publicKey.toString()).equals(key.publicKey)).toBe(true);
    const signature = key.signRaw("data");
    expect(parsed.publicKey.verify("data", signature)).toBe(true);
    // Trailing newline from a hand edit is tolerated.
    expect(parsePublicKey(`${key.publicKey.toString()}\n`).equals(key.publicKey)).toBe(true);
  });

  test("a secret key never prints its secret", () => {
    const key = generateKeyPair("host-1");
    const secret = key.exportSecret().split(":")[1]!;
    for (const shown of [String(key), `${key}`, inspect(key), JSON.stringify({ key }), inspect({ nested: key })]) {
      expect(shown).not.toContain(secret);
      expect(shown).not.toContain(secret.slice(0, 43));
    }
  });

  test("malformed keys are refused with clear messages", () => {
    const key = generateKeyPair("host-1");
    const expectError = (fn: () => unknown, pattern: RegExp) => {
      try {
        fn();
      } catch (error) {
        expect(error).toBeInstanceOf(OffloadError);
        expect((error as Error).message).toMatch(pattern);
        return error as OffloadError;
      }
      throw new Error("expected an error");
    };
    expectError(() => parsePublicKey("nocolon"), /NAME:BASE64/);
    expectError(() => parsePublicKey(":abcd"), /NAME:BASE64/);
    expectError(() => parsePublicKey("name:"), /NAME:BASE64/);
    expectError(() => parsePublicKey("name:!!!!"), /not valid base64/);
    expectError(() => parsePublicKey("na me:AAAA"), /invalid key name/);
    expectError(() => parsePublicKey("name:AAAA"), /3 bytes, expected 32/);
    const asPublic = expectError(() => parsePublicKey(key.exportSecret()), /SECRET key/);
    expect(asPublic.message).not.toContain(key.exportSecret().split(":")[1]);
    expectError(() => parseSecretKey(key.publicKey.toString()), /32 bytes, expected 64/);
    // Public half swapped for another key's: corrupt.
    const other = generateKeyPair("host-1");
    const raw = Buffer.from(key.exportSecret().split(":")[1]!, "base64");
    const mixed = `host-1:${Buffer.concat([raw.subarray(0, 32), other.publicKey.bytes]).toString("base64")}`;
    const corrupt = expectError(() => parseSecretKey(mixed), /does not match its seed/);
    expect(corrupt.message).not.toContain(mixed.split(":")[1]);
  });

  test("a group/other-readable secret key file is refused with the chmod fix", async () => {
    const file = path.join(dir, "loose.sec");
    await writeFile(file, generateKeyPair("host-1").exportSecret(), { mode: 0o600 });
    await chmod(file, 0o640);
    await expect(readSecretKeyFile(file)).rejects.toMatchObject({
      code: "unsafe-permissions",
      fix: `chmod 600 ${file}`,
    });
    await chmod(file, 0o600);
    await expect(readSecretKeyFile(file)).resolves.toBeInstanceOf(SecretKey);
    await expect(readSecretKeyFile(path.join(dir, "missing.sec"))).rejects.toMatchObject({
      code: "missing-secret-key",
      fix: "offload keygen",
    });
  });

  (hasNix() ? test : test.skip)("reads keys made by nix-store --generate-binary-cache-key", async () => {
    const sec = path.join(dir, "nix.sec");
    const pub = path.join(dir, "nix.pub");
    execFileSync("nix-store", ["--generate-binary-cache-key", "nixhost-1", sec, pub]);
    const secret = await readSecretKeyFile(sec);
    const publicText = await readFile(pub, "utf8");
    expect(secret.name).toBe("nixhost-1");
    expect(secret.publicKey.toString()).toBe(publicText);
    expect(secret.exportSecret()).toBe(await readFile(sec, "utf8"));
  });

  test("offload keygen writes 0600/0644 files, refuses to overwrite without --force", async () => {
    const config = path.join(dir, "config");
    const first = await runCommand(registerKeys, config, ["keygen", "--name", "testhost-1"]);
    const secretFile = path.join(config, "signing-key.sec");
    const publicFile = path.join(config, "signing-key.pub");
    expect((await stat(secretFile)).mode & 0o777).toBe(0o600);
    expect((await stat(publicFile)).mode & 0o777).toBe(0o644);
    const secret = await readSecretKeyFile(secretFile);
    const publicText = await readFile(publicFile, "utf8");
    expect(publicText).toBe(secret.publicKey.toString());
    expect(publicText.startsWith("testhost-1:")).toBe(true);
    // Only the public key is printed.
    expect(first.stdout).toBe(`${publicText}\n`);
    expect(first.stdout + first.stderr).not.toContain(secret.exportSecret().split(":")[1]);

    await expect(runCommand(registerKeys, config, ["keygen"])).rejects.toMatchObject({
      code: "key-exists",
      fix: expect.stringContaining("--force"),
    });
    expect(await readFile(publicFile, "utf8")).toBe(publicText);

    await runCommand(registerKeys, config, ["keygen", "--force"]);
    const replaced = await readSecretKeyFile(secretFile);
    expect(replaced.publicKey.equals(secret.publicKey)).toBe(false);
    expect(replaced.name).toMatch(/-1$/);
  });

  test("offload keygen refuses a bad name", async () => {
    const config = path.join(dir, "config-bad");
    await mkdir(config);
    await expect(runCommand(registerKeys, config, ["keygen", "--name", "a:b"])).rejects.toMatchObject({
      code: "invalid-key-name",
    });
  });
});
