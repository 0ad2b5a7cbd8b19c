// A fleet of identical builders generated from a host list, the way Guix users write a
// loop in machines.scm. The local machine is fast, so it competes for builds too.
import { buildMachine, localMachine } from "offload";

const hostKeys: Record<string, string> = {
  aquamarine: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS root@aquamarine",
  ruby: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3MrvcjI6C6VHEZpPVC6A5NmnXXUEGqUDuhYIhG5fTR root@ruby",
  kana: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICO4gyEC4wCfFL1fEIMJSMTbsGVZTScXJo3m3vdF+CFj root@kana",
};

export default [
  localMachine({ speed: 3 }),
  ...Object.entries(hostKeys).map(([name, hostKey]) =>
    buildMachine({
      name,
      user: "nix",
      systems: ["x86_64-linux", "aarch64-linux"],
      hostKey,
      parallelBuilds: name === "aquamarine" ? 3 : 2,
      speed: name === "aquamarine" ? 2 : 1,
      features: ["big-parallel"],
    }),
  ),
];
