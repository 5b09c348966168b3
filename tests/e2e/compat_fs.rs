//! Filesystem results compared with BuildKit's: what COPY, ADD, RUN and
//! .dockerignore leave in the image, checked in the layer tars with GNU tar.

use crate::common::*;
use std::path::Path;
use std::process::Command;

/// One layer entry as `tar --numeric-owner -tv` lists it.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// e.g. `-rwsr-xr-x`, `drwxr-xr-x`, `lrwxrwxrwx`, `hrw-r--r--`
    perms: String,
    /// `uid/gid`
    owner: String,
    /// Seconds since the epoch.
    mtime: i64,
    name: String,
    /// Symlink target or hardlink source.
    link: Option<String>,
}

/// A built image: its layer tars (base first), extracted from the OCI archive.
struct Image {
    _dir: tempfile::TempDir,
    layers: Vec<std::path::PathBuf>,
}

impl Image {
    /// The entries of layer `i` (0 = the base image's).
    fn entries(&self, i: usize) -> Vec<Entry> {
        let out = Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvf"])
            .arg(&self.layers[i])
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert!(out.status.success(), "tar: {}", stderr(&out));
        stdout(&out).lines().map(parse_tar_line).collect()
    }

    /// Names in layer `i`, as tar lists them (directories end in `/`).
    fn names(&self, i: usize) -> Vec<String> {
        self.entries(i).into_iter().map(|e| e.name).collect()
    }

    fn entry(&self, i: usize, name: &str) -> Entry {
        self.entries(i)
            .into_iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} not in layer {i}: {:?}", self.names(i)))
    }

    fn top(&self) -> usize {
        self.layers.len() - 1
    }

    /// The raw bytes of layer `i`, decompressed.
    fn raw(&self, i: usize) -> Vec<u8> {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(&self.layers[i])
            .output()
            .unwrap();
        assert!(out.status.success(), "gzip: {}", stderr(&out));
        out.stdout
    }

    /// The contents of file `name` in layer `i`.
    fn file(&self, i: usize, name: &str) -> String {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(&self.layers[i])
            .arg(name)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        stdout(&out)
    }
}

fn parse_tar_line(line: &str) -> Entry {
    // -rw-r--r-- 0/0  3 2026-11-23 18:46:12 name[ -> target| link to source]
    let mut fields = line.split_whitespace();
    let perms = fields.next().unwrap().to_string();
    let owner = fields.next().unwrap().to_string();
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        rest = &rest[rest.find(' ').unwrap()..];
    }
    let _size = fields.next();
    let date = fields.next().unwrap();
    let time = fields.next().unwrap();
    let date_out = Command::new("date")
        .args(["-u", "-d", &format!("{date} {time}"), "+%s"])
        .output()
        .unwrap();
    let mtime = stdout(&date_out).trim().parse().unwrap();
    let rest = rest.trim_start();
    let (name, link) = if let Some((n, l)) = rest.split_once(" -> ") {
        (n, Some(l.to_string()))
    } else if let Some((n, l)) = rest.split_once(" link to ") {
        (n, Some(l.to_string()))
    } else {
        (rest, None)
    };
    Entry {
        perms,
        owner,
        mtime,
        name: name.to_string(),
        link,
    }
}

/// Builds `ctx` to an OCI archive and unpacks the archive's layout.
fn build_image(store: &Store, ctx: &Path, extra: &[&str]) -> Image {
    let image = build_oci_image(store, ctx, extra);
    Image {
        _dir: image.dir,
        layers: image.layers,
    }
}

fn started(out: &std::process::Output, needle: &str) -> usize {
    events(out)
        .iter()
        .filter(|e| e["event"] == "started")
        .filter(|e| e["name"].as_str().is_some_and(|n| n.contains(needle)))
        .count()
}

#[test]
fn copy_follows_symlinks_in_the_source_path_and_rebuilds_when_the_target_changes() {
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY linkdir/a.txt /one\nCOPY linkdir /all/\nCOPY linkdir/*.txt /glob/\nCOPY file-link /named\n",
        ),
        ("real/a.txt", "a"),
        ("real/b.txt", "b"),
    ]);
    std::os::unix::fs::symlink("real", ctx.path().join("linkdir")).unwrap();
    std::os::unix::fs::symlink("real/a.txt", ctx.path().join("file-link")).unwrap();
    let image = build_image(&store, ctx.path(), &[]);
    // BuildKit follows the symlink: contents of the target, under the name written.
    assert_eq!(image.names(1), ["one"]);
    assert_eq!(image.names(2), ["all/", "all/a.txt", "all/b.txt"]);
    assert_eq!(image.names(3), ["glob/", "glob/a.txt", "glob/b.txt"]);
    assert_eq!(image.names(4), ["named"]);
    assert_eq!(image.entry(4, "named").perms, "-rw-r--r--");
    assert_eq!(image.file(4, "named"), "a");

    // The cache key covers what the link points at, not just the link.
    std::fs::write(ctx.path().join("real/b.txt"), "changed").unwrap();
    let out = store.build(ctx.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(started(&out, "COPY linkdir/a.txt"), 0);
    assert_eq!(started(&out, "COPY linkdir /all/"), 1);
    assert_eq!(started(&out, "COPY linkdir/*.txt"), 1);
}

#[test]
fn dockerignore_matches_parents_at_any_depth_and_dockerfile_specific_file_wins() {
    let store = Store::with_busybox();
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
        // Would drop everything but the Dockerfile; Dockerfile.dockerignore takes precedence.
        (".dockerignore", "*\n!Dockerfile\n"),
        (
            "Dockerfile.dockerignore",
            "\u{feff}**/cache\n  # indented comment\n[!x]y\nDockerfile*\n\
             node_modules\n!**/package.json\nvendor\n!vendor/keep.txt\n",
        ),
        // An excluded dir is walked only for exceptions that name a path below it.
        ("node_modules/m/package.json", "x"),
        ("package.json", "x"),
        ("vendor/keep.txt", "x"),
        ("vendor/drop.txt", "x"),
        ("a/b/cache/deep/file", "x"),
        ("cache/top", "x"),
        ("keep/me", "x"),
        // Docker's `[!x]` is the class {'!', 'x'}, not a negation.
        ("xy", "x"),
        ("!y", "x"),
        ("zy", "x"),
    ]);
    let image = build_image(&store, ctx.path(), &[]);
    let names = image.names(1);
    assert_eq!(
        names,
        [
            "ctx/",
            "ctx/.dockerignore",
            "ctx/a/",
            "ctx/a/b/",
            "ctx/keep/",
            "ctx/keep/me",
            "ctx/package.json",
            "ctx/vendor/",
            "ctx/vendor/keep.txt",
            "ctx/zy",
        ],
        "{names:?}"
    );
}

#[test]
fn layers_keep_file_capabilities_but_not_user_xattrs() {
    let store = Store::with_busybox();
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY tool note /\n"),
        ("tool", "#!/bin/sh\n"),
        ("note", "n"),
    ]);
    // A v2 capability set: cap_net_bind_service (bit 10) permitted and effective.
    let cap: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    set_xattr(&ctx.path().join("tool"), "security.capability", &cap);
    set_xattr(&ctx.path().join("note"), "user.comment", b"hello");
    let image = build_image(&store, ctx.path(), &[]);
    let raw = image.raw(1);
    let has = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"SCHILY.xattr.security.capability="));
    assert!(!has(b"SCHILY.xattr.user.comment"));
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setting {name} on {}: {e}", path.display()));
}

#[test]
fn run_layers_hold_only_changes_with_parents_and_whiteouts_like_buildkit() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN mkdir -p /data/keep /data/old/sub && echo 1 > /data/old/sub/f && echo k > /data/keep/k\n\
         RUN true\n\
         RUN touch /etc/scratch && rm /etc/scratch\n\
         RUN rm -rf /data/old && mkdir /data/old && echo new > /data/old/new\n\
         RUN rm /data/keep/k && chmod 4755 /bin/busybox && touch -d @1000000000 /etc/group\n\
         RUN echo made > /hl && ln /hl /hl2\n",
    )]);
    let image = build_image(&store, ctx.path(), &[]);
    let top = image.top();
    assert_eq!(top, 6, "one layer per RUN, changed or not");
    assert_eq!(
        image.names(1),
        [
            "data/",
            "data/keep/",
            "data/keep/k",
            "data/old/",
            "data/old/sub/",
            "data/old/sub/f"
        ]
    );
    // A RUN that changes nothing, or puts things back, leaves an empty layer.
    assert!(image.names(2).is_empty());
    assert!(image.names(3).is_empty(), "{:?}", image.names(3));
    // A directory removed and made again is written as whiteouts of what it hid,
    // not as an opaque marker; unchanged parents appear only above changes.
    assert_eq!(
        image.names(4),
        ["data/", "data/old/", "data/old/new", "data/old/.wh.sub"]
    );
    assert_eq!(
        image.names(5),
        [
            "bin/",
            "bin/busybox",
            "data/",
            "data/keep/",
            "data/keep/.wh.k",
            "etc/",
            "etc/group"
        ]
    );
    assert_eq!(image.entry(5, "bin/busybox").perms, "-rwsr-xr-x");
    // Whiteouts are plain USTAR entries: Go drops the access and change times containerd
    // sets on them, since no format is asked for.
    let raw = image.raw(5);
    assert!(raw.windows(14).any(|w| w == b"data/keep/.wh."));
    assert!(!raw.windows(12).any(|w| w == b"PaxHeaders.0"));
    assert_eq!(image.entry(5, "etc/group").mtime, 1_000_000_000);
    let hl2 = image.entry(6, "hl2");
    assert!(hl2.perms.starts_with('h'), "{hl2:?}");
    assert_eq!(hl2.link.as_deref(), Some("hl"));
    assert_eq!(image.file(6, "hl"), "made\n");
}

#[test]
fn copy_keeps_links_modes_and_times_and_makes_dest_dirs_like_buildkit() {
    use std::os::unix::fs::PermissionsExt;
    let store = Store::with_busybox();
    let long = "n".repeat(120);
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             COPY tree /new\n\
             COPY tree/sub /etc/\n\
             WORKDIR /app\n\
             COPY one two .\n\
             COPY jars/*.jar app.jar\n\
             COPY nothing-matches-* /none/\n",
        ),
        ("tree/file", "f"),
        ("tree/sub/x", "x"),
        (&format!("tree/{long}"), "long"),
        ("tree/sp ace ü.txt", "u"),
        ("one", "1"),
        ("two", "2"),
        ("jars/a-1.jar", "first"),
        ("jars/a-2.jar", "last"),
    ]);
    let tree = ctx.path().join("tree");
    std::os::unix::fs::symlink("file", tree.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/nowhere", tree.join("dangling")).unwrap();
    std::fs::hard_link(tree.join("file"), tree.join("hard")).unwrap();
    std::fs::create_dir(tree.join("empty")).unwrap();
    std::fs::set_permissions(tree.join("file"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(tree.join("empty"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(tree.join("sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o700)).unwrap();
    let t = |secs: i64| rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    let set_time = |p: &Path, secs: i64| {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &t(secs),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap()
    };
    set_time(&tree.join("file"), 1_500_000_000);
    set_time(&tree.join("rel-link"), 1_400_000_000);
    set_time(&tree.join("sub"), 1_300_000_000);
    set_time(&tree, 1_200_000_000);
    let image = build_image(&store, ctx.path(), &[]);

    let new = image.entries(1);
    let names: Vec<&str> = new.iter().map(|e| e.name.as_str()).collect();
    let long_name = format!("new/{long}");
    assert_eq!(
        names,
        [
            "new/",
            "new/dangling",
            "new/empty/",
            "new/file",
            "new/hard",
            long_name.as_str(),
            "new/rel-link",
            "new/sp ace ü.txt",
            "new/sub/",
            "new/sub/x"
        ]
    );
    // The destination dir is made (0755, now), not a copy of the source dir's mode and time.
    let dest = image.entry(1, "new/");
    assert_eq!(
        (dest.perms.as_str(), dest.owner.as_str()),
        ("drwxr-xr-x", "0/0")
    );
    assert!(dest.mtime > 1_600_000_000);
    // Below it, entries keep their modes and times, links stay links.
    let file = image.entry(1, "new/file");
    assert_eq!(
        (file.perms.as_str(), file.mtime),
        ("-rwsr-xr-x", 1_500_000_000)
    );
    assert_eq!(image.entry(1, "new/hard").link.as_deref(), Some("new/file"));
    let link = image.entry(1, "new/rel-link");
    assert_eq!(
        (link.link.as_deref(), link.mtime),
        (Some("file"), 1_400_000_000)
    );
    assert_eq!(
        image.entry(1, "new/dangling").link.as_deref(),
        Some("/nowhere")
    );
    assert_eq!(image.entry(1, "new/empty/").perms, "drwxrwxrwt");
    assert_eq!(image.entry(1, "new/sub/").mtime, 1_300_000_000);
    // Copying a dir's contents onto an existing dir leaves that dir's mode alone.
    assert_eq!(image.entry(2, "etc/").perms, "drwxr-xr-x");
    assert_eq!(image.names(2), ["etc/", "etc/x"]);
    // `.` names a directory; several wildcard matches onto one file name: the last wins.
    assert_eq!(image.names(4), ["app/", "app/one", "app/two"]);
    assert_eq!(image.names(5), ["app/", "app/app.jar"]);
    assert_eq!(image.file(5, "app/app.jar"), "last");
    // A wildcard that matches nothing copies nothing, without an error.
    assert!(image.names(6).is_empty());
}

#[test]
fn add_extracts_local_archives_keeping_their_modes_and_times() {
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             ADD a.tar.gz /gz/\n\
             ADD a.tar.xz a.tar.bz2 /xzbz/\n\
             ADD a.tar.zst /zst/\n\
             ADD plain.gz /plain/\n\
             ADD --chown=7:8 --chmod=600 implied.tar /owned/\n",
        ),
        ("src/dir/f", "in archive"),
        ("plain", "not a tar"),
    ]);
    let dir = ctx.path();
    let run = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    run(&["chmod", "0750", "src/dir"]);
    run(&["chmod", "0604", "src/dir/f"]);
    run(&["touch", "-d", "@1234567890", "src/dir/f", "src/dir"]);
    run(&[
        "tar",
        "-C",
        "src",
        "--owner=3",
        "--group=4",
        "-czf",
        "a.tar.gz",
        ".",
    ]);
    run(&["tar", "-C", "src", "-cJf", "a.tar.xz", "dir"]);
    run(&["tar", "-C", "src", "-cjf", "a.tar.bz2", "dir"]);
    run(&["tar", "-C", "src", "--zstd", "-cf", "a.tar.zst", "dir"]);
    run(&["tar", "-C", "src", "-cf", "implied.tar", "dir/f"]);
    run(&["gzip", "-k", "plain"]);
    let image = build_image(&store, ctx.path(), &[]);

    // Entries keep the archive's owner, mode and time; "./" leaves the made dest alone.
    let f = image.entry(1, "gz/dir/f");
    assert_eq!(
        (f.perms.as_str(), f.owner.as_str(), f.mtime),
        ("-rw----r--", "3/4", 1_234_567_890)
    );
    let d = image.entry(1, "gz/dir/");
    assert_eq!((d.perms.as_str(), d.mtime), ("drwxr-x---", 1_234_567_890));
    assert_eq!(image.entry(1, "gz/").perms, "drwxr-xr-x");
    assert_eq!(image.file(1, "gz/dir/f"), "in archive");
    assert_eq!(image.names(2), ["xzbz/", "xzbz/dir/", "xzbz/dir/f"]);
    assert_eq!(image.names(3), ["zst/", "zst/dir/", "zst/dir/f"]);
    // A compressed file that is not a tar is copied as it is.
    assert_eq!(image.names(4), ["plain/", "plain/plain.gz"]);
    // --chown applies to extracted entries, --chmod does not; directories the
    // archive only implies are made 0755 and owned by root.
    let owned = image.entry(5, "owned/dir/f");
    assert_eq!(
        (owned.perms.as_str(), owned.owner.as_str()),
        ("-rw----r--", "7/8")
    );
    let implied = image.entry(5, "owned/dir/");
    assert_eq!(
        (implied.perms.as_str(), implied.owner.as_str()),
        ("drwxr-xr-x", "0/0")
    );
    assert_eq!(image.entry(5, "owned/").owner, "7/8");
}

#[test]
fn copy_chmod_also_sets_the_directories_the_copy_makes() {
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             COPY --chmod=640 f /made/deep/\n\
             COPY --chmod=750 tree /treedest\n\
             COPY f /plain/dir/\n",
        ),
        ("f", "f"),
        ("tree/sub/x", "x"),
    ]);
    let image = build_image(&store, ctx.path(), &[]);
    // Made parents take the --chmod mode (BuildKit since fsutil's parent-chmod fix)...
    assert_eq!(image.entry(1, "made/").perms, "drw-r-----");
    assert_eq!(image.entry(1, "made/deep/").perms, "drw-r-----");
    assert_eq!(image.entry(1, "made/deep/f").perms, "-rw-r-----");
    assert_eq!(image.entry(2, "treedest/").perms, "drwxr-x---");
    assert_eq!(image.entry(2, "treedest/sub/").perms, "drwxr-x---");
    assert_eq!(image.entry(2, "treedest/sub/x").perms, "-rwxr-x---");
    // ...and 0755 without it.
    assert_eq!(image.entry(3, "plain/").perms, "drwxr-xr-x");
    assert_eq!(image.entry(3, "plain/dir/").perms, "drwxr-xr-x");
}

#[test]
fn layer_headers_are_laid_out_like_go_archive_tar() {
    let store = Store::with_busybox();
    let deep = format!("{}/file", "d".repeat(110));
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY f ü.txt /\nCOPY deep /deep/\n",
        ),
        ("f", "f"),
        ("ü.txt", "u"),
        (&format!("deep/{deep}"), "x"),
    ]);
    let image = build_image(&store, ctx.path(), &[]);
    let raw = image.raw(1);
    // "f": plain USTAR; numeric fields zero-padded with a NUL, devmajor/devminor
    // written, checksum as six digits, NUL, space; no user or group names.
    let f = &raw[..512];
    assert_eq!(&f[..2], b"f\0");
    assert_eq!(&f[100..108], b"0000644\0");
    assert_eq!(&f[257..265], b"ustar\x0000");
    assert_eq!(&f[329..345], b"0000000\x000000000\0");
    assert_eq!(&f[154..156], b"\0 ");
    assert!(f[265..329].iter().all(|b| *b == 0));
    // "ü.txt": a PAX header named PaxHeaders.0/<ASCII part> carries the real path.
    let pax = &raw[1024..1536];
    assert_eq!(&pax[..18], b"PaxHeaders.0/.txt\0");
    assert_eq!(pax[156], b'x');
    let record = "15 path=ü.txt\n";
    assert_eq!(&raw[1536..1536 + record.len()], record.as_bytes());
    // A long ASCII path that splits into prefix and name needs no PAX header.
    let names = image.names(2);
    assert!(names.contains(&format!("deep/{deep}")), "{names:?}");
    let raw = image.raw(2);
    assert!(!raw.windows(12).any(|w| w == b"PaxHeaders.0"));
}

#[test]
fn local_output_gives_files_to_the_receiving_user_and_keeps_modes_and_times() {
    use std::os::unix::fs::MetadataExt;
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY --chown=1234:5678 f /owned/f\nRUN chmod 4755 /owned/f\n",
        ),
        ("f", "f"),
    ]);
    let filetime = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        ctx.path().join("f"),
        &filetime,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", dest.path().display());
    let out = store.build(ctx.path(), &["-o", &out_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::symlink_metadata(dest.path().join("owned/f")).unwrap();
    let me = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    assert_eq!((md.uid(), md.gid()), me);
    assert_eq!(md.mode() & 0o7777, 0o4755);
    assert_eq!(md.mtime(), 1_500_000_000);
    // The image itself keeps the owner.
    let image = build_image(&store, ctx.path(), &[]);
    assert_eq!(image.entry(2, "owned/f").owner, "1234/5678");
}

#[test]
fn tar_output_is_laid_out_like_buildkits_tar_exporter() {
    let store = Store::with_busybox();
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY tree /\n"),
        ("tree/d/f", "f"),
        ("tree/late", "l"),
    ]);
    std::fs::hard_link(ctx.path().join("tree/d/f"), ctx.path().join("tree/d/g")).unwrap();
    // Go rounds header times to the nearest second when no format is asked for.
    let late = rustix::fs::Timespec {
        tv_sec: 1_600_000_000,
        tv_nsec: 700_000_000,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        ctx.path().join("tree/late"),
        &rustix::fs::Timestamps {
            last_access: late,
            last_modification: late,
        },
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("rootfs.tar");
    let out_arg = format!("type=tar,dest={}", tar_path.display());
    let out = store.build(ctx.path(), &["-o", &out_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = Command::new("tar")
        .args(["--numeric-owner", "--full-time", "-tvf"])
        .arg(&tar_path)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let entries: Vec<Entry> = stdout(&listing).lines().map(parse_tar_line).collect();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["d/", "d/f", "d/g", "late"]);
    assert_eq!(
        entries[2].link.as_deref(),
        Some("d/f"),
        "hard links stay links"
    );
    assert_eq!(entries[3].mtime, 1_600_000_001);
    // Modes carry no file-type bits (Go's FileInfoHeader), unlike a tar of st_mode.
    let raw = std::fs::read(&tar_path).unwrap();
    assert_eq!(&raw[100..108], b"0000755\0");
}

#[test]
fn hard_links_are_kept_within_one_copy_source_only() {
    let store = Store::with_busybox();
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY a b /two/\nCOPY d /one/\n"),
        ("a", "same inode"),
        ("d/x", "linked"),
    ]);
    std::fs::hard_link(ctx.path().join("a"), ctx.path().join("b")).unwrap();
    std::fs::hard_link(ctx.path().join("d/x"), ctx.path().join("d/y")).unwrap();
    let image = build_image(&store, ctx.path(), &[]);
    // Two sources are two copies in BuildKit, so their files are not linked...
    let b = image.entry(1, "two/b");
    assert!(b.perms.starts_with('-') && b.link.is_none(), "{b:?}");
    assert_eq!(image.file(1, "two/b"), "same inode");
    // ...while links inside one source stay links.
    assert_eq!(image.entry(2, "one/y").link.as_deref(), Some("one/x"));
}

/// The `stat -c '%n %h'` lines every RUN of a build printed, sorted.
fn link_counts(out: &std::process::Output) -> Vec<String> {
    let mut lines: Vec<String> = events(out)
        .iter()
        .filter(|e| e["event"] == "log")
        .flat_map(|e| {
            let data = e["data"].as_str().unwrap_or_default().to_string();
            data.lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn shared_copies_show_the_contexts_link_counts_inside_run() {
    let store = Store::with_busybox();
    let ctx = context(&[("d/f", "plain"), ("d/g", "linked")]);
    std::fs::hard_link(ctx.path().join("d/g"), ctx.path().join("d/g2")).unwrap();
    let mut want: Vec<String> = ["x", "x", "y", "z"]
        .iter()
        .flat_map(|d| {
            [
                format!("/{d}/f 1"),
                format!("/{d}/g 2"),
                format!("/{d}/g2 2"),
            ]
        })
        .collect();
    want.sort();
    // The second build reruns the RUNs on the copies (and their stacking) from the cache.
    for (run_end, extra) in [("", &["--no-cache"][..]), (" && true", &[])] {
        let dockerfile = format!(
            "FROM busybox AS a\nCOPY d /x/\nRUN stat -c '%n %h' /x/*{run_end}\n\
             FROM busybox AS b\nRUN true\nCOPY d /x/\nRUN stat -c '%n %h' /x/*{run_end}\n\
             FROM busybox\nCOPY --from=a /x /y\nCOPY --from=b /x /z\n\
             RUN stat -c '%n %h' /y/* /z/*{run_end}\n"
        );
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let out = store.build(ctx.path(), extra);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(link_counts(&out), want, "the context's own link counts");
    }
}
