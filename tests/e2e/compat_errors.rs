//! What `builder build` says on bad input, compared with what BuildKit / docker buildx say:
//! exit codes, the file:line and key phrase on stderr, no image or tag left behind, and a
//! store that still builds afterwards.

use crate::common::{context, stderr, Store};
use std::io::Write as _;
use std::process::{Output, Stdio};

/// Builds with `--progress=plain` and a tag, so that a failure can be checked for leftovers.
fn build_plain(store: &Store, dir: &std::path::Path, extra: &[&str]) -> Output {
    store
        .cmd()
        .args(["build", "--progress=plain", "-t", "broken:latest"])
        .args(extra)
        .arg(dir)
        .output()
        .unwrap()
}

/// Asserts a failed build: exit code 1, every phrase on stderr, and no `broken` tag.
fn assert_fails(store: &Store, dockerfile: &str, extra: &[&str], phrases: &[&str]) {
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let out = build_plain(store, ctx.path(), extra);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{dockerfile:?} should fail: {err}"
    );
    for phrase in phrases {
        assert!(
            err.contains(phrase),
            "{dockerfile:?}: missing {phrase:?} in:\n{err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
    let images = store.run(&["images"]);
    assert!(
        !String::from_utf8_lossy(&images.stdout).contains("broken"),
        "a failed build left a tag"
    );
}

/// The store still builds and tags after the failures.
fn assert_store_usable(store: &Store) {
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo ok > /ok\n")]);
    let out = store.build(ctx.path(), &["-t", "fine:latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn parse_errors_name_file_line_and_phrase() {
    let store = Store::with_busybox();
    assert_fails(
        &store,
        "FROM busybox\nRUNN echo hi\n",
        &[],
        &[
            "Dockerfile:2",
            "unknown instruction: RUNN",
            "did you mean RUN",
        ],
    );
    // Even in a stage the target does not need, and before the first FROM.
    assert_fails(
        &store,
        "FROM busybox AS unused\nRUNN x\nFROM busybox AS b\n",
        &["--target", "b"],
        &[
            "Dockerfile:2",
            "unknown instruction: RUNN (did you mean RUN?)",
        ],
    );
    assert_fails(
        &store,
        "FROMM busybox\n",
        &[],
        &[
            "Dockerfile:1",
            "unknown instruction: FROMM (did you mean FROM?)",
        ],
    );
    assert_fails(
        &store,
        "FROM busybox\nCOPY --foo a b\n",
        &[],
        &["Dockerfile:2", "unknown flag: --foo"],
    );
    assert_fails(
        &store,
        "FROM busybox\nRUN <<EOF\necho hi\n",
        &[],
        &["Dockerfile:2", "heredoc"],
    );
    assert_fails(
        &store,
        "# escape=x\nFROM busybox\n",
        &[],
        &["Dockerfile:1", "invalid escape token"],
    );
    assert_fails(
        &store,
        "# only a comment\n",
        &[],
        &["file with no instructions"],
    );
    assert_fails(&store, "", &[], &["the Dockerfile cannot be empty"]);
    assert_store_usable(&store);
}

#[test]
fn platform_values_are_checked_like_containerd() {
    let store = Store::with_busybox();
    assert_fails(
        &store,
        "FROM --platform=bogus busybox\n",
        &[],
        &[
            "Dockerfile:1",
            "failed to parse platform bogus",
            "unknown operating system or architecture",
        ],
    );
    assert_fails(
        &store,
        "FROM --platform=linux/amd64/v2/x busybox\n",
        &[],
        &["Dockerfile:1", "cannot parse platform specifier"],
    );
    assert_fails(
        &store,
        "FROM busybox\n",
        &["--platform=bogus"],
        &["--platform", "unknown operating system or architecture"],
    );
    assert_store_usable(&store);
}

#[test]
fn solve_errors_match_buildkit_wording() {
    let store = Store::with_busybox();
    assert_fails(
        &store,
        "FROM busybox\nCOPY missing /x\n",
        &[],
        &["Dockerfile:2", "\"/missing\": not found"],
    );
    assert_fails(
        &store,
        "FROM busybox\nRUN exit 3\n",
        &[],
        &[
            "Dockerfile:2",
            "process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3",
        ],
    );
    assert_fails(
        &store,
        "FROM busybox AS a\n",
        &["--target", "nope"],
        &["target stage \"nope\" could not be found"],
    );
    assert_store_usable(&store);
}

#[test]
fn missing_inputs_are_reported_like_docker() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\n")]);
    let out = build_plain(&store, ctx.path(), &["-f", "/nonexistent/Dockerfile"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "failed to read dockerfile: open /nonexistent/Dockerfile: no such file or directory"
        ),
        "{}",
        stderr(&out)
    );
    let out = build_plain(&store, &ctx.path().join("nothere"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unable to prepare context: path")
            && stderr(&out).contains("not found"),
        "{}",
        stderr(&out)
    );
}

fn build_with_stdin(store: &Store, args: &[&str], input: &[u8]) -> Output {
    let mut child = store
        .cmd()
        .args(["build", "--progress=plain"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The file `/f` of an image, read back by running it.
fn file_in_image(store: &Store, image: &str) -> String {
    let out = store.run(&["run", "--rm", image, "cat", "/f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn dockerfile_and_context_from_stdin() {
    let store = Store::with_busybox();
    let ctx = context(&[("f", "from-dir\n")]);

    // -f -: the Dockerfile from stdin, the context from the directory.
    let out = build_with_stdin(
        &store,
        &[
            "-t",
            "dfstdin:latest",
            "-f",
            "-",
            ctx.path().to_str().unwrap(),
        ],
        b"FROM busybox\nCOPY f /f\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_in_image(&store, "dfstdin:latest"), "from-dir\n");

    // -: a tar context (checked by a second tool: made by tar(1)).
    let tarred = context(&[
        ("Dockerfile", "FROM busybox\nCOPY f /f\n"),
        ("f", "from-tar\n"),
    ]);
    let tar = std::process::Command::new("tar")
        .args(["-C", tarred.path().to_str().unwrap(), "-czf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let out = build_with_stdin(&store, &["-t", "tarstdin:latest", "-"], &tar.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_in_image(&store, "tarstdin:latest"), "from-tar\n");

    // -: a lone Dockerfile, with an empty context.
    let out = build_with_stdin(
        &store,
        &["-t", "plainstdin:latest", "-"],
        b"FROM busybox\nRUN echo lone > /f\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_in_image(&store, "plainstdin:latest"), "lone\n");

    // Both from stdin is refused.
    let out = build_with_stdin(&store, &["-f", "-", "-"], b"FROM busybox\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("can't use stdin for both build context and dockerfile"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn empty_continuation_line_is_a_build_check_warning() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo a \\\n\n  b\n")]);
    let out = store
        .cmd()
        .args(["build", "--check"])
        .arg(ctx.path())
        .output()
        .unwrap();
    let text = crate::common::stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("NoEmptyContinuation"), "{text}");
    assert!(text.contains("Dockerfile:4"), "{text}");
}

#[test]
fn stages_may_be_used_before_they_are_defined_but_not_in_a_cycle() {
    let store = Store::with_busybox();
    // BuildKit orders stages by dependency: COPY --from and RUN --mount=from may name a
    // stage defined further down.
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS final\nCOPY --from=later /f /f\nRUN --mount=from=later,target=/l cat /l/f\n\
         FROM busybox AS later\nRUN echo forward > /f\n",
    )]);
    let out = store
        .cmd()
        .args([
            "build",
            "--progress=plain",
            "--target",
            "final",
            "-t",
            "fwd:latest",
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("forward"), "{}", stderr(&out));
    assert_eq!(file_in_image(&store, "fwd:latest"), "forward\n");

    assert_fails(
        &store,
        "FROM busybox AS a\nCOPY --from=b /x /y\nFROM busybox AS b\nCOPY --from=a /x /y\n",
        &["--target", "a"],
        &["Dockerfile:", "circular dependency detected on stage"],
    );
    assert_fails(
        &store,
        "FROM busybox\nCOPY --from=5 /x /y\n",
        &[],
        &["Dockerfile:2", "invalid stage index 5"],
    );
    assert_fails(
        &store,
        "FROM busybox\nCOPY --from=0 /x /y\n",
        &[],
        &["Dockerfile:2", "circular dependency detected on stage: 0"],
    );
    assert_fails(
        &store,
        "FROM busybox AS a\nCOPY --from=a /x /y\n",
        &[],
        &["Dockerfile:2", "circular dependency detected on stage: a"],
    );
    assert_store_usable(&store);
}

#[test]
fn errors_show_a_buildx_style_excerpt_and_warnings_are_summarised() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN true\nRUN exit 3\nRUN true\n",
    )]);
    let out = build_plain(&store, ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("   2 |     RUN true\n   3 | >>> RUN exit 3\n   4 |     RUN true\n"),
        "{err}"
    );

    // A failing build lists its warnings before the error, as buildx does.
    let ctx = context(&[("Dockerfile", "FROM busybox\nMAINTAINER me\nRUN exit 3\n")]);
    let out = build_plain(&store, ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let summary_at = err
        .find("1 warning found:")
        .unwrap_or_else(|| panic!("{err}"));
    let error_at = err
        .find("error: Dockerfile:3")
        .unwrap_or_else(|| panic!("{err}"));
    assert!(summary_at < error_at, "{err}");

    let ctx = context(&[("Dockerfile", "FROM busybox\nMAINTAINER me\nCMD echo hi\n")]);
    let out = build_plain(&store, ctx.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let summary = err
        .split("2 warnings found:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"));
    assert!(summary.contains(" - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)"), "{err}");
    assert!(summary.contains(" - JSONArgsRecommended:"), "{err}");
}

#[test]
fn instruction_arguments_are_checked_with_buildkit_wording() {
    let store = Store::with_busybox();
    let cases: &[(&str, &[&str])] = &[
        (
            "FROM busybox\nARG =x\n",
            &["Dockerfile:2", "ARG names can not be blank"],
        ),
        (
            "FROM busybox\nENV =x\n",
            &["Dockerfile:2", "ENV names can not be blank"],
        ),
        (
            "FROM busybox\nEXPOSE abc\n",
            &["Dockerfile:2", "invalid containerPort: abc"],
        ),
        (
            "FROM busybox\nEXPOSE 80/xyz\n",
            &["Dockerfile:2", "invalid proto: xyz"],
        ),
        (
            "FROM busybox\nHEALTHCHECK CMD\n",
            &["Dockerfile:2", "Missing command after HEALTHCHECK CMD"],
        ),
        (
            "FROM busybox\nCOPY onlyone\n",
            &[
                "Dockerfile:2",
                "COPY requires at least two arguments, but only one was provided",
            ],
        ),
        (
            "FROM busybox\nVOLUME\n",
            &["Dockerfile:2", "VOLUME requires at least one argument"],
        ),
        (
            "FROM busybox a b\n",
            &[
                "Dockerfile:1",
                "FROM requires either one or three arguments",
            ],
        ),
        (
            "FROM busybox AS 1bad\n",
            &["Dockerfile:1", "invalid name for build stage: \"1bad\""],
        ),
        (
            "FROM busybox\nONBUILD FROM x\n",
            &["Dockerfile:2", "FROM isn't allowed as an ONBUILD trigger"],
        ),
    ];
    for (dockerfile, phrases) in cases {
        assert_fails(&store, dockerfile, &[], phrases);
    }
    assert_store_usable(&store);
}

#[test]
fn check_mode_prints_rule_url_position_and_excerpt() {
    let store = Store::new();
    let ctx = context(&[("Dockerfile", "FROM busybox\nMAINTAINER me\nRUN true\n")]);
    let out = store.run(&["build", "--check", ctx.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = crate::common::stdout(&out);
    assert!(
        text.starts_with("Check complete, 1 warning has been found!\n"),
        "{text}"
    );
    assert!(
        text.contains("WARNING: MaintainerDeprecated - https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\n"),
        "{text}"
    );
    assert!(
        text.contains("Dockerfile:2:1: WARN: MaintainerDeprecated:"),
        "{text}"
    );
    assert!(text.contains("   2 | >>> MAINTAINER me\n"), "{text}");
}

#[test]
fn unknown_flags_are_named_like_docker() {
    let store = Store::new();
    let ctx = context(&[("Dockerfile", "FROM busybox\n")]);
    let out = store.run(&["build", "--bogus=1", ctx.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown flag: --bogus"),
        "{}",
        stderr(&out)
    );
    // A bad build-arg is named with its flag.
    let out = store.run(&["build", "--build-arg", "=x", ctx.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--build-arg"), "{}", stderr(&out));
}

#[test]
fn build_arg_without_a_value_takes_it_from_the_environment() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nARG FROM_ENV\nARG UNSET=default\nRUN test \"$FROM_ENV\" = from-env && test \"$UNSET\" = default\n",
    )]);
    let out = store
        .cmd()
        .env("FROM_ENV", "from-env")
        .env_remove("UNSET")
        .args([
            "build",
            "--progress=plain",
            "--build-arg",
            "FROM_ENV",
            "--build-arg",
            "UNSET",
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
