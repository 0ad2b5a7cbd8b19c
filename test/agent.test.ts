// offload agent: connections and warm serve sessions kept between builds. Builds must work
// the same with or without it, and the daemon must never wait on it.
import { execFile } from "node:child_process";
import { readFileSync, existsSync, statSync, mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { startSshd, stopSshd } from "../src/lab/sshd.js";
import { AGENT_SOCKET, Frame, FrameReader, frame } from "../src/agent/agent-frames.js";
import type { Lab } from "../src/lab/index.js";
import { HOOK } from "./support/hook.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { copyLabConfig } from "./support/lab-config.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const run = promisify(execFile);

test("frames survive any chunking", () => {
  const frames: [Frame, Buffer][] = [
    [Frame.Request, Buffer.from('{"machine":{}}')],
    [Frame.Stdin, Buffer.alloc(100_000, 7)],
    [Frame.StdinEnd, Buffer.alloc(0)],
    [Frame.Exit, Buffer.from('{"code":0}')],
  ];
  const bytes = Buffer.concat(frames.map(([type, payload]) => frame(type, payload)));
  for (const size of [1, 3, 5, 4096, bytes.length]) {
    const seen: [Frame, Buffer][] = [];
    const reader = new FrameReader((type, payload) => seen.push([type, Buffer.from(payload)]));
    for (let at = 0; at < bytes.length; at += size) reader.push(bytes.subarray(at, at + size));
    // Buffer.equals, not toEqual: jest compares 100 kB buffers element by element, slowly.
    expect(seen.map(([type]) => type)).toEqual(frames.map(([type]) => type));
    seen.forEach(([, payload], i) => expect(payload.equals(frames[i]![1])).toBe(true));
  }
});

describe("with a lab", () => {
  let lab: Lab;
  let dir: string;
  beforeAll(async () => {
    lab = await startTestLab({ builders: 1 });
    dir = makeSafeDir("agent");
    writeFileSync(
      join(dir, "one.nix"),
      `{ salt }: derivation { name = "one"; inherit salt; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo $salt > $out" ]; }\n`,
    );
  }, LAB_UP_TIMEOUT_MS);
  afterAll(async () => {
    await stopTestLab(lab);
    if (dir) removeDir(dir);
  });

  const configDir = (name: string) => copyLabConfig(lab, dir, name);

  async function build(config: string, salt: string, env: NodeJS.ProcessEnv = {}) {
    return run(
      "nix-build",
      [join(dir, "one.nix"), "--argstr", "salt", salt, "--option", "build-hook", HOOK, "--max-jobs", "0", "--option", "substituters", "", "--no-out-link"],
      {
        env: { ...process.env, OFFLOAD_CONFIG_DIR: config, OFFLOAD_STATE_DIR: join(config, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache"), ...env },
        timeout: 60_000,
      },
    );
  }

  const agentLog = (config: string) => (existsSync(join(config, "state", "agent.log")) ? readFileSync(join(config, "state", "agent.log"), "utf8") : "");

  async function waitFor(predicate: () => boolean) {
    for (let i = 0; i < 100 && !predicate(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(predicate()).toBe(true);
  }

  test("the first build starts the agent; later builds reuse its one connection", async () => {
    const config = configDir("reuse");
    await build(config, `reuse-1-${Date.now()}`); // direct: no agent yet, one is started
    await waitFor(() => agentLog(config).includes("listening on"));
    expect(statSync(join(config, "state", AGENT_SOCKET)).mode & 0o777).toBe(0o600);
    for (let i = 2; i <= 4; i++) {
      const { stdout } = await build(config, `reuse-${i}-${Date.now()}`);
      expect(readFileSync(stdout.trim(), "utf8")).toContain(`reuse-${i}-`);
    }
    expect(agentLog(config).match(/connected to /g)).toHaveLength(1);
  });

  test("builds go on when the agent dies, and a new agent takes over", async () => {
    const config = configDir("killed");
    await build(config, `killed-1-${Date.now()}`);
    await waitFor(() => agentLog(config).includes("listening on"));
    await build(config, `killed-2-${Date.now()}`);
    process.kill(Number(/\(pid (\d+)\)/.exec(agentLog(config))![1]), "SIGKILL");
    const { stdout } = await build(config, `killed-3-${Date.now()}`);
    expect(existsSync(stdout.trim())).toBe(true);
    await waitFor(() => (agentLog(config).match(/listening on/g) ?? []).length === 2);
  });

  test("an agent whose state dir is removed exits by itself", async () => {
    const config = configDir("removed");
    await build(config, `removed-${Date.now()}`);
    await waitFor(() => agentLog(config).includes("listening on"));
    const pid = Number(/\(pid (\d+)\)/.exec(agentLog(config))![1]);
    removeDir(join(config, "state"));
    const alive = () => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 100 && alive(); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(alive()).toBe(false);
  });

  test("a warm session that died with its machine's sshd is detected before accept; the build connects directly", async () => {
    const config = configDir("dead-session");
    await build(config, `dead-1-${Date.now()}`);
    await waitFor(() => agentLog(config).includes("listening on"));
    await build(config, `dead-2-${Date.now()}`); // the agent now holds a warm session
    const builder = lab.builders[0]!;
    await stopSshd(builder); // ends every session of the builder, the agent's too
    await startSshd(builder, builder);
    const { stdout, stderr } = await build(config, `dead-3-${Date.now()}`);
    expect(existsSync(stdout.trim())).toBe(true);
    expect(stderr).toMatch(new RegExp(`the agent's session to ${builder.address.replace(/\./g, "\\.")} is dead \\(.*\\); connecting directly`));
  });

  test("an agent of another version (its own socket) is never spoken to: the hook starts one of its own", async () => {
    const config = configDir("other-version");
    mkdirSync(join(config, "state"), { mode: 0o755 });
    // Stands where an older offload's agent listens, and would answer with nonsense.
    const older = createServer((socket) => socket.end(frame(Frame.Ready, "{not json")));
    await new Promise<void>((resolve) => older.listen(join(config, "state", "agent-0.0.1-p1.sock"), resolve));
    try {
      const { stdout, stderr } = await build(config, `other-version-${Date.now()}`);
      expect(existsSync(stdout.trim())).toBe(true);
      expect(stderr).not.toContain("malformed frame");
      expect(AGENT_SOCKET).not.toBe("agent-0.0.1-p1.sock");
      // The build started an agent of this version; it listens on its own socket once up.
      await waitFor(() => agentLog(config).includes("listening on"));
      expect(statSync(join(config, "state", AGENT_SOCKET)).isSocket()).toBe(true);
    } finally {
      older.close();
    }
  });

  test("an agent that sends a malformed frame (another version, a stray process) costs a direct connection, not a crash", async () => {
    const config = configDir("malformed");
    mkdirSync(join(config, "state"), { mode: 0o755 });
    const impostor = createServer((socket) => socket.end(frame(Frame.Ready, "{not json")));
    await new Promise<void>((resolve) => impostor.listen(join(config, "state", AGENT_SOCKET), resolve));
    try {
      const { stdout, stderr } = await build(config, `malformed-${Date.now()}`);
      expect(existsSync(stdout.trim())).toBe(true);
      expect(stderr).toContain("offload agent sent a malformed frame");
      expect(stderr).toContain("connecting directly");
      expect(stderr).not.toMatch(/SyntaxError|at .*\.js:\d+/);
    } finally {
      impostor.close();
    }
  });

  test("memory stays bounded whatever the output size: a 512 MiB output through the agent", async () => {
    const config = configDir("big");
    await build(config, `big-warm-${Date.now()}`); // starts the agent
    await waitFor(() => agentLog(config).includes("listening on"));
    const pid = Number(/\(pid (\d+)\)/.exec(agentLog(config))![1]);
    const big = join(dir, "big.nix");
    writeFileSync(
      big,
      `{ salt }: derivation { name = "big"; inherit salt; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "/usr/bin/head -c 536870912 /dev/zero > $out" ]; }\n`,
    );
    const { stdout } = await run(
      "nix-build",
      [big, "--argstr", "salt", `big-${Date.now()}`, "--option", "build-hook", HOOK, "--max-jobs", "0", "--option", "substituters", "", "--no-out-link"],
      {
        env: { ...process.env, OFFLOAD_CONFIG_DIR: config, OFFLOAD_STATE_DIR: join(config, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") },
        timeout: 300_000,
      },
    );
    expect(statSync(stdout.trim()).size).toBe(536870912);
    // The agent's peak resident memory over its whole life (it relayed the whole NAR).
    const peakKiB = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);
    expect(peakKiB).toBeLessThan(200 * 1024);
    await run("nix-store", ["--delete", stdout.trim()]);
  }, 300_000);

  test("OFFLOAD_AGENT=0 connects directly and starts no agent", async () => {
    const config = configDir("direct");
    await build(config, `direct-${Date.now()}`, { OFFLOAD_AGENT: "0" });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(agentLog(config)).toBe("");
  });
});
