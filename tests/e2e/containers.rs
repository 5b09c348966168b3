//! Containers without a daemon: detached runs, monitors, logs, restart policies, stop/kill,
//! and what is left after a monitor is killed. Real processes in real namespaces.

use crate::common::{stderr, stdout, Store};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A store with busybox whose containers are force-removed at the end, so a failing test
/// leaves no monitor running.
struct Containers {
    store: Store,
}

impl Containers {
    fn new() -> Self {
        Containers {
            store: Store::with_busybox(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.store.run(args);
        assert!(
            out.status.success(),
            "builder {args:?} failed: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name]).trim().to_string()
    }

    fn state_file(&self, name: &str) -> serde_json::Value {
        let id = self.inspect(name, "{{.Id}}");
        let path = self.container_dir(&id).join("state.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.store.root().join("containers").join(id)
    }

    fn wait_for(&self, name: &str, format: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.inspect(name, format);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{format} of {name}: {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = stdout(&self.store.run(&["ps", "-aq"]));
        for id in ids.split_whitespace() {
            let _ = self.store.run(&["rm", "-f", id]);
        }
    }
}

/// Mount points under `dir` in the host's mount table.
fn mounts_under(dir: &std::path::Path) -> usize {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy();
    table
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m.starts_with(dir.as_ref()))
        })
        .count()
}

#[test]
fn detached_container_shows_in_ps_logs_and_inspect_and_is_removed() {
    let c = Containers::new();
    let id = c.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--label",
        "tier=front",
        "busybox",
        "sh",
        "-c",
        "echo hello; echo oops >&2; exec sleep 100",
    ]);
    assert_eq!(id.trim().len(), 64, "run -d prints the id: {id:?}");
    assert_eq!(c.inspect("web", "{{.State.Status}}"), "running");
    assert_eq!(c.inspect("web", "{{.Id}}"), id.trim());
    let pid: u32 = c.inspect("web", "{{.State.Pid}}").parse().unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep", "State.Pid is the container's process");
    let top = c.ok(&["top", "web"]);
    assert!(
        top.contains(&format!("{pid}")) && top.contains("sleep 100"),
        "{top}"
    );

    let ps = c.ok(&["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(ps.trim(), "web running");
    assert_eq!(
        c.ok(&["ps", "-q", "--filter", "label=tier=front"]).trim(),
        &id.trim()[..12]
    );
    assert_eq!(
        c.ok(&["ps", "-q", "--filter", "label=tier=back"]).trim(),
        ""
    );
    assert_eq!(c.ok(&["ps", "-q", "--filter", "status=exited"]).trim(), "");

    let out = c.store.run(&["logs", "web"]);
    assert_eq!(stdout(&out), "hello\n");
    assert_eq!(stderr(&out), "oops\n");
    let log = std::fs::read_to_string(
        c.container_dir(id.trim())
            .join(format!("{}-json.log", id.trim())),
    )
    .unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"], "hello\n");
    assert_eq!(first["stream"], "stdout");
    assert!(first["time"].as_str().unwrap().ends_with('Z'));

    let out = c.store.run(&["rm", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("stop the container before removing or force remove"),
        "{}",
        stderr(&out)
    );
    c.ok(&["rm", "-f", "web"]);
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "rm -f killed the process"
    );
    assert!(!c.container_dir(id.trim()).exists());
    assert_eq!(mounts_under(c.store.root()), 0);
}

#[test]
fn on_failure_2_restarts_exactly_twice() {
    let c = Containers::new();
    c.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 3",
    ]);
    let out = c.store.run(&["wait", "flaky"]);
    assert_eq!(stdout(&out).trim(), "3");
    assert_eq!(c.inspect("flaky", "{{.RestartCount}}"), "2");
    assert_eq!(c.inspect("flaky", "{{.State.Status}}"), "exited");
    assert_eq!(
        c.inspect("flaky", "{{.HostConfig.RestartPolicy.MaximumRetryCount}}"),
        "2"
    );
    assert_eq!(c.ok(&["logs", "flaky"]), "run\nrun\nrun\n");
}

#[test]
fn stop_sends_the_stop_signal_then_kills_after_the_timeout() {
    let c = Containers::new();
    // A PID 1 with a handler for the stop signal exits at once with its own status.
    c.ok(&[
        "run",
        "-d",
        "--name",
        "polite",
        "--stop-signal",
        "SIGUSR1",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 7' USR1; echo ready; while true; do sleep 0.1; done",
    ]);
    c.wait_for_log("polite", "ready\n");
    let begun = Instant::now();
    c.ok(&["stop", "-t", "5", "polite"]);
    assert!(
        begun.elapsed() < Duration::from_secs(3),
        "stop waited for the timeout"
    );
    assert_eq!(c.inspect("polite", "{{.State.ExitCode}}"), "7");
    assert_eq!(c.ok(&["logs", "polite"]), "ready\ngot-usr1\n");

    // A PID 1 without a handler ignores SIGTERM: stop waits the timeout, then SIGKILL (137).
    c.ok(&[
        "run",
        "-d",
        "--name",
        "deaf",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "100",
    ]);
    let begun = Instant::now();
    c.ok(&["stop", "-t", "1", "deaf"]);
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "stop took {took:?}"
    );
    assert_eq!(c.inspect("deaf", "{{.State.ExitCode}}"), "137");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        c.inspect("deaf", "{{.State.Status}}"),
        "exited",
        "a stopped container is not restarted"
    );
    c.ok(&["start", "deaf"]);
    assert_eq!(c.inspect("deaf", "{{.State.Status}}"), "running");
    c.ok(&["kill", "deaf"]);
    c.wait_for("deaf", "{{.State.Status}}", "exited");
}

impl Containers {
    fn wait_for_log(&self, name: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ok(&["logs", name]) != want {
            assert!(
                Instant::now() < deadline,
                "log of {name} never became {want:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn logs_follow_tail_and_timestamps() {
    let c = Containers::new();
    c.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.3; done",
    ]);
    let begun = Instant::now();
    let followed = c.ok(&["logs", "-f", "talker"]);
    assert_eq!(followed, "line1\nline2\nline3\n");
    assert!(
        begun.elapsed() >= Duration::from_millis(300),
        "logs -f returned before the end"
    );
    assert_eq!(c.ok(&["logs", "--tail", "1", "talker"]), "line3\n");
    let stamped = c.ok(&["logs", "-t", "--tail", "2", "talker"]);
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].ends_with("Z line2"), "{stamped}");
    assert_eq!(
        c.ok(&["logs", "--since", "2000-01-01T00:00:00Z", "talker"])
            .lines()
            .count(),
        3
    );
    assert_eq!(
        c.ok(&["logs", "--since", "2999-01-01T00:00:00Z", "talker"]),
        ""
    );
    let out = c.store.run(&["logs", "--tail", "x", "talker"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("--tail"), "{}", stderr(&out));
}

#[test]
fn log_files_rotate_at_max_size() {
    let c = Containers::new();
    let id = c.ok(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=2",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    let id = id.trim();
    assert_eq!(stdout(&c.store.run(&["wait", id])).trim(), "0");
    let dir = c.container_dir(id);
    let current = dir.join(format!("{id}-json.log"));
    assert!(std::fs::metadata(&current).unwrap().len() < 2048);
    assert!(dir.join(format!("{id}-json.log.1")).exists());
    assert!(!dir.join(format!("{id}-json.log.2")).exists());
    let logs = c.ok(&["logs", id]);
    assert!(logs.ends_with("line-199\n"));
    assert!(
        !logs.starts_with("line-0\n"),
        "the oldest lines were rotated away"
    );
}

#[test]
fn bad_commands_and_names_give_docker_exit_codes() {
    let c = Containers::new();
    let out = c
        .store
        .run(&["run", "-d", "--name", "nope", "busybox", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-program"), "{}", stderr(&out));
    assert_eq!(c.inspect("nope", "{{.State.ExitCode}}"), "127");

    let out = c
        .store
        .run(&["run", "-d", "--name", "nope", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("is already in use"),
        "{}",
        stderr(&out)
    );
    let out = c
        .store
        .run(&["run", "-d", "--restart", "sometimes", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("--restart"), "{}", stderr(&out));
    let out = c
        .store
        .run(&["run", "-d", "--name", "bad/name", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let out = c.store.run(&["stop", "ghost"]);
    assert!(
        stderr(&out).contains("No such container: ghost"),
        "{}",
        stderr(&out)
    );
    // Nothing half-made: only the one container exists.
    assert_eq!(c.ok(&["ps", "-aq"]).lines().count(), 1);

    // Foreground run with a name is a managed container; its exit code is the program's.
    let out = c.store.run(&[
        "run",
        "--name",
        "fg",
        "busybox",
        "sh",
        "-c",
        "echo hi; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(stdout(&out), "hi\n");
    c.ok(&["run", "--rm", "-d", "--name", "gone", "busybox", "true"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.ok(&["ps", "-aq", "--filter", "name=gone"]).trim() != "" {
        assert!(Instant::now() < deadline, "--rm container was not removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pruned = c.ok(&["container", "prune", "-f"]);
    assert_eq!(
        pruned.lines().count(),
        2,
        "prune removes nope and fg: {pruned}"
    );
    assert_eq!(c.ok(&["ps", "-aq"]), "");
}

#[test]
fn killing_the_monitor_leaks_nothing_and_restartable_containers_come_back() {
    let c = Containers::new();
    c.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--restart",
        "unless-stopped",
        "busybox",
        "sleep",
        "100",
    ]);
    c.ok(&[
        "run",
        "-d",
        "--name",
        "held",
        "--restart",
        "unless-stopped",
        "busybox",
        "sleep",
        "100",
    ]);
    c.ok(&["stop", "-t", "0", "held"]);
    let pid: u32 = c.inspect("svc", "{{.State.Pid}}").parse().unwrap();
    let monitor = c.state_file("svc")["monitor_pid"].as_u64().unwrap();
    // The rootfs is mounted only inside the container; the host sees just svc's netns file.
    assert_eq!(mounts_under(c.store.root()), 1);
    // SIGKILL of the monitor: the container dies with it (parent-death signal chain).
    std::process::Command::new("kill")
        .args(["-9", &monitor.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while PathBuf::from(format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "container outlived its monitor");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The next command notices and records the exit.
    assert_eq!(c.inspect("svc", "{{.State.Status}}"), "exited");
    assert_eq!(c.inspect("svc", "{{.State.ExitCode}}"), "137");
    assert_eq!(mounts_under(c.store.root()), 0);
    // As after a reboot: `unless-stopped` comes back unless the user stopped it.
    assert_eq!(c.ok(&["container", "start-restartable"]).trim(), "svc");
    assert_eq!(c.inspect("svc", "{{.State.Status}}"), "running");
    assert_eq!(c.inspect("held", "{{.State.Status}}"), "exited");
    c.ok(&["restart", "-t", "0", "svc"]);
    assert_eq!(c.inspect("svc", "{{.State.Status}}"), "running");
}

#[test]
fn exec_joins_the_running_container() {
    let c = Containers::new();
    c.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "-e",
        "FROM_RUN=1",
        "--hostname",
        "boxhost",
        "busybox",
        "sh",
        "-c",
        "echo marker > /tmp/inside; exec sleep 100",
    ]);
    c.wait_for_log("box", "");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = c.store.run(&["exec", "box", "cat", "/tmp/inside"]);
        if out.status.success() {
            assert_eq!(
                stdout(&out),
                "marker\n",
                "exec sees the container's filesystem"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{}", stderr(&out));
        std::thread::sleep(Duration::from_millis(50));
    }
    // An exec'd process is confined as the container is: docker's capabilities and seccomp.
    let out = c.store.run(&[
        "exec",
        "box",
        "grep",
        "-E",
        "^(CapEff|Seccomp):",
        "/proc/self/status",
    ]);
    assert_eq!(
        stdout(&out),
        "CapEff:\t00000000a80425fb\nSeccomp:\t2\n",
        "{}",
        stderr(&out)
    );
    // ... and kept to the device allow-list in a devices cgroup of its run (it stayed in the
    // host's root devices cgroup, unrestricted, before).
    if std::path::Path::new("/sys/fs/cgroup/devices/devices.allow").exists() {
        let out = c.ok(&["exec", "box", "grep", ":devices:", "/proc/self/cgroup"]);
        assert!(out.contains(":devices:/builder/"), "{out}");
    }
    let out = c.store.run(&[
        "exec",
        "-e",
        "EXTRA=2",
        "-u",
        "65534",
        "-w",
        "/tmp",
        "box",
        "sh",
        "-c",
        "echo $FROM_RUN$EXTRA $(id -u) $(pwd) $(hostname) $$; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5));
    let words: Vec<String> = stdout(&out).split_whitespace().map(String::from).collect();
    assert_eq!(&words[..4], ["12", "65534", "/tmp", "boxhost"]);
    assert_ne!(
        words[4], "1",
        "the exec'd shell is not the container's PID 1"
    );
    let pid1 = c.ok(&["exec", "box", "cat", "/proc/1/comm"]);
    assert_eq!(
        pid1.trim(),
        "sleep",
        "exec is in the container's pid namespace"
    );

    let out = c.store.run(&["exec", "box", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr(&out).contains("no-such-program"), "{}", stderr(&out));

    // -it under a real pty: the terminal reaches the process.
    let cmd = format!(
        "{} --root {} exec -it box sh -c '[ -t 0 ] && [ -t 1 ] && echo is-a-tty'",
        env!("CARGO_BIN_EXE_builder"),
        c.store.root().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is-a-tty"),
        "{:?}",
        out
    );

    c.ok(&["stop", "-t", "0", "box"]);
    let out = c.store.run(&["exec", "box", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("is not running"), "{}", stderr(&out));
}

#[test]
fn health_turns_healthy_and_keeps_the_last_five_results() {
    let c = Containers::new();
    c.ok(&[
        "run",
        "-d",
        "--name",
        "doc",
        "--health-cmd",
        "cat /tmp/ready",
        "--health-interval",
        "100ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "100",
    ]);
    c.wait_for("doc", "{{.State.Health.Status}}", "unhealthy");
    c.ok(&["exec", "doc", "sh", "-c", "echo fine > /tmp/ready"]);
    c.wait_for("doc", "{{.State.Health.Status}}", "healthy");
    assert!(c
        .ok(&["ps", "--format", "{{.Status}}"])
        .contains("(healthy)"));
    std::thread::sleep(Duration::from_millis(800));
    let log: Vec<serde_json::Value> =
        serde_json::from_str(&c.inspect("doc", "{{json .State.Health.Log}}")).unwrap();
    assert_eq!(log.len(), 5);
    assert_eq!(log[4]["ExitCode"], 0);
    assert_eq!(log[4]["Output"], "fine\n");
    c.ok(&["rm", "-f", "doc"]);

    let out = c.store.run(&[
        "run",
        "-d",
        "--health-interval",
        "soon",
        "--health-cmd",
        "true",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("--health-interval"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cp_copies_both_ways_and_symlinks_cannot_reach_the_host() {
    let c = Containers::new();
    c.ok(&[
        "run",
        "-d",
        "--name",
        "files",
        "busybox",
        "sh",
        "-c",
        "echo inside > /tmp/f && ln -s / /tmp/esc && echo ready && exec sleep 100",
    ]);
    c.wait_for_log("files", "ready\n");
    let host = tempfile::tempdir().unwrap();
    c.ok(&["cp", "files:/tmp/f", host.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("f")).unwrap(),
        "inside\n"
    );
    let name = format!("escaped-{}", std::process::id());
    let src = host.path().join(&name);
    std::fs::write(&src, "payload\n").unwrap();
    // /tmp/esc points at / inside the container: the file lands in the container's root.
    c.ok(&[
        "cp",
        src.to_str().unwrap(),
        &format!("files:/tmp/esc/{name}"),
    ]);
    assert!(
        !std::path::Path::new("/").join(&name).exists(),
        "cp wrote through a symlink onto the host"
    );
    assert_eq!(
        c.ok(&["exec", "files", "cat", &format!("/{name}")]),
        "payload\n"
    );
    let out = c
        .store
        .run(&["cp", "files:/no/such", host.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("Could not find the file /no/such"),
        "{}",
        stderr(&out)
    );
}
