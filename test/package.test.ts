// offload as a package: `npm pack` builds dist/ and makes a tarball that installs with
// `npm install -g`, whose binaries work from any directory. Packed from a copy of the
// sources, so rebuilding dist/ cannot disturb tests running beside this one.
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { cpSync, existsSync, readFileSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const { version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };

let dir: string;
let prefix: string;
beforeAll(() => {
  dir = makeSafeDir("package");
  prefix = join(dir, "prefix");
});
afterAll(() => removeDir(dir));

function run(command: string, args: string[], options: { cwd: string; input?: string; env?: NodeJS.ProcessEnv }): SpawnSyncReturns<string> {
  return spawnSync(command, args, {
    encoding: "utf8",
    timeout: 170_000,
    cwd: options.cwd,
    input: options.input ?? "",
    env: { ...process.env, ...options.env },
  });
}

test("npm pack, npm install -g, and the binaries run from /", () => {
  const source = join(dir, "source");
  for (const entry of ["package.json", "package-lock.json", "README.md", "bin", "src", "types", "config-examples", "scripts"]) {
    cpSync(join(ROOT, entry), join(source, entry), { recursive: true });
  }
  symlinkSync(join(ROOT, "node_modules"), join(source, "node_modules"));

  expect(existsSync(join(source, "dist"))).toBe(false);
  const pack = run("npm", ["pack", "--pack-destination", dir], { cwd: source });
  expect(pack.status).toBe(0);
  const tarball = join(dir, `offload-${version}.tgz`);
  expect(existsSync(tarball)).toBe(true);
  // dist/ was not copied: `npm pack` built it (the prepare script).
  expect(existsSync(join(source, "dist", "cli.js"))).toBe(true);

  const install = run("npm", ["install", "-g", "--prefix", prefix, "--prefer-offline", "--no-audit", "--no-fund", tarball], { cwd: dir });
  expect(install.stderr).not.toMatch(/npm error/);
  expect(install.status).toBe(0);

  const bin = (name: string) => join(prefix, "bin", name);
  expect(run(bin("offload"), ["--version"], { cwd: "/" }).stdout).toBe(`${version}\n`);
  expect(run(bin("offload"), ["import", "--help"], { cwd: "/" }).stdout).toContain("Example");
  // The hook speaks Nix's protocol on stdin: with nothing there it says so, the way the daemon would show it.
  const hook = run(bin("offload-hook"), [], { cwd: "/" });
  expect(hook.stderr).toContain("offload: unexpected end of stream while reading the settings marker");
  expect(hook.status).toBe(1);
  // guix-daemon's entry point resolves the installed package through npm's bin link.
  const guixHook = run(bin("offload-guix"), ["offload"], { cwd: "/" });
  expect(guixHook.stderr).toContain("expected SYSTEM MAX-SILENT-TIME PRINT-BUILD-TRACE BUILD-TIMEOUT");
  expect(guixHook.status).toBe(1);

  // A config through the installed pipeline: esbuild, TypeScript and the shipped types resolve from the package.
  const example = join(prefix, "lib", "node_modules", "offload", "config-examples", "mixed-arch-features.ts");
  const check = run(bin("offload"), ["check", "--static", "--config", example], { cwd: "/", env: { OFFLOAD_CACHE_DIR: join(dir, "cache") } });
  expect(check.stderr).toBe("");
  expect(check.stdout).toContain("4 machines");
}, 180_000);
