//! Inputs that broke builds before: archives holding FIFOs and device nodes, context file
//! names that are not UTF-8, and context trees nested thousands of directories deep.

use crate::common::*;
use std::path::Path;
use std::process::Command;

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
}

/// Lines of `tar -tvf` for the archive (GNU tar reads it, not our code).
fn tar_listing(archive: &Path) -> String {
    let out = Command::new("tar")
        .arg("-tvf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -tvf: {}", stderr(&out));
    stdout(&out)
}

/// The listing line of `path` in a `tar -tvf` listing.
fn listed<'a>(listing: &'a str, path: &str) -> &'a str {
    listing
        .lines()
        .find(|l| l.ends_with(&format!(" {path}")))
        .unwrap_or_else(|| panic!("{path} not in the tar:\n{listing}"))
}

#[test]
fn add_extracts_fifos_and_device_nodes_from_gnu_busybox_and_python_tars() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nADD gnu.tar /gnu/\nADD busybox.tar /bb/\nADD python.tar /py/\n\
         RUN ls -l /gnu /bb /py\n",
    )]);
    let src = ctx.path().join("src");
    std::fs::create_dir(&src).unwrap();
    run_ok(Command::new("mkfifo").arg(src.join("pipe")));
    run_ok(
        Command::new("mknod")
            .arg(src.join("null"))
            .args(["c", "1", "3"]),
    );
    // GNU tar (its default gnu format) and busybox leave a FIFO's device fields NUL.
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(ctx.path().join("gnu.tar"))
            .arg("-C")
            .arg(&src)
            .args(["pipe", "null"]),
    );
    run_ok(
        Command::new("busybox")
            .args(["tar", "-cf"])
            .arg(ctx.path().join("busybox.tar"))
            .arg("-C")
            .arg(&src)
            .args(["pipe", "null"]),
    );
    let script = "import sys, tarfile\n\
                  t = tarfile.open(sys.argv[1], 'w', format=tarfile.USTAR_FORMAT)\n\
                  t.add(sys.argv[2] + '/pipe', 'pipe')\nt.close()\n";
    run_ok(
        Command::new("python3")
            .args(["-c", script])
            .arg(ctx.path().join("python.tar"))
            .arg(&src),
    );
    std::fs::remove_dir_all(&src).unwrap();

    let store = Store::with_busybox();
    let dest = ctx.path().join("out.tar");
    let out = store.build(
        ctx.path(),
        &["-o", &format!("type=tar,dest={}", dest.display())],
    );
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("prw-r--r--"),
        "no FIFO in the RUN's ls:\n{log}"
    );
    assert!(
        log.contains("1,   3"),
        "no char device 1,3 in the RUN's ls:\n{log}"
    );
    let listing = tar_listing(&dest);
    for dir in ["gnu", "bb", "py"] {
        assert!(listed(&listing, &format!("{dir}/pipe")).starts_with('p'));
    }
    for dir in ["gnu", "bb"] {
        let line = listed(&listing, &format!("{dir}/null"));
        assert!(line.starts_with('c') && line.contains("1,3"), "{line}");
    }
}

#[test]
fn context_file_names_that_are_not_utf8_are_copied_as_they_are() {
    use std::os::unix::ffi::OsStrExt;
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nCOPY . /x\nADD names.tar /t/\n\
         RUN for f in /x/*; do echo \"$f\"; done | od -An -b && cat /x/sub/* /t/*\n",
    )]);
    let name = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    std::fs::write(ctx.path().join(name), "raw name\n").unwrap();
    std::fs::create_dir(ctx.path().join("sub")).unwrap();
    std::fs::write(ctx.path().join("sub").join(name), "below\n").unwrap();
    // An archive holding the name too, made by GNU tar, for ADD to extract.
    let packed = tempfile::tempdir().unwrap();
    std::fs::write(packed.path().join(name), "from the tar\n").unwrap();
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(ctx.path().join("names.tar"))
            .arg("-C")
            .arg(packed.path())
            .arg(name),
    );
    let store = Store::with_busybox();
    let dest = ctx.path().join("out.tar");
    let out = store.build(
        ctx.path(),
        &["-o", &format!("type=tar,dest={}", dest.display())],
    );
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    let log = stderr(&out);
    // `od -b` shows the name's two bytes in octal.
    assert!(
        log.contains("377 376"),
        "RUN's glob did not show the name:\n{log}"
    );
    assert!(
        log.contains("below"),
        "the file below sub/ was not copied:\n{log}"
    );
    assert!(log.contains("from the tar"), "ADD lost the name:\n{log}");
    // GNU tar lists names that are not UTF-8 with octal escapes.
    let listing = tar_listing(&dest);
    listed(&listing, "x/\\377\\376");
    listed(&listing, "x/sub/\\377\\376");
    listed(&listing, "t/\\377\\376");
    let unpacked = tempfile::tempdir().unwrap();
    untar_into(&dest, unpacked.path());
    let copied = unpacked.path().join("x").join(name);
    assert_eq!(std::fs::read_to_string(copied).unwrap(), "raw name\n");
}

/// Makes `depth` nested directories `d/d/...` under `root` (with *at calls, so depths past
/// PATH_MAX work) and writes `deepest` at the bottom.
fn nested_dirs(root: &Path, depth: usize) {
    use rustix::fs::{mkdirat, openat, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = openat(rustix::fs::CWD, root, flags, Mode::empty()).unwrap();
    for _ in 0..depth {
        mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
        dir = openat(&dir, "d", flags, Mode::empty()).unwrap();
    }
    let file = openat(
        &dir,
        "deepest",
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&file, b"bottom\n").unwrap();
}

/// Removes a tree of any depth (GNU rm walks with *at calls).
fn remove_deep(dir: &Path) {
    run_ok(Command::new("rm").arg("-rf").arg(dir));
}

#[test]
fn a_context_nested_1000_deep_builds_and_10000_deep_fails_clearly() {
    let store = Store::with_busybox();
    // Deep enough to overflow the stack of a recursive walk (it aborted the build at 1,000).
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nCOPY . /x\nRUN find /x -name deepest | wc -l\n",
    )]);
    nested_dirs(ctx.path(), 1000);
    let dest = ctx.path().join("out.tar");
    let out = store.build(
        ctx.path(),
        &["-o", &format!("type=tar,dest={}", dest.display())],
    );
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    let listing = tar_listing(&dest);
    let deepest = format!("x/{}deepest", "d/".repeat(1000));
    assert!(listed(&listing, &deepest).starts_with('-'));
    remove_deep(ctx.path());
    // du and prune walk the deep snapshots too.
    let du = store.run(&["du"]);
    assert!(du.status.success(), "du: {}", stderr(&du));
    let prune = store.run(&["prune", "-af"]);
    assert!(prune.status.success(), "prune: {}", stderr(&prune));
    assert!(
        std::process::Command::new("find")
            .arg(store.root())
            .args(["-name", "deepest"])
            .output()
            .unwrap()
            .stdout
            .is_empty(),
        "prune left the deep tree behind"
    );

    // 10,000 levels: a path of 20 kB, which no system call accepts (Docker fails too).
    let ctx = context(&[("Dockerfile", "FROM busybox\nCOPY . /x\n")]);
    nested_dirs(ctx.path(), 10_000);
    let out = store.build(ctx.path(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is nested too deep"), "{err}");
    assert!(err.contains("PATH_MAX"), "{err}");
    assert!(err.len() < 4000, "the error quotes the whole path: {err}");
    remove_deep(ctx.path());
    // The store is still usable.
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN true\n")]);
    let out = store.build(ctx.path(), &[]);
    assert!(
        out.status.success(),
        "build after the failure: {}",
        stderr(&out)
    );
}

/// A binary replaced while it runs (an upgrade, a relink) still re-executes itself for later
/// RUN steps: the helper is started from `/proc/self/exe`, not from a path that now names
/// another file or none.
#[test]
fn a_build_whose_binary_is_deleted_mid_build_still_runs_its_later_steps() {
    let store = Store::with_busybox();
    let bin_dir = tempfile::tempdir().unwrap();
    let copy = bin_dir.path().join("builder");
    std::fs::copy(BIN, &copy).unwrap();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN sleep 2\nRUN echo later > /later\n",
    )]);
    let child = Command::new(&copy)
        .arg("--root")
        .arg(store.root())
        .args(["build", "--progress=plain", "-t", "deleted:1"])
        .arg(ctx.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    std::fs::remove_file(&copy).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "build: {}", stderr(&out));
    assert!(!copy.exists());
}

/// `builder images | head` with the reader gone: no panic, the status of a process SIGPIPE
/// ended, as `cat` gives.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let store = Store::with_busybox();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = store
        .cmd()
        .arg("images")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}
