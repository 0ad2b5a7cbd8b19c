// `offload-hook`: the executable Nix's `build-hook` setting points at (2.8 takes one path, no arguments).
import { processIo } from "./protocol.js";
import { runHook } from "./run.js";

const status = await runHook(processIo());
// SSH sockets or timers must not keep a finished hook alive: the daemon waits for it.
process.exit(status);
