// One remote builder. The smallest useful machines.ts.
import { buildMachine } from "offload";

export default [
  buildMachine({
    name: "builder1.example.org",
    user: "nix",
    systems: ["x86_64-linux"],
    hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS root@builder1",
    parallelBuilds: 4,
    signingKey: "builder1-1:r8fHcb97rTmN9sOLD9dWWaki32fS8/oSX4GepB2Sn+E=",
  }),
];
