//! Layer diffs written against the lower dirs, the way BuildKit's overlay differ writes
//! them: unchanged directories only as parents of changes, opaque directories as whiteouts.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{tar_names, Mounted};
use snapshotter::layer::{lower_dirs_from_mounts, write_diff_tar, DiffOptions};
use snapshotter::Snapshotter;

fn diff(upper: &Path, lower_dirs: Vec<std::path::PathBuf>) -> Vec<String> {
    let mut out = Vec::new();
    let opts = DiffOptions {
        lower_dirs,
        ..Default::default()
    };
    write_diff_tar(upper, &mut out, &opts).unwrap();
    tar_names(&out)
}

#[test]
fn unchanged_dirs_are_parents_only_and_opaque_dirs_become_whiteouts() {
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
    }
    snap.commit("base", "b").unwrap();
    let top = snap.prepare("t", Some("base")).unwrap();
    {
        let m = Mounted::new(&top, mnt.path(), "top");
        // Copied up and back to the same state: not a change.
        fs::write(m.target.join("quiet/tmp"), "t").unwrap();
        fs::remove_file(m.target.join("quiet/tmp")).unwrap();
        // A metadata change of a directory is one.
        fs::set_permissions(m.target.join("chmodded"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::remove_file(m.target.join("etc/group")).unwrap();
        fs::remove_file(m.target.join("deep/a/b/gone")).unwrap();
        fs::remove_dir_all(m.target.join("replaced")).unwrap();
        fs::create_dir_all(m.target.join("replaced/sub")).unwrap();
        fs::write(m.target.join("replaced/new"), "new").unwrap();
    }
    snap.commit("top", "t").unwrap();
    let upper = snap.upper_dir("top").unwrap();
    let lowers = lower_dirs_from_mounts(&snap.mounts("top").unwrap(), &upper);
    assert_eq!(lowers, [snap.upper_dir("base").unwrap()]);

    assert_eq!(
        diff(&upper, lowers),
        [
            "chmodded/",
            "deep/",
            "deep/a/",
            "deep/a/b/",
            "deep/a/b/.wh.gone",
            "etc/",
            "etc/.wh.group",
            "replaced/",
            // Ordered by the deleted name, as in BuildKit's walk.
            "replaced/new",
            "replaced/.wh.old",
            "replaced/sub/",
            "replaced/sub/.wh.x",
        ]
    );
    // Without the lowers, every upper entry and the opaque marker are written.
    assert_eq!(
        diff(&upper, Vec::new()),
        [
            "chmodded/",
            "deep/",
            "deep/a/",
            "deep/a/b/",
            "deep/a/b/.wh.gone",
            "etc/",
            "etc/.wh.group",
            "quiet/",
            "replaced/",
            "replaced/.wh..wh..opq",
            "replaced/new",
            "replaced/sub/",
        ]
    );
    // Lowers that are not all there fall back to that full diff.
    let missing = root.path().join("missing");
    assert!(diff(&upper, vec![missing]).contains(&"quiet/".to_string()));
}
