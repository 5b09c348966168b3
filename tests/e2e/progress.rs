//! Progress output modes, each checked on a real build.

use crate::common::*;
use std::process::Command;

/// Runs a build inside a pseudo-terminal (util-linux `script`), as a person at a terminal would.
fn build_on_tty(store: &Store, context: &std::path::Path, mode: &str) -> (bool, String) {
    let cmd = format!(
        "{} --root {} build --progress={mode} {}",
        env!("CARGO_BIN_EXE_builder"),
        store.root().display(),
        context.display()
    );
    let out = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn tty_mode_shows_running_steps_cached_steps_and_the_failed_steps_log() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo first-line && echo the-last-line\n",
    )]);
    let (ok, screen) = build_on_tty(&store, ctx.path(), "tty");
    assert!(ok, "{screen}");
    assert!(screen.contains("[+] Building"), "{screen}");
    assert!(screen.contains("RUN echo first-line"), "{screen}");
    assert!(screen.contains("DONE"), "{screen}");
    assert!(screen.contains("FINISHED"), "{screen}");
    // The newest log line is shown next to the running step.
    assert!(screen.contains("the-last-line"), "{screen}");

    let (ok, screen) = build_on_tty(&store, ctx.path(), "auto");
    assert!(ok, "{screen}");
    assert!(
        screen.contains("CACHED"),
        "auto picks the tty view: {screen}"
    );
    assert!(
        screen.contains("\u{1b}["),
        "cursor movement expected: {screen}"
    );

    let bad = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo why-it-failed && exit 3\n",
    )]);
    let (ok, screen) = build_on_tty(&store, bad.path(), "tty");
    assert!(!ok);
    assert!(screen.contains("FAILED"), "{screen}");
    // The log block ends before the Dockerfile excerpt (whose rules are longer dashes).
    let before_excerpt = screen
        .split("\n--------------------")
        .next()
        .unwrap_or_default();
    let tail = before_excerpt.rsplit("------").nth(1).unwrap_or_default();
    assert!(
        tail.contains("why-it-failed"),
        "log tail of the failed step: {screen}"
    );
    assert!(tail.contains("exit code: 3"), "{screen}");
}

#[test]
fn auto_mode_without_a_terminal_is_plain_and_never_clips_logs() {
    let store = Store::with_busybox();
    // 2 MiB of output: BuildKit clips step logs at 1 MiB; we print every line.
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN i=0; while [ $i -lt 32768 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done\n",
    )]);
    let out = store
        .cmd()
        .args(["build", "--progress=auto"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("\u{1b}["), "no escape codes off a terminal");
    assert!(err.contains("line-0-x"));
    assert!(err.contains("line-32767-x"), "last line present");
    assert_eq!(err.matches("xxxxxxxxxx\n").count(), 32768);
}

#[test]
fn the_tty_display_stays_off_the_terminal_while_the_on_error_shell_runs() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        // The file says "inside"; the step's name (shown by the display) does not.
        "FROM busybox\nRUN echo in''side > /x && exit 3\n",
    )]);
    let cmd = format!(
        "{} --root {} build --progress=tty --on-error=shell {}",
        env!("CARGO_BIN_EXE_builder"),
        store.root().display(),
        ctx.path().display()
    );
    // The shell's commands arrive after the display had time to redraw a few times.
    let script =
        format!("(sleep 2; echo 'cat /x'; sleep 1; echo exit) | script -qfec \"{cmd}\" /dev/null");
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = screen.find("step failed").expect("shell notice shown");
    let end = start
        + screen[start..]
            .find("inside")
            .expect("the shell ran cat /x");
    assert!(
        !screen[start..end].contains("Building"),
        "the display redrew over the shell: {:?}",
        &screen[start..end]
    );
    // Afterwards the display is back and reports the failure.
    assert!(screen[end..].contains("exit code: 3"), "{screen}");
}

#[test]
fn plain_mode_groups_lines_by_step_and_stamps_logs_from_the_steps_start() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN sleep 1.5\nRUN echo second-step\n",
    )]);
    let out = store
        .cmd()
        .args(["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    // Each step's run of lines is set apart by a blank line, as BuildKit prints them.
    assert!(text.contains("s\n\n#"), "{text}");
    let stamp: f64 = text
        .lines()
        .find(|l| l.ends_with(" second-step") && !l.contains("RUN"))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no log line: {text}"));
    assert!(
        stamp < 1.0,
        "stamped from the build's start: {stamp}\n{text}"
    );
}
