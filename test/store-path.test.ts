import { OffloadError } from "../src/errors.js";
import { hashPart, isStorePath, parseStorePath, storePathName, storePathNameProblem } from "../src/nix/store-path.js";

const H = "0c9xq7mdfzq0mjx9ib7ql8n5hrm6r4lb";

describe("store paths", () => {
  test("parses a valid path", () => {
    expect(parseStorePath(`/nix/store/${H}-hello-2.12.1`)).toEqual({
      path: `/nix/store/${H}-hello-2.12.1`,
      storeDir: "/nix/store",
      hashPart: H,
      name: "hello-2.12.1",
    });
    expect(storePathName(`/nix/store/${H}-x.drv`)).toBe("x.drv");
    expect(hashPart(`/nix/store/${H}-x`)).toBe(H);
  });

  test("honours another store directory", () => {
    expect(isStorePath(`/gnu/store/${H}-guile-3.0`, "/gnu/store")).toBe(true);
    expect(isStorePath(`/nix/store/${H}-guile-3.0`, "/gnu/store")).toBe(false);
  });

  test("accepts every allowed name character and a leading '.' (as Nix 2.8 does)", () => {
    expect(isStorePath(`/nix/store/${H}-aZ09+-._?=`)).toBe(true);
    expect(isStorePath(`/nix/store/${H}-.bashrc`)).toBe(true);
    expect(isStorePath(`/nix/store/${H}-${"a".repeat(211)}`)).toBe(true);
  });

  test.each([
    ["not in the store", `/nix/stor/${H}-x`, /not directly in \/nix\/store/],
    ["nested", `/nix/store/${H}-x/bin`, /illegal character "\/"/],
    ["no name", `/nix/store/${H}`, /expected <32-character hash>-<name>/],
    ["empty name", `/nix/store/${H}-`, /expected/],
    ["short hash", `/nix/store/${H.slice(1)}-x`, /expected|not nix32/],
    ["e in hash", `/nix/store/${"e".repeat(32)}-x`, /not nix32/],
    ["upper-case hash", `/nix/store/${H.toUpperCase()}-x`, /not nix32/],
    ["space", `/nix/store/${H}-a b`, /illegal character " "/],
    ["unicode", `/nix/store/${H}-é`, /illegal character "é"/],
    ["too long", `/nix/store/${H}-${"a".repeat(212)}`, /longer than 211/],
    ["trailing slash", `/nix/store/${H}-x/`, /illegal character/],
  ])("rejects %s", (_why, path, message) => {
    expect(isStorePath(path)).toBe(false);
    expect(() => parseStorePath(path)).toThrow(OffloadError);
    expect(() => parseStorePath(path)).toThrow(message);
  });

  test("name problems are explained", () => {
    expect(storePathNameProblem("ok")).toBeUndefined();
    expect(storePathNameProblem("")).toBe("the name is empty");
  });
});
