// `offload lab up --guix` as a person runs it: Guix build machines on this one, offload's
// machines.ts for them that `offload check` passes (the signed round trip both ways), a
// machines.scm for Guix's own offload; `lab down --purge` leaves nothing running or mounted.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { runningHosts } from "../src/lab/host.js";
import { tcpReachable } from "../src/remote/tcp.js";
import { runCli } from "./support/cli.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const SID = path.join(process.env.OFFLOAD_ROOTS_DIR ?? "/var/lib/offload-roots", "sid");
const ADDRESS = "127.0.44.11";
const PORT = 2444;

(existsSync(`${SID}.stamp`) ? test : test.skip)(
  "lab up --guix: two Guix machines offload check passes; a machines.scm for guix offload; lab down --purge leaves nothing",
  async () => {
    const parent = makeSafeDir("guix-lab");
    const dir = path.join(parent, "lab");
    try {
      const up = await runCli(["lab", "up", "--guix", "--dir", dir, "--address", ADDRESS, "--port", String(PORT)]);
      expect(up.code).toBe(0);
      expect(up.stdout).toContain(`lab-b0   ${ADDRESS}:${PORT}`);
      const machinesTs = readFileSync(path.join(dir, "etc", "machines.ts"), "utf8");
      expect(machinesTs).toMatch(/daemon: "guix"/);
      expect(readFileSync(path.join(dir, "machines.scm"), "utf8")).toContain(`(name "${ADDRESS}")`);

      const check = await runCli(["check", "--json"], { OFFLOAD_CONFIG_DIR: path.join(dir, "etc") });
      const report = JSON.parse(check.stdout) as { machines: Array<{ machine: string; ok: boolean; steps: Array<{ step: string; status: string }> }> };
      expect(report.machines.map((machine) => [machine.machine, machine.ok])).toEqual([
        ["lab-b0", true],
        ["lab-b1", true],
      ]);
      for (const machine of report.machines) expect(machine.steps.find((step) => step.step === "round-trip")?.status).toBe("ok");

      const down = await runCli(["lab", "down", "--purge", "--dir", dir]);
      expect(down.code).toBe(0);
      expect(existsSync(dir)).toBe(false);
      expect((await runningHosts()).filter((host) => host.dir.startsWith(dir))).toEqual([]);
      expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(dir);
      expect(await tcpReachable(ADDRESS, PORT, 500)).toBe(false);
    } finally {
      await runCli(["lab", "down", "--purge", "--dir", dir]);
      removeDir(parent);
    }
  },
  180_000,
);
