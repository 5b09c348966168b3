#!/usr/bin/env bash
# Remote builds (`builder serve` on loopback, mutual TLS) side by side with local ones, on
# bench.sh's W1 workload (20,000-file context): cold, no-op, one file changed; then context
# upload throughput. BIN=path/to/builder skips the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  bash scripts/install-deps.sh
  cargo build --release --quiet
  BIN=$PWD/target/release/builder
fi
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
bash scripts/make-busybox-rootfs.sh "$work/busybox.tar"
for r in local server; do
  SOURCE_DATE_EPOCH=0 "$BIN" --root "$work/$r" import "$work/busybox.tar" busybox:latest >/dev/null
done

# Certificates: a CA, the server's (127.0.0.1), the client's.
certs=$work/certs
mkdir -p "$certs/client"
(
  cd "$certs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ca -keyout ca.key -out ca.pem
  for who in server client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$who" -keyout $who.key -out $who.csr
    echo "subjectAltName=IP:127.0.0.1" >ext
    openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
      -extfile ext -out $who.pem
  done
  cp ca.pem client/ca.pem && cp client.pem client/cert.pem && cp client.key client/key.pem
) >/dev/null 2>&1
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" --root "$work/server" serve --addr "tcp://127.0.0.1:$port" --tlscacert "$certs/ca.pem" \
  --tlscert "$certs/server.pem" --tlskey "$certs/server.key" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
export BUILDER_CERT_PATH=$certs/client

ctx=$work/ctx
bash scripts/make-w1-context.sh "$ctx"
ms() { echo $((($2 - $1) / 1000000)); }
# t LABEL CONTEXT: one local and one remote build; prints both times and the bytes sent.
t() {
  local s m e sent
  sync
  s=$(date +%s%N)
  "$BIN" --root "$work/local" build --progress=quiet -t bench "$2" 2>/dev/null
  m=$(date +%s%N)
  "$BIN" build --builder "tcp://127.0.0.1:$port" --progress=rawjson -t bench "$2" \
    2>"$work/remote.err" >/dev/null
  e=$(date +%s%N)
  sent=$(grep -o '"context_bytes_sent":[0-9]*' "$work/remote.err" | cut -d: -f2)
  printf '%s local %6d ms   remote %6d ms   (context sent: %s bytes)\n' "$1" "$(ms "$s" "$m")" \
    "$(ms "$m" "$e")" "$sent"
}
t "cold build      " "$ctx"
t "no-op rebuild   " "$ctx"
echo changed >"$ctx/src/d7/f7.bin"
t "one file changed" "$ctx"

# Upload throughput: 512 MB in 4 files to a build that uses none of it.
big=$work/big
mkdir -p "$big"
for i in 0 1 2 3; do head -c 128M /dev/urandom >"$big/f$i"; done
printf 'FROM busybox\n' >"$big/Dockerfile"
sync
s=$(date +%s%N)
"$BIN" build --builder "tcp://127.0.0.1:$port" --progress=rawjson "$big" 2>"$work/remote.err" >/dev/null
e=$(date +%s%N)
sent=$(grep -o '"context_bytes_sent":[0-9]*' "$work/remote.err" | cut -d: -f2)
awk -v b="$sent" -v ms="$(ms "$s" "$e")" \
  'BEGIN { printf "upload          %d MB in %d ms (whole build): %.0f MB/s\n", b/1e6, ms, b/1e6/(ms/1000) }'
