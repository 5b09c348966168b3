mod common;

use std::fs;

use common::Mounted;
use snapshotter::{Error, Kind, Snapshotter};

#[test]
fn three_layer_chain_with_deletion_in_top_layer() {
    let root = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();

    // Layer 1: parentless, a plain rw bind mount.
    let mounts = snap.prepare("build-1", None).unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].fstype, "bind");
    assert_eq!(mounts[0].options, vec!["rbind", "rw"]);
    {
        let m = Mounted::new(&mounts, mnt.path(), "m1");
        fs::create_dir(m.target.join("etc")).unwrap();
        fs::write(m.target.join("etc/base"), "one").unwrap();
        fs::write(m.target.join("doomed"), "bye").unwrap();
    }
    snap.commit("layer1", "build-1").unwrap();
    assert_eq!(snap.stat("layer1").unwrap().kind, Kind::Committed);
    assert!(!snap.exists("build-1"));

    // Layer 2: overlay on layer 1.
    let mounts = snap.prepare("build-2", Some("layer1")).unwrap();
    assert_eq!(mounts[0].fstype, "overlay");
    {
        let m = Mounted::new(&mounts, mnt.path(), "m2");
        assert_eq!(
            fs::read_to_string(m.target.join("etc/base")).unwrap(),
            "one"
        );
        fs::write(m.target.join("etc/second"), "two").unwrap();
    }
    snap.commit("layer2", "build-2").unwrap();

    // Layer 3: deletes a file of layer 1.
    let mounts = snap.prepare("build-3", Some("layer2")).unwrap();
    let lower = mounts[0]
        .options
        .iter()
        .find(|o| o.starts_with("lowerdir="))
        .unwrap();
    assert_eq!(
        lower.matches(':').count(),
        1,
        "two lowers, nearest first: {lower}"
    );
    {
        let m = Mounted::new(&mounts, mnt.path(), "m3");
        fs::remove_file(m.target.join("doomed")).unwrap();
        fs::write(m.target.join("third"), "three").unwrap();
    }
    assert_eq!(snap.mounts("build-3").unwrap(), mounts);
    snap.commit("layer3", "build-3").unwrap();
    assert_eq!(
        snap.stat("layer3").unwrap().parent.as_deref(),
        Some("layer2")
    );

    // The top layer's own dir holds only its changes (a whiteout for the deletion).
    let upper = snap.upper_dir("layer3").unwrap();
    assert!(upper.join("third").exists());
    assert!(!upper.join("etc").exists());
    let wh = fs::symlink_metadata(upper.join("doomed")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &wh.file_type()
    ));

    // A read-only view of the whole chain.
    let view = snap.view("view-3", "layer3").unwrap();
    assert!(view[0].options.contains(&"ro".to_string()));
    assert_eq!(snap.stat("view-3").unwrap().kind, Kind::View);
    {
        let m = Mounted::new(&view, mnt.path(), "v3");
        assert_eq!(
            fs::read_to_string(m.target.join("etc/base")).unwrap(),
            "one"
        );
        assert_eq!(
            fs::read_to_string(m.target.join("etc/second")).unwrap(),
            "two"
        );
        assert_eq!(fs::read_to_string(m.target.join("third")).unwrap(), "three");
        assert!(!m.target.join("doomed").exists());
        assert!(
            fs::write(m.target.join("new"), "x").is_err(),
            "view must be read-only"
        );
    }

    // A view of a single layer is a read-only bind mount.
    let view1 = snap.view("view-1", "layer1").unwrap();
    assert_eq!(view1[0].fstype, "bind");
    {
        let m = Mounted::new(&view1, mnt.path(), "v1");
        assert!(m.target.join("doomed").exists());
        assert!(fs::write(m.target.join("new"), "x").is_err());
    }

    // Removal order is enforced by parent links.
    assert!(matches!(snap.remove("layer2"), Err(Error::Invalid(_))));
    snap.remove("view-3").unwrap();
    snap.remove("layer3").unwrap();
    assert!(!upper.exists());
    snap.remove("layer2").unwrap();
    snap.remove("view-1").unwrap();
    snap.remove("layer1").unwrap();
    assert!(snap.walk().unwrap().is_empty());
}

#[test]
fn verbs_reject_bad_requests() {
    let root = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    snap.prepare("a", None).unwrap();
    assert!(matches!(
        snap.prepare("a", None),
        Err(Error::AlreadyExists(_))
    ));
    // Active snapshots cannot be parents.
    assert!(matches!(
        snap.prepare("b", Some("a")),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        snap.prepare("b", Some("nope")),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(snap.view("v", "a"), Err(Error::Invalid(_))));
    snap.commit("c", "a").unwrap();
    assert!(matches!(snap.commit("c2", "c"), Err(Error::Invalid(_))));
    snap.prepare("a2", Some("c")).unwrap();
    snap.prepare("a3", Some("c")).unwrap();
    snap.commit("c3", "a3").unwrap();
    // Someone else already produced "c3": the caller then removes its own key.
    assert!(matches!(
        snap.commit("c3", "a2"),
        Err(Error::AlreadyExists(_))
    ));
    snap.remove("a2").unwrap();
    assert!(matches!(snap.remove("a2"), Err(Error::NotFound(_))));
    assert!(matches!(snap.stat("zzz"), Err(Error::NotFound(_))));
    assert!(matches!(snap.prepare("", None), Err(Error::Invalid(_))));
}

#[test]
fn metadata_labels_and_usage_persist_across_reopen() {
    let root = tempfile::tempdir().unwrap();
    {
        let snap = Snapshotter::open(root.path()).unwrap();
        snap.prepare("k", None).unwrap();
        let upper = snap.upper_dir("k").unwrap();
        assert!(upper.starts_with(root.path().join("snapshots")));
        fs::write(upper.join("big"), vec![1u8; 100_000]).unwrap();
        snap.commit("sha256:abc", "k").unwrap();
        snap.set_label("sha256:abc", "gc.root", "yes").unwrap();
    }
    let snap = Snapshotter::open(root.path()).unwrap();
    let info = snap.stat("sha256:abc").unwrap();
    assert_eq!(info.labels.get("gc.root").map(String::as_str), Some("yes"));
    assert!(info.created > 0);
    assert!(snap.usage("sha256:abc").unwrap() >= 100_000);
    assert_eq!(snap.walk().unwrap().len(), 1);
}

#[test]
fn orphan_dirs_from_a_crash_are_cleaned_on_open() {
    let root = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    snap.prepare("live", None).unwrap();
    let orphan = root.path().join("snapshots/999/fs");
    fs::create_dir_all(&orphan).unwrap();
    let _ = Snapshotter::open(root.path()).unwrap();
    assert!(!orphan.exists());
    assert!(snap.upper_dir("live").unwrap().exists());
}

#[test]
fn too_long_lowerdir_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    let mut parent: Option<String> = None;
    let mut failure = None;
    for i in 0..500 {
        let key = format!("build-{i}");
        match snap.prepare(&key, parent.as_deref()) {
            Ok(_) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        let name = format!("layer-{i}");
        snap.commit(&name, &key).unwrap();
        parent = Some(name);
    }
    let err = failure.expect("some depth must exceed the mount option limit");
    assert!(
        matches!(err, Error::Invalid(ref m) if m.contains("limit")),
        "{err}"
    );
}

#[test]
fn concurrent_prepares_from_many_handles() {
    let root = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let path = root.path();
            s.spawn(move || {
                let snap = Snapshotter::open(path).unwrap();
                for i in 0..20 {
                    let key = format!("t{t}-{i}");
                    snap.prepare(&key, None).unwrap();
                    // Every thread races to produce the same committed name.
                    match snap.commit(&format!("shared-{i}"), &key) {
                        Ok(()) => {}
                        Err(Error::AlreadyExists(_)) => snap.remove(&key).unwrap(),
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    let snap = Snapshotter::open(root.path()).unwrap();
    let all = snap.walk().unwrap();
    assert_eq!(all.len(), 20);
    assert!(all.iter().all(|i| i.kind == Kind::Committed));
}

/// A pending snapshot's label says what its unpacker writes.
fn pending_labels(text: &str) -> std::collections::BTreeMap<String, String> {
    [("content".to_string(), text.to_string())].into()
}

fn writing_unpacker(
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> snapshotter::Unpacker {
    std::sync::Arc::new(move |info, dir| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let text = info.labels.get("content").ok_or("no content label")?;
        fs::write(dir.join("file"), text).map_err(|e| e.to_string())
    })
}

#[test]
fn pending_snapshots_are_unpacked_when_first_read_and_only_once() {
    let root = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    snap.create_pending("bottom", None, pending_labels("one"))
        .unwrap();
    snap.create_pending("top", Some("bottom"), pending_labels("two"))
        .unwrap();
    assert!(snap.stat("top").unwrap().pending);

    // Nothing can unpack yet: reading fails instead of showing an empty tree.
    let err = snap.prepare("work", Some("top")).unwrap_err().to_string();
    assert!(err.contains("not unpacked"), "{err}");
    assert!(!snap.exists("work"));

    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    snap.set_unpacker(writing_unpacker(calls.clone()));
    let mounts = snap.prepare("work", Some("top")).unwrap();
    {
        let m = Mounted::new(&mounts, mnt.path(), "m");
        assert_eq!(fs::read_to_string(m.target.join("file")).unwrap(), "two");
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(!snap.stat("top").unwrap().pending);
    assert!(!snap.stat("bottom").unwrap().pending);
    assert_eq!(
        fs::read_to_string(snap.upper_dir("bottom").unwrap().join("file")).unwrap(),
        "one"
    );
    // A reopened store knows they are unpacked.
    let again = Snapshotter::open(root.path()).unwrap();
    again.set_unpacker(writing_unpacker(calls.clone()));
    again.view("v", "top").unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn concurrent_readers_of_a_pending_snapshot_see_one_whole_tree() {
    let root = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    snap.create_pending("p", None, pending_labels("data"))
        .unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    snap.set_unpacker(writing_unpacker(calls));
    let dirs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| snap.upper_dir("p").unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for dir in dirs {
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("file")]);
        assert_eq!(fs::read_to_string(dir.join("file")).unwrap(), "data");
    }
    // No unpack dirs are left behind.
    let own = snap.upper_dir("p").unwrap();
    let leftovers: Vec<_> = fs::read_dir(own.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("fs.unpack"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_failed_unpack_leaves_the_snapshot_pending_and_retried() {
    let root = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    snap.create_pending("p", None, Default::default()).unwrap();
    snap.set_unpacker(std::sync::Arc::new(|_, _| Err("blob is gone".to_string())));
    let err = snap.upper_dir("p").unwrap_err().to_string();
    assert!(err.contains("blob is gone"), "{err}");
    assert!(snap.stat("p").unwrap().pending);
    let dir = root.path().join("snapshots");
    let stray: Vec<_> = walkdir(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("fs.unpack"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        }
        out.push(p);
    }
    out
}
