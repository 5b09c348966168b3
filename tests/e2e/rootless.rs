//! Rootless mode (issue 12): a real non-root user with /etc/subuid and /etc/subgid ranges runs
//! this test's builder binary. It builds a Dockerfile whose RUN steps add a user (busybox-static
//! has no adduser applet: /etc/passwd is appended to), chown and
//! switch `USER`, and fetch from a server on the host's loopback through the user-mode
//! network; pushes the image to a real registry and checks the layer's ownership from the
//! host; runs the image with `builder run --rm`; and runs the confinement probe.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{busybox_tar, stderr, stdout, Registry, BIN};

/// A throwaway user with subordinate ids, removed (with its home and store) on drop.
struct RootlessUser {
    name: String,
    home: PathBuf,
    subuid_start: u32,
    binary: PathBuf,
}

impl RootlessUser {
    /// `tag` tells apart the users of tests running at once in this process.
    fn create(tag: &str) -> RootlessUser {
        let name = format!("brl{}{tag}", std::process::id());
        let home = PathBuf::from(format!("/tmp/{name}-home"));
        let created = Command::new("useradd")
            .args(["--create-home", "--no-user-group", "--home-dir"])
            .arg(&home)
            .arg(&name)
            .output()
            .unwrap();
        assert!(created.status.success(), "useradd: {}", stderr(&created));
        // useradd gives a new user subordinate ids (login.defs SUB_UID_COUNT); if this
        // machine's does not, add a range of our own.
        if subuid_start(&name).is_none() {
            let start = 1_000_000 + (std::process::id() % 10_000) * 65_536;
            let range = format!("{start}-{}", start + 65_535);
            let added = Command::new("usermod")
                .args(["--add-subuids", &range, "--add-subgids", &range, &name])
                .output()
                .unwrap();
            assert!(added.status.success(), "usermod: {}", stderr(&added));
        }
        let user = RootlessUser {
            binary: home.join("builder"),
            subuid_start: subuid_start(&name).unwrap(),
            name,
            home,
        };
        // The test binary may sit under a directory the user cannot enter.
        std::fs::copy(BIN, &user.binary).unwrap();
        user.chown(&user.home);
        user.chown(&user.binary);
        ensure_tun_usable();
        user
    }

    fn chown(&self, path: &Path) {
        let st = Command::new("chown")
            .args(["-R", &self.name])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// `builder ARGS` as the user, with a clean environment and XDG_DATA_HOME set.
    fn builder(&self, args: &[&str]) -> Output {
        self.builder_with(&[], args)
    }

    /// Like [`RootlessUser::builder`], with `extra` (`NAME=VALUE`) in the environment.
    fn builder_with(&self, extra: &[&str], args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", &self.name, "--", "env", "-i"])
            .args(extra)
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("XDG_DATA_HOME={}", self.data_home().display()))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .arg(&self.binary)
            .args(args)
            .current_dir(&self.home)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    fn data_home(&self) -> PathBuf {
        self.home.join("data")
    }

    /// Writes the files into a directory in the user's home and returns it.
    fn context(&self, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.home.join("ctx");
        let _ = std::fs::remove_dir_all(&dir);
        for (path, content) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
        }
        self.chown(&dir);
        dir
    }
}

impl Drop for RootlessUser {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        // userdel also removes the user's /etc/subuid and /etc/subgid entries.
        let _ = Command::new("userdel")
            .args(["--remove", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// The start of `name`'s first range in /etc/subuid.
fn subuid_start(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then(|| fields.next()?.parse().ok())?
    })
}

/// slirp4netns and pasta open /dev/net/tun as the user; Debian's udev makes it 0666, a
/// machine without udev may have it 0600.
fn ensure_tun_usable() {
    let mode = std::fs::metadata("/dev/net/tun").unwrap().mode();
    if mode & 0o006 != 0o006 {
        let st = Command::new("chmod")
            .args(["0666", "/dev/net/tun"])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// A one-shot HTTP server on the host's 127.0.0.1 answering `body` to every request.
fn loopback_server(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// Every entry of every layer of the image at `reference`, copied from the registry by
/// skopeo: (path, uid, gid, contents).
fn pushed_entries(reference: &str) -> Vec<(String, u64, u64, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let copied = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("dir:{}", dir.path().display()))
        .output()
        .unwrap();
    assert!(copied.status.success(), "skopeo: {}", stderr(&copied));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    let mut entries = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let blob = std::fs::File::open(dir.path().join(digest)).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let (uid, gid) = (entry.header().uid().unwrap(), entry.header().gid().unwrap());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            entries.push((path, uid, gid, data));
        }
    }
    entries
}

const DOCKERFILE: &str = "FROM busybox:latest
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group \
 && mkdir /data && chown app:app /data
USER app
RUN id -u > /data/uid && wget -q -O /data/from-host http://host.containers.internal:PORT/
";

#[test]
fn rootless_user_builds_with_chown_and_user_pushes_and_runs() {
    let user = RootlessUser::create("b");
    let imported = user.builder(&["import", busybox_tar().to_str().unwrap(), "busybox:latest"]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    // The store is the user's, under XDG_DATA_HOME.
    let store = user.data_home().join("builder");
    assert!(
        store.join("images.json").exists(),
        "no store in {}",
        store.display()
    );

    let port = loopback_server("hello from the host\n");
    let ctx = user.context(&[("Dockerfile", &DOCKERFILE.replace("PORT", &port.to_string()))]);
    let registry = Registry::start();
    let reference = format!("{}/rootless/app:1", registry.addr);
    let built = user.builder(
        &["build", "--progress=plain", "-t", &reference, "--push"]
            .iter()
            .copied()
            .chain([ctx.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(built.status.success(), "build failed: {}", stderr(&built));

    // In the layers: the in-container ids, not the host's.
    let entries = pushed_entries(&reference);
    let find = |path: &str| {
        entries
            .iter()
            .rev()
            .find(|e| e.0.trim_start_matches("./").trim_end_matches('/') == path)
            .unwrap_or_else(|| panic!("{path} not in the pushed layers"))
    };
    assert_eq!((find("data").1, find("data").2), (1000, 1000));
    assert_eq!(find("data/uid").3, b"1000\n");
    assert_eq!((find("data/uid").1, find("data/uid").2), (1000, 1000));
    assert_eq!(find("data/from-host").3, b"hello from the host\n");

    // On the host, the user's files in the store carry its subordinate ids.
    let owned = walk_find(&store, "uid").expect("the step's file is in the store");
    let uid = std::fs::metadata(&owned).unwrap().uid();
    assert_eq!(
        uid,
        user.subuid_start + 999,
        "{} owned by {uid}",
        owned.display()
    );

    let ran = user.builder(&[
        "run",
        "--rm",
        &reference,
        "sh",
        "-c",
        "id -u; cat /data/from-host",
    ]);
    assert!(ran.status.success(), "run failed: {}", stderr(&ran));
    assert_eq!(stdout(&ran), "1000\nhello from the host\n");
    // --network none: no route to the host, and no name for it.
    let url = format!("http://10.0.2.2:{port}/");
    let isolated = user.builder(&[
        "run",
        "--rm",
        "--network",
        "none",
        &reference,
        "wget",
        "-q",
        "-O-",
        &url,
    ]);
    assert!(
        !isolated.status.success(),
        "reached the host: {}",
        stdout(&isolated)
    );
    assert!(
        stderr(&isolated).contains("unreachable"),
        "{}",
        stderr(&isolated)
    );

    // Later commands join the namespace of the first: a detached container can be reached.
    let started = user.builder(&["run", "-d", "--name", "rl", &reference, "sleep", "60"]);
    assert!(started.status.success(), "run -d: {}", stderr(&started));
    // Even with the pause process gone (killed; its zombie not reaped yet), through the
    // container's monitor.
    let killed = Command::new("pkill")
        .args(["-KILL", "-x", "-u", &user.name, "builder-pause"])
        .status()
        .unwrap();
    assert!(killed.success(), "no pause process to kill");
    let exec = user.builder(&["exec", "rl", "id", "-u"]);
    assert_eq!(stdout(&exec), "1000\n", "exec: {}", stderr(&exec));
    for step in [&["stop", "-t", "1", "rl"][..], &["rm", "rl"]] {
        let out = user.builder(step);
        assert!(out.status.success(), "{step:?}: {}", stderr(&out));
    }
    assert_no_processes_left(&user);
}

/// The first file named `name` below `dir` whose parent is a `data` directory.
fn walk_find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let file_type = entry.file_type().ok()?;
        if file_type.is_dir() && !file_type.is_symlink() {
            if let Some(found) = walk_find(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name
            && path.parent().and_then(Path::file_name) == Some("data".as_ref())
        {
            return Some(path);
        }
    }
    None
}

/// Nothing the builder started (containers, slirp4netns, pasta) outlives it but the one
/// pause process that keeps the user's namespace (zombies are left to this machine's init).
/// A process may still be on its way out: allow it a few seconds.
fn assert_no_processes_left(user: &RootlessUser) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = Command::new("ps")
            .args(["-u", &user.name, "-o", "stat=,comm=,args="])
            .output()
            .unwrap();
        let live: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| !line.trim_start().starts_with('Z') && !line.contains("builder-pause"))
            .map(str::to_string)
            .collect();
        if live.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes left behind: {live:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Prints the capability and seccomp lines, then `ESCAPE ...` for every attempt that worked.
const PROBE: &str = r#"
grep -E '^(CapEff|Seccomp):' /proc/self/status
mkdir -p /tmp/p /tmp/cg
mount -t proc proc /tmp/p 2>/dev/null && echo ESCAPE mount-proc
mount -t cgroup -o devices cgroup /tmp/cg 2>/dev/null && echo ESCAPE mount-cgroup
unshare -m true 2>/dev/null && echo ESCAPE unshare-m
unshare -U true 2>/dev/null && echo ESCAPE unshare-U
ip addr add 10.254.254.252/32 dev lo 2>/dev/null && echo ESCAPE ip-addr
mknod /tmp/kmsg c 1 11 2>/dev/null && (: < /tmp/kmsg) 2>/dev/null && echo ESCAPE kmsg
echo 10 2>/dev/null > /proc/sys/vm/swappiness && echo ESCAPE swappiness
echo end
"#;

#[test]
fn rootless_run_step_and_run_are_confined() {
    let user = RootlessUser::create("c");
    let imported = user.builder(&["import", busybox_tar().to_str().unwrap(), "busybox:latest"]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let expected = "CapEff:\t00000000a80425fb\nSeccomp:\t2\nend\n";

    let ctx = user.context(&[
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY probe.sh /\nRUN sh /probe.sh > /out 2>&1\n",
        ),
        ("probe.sh", PROBE),
    ]);
    let dest = user.home.join("out");
    let out_arg = format!("type=local,dest={}", dest.display());
    let built = user.builder(&["build", "-o", &out_arg, ctx.to_str().unwrap()]);
    assert!(built.status.success(), "{}", stderr(&built));
    assert_eq!(std::fs::read_to_string(dest.join("out")).unwrap(), expected);

    let probe = user.home.join("ctx/probe.sh");
    let volume = format!("{}:/probe.sh:ro", probe.display());
    let ran = user.builder(&[
        "run",
        "--rm",
        "-v",
        &volume,
        "busybox:latest",
        "sh",
        "/probe.sh",
    ]);
    assert!(ran.status.success(), "{}", stderr(&ran));
    assert_eq!(stdout(&ran), expected);
    // A -t container's terminal comes from its own devpts rootless too.
    let args = [
        "run",
        "--rm",
        "-t",
        "busybox:latest",
        "sh",
        "-c",
        "tty; stty size",
    ];
    let tty = user.builder(&args);
    assert!(tty.status.success(), "{}", stderr(&tty));
    assert_eq!(stdout(&tty), "/dev/pts/0\r\n24 80\r\n");
    assert_no_processes_left(&user);
}

#[test]
fn user_without_subordinate_ids_is_told_what_to_add() {
    let user = RootlessUser::create("n");
    let range = format!("{}-{}", user.subuid_start, user.subuid_start + 65_535);
    let removed = Command::new("usermod")
        .args(["--del-subuids", &range, &user.name])
        .output()
        .unwrap();
    assert!(removed.status.success(), "usermod: {}", stderr(&removed));
    let out = user.builder(&["images"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: rootless mode: /etc/subuid: no range of at least 65536 ids for user {} \
             (add one with usermod --add-subuids/--add-subgids)",
            user.name
        )
    );
    assert!(
        !user.data_home().join("builder").exists(),
        "a store was made"
    );
}

/// The copying fallback (overlay not mountable in the user namespace, kernels < 5.11), forced:
/// a build with chown, USER and a deleted file, then `run --rm`, confined as ever; the store
/// keeps copying afterwards; containers that outlive the command are refused clearly.
#[test]
fn rootless_copying_fallback_builds_and_runs() {
    let user = RootlessUser::create("f");
    let copy = ["BUILDER_SNAPSHOTTER=copy"];
    let imported = user.builder_with(
        &copy,
        &["import", busybox_tar().to_str().unwrap(), "busybox:latest"],
    );
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(
        stderr(&imported).contains("snapshots are copied, not mounted"),
        "{}",
        stderr(&imported)
    );
    let ctx = user.context(&[(
        "Dockerfile",
        "FROM busybox:latest
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && mkdir /data \\
 && chown 1000:1000 /data && rm /bin/ls
USER app
RUN id -u > /data/uid
",
    )]);
    let built = user.builder_with(&copy, &["build", "-t", "fb:1", ctx.to_str().unwrap()]);
    assert!(built.status.success(), "build failed: {}", stderr(&built));
    let store = user.data_home().join("builder");
    assert!(
        store.join("snapshots/mountless").exists(),
        "not made with copies"
    );

    let script = "id -u; cat /data/uid; stat -c %u /data; test -e /bin/ls || echo ls-gone
                  grep -E '^(CapEff|Seccomp):' /proc/self/status";
    let expected = "1000\n1000\n1000\nls-gone\nCapEff:\t0000000000000000\nSeccomp:\t2\n";
    let ran = user.builder_with(&copy, &["run", "--rm", "fb:1", "sh", "-c", script]);
    assert!(ran.status.success(), "run failed: {}", stderr(&ran));
    assert_eq!(stdout(&ran), expected);
    // Without the variable the store, made with copies, is still used with copies.
    let ran = user.builder(&["run", "--rm", "fb:1", "sh", "-c", script]);
    assert!(ran.status.success(), "run failed: {}", stderr(&ran));
    assert_eq!(stdout(&ran), expected);

    let detached = user.builder_with(&copy, &["run", "-d", "fb:1", "sleep", "60"]);
    assert!(!detached.status.success());
    assert!(
        stderr(&detached).contains("copying fallback"),
        "{}",
        stderr(&detached)
    );
    assert_no_processes_left(&user);
}

/// Both user-mode networks reach the host's loopback as `host.containers.internal`;
/// slirp4netns is the default. (Debian 12's pasta drops its capabilities before it opens
/// `/proc/PID/ns/net`, which fails unless that namespace's holder has none either.)
#[test]
fn rootless_network_through_pasta_and_slirp4netns() {
    let user = RootlessUser::create("p");
    let imported = user.builder(&["import", busybox_tar().to_str().unwrap(), "busybox:latest"]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let port = loopback_server("through the user-mode network\n");
    let script = format!(
        "grep host.containers.internal /etc/hosts | cut -f1
         wget -q -O- http://host.containers.internal:{port}/"
    );
    let through = |backend: &str| -> (String, String) {
        let env = format!("BUILDER_USERNET={backend}");
        let ran = user.builder_with(&[&env], &["run", "--rm", "busybox", "sh", "-c", &script]);
        assert!(ran.status.success(), "{backend}: {}", stderr(&ran));
        let out = stdout(&ran);
        let (address, body) = out.split_once('\n').unwrap();
        (address.to_string(), body.to_string())
    };
    let body = "through the user-mode network\n";
    let pasta = through("pasta");
    assert_eq!(pasta.1, body);
    assert_ne!(
        pasta.0, "10.0.2.2",
        "pasta answers at the host's gateway address"
    );
    assert_eq!(
        through("slirp4netns"),
        ("10.0.2.2".to_string(), body.to_string())
    );
    assert_eq!(
        through(""),
        ("10.0.2.2".to_string(), body.to_string()),
        "slirp4netns is the default"
    );
    let bad = user.builder_with(
        &["BUILDER_USERNET=vde"],
        &["run", "--rm", "busybox", "true"],
    );
    assert!(
        stderr(&bad).contains("BUILDER_USERNET=vde: expected pasta or slirp4netns"),
        "{}",
        stderr(&bad)
    );
    assert_no_processes_left(&user);
}
