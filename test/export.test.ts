// offload export: a machines file the real Nix 2.8 reads, a NixOS module the real Nix
// evaluates, and round trips through offload import: import(export(x)) ≡ x for every field
// Nix can express.
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { BuildMachine } from "../types/index.js";
import { loadConfig } from "../src/config/load.js";
import { runCli } from "./support/cli.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

let dir: string;
let config: string;

/** Hosts under .invalid never resolve: a Nix that picks one fails at once, naming it. */
const fleet = (dir: string) =>
  `import { buildMachine, localMachine } from "offload";
const key = (n: number) => ${JSON.stringify(join("KEYDIR", "id_"))} + n;
export default [
  localMachine({ speed: 3 }),
  buildMachine({
    name: "x86.offload-export.invalid", port: 2222, user: "nix", systems: ["x86_64-linux", "i686-linux"],
    hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS root@x86",
    privateKey: key(1), parallelBuilds: 8, speed: 2.5, features: ["kvm", "big-parallel"], remoteStore: "/srv/nix chroot",
  }),
  buildMachine({ name: "arm.offload-export.invalid", user: "builder", systems: ["aarch64-linux"], parallelBuilds: 4, speed: 1.5, privateKey: key(2) }),
  buildMachine({
    name: "bench.offload-export.invalid", systems: ["x86_64-linux"], features: ["kvm"], mandatoryFeatures: ["benchmark"],
    signingKey: "builder2-1:hyLlqmGp33/OsSj4Go99YSZIwgZ+031/EtD2Z9Ug87E=", overloadThreshold: null, useSubstitutes: true,
  }),
  buildMachine({ name: "old.offload-export.invalid", systems: ["x86_64-linux"], enabled: false }),
];
`.replaceAll("KEYDIR", dir);

beforeAll(() => {
  dir = makeSafeDir("export");
  for (const n of [1, 2]) writeFileSync(join(dir, `id_${n}`), "-----BEGIN OPENSSH PRIVATE KEY-----\n", { mode: 0o600 });
  config = join(dir, "machines.ts");
  writeFileSync(config, fleet(dir), { mode: 0o644 });
});
afterAll(() => removeDir(dir));

const env = () => ({ OFFLOAD_CACHE_DIR: join(dir, "cache") });

async function exported(args: string[]): Promise<string> {
  const result = await runCli(["export", "--config", config, ...args], env());
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  return result.stdout;
}

/** Imports `text` (a file of `format`) and loads the machines.ts it becomes. */
async function reimported(text: string, name: string, format: string): Promise<BuildMachine[]> {
  const input = join(dir, name);
  writeFileSync(input, text);
  const out = join(dir, `${name}.ts`);
  const result = await runCli(["import", input, "--from", format, "--out", out, "--force"], env());
  expect(result.code).toBe(0);
  return (await loadConfig({ config: out, cacheDir: false })).machines;
}

const REPRESENTABLE = [
  "name",
  "port",
  "user",
  "systems",
  "hostKey",
  "privateKey",
  "parallelBuilds",
  "speed",
  "features",
  "mandatoryFeatures",
  "remoteStore",
] as const;
const representable = (machines: readonly BuildMachine[]) =>
  machines.filter((m) => m.enabled).map((m) => Object.fromEntries(REPRESENTABLE.map((field) => [field, m[field]])));

test("round trip through a Nix ≥ 2.31 machines file: every field Nix has comes back", async () => {
  const original = (await loadConfig({ config, cacheDir: false })).machines;
  const text = await exported(["--nix-machines", "--nix-version", "2.31"]);
  expect(text).toContain("ssh://nix@x86.offload-export.invalid:2222?remote-store=/srv/nix%20chroot x86_64-linux,i686-linux");
  expect(text).toContain("# bench.offload-export.invalid: signingKey builder2-1:");
  expect(text).toContain("# ssh://old.offload-export.invalid x86_64-linux");
  expect(representable(await reimported(text, "machines-2.31", "nix"))).toEqual(representable(original));
});

test("for Nix 2.8: no port syntax (an ssh_config alias instead), whole speeds, and no ';' in comments", async () => {
  const text = await exported(["--nix-machines", "--nix-version", "2.8"]);
  expect(text).toContain(
    '# x86.offload-export.invalid: port 2222: Nix 2.8 has no port syntax (2.31 added ssh://host:port), so give root\'s ssh_config "Host x86.offload-export.invalid" with "Port 2222"',
  );
  expect(text).toContain("# x86.offload-export.invalid: speed 2.5 rounded to 3: whole numbers only here");
  expect(text).toMatch(/^ssh:\/\/nix@x86\.offload-export\.invalid\?remote-store=\S+ x86_64-linux,i686-linux \S+ 8 3 kvm,big-parallel - c3NoLWVk\S+$/m);
  // Nix 2.8 splits at ";" before it strips "#" comments.
  expect(text.split("\n").filter((line) => line.startsWith("#") && line.includes(";"))).toEqual([]);
});

test("the real Nix 2.8 reads the exported machines file and picks the machine we expect", async () => {
  const machines = join(dir, "machines-2.8");
  writeFileSync(machines, await exported(["--nix-machines", "--nix-version", "2.8"]));
  const nixBuild = spawnSync(
    "nix-build",
    [
      "--no-out-link",
      "-E",
      `derivation { name = "offload-export-${process.pid}"; system = "aarch64-linux"; builder = "/bin/sh"; args = [ "-c" "echo" ]; }`,
      "--max-jobs",
      "0",
      "--builders",
      `@${machines}`,
      "--option",
      "substituters",
      "",
      // Nix's own build-remote, whatever nix.conf says: it is what parses the machines file.
      "--option",
      "build-hook",
      "/usr/libexec/nix/build-remote",
    ],
    { encoding: "utf8", timeout: 60_000 },
  );
  expect(nixBuild.stderr).not.toContain("bad machine specification");
  expect(nixBuild.stderr).toContain("3 available machines:");
  expect(nixBuild.stderr).toContain("(x86_64-linux, i686-linux, 8, big-parallel, kvm, )");
  expect(nixBuild.stderr).toContain("(x86_64-linux, 1, kvm, benchmark)");
  expect(nixBuild.stderr).toContain("cannot build on 'ssh://builder@arm.offload-export.invalid'");
});

test("--nixos: a module the real Nix evaluates, imported back as nix.buildMachines JSON", async () => {
  const original = (await loadConfig({ config, cacheDir: false })).machines;
  const module = join(dir, "build-machines.nix");
  writeFileSync(module, await exported(["--nixos", "--nix-version", "2.31"]));
  const evaluated = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", "-E", `(import ${module}).nix.buildMachines`], { encoding: "utf8" });
  expect(evaluated.stderr).toBe("");
  const json = JSON.parse(evaluated.stdout) as { hostName: string; speedFactor: number }[];
  expect(json.map((m) => [m.hostName, m.speedFactor])).toEqual([
    ["x86.offload-export.invalid:2222", 3],
    ["arm.offload-export.invalid", 2],
    ["bench.offload-export.invalid", 1],
  ]);
  // NixOS's speedFactor is an integer and it has no remote-store option: those two differ, all else returns.
  const expected = representable(original).map((m) => ({ ...m, speed: Math.round(m.speed as number), remoteStore: undefined }));
  expect(representable(await reimported(evaluated.stdout, "buildMachines.json", "nixos-json"))).toEqual(expected);
});

test("say what to export", async () => {
  const result = await runCli(["export", "--config", config], env());
  expect(result.code).toBe(1);
  expect(result.stderr).toMatch(/^offload: say what to export\n {2}fix: offload export --nix-machines/);
  const both = await runCli(["export", "--config", config, "--nix-machines", "--nixos"], env());
  expect(both.code).toBe(1);
  expect(both.stderr).toContain("cannot be used with option '--nixos'");
});
