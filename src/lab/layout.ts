// Where every file of a lab lives. The etc/ half uses offload's own config-dir names, so
// OFFLOAD_CONFIG_DIR=<dir>/etc points offload at the lab without further settings.
import path from "node:path";
import { aclPath, publicKeyPath, secretKeyPath } from "../files/config-dir.js";
import { hostPaths } from "./host.js";

export interface LabPaths {
  dir: string;
  /** The lab's record of itself (the Lab as JSON), read by status and down. */
  state: string;
  clientKey: string;
  clientPublicKey: string;
  authorizedKeys: string;
  sshConfig: string;
  knownHosts: string;
  nixMachines: string;
  configDir: string;
  machinesFile: string;
  signingKeySecret: string;
  signingKeyPublic: string;
  acl: string;
}

export interface BuilderPaths {
  /** Also its host's directory: its /nix and /etc/nix are in there. */
  dir: string;
  /** Its /etc/nix/nix.conf. */
  nixConf: string;
  signingKeySecret: string;
  signingKeyPublic: string;
  hostKey: string;
  hostPublicKey: string;
  sshdConfig: string;
  pidFile: string;
  logFile: string;
  /** HOME of the builder's sessions: an empty one, so no shell startup file of this host runs. */
  home: string;
}

export function labPaths(dir: string): LabPaths {
  const configDir = path.join(dir, "etc");
  return {
    dir,
    state: path.join(dir, "lab.json"),
    clientKey: path.join(dir, "client_ed25519"),
    clientPublicKey: path.join(dir, "client_ed25519.pub"),
    authorizedKeys: path.join(dir, "authorized_keys"),
    sshConfig: path.join(dir, "ssh_config"),
    knownHosts: path.join(dir, "known_hosts"),
    nixMachines: path.join(dir, "nix-machines"),
    configDir,
    machinesFile: path.join(configDir, "machines.ts"),
    signingKeySecret: secretKeyPath(configDir),
    signingKeyPublic: publicKeyPath(configDir),
    acl: aclPath(configDir),
  };
}

export function builderPaths(labDir: string, name: string): BuilderPaths {
  const dir = path.join(labDir, name);
  return {
    dir,
    nixConf: hostPaths(dir).nixConf,
    signingKeySecret: path.join(dir, "signing-key.sec"),
    signingKeyPublic: path.join(dir, "signing-key.pub"),
    hostKey: path.join(dir, "ssh_host_ed25519_key"),
    hostPublicKey: path.join(dir, "ssh_host_ed25519_key.pub"),
    sshdConfig: path.join(dir, "sshd_config"),
    pidFile: path.join(dir, "sshd.pid"),
    logFile: path.join(dir, "sshd.log"),
    home: path.join(dir, "home"),
  };
}
