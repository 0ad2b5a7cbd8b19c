// Does the machine's Nix agree with its record? Systems and features in machines.ts that the
// machine lacks make builds fail there; ones it has but the record omits leave it idle.
import type { BuildMachine } from "../../types/index.js";
import type { OffloadError } from "../errors.js";
import { featuresMissing, systemsMissing, unusedCapabilities } from "../select/failures.js";

const words = (value: string | undefined) => (value ?? "").split(/\s+/).filter((word) => word !== "");

export interface RemoteCapabilities {
  /** `system` first, then `extra-platforms`. */
  systems: string[];
  features: string[];
}

export function remoteCapabilities(settings: ReadonlyMap<string, string>): RemoteCapabilities {
  return {
    systems: [...new Set([...words(settings.get("system")), ...words(settings.get("extra-platforms"))])],
    features: words(settings.get("system-features")),
  };
}

export interface CapabilityVerdict {
  /** Record claims the machine cannot honour. */
  failures: OffloadError[];
  /** What the machine could do beyond its record. */
  warning?: OffloadError;
}

export function compareCapabilities(machine: BuildMachine, remote: RemoteCapabilities): CapabilityVerdict {
  const failures: OffloadError[] = [];
  const missingSystems = machine.systems.filter((system) => !remote.systems.includes(system));
  if (missingSystems.length > 0) failures.push(systemsMissing(machine, missingSystems, remote.systems));
  const recorded = new Set([...machine.features, ...machine.mandatoryFeatures]);
  const missingFeatures = [...recorded].filter((feature) => !remote.features.includes(feature));
  if (missingFeatures.length > 0) failures.push(featuresMissing(machine, missingFeatures, remote.features));
  // Only the main system: extra-platforms lists every micro-architecture level (x86_64-v2-linux, …).
  const unusedSystems = remote.systems.slice(0, 1).filter((system) => !machine.systems.includes(system as never));
  const unusedFeatures = remote.features.filter((feature) => !recorded.has(feature));
  const unused = unusedSystems.length + unusedFeatures.length > 0 ? unusedCapabilities(machine, unusedSystems, unusedFeatures) : undefined;
  return { failures, ...(unused ? { warning: unused } : {}) };
}

/** A system to run the test build for: one the record and the machine both have. */
export function testSystem(machine: BuildMachine, remote: RemoteCapabilities): string | undefined {
  return machine.systems.find((system) => remote.systems.includes(system));
}
