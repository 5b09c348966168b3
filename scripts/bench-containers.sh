#!/usr/bin/env bash
# Container benchmarks, side by side with docker where it applies (the test dockerd runs with
# --bridge=none, so docker's containers use --network host and docker publishes no ports):
#   1. `run -d -p` until the published port accepts a connection (docker: `run -d --network
#      host` until its port accepts one)
#   2. throughput of a published port vs a direct loopback connection: HTTP (busybox httpd,
#      curl) and raw TCP (the host's python3 receiving in the container, a Python sender)
#   3. 50 detached containers: monitor RSS and private memory each, and `ps` time (docker:
#      containerd-shim RSS each, `docker ps` time)
#   4. `run --rm IMAGE true` on the default bridge vs `docker run --rm`
# Targets (issue 13): 1 <= 100 ms; 2 >= 0.80 of direct; 3 <= 2 MB per monitor, ps <= 50 ms.
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
  docker ps -aq --filter label=bench=50 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
have_docker() { docker info >/dev/null 2>&1; }
docker_image() {
  docker image inspect bench-busybox >/dev/null 2>&1 || docker import "$work/busybox.tar" bench-busybox >/dev/null
}
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
if have_docker; then
  docker_image
  for i in 1 2 3; do
    port=$(free_port)
    t0=$(now_ms)
    docker run -d --name "bench-httpd" --network host bench-busybox httpd -f -p "127.0.0.1:$port" >/dev/null
    until curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; do :; done
    echo "docker run --network host #$i: $(( $(now_ms) - t0 )) ms"
    docker rm -f bench-httpd >/dev/null
  done
fi

echo "== 2. published port vs direct loopback throughput (256 MiB over HTTP)"
mkdir -p "$work/www"
head -c $((256 << 20)) /dev/zero > "$work/www/blob"
port=$(free_port); direct=$(free_port)
b run -d --name web -v "$work/www:/www:ro" -p "127.0.0.1:$port:80" busybox httpd -f -p 80 -h /www >/dev/null
b run -d --name hostweb --network host -v "$work/www:/www:ro" busybox httpd -f -p "127.0.0.1:$direct" -h /www >/dev/null
sleep 0.5
speed() { curl -s -o /dev/null -w '%{speed_download}' "$1"; }
for i in 1 2 3; do
  p=$(speed "http://127.0.0.1:$port/blob"); d=$(speed "http://127.0.0.1:$direct/blob")
  python3 -c "p,d=$p,$d; print(f'published {p/2**20:.0f} MiB/s, direct {d/2**20:.0f} MiB/s, ratio {p/d:.2f}')"
done
b rm -f web hostweb >/dev/null
echo "-- raw TCP, 1 GiB: the host's python3 (chroot into the host's root, bound"
echo "   read-only) receives in the container; a Python sender on the host"
sink_py='import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", PORT))
s.listen()
buf = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    while c.recv_into(buf):
        pass
    c.close()'
send_gib() {
  python3 - "$1" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
chunk = b"\0" * (1 << 20)
t0 = time.monotonic()
for _ in range(1024):
    s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
s.recv(1)  # the receiver closes once it has read everything
print(1024 / (time.monotonic() - t0))
PY
}
port=$(free_port); direct=$(free_port)
b run -d --name sink -v /:/host:ro -p "127.0.0.1:$port:5001" busybox \
  chroot /host python3 -c "${sink_py//PORT/5001}" >/dev/null
b run -d --name hostsink --network host -v /:/host:ro busybox \
  chroot /host python3 -c "${sink_py//PORT/$direct}" >/dev/null
sleep 1
for i in 1 2 3; do
  p=$(send_gib "$port"); d=$(send_gib "$direct")
  python3 -c "p,d=$p,$d; print(f'published {p:.0f} MiB/s, direct {d:.0f} MiB/s, ratio {p/d:.2f}')"
done
b rm -f sink hostsink >/dev/null

echo "== 3. 50 detached containers: monitor RSS and ps time"
t0=$(now_ms)
for i in $(seq 50); do b run -d busybox sleep 600 >/dev/null; done
echo "started 50 in $(( $(now_ms) - t0 )) ms"
# RSS counts the binary's shared pages once per process; private (Private_Clean +
# Private_Dirty of smaps_rollup) is what each more container costs.
memory_of() {
  for pid in "$@"; do
    awk -v pid="$pid" '/^Rss:/ {r=$2} /^Private_(Clean|Dirty):/ {p+=$2} END {print r, p}' "/proc/$pid/smaps_rollup"
  done | sort -n | awk '{r[NR]=$1; p+=$2; if ($2>pm) pm=$2} END {printf "RSS KiB min %d max %d; private KiB mean %d max %d\n", r[1], r[NR], p/NR, pm}'
}
monitors=$(for d in "$root"/containers/*/; do
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['monitor_pid'])" "$d/state.json"
done)
echo "builder monitors: $(memory_of $monitors)"
for i in 1 2 3; do
  t0=$(now_ms); b ps >/dev/null; echo "ps: $(( $(now_ms) - t0 )) ms"
done
b ps -aq | xargs -r "$bin" --root "$root" rm -f >/dev/null
if have_docker; then
  docker_image
  t0=$(now_ms)
  for i in $(seq 50); do docker run -d --network host --label bench=50 bench-busybox sleep 600 >/dev/null; done
  echo "docker started 50 in $(( $(now_ms) - t0 )) ms"
  shims=$(pgrep -f containerd-shim-runc-v2 || true)
  echo "containerd shims ($(echo "$shims" | wc -w)): $(memory_of $shims)"
  for i in 1 2 3; do
    t0=$(now_ms); docker ps >/dev/null; echo "docker ps: $(( $(now_ms) - t0 )) ms"
  done
  docker ps -aq --filter label=bench=50 | xargs -r docker rm -f >/dev/null
fi

echo "== 4. run --rm busybox true (builder on its bridge; docker with --network none here, since"
echo "   the test dockerd runs with --bridge=none)"
for i in 1 2 3; do
  t0=$(now_ms); b run --rm --name "bench$i" busybox true; echo "builder: $(( $(now_ms) - t0 )) ms"
done
if have_docker; then
  docker_image
  for i in 1 2 3; do
    t0=$(now_ms); docker run --rm --network none bench-busybox true; echo "docker:  $(( $(now_ms) - t0 )) ms"
  done
else
  echo "docker: not running (scripts/start-dockerd.sh)"
fi
