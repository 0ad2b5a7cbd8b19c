import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { registerAcl } from "../src/cli/acl.js";
import { OffloadError } from "../src/errors.js";
import { generateKeyPair } from "../src/nix/keys.js";
import { authorizeKey, deauthorizeKey, readAcl } from "../src/store/acl.js";
import { runCommand } from "./support/run-command.js";

let root: string;
let counter = 0;
beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "offload-acl-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function freshDir(): Promise<string> {
  const dir = path.join(root, `c${counter++}`);
  await mkdir(dir, { mode: 0o755 });
  return dir;
}

function runCli(configDir: string, args: string[]) {
  return runCommand(registerAcl, configDir, args);
}

describe("ACL file", () => {
  test("a missing ACL authorizes nothing", async () => {
    expect(await readAcl(path.join(await freshDir(), "acl"))).toEqual([]);
  });

  test("authorize is idempotent, keeps comments, writes 0644; deauthorize removes", async () => {
    const file = path.join(await freshDir(), "acl");
    const a = generateKeyPair("a-1").publicKey;
    const b = generateKeyPair("b-1").publicKey;
    expect(await authorizeKey(a, file)).toBe(true);
    expect(await authorizeKey(a, file)).toBe(false);
    await writeFile(file, `${await readFile(file, "utf8")}\n# builder b, added by hand\n`);
    expect(await authorizeKey(b, file)).toBe(true);
    expect((await readAcl(file)).map(String)).toEqual([a.toString(), b.toString()]);
    expect((await stat(file)).mode & 0o777).toBe(0o644);
    expect(await readFile(file, "utf8")).toContain("# builder b, added by hand\n");

    expect((await deauthorizeKey("a-1", file)).map(String)).toEqual([a.toString()]);
    expect(await deauthorizeKey("a-1", file)).toEqual([]);
    expect((await readAcl(file)).map(String)).toEqual([b.toString()]);
    expect(await readFile(file, "utf8")).toContain("# builder b, added by hand\n");
  });

  test("a second, different key with a known name is refused", async () => {
    const file = path.join(await freshDir(), "acl");
    await authorizeKey(generateKeyPair("a-1").publicKey, file);
    await expect(authorizeKey(generateKeyPair("a-1").publicKey, file)).rejects.toMatchObject({
      code: "acl-name-conflict",
      fix: expect.stringContaining("offload deauthorize a-1"),
    });
  });

  test("a malformed line is reported with its position", async () => {
    const file = path.join(await freshDir(), "acl");
    await writeFile(file, `# keys\n${generateKeyPair("a-1").publicKey}\n  garbage\n`, { mode: 0o644 });
    const error = (await readAcl(file).catch((e: unknown) => e)) as OffloadError;
    expect(error).toBeInstanceOf(OffloadError);
    expect(error.code).toBe("invalid-acl");
    expect(error.location).toEqual({ file, line: 3, column: 3 });
    expect(error.message).toMatch(/not a Nix public key/);
  });

  test("duplicate names with different keys in a hand-edited ACL are refused", async () => {
    const file = path.join(await freshDir(), "acl");
    await writeFile(file, `${generateKeyPair("a-1").publicKey}\n${generateKeyPair("a-1").publicKey}\n`, { mode: 0o644 });
    await expect(readAcl(file)).rejects.toMatchObject({ code: "invalid-acl", location: { line: 2 } });
  });

  test("an ACL (or its directory) writable by group or others is refused with the fix", async () => {
    const dir = await freshDir();
    const file = path.join(dir, "acl");
    await authorizeKey(generateKeyPair("a-1").publicKey, file);
    await chmod(file, 0o664);
    await expect(readAcl(file)).rejects.toMatchObject({ code: "unsafe-permissions", fix: `chmod go-w ${file}` });
    await chmod(file, 0o644);
    await chmod(dir, 0o777);
    await expect(readAcl(file)).rejects.toMatchObject({ code: "unsafe-permissions", fix: `chmod go-w ${dir}` });
    await chmod(dir, 0o755);
    expect(await readAcl(file)).toHaveLength(1);
  });
});

describe("offload authorize / deauthorize / acl", () => {
  test("authorize FILE, list, deauthorize", async () => {
    const dir = await freshDir();
    const key = generateKeyPair("builder-1").publicKey;
    const keyFile = path.join(dir, "builder.pub");
    await writeFile(keyFile, key.toString());

    expect((await runCli(dir, ["authorize", keyFile])).stderr).toMatch(/authorized builder-1/);
    expect((await runCli(dir, ["authorize", keyFile])).stderr).toMatch(/already authorized: builder-1/);
    expect((await runCli(dir, ["acl"])).stdout).toBe(`builder-1\t${key}\n`);
    expect((await runCli(dir, ["deauthorize", "builder-1"])).stderr).toMatch(/removed builder-1/);
    const listed = await runCli(dir, ["acl"]);
    expect(listed.stdout).toBe("");
    expect(listed.stderr).toMatch(/no keys authorized/);
    await expect(runCli(dir, ["deauthorize", "builder-1"])).rejects.toMatchObject({ code: "not-authorized" });
  });

  test("authorize of a missing file is a clear error", async () => {
    const dir = await freshDir();
    await expect(runCli(dir, ["authorize", path.join(dir, "nope.pub")])).rejects.toMatchObject({
      code: "not-found",
      message: expect.stringContaining("does not exist"),
    });
  });

  test("authorize refuses a secret key without echoing it", async () => {
    const dir = await freshDir();
    const secret = generateKeyPair("builder-1");
    const keyFile = path.join(dir, "oops.sec");
    await writeFile(keyFile, secret.exportSecret(), { mode: 0o600 });
    const error = (await runCli(dir, ["authorize", keyFile]).catch((e: unknown) => e)) as OffloadError;
    expect(error.message).toMatch(/SECRET key/);
    expect(error.message).not.toContain(secret.exportSecret().split(":")[1]);
    expect(await readAcl(path.join(dir, "acl"))).toEqual([]);
  });
});
