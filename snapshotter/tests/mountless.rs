//! Mountless views (chroot isolation): the same changes made through a copied view give the
//! same layer as through an overlay mount. Its own test binary: mountless mode is process-wide.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{tar_names, Mounted};
use snapshotter::layer::{lower_dirs_from_mounts, write_diff_tar, DiffOptions};
use snapshotter::Snapshotter;

/// Builds a base and a top snapshot with deletions, replacements and metadata changes;
/// returns the top layer's entry names (diffed against its lowers) and its tar bytes.
fn scenario() -> (Vec<String>, Vec<u8>) {
    let root = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    let base = snap.prepare("b", None).unwrap();
    {
        let m = Mounted::new(&base, mnt.path(), "base");
        for dir in ["etc", "quiet", "replaced/sub", "chmodded", "deep/a/b"] {
            fs::create_dir_all(m.target.join(dir)).unwrap();
        }
        fs::write(m.target.join("etc/passwd"), "root").unwrap();
        fs::write(m.target.join("etc/group"), "root").unwrap();
        fs::write(m.target.join("replaced/old"), "old").unwrap();
        fs::write(m.target.join("replaced/sub/x"), "x").unwrap();
        fs::write(m.target.join("deep/a/b/gone"), "g").unwrap();
        std::os::unix::fs::chown(m.target.join("etc/passwd"), Some(0), Some(0)).unwrap();
    }
    snap.commit("base", "b").unwrap();
    let top = snap.prepare("t", Some("base")).unwrap();
    {
        let m = Mounted::new(&top, mnt.path(), "top");
        fs::write(m.target.join("quiet/tmp"), "t").unwrap();
        fs::remove_file(m.target.join("quiet/tmp")).unwrap();
        fs::set_permissions(m.target.join("chmodded"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(m.target.join("etc/passwd"), Some(1000), Some(1000)).unwrap();
        fs::remove_file(m.target.join("etc/group")).unwrap();
        fs::remove_file(m.target.join("deep/a/b/gone")).unwrap();
        fs::remove_dir_all(m.target.join("replaced")).unwrap();
        fs::create_dir_all(m.target.join("replaced/sub")).unwrap();
        fs::write(m.target.join("replaced/new"), "new").unwrap();
    }
    snap.commit("top", "t").unwrap();
    let upper = snap.upper_dir("top").unwrap();
    let lower_dirs = lower_dirs_from_mounts(&snap.mounts("top").unwrap(), &upper);
    let mut out = Vec::new();
    let opts = DiffOptions {
        lower_dirs,
        ..Default::default()
    };
    write_diff_tar(&upper, &mut out, &opts).unwrap();
    // What a reader of the committed snapshot sees (a view stacks the layers).
    let view = snap.view("v", "top").unwrap();
    {
        let m = Mounted::new(&view, mnt.path(), "view");
        assert!(!m.target.join("etc/group").exists());
        assert!(!m.target.join("replaced/old").exists());
        assert_eq!(
            fs::read_to_string(m.target.join("replaced/new")).unwrap(),
            "new"
        );
        assert_eq!(
            fs::read_to_string(m.target.join("etc/passwd")).unwrap(),
            "root"
        );
        assert!(Path::new(&m.target.join("deep/a/b")).is_dir());
    }
    (tar_names(&out), out)
}

#[test]
fn a_copied_view_diffs_to_the_overlay_layer() {
    let (overlay_names, _) = scenario();
    snapshotter::set_mountless(true);
    let (copied_names, copied_tar) = scenario();
    assert_eq!(copied_names, overlay_names);
    assert!(copied_names.contains(&"etc/.wh.group".to_string()));
    assert!(copied_names.contains(&"etc/passwd".to_string()));
    assert!(!copied_names.contains(&"quiet/".to_string()));
    // The owner change is in the layer.
    let mut archive = tar::Archive::new(copied_tar.as_slice());
    let passwd = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("etc/passwd"))
        .unwrap();
    assert_eq!(passwd.header().uid().unwrap(), 1000);
}
