// Our keys and signatures against the real Nix 2.8 on this machine, both directions.
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { registerKeys } from "../src/cli/keys.js";
import { generateKeyPair, readPublicKeyFile, readSecretKeyFile } from "../src/nix/keys.js";
import { signPath, verifyPathSignatures } from "../src/nix/signature.js";
import { buildTestClosure, deletePaths, hasNix, nix, nixPathInfo } from "./support/nix.js";
import { runCommand } from "./support/run-command.js";

const describeNix = hasNix() ? describe : describe.skip;

describeNix("interop with Nix 2.8", () => {
  let dir: string;
  const built: string[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "offload-interop-"));
  });
  afterAll(async () => {
    deletePaths(built.reverse());
    await rm(dir, { recursive: true, force: true });
  });

  function fresh() {
    const closure = buildTestClosure("interop");
    built.push(closure.lib, closure.app);
    return closure;
  }

  test("our key: Nix signs exactly as we do, and `nix store verify` accepts our key", async () => {
    const config = path.join(dir, "ours");
    await runCommand(registerKeys, config, ["keygen", "--name", "offload-test-1"]);
    const secretFile = path.join(config, "signing-key.sec");
    const secret = await readSecretKeyFile(secretFile);
    const publicText = await readFile(path.join(config, "signing-key.pub"), "utf8");
    const { app, lib } = fresh();

    const info = nixPathInfo(app);
    expect(info.references).toEqual([lib]);
    expect(info.contentAddress).toBeUndefined(); // input-addressed: nix store verify really needs a signature
    const ours = signPath(info, secret);

    const unsigned = nix(["store", "verify", "--trusted-public-keys", publicText, "--sigs-needed", "1", app]);
    expect(unsigned.status).not.toBe(0);

    const signed = nix(["store", "sign", "--key-file", secretFile, app]);
    expect(signed.status).toBe(0);
    expect(nixPathInfo(app).signatures).toEqual([ours]);

    const verified = nix(["store", "verify", "--trusted-public-keys", publicText, "--sigs-needed", "1", app]);
    expect(verified.stderr).not.toMatch(/untrusted/);
    expect(verified.status).toBe(0);

    // A different key under the same name does not satisfy Nix either.
    const impostor = generateKeyPair("offload-test-1").publicKey.toString();
    const refused = nix(["store", "verify", "--trusted-public-keys", impostor, "--sigs-needed", "1", app]);
    expect(refused.status).not.toBe(0);
  });

  test("Nix's key and signature: our verifier accepts it, tampered fields fail", async () => {
    const secretFile = path.join(dir, "nix.sec");
    const publicFile = path.join(dir, "nix.pub");
    execFileSync("nix-store", ["--generate-binary-cache-key", "nix-made-1", secretFile, publicFile]);
    const nixKey = await readPublicKeyFile(publicFile);
    const { app, lib } = fresh();
    expect(nix(["store", "sign", "--key-file", secretFile, app]).status).toBe(0);

    const info = nixPathInfo(app);
    expect(info.signatures).toHaveLength(1);
    const verdict = verifyPathSignatures(info, [nixKey]);
    expect(verdict.valid).toBe(true);

    const otherHash = nixPathInfo(lib).narHash;
    expect(verifyPathSignatures({ ...info, narHash: otherHash }, [nixKey])).toMatchObject({
      valid: false,
      code: "invalid-signature",
    });
    expect(verifyPathSignatures({ ...info, references: [] }, [nixKey])).toMatchObject({
      valid: false,
      code: "invalid-signature",
    });
    expect(verifyPathSignatures({ ...info, narSize: info.narSize + 8 }, [nixKey]).valid).toBe(false);
    expect(verifyPathSignatures(info, [generateKeyPair("x-1").publicKey])).toMatchObject({
      valid: false,
      code: "unknown-key",
    });
  });

  test("fingerprint data agrees with nix-store --query", () => {
    const { app, lib } = fresh();
    const info = nixPathInfo(app);
    const hash = execFileSync("nix-store", ["--query", "--hash", app], { encoding: "utf8" }).trim();
    const size = execFileSync("nix-store", ["--query", "--size", app], { encoding: "utf8" }).trim();
    const refs = execFileSync("nix-store", ["--query", "--references", app], { encoding: "utf8" }).trim();
    const key = generateKeyPair("q-1");
    const signature = signPath(info, key);
    // The fingerprint carries the hash exactly as nix-store prints it ("sha256:<nix32>").
    const fingerprint = `1;${app};${hash};${size};${refs}`;
    expect(key.publicKey.verify(fingerprint, Buffer.from(signature.split(":")[1]!, "base64"))).toBe(true);
    expect(refs).toBe(lib);
  });
});
