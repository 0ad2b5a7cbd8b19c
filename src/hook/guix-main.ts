// `offload-guix offload …`: guix-daemon's build hook (bin/offload-guix hands every other
// subcommand to the real guix). One process per build the daemon offers.
import { guardHookProcess } from "./guard.js";
import { EXIT } from "../errors.js";
import { runGuixHook, type GuixHookIo } from "./guix.js";
import { writeAll } from "./protocol.js";
import { ensureAgent } from "../agent/agent-client.js";
import { stateDir } from "../select/state-dir.js";

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

// The daemon shows stderr lines to the person building.
guardHookProcess((text) => process.stderr.write(`${text}\n`), EXIT.transient);

// A hook process runs when no agent serves hooks: start one for the builds to come.
if (process.env.OFFLOAD_AGENT !== "0") void ensureAgent(stateDir()).catch(() => undefined);
const status = await runGuixHook(process.argv.slice(2), processIo());
process.exit(status);
