//! Attacks on the host from a build or a container (issue 12): each test makes one attack the
//! way an untrusted Dockerfile, context or image would, and checks that nothing on the host was
//! read, written or replaced. Kernel confinement has its own module (`confinement`).

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::common::{busybox_tar, context, stderr, Store, BIN};

/// Context symlinks to `/` and to `../../etc`, followed by COPY and by a RUN bind mount, and a
/// bind mount `source=../..`: none of them may reach the host's files.
#[test]
fn context_symlinks_and_parent_paths_stay_in_the_context() {
    let store = Store::with_busybox();
    let ctx = context(&[]);
    std::os::unix::fs::symlink("/", ctx.path().join("root")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc", ctx.path().join("up")).unwrap();
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    for dockerfile in [
        "FROM busybox\nCOPY root/etc/passwd /leak\nRUN cat /leak\n",
        "FROM busybox\nCOPY up/passwd /leak\nRUN cat /leak\n",
        "FROM busybox\nRUN --mount=type=bind,source=root/etc,target=/m cat /m/passwd\n",
        "FROM busybox\nRUN --mount=type=bind,source=../..,target=/m cat /m/etc/passwd\n",
        "FROM busybox\nRUN --mount=type=bind,source=up,target=/m cat /m/passwd\n",
    ] {
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let out = store.build(ctx.path(), &["--progress=plain", "--no-cache"]);
        let text = format!("{}{}", stderr(&out), crate::common::stdout(&out));
        let first_user = host_passwd.lines().nth(1).unwrap_or("daemon:");
        assert!(
            !text.contains(first_user),
            "{dockerfile} read the host's /etc/passwd"
        );
    }
}

/// A cache mount id and a secret target with `..` stay inside the store and the container;
/// a volume name with `..` is refused.
#[test]
fn cache_ids_secret_targets_and_volume_names_cannot_climb_out() {
    let store = Store::with_busybox();
    let outside = tempfile::tempdir().unwrap();
    let escape = outside.path().join("cache-escape");
    let up = "../".repeat(12);
    let dockerfile = format!(
        "FROM busybox\n\
         RUN --mount=type=cache,id={up}{cache},target=/c touch /c/pwned\n\
         RUN --mount=type=secret,id=s,target={up}{secret} true\n",
        cache = escape.display(),
        secret = outside.path().join("secret-escape").display(),
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let secret = outside.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let secret_arg = format!("id=s,src={}", secret.display());
    let out = store.build(ctx.path(), &["--secret", &secret_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["secret"], "a mount wrote outside its place");

    let volume_attempts: [&[&str]; 2] = [
        &["volume", "create", "../../escaped-volume"],
        &[
            "run",
            "--rm",
            "-v",
            "../../escaped-volume:/v",
            "busybox",
            "true",
        ],
    ];
    for args in volume_attempts {
        let out = store.run(args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("invalid volume name"), "{args:?}: {err}");
        assert!(!store.root().join("../escaped-volume").exists());
    }
}

/// A second `-o type=local` export into a directory holding the symlinks of a first one must
/// not write through them onto the host.
#[test]
fn local_export_never_writes_through_symlinks_in_the_destination() {
    let store = Store::with_busybox();
    let victims = tempfile::tempdir().unwrap();
    let (dir, file) = (victims.path().join("dir"), victims.path().join("file"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(&file, "orig").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let dest_arg = format!("type=local,dest={}", dest.path().display());
    let links = format!(
        "FROM busybox\nRUN ln -s {} /link && ln -s {} /f\n",
        dir.display(),
        file.display()
    );
    let writes = "FROM busybox\nRUN mkdir /link && echo pwned > /link/x && echo pwned > /f\n";
    for dockerfile in [links.as_str(), writes] {
        let ctx = context(&[("Dockerfile", dockerfile)]);
        let _ = store.build(ctx.path(), &["-o", &dest_arg]);
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "orig");
}

/// CVE-2019-5736 through `run` and `exec`: the helper that enters the container runs from a
/// read-only view of the binary, so a container holding `/proc/PID/exe` of it cannot reopen it
/// for writing once it exited. Uses a copy of the binary, which nothing else runs.
#[test]
fn helper_executables_of_run_and_exec_cannot_be_reopened_for_writing() {
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("builder");
    std::fs::copy(BIN, &copy).unwrap();
    let root = tempfile::tempdir().unwrap();
    let builder = |args: &[&str]| {
        std::process::Command::new(&copy)
            .arg("--root")
            .arg(root.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let tar = busybox_tar();
    let imported = builder(&["import", tar.to_str().unwrap(), "busybox:latest"]).wait_with_output();
    assert!(imported.unwrap().status.success());

    let run = builder(&["run", "--rm", "busybox", "sleep", "1"]);
    let held_run = hold_helper_exe(run.id());
    assert!(run.wait_with_output().unwrap().status.success());

    let detached = builder(&["run", "-d", "--name", "escapee", "busybox", "sleep", "30"]);
    assert!(detached.wait_with_output().unwrap().status.success());
    let exec = builder(&["exec", "escapee", "sleep", "1"]);
    let held_exec = hold_helper_exe(exec.id());
    assert!(exec.wait_with_output().unwrap().status.success());
    let _ = builder(&["rm", "-f", "escapee"]).wait_with_output();

    let original = std::fs::read(&copy).unwrap();
    for held in [held_run, held_exec] {
        let path = format!("/proc/self/fd/{}", held.as_raw_fd());
        let reopened = std::fs::OpenOptions::new().write(true).open(&path);
        let err = reopened.expect_err("the helper's executable opened for writing");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }
    assert_eq!(std::fs::read(&copy).unwrap(), original);
}

/// An `O_PATH` descriptor of the executable of the executor helper started by process `cli`.
fn hold_helper_exe(cli: u32) -> std::fs::File {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Some(pid) = helper_child_of(cli) {
            if let Ok(file) = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(format!("/proc/{pid}/exe"))
            {
                return file;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("no executor helper under process {cli}");
}

fn helper_child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid: u32 = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let helper = String::from_utf8_lossy(&cmdline).contains("__executor-helper");
            (ppid == parent && helper).then_some(pid)
        })
}
