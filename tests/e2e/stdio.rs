//! A managed container's stdin and terminal (`run -i`/`-t`, `attach`, `start -a -i`,
//! `exec -i`) with real pipes and real pseudo-terminals (`script`), `--init` (tini as PID 1),
//! and the same through compose: `init: true`, `exec` with and without a terminal, and
//! `build.secrets`.

use crate::common::{output_with_stdin, stderr, stdout, Store};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A busybox store whose containers are force-removed at the end.
struct Boxes {
    store: Store,
}

impl Boxes {
    fn new() -> Self {
        Boxes {
            store: Store::with_busybox(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.store.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    fn with_input(&self, args: &[&str], input: &str) -> Output {
        output_with_stdin(self.store.cmd().args(args), input.as_bytes())
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name]).trim().to_string()
    }

    /// `builder --root ROOT ARGS` as one shell line, for `script`.
    fn line(&self, args: &str) -> String {
        format!(
            "{} --root {} {args}",
            env!("CARGO_BIN_EXE_builder"),
            self.store.root().display()
        )
    }

    fn wait_for_logs(&self, name: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = self.ok(&["logs", name]);
            if logs.contains(want) {
                return;
            }
            assert!(Instant::now() < deadline, "logs of {name}: {logs:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Boxes {
    fn drop(&mut self) {
        for id in stdout(&self.store.run(&["ps", "-aq"])).split_whitespace() {
            let _ = self.store.run(&["rm", "-f", id]);
        }
    }
}

/// Runs the shell line `command` under a new pseudo-terminal (`script`), typing `input`;
/// the status is the command's.
fn under_pty(command: &str, input: &str) -> Output {
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    // Closing at once would end the session before the container reads its input.
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(8));
        drop(stdin);
    });
    let out = child.wait_with_output().unwrap();
    drop(closer);
    out
}

#[test]
fn piped_stdin_reaches_run_i_and_its_end_closes_it() {
    let b = Boxes::new();
    let out = b.with_input(&["run", "-i", "--name", "pipe", "busybox", "cat"], "hi\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    assert_eq!(
        b.inspect("pipe", "{{.Config.OpenStdin}} {{.Config.StdinOnce}}"),
        "true true"
    );
    // Without -i the container's stdin is empty, as docker's.
    let out = b.with_input(&["run", "--name", "quiet", "busybox", "cat"], "lost\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // So does a plain foreground run (no monitor): the caller's stdin only with -i.
    let out = b.with_input(&["run", "--rm", "busybox", "cat"], "lost\n");
    assert_eq!(stdout(&out), "", "{}", stderr(&out));
    let out = b.with_input(&["run", "-i", "--rm", "busybox", "cat"], "kept\n");
    assert_eq!(stdout(&out), "kept\n", "{}", stderr(&out));
    // A managed --rm container on the bridge takes its input the same way and gives its
    // exit code.
    let out = b.with_input(
        &[
            "run",
            "-i",
            "--rm",
            "--name",
            "removed",
            "busybox",
            "sh",
            "-c",
            "read x; echo got $x; exit 3",
        ],
        "word\n",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "got word\n");
}

#[test]
fn detached_stdin_stays_open_across_attaches_and_start_a_i_feeds_a_created_one() {
    let b = Boxes::new();
    let script = "while read l; do echo line:$l; done; echo closed";
    b.ok(&[
        "run", "-d", "-i", "--name", "detached", "busybox", "sh", "-c", script,
    ]);
    for word in ["one", "two"] {
        let mut attach = b
            .store
            .cmd()
            .args(["attach", "detached"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        attach
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{word}\n").as_bytes())
            .unwrap();
        b.wait_for_logs("detached", &format!("line:{word}"));
        let _ = attach.kill();
        let _ = attach.wait();
    }
    // The attached clients' ends of file did not close a detached container's stdin.
    assert_eq!(b.inspect("detached", "{{.State.Status}}"), "running");
    assert!(!b.ok(&["logs", "detached"]).contains("closed"));
    assert_eq!(b.inspect("detached", "{{.Config.StdinOnce}}"), "false");

    b.ok(&[
        "create",
        "-i",
        "--name",
        "created",
        "busybox",
        "sh",
        "-c",
        "read x; echo got:$x",
    ]);
    let out = b.with_input(&["start", "-a", "-i", "created"], "three\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "got:three\n");
    // A container made without -i has no stdin to attach to.
    b.ok(&["run", "-d", "--name", "noinput", "busybox", "sleep", "100"]);
    let out = b.with_input(&["attach", "noinput"], "x\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("-i or -t"), "{}", stderr(&out));
    b.ok(&["stop", "-t", "0", "noinput"]);
    let out = b.with_input(&["attach", "noinput"], "x\n");
    assert!(
        stderr(&out).contains("stopped container"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_it_gives_the_container_a_terminal_under_a_real_pty() {
    let b = Boxes::new();
    // The client's terminal size reaches the container's terminal from the start, and a
    // change of it while attached follows.
    // The terminal is the container's own: its path exists there, in a devpts that holds
    // none of the host's terminals.
    let probe = "stty size; tty; test -c $(tty) && echo CHAR-DEV; echo pts: $(ls /dev/pts); \
        sleep 4; [ -t 0 ] && [ -t 1 ] && echo IS-A-TTY $TERM; stty size";
    let line = format!(
        "stty rows 31 cols 97; (sleep 3; stty rows 40 cols 120 </dev/tty) & {}",
        b.line(&format!("run -it --rm busybox sh -c '{probe}'"))
    );
    let out = under_pty(&line, "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("IS-A-TTY xterm"), "{out:?}");
    assert!(
        text.contains("/dev/pts/0\r\nCHAR-DEV\r\npts: 0 ptmx\r\n"),
        "{out:?}"
    );
    let sizes: Vec<&str> = text
        .lines()
        .filter(|l| l.trim().split(' ').all(|w| w.parse::<u16>().is_ok()) && l.contains(' '))
        .map(str::trim)
        .collect();
    assert!(sizes.first() == Some(&"31 97"), "{out:?}");
    assert!(sizes.last() == Some(&"40 120"), "{out:?}");
    // An interactive shell reads what is typed and exits with its status.
    let out = under_pty(
        &b.line("run -it --name sh busybox sh"),
        "echo hello-$((6*7))\nexit 7\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hello-42"), "{out:?}");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(b.inspect("sh", "{{.Config.Tty}}"), "true");
}

#[test]
fn exec_t_gets_a_terminal_of_the_containers_own() {
    let b = Boxes::new();
    b.ok(&[
        "run", "-d", "-t", "--name", "ttybox", "busybox", "sleep", "1000",
    ]);
    // PID 1 of a detached -t container holds the first terminal of the container's devpts.
    assert_eq!(
        b.ok(&["exec", "ttybox", "readlink", "/proc/1/fd/0"]),
        "/dev/pts/0\n"
    );
    let probe = "tty; test -c $(tty) && echo CHAR-DEV; stty size; read x; echo got-$x; \
        seq 1 30000 | tail -n 1";
    let line = format!(
        "stty rows 27 cols 83; {}",
        b.line(&format!("exec -it ttybox sh -c '{probe}'"))
    );
    let out = under_pty(&line, "typed\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let tty = text.lines().find(|l| l.starts_with("/dev/")).unwrap_or("");
    assert!(
        tty.starts_with("/dev/pts/") && tty.trim() != "/dev/pts/0",
        "{out:?}"
    );
    assert!(text.contains("CHAR-DEV\r\n27 83\r\n"), "{out:?}");
    assert!(text.contains("got-typed\r\n"), "{out:?}");
    assert!(
        text.trim_end().ends_with("30000"),
        "the output arrives whole: {out:?}"
    );
    // The terminal belongs to the exec'd user, as runc's console does.
    let owner = b.ok(&[
        "exec",
        "-t",
        "-u",
        "1000",
        "ttybox",
        "sh",
        "-c",
        "stat -c %u $(tty)",
    ]);
    assert_eq!(owner, "1000\r\n");
}

#[test]
fn exec_i_pipes_stdin_without_a_terminal() {
    let b = Boxes::new();
    b.ok(&["run", "-d", "--name", "execbox", "busybox", "sleep", "1000"]);
    let probe = "cat; [ -t 0 ] || echo no-tty";
    let out = b.with_input(&["exec", "-i", "execbox", "sh", "-c", probe], "piped\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "piped\nno-tty\n");
    let out = b.with_input(&["exec", "execbox", "sh", "-c", probe], "piped\n");
    assert_eq!(stdout(&out), "no-tty\n", "without -i stdin is empty");
}

/// Zombie processes in a running container.
fn zombies(b: &Boxes, name: &str) -> usize {
    let stats = b.ok(&["exec", name, "sh", "-c", "cat /proc/[0-9]*/stat"]);
    stats.lines().filter(|l| l.contains(") Z ")).count()
}

#[test]
fn init_runs_tini_as_pid_1_which_reaps_zombies_and_forwards_stop() {
    let b = Boxes::new();
    // The background sleep is orphaned when its subshell exits, and left to PID 1.
    let orphan = "(sleep 0.1 &); exec sleep 1000";
    b.ok(&[
        "run", "-d", "--init", "--name", "withinit", "busybox", "sh", "-c", orphan,
    ]);
    b.ok(&[
        "run", "-d", "--name", "noinit", "busybox", "sh", "-c", orphan,
    ]);
    std::thread::sleep(Duration::from_millis(800));
    let pid1 = b.ok(&["exec", "withinit", "cat", "/proc/1/cmdline"]);
    assert!(pid1.starts_with("/sbin/docker-init\0--\0"), "{pid1:?}");
    assert_eq!(b.inspect("withinit", "{{.HostConfig.Init}}"), "true");
    assert_eq!(zombies(&b, "withinit"), 0, "tini reaps the orphan");
    assert!(
        zombies(&b, "noinit") >= 1,
        "without --init the orphan stays a zombie"
    );
    // tini passes SIGTERM on to sleep (exit 143); sleep as PID 1 ignores it and is killed.
    b.ok(&["stop", "withinit"]);
    assert_eq!(b.inspect("withinit", "{{.State.ExitCode}}"), "143");
    b.ok(&["stop", "-t", "1", "noinit"]);
    assert_eq!(b.inspect("noinit", "{{.State.ExitCode}}"), "137");
    // The init binary is read-only and a foreground run gets it too.
    let out = b.store.run(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "cat /proc/1/comm; echo x > /sbin/docker-init || echo read-only",
    ]);
    assert_eq!(stdout(&out), "docker-init\nread-only\n", "{}", stderr(&out));
    // No init binary: a clear error naming where it was looked for, before anything runs.
    let out = b
        .store
        .cmd()
        .env("BUILDER_INIT", "/nonexistent/tini")
        .args([
            "run",
            "-d",
            "--init",
            "--name",
            "noinitbin",
            "busybox",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("BUILDER_INIT=/nonexistent/tini"),
        "{}",
        stderr(&out)
    );
    assert!(b.store.run(&["inspect", "noinitbin"]).status.code() != Some(0));
}

/// `builder compose -p NAME ARGS` in `dir`.
fn compose(b: &Boxes, dir: &Path, args: &[&str], input: Option<&str>) -> Output {
    let mut c = b.store.cmd();
    c.current_dir(dir)
        .env("BUILD_TOKEN", "env-secret-6d1f")
        .args(["compose", "-p", "stdio"])
        .args(args);
    match input {
        Some(text) => output_with_stdin(&mut c, text.as_bytes()),
        None => c.output().unwrap(),
    }
}

const COMPOSE: &str = "services:
  app:
    build:
      context: ./app
      secrets:
        - tok
        - source: envtok
          target: other
    init: true
    command: [sleep, '1000']
  shell:
    image: busybox
    tty: true
    stdin_open: true
    command: [sh, -c, 'read x; echo got:$$x; [ -t 0 ] && echo TTY']
secrets:
  tok:
    file: ./token.txt
  envtok:
    environment: BUILD_TOKEN
";

const DOCKERFILE: &str = "FROM busybox
RUN --mount=type=secret,id=tok --mount=type=secret,id=other \\
    cat /run/secrets/tok /run/secrets/other | wc -c | tr -d ' ' > /secret-bytes
";

#[test]
fn compose_init_exec_terminal_and_build_secrets() {
    let b = Boxes::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("compose.yaml"), COMPOSE).unwrap();
    // The secret file lies outside the build context, so only the secret mount can read it.
    std::fs::create_dir(d.join("app")).unwrap();
    std::fs::write(d.join("app/Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(d.join("token.txt"), "file-secret-93ab").unwrap();
    let out = compose(&b, d, &["up", "-d"], None);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // Both secrets were read by the RUN step (16 + 15 bytes) and neither stayed anywhere.
    let out = compose(
        &b,
        d,
        &[
            "exec",
            "-T",
            "app",
            "sh",
            "-c",
            "cat /secret-bytes; ls /run/secrets 2>&1",
        ],
        None,
    );
    let text = stdout(&out);
    assert!(text.starts_with("31\n"), "{text:?} {}", stderr(&out));
    assert!(!text.contains("tok"), "{text:?}");
    for secret in ["file-secret-93ab", "env-secret-6d1f"] {
        let grep = Command::new("grep")
            .args(["-r", "-l", "-a", "-s", secret])
            .arg(b.store.root())
            .output()
            .unwrap();
        assert_eq!(stdout(&grep), "", "{secret} leaked into the store");
    }
    let out = compose(
        &b,
        d,
        &["exec", "-T", "app", "cat", "/proc/1/cmdline"],
        None,
    );
    assert!(stdout(&out).starts_with("/sbin/docker-init\0"), "{out:?}");
    // stdin always reaches an exec; -T keeps it from being a terminal.
    let probe = "cat; [ -t 0 ] && echo TTY || echo NO-TTY";
    let out = compose(
        &b,
        d,
        &["exec", "-T", "app", "sh", "-c", probe],
        Some("piped\n"),
    );
    assert_eq!(stdout(&out), "piped\nNO-TTY\n", "{}", stderr(&out));
    let line = |flags: &str| {
        format!(
            "cd {} && BUILD_TOKEN=x {} --root {} compose -p stdio exec {flags} app sh -c '[ -t 0 ] && [ -t 1 ] && echo TTY || echo NO-TTY'",
            d.display(),
            env!("CARGO_BIN_EXE_builder"),
            b.store.root().display()
        )
    };
    let on_pty = String::from_utf8_lossy(&under_pty(&line(""), "").stdout).to_string();
    assert!(
        on_pty.contains("TTY") && !on_pty.contains("NO-TTY"),
        "{on_pty:?}"
    );
    let no_tty = String::from_utf8_lossy(&under_pty(&line("-T"), "").stdout).to_string();
    assert!(no_tty.contains("NO-TTY"), "{no_tty:?}");
    // `run` takes stdin, and a terminal when it has one (not with -T).
    let out = compose(
        &b,
        d,
        &["run", "--rm", "-T", "app", "cat"],
        Some("one-off\n"),
    );
    assert_eq!(stdout(&out), "one-off\n", "{}", stderr(&out));
    let run_line = format!(
        "cd {} && BUILD_TOKEN=x {} --root {} compose -p stdio run --rm app sh -c '[ -t 0 ] && echo ON-TTY'",
        d.display(),
        env!("CARGO_BIN_EXE_builder"),
        b.store.root().display()
    );
    let on_pty = String::from_utf8_lossy(&under_pty(&run_line, "").stdout).to_string();
    assert!(on_pty.contains("ON-TTY"), "{on_pty:?}");
    // tty and stdin_open: a compose container to attach to, with a terminal of its own.
    let out = b.with_input(&["attach", "stdio-shell-1"], "typed\n");
    assert!(stdout(&out).contains("got:typed"), "{out:?}");
    assert!(stdout(&out).contains("TTY"), "{out:?}");
    let out = compose(&b, d, &["down"], None);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Drives argv[2:] on a new pseudo-terminal (python3's `pty`): the steps in argv[1] (JSON:
/// `["expect", TEXT]` waits up to 20 s for TEXT in the output so far, `["send", TEXT]` types
/// it), then waits for the end; prints `EXIT CODE`, then everything the terminal showed.
const PTY_DRIVER: &str = r#"
import json, os, pty, select, sys, time
steps = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
seen = b""
def read_for(seconds):
    global seen
    end = time.time() + seconds
    while time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return False
            if not chunk:
                return False
            seen += chunk
            yield
    return True
for kind, text in steps:
    if kind == "send":
        os.write(fd, text.encode())
        continue
    for _ in read_for(20):
        if text.encode() in seen:
            break
    if text.encode() not in seen:
        print("EXIT timeout waiting for " + repr(text))
        sys.stdout.write(seen.decode(errors="replace"))
        os.kill(pid, 9)
        sys.exit(0)
for _ in read_for(20):
    pass
_, status = os.waitpid(pid, 0)
print("EXIT %d" % os.waitstatus_to_exitcode(status))
sys.stdout.write(seen.decode(errors="replace"))
"#;

/// `builder --root ROOT ARGS` on a pseudo-terminal through [`PTY_DRIVER`]; its exit code
/// (`None`: a step timed out) and what the terminal showed.
fn on_pty(b: &Boxes, steps: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let steps: Vec<[&str; 2]> = steps.iter().map(|(k, t)| [*k, *t]).collect();
    let out = Command::new("python3")
        .args(["-c", PTY_DRIVER, &serde_json::to_string(&steps).unwrap()])
        .arg(env!("CARGO_BIN_EXE_builder"))
        .arg("--root")
        .arg(b.store.root())
        .args(args)
        .output()
        .unwrap();
    let text = stdout(&out);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let code = first.strip_prefix("EXIT ").and_then(|c| c.parse().ok());
    (code, rest.to_string())
}

#[test]
fn detach_keys_leave_the_container_running_and_attach_again() {
    let b = Boxes::new();
    let running = |name: &str| b.inspect(name, "{{.State.Status}}") == "running";
    // Ctrl-P Ctrl-Q (docker's default) detaches `run -it`: exit 0, the shell runs on.
    let (code, text) = on_pty(
        &b,
        &[
            ("expect", "# "),
            ("send", "echo first-$((1+1))\r"),
            ("expect", "first-2"),
            ("send", "\x10\x11"),
        ],
        &["run", "-it", "--name", "dk", "busybox", "sh"],
    );
    assert_eq!(code, Some(0), "{text:?}");
    assert!(running("dk"), "{text:?}");
    // `attach` works again, with keys of its own (a lone first key does not detach).
    let (code, text) = on_pty(
        &b,
        &[
            ("send", "echo again-$((2+3))\r"),
            ("expect", "again-5"),
            ("send", "\x01\x01d"),
        ],
        &["attach", "--detach-keys", "ctrl-a,d", "dk"],
    );
    assert_eq!(code, Some(0), "{text:?}");
    assert!(text.contains("read escape sequence"), "{text:?}");
    assert!(running("dk"), "{text:?}");
    // `start -ai` of a stopped container detaches too, and `exit` still ends the shell.
    b.ok(&["stop", "-t", "1", "dk"]);
    let (code, text) = on_pty(
        &b,
        &[
            ("expect", "# "),
            ("send", "echo third\r"),
            ("expect", "third"),
            ("send", "\x10\x11"),
        ],
        &["start", "-ai", "dk"],
    );
    assert_eq!(code, Some(0), "{text:?}");
    assert!(running("dk"), "{text:?}");
    let (code, text) = on_pty(&b, &[("send", "exit 3\r")], &["attach", "dk"]);
    assert_eq!(code, Some(3), "{text:?}");
    // A detached `run --rm` runs on, and is removed once it stops.
    let (code, text) = on_pty(
        &b,
        &[("expect", "# "), ("send", "\x10\x11")],
        &["run", "--rm", "-it", "--name", "gone", "busybox", "sh"],
    );
    assert_eq!(code, Some(0), "{text:?}");
    assert!(running("gone"), "{text:?}");
    b.ok(&["stop", "-t", "1", "gone"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.store.run(&["inspect", "gone"]).status.success() {
        assert!(Instant::now() < deadline, "gone was not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Bad keys are refused before anything is made, naming the flag.
    let before = b.ok(&["ps", "-aq"]);
    for args in [
        &["run", "-it", "--detach-keys", "ctrl-1", "busybox", "true"][..],
        &["attach", "--detach-keys", "ctrl-", "dk"][..],
    ] {
        let out = b.store.run(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains("--detach-keys"), "{}", stderr(&out));
    }
    assert_eq!(b.ok(&["ps", "-aq"]), before);
}
