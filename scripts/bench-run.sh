#!/usr/bin/env bash
# Median wall time of `builder run --rm busybox true` (release build, fully confined: caps,
# seccomp, cgroups) against `docker run --rm --network host busybox true`, side by side.
# Usage: bench-run.sh [RUNS]  (default 30). Needs dockerd (scripts/start-dockerd.sh) for the
# docker column; without it only builder is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  cargo build --release --quiet --bin builder
fi
bin=$PWD/target/release/builder
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BUILDER_ROOT=$work/root
bash scripts/make-busybox-rootfs.sh "$work/busybox.tar"
"$bin" import "$work/busybox.tar" busybox:latest >/dev/null

# Prints the median of RUNS timings (ms) of the given command.
median_ms() {
  local times=()
  "$@" >/dev/null 2>&1 # warm-up
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s%N)
    times+=($(((end - start) / 1000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'
}

builder_ms=$(median_ms "$bin" run --rm busybox true)
docker_ms=n/a
if docker info >/dev/null 2>&1; then
  docker image inspect builder-bench-busybox >/dev/null 2>&1 ||
    docker import "$work/busybox.tar" builder-bench-busybox >/dev/null
  docker_ms=$(median_ms docker run --rm --network host builder-bench-busybox true)
fi
printf '%-45s %10s\n' "run --rm busybox true (median of $runs)" "ms"
printf '%-45s %10s\n' "builder (confined)" "$builder_ms"
printf '%-45s %10s\n' "docker run --rm --network host" "$docker_ms"
