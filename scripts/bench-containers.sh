#!/usr/bin/env bash
# Container benchmarks, side by side with docker where it applies:
#   1. `run -d -p` until the published port accepts a connection
#   2. throughput of a published port vs a direct loopback connection (same httpd, curl)
#   3. 50 detached containers: monitor RSS each, and `ps` time
#   4. `run --rm IMAGE true` on the default bridge vs `docker run --rm`
# Usage: scripts/bench-containers.sh [path/to/builder]  (root; docker optional:
# start it with scripts/start-dockerd.sh)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$repo/target/release/builder}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
root=$work/root
b() { "$bin" --root "$root" "$@"; }
cleanup() {
  b ps -aq 2>/dev/null | xargs -r "$bin" --root "$root" rm -f >/dev/null 2>&1 || true
  docker rm -f bench-httpd >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bash "$repo/scripts/make-busybox-rootfs.sh" "$work/busybox.tar" >/dev/null
b import "$work/busybox.tar" busybox:latest >/dev/null

echo "== 1. run -d -p to first accepted connection"
for i in 1 2 3; do
  port=$(free_port)
  t0=$(now_ms)
  b run -d -p "127.0.0.1:$port:80" busybox httpd -f -p 80 >/dev/null
  until curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; do :; done
  echo "builder run #$i: $(( $(now_ms) - t0 )) ms"
done
b ps -aq | xargs -r "$bin" --root "$root" rm -f >/dev/null

echo "== 2. published port vs direct loopback throughput (256 MiB over HTTP)"
mkdir -p "$work/www"
head -c $((256 << 20)) /dev/zero > "$work/www/blob"
port=$(free_port); direct=$(free_port)
b run -d --name web -v "$work/www:/www:ro" -p "127.0.0.1:$port:80" busybox httpd -f -p 80 -h /www >/dev/null
b run -d --name hostweb --network host -v "$work/www:/www:ro" busybox httpd -f -p "127.0.0.1:$direct" -h /www >/dev/null
sleep 0.5
speed() { curl -s -o /dev/null -w '%{speed_download}' "$1"; }
for i in 1 2; do
  p=$(speed "http://127.0.0.1:$port/blob"); d=$(speed "http://127.0.0.1:$direct/blob")
  python3 -c "p,d=$p,$d; print(f'published {p/2**20:.0f} MiB/s, direct {d/2**20:.0f} MiB/s, ratio {p/d:.2f}')"
done
b rm -f web hostweb >/dev/null

echo "== 3. 50 detached containers: monitor RSS and ps time"
t0=$(now_ms)
for i in $(seq 50); do b run -d busybox sleep 600 >/dev/null; done
echo "started 50 in $(( $(now_ms) - t0 )) ms"
rss=$(for d in "$root"/containers/*/; do
  pid=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['monitor_pid'])" "$d/state.json")
  ps -o rss= -p "$pid"
done | sort -n)
echo "monitor RSS KiB: min $(echo "$rss" | head -1) max $(echo "$rss" | tail -1)"
for i in 1 2 3; do
  t0=$(now_ms); b ps >/dev/null; echo "ps: $(( $(now_ms) - t0 )) ms"
done
b ps -aq | xargs -r "$bin" --root "$root" rm -f >/dev/null

echo "== 4. run --rm busybox true (builder on its bridge; docker with --network none here, since"
echo "   the test dockerd runs with --bridge=none)"
for i in 1 2 3; do
  t0=$(now_ms); b run --rm --name "bench$i" busybox true; echo "builder: $(( $(now_ms) - t0 )) ms"
done
if docker info >/dev/null 2>&1; then
  docker image inspect bench-busybox >/dev/null 2>&1 || docker import "$work/busybox.tar" bench-busybox >/dev/null
  for i in 1 2 3; do
    t0=$(now_ms); docker run --rm --network none bench-busybox true; echo "docker:  $(( $(now_ms) - t0 )) ms"
  done
else
  echo "docker: not running (scripts/start-dockerd.sh)"
fi
