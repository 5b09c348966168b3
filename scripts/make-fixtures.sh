#!/usr/bin/env bash
# Makes the images under testdata/images/ with the real tools that write such images in the
# wild: Debian's docker 20.10 (import, commit, the classic builder), buildah (OCI and docker
# formats) and skopeo (conversions, archives, OCI layouts), plus an index shaped like the ones
# BuildKit >= 0.11 pushes (an image and its attestation manifest). Nothing here is written by
# hand: the JSON is what those tools produce. The tests need no daemon: they push these
# fixtures into a docker-registry with `skopeo copy --preserve-digests`.
#
# Usage: bash scripts/make-fixtures.sh [OUT_DIR]   (default testdata/images; needs root)
# Every image is based on one tiny root filesystem (Debian's busybox-static and a few links),
# imported once by docker; the other images reuse that layer's blob, so git stores it once.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-testdata/images}")
docker=${DOCKER:-/usr/bin/docker} # Debian's docker.io client, the same 20.10 as the daemon
work=$(mktemp -d)
registry_pid=
reg=
buildah_ctrs=()
cleanup() {
  for c in "${buildah_ctrs[@]}"; do bah rm "$c" >/dev/null 2>&1 || true; done
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
  "$docker" rm -f wild-fixture-commit >/dev/null 2>&1 || true
  # Twice: the base cannot go while the images built on it are still there.
  for _ in 1 2; do
    "$docker" images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$reg/wild/*" 2>/dev/null |
      xargs -r "$docker" rmi >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
# buildah with its own storage (vfs: no overlay-on-overlay trouble) and chroot isolation.
bah() { buildah --root "$work/buildah" --runroot "$work/buildah-run" --storage-driver vfs "$@"; }

tiny_rootfs() { # OUT.tar: busybox and the links the tests use, fixed owners and times
  local dir=$work/rootfs
  mkdir -p "$dir"/{bin,etc,tmp}
  cp /bin/busybox "$dir/bin/busybox"
  for applet in sh cat echo ls env id true mkdir test wc uname sleep; do
    ln -s busybox "$dir/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
  chmod 1777 "$dir/tmp"
  tar --numeric-owner --owner=0 --group=0 --mtime=@1700000000 --sort=name -C "$dir" -cf "$1" .
}

start_registry() {
  local port
  # A random loopback port nothing answers on.
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
  done
  cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOF
  /usr/bin/docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
  registry_pid=$!
  reg=127.0.0.1:$port
  for _ in $(seq 1 50); do
    curl -fsS "http://$reg/v2/" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "make-fixtures: docker-registry did not start" >&2
  exit 1
}

# dir: keeps the manifest bytes exactly as the registry served them (oci: would convert docker
# manifests to OCI ones).
save_dir() { # NAME: registry image wild/NAME -> $out/NAME (skopeo dir: transport)
  rm -rf "${out:?}/$1"
  skopeo copy -q --all --preserve-digests --src-tls-verify=false "docker://$reg/wild/$1" "dir:$out/$1"
}

make_docker_images() {
  tiny_rootfs "$work/rootfs.tar"
  # docker import: config with "Cmd": null, "Env": null, "Volumes": null, ... (no history).
  "$docker" import "$work/rootfs.tar" "$reg/wild/docker-import" >/dev/null
  # docker commit: a container's changes as a second layer, container_config full of nulls.
  "$docker" run --network host --name wild-fixture-commit "$reg/wild/docker-import" \
    /bin/sh -c 'echo committed >/committed.txt'
  "$docker" commit -m "wild fixture" wild-fixture-commit "$reg/wild/docker-commit" >/dev/null
  # The classic builder (no BuildKit): VOLUME, ONBUILD, nulls in container_config.
  mkdir -p "$work/classic"
  cat >"$work/classic/Dockerfile" <<EOF
FROM $reg/wild/docker-import
ENV CLASSIC=1
RUN echo classic >/classic.txt
VOLUME /data
ONBUILD RUN echo onbuild >/onbuild.txt
LABEL org.example.fixture=classic
CMD ["cat", "/classic.txt"]
EOF
  DOCKER_BUILDKIT=0 "$docker" build -q --network host -t "$reg/wild/docker-classic" "$work/classic" >/dev/null
  for name in docker-import docker-commit docker-classic; do
    "$docker" push -q "$reg/wild/$name" >/dev/null
    save_dir "$name"
  done
  # docker save: the docker-archive format (manifest.json, repositories, legacy layer dirs).
  "$docker" tag "$reg/wild/docker-commit" wild-fixture/docker-save:latest
  "$docker" save wild-fixture/docker-save:latest | gzip -9n >"$out/docker-save.tar.gz"
  "$docker" rmi wild-fixture/docker-save:latest >/dev/null
}

make_buildah_images() {
  local ctr
  ctr=$(bah from -q --tls-verify=false "docker://$reg/wild/docker-import")
  buildah_ctrs+=("$ctr")
  bah run --isolation chroot "$ctr" -- /bin/sh -c 'echo buildah >/buildah.txt'
  bah config --env BUILDAH=1 --workingdir /tmp --label org.example.fixture=buildah \
    --cmd '["cat", "/buildah.txt"]' "$ctr"
  for format in oci docker; do
    bah commit -q --format "$format" "$ctr" "wild/buildah-$format" >/dev/null
    bah push -q --tls-verify=false "wild/buildah-$format" "docker://$reg/wild/buildah-$format"
    save_dir "buildah-$format"
  done
}

make_skopeo_conversions() {
  # docker schema 2 -> OCI and OCI -> docker schema 2, registry to registry.
  skopeo copy -q --format oci --src-tls-verify=false --dest-tls-verify=false \
    "docker://$reg/wild/docker-commit" "docker://$reg/wild/skopeo-oci"
  skopeo copy -q --format v2s2 --src-tls-verify=false --dest-tls-verify=false \
    "docker://$reg/wild/buildah-oci" "docker://$reg/wild/skopeo-v2s2"
  save_dir skopeo-oci
  save_dir skopeo-v2s2
  # An OCI image layout (a directory, several images may share it) as skopeo writes it.
  # (docker-save.tar.gz above is the docker-archive fixture: another would add 1 MB of busybox.)
  rm -rf "$out/skopeo-layout"
  skopeo copy -q --src-tls-verify=false "docker://$reg/wild/docker-classic" \
    "oci:$out/skopeo-layout:classic"
}

# BuildKit >= 0.11 pushes an index holding the image and, beside it, an attestation manifest
# (provenance/SBOM in-toto statements) with platform unknown/unknown and the annotations
# vnd.docker.reference.type=attestation-manifest and vnd.docker.reference.digest=<image>.
# No BuildKit runs here, so the same shape is made with buildah: the attestation is an OCI
# image from scratch whose one layer holds an in-toto statement (BuildKit stores the statement
# as a raw application/vnd.in-toto+json blob instead of a tar; readers select by the index
# entry, which is identical), and `buildah manifest add` sets the entry's platform and
# annotations as BuildKit does.
make_attestation_index() {
  local ctr image_digest
  image_digest=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$reg/wild/buildah-oci")
  mkdir -p "$work/attestation"
  cat >"$work/attestation/provenance.json" <<EOF2
{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2","subject":[{"name":"pkg:docker/wild/attested","digest":{"sha256":"${image_digest#sha256:}"}}],"predicate":{"builder":{"id":""},"buildType":"https://mobyproject.org/buildkit@v1"}}
EOF2
  ctr=$(bah from -q scratch)
  buildah_ctrs+=("$ctr")
  bah copy -q "$ctr" "$work/attestation/provenance.json" /provenance.json >/dev/null
  bah config --os unknown --arch unknown "$ctr"
  bah commit -q --format oci "$ctr" wild/attestation >/dev/null
  bah push -q --tls-verify=false wild/attestation "docker://$reg/wild/attestation"
  bah manifest create wild/attested >/dev/null
  bah manifest add --tls-verify=false wild/attested "docker://$reg/wild/buildah-oci" >/dev/null
  bah manifest add --tls-verify=false --os unknown --arch unknown \
    --annotation vnd.docker.reference.type=attestation-manifest \
    --annotation "vnd.docker.reference.digest=$image_digest" \
    wild/attested "docker://$reg/wild/attestation" >/dev/null
  bah manifest push -q --all --format oci --tls-verify=false wild/attested \
    "docker://$reg/wild/attested"
  save_dir attested
}

# A Docker manifest list (what `docker manifest push` and older registries serve): buildah's
# list with its docker-format image, pushed in the v2s2 list format.
make_docker_manifest_list() {
  bah manifest create wild/docker-list >/dev/null
  bah manifest add --tls-verify=false wild/docker-list "docker://$reg/wild/buildah-docker" >/dev/null
  bah manifest push -q --all --format v2s2 --tls-verify=false wild/docker-list \
    "docker://$reg/wild/docker-list"
  save_dir docker-list
}

mkdir -p "$out"
bash scripts/start-dockerd.sh
start_registry
make_docker_images
make_buildah_images
make_skopeo_conversions
make_attestation_index
make_docker_manifest_list
echo "fixtures written to $out:"
du -sh "$out"/*
