// P7, performance where users are (issue 12): one trivial build and a batch of 10 leaves,
// through offload, Nix 2.8's build-remote (this machine) and Nix 2.34's (a master host of the
// Debian sid root), alternating, on two networked builders of 2 slots each, under the
// conditions a user meets:
//   (a) the fast lab;
//   (b) a login shell that takes 0.5 s to start (the builders' root ~/.bashrc sleeps 0.5 s:
//       every SSH command pays it, as with a .bashrc that loads a version manager);
//   (c) 20 ms round trip and 100 Mbit/s: a delay relay (src/lab/delay-relay.ts) in front of
//       each sshd, tc tbf on each link; the round trip is measured through ssh;
//   (d) a CPU hog on builder 0, and builders busy with offload's own builds only; offload
//       with its default overloadThreshold (0.8) there, ignoring load ((a)–(c): null).
import { sshHostBlock } from "../../src/lab/render.js";
import { spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startDelayRelay, type DelayRelay } from "../../src/lab/delay-relay.js";
import { inHost, runInHost, startHost, stopHost, type Host, type Lab, type LabBuilder } from "../../src/lab/index.js";
import { clearFaults, shapeLink } from "../../src/lab/network.js";
import { labRecord, writeLabConfig } from "../../test/support/lab-config.js";
import { freshSalt, writeExpressions } from "./derivations.js";
import { withLab, type BenchLab } from "./lab.js";
import { timedNixBuild } from "./nix-build.js";
import { conditionsChart } from "./conditions-chart.js";
import type { GuixMedians } from "./guix.js";
import { ms, seconds, type Row } from "./report.js";
import { portableSsh } from "./sid-ssh.js";
import { median } from "./stats.js";

export interface ConditionsOptions {
  trivialRepetitions: number;
  batchRepetitions: number;
  /** Only these conditions (a, b, c, d-hog, d-own); default all. */
  only?: ReadonlySet<string>;
  /** Writes the per-build overhead chart here (SVG). */
  chart?: string;
  /** guix-daemon's figures for the chart (the GUIX benchmark's, fast lab only). */
  guix?: GuixMedians;
  log: (line: string) => void;
}

export const TOOLS = ["offload", "nix 2.8", "nix 2.34"] as const;
export type Tool = (typeof TOOLS)[number];

/** How clients reach the builders: their ssh_config (for Nix) and offload's config dirs. */
interface Route {
  sshConfig: string;
  /** overloadThreshold null (load ignored) and the default (0.8). */
  offload: { ignoreLoad: string; defaultLoad: string };
}

export interface ConditionResult {
  key: string;
  title: string;
  /** Median ms per tool. */
  trivial: Record<Tool, number>;
  batch: Record<Tool, number>;
  /** The first build of each tool in this condition (not in the medians). */
  first: Record<Tool, number>;
  notes: string[];
}

const LEAVES = 10;
const SLOW_LOGIN_S = 0.5;
const RTT_MS = 20;
const RATE_KBIT = 100_000;
const HOG_HEAD_START_S = 25;
const PATH = "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
// Measured inside the master host: its nsenter and chroot are not Nix's time.
const TIMER = 's=$(date +%s%N); "$@"; r=$?; e=$(date +%s%N); echo "offload-bench-elapsed $(( (e - s) / 1000 ))" >&2; exit $r';

function sshConfigText(lab: Lab, targets: { builder: LabBuilder; host: string; port: number }[]): string {
  return targets.map(({ builder, host, port }) => sshHostBlock(lab, builder.name, host, port)).join("\n");
}

function makeRoute(bench: BenchLab, name: string, targets: { builder: LabBuilder; host: string; port: number }[]): Route {
  const sshConfig = join(bench.work, `ssh_config-${name}`);
  writeFileSync(sshConfig, sshConfigText(bench.lab, targets), { mode: 0o644 });
  const records = (threshold: null | undefined) =>
    targets.map(({ builder, host, port }) => labRecord(bench.lab, builder, { host, port, overloadThreshold: threshold }));
  return {
    sshConfig,
    offload: {
      ignoreLoad: writeLabConfig(bench.work, `config-${name}-null`, bench.lab, records(null)),
      // undefined is left out of the record: offload's default threshold applies.
      defaultLoad: writeLabConfig(bench.work, `config-${name}-default`, bench.lab, records(undefined)),
    },
  };
}

/** Median ms of a one-byte round trip through an open `ssh <alias> cat` (20 of them). */
function sshRoundTrip(sshConfig: string, alias: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn("ssh", ["-F", sshConfig, alias, "cat"], { stdio: ["pipe", "pipe", "pipe"] });
    const times: number[] = [];
    let sent = 0n;
    const ping = () => {
      sent = process.hrtime.bigint();
      child.stdin.write("x");
    };
    child.stdout.on("data", () => {
      times.push(Number(process.hrtime.bigint() - sent) / 1e6);
      if (times.length < 21) ping();
      else child.stdin.end();
    });
    child.once("error", reject);
    child.once("close", (code) =>
      times.length >= 21 ? resolve(median(times.slice(1))) : reject(new Error(`ssh ${alias} cat exited with ${code} after ${times.length} round trips`)),
    );
    ping();
  });
}

async function timeSsh(sshConfig: string, alias: string): Promise<number> {
  const started = process.hrtime.bigint();
  await new Promise<void>((resolve, reject) => {
    const child = spawn("ssh", ["-F", sshConfig, alias, "true"], { stdio: "ignore" });
    child.once("error", reject);
    child.once("close", (code) => (code === 0 ? resolve() : reject(new Error(`ssh ${alias} true exited with ${code}`))));
  });
  return Number(process.hrtime.bigint() - started) / 1e6;
}

/** Load as the builders see it (one kernel here: the same for all): 1-minute loadavg and CPU pressure. */
function loadNow(): string {
  const load = readFileSync("/proc/loadavg", "utf8").split(" ")[0];
  const some = /some avg10=([\d.]+)/.exec(readFileSync("/proc/pressure/cpu", "utf8"))?.[1] ?? "?";
  return `loadavg ${load}, cpu pressure some avg10 ${some}%`;
}

export async function measureConditions(options: ConditionsOptions): Promise<{ rows: Row[]; results: ConditionResult[] }> {
  const plain = { features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 2 };
  return withLab("p7", { builders: 2, builderSpecs: [plain, plain], network: true, rootSshConfig: false }, async (bench) => {
    const { lab } = bench;
    const { trivial, leaves } = writeExpressions(bench.work);
    const direct = makeRoute(
      bench,
      "direct",
      lab.builders.map((builder) => ({ builder, host: builder.address, port: builder.port })),
    );
    const sshBin = portableSsh(join(bench.work, "sid-ssh"));
    let master: Host | undefined;
    try {
      master = await startHost({ name: "master", nix: "2.34", dir: join(lab.dir, "master-234"), shared: [lab.dir, bench.work] });
      const results: ConditionResult[] = [];
      const conditions: { key: string; title: string; run: () => Promise<ConditionResult> }[] = [
        { key: "a", title: "(a) fast lab", run: () => measure("a", "(a) fast lab", direct, "ignoreLoad", []) },
        { key: "b", title: `(b) login shell takes ${SLOW_LOGIN_S} s`, run: () => slowLogin() },
        { key: "c", title: `(c) ${RTT_MS} ms RTT, ${RATE_KBIT / 1000} Mbit/s`, run: () => slowNetwork() },
        { key: "d-hog", title: "(d) CPU hog on builder 0, default overloadThreshold", run: () => cpuHog() },
        {
          key: "d-own",
          title: "(d) builders busy with offload's own builds only, default overloadThreshold",
          run: () => measure("d-own", "(d) own builds only, default overloadThreshold", direct, "defaultLoad", [loadNow()]),
        },
      ];
      for (const condition of conditions) {
        if (options.only && !options.only.has(condition.key)) continue;
        options.log(`P7 ${condition.title}…`);
        const result = await condition.run();
        results.push(result);
        options.log(
          `P7 ${condition.title}: trivial ${TOOLS.map((tool) => `${tool} ${ms(result.trivial[tool])}`).join(", ")}; batch ${TOOLS.map((tool) => `${tool} ${seconds(result.batch[tool])}`).join(", ")}`,
        );
      }
      if (options.chart) writeFileSync(options.chart, conditionsChart(results, options.guix));
      return { rows: results.flatMap(rowsOf), results };
    } finally {
      if (master) await stopHost(master);
    }

    async function build(tool: Tool, route: Route, load: keyof Route["offload"], expression: string[]): Promise<number> {
      switch (tool) {
        case "offload":
          return (await timedNixBuild(bench, { kind: "offload", configDir: route.offload[load], maxJobs: 0 }, expression)).ms;
        case "nix 2.8":
          return (await timedNixBuild(bench, { kind: "nix", env: { NIX_SSHOPTS: `-F ${route.sshConfig}` } }, expression)).ms;
        case "nix 2.34": {
          const argv = [
            "sh",
            "-c",
            TIMER,
            "sh",
            "nix-build",
            ...expression,
            "--option",
            "builders",
            `@${lab.nixMachines}`,
            "--max-jobs",
            "0",
            "--option",
            "substituters",
            "",
            "--no-out-link",
          ];
          const result = await runInHost(master!, argv, { env: { PATH: `${sshBin}:${PATH}`, NIX_SSHOPTS: `-F ${route.sshConfig}` }, timeoutMs: 600_000 });
          const elapsed = /offload-bench-elapsed (\d+)/.exec(result.stderr);
          if (result.code !== 0 || !elapsed)
            throw new Error(`nix-build (Nix 2.34) exited with ${result.code}:\n${result.stderr.trim().split("\n").slice(-8).join("\n")}`);
          return Number(elapsed[1]) / 1000;
        }
      }
    }

    async function measure(key: string, title: string, route: Route, load: keyof Route["offload"], notes: string[]): Promise<ConditionResult> {
      const trivialRun = (tool: Tool, tag: string) => build(tool, route, load, [trivial, "--argstr", "salt", freshSalt(`${key}-${tag}`)]);
      const batchRun = (tool: Tool, tag: string) =>
        build(tool, route, load, [leaves, "--argstr", "salt", freshSalt(`${key}-${tag}`), "--arg", "count", String(LEAVES)]);
      const first = {} as Record<Tool, number>;
      for (const tool of TOOLS) first[tool] = await trivialRun(tool, "first");
      const times = { trivial: emptyTimes(), batch: emptyTimes() };
      for (let i = 0; i < options.trivialRepetitions; i++) {
        for (const tool of rotated(i)) times.trivial[tool].push(await trivialRun(tool, "trivial"));
        options.log(
          `P7 ${key} trivial ${i + 1}/${options.trivialRepetitions}: ${TOOLS.map((tool) => `${tool} ${ms(times.trivial[tool].at(-1)!)}`).join(", ")}`,
        );
      }
      for (let i = 0; i < options.batchRepetitions; i++) {
        for (const tool of rotated(i)) {
          times.batch[tool].push(await batchRun(tool, "batch"));
          if (key.startsWith("d")) notes.push(`after ${tool}'s batch: ${loadNow()}`);
        }
      }
      const medians = (values: Record<Tool, number[]>) => Object.fromEntries(TOOLS.map((tool) => [tool, median(values[tool])])) as Record<Tool, number>;
      return { key, title, trivial: medians(times.trivial), batch: medians(times.batch), first, notes };
    }

    async function slowLogin(): Promise<ConditionResult> {
      const rcs = lab.builders.map((builder) => join(builder.home, ".bashrc"));
      for (const rc of rcs) writeFileSync(rc, `# offload benchmark: a login that takes ${SLOW_LOGIN_S} s to start\nsleep ${SLOW_LOGIN_S}\n`, { mode: 0o644 });
      try {
        const login = await timeSsh(direct.sshConfig, lab.builders[0]!.name);
        if (login < SLOW_LOGIN_S * 1000) throw new Error(`ssh … true took ${ms(login)}: the builders' shell did not read ${rcs[0]}`);
        return await measure("b", `(b) login shell takes ${SLOW_LOGIN_S} s`, direct, "ignoreLoad", [`ssh <builder> true: ${ms(login)}`]);
      } finally {
        for (const rc of rcs) rmSync(rc, { force: true });
      }
    }

    async function slowNetwork(): Promise<ConditionResult> {
      const relays: DelayRelay[] = [];
      try {
        for (const builder of lab.builders) {
          relays.push(
            await startDelayRelay({ listen: { host: builder.host.network!.peer }, target: { host: builder.address, port: builder.port }, delayMs: RTT_MS / 2 }),
          );
          await shapeLink(builder.host, { kbit: RATE_KBIT });
        }
        const route = makeRoute(
          bench,
          "slow",
          lab.builders.map((builder, i) => ({ builder, host: relays[i]!.host, port: relays[i]!.port })),
        );
        const name = lab.builders[0]!.name;
        const [before, after] = [await sshRoundTrip(direct.sshConfig, name), await sshRoundTrip(route.sshConfig, name)];
        const notes = [`round trip through ssh: ${ms(before)} direct, ${ms(after)} through the relay (+${ms(after - before)})`];
        return await measure("c", `(c) ${RTT_MS} ms RTT, ${RATE_KBIT / 1000} Mbit/s`, route, "ignoreLoad", notes);
      } finally {
        for (const relay of relays) await relay.close();
        for (const builder of lab.builders) await clearFaults(builder.host);
      }
    }

    async function cpuHog(): Promise<ConditionResult> {
      const host = lab.builders[0]!.host;
      const pidFile = join(bench.work, "hog.pid");
      // Bounded by `timeout` should this process die before it ends it.
      const { file, args } = inHost(host, ["sh", "-c", `echo $$ > ${pidFile}; exec timeout 1800 sh -c 'while :; do :; done'`]);
      const hog = spawn(file, args, { stdio: "ignore" });
      try {
        // The 1-minute load average takes this long to show a third of it: a builder already busy.
        await new Promise((resolve) => setTimeout(resolve, HOG_HEAD_START_S * 1000));
        return await measure("d-hog", "(d) CPU hog on builder 0, default overloadThreshold", direct, "defaultLoad", [
          `hog started ${HOG_HEAD_START_S} s before: ${loadNow()}`,
        ]);
      } finally {
        const pid = readFileSync(pidFile, "utf8").trim();
        await runInHost(host, ["kill", pid]);
        hog.kill();
      }
    }
  });
}

function emptyTimes(): Record<Tool, number[]> {
  return { offload: [], "nix 2.8": [], "nix 2.34": [] };
}

/** Who goes first changes with each repetition, so drift favours no one. */
function rotated(i: number): Tool[] {
  const k = i % TOOLS.length;
  return [...TOOLS.slice(k), ...TOOLS.slice(0, k)];
}

/** Targets of issue 12, against Nix 2.34 in the same run. */
function target(key: string, what: "trivial" | "batch"): number | undefined {
  if (key.startsWith("d")) return 1;
  if (what === "batch") return 0.25;
  return key === "b" || key === "c" ? 0.3 : undefined;
}

function rowsOf(result: ConditionResult): Row[] {
  return (["trivial", "batch"] as const).map((what): Row => {
    const times = result[what];
    const ratio = times.offload / times["nix 2.34"];
    const goal = target(result.key, what);
    const show = what === "trivial" ? ms : seconds;
    return {
      benchmark: "P7",
      measure: `${result.title}: ${what === "trivial" ? "one trivial build" : `${LEAVES} leaves, 2×2 slots`}`,
      offload: show(times.offload),
      other: `Nix 2.34 ${show(times["nix 2.34"])}, Nix 2.8 ${show(times["nix 2.8"])}`,
      ratio: `${ratio.toFixed(2)}× 2.34, ${(times.offload / times["nix 2.8"]).toFixed(2)}× 2.8`,
      target: goal === undefined ? "" : `≤ ${goal}× Nix 2.34`,
      ...(goal === undefined ? {} : { met: ratio <= goal }),
    };
  });
}
