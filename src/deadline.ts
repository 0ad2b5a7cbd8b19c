// One bound for anything that can wait: a promise that settles as `work` does, or rejects
// with `expired()` after `ms`. The timer never outlives the race, so it keeps no process alive.
export function withDeadline<T>(work: PromiseLike<T>, ms: number, expired: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(expired()), Math.max(0, ms));
  });
  return Promise.race([Promise.resolve(work), timeout]).finally(() => clearTimeout(timer));
}

/**
 * Reads `read()` every `intervalMs` until `done` holds for what it returned, and returns that;
 * after `ms`, rejects with `expired(last reading)`. For a state that changes outside this
 * process (a daemon restarting), where there is nothing to await.
 */
export async function pollUntil<T>(
  read: () => T | Promise<T>,
  done: (value: T) => boolean,
  ms: number,
  expired: (last: T) => Error,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() >= deadline) throw expired(value);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
