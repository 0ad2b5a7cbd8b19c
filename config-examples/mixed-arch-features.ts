// Builders of different architectures and capabilities. Derivations that require "kvm"
// only go to machines with it; the benchmark box takes ONLY derivations that ask for
// "benchmark" (a mandatory feature), so ordinary builds never disturb its measurements.
import { buildMachine } from "offload";

export default [
  buildMachine({
    name: "x86-big",
    port: 2222,
    user: "nix",
    systems: ["x86_64-linux", "i686-linux"],
    hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS root@x86-big",
    parallelBuilds: 8,
    speed: 2.5,
    features: ["kvm", "big-parallel", "nixos-test"],
  }),
  buildMachine({
    name: "arm",
    user: "nix",
    systems: ["aarch64-linux"],
    hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3MrvcjI6C6VHEZpPVC6A5NmnXXUEGqUDuhYIhG5fTR root@arm",
    parallelBuilds: 4,
    speed: 1.2,
    overloadThreshold: 0.9,
  }),
  buildMachine({
    name: "bench",
    user: "nix",
    systems: ["x86_64-linux"],
    hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICO4gyEC4wCfFL1fEIMJSMTbsGVZTScXJo3m3vdF+CFj root@bench",
    features: ["kvm"],
    mandatoryFeatures: ["benchmark"],
    overloadThreshold: null,
    signingKey: "builder2-1:hyLlqmGp33/OsSj4Go99YSZIwgZ+031/EtD2Z9Ug87E=",
  }),
  buildMachine({
    name: "old-x86",
    user: "nix",
    systems: ["x86_64-linux"],
    hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINZjkzUrY5cwK0Bs7RhUYbm8TCk4lEidDTMrBxPdWmGR root@old-x86",
    speed: 0.5,
    enabled: false, // kept for reference; never offloaded to
  }),
];
