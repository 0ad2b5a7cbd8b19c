// What is known about the machines right now: slots in use (from the kernel locks) and the
// still-fresh facts of recent connections. The hook decides on it and `offload explain`
// shows it, so both see the same world.
import type { BuildMachine } from "../../types/index.js";
import { machineState, readFacts } from "./machine-facts.js";
import type { BuildRequest, MachineState } from "./select.js";
import { heldSlots } from "./slots.js";

/** States of the machines that could build `request.system` at all (others are ineligible whatever their state). */
export async function currentStates(
  machines: readonly BuildMachine[],
  request: Pick<BuildRequest, "system">,
  stateDir: string,
  now = Date.now(),
): Promise<Map<string, MachineState>> {
  const relevant = machines.filter((m) => m.enabled && (request.system === "builtin" || m.systems.includes(request.system as never)));
  const entries = await Promise.all(
    relevant.map(async (machine) => {
      const inUse = await heldSlots(stateDir, machine.name, machine.parallelBuilds);
      return [machine.name, machineState(readFacts(stateDir, machine.name), inUse, now)] as const;
    }),
  );
  return new Map(entries);
}
