#!/usr/bin/env bash
# Times cold, no-op and one-file-changed builds over a 20,000-file context (release build).
# `--rootless USER` times the same builds again as USER (a non-root user with /etc/subuid and
# /etc/subgid ranges) in rootless mode, printed after root's. BUILDER_BIN skips the cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."
rootless_user=
if [ "${1:-}" = --rootless ]; then rootless_user=${2:?--rootless needs a user name}; fi
if [ -z "${BUILDER_BIN:-}" ]; then
  bash scripts/install-deps.sh
  cargo build --release --quiet
fi
bin=${BUILDER_BIN:-$PWD/target/release/builder}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The rootless user reads the context and the binary's copy.
chmod 755 "$work"
cp "$bin" "$work/builder"
bin=$work/builder
bash scripts/make-busybox-rootfs.sh "$work/busybox.tar"
chmod 644 "$work/busybox.tar"
ctx=$work/ctx
bash scripts/make-w1-context.sh "$ctx"
# as_runner COMMAND...: runs the builder as root, or as the rootless user with its own store.
as_runner() {
  if [ -n "${runner_user:-}" ]; then
    runuser -u "$runner_user" -- env -i HOME="$work/home" PATH="$PATH" \
      BUILDER_ROOT="$work/root-$runner_user" "$bin" "$@"
  else
    BUILDER_ROOT="$work/root" "$bin" "$@"
  fi
}
t() {
  local s e
  # Flush earlier writes (the generated context, the last build) so each run is measured alone.
  sync
  s=$(date +%s%N)
  as_runner build --progress=quiet -t bench "$ctx" 2>/dev/null
  e=$(date +%s%N)
  printf '%s%s: %d ms\n' "$1" "${runner_user:+ (rootless)}" $(((e - s) / 1000000))
}
series() {
  as_runner import "$work/busybox.tar" busybox:latest >/dev/null
  t "cold build        "
  t "no-op rebuild     "
  echo changed$RANDOM > "$ctx/src/d7/f7.bin"
  t "one file changed  "
}
series
if [ -n "$rootless_user" ]; then
  mkdir -p "$work/home" "$work/root-$rootless_user"
  chown "$rootless_user" "$work/home" "$work/root-$rootless_user"
  runner_user=$rootless_user series
  # The rootless store's files belong to the user's subordinate ids; only root removes them.
fi
