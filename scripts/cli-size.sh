#!/usr/bin/env bash
# Fails when the CLI (`src/` of the root package, every .rs file under it) is over a limit
# (default 1,500 lines, issue 11): logic belongs in the crates; src/ keeps clap definitions
# and one-line calls into them.
# Usage: scripts/cli-size.sh [LIMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
limit="${1:-1500}"
total=$(find src -name '*.rs' -print0 | xargs -0 cat | wc -l)
if [ "$total" -gt "$limit" ]; then
  echo "src/ is $total lines, over the limit of $limit: move logic into the crate that owns it" >&2
  find src -name '*.rs' -print0 | xargs -0 wc -l | sort -n >&2
  exit 1
fi
echo "src/ is $total lines (limit $limit)"
