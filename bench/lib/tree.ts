// A directory shaped like a heavy build input: one big incompressible file plus thousands of
// small files (the two extremes a NAR transfer must handle), of a given total size.
import { randomFillSync } from "node:crypto";
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";

const MIB = 1024 * 1024;
const SMALL_AVERAGE = 2048;

export function writeTree(root: string, bigMiB: number, smallFiles: number): void {
  const block = randomFillSync(Buffer.alloc(2 * SMALL_AVERAGE + 1));
  for (let i = 0; i < smallFiles; i++) {
    const dir = join(root, "small", String(Math.floor(i / 100)).padStart(3, "0"));
    if (i % 100 === 0) mkdirSync(dir, { recursive: true });
    // Sizes spread over 0..4 KiB; a few executables, as real trees have.
    writeFileSync(join(dir, `f${i}`), block.subarray(0, (i * 7919) % block.length), { mode: i % 10 === 0 ? 0o755 : 0o644 });
  }
  const chunk = randomFillSync(Buffer.alloc(MIB));
  const fd = openSync(join(root, "big"), "w");
  try {
    for (let n = 0; n < bigMiB; n++) {
      chunk.writeUInt32LE(n, 0); // no two MiB alike, so nothing along the way can deduplicate
      writeSync(fd, chunk);
    }
  } finally {
    closeSync(fd);
  }
}
