#!/usr/bin/env bash
# Installs the Debian packages builder's tests and quick start need.
set -euo pipefail
# busybox-static:arm64 (the arm64 base image fixture) needs the foreign architecture.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
# qemu-user-static registers its binfmt handlers at install time, so binfmt_misc
# must be mounted before it is installed.
if [ -d /proc/sys/fs/binfmt_misc ] && [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
fi
# Rootless networking (slirp4netns, pasta) opens /dev/net/tun as the user; Debian's udev
# makes it 0666, a machine without udev leaves it 0600.
if [ -c /dev/net/tun ]; then chmod 0666 /dev/net/tun; fi
pkgs=(busybox-static skopeo umoci docker-registry tar ca-certificates git gzip bzip2 xz-utils zstd
  qemu-user-static binfmt-support openssh-client openssl apache2-utils debootstrap curl
  # docker 20.10 and buildah: real-world fixtures, `--load`, and checking our images with docker
  docker.io buildah
  # executor confinement (seccomp), container networking, rootless mode
  libseccomp-dev pkg-config nftables iproute2 iptables uidmap passt slirp4netns
  # SBOM tests validate SPDX against its JSON schema, GitLab template tests parse YAML; the
  # GitHub Action runs under node
  python3-jsonschema python3-yaml nodejs
  # the remote crate's gRPC code is generated from proto/ by protoc at build time
  protobuf-compiler
  # compose tests: a Redis image made from the host's redis-server and redis-cli
  redis-server redis-tools
  # scripts/bench-compose.sh compares with docker-compose v1 against dockerd
  docker-compose
  # `run --init`, compose `init: true`: its statically linked /usr/bin/tini-static
  tini)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# An index fetched before arm64 was added has no arm64 package lists.
if ((${#missing[@]})) || ! apt-cache show busybox-static:arm64 >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
fi
if ((${#missing[@]})); then
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The packaged registry starts a system service; tests run their own on free ports.
systemctl disable --now docker-registry >/dev/null 2>&1 || true
# Tests start their own dockerd (scripts/start-dockerd.sh) on a data root of their own.
systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
# Foreign-architecture RUN steps execute in a chroot where /usr/bin/qemu-aarch64-static
# does not exist: the handler needs the F (fix-binary) flag so the kernel opens the
# interpreter at registration time. Re-register it with F if it lacks it.
ensure_qemu_handler() {
  local arch=$1 entry=/proc/sys/fs/binfmt_misc/qemu-$1
  if [ -e "$entry" ] && grep -q '^flags:.*F' "$entry"; then
    return
  fi
  [ -e "$entry" ] && echo -1 >"$entry"
  if command -v update-binfmts >/dev/null && [ -e "/usr/share/binfmts/qemu-$arch" ]; then
    update-binfmts --enable "qemu-$arch" >/dev/null 2>&1 || update-binfmts --import "qemu-$arch" >/dev/null 2>&1 || true
  fi
  if [ ! -e "$entry" ] && [ -e "/usr/lib/binfmt.d/qemu-$arch.conf" ]; then
    cat "/usr/lib/binfmt.d/qemu-$arch.conf" >/proc/sys/fs/binfmt_misc/register
  fi
  if [ -e "$entry" ] && ! grep -q '^flags:.*F' "$entry"; then
    echo "error: binfmt handler qemu-$arch has no F flag; foreign RUN steps would fail" >&2
    exit 1
  fi
}
if [ -e /proc/sys/fs/binfmt_misc/register ]; then
  for arch in aarch64 arm; do
    ensure_qemu_handler "$arch"
  done
fi
# deploy/kubernetes/ is checked by kubernetes-validate (its schemas ship in the package).
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install -q kubernetes-validate==1.37.0 2>/dev/null ||
    python3 -m pip install -q --break-system-packages kubernetes-validate==1.37.0
fi
