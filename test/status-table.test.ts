// `offload status`'s text table: machines with friendly names are told apart by their address.
import type { MachineStatus } from "../src/check/machine-status.js";
import { formatStatus } from "../src/cli/status.js";

const status = (machine: string, address: string): MachineStatus => ({
  machine,
  address,
  enabled: true,
  reachable: true,
  load: 0.5,
  slots: { total: 2, inUse: 0, holders: [] },
});

test("the ADDRESS column follows the name, as in `check --static`", () => {
  const now = Date.now();
  const lines = formatStatus([status("fast", "nix@10.0.0.7:2222"), status("slow", "10.0.0.7:2223")], now).split("\n");
  expect(lines[0]).toMatch(/^MACHINE\s+ADDRESS\s+REACHABLE\s+LOAD\s+SLOTS\s+FREE\s+UPTIME\s+CLOCK\s+LAST BUILD$/);
  expect(lines[1]).toMatch(/^fast\s+nix@10\.0\.0\.7:2222\s+yes\s+0\.50\s+0\/2\s+-\s+-\s+-\s+-$/);
  expect(lines[2]).toMatch(/^slow\s+10\.0\.0\.7:2223\s+yes\s+0\.50\s+0\/2\s+-\s+-\s+-\s+-$/);
});
