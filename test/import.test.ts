// offload import: the founding documents' configurations (Nix 1.x remote-systems.conf, the
// Nix manual's machines, a NixOS user's nix.buildMachines, Guix's machines.scm) and realistic
// variants, against golden machines.ts files that must pass the real config pipeline; and
// malformed inputs, which fail with one line naming file:line, writing nothing. The command
// runs in-process; cli-executable.test.ts runs the executable (standard input).
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfig } from "../src/config/load.js";
import { detectFormat, importMachines, type ImportOptions } from "../src/config/import/index.js";
import { localSystemType, parseStoreUri } from "../src/config/import/nix-entry.js";
import { readSexps } from "../src/config/import/sexp.js";
import { OffloadError, formatLocation } from "../src/errors.js";
import { registerCheck } from "../src/cli/check.js";
import { registerImport } from "../src/cli/import.js";
import { runCommandAsCli } from "./support/run-command.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const FIXTURES = join(ROOT, "test", "fixtures", "import");
/** Golden files name their input relative to the repository, as a user in its root would see it. */
const shown = (file: string) => relative(ROOT, join(FIXTURES, file));

let dir: string;
beforeAll(() => {
  dir = makeSafeDir("import");
  // Goldens name files relative to the repository, so inputs are opened from there.
  process.chdir(ROOT);
});
afterAll(() => removeDir(dir));

function runImport(file: string, options: Partial<ImportOptions> = {}) {
  const warnings: string[] = [];
  const path = join(FIXTURES, file);
  const result = importMachines(readFileSync(path, "utf8"), {
    file: shown(file),
    dir: dirname(path),
    read: (include) => (existsSync(include) ? readFileSync(include, "utf8") : undefined),
    knownHosts: [],
    warn: (at, message) => warnings.push(`${formatLocation(at)}: ${message}`),
    ...options,
  });
  return { ...result, warnings };
}

/** Loads a produced machines.ts through loadConfig, with its key paths pointed at real 0600 key files. */
async function loadImported(text: string, name: string) {
  const sub = join(dir, name);
  mkdirSync(join(sub, "keys"), { recursive: true, mode: 0o755 });
  let keys = 0;
  const withKeys = text.replace(/privateKey: "([^"]*)"/g, () => {
    const key = join(sub, "keys", `id_${keys++}`);
    writeFileSync(key, "-----BEGIN OPENSSH PRIVATE KEY-----\n", { mode: 0o600 });
    return `privateKey: ${JSON.stringify(key)}`;
  });
  const config = join(sub, "machines.ts");
  writeFileSync(config, withKeys, { mode: 0o644 });
  chmodSync(config, 0o644);
  return loadConfig({ config, cacheDir: false });
}

const goldens: [string, string, Partial<ImportOptions>][] = [
  ["nix1-remote-systems", "nix1-remote-systems.conf", { from: "nix1" }],
  ["nix1-hydra", "nix1-hydra.conf", { from: "nix1" }],
  ["nix-manual-example", "nix-manual-example", {}],
  ["nix-builders-value", "nix-builders-value", {}],
  ["nix-machines", "nix-machines", {}],
  ["nixos-buildMachines", "nixos-buildMachines.json", {}],
  ["nixos-with-ssh", "nixos-buildMachines.json", { sshConfig: shown("nixos-ssh_config"), knownHosts: [shown("nixos-ssh_known_hosts")] }],
  ["guix-2014", "guix-machines-2014.scm", {}],
  ["guix", "guix-machines.scm", {}],
];

describe.each(goldens)("%s", (golden, input, options) => {
  test("matches its golden machines.ts, which passes the config pipeline", async () => {
    const { text } = runImport(input, options);
    const goldenFile = join(FIXTURES, "golden", `${golden}.ts`);
    if (process.env.UPDATE_GOLDENS) writeFileSync(goldenFile, text);
    expect(text).toBe(readFileSync(goldenFile, "utf8"));
    const loaded = await loadImported(text, golden);
    // Every record not commented out is a machine.
    expect(loaded.machines).toHaveLength(text.match(/^ {2}buildMachine\(\{$/gm)?.length ?? 0);
  });
});

test("Nix 1.x: the founding document's machines, and its mandatory features", async () => {
  const { text } = runImport("nix1-remote-systems.conf", { from: "nix1" });
  const loaded = await loadImported(text, "nix1-check");
  const poochie = loaded.machines.find((m) => m.name === "poochie.labs.cs.uu.nl")!;
  expect(poochie).toMatchObject({ user: "nix", systems: ["i686-linux"], parallelBuilds: 8, speed: 2, features: ["kvm"], mandatoryFeatures: ["perf"] });
  expect(loaded.machines.map((m) => m.name)).toEqual(["mcflurry.labs.cs.uu.nl", "scratchy.labs.cs.uu.nl", "itchy.labs.cs.uu.nl", "poochie.labs.cs.uu.nl"]);
});

test("Nix 1.x: a line without max jobs was never used, so it is imported disabled, with a warning", () => {
  const { warnings, text } = runImport("nix1-hydra.conf", { from: "nix1" });
  expect(warnings).toContainEqual(
    expect.stringMatching(
      /^test\/fixtures\/import\/nix1-hydra\.conf:4:1: no build slots \(max jobs 0, or none in Nix 1\.x\): Nix never builds there; imported disabled$/,
    ),
  );
  expect(text).toMatch(/name: "mac-mini",[^}]*enabled: false/);
});

test("Nix 2.x: URIs, placeholders, host keys, ;, comments, @includes and what offload keeps as comments", () => {
  const { warnings, text, machines } = runImport("nix-machines");
  expect(machines).toBe(7);
  expect(text).toContain('hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS root@builder1"');
  expect(text).toContain("// test/fixtures/import/machines.d/extra:2:26: ssh://old.example.org x86_64-linux - 0");
  expect(warnings).toContainEqual(
    "test/fixtures/import/machines.d/extra:2:63: no build slots (max jobs 0, or none in Nix 1.x): Nix never builds there; imported disabled",
  );
});

test("Nix 2.x: a store setting offload has no field for is kept as a comment and warned about", () => {
  const path = join(dir, "settings");
  writeFileSync(path, "ssh://nix@b1?remote-program=/opt/nix/bin/nix-store&ssh-key=/root/.ssh/id x86_64-linux - 2 1 - - - extra\n");
  const warnings: string[] = [];
  const { text } = importMachines(readFileSync(path, "utf8"), {
    file: "settings",
    dir,
    read: () => undefined,
    knownHosts: [],
    warn: (at, m) => warnings.push(`${formatLocation(at)}: ${m}`),
  });
  expect(text).toContain("// store setting remote-program=/opt/nix/bin/nix-store has no offload equivalent; not imported");
  expect(text).toContain('privateKey: "/root/.ssh/id"');
  expect(warnings).toContainEqual("settings:1:1: store setting remote-program=/opt/nix/bin/nix-store has no offload equivalent; not imported");
  expect(warnings).toContainEqual("settings:1:99: extra columns ignored by Nix: extra");
});

test("Nix 2.x: no systems means Nix's default, this machine's system, said in a comment", () => {
  const { text } = importMachines("ssh://lonely\n", { file: "m", dir, read: () => undefined, knownHosts: [], warn: () => undefined });
  expect(text).toContain(`systems: [${JSON.stringify(localSystemType())}]`);
  expect(text).toContain(`// no systems given: Nix's default is this machine's system, ${localSystemType()}`);
});

test("NixOS: ssh_config aliases and known_hosts fill in the address, port, user, key and host key", () => {
  const sshConfig = join(dir, "ssh_config");
  writeFileSync(sshConfig, "Host ruby\n  HostName 192.168.5.102\n  Port 2202\n  User builder\n  IdentityFile ~/.ssh/id_ruby\n");
  const json = JSON.stringify([{ hostName: "ruby", systems: ["x86_64-linux"], protocol: "ssh-ng" }]);
  const { text } = importMachines(json, {
    file: "b.json",
    dir,
    read: () => undefined,
    sshConfig,
    knownHosts: [join(FIXTURES, "nixos-ssh_known_hosts")],
    warn: () => undefined,
  });
  expect(text).toMatch(
    /name: "192\.168\.5\.102",\n {4}port: 2202,\n {4}user: "builder",\n {4}systems: \["x86_64-linux"\],\n {4}hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE7n11XxB8B3HjdyAsL3PuLVDZxWCzEOUTJAY8\+goQmW",\n {4}privateKey: "\/[^"]*\/\.ssh\/id_ruby",/,
  );
  expect(text).toContain('// name was "ruby", a Host alias of');
  expect(text).toContain("was ssh-ng://");
});

test("Guix: computed values are TODOs at their line:col, never guessed", () => {
  const { warnings, text } = runImport("guix-machines.scm");
  expect(warnings).toContainEqual(
    "test/fixtures/import/guix-machines.scm:49:2: TODO 49:2: this list of machines is computed by Scheme code, which offload import does not run; write its records by hand",
  );
  expect(warnings).toContainEqual(
    'test/fixtures/import/guix-machines.scm:46:16: TODO 46:16: name is computed by (string-append "gpu" ".example.org"), which offload import does not run; write its value here',
  );
  expect(text).toContain('  // buildMachine({\n  //   daemon: "guix",\n  //   systems: ["x86_64-linux"],\n  //   features: ["cuda"],\n  // }),');
  expect(text).not.toContain("rack1");
  // A Guix machine is guix-daemon's, reached at its daemon-socket.
  expect(text).toContain('    daemon: "guix",');
  expect(text).toContain('    remoteStore: "/var/guix/daemon-socket/socket",');
});

test.each([
  ["nix@mac", { scheme: "ssh", user: "nix", host: "mac", params: [] }],
  ["ssh://mac:2222", { scheme: "ssh", host: "mac", port: 2222, params: [] }],
  [
    "ssh-ng://u@[fd00::5]:22?ssh-key=%2Froot%2Fk&remote-store=/x",
    {
      scheme: "ssh-ng",
      user: "u",
      host: "fd00::5",
      port: 22,
      params: [
        ["ssh-key", "/root/k"],
        ["remote-store", "/x"],
      ],
    },
  ],
  ["ssh://nix@fd00::5", { scheme: "ssh", user: "nix", host: "fd00::5", params: [] }],
  ["daemon", undefined],
  ["local?root=/srv", undefined],
  ["/srv/store", undefined],
  ["http://cache.example.org", undefined],
  ["ssh://mac:ssh", undefined],
  ["ssh://mac/path", undefined],
])("store URI %s", (uri, expected) => {
  expect(parseStoreUri(uri)).toEqual(expected);
});

test("the format is detected", () => {
  for (const [file, format] of [
    ["nix1-remote-systems.conf", "nix"],
    ["nix-machines", "nix"],
    ["nixos-buildMachines.json", "nixos-json"],
    ["guix-machines.scm", "guix"],
    ["guix-machines-2014.scm", "guix"],
  ] as const) {
    expect([file, detectFormat(readFileSync(join(FIXTURES, file), "utf8"))]).toEqual([file, format]);
  }
  expect(detectFormat("#| a block comment |#\n;; a line comment\n(list)")).toBe("guix");
  expect(detectFormat('  {"nix": {"buildMachines": []}}')).toBe("nixos-json");
});

describe("s-expression reader", () => {
  const read = (text: string) => readSexps(text, "m.scm");
  const plain = (text: string): unknown => {
    const strip = (d: ReturnType<typeof read>[number]): unknown =>
      d.kind === "list" || d.kind === "vector"
        ? { [d.kind]: d.items.map(strip), ...(d.kind === "list" && d.tail ? { tail: strip(d.tail) } : {}) }
        : d.kind === "symbol"
          ? `'${d.name}`
          : "value" in d
            ? d.value
            : `#:${d.name}`;
    return read(text).map(strip);
  };

  test("strings with escapes and line continuations", () => {
    expect(
      plain(String.raw`"a\"b\\c\n\t\x41;\x42\u00e9" "one \
        line"`),
    ).toEqual(['a"b\\c\n\tABé', "one line"]);
  });

  test("comments: line, nested block, #! and datum comments", () => {
    expect(plain("a ; x\n#| b #| c |# d |# e #!guile !# f #;(g h) i #; #;j k l")).toEqual(["'a", "'e", "'f", "'i", "'l"]);
  });

  test("quote, quasiquote, unquote, unquote-splicing, gexps", () => {
    expect(plain("'x `(a ,b ,@c) #~(d #$e)")).toEqual([
      { list: ["'quote", "'x"] },
      { list: ["'quasiquote", { list: ["'a", { list: ["'unquote", "'b"] }, { list: ["'unquote-splicing", "'c"] }] }] },
      { list: ["'gexp", { list: ["'d", { list: ["'ungexp", "'e"] }] }] },
    ]);
  });

  test("numbers, booleans, characters, keywords, vectors, pairs, brackets", () => {
    expect(plain("2. .5 -3 1e3 3/2 #x1F #e1.5 #t #f #true #false #\\a #\\space #:key #(1 2) (a . b) [c]")).toEqual([
      2,
      0.5,
      -3,
      1000,
      1.5,
      31,
      1.5,
      true,
      false,
      true,
      false,
      "a",
      " ",
      "#:key",
      { vector: [1, 2] },
      { list: ["'a"], tail: "'b" },
      { list: ["'c"] },
    ]);
    expect(plain("1+ - ... ->x")).toEqual(["'1+", "'-", "'...", "'->x"]);
  });

  test("positions are line:column of each datum", () => {
    const [list] = read('\n  (build-machine\n    (name "x"))');
    expect(list!.start).toMatchObject({ line: 2, column: 3 });
    expect(list!.kind === "list" && list!.items[1]!.start).toMatchObject({ line: 3, column: 5 });
  });

  test.each([
    ['(a "b)', /^m\.scm:1:4: unterminated string$/],
    ["(a (b)", /^m\.scm:1:1: missing '\)' to close the list opened here$/],
    ["(a))", /^m\.scm:1:4: unexpected '\)' with no list open$/],
    ["(a]", /^m\.scm:1:3: '\]' closes the list opened at 1:1, which needs '\)'$/],
    ['"\\q"', /^m\.scm:1:2: unknown escape \\q in string$/],
    ["#| open", /^m\.scm:1:1: unterminated #\| … \|# comment$/],
    ["#<procedure>", /^m\.scm:1:1: unsupported # syntax: #<procedure>$/],
    ["(a . )", /^m\.scm:1:6: a dot must be followed by a datum$/],
    ["'", /^m\.scm:1:1: ' with no datum after it$/],
  ])("%j is refused with its position", (text, expected) => {
    let error: unknown;
    try {
      read(text);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(OffloadError);
    const failure = error as OffloadError;
    expect(`${formatLocation(failure.location!)}: ${failure.message}`).toMatch(expected);
  });
});

describe("the command", () => {
  const cli = (args: string[]) => runCommandAsCli(registerImport, ["import", ...args], { OFFLOAD_CACHE_DIR: join(dir, "cache") });

  test("prints to standard output; --out writes a file check --static accepts and refuses to overwrite it without --force", async () => {
    const input = join(FIXTURES, "nix-builders-value");
    const printed = await cli([input]);
    expect(printed.code).toBe(0);
    expect(printed.stdout).toContain('name: "beastie"');

    const out = join(dir, "cli", "machines.ts");
    mkdirSync(dirname(out), { recursive: true, mode: 0o755 });
    const written = await cli([input, "--out", out]);
    expect(written.code).toBe(0);
    expect(written.stdout).toBe("");
    expect(written.stderr).toContain(`offload: wrote ${out} (2 machines, from nix)`);
    expect(readFileSync(out, "utf8")).toBe(printed.stdout);
    const check = await runCommandAsCli(registerCheck, ["check", "--static", "--config", out], { OFFLOAD_CACHE_DIR: join(dir, "cache") });
    expect(check.stderr).toBe("");
    expect(check.stdout).toMatch(/2 machines/);

    const again = await cli([input, "--out", out]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(`offload: ${out} already exists\n  fix: choose another --out, or add --force to replace it\n`);
    expect((await cli([join(FIXTURES, "guix-machines-2014.scm"), "--out", out, "--force"])).code).toBe(0);
    expect(readFileSync(out, "utf8")).toContain("eightysix.example.org");
  });

  // Malformed inputs: exit 1, one line "offload: FILE:LINE:COL: what is wrong", no file written.
  const malformed: [string, string, string, RegExp][] = [
    ["machines", "nix", "ssh://b1 x86_64-linux - 4\nssh://b2 x86_64-linux - eight\n", /:2:25: column 4 \(max jobs\) must be a whole number, not "eight"$/],
    ["machines", "nix", "ssh://b1 x86_64-linux - 1 fast\n", /:1:27: column 5 \(speed factor\) must be a number, not "fast"$/],
    ["machines", "nix", "ssh://b1 x86_64-linux - 1 -2\n", /:1:27: speed factor -2 is negative \(Nix: "speed factor must be >= 0"\)$/],
    ["machines", "nix", "ssh://b1 x86_64-linux - - - - - not*base64\n", /:1:33: public host key "not\*base64" is not base64/],
    [
      "machines",
      "nix",
      `ssh://b1 x86_64-linux - - - - - ${Buffer.from("hello world").toString("base64")}\n`,
      /:1:33: public host key decodes to "hello world", not an OpenSSH public key line/,
    ],
    ["machines", "nix", "ssh://b1 x86_64-linux\n  @missing.d/machines\n", /:2:3: @missing\.d\/machines: .*\/missing\.d\/machines does not exist$/],
    ["machines", "nix", "@machines\n", /:1:1: @machines includes itself \(through .*\/machines\)$/],
    ["machines", "nix", "- x86_64-linux\n", /:1:1: the first column must name the machine/],
    ["b.json", "nixos-json", '[\n  {"hostName": "a" "maxJobs": 1}\n]', /:2:20: expected "," or "}" in JSON, found "\\""$/],
    ["b.json", "nixos-json", '[{"hostName": "a", "maxJobs": "3"}]', /:1:31: maxJobs must be a number ≥ 0, not the string "3"$/],
    ["b.json", "nixos-json", '[{"sshUser": "nix"}]', /:1:2: buildMachines\[0\] has no hostName$/],
    ["b.json", "nixos-json", '{"builders": []}', /:1:1: expected the JSON of nix.buildMachines \(a list\), found an attribute set/],
    ["machines.scm", "guix", '(list (build-machine (systems (list "x86_64-linux"))\n  (name "a)))', /:2:9: unterminated string$/],
    ["machines.scm", "guix", '(list (build-machine (name "a") (systems (list "x86_64-linux")))', /:1:1: missing '\)' to close the list opened here$/],
    ["machines.scm", "guix", '(list (build-machine\n  (name 42) (systems (list "x86_64-linux"))))', /:2:9: \(name 42\): name must be a string$/],
    ["machines.scm", "guix", '(list (build-machine (name "a") (user "bob")))', /:1:7: build-machine has no systems field$/],
    ["machines.scm", "guix", '\'((build-machine (name "a") (systems \'("x86_64-linux"))))', /:1:1: .* is quoted data, not build-machine records/],
    ["machines.scm", "guix", '(list (build-machine (name "a") systems))', /:1:33: systems is not a field of build-machine: write \(field value\)$/],
    ["machines.scm", "guix", "(use-modules (gnu))", /:1:1: no list of build machines found/],
  ];
  test.each(malformed)("%s (%s): %j", async (name, format, text, expected) => {
    const sub = join(dir, `bad-${malformed.findIndex((m) => m[2] === text)}`);
    mkdirSync(sub, { recursive: true, mode: 0o755 });
    const input = join(sub, name);
    writeFileSync(input, text);
    const out = join(sub, "out.ts");
    const result = await cli([input, "--out", out]);
    expect(detectFormat(text)).toBe(format);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    expect(result.stderr.split("\n")).toHaveLength(2); // one line, then the final newline
    expect(result.stderr).toMatch(new RegExp(`^offload: ${input.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:`));
    expect(result.stderr.trimEnd()).toMatch(expected);
    expect(existsSync(out)).toBe(false);
  });

  test("--ssh-config and --known-hosts must exist; a jump host offload cannot use stays a comment", async () => {
    const missing = await cli([join(FIXTURES, "nixos-buildMachines.json"), "--ssh-config", join(dir, "no-ssh-config")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^offload: --ssh-config .*no-ssh-config does not exist\n/);

    const sshConfig = join(dir, "jump_config");
    writeFileSync(sshConfig, "Host kana\n  HostName 10.0.0.3\n  ProxyJump bastion\n");
    const input = join(dir, "jump.json");
    writeFileSync(input, '[{"hostName": "kana", "systems": ["x86_64-linux"]}]');
    const jumped = await cli([input, "--ssh-config", sshConfig]);
    expect(jumped.code).toBe(0);
    expect(jumped.stdout).toContain('name: "kana",');
    expect(jumped.stdout).toMatch(/\/\/ .*jump_config: kana: the SSH config sets ProxyJump bastion, which offload does not support; not applied/);
    expect(jumped.stderr).toMatch(new RegExp(`^offload: warning: ${input.replace(/[.]/g, "\\.")}:1:2: .*ProxyJump bastion`, "m"));
  });

  test("an unreadable input is one clean error", async () => {
    const result = await cli([join(dir, "no-such-file")]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^offload: cannot read .*no-such-file: ENOENT/);
  });
});
