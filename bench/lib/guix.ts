// GUIX: offload as guix-daemon's build hook against Guix's own `guix offload`, on the same two
// Guix build machines in one run. Two Guix master hosts (src/lab/guix-host.ts), each a
// guix-daemon with --max-jobs=0 (so every build is offloaded): one with GUIX=offload-guix
// and a machines.ts, one with Guix's machines.scm. Both: one slot per machine, no overload
// threshold (lab hosts share this machine's load). Builds are `guix repl` scripts on the
// master, derivations made with busybox alone (a fresh tag each time, so every build is new
// to every store), timed from the script's start to its end; the two masters alternate,
// order rotating between repetitions, after one warm-up build each.
import { spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { configureGuixOffload, guixMachineRecord, startGuixHost, authorizeInGuixHost, type GuixHost } from "../../src/lab/guix-host.js";
import { inHost, stopHost } from "../../src/lab/host.js";
import { ensureSshKey } from "../../src/lab/keys.js";
import { run } from "../../src/lab/run.js";
import { makeSafeDir, removeDir } from "../../test/support/safe-dir.js";
import { seconds, type Row } from "./report.js";
import { snapshotRoot } from "./snapshot.js";
import { median } from "./stats.js";

export interface GuixBenchOptions {
  repetitions: number;
  log: (line: string) => void;
}

const SID = join(process.env.OFFLOAD_ROOTS_DIR ?? "/var/lib/offload-roots", "sid");
/** Addresses no test uses (tests: 127.0.29.x, 127.0.31.x). */
const ADDRESS = (n: number) => `127.0.41.${n}`;
const PORT = 2441;
const PARALLEL_BUILDS = 1;
/** A build that takes longer is stuck: the bench fails rather than hang. */
const BUILD_TIMEOUT_MS = 300_000;

/** One derivation of a graph; its script may read its inputs' outputs as $in0, $in1…. */
interface Drv {
  name: string;
  script: string;
  inputs?: string[];
}

const WORKLOADS: Array<{ name: string; graph: Drv[] }> = [
  { name: "trivial build", graph: [{ name: "one", script: "echo $tag > $out" }] },
  { name: "10 independent leaves", graph: Array.from({ length: 10 }, (_, i) => ({ name: `leaf${i}`, script: `echo ${i} $tag > $out` })) },
  {
    name: "shared input + 6 leaves using it",
    graph: [
      { name: "base", script: "echo base $tag > $out" },
      ...Array.from({ length: 6 }, (_, i) => ({ name: `user${i}`, script: `cat $in0 > $out; echo ${i} >> $out`, inputs: ["base"] })),
    ],
  },
];

interface Master {
  label: string;
  host: GuixHost;
  /**
   * Lines of the build's stderr that mark where its time goes: the hook chose a machine and
   * reached it (both connect before they accept: offload says so after its accept, `guix
   * offload` reports the machine's load just before its own); the outputs are back.
   */
  marks: { accepted: RegExp; landed: RegExp };
}

interface TimedGuixBuild {
  ms: number;
  /** stderr lines with when they came (ms after the start): where the time went. */
  lines: Array<{ at: number; text: string }>;
}

/** The `guix repl` script building `graph` with a fresh `tag` in every derivation's name and output. */
function buildScript(dir: string, graph: readonly Drv[], tag: string): string {
  const file = join(dir, `build-${tag}.scm`);
  const defs = graph.map(({ name, script, inputs = [] }) => {
    const env = [`("tag" . "${tag}")`, ...inputs.map((input, index) => `("in${index}" . ,(derivation->output-path ${input}))`)];
    const drvInputs = inputs.map((input) => `(derivation-input ${input})`).join(" ");
    return `    (define ${name} (derivation s "${name}-${tag}" (string-append bb "/bin/sh") (list "-c" ${JSON.stringify(script)}) #:sources (list bb) #:inputs (list ${drvInputs}) #:env-vars \`(${env.join(" ")})))`;
  });
  writeFileSync(
    file,
    `(use-modules (guix store) (guix derivations))
(with-store s
  (set-build-options s #:use-substitutes? #f #:offload? #t)
  (let ((bb (add-to-store s "busybox" #t "sha256" "${join(dir, "busybox")}")))
${defs.join("\n")}
    (build-derivations s (list ${graph.map(({ name }) => name).join(" ")}))))
`,
  );
  return file;
}

/** Runs `script` with `guix repl` in the master; its wall time and stderr lines, or an error with its last lines. */
function timedGuixBuild(master: Master, script: string): Promise<TimedGuixBuild> {
  const { file, args } = inHost(master.host.host, ["guix", "repl", "--", script]);
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const since = () => Number(process.hrtime.bigint() - started) / 1e6;
    // Its own process group, which the command shares: a timeout kills both.
    const child = spawn(file, args, { stdio: ["ignore", "ignore", "pipe"], detached: true });
    const lines: TimedGuixBuild["lines"] = [];
    let partial = "";
    child.stderr.on("data", (chunk: Buffer) => {
      const parts = (partial + chunk.toString()).split("\n");
      partial = parts.pop()!;
      for (const text of parts) lines.push({ at: since(), text });
    });
    const timer = setTimeout(() => process.kill(-child.pid!, "SIGKILL"), BUILD_TIMEOUT_MS);
    child.once("error", (error) => (clearTimeout(timer), reject(error)));
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      const ms = since();
      if (code === 0) return resolve({ ms, lines });
      const why = signal === "SIGKILL" ? `did not finish within ${BUILD_TIMEOUT_MS / 1000} s` : `exited with ${code}`;
      reject(
        new Error(
          `build through ${master.label} ${why}:\n${lines
            .slice(-8)
            .map((line) => `  ${line.text}`)
            .join("\n")}`,
        ),
      );
    });
  });
}

/** When the first stderr line matching `mark` came (NaN when none did: the median shows it). */
function markedAt(timed: TimedGuixBuild, mark: RegExp): number {
  return timed.lines.find((line) => mark.test(line.text))?.at ?? NaN;
}

/** Medians in ms for P7's chart: a trivial build, and a 10-leaf batch per leaf. */
export interface GuixMedians {
  trivial: { offload: number; guix: number };
  perLeaf: { offload: number; guix: number };
}

export async function measureGuix(options: GuixBenchOptions & { medians?: (medians: GuixMedians) => void }): Promise<Row[]> {
  const work = makeSafeDir("guix", "offload-bench");
  const hosts: GuixHost[] = [];
  const stopAll = () => Promise.all(hosts.map((host) => stopHost(host.host)));
  // Interrupted halfway, the hosts (daemons, sshds, mounts) must not outlive the bench.
  const onSignal = () => {
    void stopAll().finally(() => {
      removeDir(work);
      process.exit(130);
    });
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const start = async (spec: Parameters<typeof startGuixHost>[0]) => {
      const host = await startGuixHost(spec);
      hosts.push(host);
      return host;
    };
    mkdirSync(join(work, "busybox", "bin"), { recursive: true });
    copyFileSync(join(SID, "bin", "busybox"), join(work, "busybox", "bin", "busybox"));
    symlinkSync("busybox", join(work, "busybox", "bin", "sh"));

    // offload's side: its Guix key, the SSH key its records log in with.
    const root = snapshotRoot();
    const etc = join(work, "etc");
    mkdirSync(etc, { mode: 0o755 });
    await run(process.execPath, [join(root, "bin", "offload.js"), "keygen", "--guix"], { env: { ...process.env, OFFLOAD_CONFIG_DIR: etc } });
    const offloadSsh = join(work, "id_offload");
    const offloadSshPublic = await ensureSshKey(offloadSsh, "guix-bench-offload");

    options.log("GUIX: starting two Guix builders and two Guix masters…");
    const builders = await Promise.all(
      [1, 2].map((n) =>
        start({ name: `gbench-b${n}`, dir: join(work, `b${n}`), ssh: { address: ADDRESS(n), port: PORT, authorizedKeys: [offloadSshPublic] } }),
      ),
    );
    const offloadKey = readFileSync(join(etc, "guix-signing-key.pub"), "utf8");
    await Promise.all(builders.map((builder) => authorizeInGuixHost(builder, offloadKey)));
    const records = builders.map((builder) => `  ${guixMachineRecord(builder, offloadSsh, { parallelBuilds: PARALLEL_BUILDS })}`);
    writeFileSync(join(etc, "machines.ts"), `import { buildMachine } from "offload";\n\nexport default [\n${records.join(",\n")},\n];\n`, { mode: 0o644 });
    const [viaOffload, viaGuix] = await Promise.all([
      start({
        name: "gbench-mo",
        dir: join(work, "mo"),
        shared: [work],
        daemonArgs: ["--max-jobs=0"],
        daemonEnv: {
          GUIX: join(root, "bin", "offload-guix"),
          OFFLOAD_CONFIG_DIR: etc,
          OFFLOAD_STATE_DIR: join(work, "state"),
          OFFLOAD_CACHE_DIR: join(work, "cache"),
        },
      }),
      start({ name: "gbench-mg", dir: join(work, "mg"), shared: [work], daemonArgs: ["--max-jobs=0"] }),
    ]);
    await configureGuixOffload(viaGuix, builders, join(work, "id_guix"), { parallelBuilds: PARALLEL_BUILDS });
    const masters: Master[] = [
      { label: "offload", host: viaOffload, marks: { accepted: /^offload: building .* on /, landed: / built on .* verified$/ } },
      { label: "guix offload", host: viaGuix, marks: { accepted: /normalized load on machine/, landed: /done with offloaded/ } },
    ];

    const build = (master: Master, graph: readonly Drv[], tag: string) => timedGuixBuild(master, buildScript(work, graph, tag));
    const fresh = (label: string) => `${label.replace(/\W/g, "")}-${process.pid}-${randomInt(1e9)}`;
    // Not counted: each master's first build brings busybox to the builders, and warms up.
    for (const master of masters) await build(master, WORKLOADS[0]!.graph, fresh(`warm${master.label}`));

    const times = WORKLOADS.map(() => masters.map(() => [] as number[]));
    const floors: number[] = [];
    /** Per master, of each trivial build: when it was accepted, when its output was back, when the script ended. */
    const phases = masters.map(() => [] as Array<[number, number, number]>);
    for (let i = 0; i < options.repetitions; i++) {
      for (const [w, workload] of WORKLOADS.entries()) {
        for (let k = 0; k < masters.length; k++) {
          const m = (k + i + w) % masters.length; // rotate who goes first
          const tag = fresh(masters[m]!.label);
          const timed = await build(masters[m]!, workload.graph, tag);
          times[w]![m]!.push(timed.ms);
          if (w === 0) phases[m]!.push([markedAt(timed, masters[m]!.marks.accepted), markedAt(timed, masters[m]!.marks.landed), timed.ms]);
          // The floor: the same script again, everything valid already: guix repl, the daemon, no build.
          if (w === 0 && m === 0) floors.push((await build(masters[m]!, workload.graph, tag)).ms);
        }
        options.log(
          `GUIX ${i + 1}/${options.repetitions} ${workload.name}: ${masters.map((master, m) => `${master.label} ${seconds(times[w]![m]!.at(-1)!)}`).join(", ")}`,
        );
      }
    }
    const rows = WORKLOADS.map((workload, w): Row => {
      const [offload, guix] = times[w]!.map(median) as [number, number];
      return {
        benchmark: "GUIX",
        measure: `${workload.name}, 2 machines × ${PARALLEL_BUILDS} slot, median of ${options.repetitions}`,
        offload: seconds(offload),
        other: `guix offload ${seconds(guix)}`,
        ratio: `${(offload / guix).toFixed(2)}×`,
        target: "≤ 1.0×",
        met: offload <= guix,
      };
    });
    const [trivial, leaves] = [0, 1].map((w) => times[w]!.map(median) as [number, number]);
    options.medians?.({
      trivial: { offload: trivial![0], guix: trivial![1] },
      perLeaf: { offload: leaves![0] / 10, guix: leaves![1] / 10 },
    });
    const phaseText = (m: number) => [0, 1, 2].map((i) => seconds(median(phases[m]!.map((p) => p[i]!)))).join(" / ");
    rows.push({
      benchmark: "GUIX",
      measure: "trivial build: machine reached, accepting / output back / script done, medians",
      offload: phaseText(0),
      other: `guix offload ${phaseText(1)}`,
      ratio: "",
      target: "",
    });
    rows.push({
      benchmark: "GUIX",
      measure: "floor: the trivial build's script again, all valid (guix repl, no build)",
      offload: "",
      other: seconds(median(floors)),
      ratio: "",
      target: "",
    });
    return rows;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await stopAll();
    removeDir(work);
  }
}
