// What the agent's health shell answers, parsed (src/remote/probes.ts HealthProbe).
import { parseHealthLines } from "../src/remote/probes.js";

test("load, CPUs, CPU pressure, free store space and clock skew from one answer; missing lines stay absent", () => {
  const lines = ["load 1.50 2", "pressure some avg10=12.50 avg60=3.00 avg300=1.00 total=123", "df /dev/vda1 1000000 400000 600000 40% /", "clock 1000.25"];
  expect(parseHealthLines(lines, 1000)).toEqual({ loadAverage: 1.5, cpus: 2, cpuPressure: 0.125, freeBytes: 600000 * 1024, clockSkew: 0.25 });
  // An old kernel without /proc/pressure, df failing: nothing made up.
  expect(parseHealthLines(["load 0.20 4", "df ", "clock 999.5"], 1000)).toEqual({ loadAverage: 0.2, cpus: 4, clockSkew: -0.5 });
});
