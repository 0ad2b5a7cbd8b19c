import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OffloadError } from "../src/errors.js";
import { parseDerivation } from "../src/nix/drv.js";
import type { Derivation } from "../src/nix/drv.js";

const H = "0c9xq7mdfzq0mjx9ib7ql8n5hrm6r4lb";

/** What `nix show-derivation` prints, in our shape. */
function fromShowDerivation(json: {
  outputs: Record<string, { path?: string; hashAlgo?: string; hash?: string }>;
  inputDrvs: Record<string, string[]>;
  inputSrcs: string[];
  system: string;
  builder: string;
  args: string[];
  env: Record<string, string>;
}): Derivation {
  return {
    outputs: new Map(Object.entries(json.outputs).map(([name, o]) => [name, { path: o.path ?? "", hashAlgo: o.hashAlgo ?? "", hash: o.hash ?? "" }])),
    inputDrvs: new Map(Object.entries(json.inputDrvs)),
    inputSrcs: json.inputSrcs,
    platform: json.system,
    builder: json.builder,
    args: json.args,
    env: new Map(Object.entries(json.env)),
  };
}

describe("real .drv files from nix-instantiate", () => {
  let work: string;
  let drvs: string[];
  let created: string[];

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "offload-drv-test-"));
    const u = randomBytes(6).toString("hex");
    const xHash = createHash("sha256").update("x").digest("hex");
    const nix = [
      "let",
      `  src = builtins.toFile "offload-drv-src-${u}" "source text";`,
      '  common = { system = builtins.currentSystem; builder = "/bin/sh"; };',
      `  dep = derivation (common // { name = "offload-drv-dep-${u}"; outputs = [ "out" "dev" "doc" ]; args = [ "-c" "echo > $out" ]; });`,
      `  fixed = derivation (common // { name = "offload-drv-fixed-${u}"; args = [ "-c" "printf x > $out" ];`,
      `    outputHashAlgo = "sha256"; outputHashMode = "flat"; outputHash = "${xHash}"; });`,
      `  fixedRec = derivation (common // { name = "offload-drv-fixed-rec-${u}"; args = [ "-c" "printf x > $out" ];`,
      `    outputHashAlgo = "sha256"; outputHashMode = "recursive"; outputHash = "${xHash}"; });`,
      `  top = derivation (common // { name = "offload-drv-top-${u}"; outputs = [ "out" "lib" ];`,
      '    args = [ "-c" "echo ${dep.dev} ${dep.out} ${fixed} ${fixedRec} ${src} > $out; echo > $lib"',
      '             "tab\\there" "quote\\"back\\\\slash" "new\\nline\\r\\n" "unicode ü 日本 😀" "" "dollar \\${x}" ];',
      '    weird = "a\\tb\\nc\\"d\\\\e\\r"; empty = ""; list = [ 1 "two" true ]; });',
      "in { inherit dep fixed fixedRec top; }",
    ].join("\n");
    writeFileSync(join(work, "drvs.nix"), nix);
    drvs = execFileSync("nix-instantiate", ["--option", "substituters", "", join(work, "drvs.nix")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    })
      .trim()
      .split("\n");
    created = [
      ...drvs,
      execFileSync("nix-store", ["--query", "--references", drvs[3]], { encoding: "utf8" })
        .split("\n")
        .find((p) => p.includes("offload-drv-src"))!,
    ];
  });

  afterAll(() => {
    spawnSync("nix-store", ["--delete", ...created], { stdio: "ignore" });
    rmSync(work, { recursive: true, force: true });
  });

  test("parse equals nix show-derivation for plain, multi-output, fixed-output and dependent derivations", () => {
    expect(drvs).toHaveLength(4);
    const shown = JSON.parse(execFileSync("nix", ["--extra-experimental-features", "nix-command", "show-derivation", ...drvs], { encoding: "utf8" }));
    for (const drv of drvs) {
      expect(parseDerivation(readFileSync(drv, "utf8"), drv)).toEqual(fromShowDerivation(shown[drv]));
    }
  });

  test("the details that matter to a remote build are right", () => {
    const top = parseDerivation(readFileSync(drvs[3], "utf8"), drvs[3]);
    const dep = parseDerivation(readFileSync(drvs[0], "utf8"), drvs[0]);
    const fixed = parseDerivation(readFileSync(drvs[1], "utf8"), drvs[1]);
    expect([...top.outputs.keys()]).toEqual(["lib", "out"]);
    expect(top.inputDrvs.get(drvs[0])).toEqual(["dev", "out"]);
    expect(top.inputSrcs).toHaveLength(1);
    expect(top.args.slice(2)).toEqual(["tab\there", 'quote"back\\slash', "new\nline\r\n", "unicode ü 日本 😀", "", "dollar ${x}"]);
    expect(top.env.get("weird")).toBe('a\tb\nc"d\\e\r');
    expect(top.env.get("list")).toBe("1 two 1");
    expect(top.env.get("empty")).toBe("");
    expect([...dep.outputs.keys()]).toEqual(["dev", "doc", "out"]);
    expect(fixed.outputs.get("out")).toMatchObject({ hashAlgo: "sha256", hash: createHash("sha256").update("x").digest("hex") });
    expect(parseDerivation(readFileSync(drvs[2], "utf8")).outputs.get("out")?.hashAlgo).toBe("r:sha256");
    expect(top.platform).toBe(
      execFileSync("nix-instantiate", ["--eval", "-E", "builtins.currentSystem", "--json"], { encoding: "utf8" }).trim().replace(/"/g, ""),
    );
  });

  test("every truncation of a real .drv is an OffloadError", () => {
    const text = readFileSync(drvs[3], "utf8");
    for (let cut = 0; cut < text.length; cut++) {
      expect(() => parseDerivation(text.slice(0, cut))).toThrow(OffloadError);
    }
  });
});

describe("parseDerivation on crafted input", () => {
  const out = `("out","/nix/store/${H}-x","","")`;
  const make = (outputs = `[${out}]`, env = "[]") => `Derive(${outputs},[],[],"x86_64-linux","/bin/sh",["-c","a\\nb"],${env})`;

  test("escapes", () => {
    const d = parseDerivation(make(undefined, '[("k","\\"\\\\\\t\\r\\n"),("l","\\q")]'));
    expect(d.env.get("k")).toBe('"\\\t\r\n');
    expect(d.env.get("l")).toBe("q"); // like Nix: an unknown escape is the character itself
    expect(d.args).toEqual(["-c", "a\nb"]);
  });

  test.each([
    ["not a derivation", "hello", 'drv: expected "Derive(" but found "hello" at offset 0 of /nix/store/x.drv'],
    ["empty outputs", make("[]"), /at least one output/],
    ["duplicate output", make(`[${out},${out}]`), `duplicate output "out" at offset ${"Derive([".length + out.length + 1} of`],
    ["duplicate env", make(undefined, '[("a","1"),("a","2")]'), /duplicate environment variable "a"/],
    ["bad output path", make('[("out","/tmp/x","","")]'), /path of output "out": invalid store path "\/tmp\/x"/],
    ["unterminated string", 'Derive([("out', /unterminated string at offset 9/],
    ["trailing text", make() + "\n", /unexpected text after the derivation at offset/],
    ["missing comma", make().replace('"x86_64-linux",', '"x86_64-linux"'), /expected ","/],
  ])("rejects %s", (_why, text, message) => {
    expect(() => parseDerivation(text, "/nix/store/x.drv")).toThrow(OffloadError);
    expect(() => parseDerivation(text, "/nix/store/x.drv")).toThrow(message);
  });

  test("content-addressed outputs may have no path yet", () => {
    expect(parseDerivation(make('[("out","","r:sha256","")]')).outputs.get("out")?.path).toBe("");
  });
});
