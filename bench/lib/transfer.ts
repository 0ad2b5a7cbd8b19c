// P3, transfer: a derivation with a big input (one big file + thousands of small ones, added
// to the store beforehand) whose output is small (measures upload), and one that copies the
// input to its output (measures download, the input already on the builder). Compared with
// Nix's build-remote and with raw `ssh <alias> 'cat > /dev/null'` of the same NAR bytes, and
// with ssh piped into `nix-store --restore` (the files written on the receiving side, but no
// store registration): the part of the gap that writing the files explains.
// Each side's fixed cost (a trivial build; `ssh <alias> true`) is measured alongside and
// subtracted, so the rates are those of the bytes, not of connection setup.
import { mkdtempSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { sshArgs } from "../../src/lab/index.js";
import { run } from "../../src/lab/run.js";
import { freshSalt, writeExpressions } from "./derivations.js";
import { withLab, type BenchLab } from "./lab.js";
import { timedNixBuild, type Builder } from "./nix-build.js";
import { seconds, type Row } from "./report.js";
import { median } from "./stats.js";
import { timedCommand } from "./timed.js";
import { writeTree } from "./tree.js";

export interface TransferOptions {
  bigMiB: number;
  smallFiles: number;
  repetitions: number;
  log: (line: string) => void;
}

const MIB = 1024 * 1024;
const TARGET = 0.8;

type Tool = "offload" | "nix";
const TOOLS: Record<Tool, Builder> = { offload: { kind: "offload", maxJobs: 0 }, nix: { kind: "nix" } };

/**
 * Shell code deleting `path` from a store, with what refers to it (the benchmark's .drv
 * files) and their valid outputs (which would keep a .drv alive), if `path` is valid there.
 */
const DELETE = (path: string) =>
  `nix-store --check-validity ${path} 2>/dev/null || exit 0
set -- $(nix-store --query --referrers-closure ${path})
for p in "$@"; do case $p in *.drv) for o in $(nix-store --query --outputs $p); do nix-store --check-validity $o 2>/dev/null && set -- "$@" $o; done;; esac; done
nix-store --delete "$@" >/dev/null 2>&1`;

async function narSize(path: string): Promise<number> {
  return Number((await run("nix-store", ["--query", "--size", path])).stdout.trim());
}

export function measureTransfer(options: TransferOptions): Promise<Row[]> {
  return withLab("p3", { builders: 1, builderSpecs: [{ features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 1 }] }, async (bench) => {
    const scratch = mkdtempSync("/var/tmp/offload-bench-p3-");
    let input: string | undefined;
    try {
      options.log(`P3: writing ${options.bigMiB} MiB + ${options.smallFiles} small files and adding them to the store`);
      const tree = join(scratch, "bench-big-input");
      writeTree(tree, options.bigMiB, options.smallFiles);
      input = (await run("nix-store", ["--add", tree], { timeoutMs: 600_000 })).stdout.trim();
      rmSync(tree, { recursive: true, force: true });
      const nar = join(scratch, "input.nar");
      await timedCommand("nix-store", ["--dump", input], { stdoutFile: nar });
      const inputSize = await narSize(input);
      return await compare(bench, options, input, nar, inputSize);
    } finally {
      if (input) await run("sh", ["-c", DELETE(input)]).catch((error: Error) => options.log(`P3: could not delete ${input}: ${error.message}`));
      rmSync(scratch, { recursive: true, force: true });
    }
  });
}

async function compare(bench: BenchLab, options: TransferOptions, input: string, nar: string, inputSize: number): Promise<Row[]> {
  const scratch = dirname(nar);
  const { lab } = bench;
  const builder = lab.builders[0]!;
  const onBuilder = (command: string) => run("ssh", sshArgs(lab, builder, command), { timeoutMs: 600_000 });
  const ssh = (command: string, files: { stdinFile?: string } = {}) => timedCommand("ssh", sshArgs(lab, builder, command), files);
  const { bigInput, trivial } = writeExpressions(bench.work);
  const build = (tool: Tool, output: "small" | "large") =>
    timedNixBuild(bench, TOOLS[tool], [bigInput, "--argstr", "salt", freshSalt(`p3-${tool}`), "--argstr", "input", input, "--argstr", "output", output]);

  const times = {
    upload: { offload: [] as number[], nix: [] as number[], ssh: [] as number[], restore: [] as number[] },
    download: { offload: [] as number[], nix: [] as number[], ssh: [] as number[], restore: [] as number[] },
    fixed: { offload: [] as number[], nix: [] as number[], ssh: [] as number[] },
  };
  let outputSize = 0;
  // Not counted: config cache, ssh, Nix, and the NAR file in the page cache.
  for (const tool of ["offload", "nix"] as const) await timedNixBuild(bench, TOOLS[tool], [trivial, "--argstr", "salt", freshSalt("warm")]);
  await ssh("cat > /dev/null", { stdinFile: nar });

  for (let i = 0; i < options.repetitions; i++) {
    const tools: Tool[] = i % 2 === 0 ? ["offload", "nix"] : ["nix", "offload"];
    for (const tool of tools) {
      await onBuilder(DELETE(input)); // the upload must send it all
      await settleDisk();
      times.upload[tool].push((await build(tool, "small")).ms);
    }
    times.upload.ssh.push(await ssh("cat > /dev/null", { stdinFile: nar }));
    const restored = join(scratch, "restored"); // loopback: the builder's side is this file system
    times.upload.restore.push(await ssh(`nix-store --restore ${restored}`, { stdinFile: nar }));
    rmSync(restored, { recursive: true, force: true });
    for (const tool of tools) {
      await settleDisk();
      const run = await build(tool, "large"); // the input is on the builder since the uploads
      times.download[tool].push(run.ms);
      const output = run.outputs[0]!;
      outputSize = await narSize(output);
      await onBuilder(DELETE(output));
      await runLocal(DELETE(output));
    }
    times.download.ssh.push(await ssh(`cat ${nar}`)); // loopback: the builder reads the same file
    times.download.restore.push(
      await timedCommand("sh", ["-c", `"$@" | nix-store --restore ${restored}`, "sh", "ssh", ...sshArgs(lab, builder, `cat ${nar}`)]),
    );
    rmSync(restored, { recursive: true, force: true });
    for (const tool of tools)
      times.fixed[tool].push((await timedNixBuild(bench, TOOLS[tool], [trivial, "--argstr", "salt", freshSalt(`p3-fixed-${tool}`)])).ms);
    times.fixed.ssh.push(await ssh("true"));
    options.log(
      `P3 ${i + 1}/${options.repetitions}: upload offload ${seconds(times.upload.offload.at(-1)!)}, nix ${seconds(times.upload.nix.at(-1)!)}, ssh ${seconds(times.upload.ssh.at(-1)!)}; ` +
        `download offload ${seconds(times.download.offload.at(-1)!)}, nix ${seconds(times.download.nix.at(-1)!)}, ssh ${seconds(times.download.ssh.at(-1)!)}`,
    );
  }

  const fixed = { offload: median(times.fixed.offload), nix: median(times.fixed.nix), ssh: median(times.fixed.ssh) };
  const rows: Row[] = [];
  for (const direction of ["upload", "download"] as const) {
    const bytes = direction === "upload" ? inputSize : outputSize;
    // A transfer faster than the noise in the fixed cost has no meaningful rate: Infinity, shown as such.
    const rate = (who: keyof (typeof times)["upload"]) =>
      bytes / MIB / (Math.max(0, median(times[direction][who]) - fixed[who === "restore" ? "ssh" : who]) / 1000);
    const [offload, nix, ssh, restore] = [rate("offload"), rate("nix"), rate("ssh"), rate("restore")];
    rows.push({
      benchmark: "P3",
      measure: `${direction} ${(bytes / MIB).toFixed(0)} MiB NAR (${options.bigMiB} MiB file + ${options.smallFiles} files), median of ${options.repetitions}`,
      offload: `${mibs(offload)} (${seconds(median(times[direction].offload))} whole build)`,
      other: `raw ssh ${mibs(ssh)}; Nix ${mibs(nix)} (${seconds(median(times[direction].nix))})`,
      ratio: `${(offload / ssh).toFixed(2)}× ssh, ${(offload / nix).toFixed(2)}× Nix`,
      target: `≥ ${TARGET}× raw ssh`,
      met: offload / ssh >= TARGET,
    });
    rows.push({
      benchmark: "P3",
      measure: `${direction}: ssh | nix-store --restore (files written, not registered in a store)`,
      offload: "",
      other: mibs(restore),
      ratio: `${(offload / restore).toFixed(2)}× this`,
      target: "",
    });
  }
  rows.push({
    benchmark: "P3",
    measure: "fixed cost subtracted above (trivial build; ssh true)",
    offload: seconds(fixed.offload),
    other: `ssh ${seconds(fixed.ssh)}; Nix ${seconds(fixed.nix)}`,
    ratio: "",
    target: "",
  });
  return rows;
}

function mibs(rate: number): string {
  return Number.isFinite(rate) ? `${rate.toFixed(0)} MiB/s` : "∞ MiB/s (within the fixed cost's noise)";
}

/**
 * Writes out what the previous run left dirty (its 267 MiB, the 5,000 files a deletion
 * freed): otherwise the next run pays for it, and whichever tool goes second in a
 * repetition was measured up to 1.5× slower, whichever it was.
 */
function settleDisk(): Promise<unknown> {
  return runLocal("sync");
}

function runLocal(command: string): Promise<unknown> {
  return run("sh", ["-c", command], { timeoutMs: 600_000 });
}
