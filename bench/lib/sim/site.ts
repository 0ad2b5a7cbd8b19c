// The simulated site every policy schedules on: a fast local machine, a fast remote builder
// with kvm and big-parallel, a slow plain one. One description, rendered per policy into
// what that tool's configuration would say (offload records, a Nix machines line, Guix records).
export interface SimMachine {
  name: string;
  speed: number;
  slots: number;
  /** CPUs, for the normalized load Guix and offload compare with overloadThreshold (a build keeps one busy). */
  cores: number;
  features: string[];
  mandatoryFeatures: string[];
}

export interface SimSite {
  system: string;
  local: { speed: number; maxJobs: number; features: string[] };
  builders: SimMachine[];
  /** Seconds between the daemon's retries of postponed builds (Nix's build-poll-interval). */
  pollInterval: number;
}

export const SITE: SimSite = {
  system: "x86_64-linux",
  local: { speed: 3, maxJobs: 2, features: ["big-parallel"] },
  builders: [
    { name: "fast", speed: 4, slots: 2, cores: 2, features: ["kvm", "big-parallel"], mandatoryFeatures: [] },
    { name: "slow", speed: 1, slots: 4, cores: 4, features: [], mandatoryFeatures: [] },
  ],
  pollInterval: 5,
};

/** What a machine can build, by Nix's rule: required ⊆ supported ∪ mandatory, and mandatory ⊆ required. */
export function canBuild(machine: Pick<SimMachine, "features" | "mandatoryFeatures">, required: readonly string[]): boolean {
  const supported = new Set([...machine.features, ...machine.mandatoryFeatures]);
  return required.every((f) => supported.has(f)) && machine.mandatoryFeatures.every((f) => required.includes(f));
}

export function localCanBuild(site: SimSite, required: readonly string[]): boolean {
  return site.local.maxJobs > 0 && required.every((f) => site.local.features.includes(f));
}

/** The speed of the fastest machine (local included) that can build a derivation requiring `required`. */
export function fastestSpeed(site: SimSite, required: readonly string[]): number {
  const speeds = site.builders.filter((b) => canBuild(b, required)).map((b) => b.speed);
  if (localCanBuild(site, required)) speeds.push(site.local.speed);
  return Math.max(...speeds);
}
