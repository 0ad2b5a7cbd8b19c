// What a machines.ts imports as "offload".
export {};
