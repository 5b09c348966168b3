//! Lowering Dockerfiles to the build graph: RUN flags and mounts, COPY/ADD flags,
//! heredocs, ONBUILD triggers and named contexts, asserted on the Definition.

use frontend::lower::{lower, BuildOptions, ImageResolver, Lowered, NamedContext};
use llb::graph::{
    CacheSharing, ExecMount, ExecOp, FileAction, MountKind, MountOwner, NetworkMode, Op,
};
use oci::image::ImageConfig;
use std::collections::BTreeMap;

/// Resolves every image to a fixed digest; `onbuild` images carry triggers.
struct FakeResolver {
    on_build: BTreeMap<String, Vec<String>>,
}

impl ImageResolver for FakeResolver {
    fn resolve(&self, reference: &str, _platform: &str) -> anyhow::Result<(String, ImageConfig)> {
        if reference.contains("missing") {
            anyhow::bail!("image {reference} not found");
        }
        let mut config = ImageConfig::default();
        config.config.on_build = self.on_build.get(reference).cloned().unwrap_or_default();
        Ok((format!("{reference}@sha256:{}", "a".repeat(64)), config))
    }
}

fn opts() -> BuildOptions {
    BuildOptions {
        dockerfile_name: "Dockerfile".into(),
        platform: "linux/amd64".into(),
        build_platform: "linux/amd64".into(),
        ..Default::default()
    }
}

fn lower_with(
    src: &str,
    opts: &BuildOptions,
    on_build: &[(&str, &[&str])],
) -> Result<Lowered, String> {
    let ast = frontend::parse(src.as_bytes()).map_err(|e| e.to_string())?;
    let resolver = FakeResolver {
        on_build: on_build
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect(),
    };
    lower(&ast, src.as_bytes(), opts, &resolver).map_err(|e| e.to_string())
}

fn lowered(src: &str) -> Lowered {
    lower_with(src, &opts(), &[]).unwrap_or_else(|e| panic!("lowering failed: {e}"))
}

fn error(src: &str) -> String {
    match lower_with(src, &opts(), &[]) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e,
    }
}

/// The exec op of the output vertex.
fn output_exec(l: &Lowered) -> (&ExecOp, &[usize]) {
    let v = &l.definition.vertices[l.definition.output.unwrap()];
    match &v.op {
        Op::Exec(e) => (e, &v.inputs),
        other => panic!("output is not an exec: {other:?}"),
    }
}

fn op_of(l: &Lowered, i: usize) -> &Op {
    &l.definition.vertices[i].op
}

fn owner(mode: u32) -> MountOwner {
    MountOwner {
        uid: 0,
        gid: 0,
        mode,
    }
}

#[test]
fn run_mounts_get_buildkit_defaults() {
    let l = lowered(
        "FROM busybox AS tools\nFROM busybox\nARG CACHE=/root/.cache\n\
         RUN --mount=type=bind,target=/src \\\n\
             --mount=type=cache,target=$CACHE \\\n\
             --mount=type=tmpfs,dst=/tmp,size=64m \\\n\
             --mount=type=secret,id=token \\\n\
             --mount=type=secret,id=aws,env=AWS_KEY \\\n\
             --mount=type=ssh \\\n\
             --mount=type=ssh,id=gh,required \\\n\
             --mount=type=bind,from=tools,source=/bin,target=/tools,rw \\\n\
             --mount=type=cache,id=shared,target=/c,sharing=locked,uid=1000,gid=1000,mode=0700,from=tools,src=/etc \\\n\
             make",
    );
    let (exec, inputs) = output_exec(&l);
    let m = &exec.mounts;
    assert_eq!(m.len(), 9, "{m:#?}");
    // Bind from the context: read-only "/" of input 1, which is the context.
    assert_eq!(
        m[0],
        ExecMount {
            target: "/src".into(),
            kind: MountKind::Bind {
                input: 1,
                source: "/".into(),
                readonly: true
            }
        }
    );
    assert!(matches!(op_of(&l, inputs[1]), Op::Local { name } if name == "context"));
    // Cache: id defaults to the (expanded) target, mode 0755, shared.
    assert_eq!(
        m[1],
        ExecMount {
            target: "/root/.cache".into(),
            kind: MountKind::Cache {
                id: "/root/.cache".into(),
                sharing: CacheSharing::Shared,
                readonly: false,
                base: None,
                owner: owner(0o755)
            }
        }
    );
    assert_eq!(
        m[2].kind,
        MountKind::Tmpfs {
            size: Some(64 << 20)
        }
    );
    assert_eq!(
        m[3],
        ExecMount {
            target: "/run/secrets/token".into(),
            kind: MountKind::Secret {
                id: "token".into(),
                required: false,
                env: None,
                owner: owner(0o400)
            }
        }
    );
    assert_eq!(m[4].target, "", "an env-only secret has no file");
    assert!(matches!(&m[4].kind, MountKind::Secret { env: Some(e), .. } if e == "AWS_KEY"));
    assert_eq!(
        m[5],
        ExecMount {
            target: "/run/buildkit/ssh_agent.0".into(),
            kind: MountKind::Ssh {
                id: "default".into(),
                required: false,
                owner: owner(0o600)
            }
        }
    );
    assert_eq!(m[6].target, "/run/buildkit/ssh_agent.1");
    assert!(matches!(&m[6].kind, MountKind::Ssh { id, required: true, .. } if id == "gh"));
    // from=tools: the stage's vertex (an image) is input 2, writable.
    match &m[7].kind {
        MountKind::Bind {
            input,
            source,
            readonly,
        } => {
            assert_eq!((source.as_str(), *readonly), ("/bin", false));
            assert!(matches!(op_of(&l, inputs[*input]), Op::Image { .. }));
        }
        other => panic!("{other:?}"),
    }
    match &m[8].kind {
        MountKind::Cache {
            id,
            sharing,
            base: Some((input, src)),
            owner: o,
            ..
        } => {
            assert_eq!(
                (id.as_str(), *sharing, src.as_str()),
                ("shared", CacheSharing::Locked, "/etc")
            );
            assert_eq!(
                *o,
                MountOwner {
                    uid: 1000,
                    gid: 1000,
                    mode: 0o700
                }
            );
            assert!(matches!(op_of(&l, inputs[*input]), Op::Image { .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn run_network_and_security_flags() {
    let l = lowered("FROM busybox\nRUN --network=none --security=sandbox true");
    assert_eq!(output_exec(&l).0.network, NetworkMode::None);
    let l = lowered("FROM busybox\nRUN --network=default true");
    assert_eq!(output_exec(&l).0.network, NetworkMode::Host);
    let e = error("FROM busybox\nRUN --security=insecure true");
    assert!(
        e.starts_with("Dockerfile:2:5:")
            && e.contains("entitlement")
            && e.contains("--allow security.insecure"),
        "{e}"
    );
    assert!(!output_exec(&lowered("FROM busybox\nRUN true")).0.insecure);
    let mut allowed = opts();
    allowed.run.entitlements.allow("security.insecure").unwrap();
    let l = lower_with("FROM busybox\nRUN --security=insecure true", &allowed, &[]).unwrap();
    assert!(output_exec(&l).0.insecure);
    let e = error("FROM busybox\nRUN --network=nnoe true");
    assert!(e.contains("did you mean none?"), "{e}");
    let e = error("FROM busybox\nRUN --network=host true");
    assert!(
        e.starts_with("Dockerfile:2:5:") && e.contains("network.host is not allowed"),
        "{e}"
    );
}

#[test]
fn entitlements_and_build_wide_run_settings() {
    let mut o = opts();
    o.run
        .entitlements
        .allow("network.host,security.insecure")
        .unwrap();
    o.run.network = Some(NetworkMode::None);
    o.run.extra_hosts = vec![("db".into(), "10.1.2.3".into())];
    o.run.ulimits = vec![frontend::run_flags::parse_ulimit("nofile=100:200").unwrap()];
    o.run.shm_size = Some(1 << 20);
    let src = "FROM busybox\nRUN --network=host --security=insecure true\nRUN true";
    let l = lower_with(src, &o, &[]).unwrap();
    let (last, inputs) = output_exec(&l);
    // The build-wide --network is RUN's default; the Dockerfile's flag wins.
    assert_eq!(last.network, NetworkMode::None);
    assert!(!last.insecure);
    assert_eq!(last.extra_hosts, o.run.extra_hosts);
    assert_eq!(last.ulimits, o.run.ulimits);
    assert_eq!(last.shm_size, Some(1 << 20));
    match op_of(&l, inputs[0]) {
        Op::Exec(first) => {
            assert_eq!(first.network, NetworkMode::Host);
            assert!(first.insecure);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unset_run_settings_keep_op_digests() {
    // Adding the settings must not change the cache keys of builds that do not use them.
    let l = lowered("FROM busybox\nRUN true");
    let json = serde_json::to_string(output_exec(&l).0).unwrap();
    for field in ["insecure", "extra_hosts", "ulimits", "shm_size"] {
        assert!(!json.contains(field), "{json}");
    }
}

#[test]
fn bad_mounts_point_at_the_flag() {
    let e = error("FROM busybox\nRUN --mount=type=cache,target=/c,sharng=locked true");
    assert!(e.starts_with("Dockerfile:2:5:"), "{e}");
    assert!(e.contains("did you mean sharing?"), "{e}");
    let e = error("FROM busybox\nRUN  --mount=type=cahce,target=/c true");
    assert!(
        e.starts_with("Dockerfile:2:6:") && e.contains("did you mean cache?"),
        "{e}"
    );
    let e = error("FROM busybox\nRUN --mount=type=cache true");
    assert!(e.contains("requires a target"), "{e}");
    let e = error("FROM busybox\nRUN --mount=type=cache,target=/c,mode=999 true");
    assert!(e.contains("octal"), "{e}");
    let e = error("FROM busybox\nRUN --mount=type=secret true");
    assert!(e.contains("id or a target"), "{e}");
    let e = error("FROM busybox\nRUN --mount=type=bind,target=/x,from=missing-image true");
    assert!(e.contains("missing-image"), "{e}");
    let e = error("FROM busybox\nRUN --mout=type=bind,target=/x true");
    assert!(e.contains("did you mean --mount?"), "{e}");
}

/// A vertex's op and inputs, seeing through a rebased COPY: the copy's file op with the
/// base as its input 0, as it would be without the rebase.
fn unrebased(l: &Lowered, i: usize) -> (Op, Vec<usize>) {
    let v = &l.definition.vertices[i];
    match &v.op {
        Op::Rebase => {
            let copy = &l.definition.vertices[v.inputs[1]];
            let mut inputs = vec![v.inputs[0]];
            inputs.extend(&copy.inputs[1..]);
            (copy.op.clone(), inputs)
        }
        op => (op.clone(), v.inputs.clone()),
    }
}

fn output_copy(l: &Lowered) -> (Vec<FileAction>, Vec<usize>) {
    match unrebased(l, l.definition.output.unwrap()) {
        (Op::File(f), inputs) => (f.actions.clone(), inputs),
        (other, _) => panic!("output is not a file op: {other:?}"),
    }
}

#[test]
fn copy_flags_reach_the_file_op() {
    let l = lowered(
        "FROM busybox\nCOPY --exclude=*.md --exclude=tmp/ --parents --chmod=u+x,go-w --chown=1:2 a/./b c /dst/",
    );
    let (actions, _) = output_copy(&l);
    match &actions[0] {
        FileAction::Copy {
            sources,
            dest,
            chmod,
            exclude,
            parents,
            unpack,
            chown,
            ..
        } => {
            assert_eq!(sources, &["a/./b", "c"]);
            assert_eq!(dest, "/dst/");
            assert_eq!(chmod.as_deref(), Some("u+x,go-w"));
            assert_eq!(exclude, &["*.md", "tmp/"]);
            assert!(*parents && !*unpack);
            assert_eq!(chown.as_ref().unwrap().group.as_deref(), Some("2"));
        }
        other => panic!("{other:?}"),
    }
    let e = error("FROM busybox\nCOPY --chmod=u+q a /b");
    assert!(
        e.starts_with("Dockerfile:2:6:") && e.contains("symbolic"),
        "{e}"
    );
    let e = error("FROM busybox\nCOPY --checksum=sha256:00 a /b");
    assert!(e.contains("unknown flag: --checksum"), "{e}");
}

#[test]
fn copy_link_is_a_merge_onto_the_base() {
    let l = lowered("FROM busybox\nCOPY --link a /a");
    let out = &l.definition.vertices[l.definition.output.unwrap()];
    assert_eq!(out.op, Op::Merge);
    assert!(matches!(op_of(&l, out.inputs[0]), Op::Image { .. }));
    let copy = &l.definition.vertices[out.inputs[1]];
    assert!(matches!(copy.op, Op::File(_)));
    assert_eq!(op_of(&l, copy.inputs[0]), &Op::Scratch);
}

#[test]
fn add_local_unpacks_and_remote_sources_become_ops() {
    let l = lowered("FROM busybox\nADD app.tar.gz /opt/");
    assert!(matches!(
        &output_copy(&l).0[0],
        FileAction::Copy { unpack: true, .. }
    ));
    let l = lowered("FROM busybox\nADD --unpack=false app.tar.gz /opt/");
    assert!(matches!(
        &output_copy(&l).0[0],
        FileAction::Copy { unpack: false, .. }
    ));

    let digest = format!("sha256:{}", "b".repeat(64));
    let l = lowered(&format!(
        "FROM busybox\nADD --checksum={digest} https://example.com/dl/tool.tgz?x=1 /opt/"
    ));
    let (actions, inputs) = output_copy(&l);
    assert_eq!(
        op_of(&l, inputs[1]),
        &Op::Http {
            url: "https://example.com/dl/tool.tgz?x=1".into(),
            filename: "tool.tgz".into(),
            checksum: Some(digest.clone())
        }
    );
    assert!(
        matches!(&actions[0], FileAction::Copy { sources, unpack: false, .. } if sources == &["/tool.tgz"])
    );
    let l = lowered("FROM busybox\nADD https://example.com/dl/tool.tgz /opt/renamed");
    let (_, inputs) = output_copy(&l);
    assert!(matches!(op_of(&l, inputs[1]), Op::Http { filename, .. } if filename == "renamed"));

    let l = lowered(
        "FROM busybox\nADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.10.1:docs /src",
    );
    let (_, inputs) = output_copy(&l);
    assert_eq!(
        op_of(&l, inputs[1]),
        &Op::Git {
            remote: "https://github.com/moby/buildkit.git".into(),
            reference: Some("v0.10.1".into()),
            subdir: Some("docs".into()),
            keep_git_dir: true
        }
    );
    let l = lowered("FROM busybox\nADD git@github.com:moby/buildkit.git /src");
    let (_, inputs) = output_copy(&l);
    assert!(
        matches!(op_of(&l, inputs[1]), Op::Git { remote, reference: None, .. } if remote == "git@github.com:moby/buildkit.git")
    );

    let e = error(&format!(
        "FROM busybox\nADD --checksum={digest} local.txt /x"
    ));
    assert!(
        e.starts_with("Dockerfile:2:5:") && e.contains("HTTP"),
        "{e}"
    );
    let e = error("FROM busybox\nADD --keep-git-dir local /x");
    assert!(e.contains("git source"), "{e}");
    let e = error("FROM busybox\nADD --checksum=md5:zz https://e.com/a /x");
    assert!(e.contains("invalid --checksum"), "{e}");
}

fn mkfiles(l: &Lowered, vertex: usize) -> Vec<(String, String, u32)> {
    match op_of(l, vertex) {
        Op::File(f) => f
            .actions
            .iter()
            .map(|a| match a {
                FileAction::Mkfile {
                    path, data, mode, ..
                } => (
                    path.clone(),
                    String::from_utf8_lossy(data).into_owned(),
                    *mode,
                ),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn copy_heredocs_become_files_with_expansion_unless_quoted() {
    let l = lowered(
        "FROM busybox\nARG NAME=world\nCOPY <<EOF <<'RAW' <<-TABS /etc/\nhello $NAME \"q\"\nEOF\nkeep $NAME\nRAW\n\tindented\n\tTABS\n",
    );
    let (actions, inputs) = output_copy(&l);
    assert!(matches!(&actions[0], FileAction::Copy { sources, dest, .. }
        if sources == &["/EOF", "/RAW", "/TABS"] && dest == "/etc/"));
    assert_eq!(
        mkfiles(&l, inputs[1]),
        vec![
            ("/EOF".into(), "hello world \"q\"\n".into(), 0o644),
            ("/RAW".into(), "keep $NAME\n".into(), 0o644),
            ("/TABS".into(), "indented\n".into(), 0o644),
        ]
    );
    // A heredoc and a context file in one COPY: two copy actions.
    let l = lowered("FROM busybox\nADD <<EOF ctx.txt /d/\nx\nEOF\n");
    let (actions, inputs) = output_copy(&l);
    assert_eq!(actions.len(), 2);
    assert!(matches!(op_of(&l, inputs[1]), Op::Local { .. }));
}

#[test]
fn run_heredocs_run_like_buildkit() {
    let l = lowered("FROM busybox\nRUN <<EOF\necho a\necho b\nEOF\n");
    assert_eq!(
        output_exec(&l).0.args,
        ["/bin/sh", "-c", "echo a\necho b\n"]
    );

    let l = lowered("FROM busybox\nRUN python3 <<EOF\nprint(1)\nEOF\n");
    assert_eq!(
        output_exec(&l).0.args,
        ["/bin/sh", "-c", "python3 <<EOF\nprint(1)\nEOF"]
    );

    let l = lowered("FROM busybox\nRUN <<-EOF\n\techo tab\n\tEOF\n");
    assert_eq!(output_exec(&l).0.args[2], "echo tab\n");

    let l = lowered("FROM busybox\nRUN cat <<A <<B\n1\nA\n2\nB\n");
    assert_eq!(output_exec(&l).0.args[2], "cat <<A <<B\n1\nA\n2\nB");

    // A script with a shebang is mounted at /dev/pipes and executed.
    let l = lowered("FROM busybox\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\n");
    let (exec, inputs) = output_exec(&l);
    assert_eq!(exec.args, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(exec.mounts[0].target, "/dev/pipes/");
    let MountKind::Bind {
        input,
        readonly: true,
        ..
    } = exec.mounts[0].kind
    else {
        panic!("{:?}", exec.mounts[0]);
    };
    assert_eq!(
        mkfiles(&l, inputs[input]),
        vec![("/EOF".into(), "#!/bin/sh\necho hi\n".into(), 0o755)]
    );
}

#[test]
fn named_contexts_come_before_stages_and_images() {
    let mut o = opts();
    o.named_contexts.insert(
        "src".into(),
        NamedContext::Local {
            local_name: "context:src".into(),
        },
    );
    o.named_contexts.insert(
        "base".into(),
        NamedContext::Image {
            reference: "alpine:3".into(),
        },
    );
    o.named_contexts.insert(
        "layout".into(),
        NamedContext::OciLayout {
            path: "/tmp/x".into(),
        },
    );
    let l = lower_with(
        "FROM busybox AS base\nFROM base\nCOPY --from=src a /a\nRUN --mount=from=src,target=/s true",
        &o,
        &[],
    )
    .unwrap();
    let (exec, inputs) = output_exec(&l);
    let MountKind::Bind { input, .. } = exec.mounts[0].kind else {
        panic!()
    };
    assert!(matches!(op_of(&l, inputs[input]), Op::Local { name } if name == "context:src"));
    let (_, copy_inputs) = unrebased(&l, inputs[0]);
    assert!(matches!(op_of(&l, copy_inputs[1]), Op::Local { name } if name == "context:src"));
    assert!(
        matches!(op_of(&l, copy_inputs[0]), Op::Image { reference, .. } if reference.starts_with("alpine:3@"))
    );
    // The stage "base" is replaced, so its RUN is not part of the build.
    let l = lower_with("FROM busybox AS base\nRUN exit 1\nFROM base\n", &o, &[]).unwrap();
    assert!(
        !l.definition.render().contains("exit 1"),
        "{}",
        l.definition.render()
    );
    let e = lower_with("FROM layout\n", &o, &[]).err().unwrap();
    assert!(e.contains("not supported yet"), "{e}");
}

#[test]
fn onbuild_triggers_run_after_from_and_are_not_inherited() {
    let triggers: &[(&str, &[&str])] = &[
        (
            "parent",
            &["RUN echo from-trigger", "COPY <<EOF /t\nhi\nEOF"],
        ),
        ("broken", &["RUN --mount=type=nope true"]),
        ("sneaky", &["FROM busybox"]),
    ];
    let l = lower_with(
        "FROM parent\nONBUILD RUN echo next\nRUN echo mine",
        &opts(),
        triggers,
    )
    .unwrap();
    let run = &l.definition.vertices[l.definition.output.unwrap()];
    let (copy_op, copy_inputs) = unrebased(&l, run.inputs[0]);
    let trigger_run = &l.definition.vertices[copy_inputs[0]];
    assert!(matches!(&trigger_run.op, Op::Exec(e) if e.args[2] == "echo from-trigger"));
    assert!(matches!(&copy_op, Op::File(_)));
    assert_eq!(
        mkfiles(&l, copy_inputs[1]),
        vec![("/EOF".into(), "hi\n".into(), 0o644)]
    );
    assert_eq!(l.image.config.on_build, ["RUN echo next"]);

    let e = lower_with("ARG X\nFROM broken\n", &opts(), triggers)
        .err()
        .unwrap();
    assert!(e.starts_with("Dockerfile:2:1: ONBUILD trigger"), "{e}");
    assert!(e.contains("unsupported mount type"), "{e}");
    let e = lower_with("FROM sneaky\n", &opts(), triggers)
        .err()
        .unwrap();
    assert!(
        e.contains("FROM isn't allowed as an ONBUILD trigger"),
        "{e}"
    );
    let e = error("FROM busybox\nONBUILD MAINTAINER me");
    assert!(e.contains("MAINTAINER isn't allowed"), "{e}");
}

#[test]
fn onbuild_of_a_stage_runs_in_stages_built_on_it() {
    let l = lowered("FROM busybox AS base\nONBUILD RUN echo trig\nFROM base\n");
    let out = &l.definition.vertices[l.definition.output.unwrap()];
    assert!(matches!(&out.op, Op::Exec(e) if e.args[2] == "echo trig"));
    assert!(l.image.config.on_build.is_empty());
}

fn rules(src: &str) -> Vec<(String, usize)> {
    lowered(src)
        .warnings
        .iter()
        .map(|w| (w.rule.to_string(), w.line))
        .collect()
}

#[test]
fn build_checks_find_each_rule() {
    let src = "\
ARG VERSION=latest
ARG EMPTY
FROM busybox:${VERSION} as Base
from busybox AS scratch
FROM --platform=linux/amd64 busybox AS other
FROM ${EMPTY} AS empty
FROM busybox:$VERSON
MAINTAINER me
ENV API_KEY=x
ENV legacy value
ARG DB_PASSWORD
WORKDIR app
COPY $UNDEFINED /x
COPY $API_KY /y
CMD echo one
CMD [\"echo\", \"two\"]
ENTRYPOINT run
";
    let got = rules(src);
    let expect = [
        ("FromAsCasing", 3),
        ("StageNameCasing", 3),
        ("ConsistentInstructionCasing", 4),
        ("ReservedStageName", 4),
        ("FromPlatformFlagConstDisallowed", 5),
        ("InvalidDefaultArgInFrom", 6),
        ("UndefinedArgInFrom", 7),
        ("MaintainerDeprecated", 8),
        ("SecretsUsedInArgOrEnv", 9),
        ("LegacyKeyValueFormat", 10),
        ("SecretsUsedInArgOrEnv", 11),
        ("WorkdirRelativePath", 12),
        ("UndefinedVar", 13),
        ("UndefinedVar", 14),
        ("JSONArgsRecommended", 15),
        ("MultipleInstructionsDisallowed", 15),
        ("JSONArgsRecommended", 17),
    ];
    for (rule, line) in expect {
        assert!(
            got.contains(&(rule.to_string(), line)),
            "missing {rule} at line {line}; got {got:?}"
        );
    }
    let l = lowered(src);
    let undefined = l.warnings.iter().find(|w| w.line == 14).unwrap();
    assert_eq!(
        undefined.message,
        "Usage of undefined variable '$API_KY' (did you mean $API_KEY?)"
    );
    let from = l
        .warnings
        .iter()
        .find(|w| w.rule == "UndefinedArgInFrom")
        .unwrap();
    assert_eq!(
        from.message,
        "FROM argument 'VERSON' is not declared (did you mean VERSION?)"
    );
    // InvalidDefaultArgInFrom needs a base that is empty with the defaults.
    let got = rules("ARG TAG\nFROM busybox:${TAG}\n");
    assert!(
        got.contains(&("InvalidDefaultArgInFrom".into(), 2)),
        "{got:?}"
    );
    // DuplicateStageName is also an error when building, so check it on the AST.
    let ast = frontend::parse(b"FROM busybox AS a\nFROM busybox AS a\n").unwrap();
    let w = frontend::checks::check_ast(&ast);
    assert!(
        w.iter()
            .any(|w| w.rule == "DuplicateStageName" && w.line == 2),
        "{w:?}"
    );
}

#[test]
fn clean_dockerfiles_have_no_warnings() {
    let got = rules(
        "ARG BASE=busybox\nFROM ${BASE} AS build\nARG TARGETARCH\nENV A=1\nWORKDIR /app\nCOPY --chmod=755 x $TARGETARCH/\nCMD [\"x\"]\n",
    );
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn check_directive_skips_rules() {
    let got = rules("# check=skip=MaintainerDeprecated,JSONArgsRecommended\nFROM busybox\nMAINTAINER x\nCMD x\nWORKDIR rel\n");
    assert_eq!(got, [("WorkdirRelativePath".to_string(), 5)]);
    let l = lowered("# check=skip=all;error=true\nFROM busybox\nMAINTAINER x\n");
    assert!(l.warnings.is_empty() && l.check_config.error);
}

#[test]
fn from_a_stage_chosen_by_a_stage_arg_is_an_error_not_scratch() {
    let e = error("FROM busybox AS a\nFROM busybox\nARG S=a\nCOPY --from=$S x /x\n");
    assert!(
        e.starts_with("Dockerfile:4:1:") && e.contains("not part of this build"),
        "{e}"
    );
}

#[test]
fn relative_mount_targets_are_below_the_workdir() {
    let l = lowered("FROM busybox\nWORKDIR /app\nRUN --mount=type=cache,target=node_modules true");
    let m = &output_exec(&l).0.mounts[0];
    assert_eq!(m.target, "/app/node_modules");
    assert!(matches!(&m.kind, MountKind::Cache { id, .. } if id == "node_modules"));
}

#[test]
fn entrypoint_resets_inherited_cmd_only() {
    let l = lowered("FROM busybox\nCMD [\"a\"]\nENTRYPOINT [\"e\"]\n");
    assert_eq!(l.image.config.cmd, Some(vec!["a".to_string()]));
    let l = lowered("FROM busybox AS base\nCMD [\"a\"]\nFROM base\nENTRYPOINT [\"e\"]\n");
    assert_eq!(l.image.config.cmd, None);
}

#[test]
fn stage_rules_cover_unbuilt_stages_only_when_checking_everything() {
    let src = "FROM busybox AS unused\nMAINTAINER x\nCOPY $NOPE /\nFROM busybox AS Final\n";
    let got = rules(src);
    assert_eq!(got, [("StageNameCasing".to_string(), 4)]);
    let mut o = opts();
    o.lint_all_stages = true;
    let all: Vec<(&str, usize)> = lower_with(src, &o, &[])
        .unwrap()
        .warnings
        .iter()
        .map(|w| (w.rule, w.line))
        .collect();
    assert_eq!(
        all,
        [
            ("MaintainerDeprecated", 2),
            ("UndefinedVar", 3),
            ("StageNameCasing", 4)
        ]
    );
}
