// Which machine builds a derivation: one pure function of the machines, the request and
// what is known about the machines right now. The hook acts on its decision, `offload
// explain` prints it, and the scheduling simulator replays it, so the three cannot drift.
import type { BuildMachine, LocalMachine } from "../../types/index.js";

/** One "try" from the daemon. */
export interface BuildRequest {
  system: string;
  requiredFeatures: readonly string[];
  /** The daemon has a free local build slot (amWilling = 1). */
  amWilling: boolean;
  drvPath?: string;
  /** The daemon asking: its builds go only to machines that run the same one. Default "nix". */
  daemon?: BuildMachine["daemon"];
}

/** What the daemon says about the local machine (its settings). */
export interface LocalState {
  /** `system` plus `extra-platforms`. */
  systems: readonly string[];
  /** `system-features`. */
  features: readonly string[];
  /** `max-jobs`; 0 means the daemon never builds locally. */
  maxJobs: number;
}

/** What is known about one remote machine right now. */
export interface MachineState {
  /** Slots held by running builds (from the slot locks). */
  slotsInUse: number;
  /** 1-minute load average divided by CPU count, when recently measured. */
  load?: number;
  /** Why the machine could not be used recently (reached or logged in to), as one line, if it could not. */
  unreachable?: string;
  /** Its store's free space was found below the minimum recently: the message saying so. */
  diskLow?: string;
  /** When all its slots are busy: estimated seconds until one frees (from what its builds took before). */
  freeIn?: number;
}

/** A per-build restriction (from the daemon's `builders` setting, see hook docs). */
export interface Restriction {
  only?: readonly string[];
  exclude?: readonly string[];
}

export interface SelectionInput {
  machines: readonly BuildMachine[];
  local?: LocalMachine;
  localState: LocalState;
  request: BuildRequest;
  states: ReadonlyMap<string, MachineState>;
  restriction?: Restriction;
  /** Seconds this derivation took before, scaled to a machine of speed 1, if it was built before. */
  estimate?: number;
  /** How long a postponed build waits before the daemon asks again (Nix's build-poll-interval, 5 s). */
  pollInterval?: number;
}

export type Verdict = "accept" | "decline" | "decline-permanently" | "postpone";

export type ReasonCode =
  | "chosen"
  | "slower"
  | "local-better"
  | "disabled"
  | "excluded"
  | "daemon"
  | "system"
  | "missing-feature"
  | "mandatory-feature"
  | "slots-full"
  | "overloaded"
  | "disk-low"
  | "unreachable";

export interface MachineReason {
  machine: string;
  code: ReasonCode;
  /** One line a person reads: why (not) this machine. */
  detail: string;
  /** Ranking score for machines that could take the build now (higher is better). */
  score?: number;
}

export interface Decision {
  verdict: Verdict;
  /** Machines that could take the build now, best first: the hook tries their slots in this order. */
  candidates: BuildMachine[];
  /** One entry per machine, in config order. */
  reasons: MachineReason[];
  /** Why the local machine does or does not take the build itself. */
  local: string;
  /** One line summing up the verdict. */
  summary: string;
  /**
   * The candidates are over their overloadThreshold, chosen because nothing else can take the
   * build now: a load measured above the threshold when connecting is no reason to try elsewhere.
   */
  despiteLoad?: boolean;
}

/** A free slot runs a build at the machine's full speed; among equals the less loaded wins. */
function score(machine: BuildMachine, state: MachineState): number {
  const busy = Math.max(state.slotsInUse / machine.parallelBuilds, state.load ?? 0);
  // The busy fraction only breaks ties between machines of equal speed.
  return machine.speed * (1 - busy * 1e-6);
}

export function selectMachine(input: SelectionInput): Decision {
  const { machines, request } = input;
  const required = new Set(request.requiredFeatures);
  const reasons: MachineReason[] = [];
  const available: { machine: BuildMachine; score: number }[] = [];
  // Over their threshold but with a free slot: the last resort, least loaded first.
  const overloaded: { machine: BuildMachine; load: number }[] = [];
  let eligible = 0;

  for (const machine of machines) {
    const state = input.states.get(machine.name) ?? { slotsInUse: 0 };
    const reject = (code: ReasonCode, detail: string) => reasons.push({ machine: machine.name, code, detail });
    const ineligible = eligibility(machine, request, required, input.restriction);
    if (ineligible) {
      reject(ineligible.code, ineligible.detail);
      continue;
    }
    eligible++;
    if (state.unreachable) reject("unreachable", state.unreachable);
    else if (state.slotsInUse >= machine.parallelBuilds) reject("slots-full", `all ${machine.parallelBuilds} slots busy`);
    else if (state.diskLow) reject("disk-low", `disk low: ${state.diskLow}`);
    else if (machine.overloadThreshold !== null && state.load !== undefined && state.load > machine.overloadThreshold) {
      reject("overloaded", `overloaded: load ${state.load.toFixed(2)} per CPU > threshold ${machine.overloadThreshold}`);
      overloaded.push({ machine, load: state.load });
    } else {
      const value = score(machine, state);
      available.push({ machine, score: value });
      reasons.push({ machine: machine.name, code: "slower", detail: "", score: value });
    }
  }
  available.sort((a, b) => b.score - a.score);
  const best = available[0];
  const localTakes = localVerdict(input, best?.score);

  for (const reason of reasons) {
    if (reason.score === undefined) continue;
    const state = input.states.get(reason.machine) ?? { slotsInUse: 0 };
    const machine = machines.find((m) => m.name === reason.machine)!;
    const free = `${machine.parallelBuilds - state.slotsInUse}/${machine.parallelBuilds} slots free, speed ${machine.speed}`;
    if (localTakes.builds) Object.assign(reason, { code: "local-better", detail: `${free}; the local machine is at least as fast` });
    else if (reason.machine === best!.machine.name) Object.assign(reason, { code: "chosen", detail: `chosen: ${free}` });
    else Object.assign(reason, { detail: `${free}; ${best!.machine.name} is faster or less busy` });
  }

  const what = `${request.system}${required.size > 0 ? ` with features ${[...required].join(", ")}` : ""}`;
  const decide = (verdict: Verdict, summary: string, candidates = available.map((a) => a.machine)): Decision => ({
    verdict,
    candidates: verdict === "accept" ? candidates : [],
    reasons,
    local: localTakes.why,
    summary,
  });
  if (machines.length === 0) return decide("decline-permanently", "no build machines are configured");
  if (localTakes.builds) return decide("decline", `building ${what} locally: ${localTakes.why}`);
  const sooner = best && fasterAfterWaiting(input, best.machine);
  if (sooner) return decide("postpone", sooner);
  if (best) return decide("accept", `building ${what} on ${best.machine.name}`);
  if (eligible === 0) return decide("decline", `no configured machine can build ${what}`);
  if (localTakes.canNow) return decide("decline", `every machine for ${what} is busy, overloaded or unreachable; building locally`);
  // Waiting for other work to end could take any time (a postpone costs a poll interval and
  // then finds the same load): a loaded machine builds slower, but it builds, as with Nix.
  if (overloaded.length > 0) {
    overloaded.sort((a, b) => a.load - b.load);
    const [least] = overloaded;
    const summary = `every machine for ${what} is busy or overloaded; building on ${least!.machine.name}, the least loaded (load ${least!.load.toFixed(2)} per CPU), rather than waiting for other work to end`;
    return {
      ...decide(
        "accept",
        summary,
        overloaded.map((o) => o.machine),
      ),
      despiteLoad: true,
    };
  }
  // Waiting only helps when a machine will free up; down machines fail the build now, with the reason.
  if (reasons.some((r) => r.code === "slots-full" || r.code === "disk-low")) {
    return decide("postpone", `every machine for ${what} is busy or short of disk; waiting`);
  }
  return decide("decline", `every machine that can build ${what} is unreachable`);
}

/**
 * With a duration known from earlier builds: a busy machine that frees up soon may finish
 * the build well before a free but slow one would (a long build on a slow machine stalls
 * everything after it). Then waiting is better; without an estimate, never wait.
 */
function fasterAfterWaiting(input: SelectionInput, free: BuildMachine): string | undefined {
  const { estimate } = input;
  if (estimate === undefined) return undefined;
  const now = estimate / free.speed;
  const poll = input.pollInterval ?? 5;
  const required = new Set(input.request.requiredFeatures);
  let waitFor: { machine: BuildMachine; finish: number } | undefined;
  for (const machine of input.machines) {
    const state = input.states.get(machine.name);
    if (machine === free || state?.freeIn === undefined || state.slotsInUse < machine.parallelBuilds) continue;
    if (eligibility(machine, input.request, required, input.restriction)) continue;
    // The daemon asks again only every poll interval.
    const finish = Math.max(state.freeIn, poll) + estimate / machine.speed;
    if (!waitFor || finish < waitFor.finish) waitFor = { machine, finish };
  }
  if (!waitFor || waitFor.finish >= now * WAIT_MARGIN) return undefined;
  return `waiting for ${waitFor.machine.name}: expected done in ${Math.round(waitFor.finish)} s there, ${Math.round(now)} s on ${free.name}`;
}

/** Waiting must at least halve the expected finish: estimates are rough (chosen with the P6 simulator, checked on a second set of graphs). */
const WAIT_MARGIN = 0.5;

const DAEMONS = { nix: "Nix", guix: "guix-daemon" } as const;

function eligibility(
  machine: BuildMachine,
  request: BuildRequest,
  required: ReadonlySet<string>,
  restriction: Restriction | undefined,
): { code: ReasonCode; detail: string } | undefined {
  if (!machine.enabled) return { code: "disabled", detail: "disabled in machines.ts (enabled: false)" };
  if (restriction?.only && !restriction.only.includes(machine.name)) return { code: "excluded", detail: "not in this build's list of allowed machines" };
  if (restriction?.exclude?.includes(machine.name)) return { code: "excluded", detail: "excluded for this build" };
  const daemon = request.daemon ?? "nix";
  if (machine.daemon !== daemon) {
    return { code: "daemon", detail: `builds with ${DAEMONS[machine.daemon]} (daemon: "${machine.daemon}"), and this build is ${DAEMONS[daemon]}'s` };
  }
  if (request.system !== "builtin" && !machine.systems.includes(request.system as BuildMachine["systems"][number])) {
    return { code: "system", detail: `does not build ${request.system} (systems: ${machine.systems.join(", ")})` };
  }
  // Nix's rules: every required feature supported (mandatory ones count as supported)…
  const supported = new Set([...machine.features, ...machine.mandatoryFeatures]);
  const missing = [...required].filter((f) => !supported.has(f));
  if (missing.length > 0) {
    return { code: "missing-feature", detail: `lacks required feature${missing.length > 1 ? "s" : ""} ${missing.join(", ")}` };
  }
  // …and every mandatory feature of the machine required by the derivation.
  const unrequested = machine.mandatoryFeatures.filter((f) => !required.has(f));
  if (unrequested.length > 0) {
    return { code: "mandatory-feature", detail: `only takes derivations that require ${unrequested.join(", ")} (mandatory)` };
  }
  return undefined;
}

/**
 * Whether the local machine takes the build instead. It competes only when machines.ts
 * has a localMachine() record; without one, remote machines are preferred (as in Nix).
 */
function localVerdict(input: SelectionInput, bestRemote: number | undefined): { builds: boolean; canNow: boolean; why: string } {
  const { request, localState, local } = input;
  const systemOk = request.system === "builtin" || localState.systems.includes(request.system);
  const features = new Set(local?.features ?? localState.features);
  const missing = request.requiredFeatures.filter((f) => !features.has(f));
  const capable = localState.maxJobs > 0 && systemOk && missing.length === 0;
  const canNow = capable && request.amWilling;
  if (!capable) {
    const why = localState.maxJobs === 0 ? "max-jobs is 0" : !systemOk ? `it does not build ${request.system}` : `it lacks ${missing.join(", ")}`;
    return { builds: false, canNow, why: `the local machine cannot build this: ${why}` };
  }
  if (!request.amWilling) return { builds: false, canNow, why: "the local machine has no free build slot" };
  if (!local || !local.enabled) return { builds: false, canNow, why: "the local machine does not compete (no enabled localMachine() in machines.ts)" };
  if (bestRemote === undefined) return { builds: false, canNow, why: `the local machine is free (speed ${local.speed})` };
  if (local.speed >= bestRemote) return { builds: true, canNow, why: `the local machine is free and its speed ${local.speed} ≥ the best remote's` };
  return { builds: false, canNow, why: `the local machine is free but slower (speed ${local.speed})` };
}
