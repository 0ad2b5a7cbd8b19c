// A hostile build machine: stands in for `nix-store --serve --write` on a lab builder and
// speaks the serve protocol (2.7) just well enough to be chosen, "build" and hand back
// outputs — which it then lies about. Bundled to one .mjs by hostileServeScript() and run
// through a `nix-store` wrapper on the builder's PATH.
//
// HOSTILE_MODE (from the builder's sshd SetEnv):
//   extra-path  QueryPathInfos adds a planted path, validly signed, that nobody asked for
//   size-lie    declares a 200-byte NAR, then streams HOSTILE_BYTES of one (default 64 MiB)
//   stall       sends the first half of the NAR, then nothing, forever
//   dies        fails at start as a real nix-store on a full disk does, saying why on stderr
// HOSTILE_KEY: the builder's secret signing key file (outputs are signed with it: trusted).
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseSecretKey } from "../../src/nix/keys.js";
import { encodeNix32 } from "../../src/nix/nix32.js";
import { signPath } from "../../src/nix/signature.js";
import { WireReader, WireWriter } from "../../src/nix/wire.js";

const mode = process.env.HOSTILE_MODE ?? "extra-path";
const key = parseSecretKey(readFileSync(process.env.HOSTILE_KEY!, "utf8"));
const reader = new WireReader(process.stdin);
const write = (bytes: Buffer) => new Promise<void>((resolve) => (process.stdout.write(bytes) ? resolve() : process.stdout.once("drain", resolve)));
const send = (writer: WireWriter) => write(writer.toBuffer());

/** The NAR of one regular file holding `contents`. */
function fileNar(contents: Buffer): Buffer {
  const w = new WireWriter();
  for (const token of ["nix-archive-1", "(", "type", "regular", "contents"]) w.string(token);
  w.u64(contents.length);
  const head = w.toBuffer();
  const pad = Buffer.alloc((8 - (contents.length % 8)) % 8);
  return Buffer.concat([head, contents, pad, new WireWriter().string(")").toBuffer()]);
}

interface Fake {
  path: string;
  nar: Buffer;
  /** The size it claims. */
  narSize: number;
}

function fake(path: string, contents: Buffer, claimedSize?: number): Fake {
  const nar = fileNar(contents);
  return { path, nar, narSize: claimedSize ?? nar.length };
}

const fakes = new Map<string, Fake>();

async function main(): Promise<void> {
  if (mode === "dies") {
    process.stderr.write("error: writing to file: No space left on device\n");
    process.exit(1);
  }
  await reader.u64(); // magic
  await reader.u64(); // client version
  await send(new WireWriter().u64(0x5452eecb).u64(0x207));
  while (!(await reader.atEnd())) {
    const command = await reader.num();
    if (command === 1) {
      await reader.bool();
      await reader.bool();
      const paths = await reader.strings();
      await send(new WireWriter().strings(paths)); // "all there": nothing is uploaded
    } else if (command === 9) {
      // AddToStoreNar (offload check uploads a test path): take it and say yes.
      for (const what of ["path", "deriver", "narHash"]) await reader.string(undefined, what);
      await reader.strings();
      await reader.u64(); // registration time
      const narSize = await reader.num(Number.MAX_SAFE_INTEGER);
      await reader.bool();
      await reader.strings();
      await reader.string();
      await reader.bytes(narSize);
      await send(new WireWriter().u64(1));
    } else if (command === 8) {
      await reader.string(); // drv path
      const outputs = await reader.num();
      for (let i = 0; i < outputs; i++) {
        await reader.string();
        const path = await reader.string();
        await reader.string();
        await reader.string();
        const contents =
          mode === "size-lie" ? Buffer.alloc(Number(process.env.HOSTILE_BYTES ?? 64 << 20), 0x61) : Buffer.from(`built by a hostile machine (${mode})\n`);
        fakes.set(path, fake(path, contents, mode === "size-lie" ? 200 : undefined));
      }
      await reader.strings(); // inputSrcs
      await reader.string();
      await reader.string();
      await reader.strings();
      const env = await reader.num();
      for (let i = 0; i < env; i++) {
        await reader.string(); // name
        await reader.string(); // value
      }
      for (let i = 0; i < 4; i++) await reader.u64(); // maxSilentTime, buildTimeout, maxLogSize, buildRepeat
      await reader.bool(); // enforceDeterminism
      await reader.bool(); // keepFailed
      const now = Math.floor(Date.now() / 1000);
      await send(new WireWriter().u64(0).string("").u64(1).bool(false).u64(now).u64(now).u64(0));
    } else if (command === 2) {
      const asked = await reader.strings();
      const listed = asked.filter((path) => fakes.has(path));
      if (mode === "extra-path") {
        const planted = `/nix/store/${"p".repeat(32)}-planted-by-builder`;
        fakes.set(planted, fake(planted, Buffer.from("planted\n")));
        listed.push(planted);
      }
      const w = new WireWriter();
      for (const path of listed) {
        const item = fakes.get(path)!;
        const narHash = createHash("sha256").update(item.nar).digest();
        const info = { path, narHash, narSize: item.narSize, references: [] };
        w.string(path)
          .string("")
          .strings([])
          .u64(0)
          .u64(item.narSize)
          .string(`sha256:${encodeNix32(narHash)}`)
          .string("")
          .strings([signPath(info, key)]);
      }
      await send(w.string(""));
    } else if (command === 3) {
      const item = fakes.get(await reader.string())!;
      if (mode === "stall") {
        await write(item.nar.subarray(0, item.nar.length >> 1));
        await new Promise(() => undefined); // and never another byte
      }
      await write(item.nar);
    } else {
      process.stderr.write(`hostile-serve: command ${command} not played\n`);
      process.exit(1);
    }
  }
}

await main();
