// `offload-hook`: the executable Nix's `build-hook` setting points at (2.8 takes one path, no arguments).
import { EXIT } from "../errors.js";
import { guardHookProcess } from "./guard.js";
import { processIo } from "./protocol.js";
import { runHook } from "./run.js";

// An @nix message reaches the person running the build.
guardHookProcess((text) => process.stderr.write(`@nix ${JSON.stringify({ action: "msg", level: 0, msg: text })}\n`), EXIT.transient);

const status = await runHook(processIo());
// SSH sockets or timers must not keep a finished hook alive: the daemon waits for it.
process.exit(status);
