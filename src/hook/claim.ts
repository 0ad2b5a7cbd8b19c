// Deciding one "try": gather what is known about the machines, let the selection function
// decide, then take a slot on the best candidate and connect to it before accepting (as
// Nix's build-remote does), falling over to the next candidate when a machine is down.
import type { BuildMachine } from "../../types/index.js";
import { asOffloadError, formatError } from "../errors.js";
import type { LoadedConfig } from "../config/load.js";
import { overloaded } from "../failures.js";
import { linkMachine, type MachineLink } from "../remote/machine-link.js";
import { currentStates } from "../select/current-state.js";
import { recordFacts } from "../select/machine-facts.js";
import { selectMachine, type BuildRequest, type Decision } from "../select/select.js";
import { acquireSlot, type Slot } from "../select/slots.js";
import type { Reply } from "./protocol.js";
import type { HookSettings } from "./settings.js";

export type Claim = { verdict: Reply; decision: Decision } | { verdict: "accept"; link: MachineLink; slot: Slot; decision: Decision };

export interface ClaimContext {
  config: LoadedConfig;
  settings: HookSettings;
  stateDir: string;
  /** Progress worth a line. */
  say: (line: string) => void;
  /** Problems the user must see (a machine that cannot be used). */
  warn: (line: string) => void;
  /** Borrow warm sessions from `offload agent` (off with OFFLOAD_AGENT=0). */
  useAgent: boolean;
}

/** Each round re-decides with what the previous one learned (a machine down, or overloaded). */
const ROUNDS = 3;

export async function claimMachine(request: BuildRequest, context: ClaimContext): Promise<Claim> {
  let decision: Decision | undefined;
  for (let round = 0; round < ROUNDS; round++) {
    decision = selectMachine({
      machines: context.config.machines,
      local: context.config.local,
      localState: context.settings.localState,
      request,
      states: await currentStates(context.config.machines, request, context.stateDir),
      restriction: context.settings.restriction,
    });
    if (decision.verdict !== "accept") return { verdict: decision.verdict, decision };
    for (const machine of decision.candidates) {
      const slot = await acquireSlot(context.stateDir, machine.name, machine.parallelBuilds, request.drvPath);
      if (!slot) continue; // another hook took the last slot meanwhile
      const link = await tryLink(machine, context);
      if (link) return { verdict: "accept", link, slot, decision };
      await slot.release();
    }
  }
  // Every candidate failed or filled up while we tried: ask again later.
  return { verdict: "postpone", decision: decision! };
}

/** Connects; records what was learned either way. Overloaded or unreachable machines yield undefined. */
async function tryLink(machine: BuildMachine, context: ClaimContext): Promise<MachineLink | undefined> {
  let link: MachineLink;
  try {
    link = await linkMachine(machine, { agentStateDir: context.useAgent ? context.stateDir : undefined });
  } catch (error) {
    const failure = asOffloadError(error);
    recordFacts(context.stateDir, machine.name, { failure: { message: failure.message, at: Date.now() } });
    context.warn(`offload: cannot build on ${machine.name}: ${formatError(failure)}`);
    return undefined;
  }
  const now = Date.now();
  recordFacts(context.stateDir, machine.name, { failure: undefined, ...(link.load === undefined ? {} : { load: { value: link.load, at: now } }) });
  if (machine.overloadThreshold !== null && link.load !== undefined && link.load > machine.overloadThreshold) {
    context.say(`offload: ${formatError(overloaded(machine, link.load, machine.overloadThreshold))}\n  (trying elsewhere)`);
    link.close();
    return undefined;
  }
  return link;
}
