// The local Nix store through a local `nix-store --serve --write`: the same client code as
// for remote machines. The hook queries through it and uploads inputs from it; outputs the
// daemon holds locks on go in through land.ts instead (Nix 2.29 removed NIX_HELD_LOCKS).

import { spawn } from "node:child_process";
import { OffloadError } from "../errors.js";
import { ServeClient } from "./serve.js";
import type { ExitStatus } from "../remote/ssh.js";

export interface LocalStoreOptions {
  /** Store to open (`--store`), e.g. a chroot store directory. Default: the default store. */
  store?: string;
  /** Environment of nix-store; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** The nix-store binary. Default "nix-store" from PATH. */
  nixStore?: string;
}

export interface LocalStore {
  client: ServeClient;
  /** The last few KiB nix-store wrote to stderr (errors, warnings). */
  stderrText(): string;
  /** Ends the session and waits for nix-store to exit. */
  close(): Promise<ExitStatus>;
}

const STDERR_TAIL = 8192;

export async function openLocalStore(options: LocalStoreOptions = {}): Promise<LocalStore> {
  const program = options.nixStore ?? "nix-store";
  const args = ["--serve", "--write", ...(options.store === undefined ? [] : ["--store", options.store])];
  const child = spawn(program, args, { env: options.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.setEncoding("utf8"); // decodes characters split across chunks
  child.stderr.on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_TAIL);
  });
  let spawnError: NodeJS.ErrnoException | undefined;
  const exit = new Promise<ExitStatus>((resolve) => {
    child.once("error", (error: NodeJS.ErrnoException) => {
      spawnError = error;
      resolve({ code: error.code === "ENOENT" ? 127 : null });
    });
    child.once("close", (code, signal) => resolve(code === null ? { code: null, signal: signal ?? undefined } : { code }));
  });
  const label = options.store === undefined ? "local nix-store --serve" : `local nix-store --serve --store ${options.store}`;
  let client: ServeClient;
  try {
    client = await ServeClient.connect({ stdin: child.stdin, stdout: child.stdout, exit, stderrTail: () => stderr }, { label });
  } catch (error) {
    child.kill();
    if (spawnError) {
      throw new OffloadError(`cannot run ${program}: ${spawnError.message}`, {
        code: spawnError.code === "ENOENT" ? "nix-store-not-found" : "protocol",
        fix: "install Nix (apt-get install nix-bin) or put nix-store in the PATH of the nix daemon",
        cause: spawnError,
      });
    }
    throw error;
  }
  return {
    client,
    stderrText: () => stderr,
    close: async () => {
      client.close();
      return exit;
    },
  };
}
