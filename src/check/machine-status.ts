// What `offload status` shows of one machine: a fresh look over SSH (load, free store
// space, uptime, clock) beside what this host knows locally (slots held by running
// builds, the last successful build). Never throws: an unreachable machine is a status.
import type { BuildMachine } from "../../types/index.js";
import { asOffloadError } from "../errors.js";
import { isLoginRefusal } from "../select/failures.js";
import { readClockSkew, readDiskSpace, readNixConfig, readUptime, machineStoreDir, storeFilesDir, readLoad } from "../remote/probes.js";
import { connectMachine } from "../remote/ssh.js";
import { readFacts, type MachineFacts } from "../select/machine-facts.js";
import { slotHolders, type SlotHolder } from "../select/slots.js";

export interface MachineStatus {
  machine: string;
  /** Where it is: user@host:port as the record says (ssh_config may add to it). */
  address: string;
  enabled: boolean;
  /** It answered: a refused login (host key, our key) still counts, as the machine is there. */
  reachable: boolean;
  /** Why not, when unreachable. */
  error?: { code: string; message: string; fix?: string };
  load?: number;
  slots: { total: number; inUse: number; holders: (SlotHolder & { slot: number })[] };
  store?: { dir: string; freeBytes: number; totalBytes: number };
  uptimeSeconds?: number;
  clockSkewSeconds?: number;
  lastBuild?: MachineFacts["lastBuild"];
  lastFailure?: MachineFacts["failure"];
}

/** `user@host:port`, each part only where the record gives it. */
export function machineAddress(machine: BuildMachine): string {
  return `${machine.user ? `${machine.user}@` : ""}${machine.host}${machine.port ? `:${machine.port}` : ""}`;
}

export async function machineStatus(machine: BuildMachine, stateDir: string): Promise<MachineStatus> {
  const holders = await slotHolders(stateDir, machine.name, machine.parallelBuilds);
  const held = holders.flatMap((holder, slot) => (holder ? [{ ...holder, slot }] : []));
  const facts = readFacts(stateDir, machine.name);
  const status: MachineStatus = {
    machine: machine.name,
    address: machineAddress(machine),
    enabled: machine.enabled,
    reachable: false,
    slots: { total: machine.parallelBuilds, inUse: held.length, holders: held },
    ...(facts.lastBuild ? { lastBuild: facts.lastBuild } : {}),
    ...(facts.failure ? { lastFailure: facts.failure } : {}),
  };
  let connection;
  try {
    connection = await connectMachine(machine);
  } catch (error) {
    const failure = asOffloadError(error);
    return {
      ...status,
      reachable: isLoginRefusal(failure.code),
      error: { code: failure.code, message: failure.message, ...(failure.fix ? { fix: failure.fix } : {}) },
    };
  }
  try {
    const ssh = connection;
    const [load, uptime, clock, store] = await Promise.all([
      readLoad(ssh).catch(() => undefined),
      readUptime(ssh).catch(() => undefined),
      readClockSkew(ssh).catch(() => undefined),
      // The store's files are where its `store` setting (or the record's remoteStore) puts them; Guix's in /gnu/store.
      (machine.daemon === "guix"
        ? Promise.resolve(machineStoreDir(machine))
        : readNixConfig(ssh)
            .catch(() => undefined)
            .then((config) => storeFilesDir(machine.remoteStore ?? config?.settings.get("store")))
      )
        .then((dir) => readDiskSpace(ssh, dir))
        .catch(() => undefined),
    ]);
    return {
      ...status,
      reachable: true,
      ...(load === undefined ? {} : { load }),
      ...(store ? { store } : {}),
      ...(uptime === undefined ? {} : { uptimeSeconds: uptime }),
      ...(clock ? { clockSkewSeconds: clock.skew } : {}),
    };
  } finally {
    connection.close();
  }
}
