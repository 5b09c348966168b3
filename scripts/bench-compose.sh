#!/usr/bin/env bash
# Compose benchmark: `compose up -d --wait` of a 3-service and of a 20-service busybox stack
# (targets: <= 1 s and <= 3 s), then `down`. Side by side with Debian's docker-compose v1
# (`up -d`; v1 has no --wait) when it is installed and a docker daemon answers
# (scripts/start-dockerd.sh).
# Usage: scripts/bench-compose.sh [path/to/builder]  (root)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$repo/target/release/builder}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
bin=$(realpath "$bin")
work=$(mktemp -d)
root=$work/root
b() { "$bin" --root "$root" "$@"; }
docker_ok() { command -v docker-compose >/dev/null && docker info >/dev/null 2>&1; }
cleanup() {
  for n in 3 20; do
    (cd "$work/s$n" 2>/dev/null && b compose -p "bench$n" down -v >/dev/null 2>&1) || true
    if docker_ok; then
      (cd "$work/d$n" 2>/dev/null && docker-compose -p "bench$n" down >/dev/null 2>&1) || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

bash "$repo/scripts/make-busybox-rootfs.sh" "$work/busybox.tar" >/dev/null
b import "$work/busybox.tar" busybox:latest >/dev/null
if docker_ok; then docker import "$work/busybox.tar" bench-busybox:latest >/dev/null; fi

# A stack of N sleeping busybox services; the last depends on the first.
stack() {
  local n=$1 image=$2
  echo "services:"
  for i in $(seq "$n"); do
    echo "  s$i:"
    echo "    image: $image"
    echo "    command: [\"sleep\", \"600\"]"
  done
  echo "    depends_on: [s1]"
}

for n in 3 20; do
  mkdir -p "$work/s$n" "$work/d$n"
  stack "$n" busybox > "$work/s$n/compose.yaml"
  stack "$n" bench-busybox > "$work/d$n/compose.yaml"
  echo "== up -d --wait, $n services"
  for i in 1 2 3; do
    t0=$(now_ms)
    (cd "$work/s$n" && b compose -p "bench$n" up -d --wait 2>"$work/up.err") || { cat "$work/up.err"; exit 1; }
    ours=$(( $(now_ms) - t0 ))
    (cd "$work/s$n" && b compose -p "bench$n" down 2>/dev/null)
    line="builder #$i: $ours ms"
    if docker_ok; then
      t0=$(now_ms)
      (cd "$work/d$n" && docker-compose -p "bench$n" up -d >/dev/null 2>&1)
      theirs=$(( $(now_ms) - t0 ))
      (cd "$work/d$n" && docker-compose -p "bench$n" down >/dev/null 2>&1)
      line="$line    docker-compose v1 (up -d): $theirs ms"
    fi
    echo "$line"
  done
done
