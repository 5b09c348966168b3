//! Inputs that broke builds before: archives holding FIFOs and device nodes, context file
//! names that are not UTF-8, and context trees nested thousands of directories deep.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
}

/// Lines of `tar -tvf` for the archive (GNU tar reads it, not our code).
fn tar_listing(archive: &Path) -> String {
    let out = Command::new("tar").arg("-tvf").arg(archive).output().unwrap();
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
    run_ok(Command::new("mknod").arg(src.join("null")).args(["c", "1", "3"]));
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
    assert!(log.contains("prw-r--r--"), "no FIFO in the RUN's ls:\n{log}");
    assert!(log.contains("1,   3"), "no char device 1,3 in the RUN's ls:\n{log}");
    let listing = tar_listing(&dest);
    for dir in ["gnu", "bb", "py"] {
        assert!(listed(&listing, &format!("{dir}/pipe")).starts_with('p'));
    }
    for dir in ["gnu", "bb"] {
        let line = listed(&listing, &format!("{dir}/null"));
        assert!(line.starts_with('c') && line.contains("1,3"), "{line}");
    }
}
