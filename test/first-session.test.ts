// The README's "A first session", run: each `# command` of its transcript in a fresh config
// directory standing for /etc/offload, its output compared with the lines the README shows
// after it (`…` matches anything). What these commands print cannot change without the
// README saying so. And `offload init`'s template: its commented examples, uncommented, pass.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { generateKeyPair } from "../src/nix/keys.js";
import { runCli } from "./support/cli.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const BIN = fileURLToPath(new URL("../bin/offload.js", import.meta.url));
const README = fileURLToPath(new URL("../README.md", import.meta.url));
const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS";

let dir: string;
beforeAll(() => {
  dir = makeSafeDir("first-session");
});
afterAll(() => removeDir(dir));

interface Step {
  command: string;
  expected: string[];
}

/** The commands and outputs of the README section's console block. */
function transcript(section: string): Step[] {
  const text = readFileSync(README, "utf8");
  const start = text.indexOf(`## ${section}\n`);
  expect(start).toBeGreaterThanOrEqual(0);
  const block = /```console\n([\s\S]*?)```/.exec(text.slice(start))![1]!;
  const steps: Step[] = [];
  const lines = block.split("\n").slice(0, -1);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (!line.startsWith("# ")) {
      steps.at(-1)!.expected.push(line);
      continue;
    }
    const command = [line.slice(2)];
    // A here-document belongs to its command.
    if (line.endsWith("<<'EOF'")) while (lines[i] !== "EOF") command.push(lines[++i]!);
    steps.push({ command: command.join("\n"), expected: [] });
  }
  return steps;
}

test("README, A first session: init, keygen, authorize, check --static print what the README shows", () => {
  const configDir = join(dir, "etc-offload");
  const work = join(dir, "work");
  mkdirSync(work, { mode: 0o755 });
  // builder1's public key, as copied from it.
  writeFileSync(join(work, "builder1-signing-key.pub"), `${generateKeyPair("builder1-1").publicKey.toString()}\n`);
  const here = (text: string) => text.replaceAll("/etc/offload", configDir);
  const env = { ...process.env, OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(dir, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") };
  const steps = transcript("A first session");
  expect(steps.map((step) => step.command.split("\n")[0])).toEqual(
    expect.arrayContaining(["offload init", "offload keygen", "offload authorize builder1-signing-key.pub", "offload check --static"]),
  );
  for (const step of steps) {
    const script = `offload() { "${process.execPath}" "${BIN}" "$@"; }\n${here(step.command)}`;
    const result = spawnSync("sh", ["-c", `{ ${script}\n} 2>&1`], { cwd: work, env, encoding: "utf8" });
    const actual = result.stdout
      .replace(/\n$/, "")
      .split("\n")
      .filter((line, _, all) => all.length > 1 || line !== "");
    const expected = step.expected.map((line) => here(line).replaceAll("ruby", hostname()));
    const patterns = expected.map(
      (line) =>
        new RegExp(
          `^${line
            .split("…")
            .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
            .join(".+")}$`,
        ),
    );
    // Lines that match show as the README has them: a difference shows as a diff.
    expect({ command: step.command, status: result.status, output: actual.map((line, i) => (patterns[i]?.test(line) ? expected[i] : line)) }).toEqual({
      command: step.command,
      status: 0,
      output: expected,
    });
  }
});

test("offload init's template: its commented examples (one machine, a fleet from a table of host keys) pass once uncommented", async () => {
  const configDir = join(dir, "template");
  const init = await runCli(["init", configDir], { OFFLOAD_CACHE_DIR: join(dir, "cache") });
  expect(init.code).toBe(0);
  const privateKey = join(dir, "id_builders");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", privateKey]);
  const code = /^(\s*)\/\/ ((?:const | {2}|\};|\.\.\.|buildMachine\(|\}\)).*)$/;
  const uncommented = readFileSync(join(configDir, "machines.ts"), "utf8")
    .split("\n")
    .map((line) => line.replace(code, "$1$2"))
    .join("\n")
    .replaceAll('"ssh-ed25519 AAAA..."', JSON.stringify(HOST_KEY))
    .replaceAll("/root/.ssh/id_builders", privateKey)
    .replaceAll('"builder1-1:..."', JSON.stringify(generateKeyPair("builder1-1").publicKey.toString()));
  writeFileSync(join(configDir, "machines.ts"), uncommented);
  const result = await runCli(["check", "--static", "--config", join(configDir, "machines.ts")], { OFFLOAD_CACHE_DIR: join(dir, "cache") });
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  expect(result.stdout).toContain("machines.ts: 3 machines");
  expect(result.stdout).toMatch(/^builder1\s+nix@builder1\.example\.org:22\s+x86_64-linux,i686-linux\s+4\s+2\s+kvm,big-parallel$/m);
  expect(result.stdout).toMatch(/^ruby\s+nix@ruby\s+x86_64-linux\s/m);
  expect(result.stdout).toMatch(/^kana\s+nix@kana\s+x86_64-linux\s/m);
});
