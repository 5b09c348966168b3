#!/usr/bin/env bash
# W1: times cold, no-op and one-file-changed builds over a 20,000-file context (release build),
# side by side with BuildKit (docker 20.10's built-in BuildKit, DOCKER_BUILDKIT=1) in one run,
# and prints min / median / max over RUNS runs (default 5; the machine is noisy).
#   bench.sh [--runs N] [--rootless USER] [--no-buildkit]
# `--rootless USER` adds the same series as USER (a non-root user with /etc/subuid and /etc/subgid
# ranges) in rootless mode. BUILDER_BIN skips the cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5 rootless_user= buildkit=1
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --rootless) rootless_user=${2:?--rootless needs a user name}; shift 2 ;;
    --no-buildkit) buildkit=; shift ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
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
results=$work/results
: >"$results"

# Debian's docker.io CLI (20.10) still has BuildKit built in; a newer `docker` earlier on PATH
# would want the buildx plugin, which Debian does not package.
docker_cli=/usr/bin/docker
if [ -n "$buildkit" ]; then
  bash scripts/start-dockerd.sh
  $docker_cli import "$work/busybox.tar" busybox:latest >/dev/null
fi

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# timed TOOL CASE COMMAND...: runs COMMAND after a sync and records its time.
timed() {
  local tool=$1 case=$2 s
  shift 2
  sync
  s=$(now_ms)
  "$@" >/dev/null 2>&1
  echo "$tool $case $(($(now_ms) - s))" >>"$results"
}
# as_runner COMMAND...: runs the builder as root, or as the rootless user with its own store.
as_runner() {
  if [ -n "${runner_user:-}" ]; then
    runuser -u "$runner_user" -- env -i HOME="$work/home" PATH="$PATH" \
      BUILDER_ROOT="$work/root-$runner_user" "$bin" "$@"
  else
    BUILDER_ROOT="$work/root" "$bin" "$@"
  fi
}
builder_series() {
  local tool=$1 store=$work/root${runner_user:+-$runner_user}
  rm -rf "$store" && mkdir -p "$store"
  [ -z "${runner_user:-}" ] || chown "$runner_user" "$store"
  as_runner import "$work/busybox.tar" busybox:latest >/dev/null
  timed "$tool" cold as_runner build --progress=quiet -t bench "$ctx"
  timed "$tool" no-op as_runner build --progress=quiet -t bench "$ctx"
  echo "changed$RANDOM" >"$ctx/src/d7/f7.bin"
  timed "$tool" one-file as_runner build --progress=quiet -t bench "$ctx"
}
# The test dockerd runs without a bridge (start-dockerd.sh), so its RUN steps use the host network.
buildkit_build() { DOCKER_BUILDKIT=1 $docker_cli build -q --network host -t builder-bench-w1 "$ctx"; }
buildkit_series() {
  $docker_cli rmi -f builder-bench-w1 >/dev/null 2>&1 || true
  $docker_cli builder prune -af >/dev/null
  timed buildkit cold buildkit_build
  timed buildkit no-op buildkit_build
  echo "changed$RANDOM" >"$ctx/src/d7/f7.bin"
  timed buildkit one-file buildkit_build
}
for _ in $(seq "$runs"); do
  builder_series builder
  [ -z "$buildkit" ] || buildkit_series
  if [ -n "$rootless_user" ]; then
    mkdir -p "$work/home" && chown "$rootless_user" "$work/home"
    runner_user=$rootless_user builder_series rootless
  fi
done
if [ -n "$buildkit" ]; then
  $docker_cli rmi -f builder-bench-w1 >/dev/null 2>&1 || true
  $docker_cli builder prune -af >/dev/null
fi
echo "W1 over $runs runs, ms (min / median / max):"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
tools = list(dict.fromkeys(r[0] for r in rows))
cases = ["cold", "no-op", "one-file"]
def stats(tool, case):
    v = sorted(int(r[2]) for r in rows if r[0] == tool and r[1] == case)
    return v[0], statistics.median(v), v[-1]
print(f"{'':10}" + "".join(f"{t:>26}" for t in tools) + ("   builder/buildkit (median)" if "buildkit" in tools else ""))
for c in cases:
    line = f"{c:10}" + "".join("{:>8} /{:>7.0f} /{:>7}".format(*stats(t, c)) for t in tools)
    if "buildkit" in tools:
        line += f"   {stats('builder', c)[1] / stats('buildkit', c)[1]:.2f}"
    print(line)
PY
# The rootless store's files belong to the user's subordinate ids; only root removes them (trap).
