// Load that is ours is not overload: the moving average of offload's own builds on a machine,
// taken out of its load average (src/select/own-load.ts).
import { externalLoad, OwnLoad } from "../src/select/own-load.js";

test("our builds count as the 1-minute load average counts them: rising and decaying with a one-minute time constant", () => {
  const own = new OwnLoad(0);
  expect(own.value(0)).toBe(0);
  own.set(2, 0);
  expect(own.value(60_000)).toBeCloseTo(2 * (1 - Math.exp(-1)), 6);
  own.set(0, 60_000);
  // A minute after they ended, e^-1 of what they were still counts (as in the kernel's average).
  expect(own.value(120_000)).toBeCloseTo(2 * (1 - Math.exp(-1)) * Math.exp(-1), 6);
  expect(own.value(3_600_000)).toBeCloseTo(0, 6);
});

test("external load is the load average less ours, per CPU, never negative", () => {
  // 2 CPUs, load 2.1 of which 2 are our builds: 0.05 per CPU is someone else's.
  expect(externalLoad(2.1, 2, 2)).toBeCloseTo(0.05, 6);
  // A CPU hog besides one build of ours.
  expect(externalLoad(2, 2, 1)).toBeCloseTo(0.5, 6);
  expect(externalLoad(0.5, 4, 1.5)).toBe(0);
});
