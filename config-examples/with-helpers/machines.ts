// machines.ts may import helpers from sibling .ts files (they are checked and cached too)
// and read the environment, e.g. to switch fleets per site.
import { buildMachine } from "offload";
import { rack, type RackHost } from "./inventory.ts";

const site = process.env.OFFLOAD_SITE ?? "lab";

export default rack(site).map((host: RackHost) =>
  buildMachine({
    name: host.name,
    user: "nix",
    systems: host.systems,
    hostKey: host.hostKey,
    parallelBuilds: host.cores / 2,
    speed: host.cores / 8,
  }),
);
