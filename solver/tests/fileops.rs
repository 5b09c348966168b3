//! COPY/ADD semantics of file ops, checked on the exported result trees.

mod support;

use solver::graph::{Chown, FileAction, FileOp};
use solver::{Definition, Op};
use std::os::unix::fs::MetadataExt;
use support::*;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn exclude_filters_like_dockerignore_relative_to_the_source_root() {
    let env = Env::new(&[
        ("a.txt", "a"),
        ("b.md", "b"),
        ("sub/c.txt", "c"),
        ("sub/d.md", "d"),
        ("vendor/x/y.go", "y"),
        ("vendor/keep.go", "k"),
    ]);
    let o = Copy {
        exclude: strings(&["*.md", "vendor", "!vendor/keep.go"]),
        ..Default::default()
    };
    let t = env.tree(&copy_from_context(&["."], "/out/", &o)).await;
    assert_eq!(
        listing(t.path()),
        [
            "out/",
            "out/a.txt",
            "out/sub/",
            "out/sub/c.txt",
            "out/sub/d.md",
            "out/vendor/",
            "out/vendor/keep.go"
        ]
    );
    // `**` spans directories; a wildcard source's own matches are filtered too, and
    // several sources copy directory contents (not the directories) into the destination.
    let o = Copy {
        exclude: strings(&["**/*.md", "a*"]),
        ..Default::default()
    };
    let t = env.tree(&copy_from_context(&["*", "sub"], "/o/", &o)).await;
    assert_eq!(
        listing(t.path()),
        ["o/", "o/c.txt", "o/keep.go", "o/x/", "o/x/y.go"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_exclude_pattern_is_a_clear_error() {
    let env = Env::new(&[("a", "a")]);
    let o = Copy {
        exclude: strings(&["ok", "[oops"]),
        ..Default::default()
    };
    let err = env
        .solve(&copy_from_context(&["."], "/", &o))
        .await
        .unwrap_err();
    assert!(
        err.contains("--exclude #2") && err.contains("unterminated"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn parents_keep_paths_below_the_root_or_the_pivot() {
    let env = Env::new(&[
        ("x/a.txt", "a"),
        ("y/b.txt", "b"),
        ("z/deep/er/c.txt", "c"),
        ("z/deep/er/d.txt", "d"),
    ]);
    let o = Copy {
        parents: true,
        ..Default::default()
    };
    let t = env
        .tree(&copy_from_context(
            &["x/a.txt", "y/*.txt", "z/./deep/er"],
            "/d",
            &o,
        ))
        .await;
    assert_eq!(
        listing(t.path()),
        [
            "d/",
            "d/deep/",
            "d/deep/er/",
            "d/deep/er/c.txt",
            "d/deep/er/d.txt",
            "d/x/",
            "d/x/a.txt",
            "d/y/",
            "d/y/b.txt"
        ]
    );
    // Without --parents the same sources flatten into the destination.
    let t = env
        .tree(&copy_from_context(
            &["x/a.txt", "y/*.txt"],
            "/d/",
            &Copy::default(),
        ))
        .await;
    assert_eq!(listing(t.path()), ["d/", "d/a.txt", "d/b.txt"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn symbolic_chmod_applies_to_everything_copied() {
    let env = Env::new(&[("dir/run.sh", "#!/bin/sh"), ("dir/data", "d")]);
    std::fs::set_permissions(
        env.ctx("dir/run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        env.ctx("dir/data"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let o = Copy {
        chmod: Some("go-w,a=rX,u+w".into()),
        ..Default::default()
    };
    let t = env.tree(&copy_from_context(&["dir"], "/d/", &o)).await;
    assert_eq!(mode(&t.path().join("d/run.sh")), 0o755);
    assert_eq!(mode(&t.path().join("d/data")), 0o644);
    let o = Copy {
        chmod: Some("0640".into()),
        ..Default::default()
    };
    let t = env.tree(&copy_from_context(&["dir/data"], "/f", &o)).await;
    assert_eq!(mode(&t.path().join("f")), 0o640);
    let o = Copy {
        chmod: Some("u+q".into()),
        ..Default::default()
    };
    let err = env
        .solve(&copy_from_context(&["dir"], "/d/", &o))
        .await
        .unwrap_err();
    assert!(err.contains("invalid --chmod=u+q"), "{err}");
}

/// Writes a tar of `files` with the system `tar`, owned by 1234:5678, then compresses it.
fn make_archive(dir: &std::path::Path, name: &str, compress: &str) {
    let src = dir.join("src");
    write(&src.join("top.txt"), "top");
    write(&src.join("sub/inner.txt"), "inner");
    set_mtime(&src.join("top.txt"), 1_000_000_000);
    sh(
        &format!(
            "tar -C src --owner=1234 --group=5678 --numeric-owner -cf {name}.tmp . && {compress} < {name}.tmp > {name} && rm {name}.tmp"
        ),
        dir,
    );
    std::fs::remove_dir_all(src).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unpack_extracts_every_compression_detected_by_content() {
    let mut env = Env::new(&[("existing/keep", "k")]);
    // Names deliberately lie about the format: detection is by magic bytes.
    let formats = [
        ("plain.bin", "cat"),
        ("gz.data", "gzip"),
        ("bz.data", "bzip2"),
        ("xz.data", "xz"),
        ("zst.data", "zstd -q"),
    ];
    for (name, compress) in formats {
        make_archive(env.ctx.path(), name, compress);
    }
    env.reopen();
    for (name, _) in formats {
        let o = Copy {
            unpack: true,
            ..Default::default()
        };
        let mut def = copy_from_context(&["existing"], "/dest/", &Copy::default());
        let base = def.output.unwrap();
        let f = def.add(vertex(
            Op::File(FileOp {
                actions: vec![copy_action(&[name], "/dest/", &o, 1)],
            }),
            vec![base, 1],
        ));
        def.output = Some(f);
        let t = env.tree(&def).await;
        assert_eq!(
            listing(t.path()),
            [
                "dest/",
                "dest/keep",
                "dest/sub/",
                "dest/sub/inner.txt",
                "dest/top.txt"
            ],
            "{name}"
        );
        let top = t.path().join("dest/top.txt");
        assert_eq!(std::fs::read_to_string(&top).unwrap(), "top");
        assert_eq!(owner(&top), (1234, 5678), "{name}: owner from the archive");
        assert_eq!(mtime(&top), 1_000_000_000, "{name}: mtime from the archive");
        assert_eq!(owner(&t.path().join("dest/keep")), (0, 0));
    }
    // --chown wins over the archive's owners.
    let o = Copy {
        unpack: true,
        chown: Some(Chown {
            user: "7".into(),
            group: Some("8".into()),
        }),
        ..Default::default()
    };
    let t = env.tree(&copy_from_context(&["gz.data"], "/x", &o)).await;
    assert_eq!(owner(&t.path().join("x/top.txt")), (7, 8));
}

#[tokio::test(flavor = "multi_thread")]
async fn unpack_copies_non_archives_as_they_are() {
    let env = Env::new(&[("notes.tar.gz", "just text")]);
    sh("echo hello | gzip > text.gz", env.ctx.path());
    let o = Copy {
        unpack: true,
        ..Default::default()
    };
    let t = env
        .tree(&copy_from_context(&["notes.tar.gz", "text.gz"], "/d/", &o))
        .await;
    assert_eq!(listing(t.path()), ["d/", "d/notes.tar.gz", "d/text.gz"]);
    assert_eq!(
        std::fs::read(t.path().join("d/text.gz")).unwrap(),
        std::fs::read(env.ctx("text.gz")).unwrap()
    );
}

/// Appends a raw entry to a tar builder, bypassing the tar crate's path checks.
fn raw_entry(
    b: &mut tar::Builder<std::fs::File>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let raw = h.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unpack_never_writes_outside_the_root() {
    let env = Env::new(&[]);
    let outside = tempfile::tempdir().unwrap();
    let outside_path = outside.path().to_string_lossy().to_string();
    let file = std::fs::File::create(env.ctx("evil.tar")).unwrap();
    let mut b = tar::Builder::new(file);
    use tar::EntryType::*;
    raw_entry(&mut b, "../../../../escape1", Regular, "", b"1");
    raw_entry(
        &mut b,
        &format!("{outside_path}/escape2"),
        Regular,
        "",
        b"2",
    );
    raw_entry(&mut b, "abs", Symlink, &outside_path, b"");
    raw_entry(&mut b, "abs/escape3", Regular, "", b"3");
    raw_entry(&mut b, "up", Symlink, "../../../../../../..", b"");
    raw_entry(
        &mut b,
        &format!("up{outside_path}/escape4"),
        Regular,
        "",
        b"4",
    );
    raw_entry(&mut b, "hard", Link, "../../../../etc/hostname", b"");
    b.finish().unwrap();
    drop(b);
    let o = Copy {
        unpack: true,
        ..Default::default()
    };
    let def = copy_from_context(&["evil.tar"], "/x/", &o);
    let res = env.solve(&def).await;
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing may be written outside the root"
    );
    // The hardlink points at a file that is not in the root: a clear failure.
    let err = res.unwrap_err();
    assert!(
        err.contains("hard") && err.contains("extracting evil.tar"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unpack_keeps_escaping_entries_inside_the_root() {
    let env = Env::new(&[]);
    let outside = tempfile::tempdir().unwrap();
    let outside_path = outside.path().to_string_lossy().to_string();
    let file = std::fs::File::create(env.ctx("evil.tar")).unwrap();
    let mut b = tar::Builder::new(file);
    use tar::EntryType::*;
    raw_entry(&mut b, "../../../../escape1", Regular, "", b"1");
    raw_entry(
        &mut b,
        &format!("{outside_path}/escape2"),
        Regular,
        "",
        b"2",
    );
    raw_entry(&mut b, "abs", Symlink, &outside_path, b"");
    raw_entry(&mut b, "abs/escape3", Regular, "", b"3");
    raw_entry(&mut b, "up", Symlink, "../../../../../../..", b"");
    raw_entry(
        &mut b,
        &format!("up{outside_path}/escape4"),
        Regular,
        "",
        b"4",
    );
    raw_entry(&mut b, "hard", Link, "../../escape1", b"");
    b.finish().unwrap();
    drop(b);
    let o = Copy {
        unpack: true,
        ..Default::default()
    };
    let t = env.tree(&copy_from_context(&["evil.tar"], "/x/", &o)).await;
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let rel = outside_path.trim_start_matches('/');
    let inside = t.path();
    // `..` is clamped at the destination; absolute names and symlinks resolve in the root.
    assert_eq!(
        std::fs::read_to_string(inside.join("x/escape1")).unwrap(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string(inside.join(format!("x/{rel}/escape2"))).unwrap(),
        "2"
    );
    assert_eq!(
        std::fs::read_to_string(inside.join(format!("{rel}/escape3"))).unwrap(),
        "3"
    );
    assert_eq!(
        std::fs::read_to_string(inside.join(format!("{rel}/escape4"))).unwrap(),
        "4"
    );
    let a = std::fs::metadata(inside.join("x/escape1")).unwrap();
    let h = std::fs::metadata(inside.join("x/hard")).unwrap();
    assert_eq!(a.ino(), h.ino(), "hardlink kept inside the archive");
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_through_a_malicious_symlink_in_the_image_stays_in_the_root() {
    let outside = tempfile::tempdir().unwrap();
    let env = Env::new(&[("payload", "p"), ("links/.keep", "")]);
    std::os::unix::fs::symlink(outside.path(), env.ctx("links/evil")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../..", env.ctx("links/up")).unwrap();
    // Step 1 puts the symlinks into the image; step 2 copies through them.
    let mut def = copy_from_context(&["links"], "/", &Copy::default());
    let base = def.output.unwrap();
    let f = def.add(vertex(
        Op::File(FileOp {
            actions: vec![
                copy_action(&["payload"], "/evil/", &Copy::default(), 1),
                copy_action(&["payload"], "/up/up/landed", &Copy::default(), 1),
            ],
        }),
        vec![base, 1],
    ));
    def.output = Some(f);
    let t = env.tree(&def).await;
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let rel = outside
        .path()
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string();
    assert_eq!(
        std::fs::read_to_string(t.path().join(rel).join("payload")).unwrap(),
        "p"
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("landed")).unwrap(),
        "p"
    );
    assert!(std::fs::symlink_metadata(t.path().join("evil"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_preserves_owners_modes_times_xattrs_links() {
    let env = Env::new(&[("d/file", "content"), ("d/sub/x", "x")]);
    let d = env.ctx("d");
    std::fs::hard_link(d.join("file"), d.join("file2")).unwrap();
    std::os::unix::fs::symlink("../../../etc/passwd", d.join("link")).unwrap();
    rustix::fs::lsetxattr(
        d.join("file"),
        "user.note",
        b"hello",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::set_permissions(
        d.join("sub/x"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4750),
    )
    .unwrap();
    set_mtime(&d.join("file"), 1_234_567_890);
    set_mtime(&d.join("sub"), 1_111_111_111);
    // Step 1 (from the context) sets an owner; step 2 copies step 1's tree and must keep it all.
    let o = Copy {
        chown: Some(Chown {
            user: "1001".into(),
            group: Some("1002".into()),
        }),
        ..Default::default()
    };
    let mut def = copy_from_context(&["d"], "/d/", &o);
    let first = def.output.unwrap();
    let scratch = def.add(vertex(Op::Scratch, vec![]));
    let second = def.add(vertex(
        Op::File(FileOp {
            actions: vec![copy_action(&["/d"], "/copy/", &Copy::default(), 1)],
        }),
        vec![scratch, first],
    ));
    def.output = Some(second);
    let t = env.tree(&def).await;
    let c = t.path().join("copy");
    assert_eq!(listing(&c), ["file", "file2", "link", "sub/", "sub/x"]);
    assert_eq!(owner(&c.join("file")), (1001, 1002));
    assert_eq!(owner(&c.join("link")), (1001, 1002));
    assert_eq!(mode(&c.join("sub/x")), 0o4750, "set-id bit survives chown");
    assert_eq!(mtime(&c.join("file")), 1_234_567_890);
    assert_eq!(mtime(&c.join("sub")), 1_111_111_111);
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(c.join("file"), "user.note", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(
        std::fs::metadata(c.join("file")).unwrap().ino(),
        std::fs::metadata(c.join("file2")).unwrap().ino(),
        "hardlinks within one copy stay hardlinks"
    );
    assert_eq!(
        std::fs::read_link(c.join("link"))
            .unwrap()
            .to_string_lossy(),
        "../../../etc/passwd"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mkfile_and_mkdir_still_work_next_to_copies() {
    let env = Env::new(&[("a", "a")]);
    let mut def = Definition::default();
    let s = def.add(vertex(Op::Scratch, vec![]));
    let c = def.add(vertex(
        Op::Local {
            name: "context".into(),
        },
        vec![],
    ));
    let f = def.add(vertex(
        Op::File(FileOp {
            actions: vec![
                FileAction::Mkdir {
                    path: "/m/n".into(),
                    mode: 0o700,
                    chown: None,
                },
                FileAction::Mkfile {
                    path: "/m/n/f".into(),
                    data: b"x".to_vec(),
                    mode: 0o600,
                    chown: None,
                },
                copy_action(&["a"], "/m/n/", &Copy::default(), 1),
            ],
        }),
        vec![s, c],
    ));
    def.output = Some(f);
    let t = env.tree(&def).await;
    assert_eq!(listing(t.path()), ["m/", "m/n/", "m/n/a", "m/n/f"]);
    assert_eq!(mode(&t.path().join("m/n")), 0o700);
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_an_excluded_file_keeps_the_cache() {
    let mut env = Env::new(&[("app/main.rs", "fn main() {}"), ("app/notes.md", "v1")]);
    let o = Copy {
        exclude: strings(&["**/*.md"]),
        ..Default::default()
    };
    let def = copy_from_context(&["app"], "/app/", &o);
    assert_eq!(env.solve(&def).await.unwrap().executed, 1);
    write(&env.ctx("app/notes.md"), "v2");
    env.reopen();
    assert_eq!(env.solve(&def).await.unwrap().executed, 0, "excluded edit");
    write(&env.ctx("app/main.rs"), "fn main() { changed() }");
    env.reopen();
    assert_eq!(env.solve(&def).await.unwrap().executed, 1, "included edit");
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_into_new_and_existing_dirs_on_a_base_combine() {
    let env = Env::new(&[("a", "a"), ("d/x", "x"), ("d/sub/y", "y")]);
    let mut def = copy_from_context(&["a"], "/base/", &Copy::default());
    let base = def.output.unwrap();
    let f = def.add(vertex(
        Op::File(FileOp {
            actions: vec![
                // A new directory (filled through the snapshot's upper dir)...
                copy_action(&["d"], "/fresh/", &Copy::default(), 1),
                // ...then read back and extended by later actions of the same op.
                copy_action(&["a"], "/fresh/sub/", &Copy::default(), 1),
                copy_action(&["d"], "/base/", &Copy::default(), 1),
                copy_action(&["d"], "/fresh/", &Copy::default(), 1),
            ],
        }),
        vec![base, 1],
    ));
    def.output = Some(f);
    let t = env.tree(&def).await;
    assert_eq!(
        listing(t.path()),
        [
            "base/",
            "base/a",
            "base/sub/",
            "base/sub/y",
            "base/x",
            "fresh/",
            "fresh/sub/",
            "fresh/sub/a",
            "fresh/sub/y",
            "fresh/x"
        ]
    );
    assert_eq!(owner(&t.path().join("fresh/sub/y")), (0, 0));
}
