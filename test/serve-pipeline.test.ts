// Commands on one serve session are pipelined: each request goes out as soon as the ones
// before it are written, replies are read in order. A fake server (two PassThroughs) shows
// what was sent before it answered anything, and what a failure leaves behind.
import { afterEach, beforeEach, describe, expect, test } from "@jest/globals";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { OffloadError } from "../src/errors.js";
import type { PathInfo } from "../src/nix/path-info.js";
import { WireReader, WireWriter } from "../src/nix/wire.js";
import { ServeClient } from "../src/store/serve.js";
import { fetchWanted } from "../src/store/transfer.js";

const OUT = "/nix/store/0mym5imlj8bclbwws3sf3d10gskmaqv0-x";
const DEV = "/nix/store/1mym5imlj8bclbwws3sf3d10gskmaqv0-x-dev";

interface FakeServer {
  client: ServeClient;
  /** Bytes the client has sent since the greeting. */
  sent(): Buffer;
  reply(bytes: Buffer): void;
  /** The server exits: end of its output. */
  die(): void;
}

async function fakeServer(): Promise<FakeServer> {
  const toServer = new PassThrough();
  const fromServer = new PassThrough();
  let sent: Buffer[] = [];
  toServer.on("data", (chunk: Buffer) => sent.push(chunk));
  fromServer.write(new WireWriter().u64(0x5452eecb).u64(0x207).toBuffer());
  const client = await ServeClient.connect({ stdin: toServer, stdout: fromServer });
  sent = [];
  return { client, sent: () => Buffer.concat(sent), reply: (bytes) => fromServer.write(bytes), die: () => fromServer.end() };
}

/** Lets every pending write and read run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** The NAR of a regular file holding `contents`. */
function narOf(contents: string): Buffer {
  const out = new WireWriter();
  for (const token of ["nix-archive-1", "(", "type", "regular", "contents", contents, ")"]) out.string(token);
  return out.toBuffer();
}

function infoReply(infos: readonly PathInfo[]): Buffer {
  const out = new WireWriter();
  for (const info of infos) {
    out.string(info.path).string("").strings(info.references).u64(info.narSize).u64(info.narSize);
    out
      .string(`sha256:${info.narHash.toString("hex")}`)
      .string("")
      .strings(info.signatures);
  }
  return out.string("").toBuffer();
}

function infoOf(path: string, nar: Buffer, references: string[] = []): PathInfo {
  return { path, references, narHash: createHash("sha256").update(nar).digest(), narSize: nar.length, signatures: [] };
}

/** The commands in `bytes`, as [command number, first argument] for the ones these tests send. */
async function commands(bytes: Buffer): Promise<[number, string][]> {
  const reader = new WireReader((async function* () { yield bytes; })()); // prettier-ignore
  const found: [number, string][] = [];
  for (let at = 0; at < bytes.length; at = reader.position) {
    const command = await reader.num();
    if (command === 1) {
      await reader.bool();
      await reader.bool();
      found.push([command, (await reader.strings()).join(" ")]);
    } else if (command === 2) found.push([command, (await reader.strings()).join(" ")]);
    else if (command === 3) found.push([command, await reader.string()]);
    else if (command === 9) {
      const path = await reader.string();
      await reader.string(); // deriver
      await reader.string(); // NAR hash
      await reader.strings(); // references
      await reader.num(); // registration time
      const narSize = await reader.num();
      await reader.bool(); // ultimate
      await reader.strings(); // signatures
      await reader.string(); // content address
      await reader.bytes(narSize);
      found.push([command, path]);
    } else throw new Error(`unexpected command ${command}`);
  }
  return found;
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "offload-pipeline-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("pipelined commands", () => {
  test("requests issued back to back all go out before the first reply; replies are matched in order", async () => {
    const server = await fakeServer();
    const first = server.client.queryValidPaths([OUT]);
    const second = server.client.queryValidPaths([DEV]);
    await settle();
    expect(await commands(server.sent())).toEqual([
      [1, OUT],
      [1, DEV],
    ]);
    server.reply(new WireWriter().strings([OUT]).strings([]).toBuffer());
    expect([...(await first)]).toEqual([OUT]);
    expect([...(await second)]).toEqual([]);
  });

  test("uploads issued back to back go out whole, one after the other, before any acknowledgement", async () => {
    const server = await fakeServer();
    const devNar = narOf("dev");
    const outNar = narOf("out");
    const chunks = (nar: Buffer) =>
      (async function* () {
        yield nar.subarray(0, 5);
        yield nar.subarray(5);
      })();
    const dev = server.client.addToStoreNar(infoOf(DEV, devNar), chunks(devNar));
    const out = server.client.addToStoreNar(infoOf(OUT, outNar, [DEV]), chunks(outNar));
    await settle();
    expect(await commands(server.sent())).toEqual([
      [9, DEV],
      [9, OUT],
    ]);
    server.reply(new WireWriter().u64(1).u64(1).toBuffer());
    await expect(Promise.all([dev, out])).resolves.toEqual([undefined, undefined]);
  });

  test("a request whose body could not be written stops every later request from going out", async () => {
    const server = await fakeServer();
    const nar = narOf("x");
    const failing = server.client.addToStoreNar(
      infoOf(OUT, nar),
      (async function* () {
        yield nar.subarray(0, 4);
        throw new Error("disk read error");
      })(),
    );
    const later = server.client.queryValidPaths([DEV]);
    await expect(failing).rejects.toMatchObject({ code: "upload-source" });
    await expect(later).rejects.toMatchObject({ code: "upload-source" });
    expect(server.sent().includes(Buffer.from(DEV))).toBe(false);
  });
});

describe("fetchWanted", () => {
  test("asks for the infos and every NAR in one go, then restores each NAR as it arrives, dependencies first", async () => {
    const server = await fakeServer();
    const outNar = narOf("out");
    const devNar = narOf("dev");
    const infos = [infoOf(OUT, outNar, [DEV]), infoOf(DEV, devNar)];
    const fetched = fetchWanted(server.client, [OUT, DEV], dir, "builder", "an output");
    await settle();
    expect(await commands(server.sent())).toEqual([
      [2, `${OUT} ${DEV}`],
      [3, OUT],
      [3, DEV],
    ]);
    server.reply(Buffer.concat([infoReply(infos), outNar, devNar]));
    const items = await fetched;
    expect(items.map((item) => item.path)).toEqual([DEV, OUT]);
    expect(items.map((item) => item.tree)).toEqual([join(dir, DEV.slice(DEV.lastIndexOf("/") + 1)), join(dir, OUT.slice(OUT.lastIndexOf("/") + 1))]);
    expect(readFileSync(items[1]!.tree, "utf8")).toBe("out");
    expect(readFileSync(items[0]!.tree, "utf8")).toBe("dev");
  });

  test("an output this machine cannot write is named with the reason and a fix, and nothing waits on it", async () => {
    const server = await fakeServer();
    const outNar = narOf("x".repeat(1 << 20)); // more than the restore's buffer: the transfer must not wait for it to drain
    // A parent that does not exist stands for a full or read-only file system: the restore cannot create the tree.
    const fetched = fetchWanted(server.client, [OUT], join(dir, "missing", "landing"), "builder", "an output");
    server.reply(Buffer.concat([infoReply([infoOf(OUT, outNar)]), outNar]));
    await expect(fetched).rejects.toMatchObject({
      code: "output-unwritable",
      message: expect.stringMatching(new RegExp(`^${OUT} from builder could not be written here: NAR restore: .*ENOENT.*; nothing imported$`)),
      fix: expect.stringContaining("free space (df)"),
    });
  });

  test("a wanted path the machine lacks is named, although the session ended on its NAR; nothing is written", async () => {
    const server = await fakeServer();
    const outNar = narOf("out");
    const fetched = fetchWanted(server.client, [OUT, DEV], dir, "builder", "an output");
    // Nix answers the infos without DEV, sends OUT's NAR, then exits on DumpStorePath DEV.
    server.reply(Buffer.concat([infoReply([infoOf(OUT, outNar)]), outNar]));
    server.die();
    await expect(fetched).rejects.toMatchObject({ code: "output-missing", message: `builder reports success but ${DEV} is not valid there` });
    expect(readdirSync(dir)).toEqual([]);
  });

  test("beforeWriting sees the infos first: its refusal is the error, and no file is opened", async () => {
    const server = await fakeServer();
    const outNar = narOf("out");
    const seen: string[] = [];
    const fetched = fetchWanted(server.client, [OUT], dir, "builder", "an output", {
      beforeWriting: (infos) => {
        seen.push(...infos.map((info) => info.path));
        throw new OffloadError("no room", { code: "local-disk-full", fix: "free space" });
      },
    });
    server.reply(Buffer.concat([infoReply([infoOf(OUT, outNar)]), outNar]));
    await expect(fetched).rejects.toMatchObject({ code: "local-disk-full", message: "no room" });
    expect(seen).toEqual([OUT]);
    expect(readdirSync(dir)).toEqual([]);
  });

  test("sizesFirst: the NARs are asked for only once beforeWriting has accepted the infos; a refusal asks for none", async () => {
    const server = await fakeServer();
    const outNar = narOf("out");
    const accepted = fetchWanted(server.client, [OUT], dir, "builder", "an output", { sizesFirst: true, beforeWriting: () => undefined });
    await settle();
    expect(await commands(server.sent())).toEqual([[2, OUT]]);
    server.reply(infoReply([infoOf(OUT, outNar)]));
    await settle();
    expect((await commands(server.sent())).slice(1)).toEqual([[3, OUT]]);
    server.reply(outNar);
    expect((await accepted).map((item) => item.path)).toEqual([OUT]);

    const refusing = await fakeServer();
    const refused = fetchWanted(refusing.client, [OUT], dir, "builder", "an output", {
      sizesFirst: true,
      beforeWriting: () => {
        throw new OffloadError("no room", { code: "local-disk-full", fix: "free space" });
      },
    });
    refusing.reply(infoReply([infoOf(OUT, outNar)]));
    await expect(refused).rejects.toMatchObject({ code: "local-disk-full" });
    expect(await commands(refusing.sent())).toEqual([[2, OUT]]);
  });

  test("a NAR that differs from its description is refused", async () => {
    const server = await fakeServer();
    const fetched = fetchWanted(server.client, [OUT], dir, "builder", "an output");
    server.reply(Buffer.concat([infoReply([infoOf(OUT, narOf("promised"))]), narOf("sent....")]));
    await expect(fetched).rejects.toMatchObject({ code: "output-corrupt" });
  });
});
