#!/usr/bin/env bash
# All tests, on a fresh Debian 12 machine as root: installs what the tests run against (the
# real Nix 2.8 and OpenSSH, Debian roots with Nix 2.26 and 2.34) and offload's dependencies
# when missing, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nix-store >/dev/null || [ ! -x /usr/sbin/sshd ] || ! command -v debootstrap >/dev/null || ! command -v nft >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y nix-bin openssh-server debootstrap nftables
fi
# Debian roots for lab hosts of Nix 2.26 and 2.34 (built once, then reused).
bash scripts/roots.sh
# npm ci when node_modules is missing or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then npm ci; fi
npm test
