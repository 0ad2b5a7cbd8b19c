// Live progress of machines checked in parallel. On a terminal, one line per machine is
// rewritten in place as its steps finish; elsewhere (logs, pipes) a machine's line is
// printed once, when it is done, so the output reads the same in a CI log.
import { STEPS, type MachineReport, type StepName, type StepResult } from "./machine-check.js";

export interface Progress {
  step(machine: string, result: StepResult): void;
  done(report: MachineReport): void;
}

/** "✓ name  4.2 s" or "✗ name  1.3 s (connect failed)". */
export function machineLine(report: MachineReport, width: number): string {
  const failed = report.steps.filter((s) => s.status === "fail").map((s) => s.step);
  const warned = report.steps.some((s) => s.status === "warn");
  const mark = report.ok ? (warned ? "!" : "✓") : "✗";
  const note = failed.length > 0 ? `  (${failed.join(", ")} failed)` : warned ? "  (with warnings)" : "";
  return `${mark} ${report.machine.padEnd(width)}  ${report.seconds.toFixed(1).padStart(5)} s${note}`;
}

export function createProgress(names: readonly string[], out: NodeJS.WriteStream): Progress {
  const width = Math.max(0, ...names.map((name) => name.length));
  if (!out.isTTY) return { step: () => {}, done: (report) => out.write(`${machineLine(report, width)}\n`) };
  const lines = names.map((name) => `… ${name.padEnd(width)}  connecting`);
  const draw = (first: boolean) => {
    // Back to the first line, then rewrite every line (\x1b[2K clears one).
    out.write(`${first ? "" : `\x1b[${lines.length}A`}${lines.map((line) => `\x1b[2K${line}\n`).join("")}`);
  };
  draw(true);
  const started = Date.now();
  return {
    step: (machine, result) => {
      const at = names.indexOf(machine);
      const next = nextStep(result.step);
      lines[at] =
        `… ${machine.padEnd(width)}  ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s  ${result.step} ${result.status}${next ? `, ${next}…` : ""}`;
      draw(false);
    },
    done: (report) => {
      lines[names.indexOf(report.machine)] = machineLine(report, width);
      draw(false);
    },
  };
}

function nextStep(step: StepName): StepName | undefined {
  return STEPS[STEPS.indexOf(step) + 1];
}
