// The command-line form of a LabBuilderSpec, one builder per --builder option:
//   "b1 features=big-parallel,kvm mandatory=benchmark speed=2 jobs=4 nix=2.34"
// Whatever is not given keeps the builder's default.
import { OffloadError } from "../errors.js";
import { isNixRelease, NIX_RELEASES } from "./host.js";
import type { LabBuilderSpec } from "./options.js";

const SYNTAX = `b<index> [features=a,b] [mandatory=c] [speed=N] [jobs=N] [nix=${NIX_RELEASES.join("|")}], e.g. "b1 features=big-parallel mandatory=benchmark nix=2.34"`;

function bad(text: string, why: string): OffloadError {
  return new OffloadError(`--builder ${JSON.stringify(text)}: ${why}`, { code: "lab-invalid-option", fix: `write it as ${SYNTAX}` });
}

function list(value: string): string[] {
  return value === "" ? [] : value.split(",");
}

function number(text: string, value: string): number {
  if (!/^\d+(\.\d+)?$/.test(value)) throw bad(text, `${JSON.stringify(value)} is not a number`);
  return Number(value);
}

export function parseBuilderSpec(text: string): { index: number; spec: LabBuilderSpec } {
  const [which, ...settings] = text.trim().split(/\s+/);
  const match = /^b(\d+)$/.exec(which ?? "");
  if (!match) throw bad(text, "it must start with the builder, b0, b1, …");
  const spec: LabBuilderSpec = {};
  for (const setting of settings) {
    const equals = setting.indexOf("=");
    const [key, value] = equals < 0 ? [setting, undefined] : [setting.slice(0, equals), setting.slice(equals + 1)];
    if (value === undefined) throw bad(text, `${JSON.stringify(setting)} has no "="`);
    switch (key) {
      case "features":
        spec.features = list(value);
        break;
      case "mandatory":
        spec.mandatoryFeatures = list(value);
        break;
      case "speed":
        spec.speed = number(text, value);
        break;
      case "jobs":
        spec.parallelBuilds = number(text, value);
        break;
      case "nix":
        if (!isNixRelease(value)) throw bad(text, `there is no lab Nix ${JSON.stringify(value)}`);
        spec.nix = value;
        break;
      default:
        throw bad(text, `unknown setting ${JSON.stringify(key)}`);
    }
  }
  return { index: Number(match[1]), spec };
}

/** The specs of repeated --builder options as LabOptions.builderSpecs (unmentioned builders keep defaults). */
export function builderSpecsFrom(texts: readonly string[]): LabBuilderSpec[] {
  const specs: LabBuilderSpec[] = [];
  for (const text of texts) {
    const { index, spec } = parseBuilderSpec(text);
    specs[index] = { ...specs[index], ...spec };
  }
  return Array.from(specs, (spec) => spec ?? {});
}
