//! `builder prune` and `builder du` end to end: real builds, then prune, then what is gone,
//! what stays, and what a rebuild hits or misses; plus prune racing a build and a prune
//! killed midway.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A build stage whose 2 MB result only the cache keeps, and a final stage copying from it.
const MULTI_STAGE: &str = "\
FROM busybox AS build
RUN echo built > /artifact && dd if=/dev/zero of=/big bs=1k count=2048 2>/dev/null
FROM busybox
RUN echo final > /final
COPY --from=build /artifact /artifact
";

fn build(store: &Store, ctx: &Path, extra: &[&str]) -> Output {
    let out = store.build(ctx, extra);
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    out
}

fn prune(store: &Store, args: &[&str]) -> Output {
    let out = store.cmd().arg("prune").args(args).output().unwrap();
    assert!(out.status.success(), "prune failed: {}", stderr(&out));
    out
}

fn du(store: &Store) -> Vec<Value> {
    let out = store.run(&["du", "--format", "json"]);
    assert!(out.status.success(), "du failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids_of(entries: &[Value], kind: &str) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Snapshot keys as the snapshotter's own metadata file lists them.
fn snapshot_keys(store: &Store) -> BTreeSet<String> {
    let path = store.root().join("snapshots/metadata.json");
    let Ok(bytes) = std::fs::read(path) else {
        return BTreeSet::new();
    };
    let meta: Value = serde_json::from_slice(&bytes).unwrap();
    meta["snapshots"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// Blob digests present on disk.
fn blob_files(store: &Store) -> BTreeSet<String> {
    std::fs::read_dir(store.root().join("content/blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_str().unwrap()))
        .collect()
}

/// Every blob an image needs (manifest, config, layers), read from the store's files.
fn image_blobs(store: &Store, name: &str) -> BTreeSet<String> {
    let images: Value =
        serde_json::from_slice(&std::fs::read(store.root().join("images.json")).unwrap()).unwrap();
    let (_, desc) = images["images"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.contains(name))
        .unwrap_or_else(|| panic!("no image {name} in {images}"));
    let manifest_digest = desc["digest"].as_str().unwrap().to_string();
    let blob = |d: &str| -> Value {
        let path = store
            .root()
            .join("content/blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let manifest = blob(&manifest_digest);
    let mut all = BTreeSet::from([
        manifest_digest,
        manifest["config"]["digest"].as_str().unwrap().to_string(),
    ]);
    for l in manifest["layers"].as_array().unwrap() {
        all.insert(l["digest"].as_str().unwrap().to_string());
    }
    all
}

/// Makes everything now in the store look `age` old: snapshot creation times, cache key,
/// record, mount and blob mtimes (as if the store had sat unused that long).
fn age_store(store: &Store, age: Duration) {
    let then = SystemTime::now() - age;
    let meta_path = store.root().join("snapshots/metadata.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    for record in meta["snapshots"].as_object_mut().unwrap().values_mut() {
        let created = record["created"].as_u64().unwrap();
        record["created"] = (created - age.as_secs()).into();
    }
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    for dir in [
        "cache/keys",
        "cache/records",
        "cache/mounts",
        "cache/mount-locks",
        "content/blobs/sha256",
    ] {
        let Ok(entries) = std::fs::read_dir(store.root().join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let f = std::fs::File::open(e.path()).unwrap();
            f.set_modified(then).unwrap();
        }
    }
}

#[test]
fn prune_removes_cache_no_tagged_image_uses_and_keeps_the_rest() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", MULTI_STAGE)]);
    build(&store, ctx.path(), &["-t", "app"]);
    let before = du(&store);
    let image_layers = ids_of(&before, "image-layer");
    let cache_results = ids_of(&before, "cache-result");
    // busybox, RUN, and the COPY twice: made on an empty tree, and stacked on the RUN.
    assert_eq!(image_layers.len(), 4, "{before:#?}");
    assert!(!cache_results.is_empty(), "the build stage is cache only");
    let reclaimable: u64 = before
        .iter()
        .filter(|e| e["reclaimable"] == true)
        .map(|e| e["size"].as_u64().unwrap())
        .sum();
    assert!(reclaimable >= 2 << 20, "the 2 MB stage is reclaimable");
    let needed: BTreeSet<String> = image_blobs(&store, "app")
        .union(&image_blobs(&store, "busybox"))
        .cloned()
        .collect();

    let out = prune(&store, &["-f"]);
    let text = stdout(&out);
    assert!(
        text.contains("Total reclaimed space:") && text.contains("build cache results"),
        "{text}"
    );

    let keys = snapshot_keys(&store);
    assert_eq!(keys, image_layers, "exactly the image layers remain");
    assert!(keys.is_disjoint(&cache_results));
    let blobs = blob_files(&store);
    assert_eq!(blobs, needed, "exactly the tagged images' blobs remain");
    // No dangling cache key survives its snapshot.
    for e in std::fs::read_dir(store.root().join("cache/keys")).unwrap() {
        let name = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(
            keys.contains(&name),
            "cache key names removed snapshot {name}"
        );
    }
    let after = du(&store);
    assert!(
        after.iter().all(|e| e["reclaimable"] == false),
        "{after:#?}"
    );

    // The image's own steps still hit; the build stage reruns.
    let again = build(&store, ctx.path(), &["-t", "app"]);
    assert_eq!(
        step_names(&again, "started"),
        vec!["[build 2/2] RUN echo built > /artifact && dd if=/dev/zero of=/big bs=1k count=2048 2>/dev/null".to_string()],
        "{}",
        stderr(&again)
    );
    assert_eq!(step_names(&again, "cached").len(), 2, "{}", stderr(&again));
}

#[test]
fn prune_all_keeps_images_that_still_run_and_export() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/c echo x > /c/x && echo hi > /hi\n",
    )]);
    build(&store, ctx.path(), &["-t", "app"]);
    assert!(!snapshot_keys(&store).is_empty());
    let needed: BTreeSet<String> = image_blobs(&store, "app")
        .union(&image_blobs(&store, "busybox"))
        .cloned()
        .collect();

    let out = prune(&store, &["--all", "--force"]);
    assert!(stdout(&out).contains("image layers"), "{}", stdout(&out));
    assert_eq!(snapshot_keys(&store), BTreeSet::new());
    assert_eq!(blob_files(&store), needed);
    let mounts = std::fs::read_dir(store.root().join("cache/mounts")).unwrap();
    assert_eq!(mounts.count(), 0, "--all removes cache mounts");

    let run = store.run(&["run", "--rm", "app", "cat", "/hi"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run), "hi\n");
    let archive = store.root().join("app-oci.tar");
    let save = store.run(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "app",
    ]);
    assert!(save.status.success(), "{}", stderr(&save));
    let config = skopeo_config(&archive);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);

    // Nothing of the build is left to hit.
    let again = build(&store, ctx.path(), &["-t", "app"]);
    assert_eq!(step_names(&again, "cached"), Vec::<String>::new());
    assert_eq!(step_names(&again, "started").len(), 1);
}

#[test]
fn rmi_leaves_blobs_that_prune_then_collects() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo one > /one\n")]);
    build(&store, ctx.path(), &["-t", "app"]);
    let app = image_blobs(&store, "app");
    let busybox = image_blobs(&store, "busybox");
    let rmi = store.run(&["rmi", "app"]);
    assert!(rmi.status.success(), "{}", stderr(&rmi));
    assert!(blob_files(&store).is_superset(&app), "rmi removes no blob");

    prune(&store, &["-f"]);
    let left = blob_files(&store);
    assert_eq!(left, busybox, "only busybox's blobs stay");
    // busybox's unpacked layer is an image layer: kept; the RUN result is gone.
    assert_eq!(snapshot_keys(&store).len(), 1);
    let run = store.run(&["run", "--rm", "busybox", "echo", "ok"]);
    assert_eq!(stdout(&run), "ok\n", "{}", stderr(&run));
}

#[test]
fn cache_mounts_go_only_with_all_or_their_type_filter() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nARG N\nRUN --mount=type=cache,target=/c (test -f /c/seen && echo warm || echo cold) > /state; touch /c/seen\n",
    )]);
    build(&store, ctx.path(), &["-t", "app", "--build-arg", "N=1"]);
    let mounts = || {
        std::fs::read_dir(store.root().join("cache/mounts"))
            .unwrap()
            .count()
    };
    assert_eq!(mounts(), 1);
    let state = |tag: &str| stdout(&store.run(&["run", "--rm", tag, "cat", "/state"]));

    prune(&store, &["-f"]);
    assert_eq!(mounts(), 1, "a plain prune keeps cache mounts");
    build(&store, ctx.path(), &["-t", "two", "--build-arg", "N=2"]);
    assert_eq!(state("two"), "warm\n");

    let snapshots_before = snapshot_keys(&store);
    prune(&store, &["-f", "--filter", "type=exec.cachemount"]);
    assert_eq!(mounts(), 0);
    assert_eq!(
        snapshot_keys(&store),
        snapshots_before,
        "a type=exec.cachemount prune touches nothing else"
    );
    build(&store, ctx.path(), &["-t", "three", "--build-arg", "N=3"]);
    assert_eq!(
        state("three"),
        "cold\n",
        "the cache mount starts empty again"
    );
}

#[test]
fn until_keeps_what_was_used_recently_and_a_cache_hit_counts_as_use() {
    let store = Store::with_busybox();
    let a = context(&[("Dockerfile", "FROM busybox\nRUN echo a > /a\n")]);
    let b = context(&[("Dockerfile", "FROM busybox\nRUN echo b > /b\n")]);
    // Untagged: their results are build cache only.
    build(&store, a.path(), &[]);
    build(&store, b.path(), &[]);
    age_store(&store, Duration::from_secs(2 * 86400));
    let hit = build(&store, a.path(), &[]);
    assert_eq!(step_names(&hit, "cached").len(), 1, "{}", stderr(&hit));

    prune(&store, &["-f", "--filter", "until=24h"]);

    let a_again = build(&store, a.path(), &[]);
    assert_eq!(
        step_names(&a_again, "cached"),
        vec!["[2/2] RUN echo a > /a".to_string()],
        "used an hour ago: kept; {}",
        stderr(&a_again)
    );
    let b_again = build(&store, b.path(), &[]);
    assert_eq!(
        step_names(&b_again, "started"),
        vec!["[2/2] RUN echo b > /b".to_string()],
        "unused for two days: removed; {}",
        stderr(&b_again)
    );
}

#[test]
fn keep_storage_keeps_the_most_recently_used_up_to_the_size() {
    let store = Store::with_busybox();
    let big = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN dd if=/dev/zero of=/big bs=1k count=3072 2>/dev/null\n",
    )]);
    let small = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN dd if=/dev/zero of=/small bs=1k count=1024 2>/dev/null\n",
    )]);
    build(&store, big.path(), &[]);
    age_store(&store, Duration::from_secs(3600));
    build(&store, small.path(), &[]);
    let results = ids_of(&du(&store), "cache-result");
    assert_eq!(results.len(), 2);

    // Room for the small, recent result but not for the big, older one.
    prune(&store, &["-f", "--keep-storage", "2MB"]);
    let left = ids_of(&du(&store), "cache-result");
    assert_eq!(left.len(), 1, "{left:?}");
    let small_again = build(&store, small.path(), &[]);
    assert_eq!(step_names(&small_again, "cached").len(), 1);
    let big_again = build(&store, big.path(), &[]);
    assert_eq!(step_names(&big_again, "started").len(), 1);

    prune(&store, &["-f", "--keep-storage", "0"]);
    assert!(ids_of(&du(&store), "cache-result").is_empty());
}

/// Whether some process holds `ROOT/store.lock` (util-linux flock, a second tool).
fn store_lock_busy(store: &Store) -> bool {
    !Command::new("flock")
        .args(["--nonblock", "--exclusive"])
        .arg(store.root().join("store.lock"))
        .arg("true")
        .status()
        .unwrap()
        .success()
}

#[test]
fn prune_during_a_build_waits_and_removes_nothing_the_build_uses() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo base > /base\nRUN sleep 2 && echo done > /done\n",
    )]);
    // A first build leaves the base step in the cache for the second one to hit.
    let warm = context(&[("Dockerfile", "FROM busybox\nRUN echo base > /base\n")]);
    build(&store, warm.path(), &[]);

    let child = store
        .cmd()
        .args(["build", "--progress=rawjson", "-t", "app"])
        .arg(ctx.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !store_lock_busy(&store) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "build never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // du runs alongside the build and sees its writable snapshot as in use.
    while !snapshot_keys(&store)
        .iter()
        .any(|k| k.starts_with("active-"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the RUN never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let live = du(&store);
    let active: Vec<&Value> = live.iter().filter(|e| e["kind"] == "active").collect();
    assert!(!active.is_empty(), "{live:#?}");
    for e in active {
        assert_eq!(e["kept_for"], "in use", "{e}");
        assert_eq!(e["reclaimable_all"], false, "{e}");
    }
    let pruned = prune(&store, &["--all", "-f"]);
    let build_out = child.wait_with_output().unwrap();
    assert!(build_out.status.success(), "{}", stderr(&build_out));
    assert!(
        stderr(&pruned).contains("waiting for other builder processes"),
        "{}",
        stderr(&pruned)
    );
    assert_eq!(
        step_names(&build_out, "cached"),
        vec!["[2/3] RUN echo base > /base".to_string()]
    );
    let run = store.run(&["run", "--rm", "app", "cat", "/base", "/done"]);
    assert_eq!(stdout(&run), "base\ndone\n", "{}", stderr(&run));
}

#[test]
fn a_build_started_during_a_prune_waits_for_it() {
    let store = Store::with_busybox();
    // Hold the store exclusively (as a prune does) from a second tool.
    let mut holder = Command::new("flock")
        .arg("--exclusive")
        .arg(store.root().join("store.lock"))
        .args(["sleep", "1"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo x > /x\n")]);
    let start = Instant::now();
    let out = build(&store, ctx.path(), &["-t", "x"]);
    assert!(start.elapsed() >= Duration::from_millis(600));
    assert!(
        stderr(&out).contains("waiting for a prune"),
        "{}",
        stderr(&out)
    );
    assert!(holder.wait().unwrap().success());
}

/// Snapshot dirs on disk are exactly those the metadata lists.
fn assert_no_orphan_snapshot_dirs(store: &Store) {
    let meta: Value = serde_json::from_slice(
        &std::fs::read(store.root().join("snapshots/metadata.json")).unwrap(),
    )
    .unwrap();
    let live: BTreeSet<String> = meta["snapshots"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r["id"].to_string())
        .collect();
    let dirs: BTreeSet<String> = std::fs::read_dir(store.root().join("snapshots"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.parse::<u64>().ok().map(|_| name)
        })
        .collect();
    assert_eq!(dirs, live, "snapshot dirs and metadata disagree");
}

#[test]
fn a_prune_killed_midway_leaves_a_usable_store() {
    let store = Store::with_busybox();
    let mut dockerfile = String::from("FROM busybox\n");
    for i in 0..6 {
        dockerfile.push_str(&format!("RUN echo {i} > /f{i}\n"));
    }
    dockerfile.push_str("RUN --mount=type=cache,target=/c touch /c/x /done\n");
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    // Each phase boundary (the prune aborts there, as under kill -9), then a kill -9 from
    // outside at whatever moment it lands.
    let phases = ["references", "snapshots", "mount-moved", "mounts", ""];
    for phase in phases {
        build(&store, ctx.path(), &[]);
        let full = snapshot_keys(&store).len();
        let mut child = store
            .cmd()
            .args(["prune", "-af"])
            .env("BUILDER_PRUNE_ABORT_AFTER", phase)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if phase.is_empty() {
            std::thread::sleep(Duration::from_millis(40));
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        assert!(!status.success() || phase.is_empty(), "{phase}: {status:?}");
        eprintln!(
            "stopped after {phase:?}: {} of {full} snapshots left",
            snapshot_keys(&store).len()
        );

        // The store works: du reads it, a build finds what is left and remakes the rest.
        let du_out = store.run(&["du"]);
        assert!(du_out.status.success(), "{phase}: {}", stderr(&du_out));
        let again = build(&store, ctx.path(), &["-t", "after"]);
        assert_eq!(
            step_names(&again, "cached").len() + step_names(&again, "started").len(),
            7,
            "{phase}: {}",
            stderr(&again)
        );
        let run = store.run(&["run", "--rm", "after", "cat", "/f0", "/f5"]);
        assert_eq!(stdout(&run), "0\n5\n", "{phase}: {}", stderr(&run));
        assert!(store.run(&["rmi", "after"]).status.success());
    }
    // A finished prune then leaves nothing reclaimable, no orphan dirs, no staging leftovers.
    prune(&store, &["-af"]);
    let entries = du(&store);
    assert!(
        entries.iter().all(|e| e["reclaimable"] == false),
        "{entries:#?}"
    );
    assert_no_orphan_snapshot_dirs(&store);
    let staging = std::fs::read_dir(store.root().join("cache/mounts-staging"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staging, 0);
}

/// Records kept from an imported cache: those of the tagged image's layers stay (they are its
/// cache), the others go with their blobs; `--all` takes them all but no image blob.
#[test]
fn imported_cache_records_are_pruned_with_their_blobs() {
    let first = Store::with_busybox();
    let ctx = context(&[("Dockerfile", MULTI_STAGE)]);
    let cache_dir = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={},mode=max", cache_dir.path().display());
    build(&first, ctx.path(), &["--cache-to", &dest]);

    let store = Store::with_busybox();
    let src = format!("type=local,src={}", cache_dir.path().display());
    let imported = build(&store, ctx.path(), &["--cache-from", &src, "-t", "app"]);
    assert_eq!(
        step_names(&imported, "started"),
        Vec::<String>::new(),
        "{}",
        stderr(&imported)
    );
    let records = ids_of(&du(&store), "cache-record");
    assert!(records.len() >= 2, "hits are kept as records: {records:?}");

    let needed: BTreeSet<String> = image_blobs(&store, "app")
        .union(&image_blobs(&store, "busybox"))
        .cloned()
        .collect();
    prune(&store, &["-f"]);
    let kept = ids_of(&du(&store), "cache-record");
    assert!(
        !kept.is_empty() && kept.len() < records.len(),
        "{kept:?} of {records:?}"
    );
    // The build stage's 2 MB layer blob went with its record.
    assert_eq!(blob_files(&store), needed);
    let again = build(&store, ctx.path(), &["-t", "app"]);
    assert_eq!(
        step_names(&again, "cached"),
        vec![
            "[stage-1 2/3] RUN echo final > /final".to_string(),
            "[stage-1 3/3] COPY --from=build /artifact /artifact".to_string()
        ],
        "{}",
        stderr(&again)
    );

    prune(&store, &["-af"]);
    assert!(ids_of(&du(&store), "cache-record").is_empty());
    assert_eq!(
        blob_files(&store),
        image_blobs(&store, "app")
            .union(&image_blobs(&store, "busybox"))
            .cloned()
            .collect()
    );
    let run = store.run(&["run", "--rm", "app", "cat", "/artifact", "/final"]);
    assert_eq!(stdout(&run), "built\nfinal\n", "{}", stderr(&run));
}

#[test]
fn prune_asks_before_removing_and_bad_flags_are_clear_errors() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo x > /x\n")]);
    build(&store, ctx.path(), &[]);
    let before = snapshot_keys(&store);

    let refused = store.run(&["prune"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(snapshot_keys(&store), before, "nothing removed without -f");

    for (args, needle) in [
        (&["prune", "-f", "--filter", "colour=red"][..], "--filter"),
        (&["prune", "-f", "--filter", "until=3d"][..], "until=3d"),
        (
            &["prune", "-f", "--filter", "type=layers"][..],
            "type=layers",
        ),
        (
            &["prune", "-f", "--keep-storage", "lots"][..],
            "--keep-storage",
        ),
        (&["du", "--filter", "until"][..], "--filter"),
    ] {
        let out = store.run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert_eq!(snapshot_keys(&store), before);
}

#[test]
fn du_reports_sizes_by_kind_and_reclaimable_totals() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", MULTI_STAGE)]);
    build(&store, ctx.path(), &["-t", "app"]);
    let table = store.run(&["du"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    for row in [
        "image layers (unpacked)",
        "build cache results",
        "cache mounts",
        "content blobs",
        "Total",
    ] {
        assert!(text.contains(row), "{row} missing: {text}");
    }
    let verbose = stdout(&store.run(&["du", "--verbose"]));
    assert!(
        verbose.contains("LAST USED") && verbose.contains("no (tagged image)"),
        "{verbose}"
    );

    let entries = du(&store);
    let blob_sizes: u64 = entries
        .iter()
        .filter(|e| e["kind"] == "blob")
        .map(|e| e["size"].as_u64().unwrap())
        .sum();
    let on_disk: u64 = blob_files(&store)
        .iter()
        .map(|d| {
            std::fs::metadata(
                store
                    .root()
                    .join("content/blobs/sha256")
                    .join(d.trim_start_matches("sha256:")),
            )
            .unwrap()
            .len()
        })
        .sum();
    assert_eq!(blob_sizes, on_disk);
    let big = entries
        .iter()
        .filter(|e| e["kind"] == "cache-result")
        .map(|e| e["size"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(big >= 2 << 20, "the 2 MB stage result is counted: {big}");
}

#[test]
fn prune_cleans_up_after_a_killed_build() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN dd if=/dev/zero of=/junk bs=1k count=512 2>/dev/null && sleep 30\n",
    )]);
    let mut child = store
        .cmd()
        .args(["build", "--progress=plain", "-t", "never"])
        .arg(ctx.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the RUN's writable snapshot, then kill the build outright.
    let start = Instant::now();
    while !snapshot_keys(&store)
        .iter()
        .any(|k| k.starts_with("active-"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the RUN never started: {:?}",
            snapshot_keys(&store)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    // The container helper dies with its parent; give it a moment to let go of its mounts.
    std::thread::sleep(Duration::from_millis(300));
    // An upload a killed pull left behind, and one a live writer still holds.
    let ingest = store.root().join("content/ingest");
    std::fs::write(ingest.join("abandoned"), vec![0u8; 4096]).unwrap();
    std::fs::write(ingest.join("live"), b"partial").unwrap();
    let mut writer = Command::new("flock")
        .arg(ingest.join("live"))
        .args(["sleep", "5"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let out = prune(&store, &["-f"]);
    assert!(
        stdout(&out).contains("active snapshots"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("Removed abandoned uploads"),
        "{}",
        stdout(&out)
    );
    assert!(!ingest.join("abandoned").exists());
    assert!(ingest.join("live").exists(), "a live upload stays");
    let left = snapshot_keys(&store);
    assert_eq!(left.len(), 1, "only busybox's layer stays: {left:?}");
    assert_no_orphan_snapshot_dirs(&store);
    let tmp = std::fs::read_dir(store.root().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(tmp, 0, "temporary mount points are gone");
    let _ = writer.kill();
    let _ = writer.wait();
}

/// Runs `builder prune` on a terminal (util-linux `script` gives it a pty) answering `answer`.
fn prune_on_a_terminal(store: &Store, answer: &str) -> String {
    let command = format!("{BIN} --root {} prune", store.root().display());
    let out = output_with_stdin(
        Command::new("script").args(["-qec", &command, "/dev/null"]),
        format!("{answer}\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn prune_on_a_terminal_asks_first() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo x > /x\n")]);
    build(&store, ctx.path(), &[]);
    let before = snapshot_keys(&store);

    let declined = prune_on_a_terminal(&store, "n");
    assert!(declined.contains("Are you sure"), "{declined}");
    assert!(declined.contains("Nothing removed"), "{declined}");
    assert_eq!(snapshot_keys(&store), before);

    let accepted = prune_on_a_terminal(&store, "y");
    assert!(accepted.contains("Total reclaimed space"), "{accepted}");
    assert_eq!(snapshot_keys(&store).len(), 1, "only busybox's layer stays");
}

#[test]
fn du_counts_unfinished_uploads_and_prune_removes_only_abandoned_ones() {
    let store = Store::with_busybox();
    // An upload a killed pull left behind, and one a live writer (flock) still holds.
    let ingest = store.root().join("content/ingest");
    std::fs::write(ingest.join("abandoned"), vec![0u8; 8192]).unwrap();
    std::fs::write(ingest.join("live"), vec![0u8; 1000]).unwrap();
    let mut writer = Command::new("flock")
        .arg(ingest.join("live"))
        .args(["sleep", "10"])
        .spawn()
        .unwrap();
    let start = Instant::now();
    let held = || {
        let probe = Command::new("flock")
            .args(["-n", "-E", "99"])
            .arg(ingest.join("live"))
            .arg("true")
            .status()
            .unwrap();
        probe.code() == Some(99)
    };
    while !held() {
        assert!(start.elapsed() < Duration::from_secs(5), "flock never held");
        std::thread::sleep(Duration::from_millis(20));
    }

    let entries = du(&store);
    let upload = |id: &str| {
        entries
            .iter()
            .find(|e| e["kind"] == "upload" && e["id"] == id)
            .unwrap_or_else(|| panic!("no upload {id} in du: {entries:?}"))
            .clone()
    };
    assert_eq!(upload("abandoned")["size"], 8192);
    assert_eq!(upload("abandoned")["reclaimable"], true);
    assert_eq!(upload("live")["size"], 1000);
    assert_eq!(upload("live")["reclaimable"], false);
    assert_eq!(upload("live")["kept_for"], "in use");
    let table = stdout(&store.run(&["du"]));
    let row = table
        .lines()
        .find(|l| l.starts_with("unfinished uploads"))
        .unwrap_or_else(|| panic!("no uploads row: {table}"));
    assert!(row.split_whitespace().nth(2) == Some("2"), "{row}");

    let out = prune(&store, &["-f"]);
    assert!(
        stdout(&out).contains("Removed abandoned uploads: 8.2kB"),
        "{}",
        stdout(&out)
    );
    assert!(!ingest.join("abandoned").exists());
    assert!(ingest.join("live").exists(), "a live upload stays");
    assert_eq!(
        ids_of(&du(&store), "upload"),
        BTreeSet::from(["live".into()])
    );
    let _ = writer.kill();
    let _ = writer.wait();
}
