//! The typed command layer: every flag of every instruction parsed into its command, and
//! each flag error with the line and column it names.

use frontend::command::{
    self, mount::parse_mount, Command, CommandError, CopyCommand, CopyFlag, CopyOptions, FromFlag,
    NetworkFlag, RunFlag, SecurityFlag, Span,
};
use llb::graph::{Chown, MountKind};

/// The last instruction of `src`, parsed into its command.
fn parse_last(src: &str) -> Result<Command, CommandError> {
    let ast = frontend::parse(src.as_bytes()).expect("the Dockerfile parses");
    let lines: Vec<String> = src.lines().map(str::to_string).collect();
    let ins = ast.instructions.last().expect("an instruction");
    Command::parse(ins, &lines)
}

fn error(src: &str) -> (usize, usize, String) {
    match parse_last(src) {
        Ok(c) => panic!("expected an error for {src:?}, got {c:?}"),
        Err(e) => (e.span.line, e.span.column, e.message),
    }
}

fn copy(src: &str) -> CopyCommand {
    match parse_last(src).unwrap() {
        Command::Copy(c) | Command::Add(c) => c,
        other => panic!("not COPY/ADD: {other:?}"),
    }
}

fn at(line: usize, column: usize) -> Span {
    Span { line, column }
}

/// No variables: each value as written.
fn verbatim(word: &str) -> Result<String, String> {
    Ok(word.to_string())
}

#[test]
fn copy_flags_are_parsed_in_order_with_their_positions() {
    let c = copy(
        "FROM a\nCOPY --from=build --chown=1:2 --chmod=755 --link --exclude=*.md --exclude=x --parents s1 s2 /d/\n",
    );
    let flags: Vec<(CopyFlag, &str, Span)> = c
        .flags
        .iter()
        .map(|f| (f.name, f.value.as_str(), f.span))
        .collect();
    assert_eq!(
        flags,
        [
            (CopyFlag::From, "build", at(2, 6)),
            (CopyFlag::Chown, "1:2", at(2, 19)),
            (CopyFlag::Chmod, "755", at(2, 31)),
            (CopyFlag::Link, "true", at(2, 43)),
            (CopyFlag::Exclude, "*.md", at(2, 50)),
            // A repeated flag points at its first occurrence.
            (CopyFlag::Exclude, "x", at(2, 50)),
            (CopyFlag::Parents, "true", at(2, 77)),
        ]
    );
    assert_eq!(
        (c.sources.as_slice(), c.dest.as_str()),
        (&["s1".to_string(), "s2".to_string()][..], "/d/")
    );
    assert!(!c.is_add && !c.json);
    let o = c.resolve(&verbatim).unwrap();
    assert_eq!(
        o,
        CopyOptions {
            from: Some("build".into()),
            chown: Some(Chown {
                user: "1".into(),
                group: Some("2".into())
            }),
            chown_text: Some("1:2".into()),
            chmod: Some("755".into()),
            exclude: vec!["*.md".into(), "x".into()],
            link: true,
            parents: true,
            ..Default::default()
        }
    );
}

#[test]
fn add_flags_are_parsed_and_resolved() {
    let c = copy("FROM a\nADD --chown=u --chmod=u+x --link=false --exclude=y --checksum=sha256:ab --keep-git-dir --unpack=false src /d\n");
    assert!(c.is_add);
    let names: Vec<CopyFlag> = c.flags.iter().map(|f| f.name).collect();
    use CopyFlag as F;
    assert_eq!(
        names,
        [
            F::Chown,
            F::Chmod,
            F::Link,
            F::Exclude,
            F::Checksum,
            F::KeepGitDir,
            F::Unpack
        ]
    );
    let o = c.resolve(&verbatim).unwrap();
    assert_eq!(
        o.chown,
        Some(Chown {
            user: "u".into(),
            group: None
        })
    );
    assert_eq!(o.chmod.as_deref(), Some("u+x"));
    assert!(!o.link && o.keep_git_dir);
    assert_eq!(o.exclude, ["y"]);
    assert_eq!(o.checksum.as_deref(), Some("sha256:ab"));
    assert_eq!(o.unpack, Some(false));
    assert_eq!(c.span_of(F::Checksum), Some(at(2, 52)));
    assert_eq!(c.span_of(F::From), None);
}

#[test]
fn copy_flag_values_are_expanded_then_checked_at_the_flag() {
    let c = copy("FROM a\nCOPY --link=$L --chown=$U a /b\n");
    let env = |w: &str| Ok(w.replace("$L", "false").replace("$U", "me:us"));
    let o = c.resolve(&env).unwrap();
    assert!(!o.link);
    assert_eq!(o.chown_text.as_deref(), Some("me:us"));
    let failing = |_: &str| Err("no such variable".to_string());
    let e = c.resolve(&failing).unwrap_err();
    assert_eq!((e.span, e.message.as_str()), (at(2, 6), "no such variable"));
    for (src, span, message) in [
        (
            "COPY --chmod=999 a /b",
            at(2, 6),
            "invalid --chmod=999: octal modes use digits 0-7 and are at most 7777",
        ),
        (
            "COPY --chmod=u+q a /b",
            at(2, 6),
            "invalid --chmod=u+q: expected an octal mode (0755) or a symbolic one (u+x,go-w)",
        ),
        (
            "COPY --link=maybe a /b",
            at(2, 6),
            "invalid --link=maybe: expected true or false",
        ),
        (
            "COPY --parents=no a /b",
            at(2, 6),
            "invalid --parents=no: expected true or false",
        ),
        (
            "ADD --keep-git-dir=x a /b",
            at(2, 5),
            "invalid --keep-git-dir=x: expected true or false",
        ),
        (
            "ADD --unpack=2 a /b",
            at(2, 5),
            "invalid --unpack=2: expected true or false",
        ),
        // The first bad flag in source order is the one reported.
        (
            "COPY --link=bad --chmod=999 a /b",
            at(2, 6),
            "invalid --link=bad: expected true or false",
        ),
    ] {
        let e = copy(&format!("FROM a\n{src}\n"))
            .resolve(&verbatim)
            .unwrap_err();
        assert_eq!((e.span, e.message.as_str()), (span, message), "{src}");
    }
}

#[test]
fn unknown_copy_and_add_flags_point_at_the_first_dashes() {
    let (line, column, message) = error("FROM a\n  COPY --fro=x a /b\n");
    assert_eq!((line, column), (2, 8));
    assert_eq!(message, "unknown flag: --fro for COPY (known flags: --from, --chown, --chmod, --link, --exclude, --parents); did you mean --from?");
    let (_, _, message) = error("FROM a\nADD --from=x a /b\n");
    assert!(message.starts_with("unknown flag: --from for ADD (known flags: --chown, --chmod, --link, --exclude, --checksum, --keep-git-dir, --unpack)"), "{message}");
    let (_, _, message) = error("FROM a\nCOPY --keep-git-dir a /b\n");
    assert!(
        message.starts_with("unknown flag: --keep-git-dir for COPY"),
        "{message}"
    );
    let (line, column, message) = error("FROM a\nCOPY --link a\n");
    assert_eq!((line, column), (2, 1));
    assert_eq!(message, "COPY requires at least two arguments, but only one was provided. Destination could not be determined");
}

#[test]
fn flags_on_continuation_lines_keep_their_own_position() {
    let c = copy("FROM a\nCOPY --exclude=a \\\n  --chown=1 a \\\n  /b\n");
    assert_eq!(c.span_of(CopyFlag::Chown), Some(at(3, 3)));
    let (line, column, _) = error("FROM a\n   RUN   --bogus   x\n");
    assert_eq!((line, column), (2, 10));
}

#[test]
fn checksums_and_chmods_are_checked() {
    assert!(command::parse_checksum("sha384:0aF").is_ok());
    assert_eq!(
        command::parse_checksum("md5:ab").unwrap_err(),
        "invalid --checksum=md5:ab: expected sha256:<hex digest>"
    );
    assert!(command::validate_chmod("a=rX,u+s").is_ok());
    assert!(command::validate_chmod("8").is_err());
}

#[test]
fn run_flags_and_their_values() {
    let Command::Run(run) = parse_last(
        "FROM a\nRUN --mount=type=cache,target=/c --network=none --security=insecure echo hi\n",
    )
    .unwrap() else {
        panic!("not RUN")
    };
    let flags: Vec<(RunFlag, &str, Span)> = run
        .flags
        .iter()
        .map(|f| (f.name, f.value.as_str(), f.span))
        .collect();
    assert_eq!(
        flags,
        [
            (RunFlag::Mount, "type=cache,target=/c", at(2, 5)),
            (RunFlag::Network, "none", at(2, 34)),
            (RunFlag::Security, "insecure", at(2, 49)),
        ]
    );
    assert_eq!(
        (run.line.args.as_slice(), run.line.json),
        (&["echo hi".to_string()][..], false)
    );
    assert_eq!(NetworkFlag::parse("default"), Ok(NetworkFlag::Default));
    assert_eq!(NetworkFlag::parse("none"), Ok(NetworkFlag::None));
    assert_eq!(NetworkFlag::parse("host"), Ok(NetworkFlag::Host));
    assert_eq!(
        NetworkFlag::parse("hots").unwrap_err(),
        "unsupported network mode \"hots\"; use default, none or host; did you mean host?"
    );
    assert_eq!(SecurityFlag::parse("sandbox"), Ok(SecurityFlag::Sandbox));
    assert_eq!(SecurityFlag::parse("insecure"), Ok(SecurityFlag::Insecure));
    assert_eq!(
        SecurityFlag::parse("x").unwrap_err(),
        "unsupported security mode \"x\"; use sandbox or insecure"
    );
    let (line, column, message) = error("FROM a\nRUN --mnt=type=cache true\n");
    assert_eq!((line, column), (2, 5));
    assert_eq!(message, "unknown flag: --mnt for RUN (known flags: --mount, --network, --security); did you mean --mount?");
}

#[test]
fn run_mounts_parse_field_by_field() {
    let mut ssh = 0;
    let m = parse_mount("type=tmpfs,target=/t,size=64m", &verbatim, &mut ssh).unwrap();
    assert_eq!(m.mount.target, "/t");
    assert_eq!(
        m.mount.kind,
        MountKind::Tmpfs {
            size: Some(64 << 20)
        }
    );
    let e = parse_mount("type=bogus,target=/x", &verbatim, &mut ssh).unwrap_err();
    assert!(e.starts_with("unsupported mount type \"bogus\""), "{e}");
}

#[test]
fn from_flags_name_and_errors() {
    let Command::From(from) = parse_last("FROM --platform=linux/arm64 busybox AS Build\n").unwrap()
    else {
        panic!("not FROM")
    };
    let platform = from.platform.expect("a platform");
    assert_eq!(
        (platform.name, platform.value.as_str()),
        (FromFlag::Platform, "linux/arm64")
    );
    assert_eq!(
        (from.base.as_str(), from.name.as_deref()),
        ("busybox", Some("build"))
    );
    // FROM's errors point at the keyword.
    assert_eq!(
        error("FROM --plat=x busybox\n"),
        (
            1,
            1,
            "unknown flag: --plat for FROM (known flags: --platform)".into()
        )
    );
    assert_eq!(
        error("FROM a AS 1x\n"),
        (1, 1, "invalid name for build stage: \"1x\", name can't start with a number or contain symbols".into())
    );
    assert_eq!(
        error("FROM a b\n"),
        (1, 1, "FROM requires either one or three arguments".into())
    );
}

#[test]
fn healthcheck_flags_are_checked_at_parse_time() {
    let Command::Healthcheck(h) = parse_last(
        "FROM a\nHEALTHCHECK --interval=30s --timeout=5s --start-period=1m --start-interval=2s --retries=3 CMD curl -f http://x\n",
    )
    .unwrap() else {
        panic!("not HEALTHCHECK")
    };
    let h = h.health;
    assert_eq!(h.test, ["CMD-SHELL", "curl -f http://x"]);
    assert_eq!((h.interval, h.timeout), (30_000_000_000, 5_000_000_000));
    assert_eq!(
        (h.start_period, h.start_interval),
        (60_000_000_000, 2_000_000_000)
    );
    assert_eq!(h.retries, 3);
    let Command::Healthcheck(none) =
        parse_last("FROM a\nHEALTHCHECK --interval=bad NONE\n").unwrap()
    else {
        panic!("not HEALTHCHECK")
    };
    assert_eq!(none.health.test, ["NONE"], "NONE ignores its flags");
    for (src, message) in [
        ("HEALTHCHECK --interval=1x CMD true", "invalid --interval=1x: expected a duration such as 30s or 1m30s"),
        ("HEALTHCHECK --timeout=1ns CMD true", "Interval \"timeout\" cannot be less than 1ms"),
        ("HEALTHCHECK --retries=x CMD true", "invalid --retries=x"),
        ("HEALTHCHECK --retries=-1 CMD true", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK --bogus=1 CMD true", "unknown flag: --bogus for HEALTHCHECK (known flags: --interval, --timeout, --start-period, --start-interval, --retries)"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK FOO", "HEALTHCHECK must be followed by CMD or NONE"),
    ] {
        assert_eq!(error(&format!("FROM a\n  {src}\n")), (2, 3, message.to_string()), "{src}");
    }
}

#[test]
fn cmd_and_entrypoint_take_no_flags() {
    let Command::Cmd(cmd) = parse_last("FROM a\nCMD [\"a\", \"b\"]\n").unwrap() else {
        panic!("not CMD")
    };
    assert_eq!(
        (cmd.line.args.as_slice(), cmd.line.json),
        (&["a".to_string(), "b".to_string()][..], true)
    );
    assert_eq!(
        error("FROM a\nENTRYPOINT --x echo\n"),
        (
            2,
            1,
            "unknown flag: --x for ENTRYPOINT (known flags: none)".into()
        )
    );
}

#[test]
fn operands_of_the_instructions_without_flags() {
    let Command::Env(env) = parse_last("FROM a\nENV A=1 B=\"two words\"\n").unwrap() else {
        panic!("not ENV")
    };
    assert_eq!(
        env.pairs,
        [
            ("A".into(), "1".into()),
            ("B".into(), "\"two words\"".into())
        ]
    );
    let Command::Arg(arg) = parse_last("FROM a\nARG A=1 B\n").unwrap() else {
        panic!("not ARG")
    };
    let decls: Vec<(&str, Option<&str>)> = arg
        .args
        .iter()
        .map(|d| (d.name.as_str(), d.default.as_deref()))
        .collect();
    assert_eq!(decls, [("A", Some("1")), ("B", None)]);
    let Command::OnBuild(on) = parse_last("FROM a\nONBUILD RUN make\n").unwrap() else {
        panic!("not ONBUILD")
    };
    assert_eq!(on.trigger, "RUN make");
    let Command::Shell(shell) = parse_last("FROM a\nSHELL [\"/bin/bash\", \"-c\"]\n").unwrap()
    else {
        panic!("not SHELL")
    };
    assert_eq!(shell.args, ["/bin/bash", "-c"]);
    for (src, message) in [
        ("ENV", "ENV requires at least one key=value pair"),
        ("LABEL", "LABEL requires at least one key=value pair"),
        ("ARG A=1 =x", "ARG names can not be blank"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("USER", "USER requires exactly one argument"),
        ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("VOLUME", "VOLUME requires at least one argument"),
        (
            "SHELL bash",
            "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]",
        ),
        ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
        ("RUNN true", "unknown instruction: RUNN (did you mean RUN?)"),
    ] {
        assert_eq!(
            error(&format!("FROM a\n{src}\n")),
            (2, 1, message.to_string()),
            "{src}"
        );
    }
}

#[test]
fn stage_references_are_read_from_copy_and_run_mounts() {
    let ast = frontend::parse(b"FROM a\nCOPY --from=b x /y\nRUN --mount=type=bind,from=c,target=/m --mount=type=tmpfs,target=/t true\nADD x /y\n").unwrap();
    let refs: Vec<Vec<&str>> = ast
        .instructions
        .iter()
        .map(command::stage_references)
        .collect();
    assert_eq!(refs, [vec![], vec!["b"], vec!["c"], vec![]]);
}

/// Resolves every image; `trig` carries an ONBUILD trigger with a bad flag.
struct Images;

impl frontend::lower::ImageResolver for Images {
    fn resolve(
        &self,
        reference: &str,
        _platform: &str,
    ) -> anyhow::Result<(String, oci::image::ImageConfig)> {
        let mut config = oci::image::ImageConfig::default();
        if reference == "trig" {
            config.config.on_build = vec!["COPY --chmod=999 a /b".into()];
        }
        Ok((format!("{reference}@sha256:{}", "a".repeat(64)), config))
    }
}

/// The first line of the lowering error: `Dockerfile:line:column: message`.
fn lowering_error(src: &str) -> String {
    let ast = frontend::parse(src.as_bytes()).unwrap();
    let opts = frontend::lower::BuildOptions {
        dockerfile_name: "Dockerfile".into(),
        platform: "linux/amd64".into(),
        build_platform: "linux/amd64".into(),
        ..Default::default()
    };
    match frontend::lower::lower(&ast, src.as_bytes(), &opts, &Images) {
        Ok(_) => panic!("expected an error for {src:?}"),
        Err(e) => e.to_string().lines().next().unwrap().to_string(),
    }
}

#[test]
fn flag_errors_found_while_lowering_name_the_flag() {
    for (src, expected) in [
        (
            "FROM a\nADD --chown=1 --checksum=sha256:aa a /b\n",
            "Dockerfile:2:15: ADD --checksum can only be used with HTTP(S) sources",
        ),
        (
            "FROM a\nADD --checksum=md5:aa https://e.com/a /b\n",
            "Dockerfile:2:5: invalid --checksum=md5:aa: expected sha256:<hex digest>",
        ),
        (
            "FROM a\nADD --keep-git-dir a /b\n",
            "Dockerfile:2:5: ADD --keep-git-dir can only be used with a git source",
        ),
        (
            "FROM a\nRUN --security=sandbox --network=host true\n",
            "Dockerfile:2:24: network.host is not allowed: RUN --network=host needs the network.host entitlement (build flag --allow network.host)",
        ),
        (
            "FROM a\nRUN --network=hots true\n",
            "Dockerfile:2:5: unsupported network mode \"hots\"; use default, none or host; did you mean host?",
        ),
        (
            "FROM a\nRUN --security=insecure true\n",
            "Dockerfile:2:5: security.insecure is not allowed: RUN --security=insecure needs the security.insecure entitlement (build flag --allow security.insecure)",
        ),
        (
            "FROM a\nRUN --network=none \\\n  --mount=type=tmpfs,target=/x --mount=type=cache,target=/x true\n",
            "Dockerfile:3:3: --mount: two mounts share the target /x",
        ),
        (
            "FROM a\nRUN --network=${NET:?unset} true\n",
            "Dockerfile:2:5: RUN \"${NET:?unset}\": failed to process \"${NET:?unset}\": NET: unset",
        ),
        // A base image's trigger fails at the FROM that runs it.
        (
            "FROM a\n\nFROM trig\n",
            "Dockerfile:3:1: ONBUILD trigger \"COPY --chmod=999 a /b\" of the base image: invalid --chmod=999: octal modes use digits 0-7 and are at most 7777",
        ),
    ] {
        assert_eq!(lowering_error(src), expected, "{src}");
    }
}

/// BuildKit (docker 20.10's, run by scripts/compat-buildkit.sh on testdata/compat/error-flag-*)
/// fails every one of these with `dockerfile parse error line 2: Unknown flag: NAME`; builder
/// used to drop the flag and build. ARG and STOPSIGNAL are the exceptions (below).
#[test]
fn instructions_without_flags_reject_any() {
    let cases = [
        ("ENV --foo=bar A=1", "--foo", "ENV"),
        ("LABEL --x a=b", "--x", "LABEL"),
        ("WORKDIR --chown=1 /x", "--chown", "WORKDIR"),
        ("USER --g=1 root", "--g", "USER"),
        ("EXPOSE --p 80", "--p", "EXPOSE"),
        ("VOLUME --v /x", "--v", "VOLUME"),
        ("SHELL --s [\"/bin/sh\", \"-c\"]", "--s", "SHELL"),
        ("MAINTAINER --m me", "--m", "MAINTAINER"),
        ("ONBUILD --o RUN true", "--o", "ONBUILD"),
    ];
    for (line, flag, keyword) in cases {
        let want = format!("unknown flag: {flag} for {keyword} (known flags: none)");
        assert_eq!(error(&format!("FROM a\n{line}\n")), (2, 1, want), "{line}");
    }
}

/// The same run built `ARG --a B=1` as `ARG B=1` and `STOPSIGNAL --s 9` as StopSignal `9`:
/// BuildKit's parser drops their flags unchecked.
#[test]
fn arg_and_stopsignal_flags_are_dropped_as_in_buildkit() {
    let Command::Arg(arg) = parse_last("FROM a\nARG --a B=1\n").unwrap() else {
        panic!("not ARG")
    };
    assert_eq!(arg.args.len(), 1);
    assert_eq!(
        (arg.args[0].name.as_str(), arg.args[0].default.as_deref()),
        ("B", Some("1"))
    );
    let Command::StopSignal(stop) = parse_last("FROM a\nSTOPSIGNAL --s 9\n").unwrap() else {
        panic!("not STOPSIGNAL")
    };
    assert_eq!(stop.signal, "9");
}
