#!/usr/bin/env bash
# Makes a busybox root filesystem tarball from Debian's busybox-static: OUT.tar [ARCH]
# ARCH is a Debian architecture (default: this machine's); a foreign one is fetched
# with `apt-get download busybox-static:ARCH` (needs `dpkg --add-architecture ARCH`).
set -euo pipefail
out=${1:?usage: make-busybox-rootfs.sh OUT.tar [ARCH]}
arch=${2:-$(dpkg --print-architecture)}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
if [ "$arch" = "$(dpkg --print-architecture)" ]; then
  bb=${BUSYBOX:-/bin/busybox}
else
  # Downloaded .debs are kept so repeated test runs don't refetch them.
  cache=${BUILDER_FIXTURE_CACHE:-/var/cache/builder-fixtures}/$arch
  mkdir -p "$cache"
  deb=$(ls "$cache"/busybox-static_*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    (cd "$cache" && apt-get download -q "busybox-static:$arch" >/dev/null 2>&1) || {
      echo "error: cannot download busybox-static:$arch; run scripts/install-deps.sh" >&2
      exit 1
    }
    deb=$(ls "$cache"/busybox-static_*.deb | head -n1)
  fi
  dpkg-deb -x "$deb" "$dir/.deb"
  bb=$dir/.deb/bin/busybox
fi
mkdir -p "$dir"/{bin,etc,proc,sys,dev,tmp,root,usr/bin,usr/sbin,sbin,var/tmp,home}
chmod 1777 "$dir/tmp" "$dir/var/tmp"
cp "$bb" "$dir/bin/busybox"
rm -rf "$dir/.deb"
# The host's busybox-static has the same applet list and runs without emulation.
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
done
cat > "$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$dir/etc/group" <<'G'
root:x:0:
daemon:x:1:
nogroup:x:65534:
G
: > "$dir/etc/hosts"
: > "$dir/etc/resolv.conf"
tar --numeric-owner --owner=0 --group=0 -C "$dir" -cf "$out" .
