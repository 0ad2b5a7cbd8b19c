// The lab's programmatic API, for tests, the demo and benchmarks.
export { labUp } from "./up.js";
export { labDown, type LabDownOptions } from "./down.js";
export { labStatus, type LabBuilderStatus, type LabStatus } from "./status.js";
export { readLab, type Lab, type LabBuilder } from "./lab.js";
export { DEFAULT_LAB_DIR, type LabBuilderSpec, type LabOptions } from "./options.js";
export { sshArgs } from "./verify.js";
export {
  ensureUser,
  hostPaths,
  inHost,
  NIX_RELEASES,
  onMachine,
  runInHost,
  runningHosts,
  startHost,
  startNixDaemon,
  stopHost,
  type Host,
  type HostSpec,
  type NixRelease,
} from "./host.js";
export { CLIENT_USER, startMasterHost, type MasterHostOptions } from "./master.js";
export {
  clearFaults,
  cutLink,
  dropPackets,
  LAB_NETWORK,
  linkCounters,
  networkLeftovers,
  restoreLink,
  shapeLink,
  type HostNetwork,
  type LinkCounters,
  type Shape,
} from "./network.js";
