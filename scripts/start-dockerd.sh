#!/usr/bin/env bash
# Starts Debian's dockerd (docker.io 20.10) on /var/run/docker.sock with its own data root, unless
# a daemon already answers there. Tests use it for `--load` and to check our images with
# `docker load`/`docker run`; scripts/make-fixtures.sh uses it to make real-world fixtures.
set -euo pipefail
sock=/var/run/docker.sock
data_root=${BUILDER_TEST_DOCKER_ROOT:-/var/lib/builder-test-docker}
log=/var/log/builder-test-dockerd.log
ping() { curl -fsS --unix-socket "$sock" http://localhost/_ping >/dev/null 2>&1; }
if ping; then
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "start-dockerd: dockerd is not installed (scripts/install-deps.sh installs docker.io)" >&2
  exit 1
fi
# containerd is started by dockerd itself when no system containerd runs.
# No bridge and no iptables rules: the daemon must not change the host firewall (its FORWARD
# policy DROP would cut off builder's own container networks); tests run docker containers with
# --network host.
nohup setsid dockerd --data-root "$data_root" -H "unix://$sock" --bridge=none --iptables=false >"$log" 2>&1 </dev/null &
for _ in $(seq 1 150); do
  ping && exit 0
  sleep 0.2
done
echo "start-dockerd: dockerd did not answer on $sock within 30s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
