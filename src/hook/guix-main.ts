// `offload-guix offload …`: guix-daemon's build hook (bin/offload-guix hands every other
// subcommand to the real guix). One process per build the daemon offers.
import { writeSync } from "node:fs";
import { asOffloadError, formatError } from "../errors.js";
import { removeAllScratch } from "../store/scratch.js";
import { GUIX_EXIT, runGuixHook, type GuixHookIo } from "./guix.js";

function writeAll(fd: number, bytes: Buffer): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done);
}

function processIo(): GuixHookIo {
  // Told by bin/offload-guix, which saw whether the daemon opened it (node's own descriptors may be 4 otherwise).
  const logFd = process.env.OFFLOAD_BUILD_LOG_FD === "4" ? 4 : undefined;
  return {
    input: process.stdin,
    // Synchronous: a reply must reach the daemon before anything that follows it.
    control: (text) => writeAll(2, Buffer.from(text)),
    buildLog: logFd === undefined ? undefined : (bytes) => writeAll(logFd!, typeof bytes === "string" ? Buffer.from(bytes) : bytes),
  };
}

// The daemon SIGKILLs the hook when its build ends early; other stops leave nothing half-landed.
for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
  process.on(signal, () => {
    removeAllScratch();
    process.exit(GUIX_EXIT.transient);
  });
}

// Last resort: one line for the person building, never a stack trace, and a transient failure.
function lastResort(error: unknown): never {
  const failure = asOffloadError(error);
  process.stderr.write(`offload: ${formatError(failure)}${failure.code === "internal" ? " (this is a bug in offload)" : ""}\n`);
  removeAllScratch();
  process.exit(GUIX_EXIT.transient);
}
process.on("uncaughtException", lastResort);
process.on("unhandledRejection", lastResort);

const status = await runGuixHook(process.argv.slice(2), processIo());
process.exit(status);
