// Build durations recorded per derivation name, the selection's estimates.
import { derivationName, readDurations, recordDuration } from "../src/select/durations.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

test("names strip the hash and .drv; records blend old and new", () => {
  expect(derivationName("/nix/store/0mym5imlj8bclbwws3sf3d10gskmaqv0-hello-2.12.1.drv")).toBe("hello-2.12.1");
  const dir = makeSafeDir("durations");
  try {
    expect(readDurations(dir).size).toBe(0);
    recordDuration(dir, "hello-2.12.1", 100);
    expect(readDurations(dir).get("hello-2.12.1")).toBe(100);
    recordDuration(dir, "hello-2.12.1", 200);
    expect(readDurations(dir).get("hello-2.12.1")).toBe(150);
    recordDuration(dir, "other", 5);
    expect(Object.fromEntries(readDurations(dir))).toEqual({ "hello-2.12.1": 150, other: 5 });
  } finally {
    removeDir(dir);
  }
});
