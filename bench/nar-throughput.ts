// NAR throughput: our dumpPath (+ sha256) against `nix-store --dump DIR | sha256sum` on a
// tree of one big file and 10,000 small ones (default 1 GiB in total).
// Usage: node scripts/run-ts.mjs bench/nar-throughput.ts [--size-mib N]
import { spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { dumpPath, narHashOf } from "../src/nix/nar.js";

const MIB = 1024 * 1024;
const SMALL_FILES = 10_000;
const RUNS = 3;

function parseArgs(): { sizeMiB: number } {
  const args = process.argv.slice(2);
  const at = args.indexOf("--size-mib");
  const sizeMiB = at === -1 ? 1024 : Number(args[at + 1]);
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1) {
    console.error("usage: node scripts/run-ts.mjs bench/nar-throughput.ts [--size-mib N]  (N a positive integer)");
    process.exit(2);
  }
  return { sizeMiB };
}

/** One big file and SMALL_FILES small ones (sizes 0..2×average, 100 per directory); returns the bytes written. */
function buildTree(root: string, totalBytes: number): number {
  const average = Math.min(4096, Math.floor((totalBytes * 0.1) / SMALL_FILES));
  const block = randomFillSync(Buffer.alloc(2 * average + 1));
  let written = 0;
  for (let i = 0; i < SMALL_FILES; i++) {
    const dir = join(root, "small", String(Math.floor(i / 100)).padStart(3, "0"));
    if (i % 100 === 0) mkdirSync(dir, { recursive: true });
    const size = (i * 7919) % (2 * average + 1);
    writeFileSync(join(dir, `f${i}`), block.subarray(0, size), { mode: i % 10 === 0 ? 0o755 : 0o644 });
    written += size;
  }
  const chunk = randomFillSync(Buffer.alloc(MIB));
  const fd = openSync(join(root, "big"), "w");
  let left = totalBytes - written;
  for (let n = 0; left > 0; n++) {
    chunk.writeUInt32LE(n, 0); // no two MiB alike
    const k = Math.min(left, MIB);
    writeSync(fd, chunk, 0, k);
    left -= k;
  }
  closeSync(fd);
  return totalBytes;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function timeIt<T>(run: () => Promise<T>): Promise<{ seconds: number; result: T }> {
  const start = process.hrtime.bigint();
  const result = await run();
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, result };
}

function shell(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("sh", ["-c", command, "sh", ...args], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} exited with ${code}`))));
  });
}

async function ourDumpOnly(dir: string): Promise<number> {
  let size = 0;
  for await (const chunk of dumpPath(dir)) size += chunk.length;
  return size;
}

async function main(): Promise<void> {
  const { sizeMiB } = parseArgs();
  const root = mkdtempSync("/var/tmp/offload-nar-bench-");
  process.once("SIGINT", () => {
    rmSync(root, { recursive: true, force: true });
    process.exit(130);
  });
  try {
    const tree = join(root, "tree");
    mkdirSync(tree);
    process.stderr.write(`building a ${sizeMiB} MiB tree (1 big file + ${SMALL_FILES} small files) in ${tree}...\n`);
    buildTree(tree, sizeMiB * MIB);

    // Warm the page cache so that both sides read from memory.
    await shell('nix-store --dump "$1" > /dev/null', [tree]);
    const { narSize, narHash } = await narHashOf(tree);
    const nixHash = (await shell('nix-store --dump "$1" | sha256sum', [tree])).split(" ")[0];
    const nixHash2 = (await shell('nix-hash --type sha256 "$1"', [tree])).trim();
    for (const theirs of [nixHash, nixHash2]) {
      if (theirs !== narHash.toString("hex")) throw new Error(`hash mismatch: ours ${narHash.toString("hex")}, nix ${theirs}`);
    }

    const cases: Record<string, { ours: () => Promise<unknown>; nix: () => Promise<unknown> }> = {
      "dump + sha256 (nix-store --dump | sha256sum)": {
        ours: () => narHashOf(tree),
        nix: () => shell('nix-store --dump "$1" | sha256sum', [tree]),
      },
      // Apples to apples: Nix serialising and hashing in one process (OpenSSL's sha256).
      "NAR hash, one process (nix-hash --type sha256)": {
        ours: () => narHashOf(tree),
        nix: () => shell('nix-hash --type sha256 "$1"', [tree]),
      },
      "dump only (nix-store --dump > /dev/null)": {
        ours: () => ourDumpOnly(tree),
        nix: () => shell('nix-store --dump "$1" > /dev/null', [tree]),
      },
    };
    const rows: string[][] = [];
    for (const [name, c] of Object.entries(cases)) {
      const ours: number[] = [];
      const nix: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        ours.push((await timeIt(c.ours)).seconds);
        nix.push((await timeIt(c.nix)).seconds);
      }
      const oursRate = narSize / MIB / median(ours);
      const nixRate = narSize / MIB / median(nix);
      rows.push([name, oursRate.toFixed(0), nixRate.toFixed(0), (oursRate / nixRate).toFixed(2)]);
    }

    const header = ["case", "offload MiB/s", "Nix MiB/s", "ratio"];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
    console.log(`NAR throughput, ${(narSize / MIB).toFixed(0)} MiB NAR, median of ${RUNS} alternating runs`);
    console.log(`${new Date().toISOString()}  nproc ${cpus().length}  ${cpus()[0]?.model ?? "unknown CPU"}  node ${process.version}`);
    console.log(line(header));
    console.log(widths.map((w) => "-".repeat(w)).join("  "));
    for (const row of rows) console.log(line(row));
    console.log(`NAR sha256 ${narHash.toString("hex")} (equal to nix-store --dump | sha256sum and nix-hash)`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
