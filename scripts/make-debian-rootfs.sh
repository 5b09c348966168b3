#!/usr/bin/env bash
# Makes (once) a Debian bookworm minbase root filesystem tarball with debootstrap and
# prints its path. Cached in /var/cache/builder-bench (BUILDER_BENCH_CACHE overrides),
# so tests and benchmarks share one copy. Installs debootstrap via apt if missing.
set -euo pipefail
cache=${BUILDER_BENCH_CACHE:-/var/cache/builder-bench}
tarball=$cache/debian-bookworm-minbase.tar
if [[ -s $tarball ]]; then
  echo "$tarball"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi
# The apt mirror this machine already uses.
mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
  awk '{print $2}' | grep -v security | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$cache"
rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$rootfs" "$tarball.tmp.$$"' EXIT
echo "debootstrap bookworm from $mirror (once; cached in $tarball)" >&2
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp.$$" .
mv "$tarball.tmp.$$" "$tarball"
echo "$tarball"
