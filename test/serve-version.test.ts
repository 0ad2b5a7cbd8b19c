// Serve protocol negotiation: both sides speak the lower version. Nix 2.35's nix-store
// --serve answers 2.8 but then speaks the 2.7 we announce (serve-protocol-connection.cc:
// std::min of the two); the client must not switch to 2.8 layouts on seeing 0x208.
import { expect, test } from "@jest/globals";
import { PassThrough } from "node:stream";
import { parseDerivation } from "../src/nix/drv.js";
import { WireWriter } from "../src/nix/wire.js";
import { ServeClient } from "../src/store/serve.js";

const OUT = "/nix/store/0mym5imlj8bclbwws3sf3d10gskmaqv0-x";
const DRV_PATH = "/nix/store/1mym5imlj8bclbwws3sf3d10gskmaqv0-x.drv";
const drv = parseDerivation(`Derive([("out","${OUT}","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo x > $out"],[("out","${OUT}")])`, DRV_PATH);

/** What the client sends for one BuildDerivation to a server greeting with `version`, and the result it reads back. */
async function buildAgainst(version: number) {
  const toServer = new PassThrough();
  const fromServer = new PassThrough();
  const sent: Buffer[] = [];
  toServer.on("data", (chunk: Buffer) => sent.push(chunk));
  fromServer.write(new WireWriter().u64(0x5452eecb).u64(version).toBuffer());
  const client = await ServeClient.connect({ stdin: toServer, stdout: fromServer });
  sent.length = 0; // the greeting
  // A 2.7 BuildResult: Built, no error, times, then the (empty) builtOutputs map.
  fromServer.write(new WireWriter().u64(0).string("").u64(1).bool(false).u64(100).u64(101).u64(0).toBuffer());
  const result = await client.buildDerivation(DRV_PATH, drv, [], { maxSilentTime: 7, buildTimeout: 9 });
  return { request: Buffer.concat(sent), result, version: client.remoteVersion };
}

test("a 2.8 server (Nix 2.35) gets exactly what a 2.7 server gets, and its 2.7 reply is read", async () => {
  const old = await buildAgainst(0x207);
  const newer = await buildAgainst(0x208);
  expect(newer.version).toBe(0x208);
  expect(newer.request.equals(old.request)).toBe(true);
  expect(newer.result).toMatchObject({ status: "Built", success: true, startTime: 100, stopTime: 101 });
  expect(newer.result).toEqual(old.result);
});
