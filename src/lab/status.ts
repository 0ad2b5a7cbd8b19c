// `lab status`: for each builder, whether its sshd runs and answers, and what it is.
import path from "node:path";
import { readLab } from "./lab.js";
import { sshdPid } from "./sshd.js";
import { tcpReachable } from "./tcp.js";

export interface LabBuilderStatus {
  name: string;
  address: string;
  port: number;
  /** The sshd listener's pid when it runs. */
  pid: number | null;
  running: boolean;
  /** Something accepts TCP connections on address:port. */
  reachable: boolean;
  storeDir: string;
  /** Name of the builder's signing key, as found in its signatures. */
  signingKeyName: string;
  features: string[];
  mandatoryFeatures: string[];
}

export interface LabStatus {
  dir: string;
  configDir: string;
  sshConfig: string;
  nixMachines: string;
  builders: LabBuilderStatus[];
}

export async function labStatus(dir: string): Promise<LabStatus> {
  const lab = await readLab(path.resolve(dir));
  const builders = await Promise.all(
    lab.builders.map(async (builder): Promise<LabBuilderStatus> => {
      const pid = await sshdPid(builder);
      return {
        name: builder.name,
        address: builder.address,
        port: builder.port,
        pid: pid ?? null,
        running: pid !== undefined,
        reachable: await tcpReachable(builder.address, builder.port),
        storeDir: builder.storeDir,
        signingKeyName: builder.signingKey.slice(0, builder.signingKey.indexOf(":")),
        features: builder.features,
        mandatoryFeatures: builder.mandatoryFeatures,
      };
    }),
  );
  return { dir: lab.dir, configDir: lab.configDir, sshConfig: lab.sshConfig, nixMachines: lab.nixMachines, builders };
}
