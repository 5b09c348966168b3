//! Multi-platform builds: arm64 steps under qemu-user-static emulation, image indexes
//! with one manifest per platform (checked with tar and skopeo), `run --platform`, and
//! `FROM --platform=$BUILDPLATFORM` stages shared between target platforms.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// An arm64 busybox root filesystem tarball (Debian's busybox-static:arm64), made once.
fn arm64_busybox_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("builder-test-busybox-arm64-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tar = dir.join("busybox-arm64.tar");
        let st = Command::new("bash")
            .arg(repo().join("scripts/make-busybox-rootfs.sh"))
            .arg(&tar)
            .arg("arm64")
            .status()
            .unwrap();
        assert!(st.success(), "make-busybox-rootfs.sh OUT arm64 failed");
        tar
    })
    .clone()
}

fn ok(out: &std::process::Output) -> &std::process::Output {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        stdout(out),
        stderr(out)
    );
    out
}

/// A store with `busybox-amd64` and `busybox-arm64` imported, and `busybox:latest` an
/// index over both (made by a two-platform build picking the base by `$TARGETARCH`).
fn multiarch_store() -> Store {
    let store = Store::with_busybox();
    let arm64 = arm64_busybox_tar();
    ok(&store.run(&["tag", "busybox:latest", "busybox-amd64"]));
    ok(&store.run(&[
        "import",
        "--platform",
        "linux/arm64",
        arm64.to_str().unwrap(),
        "busybox-arm64",
    ]));
    let ctx = context(&[("Dockerfile", "ARG TARGETARCH\nFROM busybox-$TARGETARCH\n")]);
    ok(&store.build(
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "busybox:latest",
        ],
    ));
    store
}

fn run_in(store: &Store, args: &[&str]) -> String {
    let mut full = vec!["run", "--rm"];
    full.extend_from_slice(args);
    stdout(ok(&store.run(&full)))
}

/// Unpacks an OCI archive with tar and returns (top-level index, the image index it names).
fn read_oci_archive(archive: &Path) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let top: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let entry = &top["manifests"][0];
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index = blob(dir.path(), entry["digest"].as_str().unwrap());
    (dir, index)
}

fn blob(layout: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

fn skopeo(args: &[&str]) -> Value {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(out.status.success(), "skopeo {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn platforms_of(index: &Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            )
        })
        .collect()
}

fn started_steps(out: &std::process::Output, needle: &str) -> Vec<String> {
    events(out)
        .iter()
        .filter(|e| e["event"] == "started")
        .filter_map(|e| e["name"].as_str())
        .filter(|n| n.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn arm64_run_step_executes_under_emulation() {
    let store = Store::new();
    ok(&store.run(&[
        "import",
        "--platform",
        "linux/arm64",
        arm64_busybox_tar().to_str().unwrap(),
        "busybox:latest",
    ]));
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN uname -m > /arch\n")]);
    ok(&store.build(ctx.path(), &["--platform", "linux/arm64", "-t", "arm"]));
    assert_eq!(run_in(&store, &["arm", "cat", "/arch"]), "aarch64\n");
    // The image runs emulated by default too, and an explicit other platform is refused.
    assert_eq!(run_in(&store, &["arm", "uname", "-m"]), "aarch64\n");
    let refused = store.run(&["run", "--platform", "linux/amd64", "arm", "true"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("linux/arm64") && stderr(&refused).contains("linux/amd64"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn two_platform_build_exports_one_index_with_a_manifest_per_platform() {
    let store = multiarch_store();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nARG TARGETPLATFORM TARGETARCH\nRUN uname -m > /arch && echo $TARGETPLATFORM $TARGETARCH > /target\n",
    )]);
    let archive = store.root().join("multi.tar");
    let out = store.build(
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "multi:latest",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
        ],
    );
    ok(&out);
    // Each platform ran its own RUN step, named with its platform.
    let mut runs = started_steps(&out, "RUN uname -m");
    runs.sort();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs[0].starts_with("[linux/amd64 "), "{runs:?}");
    assert!(runs[1].starts_with("[linux/arm64 "), "{runs:?}");

    // tar: the archive's index.json names an image index with both platforms, and each
    // manifest's config has the matching architecture.
    let (layout, index) = read_oci_archive(&archive);
    assert_eq!(platforms_of(&index), ["linux/amd64", "linux/arm64"]);
    for m in index["manifests"].as_array().unwrap() {
        let manifest = blob(layout.path(), m["digest"].as_str().unwrap());
        let config = blob(
            layout.path(),
            manifest["config"]["digest"].as_str().unwrap(),
        );
        assert_eq!(config["architecture"], m["platform"]["architecture"]);
        assert_eq!(config["os"], "linux");
    }
    // skopeo agrees on the index.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", archive.display()),
    ]);
    assert_eq!(platforms_of(&raw), ["linux/amd64", "linux/arm64"]);

    // The store keeps the whole index under the tag; run picks the platform's manifest.
    let images = stdout(ok(&store.run(&["images"])));
    let index_digest = index_digest(&layout);
    let listed = images.lines().find(|l| l.starts_with("multi:latest"));
    assert!(
        listed.is_some_and(|l| l.contains(&index_digest[7..19])),
        "{images}"
    );
    assert_eq!(
        run_in(
            &store,
            &[
                "--platform",
                "linux/arm64",
                "multi",
                "cat",
                "/arch",
                "/target"
            ]
        ),
        "aarch64\nlinux/arm64 arm64\n"
    );
    assert_eq!(
        run_in(&store, &["multi", "cat", "/arch", "/target"]),
        "x86_64\nlinux/amd64 amd64\n"
    );
    let missing = store.run(&["run", "--platform", "linux/s390x", "multi", "true"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("linux/s390x"),
        "{}",
        stderr(&missing)
    );

    // A step failing on one platform names that platform and the line; nothing is tagged.
    let failing = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN test \"$(uname -m)\" = x86_64\n",
    )]);
    let out = store.build(
        failing.path(),
        &["--platform", "linux/amd64,linux/arm64", "-t", "broken"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("[linux/arm64] Dockerfile:2"),
        "{}",
        stderr(&out)
    );
    let images = stdout(ok(&store.run(&["images"])));
    assert!(!images.contains("broken"), "{images}");
}

fn index_digest(layout: &tempfile::TempDir) -> String {
    let top: Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    top["manifests"][0]["digest"].as_str().unwrap().to_string()
}

#[test]
fn build_platform_stage_runs_once_natively_for_two_targets() {
    let store = multiarch_store();
    let ctx = context(&[(
        "Dockerfile",
        "FROM --platform=$BUILDPLATFORM busybox AS build\n\
         ARG BUILDPLATFORM\n\
         RUN uname -m > /built-on && echo $BUILDPLATFORM > /build-args\n\
         FROM busybox\n\
         COPY --from=build /built-on /build-args /\n\
         RUN uname -m > /runs-on\n",
    )]);
    let local = tempfile::tempdir().unwrap();
    let out = store.build(
        ctx.path(),
        &[
            "--platform",
            "linux/arm64,linux/amd64",
            "-t",
            "cross",
            "-o",
            &format!("type=local,dest={}", local.path().display()),
        ],
    );
    ok(&out);
    // type=local writes one directory per platform, named as BuildKit names them.
    let file =
        |dir: &str, name: &str| std::fs::read_to_string(local.path().join(dir).join(name)).unwrap();
    assert_eq!(file("linux_arm64", "runs-on"), "aarch64\n");
    assert_eq!(file("linux_amd64", "runs-on"), "x86_64\n");
    assert_eq!(file("linux_arm64", "built-on"), "x86_64\n");
    let build_stage = started_steps(&out, "RUN uname -m > /built-on");
    assert_eq!(
        build_stage.len(),
        1,
        "the build stage is shared: {build_stage:?}"
    );
    // Labelled with the platform it runs for, though arm64 was listed first.
    assert!(
        build_stage[0].starts_with("[linux/amd64 build "),
        "{build_stage:?}"
    );
    assert_eq!(started_steps(&out, "RUN uname -m > /runs-on").len(), 2);
    assert_eq!(
        run_in(
            &store,
            &[
                "--platform",
                "linux/arm64",
                "cross",
                "cat",
                "/built-on",
                "/runs-on"
            ]
        ),
        "x86_64\naarch64\n"
    );
    assert_eq!(
        run_in(
            &store,
            &["--platform", "linux/arm64", "cross", "cat", "/build-args"]
        ),
        "linux/amd64\n"
    );
}

#[test]
fn pushed_index_is_pulled_per_platform_by_a_fresh_store() {
    let store = multiarch_store();
    let registry = Registry::start();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN uname -m > /arch\n")]);
    let name = format!("{}/multi:v1", registry.addr);
    // `build --push` pushes the index with both platforms' manifests and blobs.
    ok(&store.build(
        ctx.path(),
        &[
            "--platform",
            "linux/arm64,linux/amd64",
            "-t",
            &name,
            "--push",
        ],
    ));
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    // Pushing attaches mode=min provenance by default, as buildx: one attestation manifest
    // per image, after the images.
    assert_eq!(
        platforms_of(&raw),
        [
            "linux/arm64",
            "linux/amd64",
            "unknown/unknown",
            "unknown/unknown"
        ]
    );
    let arm_config = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        &format!("docker://{name}"),
    ]);
    assert_eq!(arm_config["architecture"], "arm64");
    // `builder push` of a stored index sends the same index.
    let second = format!("{}/multi:v2", registry.addr);
    ok(&store.run(&["tag", &name, &second]));
    ok(&store.run(&["push", &second]));
    let raw_second = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{second}"),
    ]);
    assert_eq!(raw_second, raw);

    // A fresh store building on the pushed index for arm64/v8 gets the arm64 manifest.
    let fresh = Store::new();
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {name}\nRUN cat /arch > /base-arch\n"),
    )]);
    ok(&fresh.build(
        ctx.path(),
        &["--platform", "linux/arm64/v8", "-t", "derived"],
    ));
    assert_eq!(
        run_in(&fresh, &["derived", "cat", "/base-arch"]),
        "aarch64\n"
    );
}

#[test]
fn bad_platform_lists_and_single_image_outputs_are_refused() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\n")]);
    let bad = store.build(ctx.path(), &["--platform", "linux/amd64,linux/"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--platform"), "{}", stderr(&bad));
    let docker = store.build(
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            "type=docker,dest=/dev/null",
        ],
    );
    assert!(!docker.status.success());
    assert!(stderr(&docker).contains("type=oci"), "{}", stderr(&docker));
    let nameless = store.build(
        ctx.path(),
        &["--platform", "linux/amd64,linux/arm64", "--push"],
    );
    assert!(!nameless.status.success());
    assert!(stderr(&nameless).contains("-t"), "{}", stderr(&nameless));
}

#[test]
fn arm_variants_are_kept_apart_and_older_ones_serve_newer_cpus() {
    let store = Store::with_busybox();
    // Nothing here executes an arm program: the "arm" images hold the host's busybox
    // under an arm platform, so selection is observable by running them natively.
    let tar = busybox_tar();
    for variant in ["v6", "v7"] {
        ok(&store.run(&[
            "import",
            "--platform",
            &format!("linux/arm/{variant}"),
            tar.to_str().unwrap(),
            &format!("bb-{variant}"),
        ]));
    }
    ok(&store.run(&["tag", "busybox", "bb-amd64"]));
    let ctx = context(&[
        (
            "Dockerfile",
            "ARG TARGETVARIANT\nFROM bb-${TARGETVARIANT:-amd64}\nARG TARGETVARIANT\nCOPY ${TARGETVARIANT:-v6} /variant\n",
        ),
        ("v6", "six\n"),
        ("v7", "seven\n"),
    ]);
    let archive = store.root().join("arm.tar");
    ok(&store.build(
        ctx.path(),
        &[
            "--platform",
            "linux/arm/v6,linux/arm/v7",
            "-t",
            "armbb",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
        ],
    ));
    let (_layout, index) = read_oci_archive(&archive);
    let variants: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["variant"].as_str().unwrap())
        .collect();
    assert_eq!(variants, ["v6", "v7"]);
    let variant_of = |platform: &str| {
        run_in(
            &store,
            &["--platform", platform, "armbb", "cat", "/variant"],
        )
    };
    assert_eq!(variant_of("linux/arm/v7"), "seven\n");
    assert_eq!(variant_of("linux/arm"), "seven\n");
    assert_eq!(variant_of("linux/arm/v6"), "six\n");

    // An index with only v6 still serves a v7 request (a v7 CPU runs v6 code), not v5.
    ok(&store.build(
        ctx.path(),
        &["--platform", "linux/arm/v6,linux/amd64", "-t", "v6only"],
    ));
    assert_eq!(
        run_in(
            &store,
            &["--platform", "linux/arm/v7", "v6only", "cat", "/variant"]
        ),
        "six\n"
    );
    let too_old = store.run(&["run", "--platform", "linux/arm/v5", "v6only", "true"]);
    assert!(!too_old.status.success());
    assert!(
        stderr(&too_old).contains("linux/arm/v5"),
        "{}",
        stderr(&too_old)
    );
}

#[test]
fn min_mode_cache_export_covers_every_platform() {
    let dockerfile = "FROM busybox\nRUN uname -m > /arch\nCOPY f /f\n";
    let ctx = context(&[("Dockerfile", dockerfile), ("f", "x\n")]);
    let cache = tempfile::tempdir().unwrap();
    let first = multiarch_store();
    ok(&first.build(
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-to",
            &format!("type=local,dest={},mode=min", cache.path().display()),
        ],
    ));
    let fresh = multiarch_store();
    let second = fresh.build(
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-from",
            &format!("type=local,src={}", cache.path().display()),
        ],
    );
    ok(&second);
    assert_eq!(started_steps(&second, "RUN uname"), Vec::<String>::new());
    assert_eq!(started_steps(&second, "COPY f"), Vec::<String>::new());
    let cached_runs = events(&second)
        .iter()
        .filter(|e| {
            e["event"] == "cached" && e["name"].as_str().unwrap_or("").contains("RUN uname")
        })
        .count();
    assert_eq!(cached_runs, 2, "{}", stderr(&second));
}
