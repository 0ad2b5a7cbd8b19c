// Issue target: for a generated 100-machine config, a cold `offload check --static`
// (nothing cached: bundle + type-check + evaluate + validate, in a fresh process) ≤ 1 s,
// and a cached load ≤ 10 ms on a 2-core machine.
// Run: npm run build && node scripts/run-ts.mjs bench/config-load.ts [--runs N]
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { loadConfig } from "../src/config/load.js";
import { generateKeyPairSync } from "node:crypto";

const runs = Number(process.argv[process.argv.indexOf("--runs") + 1]) || 7;
const root = resolve(import.meta.dirname ?? ".", "..");
const bin = join(process.cwd(), "bin", "offload.js");

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** An ed25519 OpenSSH public key line, as a real fleet's config would hold. */
function hostKeyLine(): string {
  const der = generateKeyPairSync("ed25519").publicKey.export({ format: "der", type: "spki" });
  const raw = der.subarray(der.length - 32);
  const field = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  return `ssh-ed25519 ${Buffer.concat([field(Buffer.from("ssh-ed25519")), field(raw)]).toString("base64")}`;
}

function writeFleet(dir: string, withNode: boolean): string {
  const hosts = Array.from({ length: 100 }, (_, i) => ({ name: `node${String(i).padStart(3, "0")}`, key: hostKeyLine() }));
  const file = join(dir, withNode ? "machines-env.ts" : "machines.ts");
  writeFileSync(
    file,
    `import { buildMachine, localMachine } from "offload";
const hosts: { name: string; key: string }[] = ${JSON.stringify(hosts, null, 1)};
${withNode ? `const user = process.env.OFFLOAD_USER ?? "nix";` : `const user = "nix";`}
export default [
  localMachine({ speed: 2 }),
  ...hosts.map(({ name, key }, i) => buildMachine({
    name: \`\${name}.example.org\`, user, systems: i % 4 === 0 ? ["aarch64-linux"] : ["x86_64-linux", "i686-linux"],
    hostKey: key, parallelBuilds: 1 + (i % 8), speed: 1 + (i % 3) / 2,
    features: i % 5 === 0 ? ["kvm", "big-parallel"] : ["big-parallel"],
    mandatoryFeatures: i === 99 ? ["benchmark"] : [],
  })),
];
`,
    { mode: 0o644 },
  );
  return file;
}

function timeCli(config: string, cacheDir: string): number {
  const started = process.hrtime.bigint();
  execFileSync(process.execPath, [bin, "check", "--static", "--config", config], { env: { ...process.env, OFFLOAD_CACHE_DIR: cacheDir }, stdio: "ignore" });
  return Number(process.hrtime.bigint() - started) / 1e6;
}

const base = join(homedir(), ".cache", "offload-bench");
mkdirSync(base, { recursive: true, mode: 0o755 });
chmodSync(base, 0o755);
const dir = mkdtempSync(join(base, "config-"));
chmodSync(dir, 0o755);
try {
  const rows: [string, string, string][] = [];
  for (const withNode of [false, true]) {
    const config = writeFleet(dir, withNode);
    const label = withNode ? "100 machines, uses process.env" : "100 machines";
    const cold = Array.from({ length: runs }, (_, i) => timeCli(config, join(dir, `cold-${withNode}-${i}`)));
    const warmDir = join(dir, `warm-${withNode}`);
    timeCli(config, warmDir);
    const cachedCli = Array.from({ length: runs }, () => timeCli(config, warmDir));
    // In-process cached load: what the hook pays per start, after node itself has started.
    await loadConfig({ config, cacheDir: warmDir });
    const cachedLoad: number[] = [];
    for (let i = 0; i < 50; i++) {
      const started = process.hrtime.bigint();
      const loaded = await loadConfig({ config, cacheDir: warmDir });
      cachedLoad.push(Number(process.hrtime.bigint() - started) / 1e6);
      if (!loaded.fromCache || loaded.machines.length !== 100) throw new Error("benchmark config did not load from cache");
    }
    rows.push([label, "cold check --static (process)", `${median(cold).toFixed(0)} ms (target ≤ 1000)`]);
    rows.push([label, "cached check --static (process)", `${median(cachedCli).toFixed(0)} ms`]);
    rows.push([label, "cached load (in-process)", `${median(cachedLoad).toFixed(2)} ms (target ≤ 10)`]);
  }
  const width = Math.max(...rows.map((r) => r[0].length + r[1].length)) + 4;
  console.log(`config load, median of ${runs} runs (in-process: 50), ${new Date().toISOString().slice(0, 10)}`);
  for (const [config, what, value] of rows) console.log(`${`${config}: ${what}`.padEnd(width)} ${value}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
void root;
