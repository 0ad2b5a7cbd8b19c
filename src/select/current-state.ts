// What is known right now, as the selection function's input: slots in use (from the kernel
// locks), the still-fresh facts of recent connections, and durations recorded by earlier
// builds. The hook decides on it and `offload explain` shows it: both build it here, so
// they cannot see different worlds.
import type { BuildMachine, LocalMachine } from "../../types/index.js";
import { derivationName, readDurations, type Durations } from "./durations.js";
import { machineState, readFacts, recordHash } from "./machine-facts.js";
import type { BuildRequest, MachineState, SelectionInput } from "./select.js";
import { heldSlots, listeningSockets, slotHolders, type SlotHolder } from "./slots.js";

export async function selectionInput(
  config: { machines: readonly BuildMachine[]; local?: LocalMachine },
  settings: Pick<SelectionInput, "localState" | "restriction" | "pollInterval">,
  request: BuildRequest,
  stateDir: string,
): Promise<SelectionInput> {
  const durations = readDurations(stateDir);
  const estimate = request.drvPath === undefined ? undefined : durations.get(derivationName(request.drvPath));
  return {
    machines: config.machines,
    local: config.local,
    localState: settings.localState,
    request,
    // Free times of busy machines matter only when this build's duration is known.
    states: await currentStates(config.machines, request, stateDir, Date.now(), estimate === undefined ? undefined : durations),
    restriction: settings.restriction,
    estimate,
    pollInterval: settings.pollInterval,
  };
}

/** States of the machines that could build `request.system` at all (others are ineligible whatever their state). */
export async function currentStates(
  machines: readonly BuildMachine[],
  request: Pick<BuildRequest, "system">,
  stateDir: string,
  now = Date.now(),
  durations?: Durations,
): Promise<Map<string, MachineState>> {
  const relevant = machines.filter((m) => m.enabled && (request.system === "builtin" || m.systems.includes(request.system as never)));
  const listening = listeningSockets();
  const entries = await Promise.all(
    relevant.map(async (machine) => {
      const inUse = heldSlots(stateDir, machine.name, machine.parallelBuilds, listening);
      const state = machineState(readFacts(stateDir, machine.name), inUse, now, recordHash(machine));
      if (durations && inUse >= machine.parallelBuilds) state.freeIn = await freeIn(stateDir, machine, durations, now);
      return [machine.name, state] as const;
    }),
  );
  return new Map(entries);
}

/**
 * Whether one of these full machines should have a slot free within `seconds`: one of its
 * builds is of unknown length (it may end any moment), or is expected to end by then.
 */
export async function slotFreesWithin(stateDir: string, full: readonly BuildMachine[], seconds: number, now = Date.now()): Promise<boolean> {
  const durations = readDurations(stateDir);
  const remaining = await Promise.all(full.map((machine) => freeIn(stateDir, machine, durations, now)));
  return remaining.some((left) => left === undefined || left <= seconds);
}

/**
 * Slot holders asked this recently are not asked again. The daemon asks about its waiting
 * builds one after another, and each would otherwise ask every holder of every full machine
 * what it builds (a round trip through each holder's event loop); a holding changes at most
 * once per build, and a stale answer costs one postpone or one wait of at most slotWaitS.
 */
const HOLDERS_FRESH_MS = 1000;
const askedHolders = new Map<string, { at: number; holders: Promise<(SlotHolder | undefined)[]> }>();

function recentHolders(stateDir: string, machine: BuildMachine): Promise<(SlotHolder | undefined)[]> {
  const key = JSON.stringify([stateDir, machine.name, machine.parallelBuilds]);
  const asked = askedHolders.get(key);
  if (asked && Date.now() - asked.at < HOLDERS_FRESH_MS) return asked.holders;
  const holders = slotHolders(stateDir, machine.name, machine.parallelBuilds);
  askedHolders.set(key, { at: Date.now(), holders });
  return holders;
}

/** Seconds until the first of a full machine's builds should end, from what those builds took before. */
async function freeIn(stateDir: string, machine: BuildMachine, durations: Durations, now: number): Promise<number | undefined> {
  const holders = await recentHolders(stateDir, machine);
  let soonest: number | undefined;
  for (const holder of holders) {
    const recorded = holder?.drvPath === undefined ? undefined : durations.get(derivationName(holder.drvPath));
    if (holder === undefined || recorded === undefined) return undefined; // a build of unknown length: no estimate
    const remaining = Math.max(0, recorded / machine.speed - (now - holder.since) / 1000);
    soonest = soonest === undefined ? remaining : Math.min(soonest, remaining);
  }
  return soonest;
}
