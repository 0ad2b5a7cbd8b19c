// An ssh client for a master host of the Debian sid root, whose Nix 2.34 needs one for its
// build-remote but whose root has only openssh-server: this machine's /usr/bin/ssh with its
// own libraries and loader, copied into a directory the host sees, run through a wrapper
// named `ssh` to put first in PATH.
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";

/** Makes `<dir>/bin/ssh`; returns `<dir>/bin`. */
export function portableSsh(dir: string): string {
  const lib = join(dir, "lib");
  const bin = join(dir, "bin");
  mkdirSync(lib, { recursive: true, mode: 0o755 });
  mkdirSync(bin, { recursive: true, mode: 0o755 });
  // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)".
  const libraries = execFileSync("ldd", ["/usr/bin/ssh"], { encoding: "utf8" })
    .split("\n")
    .map((line) => /(\/\S+) \(0x/.exec(line)?.[1])
    .filter((file): file is string => file !== undefined);
  const loader = libraries.find((file) => basename(file).startsWith("ld-linux"));
  if (loader === undefined) throw new Error("ldd /usr/bin/ssh names no ld-linux loader");
  for (const file of libraries) copyFileSync(file, join(lib, basename(file)));
  copyFileSync("/usr/bin/ssh", join(dir, "ssh.real"));
  const wrapper = join(bin, "ssh");
  writeFileSync(wrapper, `#!/bin/sh\nexec ${join(lib, basename(loader))} --library-path ${lib} ${join(dir, "ssh.real")} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return bin;
}
