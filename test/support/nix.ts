// Helpers for tests against the real Nix 2.8 on this machine: build fresh input-addressed
// paths (a nonce keeps every run's paths new) and read what Nix says about them.
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { PathInfo } from "../../src/nix/path-info.js";

// No substituters: this machine has no network, and a lookup only adds retries and noise.
const NIX_COMMAND = ["--extra-experimental-features", "nix-command", "--option", "substituters", ""];

export function hasNix(): boolean {
  return spawnSync("nix-store", ["--version"], { stdio: "ignore" }).status === 0;
}

export function nixStore(args: string[], input?: Buffer): string {
  return execFileSync("nix-store", args, { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
}

/** Runs `nix <args>` with nix-command enabled; returns status and output instead of throwing. */
export function nix(args: string[]): { status: number; stdout: string; stderr: string } {
  const result = spawnSync("nix", [...NIX_COMMAND, ...args], { encoding: "utf8" });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** Builds a Nix expression (no substituters, no GC root) and returns its output paths. */
export function nixBuild(expression: string): string[] {
  const out = execFileSync("nix-build", ["-E", expression, "--no-out-link", "--option", "substituters", ""], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  return out.trim().split("\n");
}

export interface TestClosure {
  /** Input-addressed: a directory with a file and a symlink. */
  lib: string;
  /** Input-addressed: refers to lib; holds an executable. */
  app: string;
}

/** Two fresh input-addressed paths, app → lib. The builder only has /bin tools, no PATH. */
export function buildTestClosure(label = "t"): TestClosure {
  const nonce = `${label}-${randomBytes(6).toString("hex")}`;
  const expression = `
    let
      sh = args: derivation { name = args.name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" args.script ]; };
      lib = sh { name = "offload-lib-${nonce}"; script = "/bin/mkdir $out; echo lib ${nonce} > $out/data; /bin/ln -s data $out/link"; };
      app = sh { name = "offload-app-${nonce}"; script = "/bin/mkdir -p $out/bin; echo '#!/bin/sh' > $out/bin/app; echo 'cat \${lib}/data' >> $out/bin/app; /bin/chmod +x $out/bin/app"; };
    in [ lib app ]`;
  const [lib, app] = nixBuild(expression);
  return { lib: lib!, app: app! };
}

/** What `nix path-info --json --sigs` reports, as a PathInfo; `store` e.g. a chroot store directory. */
export function nixPathInfo(path: string, store?: string): PathInfo {
  const result = nix(["path-info", "--json", "--sigs", ...storeArgs(store), path]);
  if (result.status !== 0) throw new Error(`nix path-info ${path}: ${result.stderr}`);
  const [info] = JSON.parse(result.stdout) as Array<{
    path: string;
    narHash: string;
    narSize: number;
    references: string[];
    deriver?: string;
    signatures?: string[];
    ca?: string;
  }>;
  const [algorithm, base64] = info!.narHash.split("-", 2);
  if (algorithm !== "sha256") throw new Error(`unexpected narHash ${info!.narHash}`);
  return {
    path: info!.path,
    deriver: info!.deriver,
    references: [...info!.references].sort(),
    narHash: Buffer.from(base64!, "base64"),
    narSize: info!.narSize,
    signatures: info!.signatures ?? [],
    contentAddress: info!.ca,
  };
}

function storeArgs(store: string | undefined): string[] {
  return store === undefined ? [] : ["--store", store];
}

export function isValidPath(path: string, store?: string): boolean {
  return spawnSync("nix-store", [...storeArgs(store), "--check-validity", path], { stdio: "ignore" }).status === 0;
}

/** Removes paths from the local store (they have no GC roots: built with --no-out-link). */
export function deletePaths(paths: string[]): void {
  const valid = paths.filter((path) => isValidPath(path));
  if (valid.length > 0) execFileSync("nix-store", ["--delete", ...valid], { stdio: "ignore" });
}
