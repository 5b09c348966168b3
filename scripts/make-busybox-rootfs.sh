#!/usr/bin/env bash
# Makes a busybox root filesystem tarball from Debian's busybox-static: OUT.tar
set -euo pipefail
out=${1:?usage: make-busybox-rootfs.sh OUT.tar}
bb=${BUSYBOX:-/bin/busybox}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"/{bin,etc,proc,sys,dev,tmp,root,usr/bin,usr/sbin,sbin,var/tmp,home}
chmod 1777 "$dir/tmp" "$dir/var/tmp"
cp "$bb" "$dir/bin/busybox"
for applet in $("$bb" --list); do
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
