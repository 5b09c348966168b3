#!/usr/bin/env bash
# Runs the whole test suite (needs root: tests use namespaces and overlay mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/start-dockerd.sh
cargo test --workspace --no-fail-fast
# No function over 120 lines in the engine crates (issue 11).
bash scripts/long-functions.sh
# The CLI stays thin: src/ under 1,500 lines (issue 11).
bash scripts/cli-size.sh
# A fresh clone, with no conformance folder beside it, must pass too (vendored data only);
# cheap, as it reuses this checkout's target directory.
bash scripts/fresh-clone-check.sh
