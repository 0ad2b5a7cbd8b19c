// What a scheduling policy is to the simulated daemon: the build hook's answer to one "try".
import type { SimDerivation } from "./graphs.js";

export interface TryRequest {
  derivation: SimDerivation;
  /** The daemon has a free local build slot (its running local builds < max-jobs). */
  amWilling: boolean;
}

/** What the hook sees of the remote machines: the builds running on each (its slot locks). */
export interface SiteView {
  running(machine: string): number;
  now(): number;
  /** The builds running on a machine and when each started (the hook reads them from its slot holders). */
  builds(machine: string): { derivation: SimDerivation; startedAt: number }[];
}

export type HookReply = { verdict: "accept"; machine: string } | { verdict: "decline" } | { verdict: "postpone" };

export interface Policy {
  name: string;
  decide(request: TryRequest, view: SiteView): HookReply;
}
