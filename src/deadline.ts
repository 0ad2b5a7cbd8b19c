// One bound for anything that can wait: a promise that settles as `work` does, or rejects
// with `expired()` after `ms`. The timer never outlives the race, so it keeps no process alive.
export function withDeadline<T>(work: PromiseLike<T>, ms: number, expired: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(expired()), Math.max(0, ms));
  });
  return Promise.race([Promise.resolve(work), timeout]).finally(() => clearTimeout(timer));
}
