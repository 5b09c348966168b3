//! Lowering of RUN (flags, mounts, heredocs) and what COPY/ADD share with it.

use super::*;
use crate::command::mount::{parse_mount, MountInput};
use crate::command::{Flag, NetworkFlag, RunCommand, RunFlag, SecurityFlag};
use llb::graph::{ExecMount, MountKind};

/// What a stage's steps need to look up sources (`from=`) and mark vertices.
pub(super) struct StageCtx<'c> {
    pub index: usize,
    pub states: &'c [Option<StageState>],
    pub stage_index: &'c dyn Fn(&str, usize) -> Option<usize>,
    pub resolver: &'c dyn ImageResolver,
    pub escape: char,
    pub no_cache: bool,
}

impl Lowerer<'_> {
    pub(super) fn context_vertex(&mut self) -> usize {
        self.add(
            Vertex {
                op: Op::Local {
                    name: CONTEXT_NAME.into(),
                },
                inputs: vec![],
                name: "[internal] load build context".into(),
                ignore_cache: false,
            },
            None,
        )
    }

    /// The vertex for `--from=`/`from=`: a named context, an earlier stage, or an image.
    pub(super) fn source_for_from(
        &mut self,
        cx: &StageCtx,
        ins: &Instruction,
        what: &str,
        reference: &str,
        platform: &str,
    ) -> Result<usize, DockerfileError> {
        if let Some(v) = self.named_context_vertex(cx, ins, reference, platform)? {
            return Ok(v);
        }
        if let Some(d) = (cx.stage_index)(reference, cx.index) {
            let Some(stage) = cx.states[d].as_ref() else {
                // Stages are picked before stage-level ARGs are known.
                return Err(self.err(ins, format!("{what}={reference}: that stage is not part of this build; its name may depend on an ARG declared inside a stage, which FROM-time stage selection cannot see")));
            };
            let v = stage.vertex;
            return Ok(self.or_scratch(v));
        }
        let lower = reference.to_lowercase();
        if let Ok(n) = lower.parse::<usize>() {
            if n >= self.stage_names.len() {
                return Err(self.err(ins, format!("invalid stage index {n}")));
            }
        }
        if self.stage_names.get(cx.index).cloned().flatten().as_deref() == Some(lower.as_str())
            || lower == cx.index.to_string()
        {
            return Err(self.err(
                ins,
                format!("circular dependency detected on stage: {lower}"),
            ));
        }
        let earlier: Vec<String> = (0..cx.index)
            .filter_map(|d| self.stage_names.get(d).cloned().flatten())
            .collect();
        let hint = suggest(&lower, earlier.iter().map(String::as_str));
        let (pinned, _) = cx.resolver.resolve(reference, platform).map_err(|e| match hint {
            Some(h) => self.err(ins, format!("{what}={reference}: no stage named {reference:?} comes before this one; did you mean {h:?}?")),
            None => self.err(ins, format!("{what}={reference}: no stage named {reference:?} comes before this one, and as an image: {e:#}")),
        })?;
        Ok(self.add(
            Vertex {
                op: Op::Image {
                    reference: pinned,
                    platform: platform.to_string(),
                },
                inputs: vec![],
                name: format!("FROM {reference}"),
                ignore_cache: false,
            },
            Some(ins),
        ))
    }

    pub(super) fn mkfile_vertex(
        &mut self,
        files: Vec<(String, Vec<u8>, u32)>,
        name: &str,
    ) -> usize {
        self.add(
            Vertex {
                op: Op::File(FileOp {
                    actions: files
                        .into_iter()
                        .map(|(path, data, mode)| FileAction::Mkfile {
                            path,
                            data,
                            mode,
                            chown: None,
                        })
                        .collect(),
                }),
                inputs: vec![],
                name: name.into(),
                ignore_cache: false,
            },
            None,
        )
    }
}

/// The RUN command after heredoc handling, and a script to mount at /dev/pipes if any.
fn run_command(state: &StageState, run: &RunCommand) -> (Vec<String>, Option<(String, String)>) {
    if run.line.json || run.heredocs.is_empty() {
        return (command_args(state, &run.line), None);
    }
    let mut args = if state.shell.is_empty() {
        vec!["/bin/sh".to_string(), "-c".to_string()]
    } else {
        state.shell.clone()
    };
    let cmdline = run.line.args.join(" ");
    let only_heredoc = cmdline.trim().starts_with("<<")
        && !cmdline.trim().contains(char::is_whitespace)
        && run.heredocs.len() == 1;
    if only_heredoc {
        let doc = &run.heredocs[0];
        if doc.content.starts_with("#!") {
            // A script with a shebang runs as an executable file, as BuildKit does.
            args.push(format!("/dev/pipes/{}", doc.name));
            return (args, Some((doc.name.clone(), doc.content.clone())));
        }
        args.push(doc.content.clone());
        return (args, None);
    }
    // The shell reads the heredocs itself: command line, then each body and terminator.
    let mut full = cmdline;
    for doc in &run.heredocs {
        full.push('\n');
        full.push_str(&doc.content);
        full.push_str(&doc.name);
    }
    args.push(full);
    (args, None)
}

/// RUN's flags, expanded: the mounts with the inputs they read, network and security.
struct RunFlags {
    inputs: Vec<usize>,
    mounts: Vec<ExecMount>,
    network: NetworkMode,
    insecure: bool,
}

/// RUN in phases: its flags (the root and mounts with their inputs), the command line
/// (a heredoc script mounted at /dev/pipes), the exec op.
pub(super) fn lower_run(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &StageState,
    ins: &Instruction,
    cmd: &RunCommand,
    env: &[(String, String)],
    name: String,
) -> Result<(usize, Vec<String>), DockerfileError> {
    let mut run = run_flags(l, cx, state, ins, cmd, env)?;
    let (args, script) = run_command(state, cmd);
    if let Some((file, data)) = script {
        mount_script(l, &mut run, file, data);
    }
    let defaults = &l.opts.run;
    let config = &state.config.config;
    let exec = ExecOp {
        args: args.clone(),
        env: run_env(l, state),
        cwd: config.working_dir.clone().unwrap_or_else(|| "/".into()),
        user: config.user.clone().unwrap_or_default(),
        network: run.network,
        mounts: run.mounts,
        insecure: run.insecure,
        extra_hosts: defaults.extra_hosts.clone(),
        ulimits: defaults.ulimits.clone(),
        shm_size: defaults.shm_size,
    };
    let vertex = l.add(
        Vertex {
            op: Op::Exec(exec),
            inputs: run.inputs,
            name,
            ignore_cache: cx.no_cache,
        },
        Some(ins),
    );
    Ok((vertex, args))
}

/// The root (input 0) and RUN's flags in source order, each value expanded whole first
/// (a mount's fields again one by one).
fn run_flags(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &StageState,
    ins: &Instruction,
    cmd: &RunCommand,
    env: &[(String, String)],
) -> Result<RunFlags, DockerfileError> {
    let root = l.or_scratch(state.vertex);
    let mut run = RunFlags {
        inputs: vec![root],
        mounts: Vec::new(),
        network: l.opts.run.network.unwrap_or(NetworkMode::Host),
        insecure: false,
    };
    let mut ssh_count = 0;
    for flag in &cmd.flags {
        let value = l
            .expand(ins, env, &flag.value, cx.escape)
            .map_err(|e| l.err_at(flag.span.line, flag.span.column, e.message))?;
        match flag.name {
            RunFlag::Network => run.network = network_mode(l, flag, &value)?,
            RunFlag::Security => run.insecure = insecure_mode(l, flag, &value)?,
            RunFlag::Mount => add_mount(l, cx, state, ins, env, flag, &mut run, &mut ssh_count)?,
        }
    }
    Ok(run)
}

/// A heredoc script with a shebang, written to a file and mounted read-only at /dev/pipes.
fn mount_script(l: &mut Lowerer, run: &mut RunFlags, file: String, data: String) {
    let v = l.mkfile_vertex(
        vec![(format!("/{file}"), data.into_bytes(), 0o755)],
        "[internal] preparing inline document",
    );
    run.inputs.push(v);
    run.mounts.push(ExecMount {
        target: "/dev/pipes/".into(),
        kind: MountKind::Bind {
            input: run.inputs.len() - 1,
            source: "/".into(),
            readonly: true,
        },
    });
}

/// `RUN --network=`: default (the host's, as the sandbox has no other), none, or host
/// with the entitlement.
fn network_mode(
    l: &Lowerer,
    flag: &Flag<RunFlag>,
    value: &str,
) -> Result<NetworkMode, DockerfileError> {
    let err = |message: &str| l.err_at(flag.span.line, flag.span.column, message);
    match NetworkFlag::parse(value).map_err(|e| err(&e))? {
        NetworkFlag::Default => Ok(NetworkMode::Host),
        NetworkFlag::None => Ok(NetworkMode::None),
        NetworkFlag::Host if l.opts.run.entitlements.network_host => Ok(NetworkMode::Host),
        NetworkFlag::Host => Err(err(
            "network.host is not allowed: RUN --network=host needs the network.host entitlement (build flag --allow network.host)",
        )),
    }
}

/// `RUN --security=`: sandbox, or insecure with the entitlement (true).
fn insecure_mode(l: &Lowerer, flag: &Flag<RunFlag>, value: &str) -> Result<bool, DockerfileError> {
    let err = |message: &str| l.err_at(flag.span.line, flag.span.column, message);
    match SecurityFlag::parse(value).map_err(|e| err(&e))? {
        SecurityFlag::Sandbox => Ok(false),
        SecurityFlag::Insecure if l.opts.run.entitlements.security_insecure => Ok(true),
        SecurityFlag::Insecure => Err(err(
            "security.insecure is not allowed: RUN --security=insecure needs the security.insecure entitlement (build flag --allow security.insecure)",
        )),
    }
}

/// One `--mount=`: parsed, its input added, its target made absolute and unique.
#[allow(clippy::too_many_arguments)]
fn add_mount(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &StageState,
    ins: &Instruction,
    env: &[(String, String)],
    flag: &Flag<RunFlag>,
    run: &mut RunFlags,
    ssh_count: &mut usize,
) -> Result<(), DockerfileError> {
    let span = flag.span;
    let expand = |s: &str| -> Result<String, String> {
        l.expand(ins, env, s, cx.escape).map_err(|e| e.message)
    };
    // The whole value is expanded per field, so quotes inside fields survive.
    let mut parsed = parse_mount(&flag.value, &expand, ssh_count)
        .map_err(|e| l.err_at(span.line, span.column, format!("--mount: {e}")))?;
    let input = match &parsed.input {
        MountInput::None => None,
        MountInput::Context => Some(l.context_vertex()),
        MountInput::From(f) => {
            Some(l.source_for_from(cx, ins, "--mount from", f, &state.platform)?)
        }
    };
    if let Some(v) = input {
        run.inputs.push(v);
        parsed.set_input(run.inputs.len() - 1);
    }
    // A relative target is below the working directory (a cache id keeps the raw text).
    let target = &mut parsed.mount.target;
    if !target.is_empty() && !target.starts_with('/') {
        let workdir = state.config.config.working_dir.as_deref().unwrap_or("/");
        *target = join_path(workdir, target, false);
    }
    let target = &parsed.mount.target;
    if !target.is_empty() && run.mounts.iter().any(|m| m.target == *target) {
        let message = format!("--mount: two mounts share the target {target}");
        return Err(l.err_at(span.line, span.column, message));
    }
    run.mounts.push(parsed.mount);
    Ok(())
}

/// The step's environment: the image's ENV, with ARGs (over ENV where set after it) and
/// the proxy build args.
fn run_env(l: &Lowerer, state: &StageState) -> Vec<String> {
    let mut run_env = state.config.config.env.clone();
    for (k, v) in &state.args {
        if state.args_over_env.contains(k) {
            env_set(&mut run_env, k, v);
        } else if env_get(&run_env, k).is_none() {
            run_env.push(format!("{k}={v}"));
        }
    }
    add_proxy_env(&mut run_env, &l.opts.build_args);
    run_env
}

/// BuildKit's predefined proxy args: given as build args, they reach every RUN (in both
/// cases) without an ARG, and stay out of the image history.
fn add_proxy_env(run_env: &mut Vec<String>, build_args: &BTreeMap<String, String>) {
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    ] {
        // The last of the differently-cased build args, in sorted order, wins.
        let Some(value) = build_args
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .next_back()
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        for key in [name.to_string(), name.to_lowercase()] {
            if env_get(run_env, &key).is_none() {
                run_env.push(format!("{key}={value}"));
            }
        }
    }
}
