// Load that is ours is not overload. A machine's 1-minute load average counts offload's own
// builds on it too: without taking them out, a machine busy only with our builds would look
// overloaded and be passed over (or waited for) while it has slots free. So whoever sees our
// builds start and end (the agent) keeps the same moving average of how many ran — the load
// average's own time constant, one minute — and takes it out of the measured load.

/** The kernel's 1-minute load average decays with this time constant. */
const LOAD_AVERAGE_TAU_MS = 60_000;

export class OwnLoad {
  private average = 0;
  private running = 0;
  private at: number;

  constructor(now = Date.now()) {
    this.at = now;
  }

  /** Our builds running on the machine from `now` on. */
  set(running: number, now = Date.now()): void {
    this.advance(now);
    this.running = running;
  }

  /** The moving average of our running builds at `now`, as the load average would count them. */
  value(now = Date.now()): number {
    this.advance(now);
    return this.average;
  }

  private advance(now: number): void {
    const elapsed = Math.max(0, now - this.at);
    this.average = this.running + (this.average - this.running) * Math.exp(-elapsed / LOAD_AVERAGE_TAU_MS);
    this.at = now;
  }
}

/** The load per CPU that is not ours: the load average less our builds' share of it, never below 0. */
export function externalLoad(loadAverage: number, cpus: number, ours: number): number {
  return Math.max(0, loadAverage - ours) / cpus;
}
