#!/usr/bin/env bash
# Debian roots for lab hosts whose Nix is not this machine's 2.8 (see src/lab/host.ts):
#   trixie: nix-bin 2.26, openssh-server
#   sid:    nix-bin 2.34, openssh-server, guix, busybox-static
# Built once with debootstrap and reused: <dir>/<suite>.stamp is written only once a root is
# complete, so an interrupted build is redone. A root that already has every package (made by
# hand) is accepted as it is. Needs root. OFFLOAD_ROOTS_DIR overrides /var/lib/offload-roots.
set -euo pipefail
dir=${OFFLOAD_ROOTS_DIR:-/var/lib/offload-roots}
mirror=http://deb.debian.org/debian
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then echo "roots: run as root (debootstrap, chroot)" >&2; exit 1; fi
mkdir -p "$dir"
# Parallel CI jobs or test runs must not debootstrap into the same directory.
exec 9>"$dir/.lock"
flock -w 1800 9 || { echo "roots: $dir/.lock held for 30 minutes; is another roots.sh stuck?" >&2; exit 1; }

if ! command -v debootstrap >/dev/null; then
  echo "roots: installing debootstrap"
  apt-get update -qq
  apt-get install -y -qq debootstrap >/dev/null
fi

# Runs a shell command in root $1 with /proc mounted (Nix and dpkg scripts need it), in a
# mount namespace of its own so that no mount outlives the command.
in_root() {
  unshare -m --propagation private -- sh -c 'mount -t proc proc "$1/proc" && exec chroot "$1" sh -c "$2"' sh "$1" "$2"
}

# Whether dpkg in root $1 has all of the packages after it installed.
installed() {
  local root=$1 status
  shift
  status=$(chroot "$root" dpkg-query -W -f '${db:Status-Status}\n' "$@" 2>/dev/null) || return 1
  ! grep -qvx installed <<<"$status"
}

build() {
  local suite=$1 started=$SECONDS
  shift
  local root=$dir/$suite stamp=$dir/$suite.stamp
  if [ -f "$stamp" ]; then
    echo "roots: $suite reused ($root, built $(cat "$stamp"))"
    return
  fi
  if [ -d "$root" ] && installed "$root" "$@"; then
    date -u +%FT%TZ >"$stamp"
    echo "roots: $suite accepted as it was ($root already has $*)"
    return
  fi
  # No stamp: a partial root of an interrupted run, which no host can have used (hosts need the stamp).
  rm -rf "$root"
  echo "roots: building $suite in $root (debootstrap, then $*)"
  # nix-bin cannot come with debootstrap --include (its perl dependencies fail there): apt after.
  unshare -m --propagation private -- debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$dir/$suite.log" 2>&1 ||
    { tail -20 "$dir/$suite.log" >&2; echo "roots: debootstrap $suite failed (log: $dir/$suite.log)" >&2; exit 1; }
  # The mirror serves a snapshot whose Release files are past their Valid-Until.
  echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99snapshot"
  # Package scripts must not start daemons (sshd on port 22 of this machine's network).
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  in_root "$root" "apt-get update -qq && apt-get install -y -qq --no-install-recommends $*" >>"$dir/$suite.log" 2>&1 ||
    { tail -20 "$dir/$suite.log" >&2; echo "roots: installing $* in $suite failed (log: $dir/$suite.log)" >&2; exit 1; }
  in_root "$root" "apt-get clean"
  date -u +%FT%TZ >"$stamp"
  echo "roots: $suite built in $((SECONDS - started)) s, $(du -sh "$root" | cut -f1)"
}

started=$SECONDS
build trixie nix-bin openssh-server
build sid nix-bin openssh-server guix busybox-static
echo "roots: ready in $dir after $((SECONDS - started)) s"
