//! The snapshotter conformance suite, as containerd's `snapshots/testsuite`: behaviour every
//! way of holding snapshots must show, written once. A test binary runs it against one
//! implementation with `conformance_suite!(constructor)`, where the constructor returns a
//! fresh [`Harness`] (and sets whatever process-wide mode the implementation needs), so one
//! more implementation is one more line in one more file.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use snapshotter::layer::{lower_dirs_from_mounts, write_diff_tar, DiffOptions};
use snapshotter::{mount_all, unmount, Error, Kind, Mount, Snapshotter};

/// A snapshotter on a fresh storage root, and a directory to mount its snapshots under.
pub struct Harness {
    pub snapshots: Snapshotter,
    pub root: tempfile::TempDir,
    pub mnt: tempfile::TempDir,
}

impl Harness {
    /// The store's own snapshotter on a fresh root.
    pub fn new() -> Harness {
        let root = tempfile::tempdir().unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let snapshots = Snapshotter::open(root.path()).unwrap();
        Harness {
            snapshots,
            root,
            mnt,
        }
    }

    /// Mounts `mounts` at a fresh directory named `name`; released (and for a writable view
    /// without a real mount, written back) when the guard drops.
    pub fn mount(&self, mounts: &[Mount], name: &str) -> Mounted {
        let target = self.mnt.path().join(name);
        fs::create_dir_all(&target).unwrap();
        mount_all(mounts, &target).unwrap();
        Mounted { target }
    }

    /// Prepares `key` on `parent`, lets `change` edit it through its mounts, commits it as
    /// `name`.
    pub fn layer(&self, name: &str, parent: Option<&str>, change: impl FnOnce(&Path)) {
        let key = format!("active-{name}");
        let mounts = self.snapshots.prepare(&key, parent).unwrap();
        {
            let m = self.mount(&mounts, &key);
            change(&m.target);
        }
        self.snapshots.commit(name, &key).unwrap();
    }

    /// Runs `read` on a read-only view of the committed snapshot `name`.
    pub fn read<T>(&self, name: &str, read: impl FnOnce(&Path) -> T) -> T {
        let key = format!("view-{name}-{}", unique());
        let mounts = self.snapshots.view(&key, name).unwrap();
        let out = {
            let m = self.mount(&mounts, &key);
            read(&m.target)
        };
        self.snapshots.remove(&key).unwrap();
        out
    }

    /// The layer tar of committed snapshot `name`, diffed against its parents.
    pub fn diff(&self, name: &str) -> Vec<u8> {
        let upper = self.snapshots.upper_dir(name).unwrap();
        let opts = DiffOptions {
            lower_dirs: lower_dirs_from_mounts(&self.snapshots.mounts(name).unwrap(), &upper),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_diff_tar(&upper, &mut out, &opts).unwrap();
        out
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A mounted snapshot, unmounted on drop.
pub struct Mounted {
    pub target: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        unmount(&self.target).unwrap();
    }
}

/// Every path below `dir`, relative, with a file's contents or `<dir>`/`-> target`.
pub fn tree(dir: &Path) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let md = fs::symlink_metadata(&path).unwrap();
            let what = if md.is_dir() {
                stack.push(path.clone());
                "<dir>".to_string()
            } else if md.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else {
                fs::read_to_string(&path).unwrap()
            };
            out.insert((rel, what));
        }
    }
    out
}

fn entries(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect()
}

/// (name, entry type, mode, uid, gid, link target) of every entry of a layer tar.
fn tar_entries(data: &[u8]) -> Vec<(String, tar::EntryType, u32, u64, u64, Option<String>)> {
    let mut archive = tar::Archive::new(data);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                link,
            )
        })
        .collect()
}

fn tar_names(data: &[u8]) -> Vec<String> {
    tar_entries(data).into_iter().map(|e| e.0).collect()
}

/// Runs the suite against the implementation `make` constructs: one `#[test]` per behaviour.
macro_rules! conformance_suite {
    ($make:expr) => {
        conformance_suite!($make;
            prepare_write_commit_and_view,
            parents_stack_in_order,
            a_child_never_changes_its_parent,
            writes_through_a_view_never_reach_a_snapshot,
            removing_a_snapshot_with_children_is_refused,
            verbs_refuse_the_wrong_kind_of_snapshot,
            removing_an_active_snapshot_drops_its_changes,
            deletions_diff_to_whiteouts_and_replaced_dirs_to_opaque,
            hard_links_stay_one_file,
            modes_ownership_and_xattrs_are_kept,
            concurrent_commits_on_one_parent_all_land,
            long_chains_stack_every_layer,
        );
    };
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                conformance::$name(&$make);
            }
        )*
    };
}

pub fn prepare_write_commit_and_view(make: &dyn Fn() -> Harness) {
    let h = make();
    h.layer("base", None, |dir| {
        fs::create_dir(dir.join("etc")).unwrap();
        fs::write(dir.join("etc/hostname"), "box").unwrap();
        std::os::unix::fs::symlink("etc/hostname", dir.join("name")).unwrap();
    });
    let info = h.snapshots.stat("base").unwrap();
    assert_eq!((info.kind, info.parent), (Kind::Committed, None));
    assert!(!h.snapshots.exists("active-base"), "commit keeps the key");
    let expected = entries(&[
        ("etc", "<dir>"),
        ("etc/hostname", "box"),
        ("name", "-> etc/hostname"),
    ]);
    assert_eq!(h.read("base", tree), expected);
    let view = h.snapshots.view("v", "base").unwrap();
    let info = h.snapshots.stat("v").unwrap();
    assert_eq!(
        (info.kind, info.parent.as_deref()),
        (Kind::View, Some("base"))
    );
    let committed = h.snapshots.mounts("base").unwrap();
    for mounts in [view, committed] {
        assert!(
            mounts.iter().all(|m| m.options.iter().any(|o| o == "ro")),
            "a view's or committed snapshot's mounts are read-only: {mounts:?}"
        );
    }
}

pub fn parents_stack_in_order(make: &dyn Fn() -> Harness) {
    let h = make();
    h.layer("l1", None, |d| {
        fs::write(d.join("a"), "1").unwrap();
        fs::write(d.join("b"), "1").unwrap();
        fs::create_dir(d.join("dir")).unwrap();
        fs::write(d.join("dir/kept"), "1").unwrap();
    });
    h.layer("l2", Some("l1"), |d| {
        fs::write(d.join("a"), "2").unwrap();
        fs::remove_file(d.join("b")).unwrap();
        fs::write(d.join("dir/new"), "2").unwrap();
    });
    h.layer("l3", Some("l2"), |d| {
        assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "2");
        fs::write(d.join("b"), "3").unwrap();
    });
    assert_eq!(
        h.snapshots.stat("l3").unwrap().parent.as_deref(),
        Some("l2")
    );
    assert_eq!(
        h.snapshots.stat("l2").unwrap().parent.as_deref(),
        Some("l1")
    );
    let expected = entries(&[
        ("a", "2"),
        ("b", "3"),
        ("dir", "<dir>"),
        ("dir/kept", "1"),
        ("dir/new", "2"),
    ]);
    assert_eq!(h.read("l3", tree), expected);
    let committed: BTreeSet<String> = h
        .snapshots
        .walk()
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(committed, ["l1", "l2", "l3"].map(String::from).into());
}

pub fn a_child_never_changes_its_parent(make: &dyn Fn() -> Harness) {
    let h = make();
    h.layer("base", None, |d| {
        fs::create_dir(d.join("d")).unwrap();
        fs::write(d.join("d/f"), "base").unwrap();
    });
    let before = h.read("base", tree);
    h.layer("child", Some("base"), |d| {
        fs::write(d.join("d/f"), "child").unwrap();
        fs::remove_dir_all(d.join("d")).unwrap();
        fs::write(d.join("d"), "now a file").unwrap();
    });
    assert_eq!(h.read("base", tree), before);
    assert_eq!(h.read("child", tree), entries(&[("d", "now a file")]));
}

pub fn writes_through_a_view_never_reach_a_snapshot(make: &dyn Fn() -> Harness) {
    let h = make();
    h.layer("l1", None, |d| fs::write(d.join("f"), "1").unwrap());
    h.layer("l2", Some("l1"), |d| fs::write(d.join("g"), "2").unwrap());
    for parent in ["l1", "l2"] {
        let before = h.read(parent, tree);
        let mounts = h.snapshots.view("v", parent).unwrap();
        {
            let m = h.mount(&mounts, "v");
            // Refused by a real read-only mount; a copied view may take it, but not keep it.
            let _ = fs::write(m.target.join("f"), "changed");
            let _ = fs::write(m.target.join("new"), "x");
        }
        h.snapshots.remove("v").unwrap();
        assert_eq!(h.read(parent, tree), before, "{parent} changed");
    }
}

pub fn removing_a_snapshot_with_children_is_refused(make: &dyn Fn() -> Harness) {
    let h = make();
    h.layer("base", None, |d| fs::write(d.join("f"), "1").unwrap());
    h.layer("child", Some("base"), |_| {});
    h.snapshots.view("v", "child").unwrap();
    for (key, blocker) in [("base", "child"), ("child", "v")] {
        let err = h.snapshots.remove(key).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert!(err.to_string().contains(blocker), "{err}");
        assert!(h.snapshots.exists(key));
    }
    let err = h
        .snapshots
        .remove_all(&["base".to_string(), "child".to_string()])
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert_eq!(h.read("base", tree), entries(&[("f", "1")]));
    h.snapshots.remove("v").unwrap();
    h.snapshots.remove("child").unwrap();
    h.snapshots.remove("base").unwrap();
    assert!(matches!(h.snapshots.stat("base"), Err(Error::NotFound(_))));
    assert!(h.snapshots.walk().unwrap().is_empty());
}

pub fn verbs_refuse_the_wrong_kind_of_snapshot(make: &dyn Fn() -> Harness) {
    let h = make();
    h.layer("base", None, |_| {});
    h.snapshots.prepare("active", Some("base")).unwrap();
    h.snapshots.view("view", "base").unwrap();
    // Only committed snapshots are parents.
    assert!(h.snapshots.prepare("x", Some("active")).is_err());
    assert!(h.snapshots.view("x", "view").is_err());
    assert!(h.snapshots.prepare("x", Some("missing")).is_err());
    assert!(!h.snapshots.exists("x"));
    // Only active snapshots commit, never over an existing name.
    assert!(h.snapshots.commit("c", "view").is_err());
    assert!(h.snapshots.commit("c", "base").is_err());
    let err = h.snapshots.commit("base", "active").unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
    assert!(matches!(
        h.snapshots.prepare("active", None),
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(h.snapshots.stat("active").unwrap().kind, Kind::Active);
}

pub fn removing_an_active_snapshot_drops_its_changes(make: &dyn Fn() -> Harness) {
    let h = make();
    h.layer("base", None, |d| fs::write(d.join("f"), "1").unwrap());
    let mounts = h.snapshots.prepare("work", Some("base")).unwrap();
    {
        let m = h.mount(&mounts, "work");
        fs::write(m.target.join("f"), "2").unwrap();
    }
    let upper = h.snapshots.upper_dir("work").unwrap();
    h.snapshots.remove("work").unwrap();
    assert!(!upper.exists(), "the removed snapshot's files stay");
    assert!(!h.snapshots.exists("work"));
    assert_eq!(h.read("base", tree), entries(&[("f", "1")]));
}

pub fn deletions_diff_to_whiteouts_and_replaced_dirs_to_opaque(make: &dyn Fn() -> Harness) {
    let h = make();
    h.layer("base", None, |d| {
        fs::write(d.join("gone"), "x").unwrap();
        fs::create_dir_all(d.join("replaced/sub")).unwrap();
        fs::write(d.join("replaced/old"), "x").unwrap();
        fs::create_dir(d.join("kept")).unwrap();
        fs::write(d.join("kept/file"), "x").unwrap();
        fs::write(d.join("kept/gone"), "x").unwrap();
    });
    h.layer("top", Some("base"), |d| {
        fs::remove_file(d.join("gone")).unwrap();
        fs::remove_file(d.join("kept/gone")).unwrap();
        fs::remove_dir_all(d.join("replaced")).unwrap();
        fs::create_dir(d.join("replaced")).unwrap();
        fs::write(d.join("replaced/new"), "y").unwrap();
    });
    let names: BTreeSet<String> = tar_names(&h.diff("top")).into_iter().collect();
    for wanted in [".wh.gone", "kept/.wh.gone", "replaced/new"] {
        assert!(names.contains(wanted), "{wanted} missing from {names:?}");
    }
    // What the old directory held is hidden: an opaque marker or a whiteout per entry.
    let hidden = names.contains("replaced/.wh..wh..opq")
        || ["replaced/.wh.old", "replaced/.wh.sub"]
            .iter()
            .all(|w| names.contains(*w));
    assert!(hidden, "replaced/ does not hide its old entries: {names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("kept/file")),
        "{names:?}"
    );
    let expected = entries(&[
        ("kept", "<dir>"),
        ("kept/file", "x"),
        ("replaced", "<dir>"),
        ("replaced/new", "y"),
    ]);
    assert_eq!(h.read("top", tree), expected);
}

pub fn hard_links_stay_one_file(make: &dyn Fn() -> Harness) {
    let h = make();
    h.layer("base", None, |d| {
        fs::write(d.join("one"), "shared").unwrap();
        fs::hard_link(d.join("one"), d.join("two")).unwrap();
    });
    let (ino, links) = h.read("base", |d| {
        let (a, b) = (
            fs::metadata(d.join("one")).unwrap(),
            fs::metadata(d.join("two")).unwrap(),
        );
        ((a.ino(), b.ino()), (a.nlink(), b.nlink()))
    });
    assert_eq!(ino.0, ino.1, "the two names are different files");
    assert_eq!(links, (2, 2));
    let entries = tar_entries(&h.diff("base"));
    let linked: Vec<_> = entries
        .iter()
        .filter(|e| e.1 == tar::EntryType::Link)
        .collect();
    assert_eq!(linked.len(), 1, "{entries:?}");
    assert!(
        matches!(linked[0].5.as_deref(), Some("one" | "two")),
        "{linked:?}"
    );
}

pub fn modes_ownership_and_xattrs_are_kept(make: &dyn Fn() -> Harness) {
    let h = make();
    h.layer("base", None, |d| {
        fs::write(d.join("tool"), "#!/bin/sh\n").unwrap();
        // Owner first: chown clears the set-user-id bit.
        std::os::unix::fs::chown(d.join("tool"), Some(1000), Some(1001)).unwrap();
        fs::set_permissions(d.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::create_dir(d.join("tmp")).unwrap();
        fs::set_permissions(d.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        rustix::fs::setxattr(
            d.join("tool"),
            "user.origin",
            b"suite",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    });
    h.layer("top", Some("base"), |d| {
        std::os::unix::fs::chown(d.join("tmp"), Some(7), Some(8)).unwrap();
    });
    h.read("top", |d| {
        let tool = fs::symlink_metadata(d.join("tool")).unwrap();
        assert_eq!(
            (tool.mode() & 0o7777, tool.uid(), tool.gid()),
            (0o4755, 1000, 1001)
        );
        let tmp = fs::symlink_metadata(d.join("tmp")).unwrap();
        assert_eq!((tmp.mode() & 0o7777, tmp.uid(), tmp.gid()), (0o1777, 7, 8));
        let mut value = [0u8; 16];
        let n = rustix::fs::getxattr(d.join("tool"), "user.origin", &mut value).unwrap();
        assert_eq!(&value[..n], b"suite");
    });
    let base = tar_entries(&h.diff("base"));
    let tool = base
        .iter()
        .find(|e| e.0 == "tool")
        .expect("tool in the layer");
    assert_eq!((tool.2 & 0o7777, tool.3, tool.4), (0o4755, 1000, 1001));
    let top = tar_entries(&h.diff("top"));
    let names: Vec<&str> = top.iter().map(|e| e.0.trim_end_matches('/')).collect();
    assert_eq!(names, ["tmp"], "only the changed owner is in the layer");
    assert_eq!((top[0].2 & 0o7777, top[0].3, top[0].4), (0o1777, 7, 8));
}

pub fn concurrent_commits_on_one_parent_all_land(make: &dyn Fn() -> Harness) {
    const WRITERS: usize = 8;
    let h = make();
    h.layer("base", None, |d| {
        fs::write(d.join("shared"), "base").unwrap()
    });
    std::thread::scope(|s| {
        for n in 0..WRITERS {
            let h = &h;
            s.spawn(move || {
                h.layer(&format!("child{n}"), Some("base"), |d| {
                    fs::write(d.join("shared"), n.to_string()).unwrap();
                    fs::write(d.join(format!("own{n}")), "x").unwrap();
                });
            });
        }
    });
    let all = h.snapshots.walk().unwrap();
    assert_eq!(all.len(), WRITERS + 1, "{all:?}");
    assert!(all.iter().all(|i| i.kind == Kind::Committed));
    for n in 0..WRITERS {
        let own = format!("own{n}");
        let expected = entries(&[("shared", &n.to_string()), (&own, "x")]);
        assert_eq!(h.read(&format!("child{n}"), tree), expected);
    }
}

pub fn long_chains_stack_every_layer(make: &dyn Fn() -> Harness) {
    const LAYERS: usize = 40;
    let h = make();
    let mut parent: Option<String> = None;
    for n in 0..LAYERS {
        let name = format!("layer{n}");
        h.layer(&name, parent.as_deref(), |d| {
            fs::write(d.join(format!("f{n}")), n.to_string()).unwrap();
            if n > 0 {
                // Each layer also deletes what the one before it added last time but one.
                let _ = fs::remove_file(d.join(format!("f{}", n - 1)).with_extension("old"));
            }
            fs::write(d.join(format!("f{n}.old")), "stale").unwrap();
        });
        parent = Some(name);
    }
    let top = parent.unwrap();
    let seen = h.read(&top, tree);
    let mut expected: BTreeSet<(String, String)> = (0..LAYERS)
        .map(|n| (format!("f{n}"), n.to_string()))
        .collect();
    expected.insert((format!("f{}.old", LAYERS - 1), "stale".into()));
    assert_eq!(seen, expected);
}
