//! Integration tests: real namespaces and mounts (needs root and `/bin/busybox` from Debian's
//! `busybox-static`). The binary doubles as the executor helper, so it has its own `main`.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use executor::{
    helper_main, CancelToken, ExecError, ExecSpec, Executor, Mount, Network, OutputStream,
    HELPER_ARG,
};

const APPLETS: [&str; 30] = [
    "sh", "echo", "cat", "id", "ls", "hostname", "ps", "sleep", "mount", "pwd", "touch", "env",
    "grep", "wc", "test", "true", "yes", "head", "unshare", "ip", "mknod", "mkdir", "chmod",
    "printf", "sed", "xargs", "tty", "stty", "seq", "tail",
];

/// Hidden argument: run a `sleep` container in the given rootfs, used to kill its caller.
const RUN_CONTAINER_ARG: &str = "__run-container";

/// Every rootfs dir the tests made, to tell their mounts from other processes'.
static ROOTFS_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// A busybox rootfs in a temp dir, with passwd/group entries for `root` and `app`.
struct Rootfs {
    dir: tempfile::TempDir,
}

impl Rootfs {
    fn new() -> Rootfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        ROOTFS_DIRS.lock().unwrap().push(root.to_path_buf());
        for sub in ["bin", "etc", "tmp", "proc", "dev", "sys"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
        for applet in APPLETS {
            symlink("busybox", root.join("bin").join(applet)).expect("symlink");
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\napp:x:1000:\nextra:x:2000:app\nother:x:3000:root\n",
        )
        .expect("group");
        Rootfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn bind_spec(&self, args: &[&str]) -> ExecSpec {
        ExecSpec {
            rootfs: vec![Mount {
                fstype: "bind".into(),
                source: self.path().to_string_lossy().into_owned(),
                target: "/".into(),
                options: vec!["rbind".into()],
            }],
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }
    }
}

struct Outcome {
    result: Result<i32, ExecError>,
    stdout: String,
    stderr: String,
}

fn run(spec: &ExecSpec) -> Outcome {
    run_with(spec, &CancelToken::new())
}

fn run_with(spec: &ExecSpec, cancel: &CancelToken) -> Outcome {
    let executor = Executor::current_exe().expect("current_exe");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let result = executor.run(spec, cancel, &mut |stream, chunk| match stream {
        OutputStream::Stdout => stdout.extend_from_slice(chunk),
        OutputStream::Stderr => stderr.extend_from_slice(chunk),
    });
    Outcome {
        result,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `sh -c script` and returns its stdout, asserting exit code 0.
fn sh_ok(spec_of: impl FnOnce(&[&str]) -> ExecSpec, script: &str) -> String {
    let spec = spec_of(&["sh", "-c", script]);
    let out = run(&spec);
    match out.result {
        Ok(0) => out.stdout,
        other => panic!(
            "script {script:?} gave {other:?}, stdout {:?}, stderr {:?}",
            out.stdout, out.stderr
        ),
    }
}

fn echo_output_is_captured() {
    let rootfs = Rootfs::new();
    let out = run(&rootfs.bind_spec(&["echo", "hello", "world"]));
    assert_eq!(out.result.expect("run"), 0);
    assert_eq!(out.stdout, "hello world\n");
    let out = run(&rootfs.bind_spec(&["sh", "-c", "echo oops >&2"]));
    assert_eq!(out.result.expect("run"), 0);
    assert_eq!(out.stderr, "oops\n");
}

fn exit_code_is_passed_through() {
    let rootfs = Rootfs::new();
    let out = run(&rootfs.bind_spec(&["sh", "-c", "exit 3"]));
    assert_eq!(out.result.expect("run"), 3);
    let out = run(&rootfs.bind_spec(&["sh", "-c", "sh -c 'kill -KILL $$'; echo $?"]));
    assert_eq!(out.stdout, "137\n");
}

fn env_is_exact_with_path_default_and_cwd_created() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.bind_spec(&["sh", "-c", "echo \"$FOO|$PATH|$HOME\"; pwd"]);
    spec.env = vec!["FOO=bar baz".into()];
    spec.cwd = "/work/dir".into();
    let out = run(&spec);
    assert_eq!(out.result.expect("run"), 0, "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout,
        "bar baz|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/root\n/work/dir\n"
    );
    assert!(rootfs.path().join("work/dir").is_dir());

    spec.env = vec!["PATH=/bin".into(), "HOME=/h".into()];
    spec.args = vec!["env".into()];
    let out = run(&spec);
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["HOME=/h", "PATH=/bin"]);
}

fn user_by_name_and_by_ids() {
    let rootfs = Rootfs::new();
    let script = "echo $(id -u):$(id -g):$(id -G):$HOME";
    let as_user = |user: &str| {
        sh_ok(
            |args| {
                let mut spec = rootfs.bind_spec(args);
                spec.user = user.into();
                spec
            },
            script,
        )
    };
    assert_eq!(as_user(""), "0:0:0 3000:/root\n");
    assert_eq!(as_user("app"), "1000:1000:1000 2000:/home/app\n");
    assert_eq!(as_user("1000"), "1000:1000:1000 2000:/home/app\n");
    assert_eq!(as_user("1234:5678"), "1234:5678:5678:/\n");
    assert_eq!(as_user("app:extra"), "1000:2000:2000:/home/app\n");
}

fn unknown_user_is_a_setup_error() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.bind_spec(&["true"]);
    spec.user = "foo".into();
    match run(&spec).result {
        Err(ExecError::Setup(msg)) => assert_eq!(
            msg,
            "unable to find user foo: no matching entries in passwd file"
        ),
        other => panic!("expected setup error, got {other:?}"),
    }
}

fn missing_executable_is_a_setup_error() {
    let rootfs = Rootfs::new();
    match run(&rootfs.bind_spec(&["no-such-program", "x"])).result {
        Err(ExecError::Setup(msg)) => {
            assert!(msg.contains("no-such-program"), "{msg}");
            assert!(msg.contains("executable file not found in $PATH"), "{msg}");
        }
        other => panic!("expected setup error, got {other:?}"),
    }
    match run(&rootfs.bind_spec(&["/bin/nope"])).result {
        Err(ExecError::Setup(msg)) => assert!(msg.contains("/bin/nope"), "{msg}"),
        other => panic!("expected setup error, got {other:?}"),
    }
}

fn hostname_defaults_and_can_be_set() {
    let rootfs = Rootfs::new();
    assert_eq!(
        sh_ok(|a| rootfs.bind_spec(a), "hostname"),
        "buildkitsandbox\n"
    );
    let out = sh_ok(
        |a| {
            let mut spec = rootfs.bind_spec(a);
            spec.hostname = "box1".into();
            spec
        },
        "hostname; cat /etc/hosts",
    );
    assert!(out.starts_with("box1\n"), "{out}");
    assert!(out.contains("127.0.0.1\tlocalhost box1"), "{out}");
}

fn pid_namespace_and_proc() {
    let rootfs = Rootfs::new();
    // The trailing echo keeps the shell from exec'ing ps, so pid 1 stays the shell.
    let out = sh_ok(|a| rootfs.bind_spec(a), "echo $$; ps; echo end");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"));
    let processes: Vec<&str> = lines.skip(1).filter(|l| *l != "end").collect();
    // The shell (pid 1) and ps itself, nothing from the host.
    assert_eq!(processes.len(), 2, "{out}");
    assert!(processes[0].trim().starts_with("1 "), "{out}");
    let mounts = sh_ok(|a| rootfs.bind_spec(a), "cat /proc/mounts");
    for needle in [
        " /proc proc ",
        " /dev tmpfs ",
        " /dev/pts devpts ",
        " /sys sysfs ro",
    ] {
        assert!(mounts.contains(needle), "{needle} missing in {mounts}");
    }
    let devs = sh_ok(
        |a| rootfs.bind_spec(a),
        "echo x > /dev/null && ls /dev; echo x 2>/dev/null > /proc/sys/kernel/hostname || echo procsys-ro",
    );
    assert!(devs.lines().any(|l| l == "procsys-ro"), "{devs}");
    for node in [
        "null", "zero", "urandom", "tty", "ptmx", "shm", "fd", "stdout",
    ] {
        assert!(devs.lines().any(|l| l == node), "{node} missing in {devs}");
    }
}

fn etc_files_are_provided() {
    let rootfs = Rootfs::new();
    let out = sh_ok(
        |a| rootfs.bind_spec(a),
        "cat /etc/hosts; test -f /etc/resolv.conf",
    );
    assert!(out.contains("localhost"), "{out}");
    // The files exist in the rootfs as empty mount points only.
    assert_eq!(
        std::fs::read_to_string(rootfs.path().join("etc/hosts")).expect("hosts"),
        ""
    );
}

fn network_none_has_only_loopback() {
    let rootfs = Rootfs::new();
    let out = sh_ok(
        |a| {
            let mut spec = rootfs.bind_spec(a);
            spec.network = Network::None;
            spec
        },
        "cat /proc/net/dev",
    );
    let interfaces: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, vec!["lo"], "{out}");
}

fn readonly_bind_and_tmpfs_mounts() {
    let rootfs = Rootfs::new();
    let data = tempfile::tempdir().expect("tempdir");
    std::fs::write(data.path().join("f"), "data\n").expect("write");
    let out = sh_ok(
        |a| {
            let mut spec = rootfs.bind_spec(a);
            spec.mounts = vec![
                Mount {
                    fstype: "bind".into(),
                    source: data.path().to_string_lossy().into_owned(),
                    target: "/mnt/data".into(),
                    options: vec!["rbind".into(), "ro".into()],
                },
                Mount {
                    fstype: "tmpfs".into(),
                    source: "tmpfs".into(),
                    target: "/scratch".into(),
                    options: vec!["size=1m".into(), "mode=1777".into()],
                },
            ];
            spec
        },
        "cat /mnt/data/f; touch /mnt/data/g 2>/dev/null && echo wrote || echo rejected; \
         touch /scratch/x && echo tmpfs-ok; grep ' /scratch ' /proc/mounts",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], &["data", "rejected", "tmpfs-ok"], "{out}");
    assert!(lines[3].contains("tmpfs"), "{out}");
    assert!(!data.path().join("g").exists());
}

fn readonly_rootfs_rejects_writes() {
    let rootfs = Rootfs::new();
    let out = sh_ok(
        |a| {
            let mut spec = rootfs.bind_spec(a);
            spec.readonly_rootfs = true;
            spec
        },
        "touch /x 2>/dev/null && echo wrote || echo rejected; touch /dev/shm/y && echo shm-ok",
    );
    assert_eq!(out, "rejected\nshm-ok\n");
}

fn overlay_rootfs_writes_land_in_upper() {
    let lower = Rootfs::new();
    let scratch = tempfile::tempdir().expect("tempdir");
    let upper = scratch.path().join("upper");
    let work = scratch.path().join("work");
    std::fs::create_dir(&upper).expect("mkdir");
    std::fs::create_dir(&work).expect("mkdir");
    let spec_of = |args: &[&str]| ExecSpec {
        rootfs: vec![Mount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            target: "/".into(),
            options: vec![
                format!("lowerdir={}", lower.path().display()),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
            ],
        }],
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    sh_ok(spec_of, "echo written > /tmp/new");
    assert_eq!(
        std::fs::read_to_string(upper.join("tmp/new")).expect("upper file"),
        "written\n"
    );
    assert!(!lower.path().join("tmp/new").exists());
}

fn cancel_kills_the_container_promptly() {
    let rootfs = Rootfs::new();
    let marker = format!("cancel-marker-{}", std::process::id());
    // A distinctive argv lets us look for leftovers in the host's /proc.
    let spec = rootfs.bind_spec(&["sh", "-c", &format!("sleep 100 & sleep 101; echo {marker}")]);
    let cancel = CancelToken::new();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            cancel.cancel();
        })
    };
    let started = Instant::now();
    let out = run_with(&spec, &cancel);
    canceller.join().expect("join");
    assert!(
        matches!(out.result, Err(ExecError::Cancelled)),
        "{:?}",
        out.result
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !any_process_with_cmdline(&marker),
        "container process survived cancel"
    );
    // A cancelled token refuses new runs.
    assert!(matches!(
        run_with(&spec, &cancel).result,
        Err(ExecError::Cancelled)
    ));
}

fn sigpipe_has_default_disposition() {
    let rootfs = Rootfs::new();
    // With SIGPIPE ignored, `yes` would spin on EPIPE errors instead of dying.
    let out = sh_ok(|a| rootfs.bind_spec(a), "yes | head -n 2");
    assert_eq!(out, "y\ny\n");
}

fn null_stdio_delivers_no_output() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.bind_spec(&["sh", "-c", "echo hidden; echo hidden >&2; exit 4"]);
    spec.stdio = executor::Stdio::Null;
    let out = run(&spec);
    assert_eq!(out.result.expect("run"), 4);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
}

/// `with_stdin` feeds a piped run; `Stdio::Terminal` makes the terminal the program's stdio
/// and controlling terminal, and what it writes comes back from the master.
fn given_stdin_and_terminal_reach_the_program() {
    use std::io::Write;
    let rootfs = Rootfs::new();
    let (read, write) = nix::unistd::pipe().expect("pipe");
    std::fs::File::from(write)
        .write_all(b"piped\n")
        .expect("write");
    let executor = Executor::current_exe()
        .expect("current_exe")
        .with_stdin(read);
    let mut stdout = Vec::new();
    let code = executor
        .run(
            &rootfs.bind_spec(&["cat"]),
            &CancelToken::new(),
            &mut |_, d| stdout.extend_from_slice(d),
        )
        .expect("run");
    assert_eq!((code, stdout.as_slice()), (0, b"piped\n".as_slice()));

    // The container allocates the terminal in its own devpts: its first slave, /dev/pts/0
    // (major 136), is the controlling terminal, and the host's slaves are not there.
    let slot = executor::TerminalSlot::new(33, 101);
    let executor = Executor::current_exe()
        .expect("current_exe")
        .with_terminal(slot.clone());
    // Field 7 of stat is the controlling terminal (0: none).
    let script = "[ -t 0 ] && [ -t 2 ] && echo on-a-tty; [ -c /dev/console ] && echo console; \
        t=$(tty); [ -c \"$t\" ] && echo tty=$t; echo size=$(stty size); echo pts=$(ls /dev/pts); \
        echo fds=$(ls /proc/self/fd); set -- $(cat /proc/self/stat); echo ctty=$7; \
        seq 1 20000 | tail -n 1";
    let mut spec = rootfs.bind_spec(&["sh", "-c", script]);
    spec.stdio = executor::Stdio::Terminal;
    let mut output = Vec::new();
    let code = executor
        .run(&spec, &CancelToken::new(), &mut |_, d| {
            output.extend_from_slice(d)
        })
        .expect("run");
    let text = String::from_utf8_lossy(&output);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("on-a-tty\r\nconsole\r\n"), "{text:?}");
    assert!(text.contains("tty=/dev/pts/0\r\n"), "{text:?}");
    assert!(text.contains("size=33 101\r\n"), "{text:?}");
    assert!(text.contains("pts=0 ptmx\r\n"), "{text:?}");
    // Neither the master nor the console socket stays open in the container (3 is ls's).
    assert!(text.contains("fds=0 1 2 3\r\n"), "{text:?}");
    assert!(text.contains(&format!("ctty={}\r\n", 136 << 8)), "{text:?}");
    assert!(text.ends_with("20000\r\n"), "{text:?}");
    assert!(
        slot.master().is_none(),
        "the run's terminal is gone with it"
    );
}

fn overlay_with_many_long_lowerdirs() {
    let base = Rootfs::new();
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut lowers = Vec::new();
    for i in 0..90 {
        let dir = scratch
            .path()
            .join(format!("layer-with-a-long-name-{i:08}"));
        std::fs::create_dir(&dir).expect("mkdir");
        lowers.push(dir.to_string_lossy().into_owned());
    }
    std::fs::write(
        scratch.path().join("layer-with-a-long-name-00000007/seven"),
        "7\n",
    )
    .expect("write");
    lowers.push(base.path().to_string_lossy().into_owned());
    let lowerdir = format!("lowerdir={}", lowers.join(":"));
    assert!(
        lowerdir.len() > 4096,
        "the test needs mount data over a page"
    );
    let spec_of = |args: &[&str]| ExecSpec {
        rootfs: vec![Mount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            target: "/".into(),
            options: vec![lowerdir.clone(), "ro".into()],
        }],
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    assert_eq!(sh_ok(spec_of, "cat /seven"), "7\n");
}

fn caller_death_kills_the_container() {
    let rootfs = Rootfs::new();
    let marker = format!("orphan-marker-{}", std::process::id());
    let exe = std::env::current_exe().expect("current_exe");
    // A killed caller cannot remove its state dir, so keep it out of the shared temp dir.
    let state = tempfile::tempdir().expect("tempdir");
    let mut caller = std::process::Command::new(exe)
        .args([
            RUN_CONTAINER_ARG,
            &rootfs.path().to_string_lossy(),
            &marker,
            &state.path().to_string_lossy(),
        ])
        .spawn()
        .expect("spawn caller");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !any_process_with_cmdline(&marker) {
        assert!(Instant::now() < deadline, "container never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    caller.kill().expect("kill caller");
    caller.wait().expect("reap caller");
    let deadline = Instant::now() + Duration::from_secs(5);
    while any_process_with_cmdline(&marker) {
        assert!(Instant::now() < deadline, "container outlived its caller");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The killed caller's state dir may stay behind (unless the dying helper got to remove
    // it); a stale one of a dead process is removed by the next sweep.
    let left: Vec<_> = std::fs::read_dir(state.path()).unwrap().flatten().collect();
    assert!(left.len() <= 1, "{left:?}");
    let stale = state
        .path()
        .join(format!("builder-exec-{}-stale", caller.id()));
    std::fs::create_dir(&stale).unwrap();
    executor::sweep_stale_state_dirs(state.path());
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
}

fn created_stubs_are_reported_and_removable() {
    let rootfs = Rootfs::new();
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut spec = rootfs.bind_spec(&["sh", "-c", "test -S /run/agent.sock && pwd"]);
    spec.cwd = "/work/dir".into();
    spec.mounts = vec![
        Mount {
            fstype: "tmpfs".into(),
            source: "tmpfs".into(),
            target: "/mnt/cache/deep".into(),
            options: vec![],
        },
        Mount {
            fstype: "bind".into(),
            source: socket.to_string_lossy().into_owned(),
            target: "/run/agent.sock".into(),
            options: vec!["rbind".into()],
        },
    ];
    let etc_mtime = std::fs::metadata(rootfs.path().join("etc"))
        .unwrap()
        .modified()
        .unwrap();
    let executor = Executor::current_exe().expect("current_exe");
    let mut stdout = Vec::new();
    let outcome = executor
        .run_tracked(&spec, &CancelToken::new(), &mut |stream, data| {
            if stream == OutputStream::Stdout {
                stdout.extend_from_slice(data);
            }
        })
        .expect("run");
    assert_eq!(outcome.exit_code, 0, "socket was not bound as a socket");
    assert_eq!(String::from_utf8_lossy(&stdout), "/work/dir\n");
    let created: Vec<&str> = outcome.created.iter().map(|c| c.path.as_str()).collect();
    for expected in [
        "etc/hosts",
        "etc/resolv.conf",
        "mnt",
        "mnt/cache/deep",
        "run/agent.sock",
        "work",
        "work/dir",
    ] {
        assert!(created.contains(&expected), "{expected} not in {created:?}");
    }
    assert!(!created.contains(&"bin"), "existing paths are not stubs");
    executor::remove_stubs(rootfs.path(), &outcome.created);
    for gone in ["etc/hosts", "etc/resolv.conf", "mnt", "run", "work"] {
        assert!(!rootfs.path().join(gone).exists(), "{gone} was left");
    }
    assert!(rootfs.path().join("etc/passwd").exists());
    let etc_mtime_after = std::fs::metadata(rootfs.path().join("etc"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(etc_mtime, etc_mtime_after, "parent mtime was not restored");
}

/// Tries what escaped from an unconfined container (issue 12); each line printed is an
/// attempt that worked.
const ESCAPE_PROBE: &str = "
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|Seccomp):' /proc/self/status
mkdir -p /mnt/p /mnt/cg
mount -t proc proc /mnt/p 2>/dev/null && echo ESCAPE mount-proc
mount -t cgroup -o devices cgroup /mnt/cg 2>/dev/null && echo ESCAPE mount-cgroup
mount -t tmpfs t /mnt/p 2>/dev/null && echo ESCAPE mount-tmpfs
unshare -m true 2>/dev/null && echo ESCAPE unshare-m
unshare -U true 2>/dev/null && echo ESCAPE unshare-U
unshare -C true 2>/dev/null && echo ESCAPE unshare-C
ip addr add 10.254.254.254/32 dev lo 2>/dev/null && echo ESCAPE ip-addr
mknod /tmp/kmsg c 1 11 || echo mknod-refused
(: < /tmp/kmsg) 2>/dev/null && echo ESCAPE kmsg
mknod /dev/kmsg2 c 1 11 && (: < /dev/kmsg2) 2>/dev/null && echo ESCAPE dev-kmsg
echo 10 2>/dev/null > /proc/sys/vm/swappiness && echo ESCAPE swappiness
touch /sys/fs/cgroup/devices/x 2>/dev/null && echo ESCAPE cgroupfs-write
test -s /proc/interrupts && echo ESCAPE interrupts
echo end
";

fn confined_as_docker_confines_a_container() {
    let rootfs = Rootfs::new();
    let out = sh_ok(|a| rootfs.bind_spec(a), ESCAPE_PROBE);
    remove_probe_address();
    let expected = "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n\
                    CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n\
                    CapAmb:\t0000000000000000\nSeccomp:\t2\nend\n";
    assert_eq!(out, expected);
    // A user other than root keeps the bounding set and nothing else, as with docker.
    let out = sh_ok(
        |a| {
            let mut spec = rootfs.bind_spec(a);
            spec.user = "app".into();
            spec
        },
        "grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status",
    );
    assert_eq!(
        out,
        "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t00000000a80425fb\n"
    );
}

/// If the probe ever did add its address to the host's `lo`, take it away again.
fn remove_probe_address() {
    let _ = std::process::Command::new("ip")
        .args(["addr", "del", "10.254.254.254/32", "dev", "lo"])
        .stderr(std::process::Stdio::null())
        .status();
}

fn cgroup_release_agent_cannot_reach_the_host() {
    let rootfs = Rootfs::new();
    let marker = std::env::temp_dir().join(format!("release-agent-escaped-{}", std::process::id()));
    let agent = rootfs.path().join("agent");
    // The host path of the container's /agent is what the original exploit wrote.
    let script = format!(
        "printf '#!/bin/sh\\ntouch {marker}\\n' > /agent; chmod +x /agent
         for c in rdma memory pids devices cpu freezer blkio; do
           mkdir -p /cg/$c
           mount -t cgroup -o $c cgroup /cg/$c 2>/dev/null || continue
           mkdir -p /cg/$c/x && echo 1 > /cg/$c/x/notify_on_release &&
             echo {agent} > /cg/$c/release_agent && sh -c 'echo $$ > /cg/'$c'/x/cgroup.procs' &&
             echo armed $c
         done; echo done",
        marker = marker.display(),
        agent = agent.display()
    );
    let out = sh_ok(|a| rootfs.bind_spec(a), &script);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(out, "done\n");
    assert!(!marker.exists(), "the release agent ran on the host");
}

fn escape_hatches_widen_confinement() {
    let rootfs = Rootfs::new();
    let with = |f: &dyn Fn(&mut ExecSpec), script: &str| {
        sh_ok(
            |a| {
                let mut spec = rootfs.bind_spec(a);
                spec.network = Network::None;
                f(&mut spec);
                spec
            },
            script,
        )
    };
    let status = "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status";
    // Privileged means every capability this test process has itself.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let all = own
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:\t"))
        .unwrap()
        .to_string();
    let out = with(&|s| s.security.privileged = true, status);
    assert_eq!(
        out,
        format!("CapEff:\t{all}\nNoNewPrivs:\t0\nSeccomp:\t0\n")
    );
    let out = with(
        &|s| s.security.cap_add = vec!["NET_ADMIN".into()],
        "ip addr add 10.9.9.9/32 dev lo && echo added",
    );
    assert_eq!(out, "added\n");
    let out = with(&|s| s.security.cap_drop = vec!["ALL".into()], status);
    assert_eq!(
        out,
        "CapEff:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t2\n"
    );
    let out = with(
        &|s| {
            s.security.seccomp = executor::Seccomp::Unconfined;
            s.security.no_new_privileges = true;
        },
        status,
    );
    assert_eq!(
        out,
        "CapEff:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t0\n"
    );
    let deny_mkdir = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;
    let out = with(
        &|s| s.security.seccomp = executor::Seccomp::Profile(deny_mkdir.into()),
        "mkdir /x 2>&1 || echo refused",
    );
    assert!(
        out.contains("Permission denied") && out.ends_with("refused\n"),
        "{out}"
    );
    let mut spec = rootfs.bind_spec(&["true"]);
    spec.security.cap_add = vec!["CAP_WIZARDRY".into()];
    match run(&spec).result {
        Err(ExecError::Setup(msg)) => assert!(msg.contains("CAP_WIZARDRY"), "{msg}"),
        other => panic!("expected a setup error, got {other:?}"),
    }
}

fn pids_limit_caps_the_run_and_its_cgroup_goes_away() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.bind_spec(&[
        "sh",
        "-c",
        "cat /sys/fs/cgroup/pids/pids.max /proc/self/cgroup | grep -E '^5$|pids:/$';
         for i in 1 2 3 4 5 6 7 8; do sleep 1 & done",
    ]);
    spec.resources.pids_limit = Some(5);
    let out = run(&spec);
    assert!(out.result.is_ok(), "{:?}", out.result);
    assert_eq!(
        out.stdout, "5\n8:pids:/\n",
        "limit and a private cgroup namespace"
    );
    assert!(
        out.stderr.contains("fork"),
        "the sixth task was refused: {}",
        out.stderr
    );
    assert_run_cgroups_gone();
    // A cgroup left by a killed process (its pid is gone) is swept.
    let stale = Path::new("/sys/fs/cgroup/pids/builder/999999999-0");
    std::fs::create_dir(stale).unwrap();
    executor::sweep_stale_cgroups();
    assert!(!stale.exists(), "stale run cgroup was not swept");
}

fn assert_run_cgroups_gone() {
    let prefix = format!("{}-", std::process::id());
    for hierarchy in ["devices", "pids"] {
        let parent = Path::new("/sys/fs/cgroup").join(hierarchy).join("builder");
        let left: Vec<_> = std::fs::read_dir(&parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "run cgroups left: {left:?}");
    }
}

fn leaked_descriptors_never_reach_the_program() {
    let rootfs = Rootfs::new();
    let host_dir = tempfile::tempdir().unwrap();
    let path = std::ffi::CString::new(host_dir.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: open without O_CLOEXEC, so every child inherits it, as a careless caller would.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(fd >= 3);
    let out = sh_ok(|a| rootfs.bind_spec(a), "ls /proc/self/fd | xargs");
    assert_eq!(out, "0 1 2 3\n", "only stdio and ls's own directory");
    let mut spec = rootfs.bind_spec(&["sh", "-c", "pwd; ls"]);
    spec.cwd = format!("/proc/self/fd/{fd}");
    let out = run(&spec);
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    assert!(
        matches!(out.result, Err(ExecError::Setup(_))) || out.stdout.starts_with("/proc/"),
        "{:?} {}",
        out.result,
        out.stdout
    );
    assert!(!out.stdout.contains("(unreachable)"), "{}", out.stdout);
}

/// A parallel step sharing a cache mount swaps a directory on a mount target's path for a
/// link to a host directory, again and again; no mkdir or mount may land outside the root.
fn mount_targets_in_a_shared_cache_cannot_be_raced_out_of_the_root() {
    let rootfs = Rootfs::new();
    let cache = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let flip = cache.path().join("flip");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let (flip, outside, stop) = (flip.clone(), outside.path().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::create_dir(&flip);
                let _ = std::fs::remove_dir_all(&flip);
                let _ = symlink(&outside, &flip);
                let _ = std::fs::remove_file(&flip);
            }
        })
    };
    for _ in 0..60 {
        let mut spec = rootfs.bind_spec(&["true"]);
        spec.mounts = vec![
            Mount {
                fstype: "bind".into(),
                source: cache.path().to_string_lossy().into_owned(),
                target: "/cache".into(),
                options: vec!["rbind".into()],
            },
            Mount {
                fstype: "tmpfs".into(),
                source: "tmpfs".into(),
                target: "/cache/flip/a/b/c/d/e/f/g/h/t".into(),
                options: vec![],
            },
        ];
        // Either outcome is fine (the target may vanish mid-setup); escaping is not.
        let _ = run(&spec);
        let escaped: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .flatten()
            .collect();
        if !escaped.is_empty() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!("created outside the root: {escaped:?}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racer.join().unwrap();
}

/// Hidden argument: call clone3 with no arguments and print the errno it gave.
const CLONE3_ARG: &str = "__clone3-errno";

/// Docker's profile answers clone3 with ENOSYS (so that glibc falls back to clone, which the
/// profile can filter by flags); unfiltered, clone3 with a null argument gives EFAULT.
fn clone3_is_enosys_under_the_default_profile() {
    let rootfs = Rootfs::new();
    let exe = std::env::current_exe().unwrap();
    let mut binds: Vec<Mount> = ["/lib", "/lib64", "/usr"]
        .iter()
        .filter(|dir| Path::new(dir).exists())
        .map(|dir| Mount {
            fstype: "bind".into(),
            source: dir.to_string(),
            target: dir.to_string(),
            options: vec!["rbind".into(), "ro".into()],
        })
        .collect();
    binds.push(Mount {
        fstype: "bind".into(),
        source: exe.to_string_lossy().into_owned(),
        target: "/probe".into(),
        options: vec!["bind".into(), "ro".into()],
    });
    let errno_of = |seccomp: executor::Seccomp| {
        let mut spec = rootfs.bind_spec(&["/probe", CLONE3_ARG]);
        spec.mounts = binds.clone();
        spec.security.seccomp = seccomp;
        let out = run(&spec);
        assert_eq!(out.result.expect("run"), 0, "{}", out.stderr);
        out.stdout
    };
    assert_eq!(
        errno_of(executor::Seccomp::Default),
        format!("{}\n", libc::ENOSYS)
    );
    assert_eq!(
        errno_of(executor::Seccomp::Unconfined),
        format!("{}\n", libc::EFAULT)
    );
}

/// A filter loaded from the seccomp cache confines as a freshly compiled one does; a damaged
/// cache file is recompiled and replaced, never loaded.
fn cached_seccomp_filter_confines_like_a_fresh_one() {
    let rootfs = Rootfs::new();
    let cache = tempfile::tempdir().expect("tempdir");
    let executor = Executor::current_exe()
        .expect("current_exe")
        .with_seccomp_cache(Some(cache.path().to_path_buf()));
    let probe = |security: executor::Security, script: &str| {
        let mut spec = rootfs.bind_spec(&["sh", "-c", script]);
        spec.network = Network::None;
        spec.security = security;
        let mut stdout = Vec::new();
        let code = executor.run(&spec, &CancelToken::new(), &mut |stream, chunk| {
            if stream == OutputStream::Stdout {
                stdout.extend_from_slice(chunk)
            }
        });
        assert_eq!(code.expect("run"), 0);
        String::from_utf8_lossy(&stdout).into_owned()
    };
    let status = "grep -E '^(CapEff|Seccomp):' /proc/self/status; unshare -U true 2>/dev/null && echo ESCAPE; true";
    let expected = "CapEff:\t00000000a80425fb\nSeccomp:\t2\n";
    assert_eq!(probe(Default::default(), status), expected, "compiled");
    let files: Vec<PathBuf> = std::fs::read_dir(cache.path())
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one program cached: {files:?}");
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&files[0]).unwrap());
    let first = inode();
    assert_eq!(probe(Default::default(), status), expected, "cached");
    assert_eq!(
        inode(),
        first,
        "the cached program was loaded, not rewritten"
    );
    // Flip a bit of the program: the run recompiles and still confines.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&files[0], &bytes).unwrap();
    assert_eq!(probe(Default::default(), status), expected, "damaged");
    assert_ne!(
        std::fs::read(&files[0]).unwrap(),
        bytes,
        "damaged file replaced"
    );
    // A custom profile's program is cached under its own key and still denies.
    let deny_mkdir = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;
    let security = executor::Security {
        seccomp: executor::Seccomp::Profile(deny_mkdir.into()),
        ..Default::default()
    };
    for _ in 0..2 {
        let out = probe(security.clone(), "mkdir /x 2>/dev/null || echo refused");
        assert_eq!(out, "refused\n");
    }
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
}

/// The cgroup v2 hierarchy (a pure v2 host's root, or a hybrid host's `unified`).
fn cgroup_v2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
}

/// Opens devices from a shell in the v2 cgroup `dir`; prints each open's outcome.
fn open_devices_in_cgroup(dir: &Path, nodes: &Path) -> String {
    let script = format!(
        "echo $$ > {cg}/cgroup.procs || exit 9
         mknod {n}/kmsg c 1 11 && mknod {n}/disk b 8 0 && mknod {n}/null c 1 3 || exit 8
         for d in /dev/kmsg {n}/kmsg {n}/disk {n}/null /dev/null /dev/zero /dev/full \
                  /dev/random /dev/urandom /dev/tty; do
           if err=$( (: < $d) 2>&1); then echo \"$d ok\"; else echo \"$d ${{err##*: }}\"; fi
         done",
        cg = dir.display(),
        n = nodes.display()
    );
    let out = std::process::Command::new("/bin/busybox")
        .args(["sh", "-c", &script])
        .output()
        .expect("busybox sh");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).replace(&nodes.display().to_string(), "N")
}

/// The eBPF device filter (used when the run's cgroup is on v2): a process in a cgroup with
/// the filter cannot open a made or a host node outside Docker's list, on a filesystem
/// without nodev; the listed devices open. A sibling cgroup without it opens them all.
fn cgroup_v2_device_filter_refuses_devices_outside_the_list() {
    let Some(root) = cgroup_v2_root() else {
        println!("no cgroup v2 hierarchy here; skipped");
        return;
    };
    let filtered = root.join(format!("builder-devtest-{}", std::process::id()));
    let open = root.join(format!("builder-devtest-open-{}", std::process::id()));
    std::fs::create_dir(&filtered).unwrap();
    std::fs::create_dir(&open).unwrap();
    executor::attach_device_filter(&filtered).expect("attach");
    let nodes = tempfile::tempdir_in("/dev/shm").expect("tempdir");
    let refused = open_devices_in_cgroup(&filtered, nodes.path());
    std::fs::remove_dir_all(nodes.path()).unwrap();
    std::fs::create_dir(nodes.path()).unwrap();
    let allowed = open_devices_in_cgroup(&open, nodes.path());
    let _ = std::fs::remove_dir(&filtered);
    let _ = std::fs::remove_dir(&open);
    let tty = "/dev/tty No such device or address\n"; // no controlling terminal
    let common = format!(
        "N/null ok\n/dev/null ok\n/dev/zero ok\n/dev/full ok\n/dev/random ok\n/dev/urandom ok\n{tty}"
    );
    let eperm = "Operation not permitted";
    assert_eq!(
        refused,
        format!("/dev/kmsg {eperm}\nN/kmsg {eperm}\nN/disk {eperm}\n{common}")
    );
    assert!(
        allowed.starts_with("/dev/kmsg ok\nN/kmsg ok\n") && allowed.ends_with(&common),
        "{allowed}"
    );
}

/// With the device filter forced onto cgroup v2, a container runs with the listed devices
/// usable, its v1 devices cgroup unrestricted (so the v2 program is what guards), and its
/// v2 cgroup gone afterwards.
fn containers_get_the_v2_device_filter_when_selected() {
    let Some(root) = cgroup_v2_root() else {
        println!("no cgroup v2 hierarchy here; skipped");
        return;
    };
    let rootfs = Rootfs::new();
    std::env::set_var(executor::DEVICE_FILTER_ENV, "v2");
    let spec = rootfs.bind_spec(&[
        "sh",
        "-c",
        "cat /sys/fs/cgroup/devices/devices.list
         for d in null zero full random urandom; do (: < /dev/$d) && echo $d; done
         mknod /dev/kmsg2 c 1 11 && (: < /dev/kmsg2) 2>/dev/null || echo kmsg2 refused
         sleep 1",
    ]);
    let running = std::thread::spawn(move || run(&spec));
    let prefix = format!("{}-", std::process::id());
    let run_cgroups = || -> Vec<PathBuf> {
        std::fs::read_dir(root.join("builder"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while seen.is_empty() && Instant::now() < deadline {
        seen = run_cgroups();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen.len(), 1, "the run's v2 cgroup: {seen:?}");
    assert_eq!(
        executor::device_filters_attached(&seen[0]).expect("query"),
        1
    );
    let out = running.join().expect("run thread");
    std::env::set_var(executor::DEVICE_FILTER_ENV, "bogus");
    let bogus = run(&rootfs.bind_spec(&["true"]));
    std::env::remove_var(executor::DEVICE_FILTER_ENV);
    assert_eq!(out.result.expect("run"), 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "a *:* rwm\nnull\nzero\nfull\nrandom\nurandom\nkmsg2 refused\n"
    );
    match bogus.result {
        Err(ExecError::Setup(m)) => assert!(m.contains("BUILDER_CGROUP_DEVICES=bogus"), "{m}"),
        other => panic!("expected a setup error, got {other:?}"),
    }
    let left = run_cgroups();
    assert!(left.is_empty(), "v2 run cgroups left: {left:?}");
}

/// Hidden argument: stay alive a while (the process a `#!/proc/self/exe` trap started).
const HOLD_ARG: &str = "__hold";

/// Binds of the host's libraries, so that the (dynamically linked) test binary runs inside.
fn host_library_binds() -> Vec<Mount> {
    ["/lib", "/lib64", "/usr"]
        .iter()
        .filter(|dir| Path::new(dir).exists())
        .map(|dir| Mount {
            fstype: "bind".into(),
            source: dir.to_string(),
            target: dir.to_string(),
            options: vec!["rbind".into(), "ro".into()],
        })
        .collect()
}

/// Waits for a process running something other than busybox, keeps its `/proc/PID/exe` open,
/// and once it exited reopens that for writing: CVE-2019-5736's way to the host's binary.
const EXE_ATTACK: &str = r#"touch /ready
for i in $(seq 100); do
  for d in /proc/[0-9]*; do
    exe=$(readlink $d/exe 2>/dev/null) || continue
    [ -n "$exe" ] && [ "$exe" != /bin/busybox ] || continue
    exec 3< $d/exe
    while [ -e $d/exe ] && [ "$(readlink $d/exe)" = "$exe" ]; do sleep 0.05; done
    if echo pwned > /proc/self/fd/3; then echo WROTE; fi > /result 2>&1
    exit 0
  done
  sleep 0.05
done
echo NOT-FOUND > /result"#;

/// A container process waits for `exec` to run the helper binary inside it (a `#!/proc/self/exe`
/// trap) and then tries to overwrite that binary through `/proc/PID/exe`. The helper here is a
/// writable copy, not running anywhere else (as after an upgrade of the binary).
fn helper_binary_cannot_be_overwritten_from_a_container() {
    let rootfs = Rootfs::new();
    let root = rootfs.path().to_path_buf();
    symlink("busybox", root.join("bin/readlink")).expect("symlink");
    let trap = root.join("trap");
    std::fs::write(&trap, format!("#!/proc/self/exe {HOLD_ARG}\n")).expect("trap");
    std::fs::set_permissions(&trap, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let victim_dir = tempfile::tempdir().expect("tempdir");
    let victim = victim_dir.path().join("helper-copy");
    std::fs::copy(std::env::current_exe().unwrap(), &victim).expect("copy");
    let original = std::fs::read(&victim).expect("read");

    let mut attacker = rootfs.bind_spec(&["sh", "-c", EXE_ATTACK]);
    attacker.mounts = host_library_binds();
    // The host's /usr is bound in for the libraries; its programs must not be found first.
    attacker.env = vec!["PATH=/bin".into()];
    let attacker_run = std::thread::spawn(move || run(&attacker));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !root.join("ready").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(pid) = container_pid_running(EXE_ATTACK) else {
        panic!(
            "attacker not found: {:?}",
            attacker_run.join().map(|o| (o.result, o.stderr))
        );
    };
    let exec = ExecSpec {
        args: vec!["/trap".into()],
        enter_pid: Some(pid),
        ..Default::default()
    };
    let executor = Executor::new(victim.clone(), vec![HELPER_ARG.to_string()]);
    let entered = executor.run(&exec, &CancelToken::new(), &mut |_, _| {});
    assert_eq!(entered.expect("exec of the trap"), 0);
    let attacked = attacker_run.join().expect("attacker thread");
    assert_eq!(attacked.result.expect("attacker"), 0, "{}", attacked.stderr);
    let result = std::fs::read_to_string(root.join("result")).expect("result");
    assert!(result.contains("Read-only file system"), "{result}");
    assert!(
        std::fs::read(&victim).expect("read") == original,
        "helper binary was overwritten"
    );
}

/// Host pid of a container's PID 1 whose command line contains `needle`.
fn container_pid_running(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let is_pid_1 = status
                .lines()
                .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1"));
            (is_pid_1 && String::from_utf8_lossy(&cmdline).contains(needle)).then_some(pid)
        })
}

/// A RUN that detaches a background process (setsid, double fork) must not leave it behind.
fn detached_background_processes_end_with_the_run() {
    let rootfs = Rootfs::new();
    symlink("busybox", rootfs.path().join("bin/setsid")).expect("symlink");
    let script = "setsid sh -c 'sleep 731907 & sleep 731907 &' </dev/null >/dev/null 2>&1; exit 0";
    let out = run(&rootfs.bind_spec(&["sh", "-c", script]));
    assert_eq!(out.result.expect("run"), 0, "{}", out.stderr);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !any_process_with_cmdline("731907"),
        "a detached process outlived its run"
    );
    // Cancelled (Ctrl-C) while its detached processes run.
    let script =
        "setsid sh -c 'sleep 731908 & sleep 731908 &' </dev/null >/dev/null 2>&1; sleep 100";
    let cancel = CancelToken::new();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !any_process_with_cmdline("731908") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            cancel.cancel();
        })
    };
    let out = run_with(&rootfs.bind_spec(&["sh", "-c", script]), &cancel);
    canceller.join().expect("join");
    assert!(
        matches!(out.result, Err(ExecError::Cancelled)),
        "{:?}",
        out.result
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !any_process_with_cmdline("731908"),
        "a detached process outlived its cancelled run"
    );
}

/// Body of the [`RUN_CONTAINER_ARG`] child process.
fn run_container_and_hang(rootfs: &str, marker: &str, state_dir: &str) -> ! {
    let spec = ExecSpec {
        rootfs: vec![Mount {
            fstype: "bind".into(),
            source: rootfs.into(),
            target: "/".into(),
            options: vec!["rbind".into()],
        }],
        args: vec![
            "sh".into(),
            "-c".into(),
            format!("sleep 100; echo {marker}"),
        ],
        stdio: executor::Stdio::Null,
        ..Default::default()
    };
    let executor = Executor::current_exe()
        .expect("current_exe")
        .with_state_dir(state_dir.into());
    let result = executor.run(&spec, &CancelToken::new(), &mut |_, _| {});
    eprintln!("container ended unexpectedly: {result:?}");
    std::process::exit(2)
}

fn any_process_with_cmdline(needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(needle))
            .unwrap_or(false)
    })
}

fn nothing_stays_mounted_on_the_host(before: &str, state_dirs_before: &[PathBuf]) {
    let after = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    // Other processes on the machine may mount things meanwhile; only mounts on paths this
    // process's containers used (rootfs dirs, state dirs) count.
    let ours = |mount_point: &str| {
        mount_point.contains(&format!("builder-exec-{}-", std::process::id()))
            || ROOTFS_DIRS
                .lock()
                .unwrap()
                .iter()
                .any(|d| Path::new(mount_point).starts_with(d))
    };
    let new_mounts: Vec<&str> = after
        .lines()
        .filter(|line| !before.lines().any(|b| b == *line))
        .filter(|line| line.split(' ').nth(4).is_some_and(ours))
        .collect();
    assert!(new_mounts.is_empty(), "host mounts left: {new_mounts:?}");
    assert_eq!(
        state_dirs(),
        state_dirs_before,
        "state dirs were left behind"
    );
}

/// This process's state dirs (other processes' may come and go, or be swept meanwhile).
fn state_dirs() -> Vec<PathBuf> {
    let prefix = format!("builder-exec-{}-", std::process::id());
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    dirs.sort();
    dirs
}

/// A named test body.
type TestFn = Box<dyn Fn()>;

fn main() {
    if std::env::args().nth(1).as_deref() == Some(HELPER_ARG) {
        helper_main();
    }
    if std::env::args().nth(1).as_deref() == Some(HOLD_ARG) {
        std::thread::sleep(Duration::from_millis(1500));
        std::process::exit(0);
    }
    if std::env::args().nth(1).as_deref() == Some(CLONE3_ARG) {
        // SAFETY: clone3 with a null argument only reads (and faults on) that pointer.
        let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 64usize) };
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        println!("{}", if rc < 0 { errno } else { 0 });
        std::process::exit(0);
    }
    if std::env::args().nth(1).as_deref() == Some(RUN_CONTAINER_ARG) {
        let args: Vec<String> = std::env::args().collect();
        match (args.get(2), args.get(3), args.get(4)) {
            (Some(rootfs), Some(marker), Some(state)) => {
                run_container_and_hang(rootfs, marker, state)
            }
            _ => std::process::exit(2),
        }
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mountinfo_before = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let state_dirs_before = state_dirs();
    let tests: Vec<(&str, TestFn)> = vec![
        ("echo_output_is_captured", Box::new(echo_output_is_captured)),
        (
            "exit_code_is_passed_through",
            Box::new(exit_code_is_passed_through),
        ),
        (
            "env_is_exact_with_path_default_and_cwd_created",
            Box::new(env_is_exact_with_path_default_and_cwd_created),
        ),
        ("user_by_name_and_by_ids", Box::new(user_by_name_and_by_ids)),
        (
            "unknown_user_is_a_setup_error",
            Box::new(unknown_user_is_a_setup_error),
        ),
        (
            "missing_executable_is_a_setup_error",
            Box::new(missing_executable_is_a_setup_error),
        ),
        (
            "hostname_defaults_and_can_be_set",
            Box::new(hostname_defaults_and_can_be_set),
        ),
        ("pid_namespace_and_proc", Box::new(pid_namespace_and_proc)),
        ("etc_files_are_provided", Box::new(etc_files_are_provided)),
        (
            "network_none_has_only_loopback",
            Box::new(network_none_has_only_loopback),
        ),
        (
            "readonly_bind_and_tmpfs_mounts",
            Box::new(readonly_bind_and_tmpfs_mounts),
        ),
        (
            "readonly_rootfs_rejects_writes",
            Box::new(readonly_rootfs_rejects_writes),
        ),
        (
            "overlay_rootfs_writes_land_in_upper",
            Box::new(overlay_rootfs_writes_land_in_upper),
        ),
        (
            "cancel_kills_the_container_promptly",
            Box::new(cancel_kills_the_container_promptly),
        ),
        (
            "sigpipe_has_default_disposition",
            Box::new(sigpipe_has_default_disposition),
        ),
        (
            "null_stdio_delivers_no_output",
            Box::new(null_stdio_delivers_no_output),
        ),
        (
            "overlay_with_many_long_lowerdirs",
            Box::new(overlay_with_many_long_lowerdirs),
        ),
        (
            "created_stubs_are_reported_and_removable",
            Box::new(created_stubs_are_reported_and_removable),
        ),
        (
            "caller_death_kills_the_container",
            Box::new(caller_death_kills_the_container),
        ),
        (
            "confined_as_docker_confines_a_container",
            Box::new(confined_as_docker_confines_a_container),
        ),
        (
            "cgroup_release_agent_cannot_reach_the_host",
            Box::new(cgroup_release_agent_cannot_reach_the_host),
        ),
        (
            "escape_hatches_widen_confinement",
            Box::new(escape_hatches_widen_confinement),
        ),
        (
            "pids_limit_caps_the_run_and_its_cgroup_goes_away",
            Box::new(pids_limit_caps_the_run_and_its_cgroup_goes_away),
        ),
        (
            "leaked_descriptors_never_reach_the_program",
            Box::new(leaked_descriptors_never_reach_the_program),
        ),
        (
            "mount_targets_in_a_shared_cache_cannot_be_raced_out_of_the_root",
            Box::new(mount_targets_in_a_shared_cache_cannot_be_raced_out_of_the_root),
        ),
        (
            "clone3_is_enosys_under_the_default_profile",
            Box::new(clone3_is_enosys_under_the_default_profile),
        ),
        (
            "given_stdin_and_terminal_reach_the_program",
            Box::new(given_stdin_and_terminal_reach_the_program),
        ),
        (
            "cached_seccomp_filter_confines_like_a_fresh_one",
            Box::new(cached_seccomp_filter_confines_like_a_fresh_one),
        ),
        (
            "cgroup_v2_device_filter_refuses_devices_outside_the_list",
            Box::new(cgroup_v2_device_filter_refuses_devices_outside_the_list),
        ),
        (
            "containers_get_the_v2_device_filter_when_selected",
            Box::new(containers_get_the_v2_device_filter_when_selected),
        ),
        (
            "helper_binary_cannot_be_overwritten_from_a_container",
            Box::new(helper_binary_cannot_be_overwritten_from_a_container),
        ),
        (
            "detached_background_processes_end_with_the_run",
            Box::new(detached_background_processes_end_with_the_run),
        ),
        (
            "nothing_stays_mounted_on_the_host",
            Box::new(move || {
                nothing_stays_mounted_on_the_host(&mountinfo_before, &state_dirs_before)
            }),
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(test)) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
