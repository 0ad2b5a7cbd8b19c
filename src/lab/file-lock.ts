// A lock file for edits that parallel labs (e.g. test suites in jest workers) could make at
// the same time: root's ssh config, apt installs. Exclusive create; a lock older than
// `staleMs` was left by a killed process and is broken.
import { open, rm, stat } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { OffloadError } from "../errors.js";

export interface LockTimes {
  /** Give up waiting after this long. */
  timeoutMs: number;
  /** Longer than any holder can legitimately take. */
  staleMs: number;
}

export async function withFileLock<T>(lock: string, times: LockTimes, action: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + times.timeoutMs;
  for (;;) {
    try {
      await (await open(lock, "wx", 0o600)).close();
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const age = await stat(lock).then(
        (info) => Date.now() - info.mtimeMs,
        () => 0,
      );
      if (age > times.staleMs) await rm(lock, { force: true });
      else if (Date.now() > deadline) {
        throw new OffloadError(`${lock} has been held for ${Math.round(times.timeoutMs / 1000)} s`, {
          code: "lab-locked",
          fix: `rm ${lock} if no offload lab command is running`,
        });
      } else await sleep(50);
    }
  }
  try {
    return await action();
  } finally {
    await rm(lock, { force: true });
  }
}
