#!/usr/bin/env bash
# Proves the repository is self-contained: clones the committed HEAD into a temporary
# directory with nothing beside it (no ../shared), checks that no test or script names
# ../shared, and runs the tests that read vendored data (testdata/) from that clone.
# The clone shares this checkout's target directory (CARGO_TARGET_DIR), so only the
# workspace crates are rebuilt.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
head=$(git -C "$repo" rev-parse HEAD)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$repo" "$tmp/builder"
git -C "$tmp/builder" checkout -q --detach "$head"
cd "$tmp/builder"
if [ -e ../shared ]; then
  echo "fresh-clone-check: $tmp/shared exists; the check needs a directory with nothing beside it" >&2
  exit 1
fi
if git grep -n -E '\.\./shared|shared/conformance' -- '*.rs' '*.sh' '*.toml' ':!scripts/fresh-clone-check.sh'; then
  echo "fresh-clone-check: the lines above read ../shared, which a clone does not have" >&2
  exit 1
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
cargo test -q -p frontend --test conformance
cargo test -q -p oci --test wild_decode
echo "fresh-clone-check: a clone of $head passes without ../shared"
