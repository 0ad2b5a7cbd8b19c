// What a machines.ts imports as "offload".
export { buildMachine, localMachine } from "./config/records.js";
export type * from "../types/index.js";
