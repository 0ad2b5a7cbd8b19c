// `offload status` and `check` show what the build hook sees. Run by another user they would
// log in with that user's SSH keys and known_hosts, and fail on the hook's build slots and
// signing key; so they refuse with one line. (`explain` connects nowhere: it runs for anyone,
// without the slots.) The hook's user owns its state dir.
import { statSync } from "node:fs";
import { dirname } from "node:path";
import { OffloadError } from "../errors.js";
import { shellQuote } from "../remote/shell-quote.js";

/** The hook's user (the owner of its state dir) when offload runs as someone else, else undefined. */
export function otherHookUser(stateDir: string): number | undefined {
  const me = process.getuid?.();
  if (me === undefined || me === 0) return undefined;
  const owner = ownerOf(stateDir);
  return owner === me ? undefined : owner;
}

export function assertHookUser(stateDir: string): void {
  const owner = otherHookUser(stateDir);
  if (owner === undefined) return;
  const command = `offload ${process.argv.slice(2).map(shellQuote).join(" ")}`;
  const who = owner === 0 ? "root" : `uid ${owner}`;
  throw new OffloadError(
    `run as ${who}: \`${command}\` shows what the build hook sees, and the hook runs as ${who} (the owner of ${stateDir}), with its SSH keys, known_hosts and build slots`,
    {
      code: "needs-root",
      fix: owner === 0 ? `sudo ${command}` : `run it as uid ${owner}, or set OFFLOAD_STATE_DIR to the state directory of your own hook`,
    },
  );
}

/** The owner of `path`, or of its nearest existing parent (where the hook would create it). */
function ownerOf(path: string): number {
  for (let at = path; ; at = dirname(at)) {
    try {
      return statSync(at).uid;
    } catch {
      if (at === dirname(at)) return 0;
    }
  }
}
