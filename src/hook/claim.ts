// Deciding one request: gather what is known about the machines, let the selection function
// decide, then take a slot on the best candidate and connect to it before accepting (as
// Nix's build-remote does), falling over to the next candidate when a machine is down.
// The same for every daemon; only how a machine is connected to differs (`connect`).
import { DEFAULTS } from "../defaults.js";
import type { BuildMachine } from "../../types/index.js";
import { asOffloadError, formatError } from "../errors.js";
import type { LoadedConfig } from "../config/load.js";
import { clockSkew, diskLow, overloaded } from "../select/failures.js";
import type { MachineHealth } from "../remote/probes.js";
import { machineStoreDir } from "../remote/probes.js";
import { selectionInput, slotFreesWithin } from "../select/current-state.js";
import { recordFacts, recordHash } from "../select/machine-facts.js";
import { selectMachine, type BuildRequest, type Decision } from "../select/select.js";
import { acquireSlot, type Slot } from "../select/slots.js";
import type { Reply } from "./protocol.js";
import type { HookSettings } from "./settings.js";

/** A connection to a machine, ready for one build. */
export interface Linked {
  machine: BuildMachine;
  health: MachineHealth;
  close(): void;
}

export type Claim<L extends Linked> = { verdict: Reply; decision: Decision } | { verdict: "accept"; link: L; slot: Slot; decision: Decision };

export interface ClaimContext<L extends Linked> {
  config: LoadedConfig;
  settings: HookSettings;
  stateDir: string;
  /** Progress worth a line. */
  say: (line: string) => void;
  /** Problems the user must see (a machine that cannot be used). */
  warn: (line: string) => void;
  /** Connects to a machine for this daemon's kind of build. */
  connect: (machine: BuildMachine) => Promise<L>;
  /** A machine whose store has less free space is skipped (like Guix, which wants 100 MiB). */
  minFreeBytes: number;
}

/** Each round re-decides with what the previous one learned (a machine down, or overloaded). */
const ROUNDS = 3;

export async function claimMachine<L extends Linked>(request: BuildRequest, context: ClaimContext<L>): Promise<Claim<L>> {
  let decision: Decision | undefined;
  for (let round = 0; round < ROUNDS; round++) {
    decision = await decideSoon(request, context);
    if (decision.verdict !== "accept") return { verdict: decision.verdict, decision };
    for (const machine of decision.candidates) {
      const slot = await acquireSlot(context.stateDir, machine.name, machine.parallelBuilds, request.drvPath);
      if (!slot) continue; // another hook took the last slot meanwhile
      const link = await tryLink(machine, context, decision.despiteLoad === true);
      if (link) return { verdict: "accept", link, slot, decision };
      await slot.release();
    }
  }
  // Every candidate failed or filled up while we tried: ask again later, and say so (not the last round's "building on …").
  const tried = decision!.candidates.map((machine) => machine.name).join(", ");
  return {
    verdict: "postpone",
    decision: {
      ...decision!,
      summary: `${tried} could not take the build after all (a slot taken meanwhile, or the connection failed: see above); asking again after the daemon's poll interval`,
    },
  };
}

/** How often a hook waiting for a slot decides again. */
const SLOT_POLL_MS = 20;

/**
 * The selection's decision; a postpone only once no slot is expected to free within
 * DEFAULTS.slotWaitS. Whether one is expected is asked of the full machines' slot holders
 * once, at the first postpone; then the decision is polled until it changes or time is up.
 */
async function decideSoon<L extends Linked>(request: BuildRequest, context: ClaimContext<L>): Promise<Decision> {
  const until = Date.now() + DEFAULTS.slotWaitS * 1000;
  let worthWaiting: boolean | undefined;
  for (;;) {
    const decision = selectMachine(await selectionInput(context.config, context.settings, request, context.stateDir));
    if (decision.verdict !== "postpone" || Date.now() >= until) return decision;
    if (worthWaiting === undefined) {
      const full = new Set(decision.reasons.filter((reason) => reason.code === "slots-full").map((reason) => reason.machine));
      const machines = context.config.machines.filter((machine) => full.has(machine.name));
      worthWaiting = await slotFreesWithin(context.stateDir, machines, (until - Date.now()) / 1000);
    }
    if (!worthWaiting) return decision;
    await new Promise((resolve) => setTimeout(resolve, SLOT_POLL_MS));
  }
}

/** Connects; records what was learned either way. Overloaded, nearly full or unreachable machines yield undefined. */
async function tryLink<L extends Linked>(machine: BuildMachine, context: ClaimContext<L>, despiteLoad: boolean): Promise<L | undefined> {
  let link: L;
  try {
    link = await context.connect(machine);
  } catch (error) {
    const failure = asOffloadError(error);
    recordFacts(context.stateDir, machine.name, { failure: { message: failure.message, at: Date.now(), code: failure.code, record: recordHash(machine) } });
    context.warn(`offload: cannot build on ${machine.name}: ${formatError(failure)}`);
    return undefined;
  }
  const now = Date.now();
  const { load, freeBytes, clockSkew: skew } = link.health;
  const full =
    freeBytes !== undefined && freeBytes < context.minFreeBytes ? diskLow(machine, machineStoreDir(machine), freeBytes, context.minFreeBytes) : undefined;
  recordFacts(context.stateDir, machine.name, {
    failure: undefined,
    diskLow: full && { message: full.message, at: now },
    ...(load === undefined ? {} : { load: { value: load, at: now } }),
  });
  // A wrong clock does not stop a build, but it confuses timestamps and build tools: say so.
  if (skew !== undefined && Math.abs(skew) > DEFAULTS.maxClockSkewS) context.warn(`offload: ${formatError(clockSkew(machine, skew, DEFAULTS.maxClockSkewS))}`);
  const unusable =
    full ??
    (!despiteLoad && machine.overloadThreshold !== null && load !== undefined && load > machine.overloadThreshold
      ? overloaded(machine, load, machine.overloadThreshold)
      : undefined);
  if (unusable) {
    context.say(`offload: ${formatError(unusable)}\n  (trying elsewhere)`);
    link.close();
    return undefined;
  }
  return link;
}
