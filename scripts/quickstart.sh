#!/usr/bin/env bash
# Installs what builder needs, builds it, makes a busybox base image, then
# builds and runs the example in examples/hello.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --quiet
bin=target/release/builder
export BUILDER_ROOT=${BUILDER_ROOT:-/var/lib/builder}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bash scripts/make-busybox-rootfs.sh "$tmp/busybox.tar"
"$bin" import "$tmp/busybox.tar" busybox:latest
"$bin" build --progress=plain -t hello examples/hello
"$bin" run --rm hello
