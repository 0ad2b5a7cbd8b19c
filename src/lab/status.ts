// `lab status`: for each builder, whether its host and sshd run and answer, and what it is.
import path from "node:path";
import { runningHosts, type NixRelease } from "./host.js";
import { readLab } from "./lab.js";
import { sshdPid } from "./sshd.js";
import { tcpReachable } from "../remote/tcp.js";

export interface LabBuilderStatus {
  name: string;
  address: string;
  port: number;
  /** Its Nix release (2.8: this machine's). */
  nix: NixRelease;
  /** Its host's anchor runs. */
  hostRunning: boolean;
  /** The sshd listener's pid when it runs. */
  pid: number | null;
  running: boolean;
  /** Something accepts TCP connections on address:port. */
  reachable: boolean;
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
  const hostDirs = new Set((await runningHosts()).map((host) => host.dir));
  const builders = await Promise.all(
    lab.builders.map(async (builder): Promise<LabBuilderStatus> => {
      const pid = await sshdPid(builder);
      return {
        name: builder.name,
        address: builder.address,
        port: builder.port,
        nix: builder.nix,
        hostRunning: hostDirs.has(builder.dir),
        pid: pid ?? null,
        running: pid !== undefined,
        reachable: await tcpReachable(builder.address, builder.port),
        signingKeyName: builder.signingKey.slice(0, builder.signingKey.indexOf(":")),
        features: builder.features,
        mandatoryFeatures: builder.mandatoryFeatures,
      };
    }),
  );
  return { dir: lab.dir, configDir: lab.configDir, sshConfig: lab.sshConfig, nixMachines: lab.nixMachines, builders };
}
