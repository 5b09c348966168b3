//! Image config and history compared with what BuildKit's Dockerfile frontend writes for the
//! same Dockerfile: the expected texts follow dockerfile2llb's formatting (Go's `%v`/`%q`).

use crate::common::{context, skopeo_config, stderr, Store};
use serde_json::{json, Value};

/// Builds the context as `app` and returns the image config JSON.
fn build_config(store: &Store, files: &[(&str, &str)], flags: &[&str]) -> Value {
    let ctx = context(files);
    let mut args = vec!["-t", "app"];
    args.extend_from_slice(flags);
    let out = store.build(ctx.path(), &args);
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    let inspect = store.run(&["inspect", "app"]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    info["Config"].clone()
}

/// The history entries the build added (after the base image's own), as
/// (created_by, empty_layer); every one carries BuildKit's comment.
fn new_history(config: &Value, base_entries: usize) -> Vec<(String, bool)> {
    let history = config["history"].as_array().unwrap();
    history[base_entries..]
        .iter()
        .map(|h| {
            assert_eq!(h["comment"], "buildkit.dockerfile.v0", "{h}");
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn entries(expected: &[(&str, bool)]) -> Vec<(String, bool)> {
    expected.iter().map(|(s, e)| (s.to_string(), *e)).collect()
}

fn target_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn every_instruction_writes_buildkits_history_text() {
    let store = Store::with_busybox();
    let dockerfile = r#"FROM busybox
ARG A=1
ARG B
ENV E=x
LABEL "com.example.name"="a b" k=v
RUN echo hi
RUN ["echo", "hi"]
COPY --chmod=644 f.txt /d/
ADD f.txt /added
COPY <<EOF /greeting
hello
EOF
WORKDIR app
WORKDIR /
EXPOSE 80 443/udp 8000-8001
VOLUME /data /logs
USER 1000:1000
STOPSIGNAL SIGKILL
SHELL ["/bin/sh", "-ec"]
HEALTHCHECK --interval=30s --retries=3 CMD wget -q localhost
ONBUILD RUN echo on
MAINTAINER Jane Doe <jane@example.com>
ENTRYPOINT ["/bin/sh"]
CMD echo cmd
"#;
    let config = build_config(
        &store,
        &[("Dockerfile", dockerfile), ("f.txt", "file\n")],
        &[],
    );
    let expected = entries(&[
        ("ARG A=1", true),
        ("ARG B", true),
        ("ENV E=x", true),
        ("LABEL com.example.name=a b k=v", true),
        ("RUN |2 A=1 B= /bin/sh -c echo hi # buildkit", false),
        ("RUN |2 A=1 B= echo hi # buildkit", false),
        ("COPY --chmod=644 f.txt /d/ # buildkit", false),
        ("ADD f.txt /added # buildkit", false),
        ("COPY <<EOF /greeting # buildkit", false),
        ("WORKDIR /app", false),
        ("WORKDIR /", true),
        (
            "EXPOSE map[443/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{}]",
            true,
        ),
        ("VOLUME [/data /logs]", true),
        ("USER 1000:1000", true),
        ("STOPSIGNAL SIGKILL", true),
        ("SHELL [/bin/sh -ec]", true),
        (
            "HEALTHCHECK {Test:[CMD-SHELL wget -q localhost] Interval:30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}",
            true,
        ),
        ("MAINTAINER Jane Doe <jane@example.com>", true),
        ("ENTRYPOINT [\"/bin/sh\"]", true),
        ("CMD [\"/bin/sh\" \"-ec\" \"echo cmd\"]", true),
    ]);
    assert_eq!(new_history(&config, 1), expected);
    // One layer per history entry that has one: the base, 2 RUN, 3 COPY/ADD, WORKDIR /app.
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 7);

    let c = &config["config"];
    assert_eq!(c["ArgsEscaped"], true, "BuildKit marks every CMD escaped");
    assert_eq!(c["Cmd"], json!(["/bin/sh", "-ec", "echo cmd"]));
    assert_eq!(c["Entrypoint"], json!(["/bin/sh"]));
    assert_eq!(
        c["Env"],
        json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "E=x"
        ])
    );
    assert_eq!(
        c["ExposedPorts"],
        json!({"443/udp": {}, "80/tcp": {}, "8000/tcp": {}, "8001/tcp": {}})
    );
    assert_eq!(
        c["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 30_000_000_000i64, "Retries": 3})
    );
    assert_eq!(c["Labels"], json!({"com.example.name": "a b", "k": "v"}));
    assert_eq!(c["OnBuild"], json!(["RUN echo on"]));
    assert_eq!(c["Shell"], json!(["/bin/sh", "-ec"]));
    assert_eq!(c["StopSignal"], "SIGKILL");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Volumes"], json!({"/data": {}, "/logs": {}}));
    assert_eq!(c["WorkingDir"], "/");
    assert_eq!(config["author"], "Jane Doe <jane@example.com>");
}

#[test]
fn build_args_scope_values_and_run_history_prefix() {
    let store = Store::with_busybox();
    let dockerfile = r#"ARG GLOBAL=g
ARG NOVAL
FROM busybox AS base
ARG GLOBAL
ARG NOVAL
ARG OVER=default
ENV OVER=fromenv
ARG TARGETARCH
RUN echo "${NOVAL-unset}" > /noval && echo "$GLOBAL" > /global && echo "$OVER" > /over
FROM base
ARG LATE=${GLOBAL}x
RUN echo "$GLOBAL $LATE" > /inherited
"#;
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let local = dir.path().join("fs");
    let out = store.build(
        ctx.path(),
        &[
            "--build-arg",
            "GLOBAL=cli",
            &format!("--output=type=oci,dest={}", archive.display()),
            &format!("--output=type=local,dest={}", local.display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |name: &str| std::fs::read_to_string(local.join(name)).unwrap();
    // An ARG without a value (here or globally) stays unset; ENV wins over ARG.
    assert_eq!(read("noval"), "unset\n");
    assert_eq!(read("global"), "cli\n");
    assert_eq!(read("over"), "fromenv\n");
    // A stage built on another keeps its ARGs, as in BuildKit.
    assert_eq!(read("inherited"), "cli clix\n");

    let config = skopeo_config(&archive);
    let arch = target_arch();
    let expected = entries(&[
        ("ARG GLOBAL=cli", true),
        ("ARG NOVAL", true),
        ("ARG OVER=default", true),
        ("ENV OVER=fromenv", true),
        (&format!("ARG TARGETARCH={arch}"), true),
        (
            &format!("RUN |4 GLOBAL=cli NOVAL= OVER=fromenv TARGETARCH={arch} /bin/sh -c echo \"${{NOVAL-unset}}\" > /noval && echo \"$GLOBAL\" > /global && echo \"$OVER\" > /over # buildkit"),
            false,
        ),
        ("ARG LATE=clix", true),
        (
            &format!("RUN |5 GLOBAL=cli NOVAL= OVER=fromenv TARGETARCH={arch} LATE=clix /bin/sh -c echo \"$GLOBAL $LATE\" > /inherited # buildkit"),
            false,
        ),
    ]);
    assert_eq!(new_history(&config, 1), expected);
    // ARG values never reach the image's environment.
    assert_eq!(
        config["config"]["Env"],
        json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "OVER=fromenv"
        ])
    );
}

#[test]
fn scratch_images_start_with_root_workdir_and_default_path() {
    let store = Store::new();
    let config = build_config(
        &store,
        &[
            ("Dockerfile", "FROM scratch\nCOPY f.txt /\n"),
            ("f.txt", "x\n"),
        ],
        &[],
    );
    assert_eq!(config["config"]["WorkingDir"], "/");
    assert_eq!(
        config["config"]["Env"],
        json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], target_arch());
    assert_eq!(
        new_history(&config, 0),
        entries(&[("COPY f.txt / # buildkit", false)])
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
}

#[test]
fn cmd_and_entrypoint_follow_buildkit() {
    let store = Store::with_busybox();
    let dockerfile = r#"FROM busybox AS base
CMD ["base"]
FROM base AS reset
ENTRYPOINT ["/bin/echo"]
FROM base AS kept
CMD [echo, hi]
ENTRYPOINT /bin/echo
"#;
    let files = [("Dockerfile", dockerfile)];
    let reset = build_config(&store, &files, &["--target", "reset"]);
    let c = &reset["config"];
    assert!(
        c.get("Cmd").is_none(),
        "ENTRYPOINT resets the base's CMD: {c}"
    );
    assert_eq!(c["Entrypoint"], json!(["/bin/echo"]));
    assert_eq!(
        c["ArgsEscaped"], true,
        "inherited from the base stage's CMD"
    );

    let kept = build_config(&store, &files, &["--target", "kept"]);
    let c = &kept["config"];
    // Not valid JSON: the shell form.
    assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "[echo, hi]"]));
    assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/echo"]));
    assert_eq!(
        new_history(&kept, 1),
        entries(&[
            ("CMD [\"base\"]", true),
            ("CMD [\"/bin/sh\" \"-c\" \"[echo, hi]\"]", true),
            ("ENTRYPOINT [\"/bin/sh\" \"-c\" \"/bin/echo\"]", true),
        ])
    );
}

#[test]
fn healthchecks_keep_every_flag() {
    let store = Store::with_busybox();
    let dockerfile = r#"FROM busybox AS checked
HEALTHCHECK --interval=1m30s --timeout=5s --start-period=1s --start-interval=500ms --retries=2 CMD ["wget", "-q", "x"]
FROM checked AS unchecked
HEALTHCHECK NONE
"#;
    let files = [("Dockerfile", dockerfile)];
    let checked = build_config(&store, &files, &["--target", "checked"]);
    assert_eq!(
        checked["config"]["Healthcheck"],
        json!({
            "Test": ["CMD", "wget", "-q", "x"],
            "Interval": 90_000_000_000i64,
            "Timeout": 5_000_000_000i64,
            "StartPeriod": 1_000_000_000i64,
            "StartInterval": 500_000_000i64,
            "Retries": 2
        })
    );
    let unchecked = build_config(&store, &files, &[]);
    assert_eq!(
        unchecked["config"]["Healthcheck"],
        json!({"Test": ["NONE"]})
    );
    assert_eq!(
        new_history(&unchecked, 1),
        entries(&[
            ("HEALTHCHECK {Test:[CMD wget -q x] Interval:1m30s Timeout:5s StartPeriod:1s StartInterval:500ms Retries:2}", true),
            ("HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}", true),
        ])
    );
}

#[test]
fn expose_and_volume_expand_variables() {
    let store = Store::with_busybox();
    let dockerfile = r#"FROM busybox
ARG PORTS="80 9000-9001/udp"
ENV DIR=/srv
EXPOSE $PORTS 53/UDP
VOLUME [" $DIR/data "]
STOPSIGNAL sigterm
"#;
    let config = build_config(&store, &[("Dockerfile", dockerfile)], &[]);
    assert_eq!(
        config["config"]["ExposedPorts"],
        json!({"53/udp": {}, "80/tcp": {}, "9000/udp": {}, "9001/udp": {}})
    );
    assert_eq!(config["config"]["Volumes"], json!({"/srv/data": {}}));
    assert_eq!(config["config"]["StopSignal"], "sigterm");
    assert_eq!(
        new_history(&config, 1)[2..],
        entries(&[
            (
                "EXPOSE map[53/udp:{} 80/tcp:{} 9000/udp:{} 9001/udp:{}]",
                true
            ),
            ("VOLUME [/srv/data]", true),
            ("STOPSIGNAL sigterm", true),
        ])
    );
}

#[test]
fn metadata_steps_take_the_time_of_the_next_new_layer() {
    let store = Store::with_busybox();
    // The base image was made before this build started.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let config = build_config(
        &store,
        &[(
            "Dockerfile",
            "FROM busybox\nENV A=1\nRUN echo > /x\nLABEL l=1\n",
        )],
        &[],
    );
    let history = config["history"].as_array().unwrap();
    let created: Vec<&str> = history
        .iter()
        .map(|h| h["created"].as_str().unwrap())
        .collect();
    assert_ne!(created[0], created[2], "base and new layer differ in time");
    assert_eq!(created[1], created[2], "ENV before the first new layer");
    assert_eq!(created[3], created[2], "LABEL after it");
    assert_eq!(config["created"], created[3]);
}

#[test]
fn bad_instruction_values_are_errors_with_their_line() {
    let store = Store::with_busybox();
    for (line, expected) in [
        ("EXPOSE 80/xyz", "invalid proto: xyz"),
        ("EXPOSE http", "invalid containerPort: http"),
        ("STOPSIGNAL SIGNOPE", "Invalid signal: SIGNOPE"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        (
            "HEALTHCHECK --retries=-1 CMD true",
            "--retries cannot be negative",
        ),
        ("WORKDIR $UNSET", "cannot normalize nothing"),
    ] {
        let ctx = context(&[("Dockerfile", &format!("FROM busybox\n{line}\n"))]);
        let out = store.build(ctx.path(), &["-t", "bad"]);
        assert!(!out.status.success(), "{line} was accepted");
        let err = stderr(&out);
        assert!(err.contains("Dockerfile:2:"), "{line}: {err}");
        assert!(err.contains(expected), "{line}: {err}");
    }
    let ctx = context(&[("Dockerfile", "FROM busybox AS 1st\n")]);
    let out = store.build(ctx.path(), &["-t", "bad"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("Dockerfile:1:1: invalid name for build stage: \"1st\""),
        "{err}"
    );
}

#[test]
fn env_pairs_see_old_values_and_arg_defaults_see_earlier_args() {
    let store = Store::with_busybox();
    let dockerfile = r#"FROM busybox
ENV abc=hello
ENV abc=bye def=$abc
ENV ghi=$abc
ARG ONE=1 TWO=${ONE}2
ENV LEGACY old  style
USER ${NOBODY}
"#;
    let config = build_config(&store, &[("Dockerfile", dockerfile)], &[]);
    assert_eq!(
        config["config"]["Env"],
        json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "abc=bye",
            "def=hello",
            "ghi=bye",
            "LEGACY=old  style"
        ])
    );
    assert_eq!(
        new_history(&config, 1),
        entries(&[
            ("ENV abc=hello", true),
            ("ENV abc=bye def=hello", true),
            ("ENV ghi=bye", true),
            ("ARG ONE=1 TWO=12", true),
            ("ENV LEGACY=old  style", true),
            ("USER ", true),
        ])
    );
    assert!(
        config["config"].get("User").is_none(),
        "an empty USER is left out"
    );
}

#[test]
fn a_requested_platform_names_the_image_even_over_a_build_platform_base() {
    let store = Store::with_busybox();
    let other = if target_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let dockerfile = "FROM --platform=$BUILDPLATFORM busybox\nARG TARGETPLATFORM\nRUN echo $TARGETPLATFORM > /p\n";
    let platform = format!("linux/{other}");
    let config = build_config(
        &store,
        &[("Dockerfile", dockerfile)],
        &["--platform", &platform],
    );
    assert_eq!(config["architecture"], other);
    assert_eq!(config["os"], "linux");
    assert_eq!(
        new_history(&config, 1),
        entries(&[
            (&format!("ARG TARGETPLATFORM={platform}"), true),
            (
                &format!("RUN |1 TARGETPLATFORM={platform} /bin/sh -c echo $TARGETPLATFORM > /p # buildkit"),
                false
            ),
        ])
    );
}

#[test]
fn proxy_build_args_reach_run_without_arg_and_stay_out_of_history() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo \"$HTTP_PROXY $http_proxy [$NOT_DECLARED]\" > /p\nENTRYPOINT []\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let local = dir.path().join("fs");
    let out = store.build(
        ctx.path(),
        &[
            "--build-arg",
            "http_proxy=http://proxy:3128",
            "--build-arg",
            "NOT_DECLARED=x",
            &format!("--output=type=oci,dest={}", archive.display()),
            &format!("--output=type=local,dest={}", local.display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(local.join("p")).unwrap(),
        "http://proxy:3128 http://proxy:3128 []\n"
    );
    let config = skopeo_config(&archive);
    assert_eq!(
        new_history(&config, 1),
        entries(&[
            (
                "RUN /bin/sh -c echo \"$HTTP_PROXY $http_proxy [$NOT_DECLARED]\" > /p # buildkit",
                false
            ),
            ("ENTRYPOINT []", true),
        ])
    );
    // An empty ENTRYPOINT is left out (Go's omitempty), and so is the base's CMD it resets.
    assert!(config["config"].get("Entrypoint").is_none(), "{config}");
    assert!(config["config"].get("Cmd").is_none(), "{config}");
}

#[test]
fn labels_are_inherited_overridden_and_set_by_the_label_flag() {
    let store = Store::with_busybox();
    let dockerfile = r#"FROM busybox AS base
LABEL a=base b=base
FROM base
ARG V=2
LABEL b="over ${V}" "c d"=e
"#;
    let config = build_config(
        &store,
        &[("Dockerfile", dockerfile)],
        &["--label", "a=flag", "--label", "empty"],
    );
    assert_eq!(
        config["config"]["Labels"],
        json!({"a": "flag", "b": "over 2", "c d": "e", "empty": ""})
    );
    assert_eq!(
        new_history(&config, 1),
        entries(&[
            ("LABEL a=base b=base", true),
            ("ARG V=2", true),
            ("LABEL b=over 2 c d=e", true),
        ])
    );
}

#[test]
fn an_arg_set_after_an_env_of_the_same_name_shadows_it_until_the_next_env() {
    let store = Store::with_busybox();
    let dockerfile = r#"FROM busybox
ENV V=env
ARG V=arg
RUN echo $V > /v
ENV W=$V
ENV V=env2
RUN echo $V > /v2
"#;
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let local = dir.path().join("fs");
    let out = store.build(
        ctx.path(),
        &[
            &format!("--output=type=oci,dest={}", archive.display()),
            &format!("--output=type=local,dest={}", local.display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |name: &str| std::fs::read_to_string(local.join(name)).unwrap();
    assert_eq!(read("v"), "arg\n");
    assert_eq!(read("v2"), "env2\n");
    let config = skopeo_config(&archive);
    assert_eq!(
        config["config"]["Env"],
        json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "V=env2",
            "W=arg"
        ])
    );
    assert_eq!(
        new_history(&config, 1),
        entries(&[
            ("ENV V=env", true),
            ("ARG V=arg", true),
            ("RUN |1 V=arg /bin/sh -c echo $V > /v # buildkit", false),
            ("ENV W=arg", true),
            ("ENV V=env2", true),
            ("RUN |1 V=env2 /bin/sh -c echo $V > /v2 # buildkit", false),
        ])
    );
}

#[test]
fn a_base_image_shell_is_used_for_the_next_builds_shell_forms() {
    let store = Store::with_busybox();
    let base = context(&[("Dockerfile", "FROM busybox\nSHELL [\"/bin/sh\", \"-ec\"]\n")]);
    let out = store.build(base.path(), &["-t", "shelled"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = build_config(
        &store,
        &[("Dockerfile", "FROM shelled\nRUN true\nCMD run\n")],
        &[],
    );
    assert_eq!(config["config"]["Cmd"], json!(["/bin/sh", "-ec", "run"]));
    assert_eq!(
        new_history(&config, 2),
        entries(&[
            ("RUN /bin/sh -ec true # buildkit", false),
            ("CMD [\"/bin/sh\" \"-ec\" \"run\"]", true),
        ])
    );
}

#[test]
fn an_image_without_any_layer_time_stays_undated() {
    let store = Store::new();
    let config = build_config(
        &store,
        &[("Dockerfile", "FROM scratch\nENV A=1\nLABEL l=v\n")],
        &[],
    );
    assert!(config.get("created").is_none(), "{config}");
    for h in config["history"].as_array().unwrap() {
        assert!(h.get("created").is_none(), "{h}");
    }
    assert_eq!(config["rootfs"], json!({"type": "layers", "diff_ids": []}));
}
