// bin/offload-hook, the hook Nix runs: with an `offload agent` up, the agent serves the hook
// on the daemon's own pipes (agent/hook-door.ts, hook/served.ts) and the script only waits
// for the exit status; without one, the hook runs in a Node process of its own. Both must
// be the same hook to the daemon: answers, build log, exit codes, and being stopped.
import { spawn } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AGENT_NAME, AGENT_PID, HOOKS_DIR } from "../src/agent/agent-frames.js";
import type { Lab } from "../src/lab/index.js";
import { CLIENT_USER, startMasterHost } from "../src/lab/index.js";
import { runInHost, stopHost } from "../src/lab/host.js";
import { acquireSlot } from "../src/select/slots.js";
import { PACKAGE_ROOT } from "../src/package-root.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { copyLabConfig } from "./support/lab-config.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const HOOK = join(PACKAGE_ROOT, "bin", "offload-hook");
/** The remote build of the tests that stop a build midway (nix-build's own command line only contains it). */
const SLEEPING = ["/bin/sleep", "300"];

test("dist/agent-name, which the script reads, names this version's agent", () => {
  expect(readFileSync(join(PACKAGE_ROOT, "dist", "agent-name"), "utf8")).toBe(`${AGENT_NAME}\n`);
});

describe("with a lab", () => {
  let lab: Lab;
  let dir: string;
  beforeAll(async () => {
    lab = await startTestLab({ builders: 1 });
    dir = makeSafeDir("hook-door");
    // `script` runs on the builder; `salt` makes every build new.
    writeFileSync(
      join(dir, "job.nix"),
      `{ salt, script ? "echo $salt > $out" }: derivation { name = "job"; inherit salt; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; }\n`,
    );
  }, LAB_UP_TIMEOUT_MS);
  afterAll(async () => {
    await stopTestLab(lab);
    if (dir) removeDir(dir);
  });

  const configDir = (name: string) => copyLabConfig(lab, dir, name);

  function nixBuild(config: string, salt: string, script?: string, env: NodeJS.ProcessEnv = {}) {
    const args = [join(dir, "job.nix"), "--argstr", "salt", salt, ...(script ? ["--argstr", "script", script] : [])];
    return spawn("nix-build", [...args, "--option", "build-hook", HOOK, "--max-jobs", "0", "--option", "substituters", "", "--no-out-link"], {
      env: { ...process.env, OFFLOAD_CONFIG_DIR: config, OFFLOAD_STATE_DIR: join(config, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache"), ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
  }

  async function build(config: string, salt: string, script?: string, env: NodeJS.ProcessEnv = {}) {
    const child = nixBuild(config, salt, script, env);
    return finished(child);
  }

  function finished(child: ReturnType<typeof nixBuild>): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
    const started = Date.now();
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr, ms: Date.now() - started })));
  }

  const agentLog = (config: string) => (existsSync(join(config, "state", "agent.log")) ? readFileSync(join(config, "state", "agent.log"), "utf8") : "");
  const agentPid = (config: string) => Number(readFileSync(join(config, "state", AGENT_PID), "utf8"));

  async function waitFor(what: string, predicate: () => boolean, ms = 10_000) {
    const deadline = Date.now() + ms;
    while (!predicate() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    if (!predicate())
      throw new Error(
        `waited ${ms} ms for ${what}; ${
          process.env.DEBUG_LOGS
            ? readdirSync(dir)
                .map((d) => agentLog(join(dir, d)))
                .join("\n")
            : ""
        }`,
      );
  }

  /** Processes on this machine (builders included: they share its PID view) whose command line contains `text`, or is `argv`. */
  function processes(text: string | string[]): number[] {
    return readdirSync("/proc")
      .filter((name) => /^\d+$/.test(name))
      .filter((pid) => {
        try {
          const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
          return typeof text === "string" ? cmdline.includes(text) : cmdline === text.map((arg) => `${arg}\0`).join("");
        } catch {
          return false;
        }
      })
      .map(Number);
  }

  /** Those of `pids` run with this config dir's state dir (other test files run hooks meanwhile). */
  function ofState(pids: number[], config: string): number[] {
    return pids.filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`, "utf8").includes(`OFFLOAD_STATE_DIR=${join(config, "state")}\0`);
      } catch {
        return false;
      }
    });
  }

  async function withAgent(name: string): Promise<string> {
    const config = configDir(name);
    const first = await build(config, `${name}-first-${Date.now()}`); // no agent yet: its own process, which starts one
    expect(first.code).toBe(0);
    await waitFor("the agent", () => existsSync(join(config, "state", AGENT_PID)));
    return config;
  }

  test("with an agent up, it serves the hook: the output is verified and imported, the builder's log shown, no Node hook started", async () => {
    const config = await withAgent("served");
    const salt = `served-${Date.now()}`;
    const child = nixBuild(config, salt, "echo log-line-$salt >&2; echo $salt > $out");
    // A Node hook process would show its entry point in a command line while the build runs.
    let nodeHooks = 0;
    const watch = setInterval(() => (nodeHooks += ofState(processes(join(PACKAGE_ROOT, "dist", "hook.js")), config).length), 5);
    const result = await finished(child);
    clearInterval(watch);
    expect(result.code).toBe(0);
    expect(readFileSync(result.stdout.trim(), "utf8")).toBe(`${salt}\n`);
    expect(result.stderr).toContain(`log-line-${salt}`);
    expect(result.stderr).toMatch(/signature by \S+ verified/);
    expect(nodeHooks).toBe(0);
    expect(agentLog(config)).toMatch(/hook \d+: served, exit 0/);
    // Every status FIFO is gone once its hook has exited.
    expect(readdirSync(join(config, "state", HOOKS_DIR))).toEqual([]);
  });

  test("a failing build fails as with a hook process: Nix's exit code, the builder's log, offload's reason", async () => {
    const config = await withAgent("failing");
    const salt = `failing-${Date.now()}`;
    const result = await build(config, salt, "echo failing-$salt >&2; exit 3");
    expect(result.code).toBe(100);
    expect(result.stderr).toContain(`failing-${salt}`);
    expect(result.stderr).toMatch(/offload: build on \S+ failed \(PermanentFailure\)/);
    expect(agentLog(config)).toMatch(/hook \d+: served, exit 100/);
  });

  test("stopped by the daemon (nix-build interrupted), a served hook ends the remote build and frees its slot", async () => {
    const config = await withAgent("stopped");
    const salt = `stopped-${Date.now()}`;
    const child = nixBuild(config, salt, `/bin/sleep 300; echo $salt > $out`);
    const done = finished(child);
    await waitFor("the remote build", () => processes(SLEEPING).length > 0, 20_000);
    child.kill("SIGINT"); // nix-build kills its hooks, as the daemon does for a cancelled build
    const result = await done;
    expect(result.code).not.toBe(0);
    await waitFor("the agent to stop the hook", () => agentLog(config).includes("stopped by the daemon"), 5000);
    await waitFor("the remote build to end", () => processes(SLEEPING).length === 0, 10_000);
    // The slot is free again: the next build is accepted at once, not postponed.
    const next = await build(config, `stopped-next-${Date.now()}`);
    expect(next.code).toBe(0);
    expect(next.stderr).not.toContain("postpone");
  }, 60_000);

  test("an agent that dies while serving fails the build at once, saying so; the next build runs and starts a new agent", async () => {
    const config = await withAgent("agent-dies");
    const child = nixBuild(config, `agent-dies-${Date.now()}`, `/bin/sleep 300`);
    const done = finished(child);
    await waitFor("the remote build", () => processes(SLEEPING).length > 0, 20_000);
    const pid = agentPid(config);
    process.kill(pid, "SIGKILL");
    const result = await done;
    expect(result.code).not.toBe(0);
    expect(result.ms).toBeLessThan(30_000);
    expect(result.stderr).toContain(`offload: the agent (pid ${pid}) serving this build hook stopped`);
    // Its pid file stays behind, naming a dead process (here a zombie: nothing reaps it at
    // once) and its door: the next hook runs on its own.
    const next = await build(config, `agent-dies-next-${Date.now()}`);
    expect(next.code).toBe(0);
    await waitFor("a new agent", () => existsSync(join(config, "state", AGENT_PID)) && agentPid(config) !== pid);
  }, 60_000);

  test("Nix 2.34's nix-daemon, a non-root client: its agent serves the hooks; SIGTERM (how Nix 2.35 stops a hook) ends one at once and frees its slot", async () => {
    const config = configDir("nix-2.34");
    const state = join(config, "state");
    const client = join(lab.dir, "hook-door-client");
    mkdirSync(client, { mode: 0o755 });
    copyFileSync(join(dir, "job.nix"), join(client, "job.nix"));
    chmodSync(join(client, "job.nix"), 0o644);
    const env = { OFFLOAD_CONFIG_DIR: config, OFFLOAD_STATE_DIR: state, OFFLOAD_CACHE_DIR: join(dir, "cache") };
    const master = await startMasterHost({
      dir: join(lab.dir, "master-234"),
      nix: "2.34",
      shared: [lab.dir, dir],
      nixConf: [`build-hook = ${HOOK}`, "max-jobs = 0"],
      daemonEnv: env,
    });
    try {
      const clientBuild = (salt: string, script?: string) =>
        runInHost(
          master,
          ["nix-build", join(client, "job.nix"), "--argstr", "salt", salt, ...(script ? ["--argstr", "script", script] : []), "--no-out-link"],
          { env: { NIX_REMOTE: "daemon" }, user: CLIENT_USER, timeoutMs: 60_000 },
        );
      expect((await clientBuild(`nix-234-first-${Date.now()}`)).code).toBe(0); // its own process; starts the agent in the master
      await waitFor("the agent", () => existsSync(join(state, AGENT_PID)));
      const salt = `nix-234-served-${Date.now()}`;
      const served = await clientBuild(salt);
      expect(served.code).toBe(0);
      expect(readFileSync(join(master.dir, served.stdout.trim()), "utf8")).toBe(`${salt}\n`); // in the master's own store
      expect(agentLog(config)).toMatch(/hook \d+: served, exit 0/);

      const building = clientBuild(`nix-234-sigterm-${Date.now()}`, "/bin/sleep 300");
      await waitFor("the remote build", () => processes(SLEEPING).length > 0, 20_000);
      // The script: the only process running bin/offload-hook with this state dir.
      const [script] = ofState(processes(HOOK), config);
      expect(script).toBeDefined();
      const sent = Date.now();
      process.kill(script!, "SIGTERM");
      await waitFor("the script to end", () => !processes(HOOK).includes(script!), 500); // a zombie (not reaped yet) has no command line
      expect(Date.now() - sent).toBeLessThan(500); // Nix 2.35 sends SIGKILL after 500 ms
      expect((await building).code).not.toBe(0);
      await waitFor("the agent to stop the hook", () => agentLog(config).includes("stopped by the daemon"), 5000);
      await waitFor("the remote build to end", () => processes(SLEEPING).length === 0, 10_000);
      const slot = await acquireSlot(state, lab.builders[0]!.address, lab.builders[0]!.parallelBuilds);
      expect(slot).toBeDefined();
      await slot!.release();
    } finally {
      await stopHost(master);
    }
  }, 120_000);

  test("OFFLOAD_AGENT=0: the hook runs on its own and starts no agent", async () => {
    const config = configDir("no-agent");
    const result = await build(config, `no-agent-${Date.now()}`, undefined, { OFFLOAD_AGENT: "0" });
    expect(result.code).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(agentLog(config)).toBe("");
  });
});
