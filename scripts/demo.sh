#!/usr/bin/env bash
# The main job, on this one machine: a real Nix build daemon hands a small project to
# offload-hook, which builds it on three loopback "machines" (each a host of its own: its
# /nix/store in a mount namespace, its sshd on 127.0.9.x, its signing key) and imports
# every output only after verifying its signature. Needs root (namespaces, sshd,
# /nix/store); installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
lab=/var/lib/offload-demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$(id -u)" != 0 ]; then echo "demo: run as root (it starts sshd and writes /nix/store)" >&2; exit 1; fi
if ! command -v nix-store >/dev/null || [ ! -x /usr/sbin/sshd ]; then
  say "installing nix-bin and openssh-server"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin openssh-server >/dev/null
fi
[ -d node_modules ] || { say "installing offload's dependencies"; npm ci --no-audit --no-fund --loglevel=error; }
# Build unless dist/ is newer than every source (then a test suite running beside us keeps its dist/).
if [ ! -f dist/hook.js ] || [ -n "$(find src types -newer dist/hook.js -print -quit)" ]; then npm run --silent build; fi
offload() { node "$root/bin/offload.js" "$@"; }

say "starting three loopback build machines"
trap 'say "tearing the lab down"; offload lab down --dir "$lab" --purge' EXIT
offload lab up --dir "$lab" --builders 3 --address 127.0.9.11 --prefix demo
export OFFLOAD_CONFIG_DIR=$lab/etc OFFLOAD_STATE_DIR=$lab/state OFFLOAD_CACHE_DIR=$lab/cache

say "checking every machine: SSH, host key, nix-store, trust, features, a signed round trip"
offload check

say "building the project with nix-build, offload-hook as the build hook, no local builds"
result=$(nix-build scripts/demo/project.nix --argstr salt "$(date +%s%N)" \
  --option build-hook "$root/bin/offload-hook" --max-jobs 0 --option substituters '' --no-out-link)
cat "$result"

say "who built what (each output carries its builder's signature, verified before import)"
nix --extra-experimental-features nix-command path-info --recursive --sigs "$result" \
  | awk '{ name = $1; sub(/^\/nix\/store\/[^-]*-/, "", name); key = $2; sub(/:.*/, "", key); printf "  %-12s signed by %s\n", name, key }'

say "the machines now"
offload status
