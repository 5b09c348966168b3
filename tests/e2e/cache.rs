//! Build-cache export and import end to end: OCI layout directories, a real registry, inline
//! cache in a pushed image, mode=min vs max, cache mounts, and --metadata-file.

use crate::common::*;
use std::path::Path;
use std::process::{Command, Output};

/// Two stages: an intermediate `build` stage whose artifact the final stage copies.
const DOCKERFILE: &str = "\
FROM busybox AS build
RUN echo built > /artifact
FROM busybox
COPY a.txt /a.txt
RUN cat /a.txt > /copy.txt
COPY --from=build /artifact /artifact
RUN echo done > /done
";

fn project() -> tempfile::TempDir {
    context(&[("Dockerfile", DOCKERFILE), ("a.txt", "hello\n")])
}

/// A store with busybox imported at a fixed time, so stores made at different moments hold
/// the same base image (as two machines pulling one image would).
fn store_with_busybox() -> Store {
    let s = Store::new();
    let out = s
        .cmd()
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["import", busybox_tar().to_str().unwrap(), "busybox:latest"])
        .output()
        .unwrap();
    assert!(out.status.success(), "import: {}", stderr(&out));
    s
}

/// `builder build` with reproducible timestamps; returns the output and the image digest.
fn build(store: &Store, ctx: &Path, extra: &[&str]) -> (Output, String) {
    let iid = tempfile::NamedTempFile::new().unwrap();
    let out = store
        .cmd()
        .env("SOURCE_DATE_EPOCH", "0")
        .arg("build")
        .arg("--progress=rawjson")
        .arg("--iidfile")
        .arg(iid.path())
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    let digest = std::fs::read_to_string(iid.path()).unwrap();
    (out, digest)
}

fn assert_all_cached(out: &Output) {
    assert_eq!(
        step_names(out, "started"),
        Vec::<String>::new(),
        "steps ran: {}",
        stderr(out)
    );
    assert_eq!(step_names(out, "cached").len(), 5, "{}", stderr(out));
}

/// Snapshots in a store (the snapshotter writes its metadata file on the first one).
fn snapshot_count(store: &Store) -> usize {
    let path = store.root().join("snapshots/metadata.json");
    if !path.exists() {
        assert!(store.root().join("snapshots").is_dir());
        return 0;
    }
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    meta["snapshots"].as_object().unwrap().len()
}

fn run_in(store: &Store, image: &str, cmd: &[&str]) -> String {
    let out = store
        .cmd()
        .args(["run", "--rm", image])
        .args(cmd)
        .output()
        .unwrap();
    assert!(out.status.success(), "run: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn local_cache_round_trip_caches_every_step_and_reproduces_the_image() {
    let ctx = project();
    let cache = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={},mode=max", cache.path().display());
    let first = store_with_busybox();
    let (out, original) = build(&first, ctx.path(), &["--cache-to", &dest]);
    assert_eq!(step_names(&out, "started").len(), 5, "{}", stderr(&out));
    assert!(cache.path().join("index.json").is_file());
    assert!(cache.path().join("oci-layout").is_file());

    // Another "machine": a fresh store, and the same files checked out elsewhere, later, by
    // another user. Cache keys depend on content and mode only.
    let fresh = store_with_busybox();
    let ctx = project();
    let touch = Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(ctx.path().join("a.txt"))
        .status()
        .unwrap();
    assert!(touch.success());
    std::os::unix::fs::chown(ctx.path().join("a.txt"), Some(1234), Some(1234)).unwrap();
    let src = format!("type=local,src={}", cache.path().display());
    let (out, rebuilt) = build(&fresh, ctx.path(), &["--cache-from", &src, "-t", "app"]);
    assert_all_cached(&out);
    assert_eq!(rebuilt, original);
    // Nothing ran, so nothing was unpacked: not the cache hits, not even the base image.
    assert_eq!(snapshot_count(&fresh), 0);
    // The image is whole: its layers were fetched from the cache.
    assert_eq!(
        run_in(&fresh, "app", &["cat", "/copy.txt", "/artifact", "/done"]),
        "hello\nbuilt\ndone\n"
    );

    // The hits were recorded locally: without --cache-from the next build is cached too.
    let (out, again) = build(&fresh, ctx.path(), &[]);
    assert_all_cached(&out);
    assert_eq!(again, original);

    // A changed source file misses from that step on; the other stage stays cached, and its
    // result is unpacked from the cache's blobs for the COPY --from that needs it.
    std::fs::write(ctx.path().join("a.txt"), "changed\n").unwrap();
    let other = store_with_busybox();
    let (out, _) = build(&other, ctx.path(), &["--cache-from", &src, "-t", "app"]);
    let ran = step_names(&out, "started");
    assert!(ran.iter().any(|s| s.contains("COPY a.txt")), "{ran:?}");
    assert!(!ran.iter().any(|s| s.contains("echo built")), "{ran:?}");
    // COPY --from=build does not depend on the changed layers below it (it is rebased),
    // so it stays cached: COPY a.txt and the two RUNs after it run.
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert_eq!(
        run_in(&other, "app", &["cat", "/copy.txt", "/artifact"]),
        "changed\nbuilt\n"
    );
}

#[test]
fn min_mode_leaves_the_intermediate_stage_out_and_max_keeps_it() {
    let ctx = project();
    let min_dir = tempfile::tempdir().unwrap();
    let max_dir = tempfile::tempdir().unwrap();
    let first = store_with_busybox();
    let min_to = format!("type=local,dest={}", min_dir.path().display());
    let max_to = format!("type=local,dest={},mode=max", max_dir.path().display());
    build(
        &first,
        ctx.path(),
        &["--cache-to", &min_to, "--cache-to", &max_to],
    );

    let with_min = store_with_busybox();
    let from = format!("type=local,src={}", min_dir.path().display());
    let (out, _) = build(&with_min, ctx.path(), &["--cache-from", &from]);
    let ran = step_names(&out, "started");
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].contains("echo built"), "{ran:?}");
    assert_eq!(step_names(&out, "cached").len(), 4);

    let with_max = store_with_busybox();
    let from = format!("type=local,src={}", max_dir.path().display());
    let (out, _) = build(&with_max, ctx.path(), &["--cache-from", &from]);
    assert_all_cached(&out);
}

#[test]
fn registry_cache_round_trip() {
    let reg = Registry::start();
    let ctx = project();
    let cache_ref = format!("{}/app-cache:latest", reg.addr);
    let first = store_with_busybox();
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let (_, original) = build(&first, ctx.path(), &["--cache-to", &to]);

    let inspect = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{cache_ref}"))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "skopeo: {}", stderr(&inspect));
    let manifest: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.builder.cache.config.v1+json"
    );

    let fresh = store_with_busybox();
    let (out, rebuilt) = build(
        &fresh,
        ctx.path(),
        &[
            "--cache-from",
            &format!("type=registry,ref={cache_ref}"),
            "-t",
            "app",
        ],
    );
    assert_all_cached(&out);
    assert_eq!(rebuilt, original);
    assert_eq!(run_in(&fresh, "app", &["cat", "/done"]), "done\n");
}

#[test]
fn inline_cache_in_a_pushed_image_is_used_by_a_fresh_store() {
    let reg = Registry::start();
    let ctx = project();
    let image = format!("{}/app:inline", reg.addr);
    let first = store_with_busybox();
    let (_, original) = build(
        &first,
        ctx.path(),
        &["-t", &image, "--cache-to", "type=inline"],
    );
    let pushed = first.run(&["push", &image]);
    assert!(pushed.status.success(), "push: {}", stderr(&pushed));

    let fresh = store_with_busybox();
    let (out, rebuilt) = build(
        &fresh,
        ctx.path(),
        &["--cache-from", &image, "--cache-to", "type=inline"],
    );
    // Inline cache is min mode: the intermediate stage runs again, the rest is cached.
    let ran = step_names(&out, "started");
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].contains("echo built"), "{ran:?}");
    assert_eq!(step_names(&out, "cached").len(), 4);
    assert_eq!(rebuilt, original);
}

#[test]
fn cache_mounts_travel_with_mounts_true() {
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")]);
    let first = store_with_busybox();
    // sha256("go-build"), as the mounts code names the directory of `id=go-build`.
    let dir_name = "1f589d4f9dc079a4f215670e941f2757cd8a864c00932ac65808653664c598eb";
    let mount = first.root().join("cache/mounts").join(dir_name);
    std::fs::create_dir_all(mount.join("sub")).unwrap();
    std::fs::write(mount.join("sub/object.o"), "compiled\n").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let to = format!("type=local,dest={},mounts=true", cache.path().display());
    build(&first, ctx.path(), &["--cache-to", &to]);

    let fresh = store_with_busybox();
    let from = format!("type=local,src={}", cache.path().display());
    build(&fresh, ctx.path(), &["--cache-from", &from]);
    let restored = fresh.root().join("cache/mounts").join(dir_name);
    assert_eq!(
        std::fs::read_to_string(restored.join("sub/object.o")).unwrap(),
        "compiled\n"
    );

    // Without mounts=true nothing of the mounts is exported.
    let plain = tempfile::tempdir().unwrap();
    let to = format!("type=local,dest={}", plain.path().display());
    build(&first, ctx.path(), &["--cache-to", &to]);
    let other = store_with_busybox();
    let from = format!("type=local,src={}", plain.path().display());
    build(&other, ctx.path(), &["--cache-from", &from]);
    assert!(!other.root().join("cache/mounts").join(dir_name).exists());
}

#[test]
fn metadata_file_matches_the_image() {
    let ctx = project();
    let store = store_with_busybox();
    let dir = tempfile::tempdir().unwrap();
    let meta_path = dir.path().join("meta.json");
    let oci = dir.path().join("image.tar");
    let cache_dir = dir.path().join("cache");
    let (_, iid) = build(
        &store,
        ctx.path(),
        &[
            "-t",
            "app:1",
            "-t",
            "app:2",
            "--metadata-file",
            meta_path.to_str().unwrap(),
            "-o",
            &format!("type=oci,dest={}", oci.display()),
            "--cache-to",
            &format!("type=local,dest={}", cache_dir.display()),
        ],
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    // --iidfile holds the image id, the config digest (as buildx).
    assert_eq!(meta["containerimage.config.digest"], iid.as_str());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&meta_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(
        meta["containerimage.descriptor"]["digest"],
        meta["containerimage.digest"]
    );
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(meta["image.name"], "app:1,app:2");
    assert!(meta["buildx.build.ref"]
        .as_str()
        .unwrap()
        .starts_with("builder/"));
    // The final stage's steps plus the own layers of its two rebased COPY steps.
    assert_eq!(meta["builder.cache.exported"][0]["records"], 6);

    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", oci.display()))
        .output()
        .unwrap();
    assert!(raw.status.success(), "skopeo: {}", stderr(&raw));
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        meta["containerimage.config.digest"],
        manifest["config"]["digest"]
    );
    assert_eq!(
        meta["containerimage.descriptor"]["size"],
        raw.stdout.len() as u64
    );
    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", oci.display()))
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(meta["containerimage.digest"], info["Digest"]);

    // A second build reports which cache it used.
    let fresh = store_with_busybox();
    let from = format!("type=local,src={}", cache_dir.display());
    build(
        &fresh,
        ctx.path(),
        &[
            "--cache-from",
            &from,
            "--metadata-file",
            meta_path.to_str().unwrap(),
        ],
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert_eq!(meta["builder.cache.imported"][0]["source"], from.as_str());
    assert_eq!(meta["builder.cache.imported"][0]["hits"], 6);
}

#[test]
fn no_cache_filter_reruns_only_the_named_stage() {
    let ctx = project();
    let store = store_with_busybox();
    build(&store, ctx.path(), &[]);
    let (out, _) = build(&store, ctx.path(), &["--no-cache-filter", "build"]);
    let ran = step_names(&out, "started");
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].contains("echo built"), "{ran:?}");
}

#[test]
fn bad_cache_flags_are_clear_errors() {
    let ctx = project();
    let store = Store::new();
    for (flag, value, needle) in [
        ("--cache-to", "type=local", "dest= is required"),
        ("--cache-to", "type=local,dest=x,mode=all", "mode=\"all\""),
        ("--cache-from", "type=s3", "unknown type"),
        // Outside a JavaScript action the runner's variables are not there.
        ("--cache-from", "type=gha", "ACTIONS_RESULTS_URL is not set"),
        ("--no-cache-filter", "a,,b", "empty stage name"),
    ] {
        let out = store.build(ctx.path(), &[flag, value]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(flag) && err.contains(needle), "{err}");
    }
    // An unreadable cache is a warning; the build still runs.
    let store = store_with_busybox();
    let out = store.build(ctx.path(), &["--cache-from", "type=local,src=/nonexistent"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: importing cache"));
}

/// The JSON of a blob in an OCI layout directory.
fn layout_json(dir: &Path, digest: &str) -> serde_json::Value {
    let path = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_cache_directory_missing_a_blob_misses_instead_of_failing() {
    let ctx = project();
    let cache = tempfile::tempdir().unwrap();
    let first = store_with_busybox();
    let to = format!("type=local,dest={}", cache.path().display());
    build(&first, ctx.path(), &["--cache-to", &to]);

    // Delete the blob only the last step's record has: its own layer.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.path().join("index.json")).unwrap()).unwrap();
    let manifest = layout_json(
        cache.path(),
        index["manifests"][0]["digest"].as_str().unwrap(),
    );
    let config = layout_json(cache.path(), manifest["config"]["digest"].as_str().unwrap());
    let records = config["records"].as_array().unwrap();
    let last_layer = records.last().unwrap()["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_u64()
        .unwrap() as usize;
    let digest = config["layers"][last_layer]["descriptor"]["digest"]
        .as_str()
        .unwrap();
    std::fs::remove_file(
        cache
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();

    let fresh = store_with_busybox();
    let from = format!("type=local,src={}", cache.path().display());
    let (out, _) = build(&fresh, ctx.path(), &["--cache-from", &from, "-t", "app"]);
    let ran = step_names(&out, "started");
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(ran.iter().any(|s| s.contains("echo done")), "{ran:?}");
    assert!(ran.iter().any(|s| s.contains("echo built")), "{ran:?}");
    assert_eq!(
        run_in(&fresh, "app", &["cat", "/copy.txt", "/done"]),
        "hello\ndone\n"
    );
}
