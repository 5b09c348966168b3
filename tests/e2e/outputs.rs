//! Outputs (-o), layer compression, image commands (save/load/pull/inspect/history) and
//! reproducible builds, each checked with a second tool (skopeo, umoci, zstd, gzip, tar).

use crate::common::{context, stderr, stdout, Registry, Store};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A RUN layer over one gzip piece (1 MiB) in size, deterministic in content.
const DOCKERFILE: &str =
    "FROM busybox\nRUN seq 1 400000 > /nums && echo hi > /hi\nCOPY a.txt /a.txt\nCMD [\"cat\", \"/hi\"]\n";

fn app_context() -> tempfile::TempDir {
    context(&[("Dockerfile", DOCKERFILE), ("a.txt", "alpha\n")])
}

fn ok(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        stderr(output),
        stdout(output)
    );
}

fn tool(program: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(program).args(args).output().unwrap();
    ok(&output, program);
    output
}

fn untar(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    tool(
        "tar",
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            into.to_str().unwrap(),
        ],
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The (only) image manifest of an OCI layout directory.
fn layout_manifest(layout: &Path) -> Value {
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    read_json(&blob(layout, digest))
}

fn layer_media_types(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn zstd_layers_decompress_with_the_zstd_cli_and_base_layers_stay_gzip_unless_forced() {
    let store = Store::with_busybox();
    let ctx = app_context();
    let out = tempfile::tempdir().unwrap();
    let mixed = out.path().join("mixed.tar");
    let forced = out.path().join("forced.tar");
    let build = store.build(
        ctx.path(),
        &[
            "-o",
            &format!("type=oci,dest={},compression=zstd", mixed.display()),
            "-o",
            &format!(
                "type=oci,dest={},compression=zstd,compression-level=9,force-compression=true",
                forced.display()
            ),
        ],
    );
    ok(&build, "build");

    let layout = out.path().join("mixed");
    untar(&mixed, &layout);
    let manifest = layout_manifest(&layout);
    assert_eq!(
        layer_media_types(&manifest),
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ],
        "the busybox base layer keeps its gzip blob"
    );
    let run_layer = blob(&layout, manifest["layers"][1]["digest"].as_str().unwrap());
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -d -c {} | tar -t", run_layer.display()))
        .output()
        .unwrap();
    ok(&listing, "zstd -d | tar -t");
    let names = stdout(&listing);
    assert!(names.lines().any(|n| n == "nums"), "{names}");
    assert!(names.lines().any(|n| n == "hi"), "{names}");

    let forced_layout = out.path().join("forced");
    untar(&forced, &forced_layout);
    let forced_manifest = layout_manifest(&forced_layout);
    assert!(layer_media_types(&forced_manifest)
        .iter()
        .all(|m| m == "application/vnd.oci.image.layer.v1.tar+zstd"));
    for layer in forced_manifest["layers"].as_array().unwrap() {
        let path = blob(&forced_layout, layer["digest"].as_str().unwrap());
        tool("zstd", &["-t", "-q", path.to_str().unwrap()]);
    }
    // The diff ids (uncompressed content) are the same whatever the compression.
    let config = |layout: &Path, manifest: &Value| {
        read_json(&blob(
            layout,
            manifest["config"]["digest"].as_str().unwrap(),
        ))
    };
    assert_eq!(
        config(&layout, &manifest)["rootfs"],
        config(&forced_layout, &forced_manifest)["rootfs"]
    );
    let inspect = tool(
        "skopeo",
        &["inspect", &format!("oci-archive:{}", forced.display())],
    );
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3);
}

#[test]
fn gzip_layers_pass_gzip_t_and_docker_media_types_are_used_on_request() {
    let store = Store::with_busybox();
    let ctx = app_context();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("docker-types.tar");
    let build = store.build(
        ctx.path(),
        &[
            "-o",
            &format!(
                "type=oci,dest={},oci-mediatypes=false,compression-level=1",
                archive.display()
            ),
        ],
    );
    ok(&build, "build");
    let layout = out.path().join("layout");
    untar(&archive, &layout);
    let manifest = layout_manifest(&layout);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        let path = blob(&layout, layer["digest"].as_str().unwrap());
        tool("gzip", &["-t", path.to_str().unwrap()]);
    }
    // The RUN layer spans several independently compressed gzip pieces and still lists.
    let run_layer = blob(&layout, manifest["layers"][1]["digest"].as_str().unwrap());
    let listing = tool("tar", &["-tzf", run_layer.to_str().unwrap()]);
    assert!(stdout(&listing).lines().any(|n| n == "nums"));
    let zstd_docker = store.build(
        ctx.path(),
        &[
            "-o",
            "type=oci,dest=x.tar,compression=zstd,oci-mediatypes=false",
        ],
    );
    assert!(!zstd_docker.status.success());
    assert!(
        stderr(&zstd_docker).contains("--output") && stderr(&zstd_docker).contains("OCI"),
        "{}",
        stderr(&zstd_docker)
    );
}

#[test]
fn uncompressed_oci_layout_directory_unpacks_with_umoci() {
    let store = Store::with_busybox();
    let ctx = app_context();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let build = store.build(
        ctx.path(),
        &[
            "-t",
            "app:1",
            "-o",
            &format!(
                "type=oci,dest={},tar=false,compression=uncompressed",
                layout.display()
            ),
        ],
    );
    ok(&build, "build");
    let manifest = layout_manifest(&layout);
    assert!(layer_media_types(&manifest)
        .iter()
        .skip(1)
        .all(|m| m == "application/vnd.oci.image.layer.v1.tar"));
    let bundle = out.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:1", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/hi")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/a.txt")).unwrap(),
        "alpha\n"
    );
    // -t alone still tagged the image in the local store.
    assert!(stdout(&store.run(&["images"])).contains("app:1"));
}

#[test]
fn docker_archive_has_the_docker_load_layout() {
    let store = Store::with_busybox();
    let ctx = app_context();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("docker.tar");
    let build = store.build(
        ctx.path(),
        &[
            "-t",
            "app:2",
            "-o",
            &format!("type=docker,dest={}", archive.display()),
            "-o",
            &format!(
                "type=docker,dest={},name=other:9",
                out.path().join("named.tar").display()
            ),
        ],
    );
    ok(&build, "build");
    let named = out.path().join("named");
    untar(&out.path().join("named.tar"), &named);
    assert_eq!(
        read_json(&named.join("manifest.json"))[0]["RepoTags"],
        serde_json::json!(["other:9"])
    );
    let unpacked = out.path().join("unpacked");
    untar(&archive, &unpacked);
    let manifest = read_json(&unpacked.join("manifest.json"));
    let entry = &manifest[0];
    assert_eq!(entry["RepoTags"], serde_json::json!(["app:2"]));
    let config = read_json(&unpacked.join(entry["Config"].as_str().unwrap()));
    let layers = entry["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let run_layer = unpacked.join(layers[1].as_str().unwrap());
    let listing = tool("tar", &["-tf", run_layer.to_str().unwrap()]);
    assert!(stdout(&listing).lines().any(|n| n == "hi"));
    let copy = out.path().join("copied");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}", archive.display()),
            &format!("oci:{}:t", copy.display()),
        ],
    );
}

#[test]
fn filesystem_outputs_local_dir_tar_file_and_stdout() {
    let store = Store::with_busybox();
    let ctx = app_context();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("dir");
    let tar_file = out.path().join("rootfs.tar");
    let build = store.build(
        ctx.path(),
        &[
            "-o",
            &format!("type=local,dest={}", dir.display()),
            "-o",
            &format!("type=tar,dest={}", tar_file.display()),
        ],
    );
    ok(&build, "build");
    assert_eq!(std::fs::read_to_string(dir.join("hi")).unwrap(), "hi\n");
    assert!(dir.join("bin/busybox").exists());
    let listing = stdout(&tool("tar", &["-tvf", tar_file.to_str().unwrap()]));
    assert!(listing.lines().any(|l| l.ends_with(" a.txt")), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('l') && l.contains("bin/sh ->")),
        "symlinks stay symlinks: {listing}"
    );

    // `-o -` streams the filesystem as a tar on stdout; the progress goes to stderr.
    let mut build = store
        .cmd()
        .args(["build", "--progress=plain", "-o", "-"])
        .arg(ctx.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let listing = Command::new("tar")
        .arg("-t")
        .stdin(build.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(build.wait().unwrap().success());
    ok(&listing, "tar -t from stdin");
    let names = stdout(&listing);
    assert!(names.lines().any(|n| n == "hi"), "{names}");
    assert!(names.lines().any(|n| n == "nums"), "{names}");
}

#[test]
fn bad_output_flags_are_refused_before_building() {
    let store = Store::with_busybox();
    let ctx = app_context();
    for (spec, needle) in [
        ("type=zip,dest=x", "unknown type \"zip\""),
        ("type=oci,dest=x,level=3", "unknown key \"level\""),
        ("type=oci,dest=x,compression=brotli", "unknown compression"),
        ("type=oci", "dest= is required"),
        ("type=image,rewrite-timestamp=true", "SOURCE_DATE_EPOCH"),
    ] {
        let build = store.build(ctx.path(), &["-o", spec]);
        assert!(!build.status.success(), "{spec} was accepted");
        let err = stderr(&build);
        assert!(
            err.contains("--output") && err.contains(needle),
            "{spec}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn registry_output_pushes_and_pull_fetches_it_back() {
    let registry = Registry::start();
    let store = Store::with_busybox();
    let ctx = app_context();
    let name = format!("{}/app:zstd", registry.addr);
    let build = store.build(
        ctx.path(),
        &[
            // The pushed manifest itself, not an index with a provenance attestation.
            "--provenance=false",
            "-o",
            &format!("type=registry,name={name},compression=zstd,force-compression=true"),
        ],
    );
    ok(&build, "build");
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{name}"),
        ],
    );
    let manifest: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert!(layer_media_types(&manifest)
        .iter()
        .all(|m| m == "application/vnd.oci.image.layer.v1.tar+zstd"));

    let fresh = Store::new();
    ok(&fresh.run(&["pull", &name]), "pull");
    let run = fresh.run(&["run", "--rm", &name]);
    ok(&run, "run");
    assert_eq!(stdout(&run), "hi\n");
}

#[test]
fn save_and_load_round_trip_several_images_in_both_formats() {
    let store = Store::with_busybox();
    let ctx = app_context();
    ok(&store.build(ctx.path(), &["-t", "app:1"]), "build");
    let out = tempfile::tempdir().unwrap();
    for format in ["docker", "oci"] {
        let archive = out.path().join(format!("{format}.tar"));
        ok(
            &store.run(&[
                "save",
                "app:1",
                "busybox",
                "-o",
                archive.to_str().unwrap(),
                "--format",
                format,
            ]),
            "save",
        );
        let fresh = Store::new();
        let load = fresh.run(&["load", "-i", archive.to_str().unwrap()]);
        ok(&load, "load");
        assert!(
            stdout(&load).contains("Loaded image: app:1"),
            "{}",
            stdout(&load)
        );
        assert!(stdout(&load).contains("Loaded image: busybox:latest"));
        let run = fresh.run(&["run", "--rm", "app:1"]);
        ok(&run, "run of a loaded image");
        assert_eq!(stdout(&run), "hi\n");
        let listing = stdout(&tool("tar", &["-tf", archive.to_str().unwrap()]));
        let expected = if format == "docker" {
            "manifest.json"
        } else {
            "index.json"
        };
        assert!(listing.lines().any(|n| n == expected), "{listing}");
    }
    let bad = store.run(&["load", "-i", "/nonexistent.tar"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("/nonexistent.tar"),
        "{}",
        stderr(&bad)
    );
    let not_an_image = out.path().join("plain.tar");
    tool(
        "tar",
        &[
            "-cf",
            not_an_image.to_str().unwrap(),
            "-C",
            ctx.path().to_str().unwrap(),
            "a.txt",
        ],
    );
    let refused = store.run(&["load", "-i", not_an_image.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("neither manifest.json nor index.json"),
        "{}",
        stderr(&refused)
    );
    let missing = store.run(&["save", "nope:1", "-o", "x.tar"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no such image: nope:1"));
}

#[test]
fn inspect_and_history_describe_the_image() {
    let store = Store::with_busybox();
    let ctx = app_context();
    ok(&store.build(ctx.path(), &["-t", "app:1"]), "build");
    let inspect = store.run(&["inspect", "app:1"]);
    ok(&inspect, "inspect");
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        info["Config"]["config"]["Cmd"],
        serde_json::json!(["cat", "/hi"])
    );
    assert_eq!(info["Manifest"]["layers"].as_array().unwrap().len(), 3);
    let history = stdout(&store.run(&["history", "app:1"]));
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines[0].starts_with("LAYER"), "{history}");
    assert!(lines[1].contains("CMD"), "newest first: {history}");
    assert!(history.contains("seq 1 400000"), "{history}");
    assert!(
        lines.last().unwrap().contains("builder import"),
        "{history}"
    );
    let missing = store.run(&["inspect", "nope:1"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no such image: nope:1"));
}

/// Imports busybox and builds the app in a fresh store with SOURCE_DATE_EPOCH; returns the
/// image digest and the OCI archive's manifest digest (zstd).
fn reproducible_build(rayon_threads: Option<&str>) -> (String, String) {
    let store = Store::new();
    let mut import = store.cmd();
    import
        .args([
            "import",
            crate::common::busybox_tar().to_str().unwrap(),
            "busybox:latest",
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    ok(&import.output().unwrap(), "import");
    let ctx = app_context();
    let out = tempfile::tempdir().unwrap();
    let iid = out.path().join("iid");
    let oci = out.path().join("oci.tar");
    let mut build = store.cmd();
    build
        .args(["build", "--progress=quiet", "--iidfile"])
        .arg(&iid)
        .args(["--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-o"])
        .arg("type=image,name=app:1,rewrite-timestamp=true")
        .arg("-o")
        .arg(format!(
            "type=oci,dest={},compression=zstd,rewrite-timestamp=true",
            oci.display()
        ))
        .arg(ctx.path());
    match rayon_threads {
        Some(n) => build.env("RAYON_NUM_THREADS", n),
        None => build.env_remove("RAYON_NUM_THREADS"),
    };
    ok(&build.output().unwrap(), "build");
    let inspect = store.run(&["inspect", "app:1"]);
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Config"]["created"], "2023-11-14T22:13:20Z");
    let layout = out.path().join("layout");
    untar(&oci, &layout);
    let index = read_json(&layout.join("index.json"));
    (
        std::fs::read_to_string(iid).unwrap(),
        index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

#[test]
fn same_input_gives_the_same_digest_across_fresh_stores_and_core_counts() {
    let one_core = reproducible_build(Some("1"));
    let all_cores = reproducible_build(None);
    assert_eq!(one_core, all_cores);
}
