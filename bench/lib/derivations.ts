// The Nix expressions the benchmarks build, written into the benchmark's work dir. No
// nixpkgs: builders are /bin/sh with absolute paths, since the sandbox has no PATH.
import { writeFileSync } from "node:fs";
import { join } from "node:path";

/** One derivation whose output is its salt: a fresh salt is a fresh build. */
const TRIVIAL = `{ salt }: derivation {
  name = "bench-trivial"; inherit salt;
  system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo $salt > $out" ];
}
`;

/** \`count\` independent trivial leaves, built by one nix-build of the list. */
const LEAVES = `{ salt, count }: builtins.genList (i: derivation {
  name = "bench-leaf-\${toString i}"; inherit salt; index = i;
  system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo $salt $index > $out" ];
}) count
`;

/**
 * A derivation with a big input (a store path added beforehand): "small" lists the input
 * (output of a few bytes, no reference to it), "large" copies it (output as big as the input).
 */
const BIG_INPUT = `{ salt, input, output }: derivation {
  name = "bench-transfer-\${output}"; inherit salt;
  input = builtins.storePath input;
  system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" (if output == "large" then "/bin/cp -r $input $out" else "/bin/ls $input > $out") ];
}
`;

export interface Expressions {
  trivial: string;
  leaves: string;
  bigInput: string;
}

export function writeExpressions(dir: string): Expressions {
  const files = { trivial: join(dir, "trivial.nix"), leaves: join(dir, "leaves.nix"), bigInput: join(dir, "big-input.nix") };
  writeFileSync(files.trivial, TRIVIAL, { mode: 0o644 });
  writeFileSync(files.leaves, LEAVES, { mode: 0o644 });
  writeFileSync(files.bigInput, BIG_INPUT, { mode: 0o644 });
  return files;
}

/** A salt no earlier run used, so the derivation is new to every store. */
export function freshSalt(tag: string): string {
  return `${tag}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
}
