//! A copy stacked on a base and never run on (the usual last `COPY` of an image) is made
//! straight into a layer blob; its files reach the disk only when a later build reads them.

use crate::common::{context, events, stderr, Store};
use std::path::Path;

fn ok(output: &std::process::Output, what: &str) {
    assert!(output.status.success(), "{what} failed: {}", stderr(output));
}

/// How many snapshots of the store are still waiting to be unpacked.
fn pending_snapshots(store: &Store) -> usize {
    let text = std::fs::read_to_string(store.root().join("snapshots/metadata.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    meta["snapshots"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["pending"] == true)
        .count()
}

fn app_context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = context(&[
        ("Dockerfile", dockerfile),
        ("app/a.txt", "alpha\n"),
        ("app/sub/b.txt", "beta\n"),
    ]);
    std::os::unix::fs::symlink("a.txt", ctx.path().join("app/link")).unwrap();
    ctx
}

fn assert_copy_was_cached(output: &std::process::Output) {
    let cached: Vec<String> = events(output)
        .iter()
        .filter(|e| e["event"] == "cached")
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        cached.iter().any(|n| n.contains("COPY app /app")),
        "{cached:?}"
    );
}

#[test]
fn a_last_copy_is_kept_as_a_blob_and_unpacked_when_a_later_build_runs_on_it() {
    let store = Store::with_busybox();
    let ctx = app_context("FROM busybox\nCOPY app /app\n");
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("image.tar");
    let first = store.build(
        ctx.path(),
        &["-o", &format!("type=docker,dest={}", archive.display())],
    );
    ok(&first, "first build");
    assert!(
        pending_snapshots(&store) > 0,
        "the copy was unpacked on disk"
    );

    // The layer holds exactly the copied tree.
    let manifest_dir = out.path().join("image");
    std::fs::create_dir_all(&manifest_dir).unwrap();
    let untar = std::process::Command::new("tar")
        .args(["-xf", archive.to_str().unwrap(), "-C"])
        .arg(&manifest_dir)
        .output()
        .unwrap();
    ok(&untar, "tar");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest_dir.join("manifest.json")).unwrap())
            .unwrap();
    let last = manifest[0]["Layers"].as_array().unwrap().last().unwrap();
    let listing = std::process::Command::new("tar")
        .args(["-tvf"])
        .arg(manifest_dir.join(last.as_str().unwrap()))
        .output()
        .unwrap();
    ok(&listing, "tar -t");
    let names: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["app/", "app/a.txt", "app/link", "app/sub/", "app/sub/b.txt"]
    );

    // A later Dockerfile runs a step on that copy: the cached blob is unpacked for it.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY app /app\nRUN cat /app/link /app/sub/b.txt > /out && readlink /app/link >> /out\n",
    )
    .unwrap();
    let dest = out.path().join("tree");
    let second = store.build(
        ctx.path(),
        &["-o", &format!("type=local,dest={}", dest.display())],
    );
    ok(&second, "second build");
    assert_copy_was_cached(&second);
    assert_eq!(
        std::fs::read_to_string(dest.join("out")).unwrap(),
        "alpha\nbeta\na.txt\n"
    );
}

#[test]
fn a_blob_copy_onto_a_symlinked_destination_is_copied_for_real() {
    let store = Store::with_busybox();
    let ctx = app_context("FROM busybox\nRUN mkdir /real && ln -s /real /app\nCOPY app /app\n");
    let dest = tempfile::tempdir().unwrap();
    let build = store.build(
        ctx.path(),
        &["-o", &format!("type=local,dest={}", dest.path().display())],
    );
    ok(&build, "build");
    // The copy follows the base's link, as it would without stacking.
    let app = dest.path().join("app");
    assert_eq!(std::fs::read_link(&app).unwrap(), Path::new("/real"));
    assert_eq!(
        std::fs::read_to_string(dest.path().join("real/sub/b.txt")).unwrap(),
        "beta\n"
    );
}

#[test]
fn a_blob_layer_is_made_in_the_outputs_compression() {
    let store = Store::with_busybox();
    let ctx = app_context("FROM busybox\nCOPY app /app\n");
    let layout = tempfile::tempdir().unwrap();
    let dest = layout.path().join("oci");
    let build = store.build(
        ctx.path(),
        &[
            "-o",
            &format!(
                "type=oci,dest={},tar=false,compression=zstd",
                dest.display()
            ),
        ],
    );
    ok(&build, "build");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        dest.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(digest)).unwrap()).unwrap();
    let last = manifest["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let check = std::process::Command::new("zstd")
        .arg("-t")
        .arg(blob(last["digest"].as_str().unwrap()))
        .output()
        .unwrap();
    ok(&check, "zstd -t");
    // Made once, in zstd: the store holds no gzip twin of it.
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(config_digest)).unwrap()).unwrap();
    let diff_id = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    for entry in std::fs::read_dir(store.root().join("content/blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let head = std::fs::read(&path).unwrap();
        if !head.starts_with(&[0x1f, 0x8b]) {
            continue;
        }
        let sum = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc '{}' | sha256sum", path.display()))
            .output()
            .unwrap();
        let sum = String::from_utf8_lossy(&sum.stdout);
        assert_ne!(
            format!("sha256:{}", sum.split_whitespace().next().unwrap_or("")),
            diff_id.as_str().unwrap(),
            "a gzip copy of the zstd layer was made too"
        );
    }
}

#[test]
fn a_cached_blob_copy_is_checked_against_a_changed_base_from_its_blob() {
    let store = Store::with_busybox();
    let ctx = app_context("FROM busybox\nRUN mkdir /real\nCOPY app /app\n");
    let first = store.build(ctx.path(), &[]);
    ok(&first, "first build");
    // The base changes under the cached copy: now /app is a link the copy must follow.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN mkdir /real && ln -s /real /app\nCOPY app /app\n",
    )
    .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let second = store.build(
        ctx.path(),
        &["-o", &format!("type=local,dest={}", dest.path().display())],
    );
    ok(&second, "second build");
    assert_copy_was_cached(&second);
    assert_eq!(
        std::fs::read_link(dest.path().join("app")).unwrap(),
        Path::new("/real")
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("real/a.txt")).unwrap(),
        "alpha\n"
    );
}

/// Mount points under the store root whose name says they stage a blob layer.
fn staging_mounts(store: &Store) -> Vec<String> {
    let root = store.root().to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| mp.starts_with(&root) && mp.contains("/tmp/staging-"))
        .collect()
}

#[test]
fn a_build_killed_while_staging_a_blob_leaves_no_tmpfs_behind() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN sleep 30\nCOPY big /big\n")]);
    std::fs::create_dir(ctx.path().join("big")).unwrap();
    for n in 0..64 {
        let f = std::fs::File::create(ctx.path().join(format!("big/{n}"))).unwrap();
        f.set_len(8 << 20).unwrap();
    }
    let mut child = store
        .cmd()
        .args(["build", "--progress=quiet"])
        .arg(ctx.path())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while staging_mounts(&store).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(
        !staging_mounts(&store).is_empty(),
        "the copy was never staged"
    );
    child.kill().unwrap();
    let _ = child.wait();
    assert!(!staging_mounts(&store).is_empty());

    let good = context(&[("Dockerfile", "FROM busybox\nRUN echo ok > /ok\n")]);
    let out = store.build(good.path(), &[]);
    ok(&out, "build after kill");
    assert!(
        staging_mounts(&store).is_empty(),
        "{:?}",
        staging_mounts(&store)
    );
}

fn snapshot_names(store: &Store) -> Vec<String> {
    let text = std::fs::read_to_string(store.root().join("snapshots/metadata.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut names: Vec<String> = meta["snapshots"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

#[test]
fn running_or_building_on_a_just_built_image_unpacks_none_of_its_layers_again() {
    let store = Store::with_busybox();
    let ctx = app_context("FROM busybox\nRUN echo built > /built\nCOPY app /app\n");
    ok(&store.build(ctx.path(), &["-t", "app"]), "build");
    let before = snapshot_names(&store);
    let run = store.run(&["run", "--rm", "app", "cat", "/built", "/app/a.txt"]);
    ok(&run, "run");
    assert_eq!(crate::common::stdout(&run), "built\nalpha\n");
    // The built snapshots served as the rootfs: no unpacked twin of any layer was made.
    assert_eq!(snapshot_names(&store), before);

    let child = context(&[("Dockerfile", "FROM app\nRUN cat /app/sub/b.txt > /copied\n")]);
    let dest = tempfile::tempdir().unwrap();
    ok(
        &store.build(
            child.path(),
            &["-o", &format!("type=local,dest={}", dest.path().display())],
        ),
        "build on app",
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("copied")).unwrap(),
        "beta\n"
    );
    let after: Vec<String> = snapshot_names(&store)
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert!(
        after.iter().all(|n| !n.starts_with("sha256:")),
        "layers were unpacked again: {after:?}"
    );
}

/// The digest of layer `n` of `dockerfile`'s image, built on `ctx` in a fresh store; and
/// whether the build left a pending (blob-only) snapshot.
fn layer_digest_in_fresh_store(ctx: &Path, dockerfile: &str, n: usize) -> (String, bool) {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let store = Store::with_busybox();
    let image = crate::common::build_oci_image(&store, ctx, &[]);
    let name = image.layers[n].file_name().unwrap().to_string_lossy();
    (name.into_owned(), pending_snapshots(&store) > 0)
}

#[test]
fn a_blob_copy_staged_sparse_gives_the_layer_a_copy_on_disk_gives() {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let ctx = crate::common::fixture(&[
        ("app/run.sh", &b"#!/bin/sh\n"[..], 0o755),
        ("app/big.bin", &big[..], 0o644),
        ("app/empty", &b""[..], 0o600),
        ("app/sub/b.txt", &b"beta\n"[..], 0o640),
    ]);
    let app = ctx.path().join("app");
    std::fs::hard_link(app.join("sub/b.txt"), app.join("hard")).unwrap();
    std::os::unix::fs::symlink("run.sh", app.join("link")).unwrap();
    // Into `/`: a directory the copy creates would carry the time of the build.
    // The last copy is made as a blob (its files staged sparse, data read from the context)...
    let (blob, pending) = layer_digest_in_fresh_store(ctx.path(), "FROM busybox\nCOPY app/ /\n", 1);
    assert!(pending, "the copy was not made as a blob");
    // ...a copy a RUN reads is made on disk; the layer is byte for byte the same.
    let (on_disk, _) = layer_digest_in_fresh_store(
        ctx.path(),
        "FROM busybox\nCOPY app/ /\nRUN test -x /link\n",
        1,
    );
    assert_eq!(blob, on_disk);
}
