#!/usr/bin/env bash
# Times cold, no-op and one-file-changed builds over a 20,000-file context (release build).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --quiet
bin=$PWD/target/release/builder
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BUILDER_ROOT=$work/root
bash scripts/make-busybox-rootfs.sh "$work/busybox.tar"
"$bin" import "$work/busybox.tar" busybox:latest >/dev/null
ctx=$work/ctx
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
t() {
  local s e
  # Flush earlier writes (the generated context, the last build) so each run is measured alone.
  sync
  s=$(date +%s%N)
  "$bin" build --progress=quiet -t bench "$ctx" 2>/dev/null
  e=$(date +%s%N)
  printf '%s: %d ms\n' "$1" $(((e - s) / 1000000))
}
t "cold build        "
t "no-op rebuild     "
echo changed > "$ctx/src/d7/f7.bin"
t "one file changed  "
