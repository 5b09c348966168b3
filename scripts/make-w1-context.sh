#!/usr/bin/env bash
# Writes the W1 benchmark workload into DIR: a 20,000-file, 180 MB context copied by one stage,
# with two other stages running `sleep 2` each. bench.sh and bench-remote.sh both time it.
# Usage: make-w1-context.sh DIR
set -euo pipefail
ctx=${1:?usage: make-w1-context.sh DIR}
mkdir -p "$ctx"
python3 - "$ctx" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(200):
    os.makedirs(f"{root}/src/d{d}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/src/d{d}/f{f}.bin", "wb") as fh:
            fh.write(os.urandom(9000))
PY
cat > "$ctx/Dockerfile" <<'D'
FROM busybox AS a
RUN sleep 2 && echo a > /a
FROM busybox AS b
RUN sleep 2 && echo b > /b
FROM busybox
COPY --from=a /a /a
COPY --from=b /b /b
COPY src /src
D
