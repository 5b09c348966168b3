mod common;

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{tar_names, Mounted};
use snapshotter::layer::{apply_layer_tar, write_diff_tar, DiffOptions};
use snapshotter::{Error, Snapshotter};

fn diff(dir: &Path, opts: &DiffOptions) -> Vec<u8> {
    let mut out = Vec::new();
    write_diff_tar(dir, &mut out, opts).unwrap();
    out
}

fn set_mtime(path: &Path, secs: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[test]
fn diff_of_real_overlay_upper_has_whiteouts_and_opaque_markers() {
    let root = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    let base = snap.prepare("b", None).unwrap();
    {
        let m = Mounted::new(&base, mnt.path(), "base");
        fs::write(m.target.join("gone"), "x").unwrap();
        fs::create_dir_all(m.target.join("replaced/sub")).unwrap();
        fs::write(m.target.join("replaced/old"), "old").unwrap();
        fs::create_dir(m.target.join("kept")).unwrap();
    }
    snap.commit("base", "b").unwrap();
    let top = snap.prepare("t", Some("base")).unwrap();
    let long_name = "n".repeat(150);
    {
        let m = Mounted::new(&top, mnt.path(), "top");
        fs::remove_file(m.target.join("gone")).unwrap();
        fs::remove_dir_all(m.target.join("replaced")).unwrap();
        fs::create_dir(m.target.join("replaced")).unwrap();
        fs::write(m.target.join("replaced/new"), "new").unwrap();
        fs::write(m.target.join("kept").join(&long_name), "long").unwrap();
        rustix::fs::setxattr(
            m.target.join("replaced/new"),
            "user.note",
            b"hi",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    let upper = snap.upper_dir("t").unwrap();
    let data = diff(&upper, &DiffOptions::default());

    let names = tar_names(&data);
    let long_path = format!("kept/{long_name}");
    assert_eq!(
        names,
        vec![
            ".wh.gone",
            "kept/",
            long_path.as_str(),
            "replaced/",
            "replaced/.wh..wh..opq",
            "replaced/new"
        ]
    );
    // Dir names carry a trailing slash in the header, like Docker's layers.
    let mut archive = tar::Archive::new(data.as_slice());
    let mut user_xattr_in_layer = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() == tar::EntryType::Directory {
            assert!(entry.header().path_bytes().ends_with(b"/"));
        }
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let key = ext.unwrap().key().unwrap().to_string();
                assert!(!key.contains("trusted.overlay"), "{key}");
                // BuildKit's layers carry only security.capability, never user.* xattrs.
                user_xattr_in_layer |= key.starts_with("SCHILY.xattr.user.");
            }
        }
    }
    assert!(!user_xattr_in_layer);

    let tar_path = mnt.path().join("layer.tar");
    fs::write(&tar_path, &data).unwrap();
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(&tar_path)
        .output()
        .unwrap();
    assert!(listing.status.success(), "{listing:?}");
    let listing = String::from_utf8(listing.stdout).unwrap();
    for want in [
        ".wh.gone",
        "replaced/.wh..wh..opq",
        "replaced/new",
        "kept/",
        long_name.as_str(),
    ] {
        assert!(listing.contains(want), "missing {want} in:\n{listing}");
    }
}

/// A tree exercising every entry type and attribute we preserve.
fn build_rich_tree(dir: &Path) {
    fs::create_dir_all(dir.join("usr/bin")).unwrap();
    fs::write(dir.join("usr/bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
    // chown clears setuid, so it goes first.
    std::os::unix::fs::chown(dir.join("usr/bin/tool"), Some(1000), Some(1001)).unwrap();
    fs::set_permissions(dir.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(dir.join("usr/bin/tool"), dir.join("usr/bin/tool-link")).unwrap();
    symlink("tool", dir.join("usr/bin/alias")).unwrap();
    symlink("/etc/passwd", dir.join("abs-link")).unwrap();
    std::os::unix::fs::lchown(dir.join("abs-link"), Some(7), Some(8)).unwrap();
    fs::create_dir(dir.join("secret")).unwrap();
    fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(dir.join("secret"), Some(5), Some(6)).unwrap();
    fs::write(dir.join("secret/key"), vec![0xabu8; 5000]).unwrap();
    fs::set_permissions(dir.join("secret/key"), fs::Permissions::from_mode(0o600)).unwrap();
    let deep = dir
        .join("d".repeat(60))
        .join("e".repeat(60))
        .join("f".repeat(60));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("g".repeat(120)), "deep").unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    fs::set_permissions(dir.join("null"), fs::Permissions::from_mode(0o666)).unwrap();
    rustix::fs::setxattr(
        dir.join("usr/bin/tool"),
        "security.capability",
        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    // mtimes last, deepest first, since creating entries bumps dir mtimes.
    for (i, p) in [
        "usr/bin/tool",
        "usr/bin/alias",
        "abs-link",
        "secret/key",
        "fifo",
        "null",
        "secret",
        "usr/bin",
        "usr",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&dir.join(p), 1_600_000_000 + i as i64 * 1000);
    }
}

#[test]
fn apply_then_diff_round_trips_metadata_exactly() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src);
    let first = diff(&src, &DiffOptions::default());

    let dst = work.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let written = apply_layer_tar(first.as_slice(), &dst).unwrap();
    assert!(written >= 5000 + 4);
    let second = diff(&dst, &DiffOptions::default());
    assert!(first == second, "re-diffed layer differs from the original");

    let tool = fs::symlink_metadata(dst.join("usr/bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755);
    assert_eq!((tool.uid(), tool.gid()), (1000, 1001));
    assert_eq!(tool.mtime(), 1_600_000_000);
    assert_eq!(tool.nlink(), 2);
    assert_eq!(
        fs::symlink_metadata(dst.join("usr/bin/tool-link"))
            .unwrap()
            .ino(),
        tool.ino()
    );
    assert_eq!(
        fs::read_link(dst.join("abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    let link = fs::symlink_metadata(dst.join("abs-link")).unwrap();
    assert_eq!(
        (link.uid(), link.gid(), link.mtime()),
        (7, 8, 1_600_002_000)
    );
    let secret = fs::symlink_metadata(dst.join("secret")).unwrap();
    assert_eq!((secret.mode() & 0o7777, secret.uid()), (0o700, 5));
    assert_eq!(secret.mtime(), 1_600_006_000);
    let null = fs::symlink_metadata(dst.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert!(fs::symlink_metadata(dst.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());

    // /bin/tar agrees the archive is well formed.
    let tar_path = work.path().join("rich.tar");
    fs::write(&tar_path, &first).unwrap();
    let out = Command::new("tar")
        .arg("-tvf")
        .arg(&tar_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(
        listing.contains("usr/bin/tool-link link to usr/bin/tool"),
        "{listing}"
    );
    assert!(listing.contains(&"g".repeat(120)), "{listing}");
}

#[test]
fn mtime_clamp_caps_only_newer_times() {
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("old"), "o").unwrap();
    fs::write(work.path().join("new"), "n").unwrap();
    set_mtime(&work.path().join("old"), 1000);
    set_mtime(&work.path().join("new"), 2_000_000_000);
    let data = diff(
        work.path(),
        &DiffOptions {
            mtime_clamp: Some(5000),
            ..Default::default()
        },
    );
    let mut archive = tar::Archive::new(data.as_slice());
    let mtimes: Vec<(String, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().mtime().unwrap(),
            )
        })
        .collect();
    assert_eq!(mtimes, vec![("new".into(), 5000), ("old".into(), 1000)]);
}

#[test]
fn applied_whiteouts_hide_lower_files_in_an_overlay() {
    let root = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(root.path()).unwrap();
    let base = snap.prepare("b", None).unwrap();
    {
        let m = Mounted::new(&base, mnt.path(), "base");
        fs::write(m.target.join("gone"), "x").unwrap();
        fs::create_dir(m.target.join("dir")).unwrap();
        fs::write(m.target.join("dir/old"), "old").unwrap();
    }
    snap.commit("base", "b").unwrap();

    // A layer deleting `gone` and replacing `dir`, as another builder would ship it.
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        builder.append_data(&mut h, name, data).unwrap();
    };
    add(".wh.gone", tar::EntryType::Regular, b"");
    add("dir/", tar::EntryType::Directory, b"");
    add("dir/.wh..wh..opq", tar::EntryType::Regular, b"");
    add("dir/new", tar::EntryType::Regular, b"new");
    let layer = builder.into_inner().unwrap();

    snap.prepare("l2", Some("base")).unwrap();
    let dir = snap.upper_dir("l2").unwrap();
    apply_layer_tar(layer.as_slice(), &dir).unwrap();
    snap.commit("layer2", "l2").unwrap();

    let view = snap.view("v", "layer2").unwrap();
    let m = Mounted::new(&view, mnt.path(), "view");
    assert!(!m.target.join("gone").exists());
    assert!(!m.target.join("dir/old").exists());
    assert_eq!(fs::read_to_string(m.target.join("dir/new")).unwrap(), "new");
    drop(m);

    // Diffing the applied dir gives the same whiteouts back.
    let names = tar_names(&diff(&dir, &DiffOptions::default()));
    assert_eq!(
        names,
        vec!["dir/", "dir/.wh..wh..opq", "dir/new", ".wh.gone"]
    );
}

/// Appends an entry with a raw header name, bypassing the tar crate's path checks.
fn append_raw(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(0o755);
    h.set_size(data.len() as u64);
    let slot = &mut h.as_old_mut().name;
    slot[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        let slot = &mut h.as_old_mut().linkname;
        slot[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    builder.append(&h, data).unwrap();
}

#[test]
fn symlink_escape_is_rejected_and_writes_nothing_outside() {
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let dst = work.path().join("layer");
    fs::create_dir(&dst).unwrap();
    let outside_str = outside.to_str().unwrap();

    let mut b = tar::Builder::new(Vec::new());
    append_raw(&mut b, "a", tar::EntryType::Symlink, Some(outside_str), b"");
    append_raw(&mut b, "a/passwd", tar::EntryType::Regular, None, b"pwned");
    let err = apply_layer_tar(b.into_inner().unwrap().as_slice(), &dst).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // Same through a symlinked parent of a deeper path, a dir entry and a hardlink.
    for (name, kind, link) in [
        ("a/sub/file", tar::EntryType::Regular, None),
        ("a/newdir/", tar::EntryType::Directory, None),
        ("a/.wh.x", tar::EntryType::Regular, None),
        ("hl", tar::EntryType::Link, Some("a/victim")),
    ] {
        fs::write(outside.join("victim"), "v").unwrap();
        let dst = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        append_raw(&mut b, "a", tar::EntryType::Symlink, Some(outside_str), b"");
        append_raw(&mut b, name, kind, link, b"pwned");
        assert!(
            apply_layer_tar(b.into_inner().unwrap().as_slice(), dst.path()).is_err(),
            "{name}"
        );
        let names: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["victim"], "{name} wrote outside the layer");
        assert_eq!(
            fs::symlink_metadata(outside.join("victim"))
                .unwrap()
                .nlink(),
            1
        );
        fs::remove_file(outside.join("victim")).unwrap();
    }
}

#[test]
fn absolute_and_parent_paths_are_rejected() {
    for (name, kind, link) in [
        ("/abs", tar::EntryType::Regular, None),
        ("../up", tar::EntryType::Regular, None),
        ("ok/../../up", tar::EntryType::Regular, None),
        ("hl", tar::EntryType::Link, Some("../x")),
        ("hl", tar::EntryType::Link, Some("/etc/passwd")),
    ] {
        let work = tempfile::tempdir().unwrap();
        let dst = work.path().join("layer");
        fs::create_dir(&dst).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        append_raw(&mut b, name, kind, link, b"data");
        let err = apply_layer_tar(b.into_inner().unwrap().as_slice(), &dst).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{name}: {err}");
        assert!(!work.path().join("up").exists());
    }
}

/// Whiteouts naming `..` or `.` (`.wh...`, `.wh..`) or an opaque marker below a symlink must not
/// delete the layer's directory or anything beside it.
#[test]
fn whiteouts_of_dot_entries_delete_nothing_outside() {
    for (entries, what) in [
        (vec![".wh..."], "whiteout of .."),
        (vec!["sub/", "sub/.wh..."], "whiteout of .. in a subdir"),
        (vec![".wh.."], "whiteout of ."),
        (vec!["sub/", "sub/.wh.."], "whiteout of . in a subdir"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let dst = work.path().join("layer");
        fs::create_dir(&dst).unwrap();
        fs::write(work.path().join("beside"), "keep").unwrap();
        fs::write(dst.join("inside"), "keep").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for name in &entries {
            let kind = if name.ends_with('/') {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            };
            append_raw(&mut b, name, kind, None, b"");
        }
        let applied = apply_layer_tar(b.into_inner().unwrap().as_slice(), &dst);
        assert!(
            matches!(applied, Err(Error::Invalid(_))),
            "{what}: {applied:?}"
        );
        assert!(
            work.path().join("beside").exists(),
            "{what} deleted a sibling"
        );
        assert!(dst.join("inside").exists(), "{what} deleted the layer dir");
    }
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), "v").unwrap();
    let dst = work.path().join("layer");
    fs::create_dir(&dst).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let target = outside.to_str().unwrap();
    append_raw(&mut b, "a", tar::EntryType::Symlink, Some(target), b"");
    append_raw(&mut b, "a/.wh..wh..opq", tar::EntryType::Regular, None, b"");
    let _ = apply_layer_tar(b.into_inner().unwrap().as_slice(), &dst);
    assert!(
        outside.join("victim").exists(),
        "opaque marker emptied a dir outside"
    );
}

#[test]
fn garbage_input_is_an_error_not_a_panic() {
    let dst = tempfile::tempdir().unwrap();
    let garbage = vec![0x5au8; 4096];
    assert!(apply_layer_tar(garbage.as_slice(), dst.path()).is_err());
    let missing = dst.path().join("missing");
    assert!(apply_layer_tar(&[][..], &missing).is_err());
    assert!(write_diff_tar(&missing, Vec::new(), &DiffOptions::default()).is_err());
}
