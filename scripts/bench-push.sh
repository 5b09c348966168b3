#!/usr/bin/env bash
# Times `builder push` of a ~360 MB image (Debian minbase + two copies of /usr) to a loopback
# docker-registry, with gzip layers and with zstd layers;
# peak RSS from /usr/bin/time -v; then docker 20.10 builds and pushes the same image (gzip).
# The debootstrap tarball is cached under /var/cache. BUILDER_BIN skips the cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
need=()
for p in debootstrap time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[[ -n ${BUILDER_BIN:-} ]] || cargo build --release --quiet
bin=${BUILDER_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/builder}

cache=/var/cache/builder-bench
tarball=$cache/debian-bookworm-minbase.tar
if [[ ! -s $tarball ]]; then
  # The apt mirror this machine already uses.
  mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    awk '{print $2}' | grep -v security | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
  mkdir -p "$cache"
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  echo "debootstrap bookworm from $mirror (once; cached in $tarball)" >&2
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
fi

work=$(mktemp -d)
cleanup() {
  [[ -s $work/registry.pids ]] && xargs kill <"$work/registry.pids" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
export BUILDER_ROOT=$work/root
# Keep the machine's registry settings and credentials out of the measurement.
export BUILDER_CONFIG=$work/builder.toml DOCKER_CONFIG=$work/docker
: >"$BUILDER_CONFIG"

"$bin" import "$tarball" debian:bookworm >/dev/null
ctx=$work/ctx
mkdir -p "$ctx"
printf 'FROM debian:bookworm\nRUN cp -a /usr /usr2 && cp -a /usr /usr3\n' >"$ctx/Dockerfile"

# start_registry NAME: an empty docker-registry on a free loopback port; prints the port.
start_registry() {
  local name=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$work/$name.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/$name
http:
  addr: 127.0.0.1:$port
EOF
  /usr/bin/docker-registry serve "$work/$name.yml" >/dev/null 2>&1 &
  echo $! >>"$work/registry.pids"
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  echo "$port"
}
port=$(start_registry registry)

# Prints "<label>: <seconds> s, peak RSS <MB> MB, <layer MB> MB of layers, <summary>".
timed_push() {
  local label=$1 name=$2 out
  out=$(/usr/bin/time -v "$bin" push "$name" 2>"$work/time.txt") || {
    cat "$work/time.txt" >&2
    return 1
  }
  local secs rss
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s}' "$work/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$work/time.txt")
  local layers
  layers=$(du -sm "$work/registry/docker/registry/v2/blobs" | cut -f1)
  printf '%s: %s s, peak RSS %s MB, registry blobs now %s MB (%s)\n' \
    "$label" "$secs" "$rss" "$layers" "${out#*(}" | sed 's/)$//'
}

# Prints "<label>: <seconds> s, peak RSS <MB> MB" for a `builder build` with these arguments.
timed_build() {
  local label=$1
  shift
  if ! /usr/bin/time -v "$bin" build --progress=quiet "$@" "$ctx" >/dev/null 2>"$work/build.err"; then
    cat "$work/build.err" >&2
    return 1
  fi
  awk -F': ' -v label="$label" '
    /Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]}
    /Maximum resident set size/ {rss = $2 / 1024}
    END {printf "%s: %s s, peak RSS %.0f MB\n", label, s, rss}' "$work/build.err"
}

timed_build "build (RUN copies /usr twice, gzip layer)" -t "127.0.0.1:$port/bench/debian:gzip"
read -r base_mb usr_mb < <(tar -tvf "$tarball" |
  awk '{s += $3} $6 ~ /^\.\/usr\// {u += $3} END {printf "%.0f %.0f\n", s / 1e6, u / 1e6}')
echo "image: ${base_mb} MB base + ${usr_mb} MB x 2 copied = $((base_mb + 2 * usr_mb)) MB uncompressed," \
  "$(du -sm "$work/root/content/blobs" | cut -f1) MB of gzip blobs in the store"
timed_push "gzip push" "127.0.0.1:$port/bench/debian:gzip"
timed_push "gzip re-push (nothing sent)" "127.0.0.1:$port/bench/debian:gzip"
"$bin" tag "127.0.0.1:$port/bench/debian:gzip" "127.0.0.1:$port/bench/mounted:gzip"
timed_push "gzip push to another repo (mounts)" "127.0.0.1:$port/bench/mounted:gzip"

# The same image with zstd layers (the base layer recompressed too).
timed_build "build, cached, exported with zstd layers" \
  -o "type=image,name=127.0.0.1:$port/bench/debian:zstd,compression=zstd,force-compression=true"
timed_push "zstd push" "127.0.0.1:$port/bench/debian:zstd"

# The peer: docker 20.10 (Debian's CLI; BuildKit built in) builds the same image and pushes it to
# its own empty registry, compressing with gzip as it pushes. NO_DOCKER=1 skips it.
if [[ -n ${NO_DOCKER:-} ]]; then exit 0; fi
bash scripts/start-dockerd.sh
docker_cli=/usr/bin/docker
$docker_cli import "$tarball" builder-bench/debian:bookworm >/dev/null
sed -i 's|^FROM debian:bookworm|FROM builder-bench/debian:bookworm|' "$ctx/Dockerfile"
dport=$(start_registry docker-registry)
DOCKER_BUILDKIT=1 $docker_cli build -q --network host -t "127.0.0.1:$dport/bench/debian:gzip" "$ctx" >/dev/null
s=$(date +%s%N)
$docker_cli push -q "127.0.0.1:$dport/bench/debian:gzip" >/dev/null
echo "docker push (gzip): $(python3 -c "print(round(($(date +%s%N) - $s) / 1e9, 2))") s," \
  "registry blobs now $(du -sm "$work/docker-registry/docker/registry/v2/blobs" | cut -f1) MB"
$docker_cli rmi -f "127.0.0.1:$dport/bench/debian:gzip" builder-bench/debian:bookworm >/dev/null
$docker_cli builder prune -af >/dev/null
