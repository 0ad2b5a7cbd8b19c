// bin/offload-guix against guix-daemon's side of the exchange, played line by line: how it is
// started, what it replies with no Guix machine or only a machine that is down, how a broken
// config reaches the person building (accepted, then the reason), and that every other guix
// subcommand goes to the real guix.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseGuixHookArguments } from "../src/hook/guix.js";
import { PACKAGE_ROOT } from "../src/package-root.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const GUIX_HOOK = join(PACKAGE_ROOT, "bin", "offload-guix");
const DRV = "/gnu/store/0mym5imlj8bclbwws3sf3d10gskmaqv0-leaf.drv";
const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS";

let dir: string;
let clientKey: string;
beforeAll(() => {
  dir = makeSafeDir("guix-hook-protocol");
  clientKey = join(dir, "client_ed25519");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", clientKey]);
});
afterAll(() => removeDir(dir));

function setup(name: string, machines: string): NodeJS.ProcessEnv {
  const configDir = join(dir, name);
  mkdirSync(configDir, { mode: 0o755 });
  writeFileSync(join(configDir, "machines.ts"), `import { buildMachine } from "offload";\nexport default [\n${machines}\n];\n`, { mode: 0o644 });
  execFileSync(process.execPath, [join(PACKAGE_ROOT, "bin", "offload.js"), "keygen", "--guix"], { env: { ...process.env, OFFLOAD_CONFIG_DIR: configDir } });
  return { OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(configDir, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") };
}

/** Runs `offload-guix offload …` as guix-daemon does, writing `lines` (each after the previous reply); returns stderr. */
function exchange(
  env: NodeJS.ProcessEnv,
  lines: string[],
  args = ["x86_64-linux", "3600", "false", "86400"],
): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const hook = spawn(GUIX_HOOK, ["offload", ...args], { env: { ...process.env, ...env }, stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    let sent = 0;
    const send = () => {
      if (sent < lines.length) hook.stdin.write(`${lines[sent++]}\n`);
      else hook.stdin.end();
    };
    hook.stderr.on("data", (chunk: Buffer) => {
      const before = (stderr.match(/^# /gm) ?? []).length;
      stderr += chunk.toString();
      // The next line goes once the hook has replied to the last (after accept: both lines at once).
      const replies = stderr.match(/^# \w+$/gm) ?? [];
      for (let i = before; i < replies.length; i++) {
        if (replies[i] === "# accept") {
          send();
          send();
        }
        send();
      }
    });
    hook.on("error", reject);
    hook.on("close", (status) => resolve({ status, stderr }));
    send();
  });
}

const down = (name: string, extra = "") =>
  `  buildMachine({ name: "${name}", host: "127.0.0.1", port: 9, daemon: "guix", systems: ["x86_64-linux"], hostKey: "${HOST_KEY}", privateKey: "${clientKey}", connectTimeout: 2${extra} }),`;

test("the daemon's arguments: SYSTEM MAX-SILENT-TIME PRINT-BUILD-TRACE BUILD-TIMEOUT, as Guix 1.5 and older daemons pass them", () => {
  expect(parseGuixHookArguments(["x86_64-linux", "3600", "false", "86400"])).toEqual({
    system: "x86_64-linux",
    maxSilentTime: 3600,
    printBuildTrace: false,
    buildTimeout: 86400,
  });
  expect(parseGuixHookArguments(["aarch64-linux", "0", "1", "0"])).toEqual({
    system: "aarch64-linux",
    maxSilentTime: 0,
    printBuildTrace: true,
    buildTimeout: 0,
  });
  expect(() => parseGuixHookArguments(["x86_64-linux"])).toThrow(/expected SYSTEM MAX-SILENT-TIME PRINT-BUILD-TRACE BUILD-TIMEOUT/);
});

test("no Guix machine (only Nix ones): every build is declined, and the hook ends with its input", async () => {
  const env = setup("nix-only", `  buildMachine({ name: "nixbox", systems: ["x86_64-linux"], hostKey: "${HOST_KEY}" }),`);
  const { status, stderr } = await exchange(env, [`1 x86_64-linux ${DRV} `, `0 x86_64-linux ${DRV} kvm`]);
  expect(stderr).toBe("# decline\n# decline\n");
  expect(status).toBe(0);
});

test("a Guix machine that is down: the daemon that cannot build itself is told why, with the fix", async () => {
  const env = setup("down", down("gdown"));
  const { status, stderr } = await exchange(env, [`0 x86_64-linux ${DRV} `]);
  expect(stderr).toMatch(/^offload: cannot build on gdown: .*127\.0\.0\.1/m);
  expect(stderr).toMatch(/^# (postpone|decline)$/m);
  expect(status).toBe(0);
});

test("a mistake in machines.ts fails the build it is about with offload's message, never a bad hook reply", async () => {
  const env = setup("typo", down("gtypo", ", parallelBuild: 2"));
  const { status, stderr } = await exchange(env, [
    `1 x86_64-linux ${DRV} `,
    `${DRV} /gnu/store/aaaa-input`,
    "/gnu/store/0mym5imlj8bclbwws3sf3d10gskmaqv0-leaf",
  ]);
  expect(stderr).toMatch(/^# accept$/m);
  expect(stderr).toMatch(/^offload: .*machines.ts does not type-check\n.*Did you mean to write 'parallelBuilds'\?/m);
  expect(stderr).not.toMatch(/at .*\.js:\d+/);
  expect(status).toBe(1);
});

test("every other subcommand goes to the real guix ($OFFLOAD_GUIX), which must not be offload-guix itself", () => {
  const fake = join(dir, "fake-guix");
  writeFileSync(fake, '#!/bin/sh\necho "real guix: $*"\n', { mode: 0o755 });
  expect(execFileSync(GUIX_HOOK, ["authenticate", "sign", "x"], { env: { ...process.env, OFFLOAD_GUIX: fake }, encoding: "utf8" })).toBe(
    "real guix: authenticate sign x\n",
  );
  const loop = spawnSync(GUIX_HOOK, ["gc"], { env: { ...process.env, OFFLOAD_GUIX: GUIX_HOOK }, encoding: "utf8" });
  expect(loop.status).toBe(1);
  expect(loop.stderr).toContain("is offload-guix itself");
});
