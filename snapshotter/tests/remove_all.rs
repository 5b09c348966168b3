//! `Snapshotter::remove_all`: many snapshots in one metadata write, all or nothing.

use snapshotter::{Error, Snapshotter};

fn commit(snap: &Snapshotter, name: &str, parent: Option<&str>) {
    let active = format!("{name}-active");
    snap.prepare(&active, parent).unwrap();
    std::fs::write(snap.upper_dir(&active).unwrap().join(name), name).unwrap();
    snap.commit(name, &active).unwrap();
}

/// Numeric snapshot dirs on disk.
fn dirs(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().parse::<u64>().is_ok()
        })
        .count()
}

#[test]
fn removes_a_chain_and_its_dirs_at_once() {
    let root = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    commit(&snap, "a", None);
    commit(&snap, "b", Some("a"));
    commit(&snap, "c", Some("b"));
    commit(&snap, "other", None);
    assert_eq!(dirs(root.path()), 4);

    snap.remove_all(&["c".into(), "a".into(), "b".into()])
        .unwrap();
    let left: Vec<String> = snap.walk().unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(left, ["other"]);
    assert_eq!(dirs(root.path()), 1);
}

#[test]
fn refuses_to_orphan_a_child_and_removes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    commit(&snap, "a", None);
    commit(&snap, "b", Some("a"));
    commit(&snap, "lone", None);

    let err = snap.remove_all(&["lone".into(), "a".into()]).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("\"b\""), "{err}");
    assert_eq!(snap.walk().unwrap().len(), 3);
    assert_eq!(dirs(root.path()), 3);

    let missing = snap.remove_all(&["nope".into()]).unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
}
