//! `builder build` flags with docker/buildx's meaning, each checked by its effect inside a
//! build: RUN's /etc/hosts, ulimits, /dev/shm, network; the image id on stdout; annotation
//! bytes; `--load` into a real Docker engine; `--pull` against a real registry; `--call`.

use crate::common::{context, stderr, stdout, Registry, Store};
use std::path::Path;
use std::process::{Command, Output};

/// Builds `ctx` into a local directory and returns it.
fn build_local(store: &Store, ctx: &Path, extra: &[&str]) -> tempfile::TempDir {
    let dest = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", dest.path().display());
    let mut args = extra.to_vec();
    args.extend(["-o", &out_arg]);
    let out = store.build(ctx, &args);
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    dest
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn build_fails(store: &Store, ctx: &Path, extra: &[&str]) -> String {
    let out = store.build(ctx, extra);
    assert!(!out.status.success(), "build succeeded: {}", stderr(&out));
    stderr(&out)
}

#[test]
fn add_host_ulimit_and_shm_size_reach_run() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN cp /etc/hosts /hosts && ulimit -n > /nofile && ulimit -Hn > /nofile-hard \
             && df -k /dev/shm | tail -n 1 | awk '{print $2}' > /shm\n",
    )]);
    let dest = build_local(
        &store,
        ctx.path(),
        &[
            "--add-host",
            "db:10.1.2.3",
            "--add-host",
            "v6:[fd00::1]",
            "--add-host=gw=host-gateway",
            "--ulimit",
            "nofile=1024:2048",
            "--shm-size",
            "128m",
        ],
    );
    let hosts = read(dest.path(), "hosts");
    assert!(hosts.contains("10.1.2.3\tdb\n"), "{hosts}");
    assert!(hosts.contains("fd00::1\tv6\n"), "{hosts}");
    let gateway = hosts
        .lines()
        .find(|l| l.ends_with("\tgw"))
        .unwrap_or_else(|| panic!("no gw line: {hosts}"));
    let ip: std::net::IpAddr = gateway.split('\t').next().unwrap().parse().unwrap();
    assert!(!ip.is_unspecified(), "{gateway}");
    assert_eq!(read(dest.path(), "nofile"), "1024\n");
    assert_eq!(read(dest.path(), "nofile-hard"), "2048\n");
    assert_eq!(read(dest.path(), "shm"), format!("{}\n", 128 * 1024));

    // The defaults: docker's 64 MiB /dev/shm and no extra hosts (the settings are part of
    // the step's cache key, so this is not the step above from the cache).
    let dest = build_local(&store, ctx.path(), &[]);
    assert_eq!(read(dest.path(), "shm"), format!("{}\n", 64 * 1024));
    assert!(!read(dest.path(), "hosts").contains("\tdb\n"));

    let err = build_fails(&store, ctx.path(), &["--ulimit", "nofile=2048:1024"]);
    assert!(
        err.contains("--ulimit") && err.contains("soft limit"),
        "{err}"
    );
    let err = build_fails(&store, ctx.path(), &["--shm-size", "12q"]);
    assert!(err.contains("--shm-size \"12q\""), "{err}");
    let err = build_fails(&store, ctx.path(), &["--add-host", "db:not-an-ip"]);
    assert!(
        err.contains("--add-host") && err.contains("not-an-ip"),
        "{err}"
    );
}

#[test]
fn network_flag_and_entitlements() {
    let store = Store::with_busybox();
    let ifaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort";
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM busybox\nRUN {ifaces} > /ifaces\n"),
    )]);
    let dest = build_local(&store, ctx.path(), &["--network=none"]);
    assert_eq!(read(dest.path(), "ifaces"), "lo\n");
    let dest = build_local(
        &store,
        ctx.path(),
        &["--network=host", "--allow=network.host"],
    );
    assert_ne!(
        read(dest.path(), "ifaces"),
        "lo\n",
        "host network has the host's interfaces"
    );

    let err = build_fails(&store, ctx.path(), &["--network=host"]);
    assert!(
        err.contains("network.host is not allowed") && err.contains("--allow network.host"),
        "{err}"
    );
    let err = build_fails(&store, ctx.path(), &["--network=bridge"]);
    assert!(err.contains("--network \"bridge\""), "{err}");
    let err = build_fails(&store, ctx.path(), &["--allow=device"]);
    assert!(err.contains("--allow \"device\""), "{err}");

    // RUN's own flags need the entitlements too.
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN --network=host true\n")]);
    let err = build_fails(&store, ctx.path(), &[]);
    assert!(
        err.contains("Dockerfile:2") && err.contains("network.host is not allowed"),
        "{err}"
    );
    build_local(&store, ctx.path(), &["--allow", "network.host"]);
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --security=insecure echo ok > /ok\n",
    )]);
    let err = build_fails(&store, ctx.path(), &[]);
    assert!(err.contains("security.insecure is not allowed"), "{err}");
    let dest = build_local(&store, ctx.path(), &["--allow", "security.insecure"]);
    assert_eq!(read(dest.path(), "ok"), "ok\n");
}

#[test]
fn quiet_prints_the_image_id_alone() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")]);
    let iid = tempfile::tempdir().unwrap();
    let iidfile = iid.path().join("iid");
    let archive = iid.path().join("image.tar");
    let out = store
        .cmd()
        .args(["build", "-q", "-t", "quiet:1", "--iidfile"])
        .arg(&iidfile)
        .arg("-o")
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = std::fs::read_to_string(&iidfile).unwrap();
    assert_eq!(stdout(&out), format!("{id}\n"));
    // As buildx: the image id is the digest of the image config.
    let layout = iid.path().join("layout");
    crate::common::untar_into(&archive, &layout);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(&layout, index["manifests"][0]["digest"].as_str().unwrap());
    assert_eq!(manifest["config"]["digest"], id.as_str());
    assert!(
        !stderr(&out).contains("RUN"),
        "progress in quiet mode: {}",
        stderr(&out)
    );

    // Errors still reach stderr, and stdout stays empty.
    let bad = context(&[("Dockerfile", "FROM busybox\nRUN exit 3\n")]);
    let out = store
        .cmd()
        .args(["build", "--quiet"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("exit code: 3") || stderr(&out).contains("RUN exit 3"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn probe_errors_name_platform_and_iidfile() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN true\n")]);
    let err = build_fails(&store, ctx.path(), &["--platform=linux/nonsense"]);
    assert!(
        err.contains("--platform") && err.contains("unknown architecture \"nonsense\""),
        "{err}"
    );
    let missing = "/nonexistent-builder-dir/iid";
    let err = build_fails(&store, ctx.path(), &["--iidfile", missing]);
    assert!(err.contains(missing) && err.contains("--iidfile"), "{err}");
}

const CALL_DOCKERFILE: &str = "\
# VERSION sets the release version
ARG VERSION=1.0

# build compiles everything
FROM busybox AS build
# MODE picks the build mode
ARG MODE=fast
RUN true

FROM busybox AS release
COPY --from=build / /
";

#[test]
fn call_targets_and_outline_print_as_buildx() {
    let store = Store::new();
    let ctx = context(&[("Dockerfile", CALL_DOCKERFILE)]);
    let out = store.run(&["build", "--call=targets", ctx.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "TARGET            DESCRIPTION\n\
         build             compiles everything\n\
         release (default) \n"
    );
    let out = store.run(&[
        "build",
        "--call=outline",
        "--build-arg",
        "MODE=slow",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "TARGET: release\n\
         \n\
         BUILD ARG   VALUE   DESCRIPTION\n\
         VERSION     1.0     sets the release version\n\
         MODE        slow    picks the build mode\n\
         \n"
    );
    let out = store.run(&[
        "build",
        "--call=outline,format=json",
        "--target=build",
        ctx.path().to_str().unwrap(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "build");
    assert_eq!(json["description"], "compiles everything");
    assert_eq!(json["args"][1]["value"], "fast");
    // --call=check is --check: the build checks only, non-zero on a warning.
    let linted = context(&[("Dockerfile", "FROM scratch as Build\n")]);
    let out = store.run(&["build", "--call=check", linted.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("FromAsCasing") || stdout(&out).contains("FromAsCasing"));
    let out = store.run(&["build", "--call=lint", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("--call \"lint\""));
}

/// The JSON document `digest` in an unpacked OCI layout.
fn blob(layout: &Path, digest: &str) -> serde_json::Value {
    let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn oci_layout(store: &Store, ctx: &Path, extra: &[&str]) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let mut args = extra.to_vec();
    let out_arg = format!("type=oci,dest={}", archive.display());
    args.extend(["-o", &out_arg]);
    let out = store.build(ctx, &args);
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    let layout = dir.path().join("layout");
    crate::common::untar_into(&archive, &layout);
    let index = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    (dir, index)
}

#[test]
fn annotations_land_where_buildx_puts_them() {
    let store = Store::new();
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY a /a\n"), ("a", "x")]);
    let (dir, index) = oci_layout(
        &store,
        ctx.path(),
        &[
            "--annotation",
            "org.opencontainers.image.title=app",
            "--annotation",
            "manifest-descriptor:desc=1",
        ],
    );
    let layout = dir.path().join("layout");
    let entry = &index["manifests"][0];
    assert_eq!(entry["annotations"]["desc"], "1");
    let manifest = blob(&layout, entry["digest"].as_str().unwrap());
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.title"],
        "app"
    );

    let (dir, index) = oci_layout(
        &store,
        ctx.path(),
        &[
            "--platform=linux/amd64,linux/arm64",
            "--annotation=index:idx=top",
            "--annotation=index-descriptor:idesc=2",
            "--annotation=manifest[linux/arm64]:only=arm",
        ],
    );
    let layout = dir.path().join("layout");
    let entry = &index["manifests"][0];
    assert_eq!(entry["annotations"]["idesc"], "2");
    let image_index = blob(&layout, entry["digest"].as_str().unwrap());
    assert_eq!(image_index["annotations"]["idx"], "top");
    for m in image_index["manifests"].as_array().unwrap() {
        let manifest = blob(&layout, m["digest"].as_str().unwrap());
        let want = match m["platform"]["architecture"].as_str().unwrap() {
            "arm64" => serde_json::json!("arm"),
            _ => serde_json::Value::Null,
        };
        assert_eq!(manifest["annotations"]["only"], want);
    }
    let err = build_fails(&store, ctx.path(), &["--annotation=index:k=v"]);
    assert!(err.contains("single-platform"), "{err}");
    let err = build_fails(&store, ctx.path(), &["--annotation=blob:k=v"]);
    assert!(err.contains("unknown annotation type"), "{err}");
}

/// Builds a one-file image (`/v` holds `version`) and pushes it as `reference`.
fn push_version(reference: &str, version: &str) {
    let store = Store::new();
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY v /v\n"), ("v", version)]);
    let out = store.build(ctx.path(), &["-t", reference, "--push"]);
    assert!(out.status.success(), "push failed: {}", stderr(&out));
}

#[test]
fn pull_re_resolves_a_stored_base_tag() {
    let registry = Registry::start();
    let base = format!("{}/base:tag", registry.addr);
    push_version(&base, "one");
    // (--pull re-resolves every base, so this one is all in the registry.)
    let store = Store::new();
    let ctx = context(&[
        ("Dockerfile", &format!("FROM {base}\nCOPY w /w\n")),
        ("w", "w"),
    ]);
    assert_eq!(
        read(build_local(&store, ctx.path(), &[]).path(), "v"),
        "one"
    );
    push_version(&base, "two");
    // Without --pull the stored tag is used; with it, the registry's.
    assert_eq!(
        read(build_local(&store, ctx.path(), &[]).path(), "v"),
        "one"
    );
    assert_eq!(
        read(build_local(&store, ctx.path(), &["--pull"]).path(), "v"),
        "two"
    );
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

#[test]
fn load_puts_the_image_into_docker() {
    let started = Command::new("bash")
        .arg(crate::common::repo().join("scripts/start-dockerd.sh"))
        .status()
        .unwrap();
    assert!(started.success(), "no Docker engine could be started");
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo loaded-ok > /msg\nCMD [\"cat\", \"/msg\"]\n",
    )]);
    let name = format!("builder-load-test:{}", std::process::id());
    let out = store.build(ctx.path(), &["-t", &name, "--load"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    let present = stdout(&listed).lines().any(|l| l == name);
    let run = docker(&["run", "--rm", "--network", "host", &name]);
    let _ = docker(&["rmi", "-f", &name]);
    assert!(
        present,
        "{name} not in docker image ls: {}",
        stdout(&listed)
    );
    assert_eq!(stdout(&run), "loaded-ok\n", "{}", stderr(&run));

    // No engine: a clear error naming the address.
    let out = store
        .cmd()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["build", "--load", "-t", &name])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no Docker engine at unix:///nonexistent/docker.sock"),
        "{}",
        stderr(&out)
    );
    let out = store.build(
        ctx.path(),
        &["--load", "--platform=linux/amd64,linux/arm64"],
    );
    assert!(
        stderr(&out).contains("--load") && stderr(&out).contains("--push"),
        "{}",
        stderr(&out)
    );
}
