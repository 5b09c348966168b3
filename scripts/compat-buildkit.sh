#!/usr/bin/env bash
# Conformance sweep against the real reference: builds every fixture under testdata/compat/ (or
# the ones named) with builder and with the BuildKit built into Debian's docker 20.10, then
# compares the exported filesystem trees, the image configs and history, and the exit codes
# (scripts/compat-compare.py). Not part of CI: it needs dockerd (scripts/start-dockerd.sh).
#
# A fixture is a directory holding a Dockerfile and its context. Optional files in it, not sent:
#   prepare     shell script run inside the copied context (tars, hard links, setuid modes and
#               other things git cannot store)
#   build-args  extra `--build-arg K=V` / `--target T` words for both builds
# Fixtures listed in testdata/compat/KNOWN differ in ways README.md there explains; they are
# printed but not counted.
# A Dockerfile whose first line is `# compat: modern` uses syntax the reference's bundled
# Dockerfile frontend (BuildKit v0.8 era) predates; it is built with builder only.
# mtimes are compared where either side's is before 2021 (context files, times set by
# `prepare`), not where both come from a build (RUN outputs, cached or not).
#
# usage: scripts/compat-buildkit.sh [NAME...]     (BUILDER=path, COMPAT_WORK=dir to override)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
builder=${BUILDER:-$repo/target/debug/builder}
work=${COMPAT_WORK:-/tmp/builder-compat}
docker=/usr/bin/docker
fixtures=$repo/testdata/compat

bash "$repo/scripts/start-dockerd.sh" || exit 1
mkdir -p "$work"
if [ ! -f "$work/busybox.tar" ]; then
  bash "$repo/scripts/make-busybox-rootfs.sh" "$work/busybox.tar" >/dev/null || exit 1
  "$docker" import "$work/busybox.tar" compat-busybox:latest >/dev/null || exit 1
  "$builder" --root "$work/root" import "$work/busybox.tar" compat-busybox:latest >/dev/null || exit 1
fi

build_buildkit() { # dir name args...
  local dir=$1 name=$2; shift 2
  DOCKER_BUILDKIT=1 "$docker" build --network host -t "compat-$name" "$@" "$dir/ctx" \
    >"$dir/bk.log" 2>&1
  echo $? >"$dir/bk.rc"
  [ "$(cat "$dir/bk.rc")" = 0 ] || return 0
  DOCKER_BUILDKIT=1 "$docker" build --network host -o "type=tar,dest=$dir/bk.tar" "$@" \
    "$dir/ctx" >>"$dir/bk.log" 2>&1
  "$docker" save "compat-$name" -o "$dir/bk-image.tar"
}

build_builder() { # dir name args...
  local dir=$1 name=$2; shift 2
  "$builder" --root "$work/root" build --progress=plain -t "compat-$name" "$@" "$dir/ctx" \
    >"$dir/b.log" 2>&1
  echo $? >"$dir/b.rc"
  [ "$(cat "$dir/b.rc")" = 0 ] || return 0
  "$builder" --root "$work/root" build --progress=plain -o "type=tar,dest=$dir/b.tar" "$@" \
    "$dir/ctx" >>"$dir/b.log" 2>&1
  "$builder" --root "$work/root" save "compat-$name" --format docker -o "$dir/b-image.tar"
}

run_fixture() { # name
  local name=$1 dir=$work/$1 args=()
  rm -rf "$dir" && mkdir -p "$dir"
  cp -a "$fixtures/$name" "$dir/ctx"
  rm -f "$dir/ctx/prepare" "$dir/ctx/build-args"
  # Context mtimes are fixed (git checkouts do not keep them), so both sides' copies can be
  # compared; `prepare` may set others.
  find "$dir/ctx" -exec touch -h -d '2020-01-01 00:00:00' {} +
  if [ -f "$fixtures/$name/prepare" ]; then
    (cd "$dir/ctx" && bash "$fixtures/$name/prepare") || { echo "$name: prepare failed"; return 1; }
  fi
  [ -f "$fixtures/$name/build-args" ] && read -r -a args <"$fixtures/$name/build-args"
  if head -n1 "$fixtures/$name/Dockerfile" | grep -q '^# compat: modern'; then
    build_builder "$dir" "$name" "${args[@]}"
    echo "$name: builder-only (exit $(cat "$dir/b.rc")); the reference frontend predates it"
    return 0
  fi
  build_buildkit "$dir" "$name" "${args[@]}"
  build_builder "$dir" "$name" "${args[@]}"
  python3 "$repo/scripts/compat-compare.py" "$name" "$dir" && return 0
  if grep -qx "$name" "$fixtures/KNOWN"; then
    echo "$name: known difference (testdata/compat/README.md)"
    return 0
  fi
  return 1
}

names=("$@")
[ ${#names[@]} -gt 0 ] || mapfile -t names < <(cd "$fixtures" && ls -d */ | tr -d /)
failed=0
for n in "${names[@]}"; do
  run_fixture "$n" || failed=$((failed + 1))
done
echo "compat: ${#names[@]} fixtures, $failed with new divergences (details under $work/NAME)"
[ "$failed" = 0 ]
