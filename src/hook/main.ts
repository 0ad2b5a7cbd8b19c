// `offload-hook`: the executable Nix's `build-hook` setting points at (2.8 takes one path, no arguments).
import { asOffloadError, formatError } from "../errors.js";
import { removeAllScratch } from "../store/scratch.js";
import { EXIT } from "./build.js";
import { processIo } from "./protocol.js";
import { runHook } from "./run.js";

// Nix 2.35 stops a hook with SIGTERM and SIGKILLs it 500 ms later (a user's ^C, a cancelled
// build): leave no half-landed output or spool behind and exit at once. Build slots are
// kernel locks and vanish with the process; a path already registered stays, complete.
for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
  process.on(signal, () => {
    removeAllScratch();
    process.exit(EXIT.transient);
  });
}

// Last resort: whatever escapes still becomes one line the person at the terminal sees
// (an @nix message), never a stack trace in the daemon's log, and a transient failure.
function lastResort(error: unknown): never {
  const failure = asOffloadError(error);
  const text = `offload: ${formatError(failure)}${failure.code === "internal" ? " (this is a bug in offload)" : ""}`;
  process.stderr.write(`@nix ${JSON.stringify({ action: "msg", level: 0, msg: text })}\n`);
  removeAllScratch();
  process.exit(EXIT.transient);
}
process.on("uncaughtException", lastResort);
process.on("unhandledRejection", lastResort);

const status = await runHook(processIo());
// SSH sockets or timers must not keep a finished hook alive: the daemon waits for it.
process.exit(status);
