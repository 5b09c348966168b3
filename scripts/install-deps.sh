#!/usr/bin/env bash
# Installs the Debian packages builder's tests and quick start need.
set -euo pipefail
pkgs=(busybox-static skopeo umoci docker-registry tar ca-certificates openssl apache2-utils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The packaged registry starts a system service; tests run their own on free ports.
systemctl disable --now docker-registry >/dev/null 2>&1 || true
