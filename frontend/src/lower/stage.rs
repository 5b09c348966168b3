//! Lowers one stage: its base (FROM), then each instruction through its own function.

use super::copy;
use super::steps::{self, StageCtx};
use super::*;
use crate::command::{
    ArgCommand, CopyCommand, ExecCommand, ExposeCommand, KeyValueCommand, RunCommand, ShellCommand,
    StopSignalCommand, UserCommand, VolumeCommand,
};

/// What lowering a stage needs besides the lowerer and the stage itself.
pub(super) struct StageInputs<'c> {
    pub index: usize,
    pub label: &'c str,
    pub states: &'c [Option<StageState>],
    pub stage_index: &'c dyn Fn(&str, usize) -> Option<usize>,
    pub auto_args: &'c [(String, String)],
    pub escape: char,
    pub resolver: &'c dyn ImageResolver,
    pub no_cache: bool,
}

/// Step numbering for progress names: `[label step/total] text`.
struct StepNames<'c> {
    label: &'c str,
    /// Grows by the base image's ONBUILD triggers once they are known.
    total: usize,
    step: usize,
}

impl StepNames<'_> {
    fn counts_as_step(x: &Instruction) -> bool {
        matches!(x.keyword.as_str(), "run" | "copy" | "add" | "workdir")
    }

    fn name(&self, step: usize, text: &str) -> String {
        let total = self.total;
        if self.label.is_empty() {
            format!("[{step}/{total}] {text}")
        } else {
            format!("[{} {step}/{total}] {text}", self.label)
        }
    }

    /// Counts one more step and names it.
    fn next(&mut self, text: &str) -> String {
        self.step += 1;
        self.name(self.step, text)
    }
}

/// The image history entry an instruction leaves (None: ONBUILD records nothing).
struct HistoryEntry {
    created_by: String,
    empty_layer: bool,
    /// Only steps that add a layer get BuildKit's " # buildkit" suffix.
    buildkit_suffix: bool,
}

impl HistoryEntry {
    fn config(created_by: String) -> Option<Self> {
        Some(Self {
            created_by,
            empty_layer: true,
            buildkit_suffix: false,
        })
    }

    fn layer(created_by: String) -> Option<Self> {
        Some(Self {
            created_by,
            empty_layer: false,
            buildkit_suffix: true,
        })
    }

    fn into_history(self) -> History {
        let suffix = if self.buildkit_suffix {
            " # buildkit"
        } else {
            ""
        };
        History {
            created_by: Some(format!("{}{suffix}", self.created_by)),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: self.empty_layer,
            ..Default::default()
        }
    }
}

/// Per-stage state of the instruction walk besides the [`StageState`].
struct Walk<'c> {
    names: StepNames<'c>,
    cmd_set_in_stage: bool,
    auto_args: &'c [(String, String)],
}

pub(super) fn lower_stage(
    l: &mut Lowerer,
    st: &StageSource,
    input: &StageInputs,
) -> Result<StageState, DockerfileError> {
    let from = st.from;
    let (base, platform) = base_and_platform(l, from, input)?;
    let body_steps = st
        .body
        .iter()
        .filter(|x| StepNames::counts_as_step(x))
        .count();
    let mut names = StepNames {
        label: input.label,
        total: 1 + body_steps,
        step: 1,
    };
    let mut state = base_state(l, from, &base, &platform, input, &names)?;
    // A base image made with SHELL runs this stage's shell forms through that shell too.
    state.shell = state.config.config.shell.clone();
    if env_get(&state.config.config.env, "PATH").is_none() {
        env_set(&mut state.config.config.env, "PATH", DEFAULT_PATH);
    }
    let cx = stage_ctx(input);
    // The base's ONBUILD triggers run first; the new image does not inherit them.
    let triggers =
        onbuild::parse_triggers(l, from, &std::mem::take(&mut state.config.config.on_build))?;
    names.total += triggers
        .iter()
        .filter(|x| StepNames::counts_as_step(x))
        .count();
    let mut walk = Walk {
        names,
        cmd_set_in_stage: false,
        auto_args: input.auto_args,
    };
    for (position, ins) in triggers.iter().chain(st.body).enumerate() {
        l.in_trigger = (position < triggers.len()).then(|| ins.original.clone());
        l.declared_args.replace(state.declared_args.clone());
        if let Some(entry) = lower_instruction(l, &cx, &mut state, &mut walk, ins)? {
            state.config.history.push(entry.into_history());
        }
    }
    l.in_trigger = None;
    Ok(state)
}

fn stage_ctx<'c>(input: &StageInputs<'c>) -> StageCtx<'c> {
    StageCtx {
        index: input.index,
        states: input.states,
        stage_index: input.stage_index,
        resolver: input.resolver,
        escape: input.escape,
        no_cache: input.no_cache,
    }
}

/// FROM's `--platform` and base name, expanded with the global ARGs.
fn base_and_platform(
    l: &Lowerer,
    from: &Instruction,
    input: &StageInputs,
) -> Result<(String, String), DockerfileError> {
    let Command::From(cmd) = l.command(from)? else {
        unreachable!("a FROM parses as one");
    };
    let mut global_env = input.auto_args.to_vec();
    global_env.extend(l.global_args.clone());
    let platform = match &cmd.platform {
        Some(p) => {
            let spec = l.expand(from, &global_env, &p.value, input.escape)?;
            let host_arch = split_platform(&l.opts.build_platform).1;
            crate::platform_spec::check(&spec, &host_arch).map_err(|e| l.err(from, e))?
        }
        None => l.opts.platform.clone(),
    };
    let base = l.expand(from, &global_env, &cmd.base, input.escape)?;
    if base.is_empty() {
        return Err(l.err(
            from,
            format!("base name ({}) should not be blank", cmd.base),
        ));
    }
    Ok((base, platform))
}

/// The state a stage starts from: a named context, an earlier stage, scratch or an image.
fn base_state(
    l: &mut Lowerer,
    from: &Instruction,
    base: &str,
    platform: &str,
    input: &StageInputs,
    names: &StepNames,
) -> Result<StageState, DockerfileError> {
    let fresh = |vertex: Option<usize>, config: ImageConfig| StageState {
        vertex,
        config,
        args: vec![],
        declared_args: vec![],
        args_over_env: BTreeSet::new(),
        shell: vec![],
        platform: platform.to_string(),
    };
    let empty = || {
        let (os, arch, variant) = split_platform(platform);
        empty_image(os, arch, variant)
    };
    if let Some((v, config)) = l.named_context_stage_base(from, base, platform, input.resolver)? {
        return Ok(fresh(Some(v), config.unwrap_or_else(empty)));
    }
    if let Some(d) = (input.stage_index)(base, input.index) {
        // As in BuildKit, the stage keeps the base stage's ARGs (values and history prefix).
        return input.states[d]
            .clone()
            .ok_or_else(|| l.err(from, format!("stage {base:?} was not built")));
    }
    if base.eq_ignore_ascii_case("scratch") {
        return Ok(fresh(None, empty()));
    }
    let (pinned, config) = input
        .resolver
        .resolve(base, platform)
        .map_err(|e| l.err(from, format!("{e:#}")))?;
    let v = l.add(
        Vertex {
            op: Op::Image {
                reference: pinned,
                platform: platform.to_string(),
            },
            inputs: vec![],
            name: names.name(1, &format!("FROM {base}")),
            ignore_cache: false,
        },
        Some(from),
    );
    Ok(fresh(Some(v), config))
}

/// One instruction: parsed into its command, which updates the state (and graph);
/// returns its history entry.
fn lower_instruction(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &mut StageState,
    walk: &mut Walk,
    ins: &Instruction,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let env = scope(state);
    let escape = cx.escape;
    match l.command(ins)? {
        Command::Run(run) => lower_run(l, cx, state, &mut walk.names, ins, &run, &env),
        Command::Copy(copy) | Command::Add(copy) => {
            lower_copy(l, cx, state, &mut walk.names, ins, &copy, &env)
        }
        Command::Workdir(w) => lower_workdir(l, cx, state, &mut walk.names, ins, &w.path, &env),
        Command::Env(kv) => lower_env_or_label(l, state, ins, &kv, &env, escape),
        Command::Label(kv) => lower_env_or_label(l, state, ins, &kv, &env, escape),
        Command::Arg(arg) => lower_arg(l, state, ins, &arg, walk.auto_args, escape),
        Command::Cmd(c) => Ok(lower_cmd(state, &mut walk.cmd_set_in_stage, &c)),
        Command::Entrypoint(c) => Ok(lower_entrypoint(state, walk.cmd_set_in_stage, &c)),
        Command::User(u) => lower_user(l, state, ins, &u, &env, escape),
        Command::Expose(e) => lower_expose(l, state, ins, &e, &env, escape),
        Command::Volume(v) => lower_volume(l, state, ins, &v, &env, escape),
        Command::StopSignal(s) => lower_stopsignal(l, state, ins, &s, &env, escape),
        Command::Shell(shell) => Ok(lower_shell(state, shell)),
        Command::Maintainer(m) => {
            state.config.author = m.args.first().cloned();
            let text = format!("MAINTAINER {}", m.args.join(" "));
            Ok(HistoryEntry::config(text))
        }
        Command::OnBuild(o) => {
            state.config.config.on_build.push(o.trigger);
            Ok(None)
        }
        Command::Healthcheck(h) => {
            let created_by = history::healthcheck_text(&h.health);
            state.config.config.healthcheck = Some(h.health);
            Ok(HistoryEntry::config(created_by))
        }
        Command::From(_) => unreachable!("stages are split at FROM"),
    }
}

/// RUN: as BuildKit's progress does, the step name shows the flags (mounts, network).
fn lower_run(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &mut StageState,
    names: &mut StepNames,
    ins: &Instruction,
    run: &RunCommand,
    env: &[(String, String)],
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let flags: String = ins.flags.iter().map(|f| format!("{f} ")).collect();
    let name = names.next(&format!("RUN {flags}{}", display_cmd(&run.line)));
    let (v, args) = steps::lower_run(l, cx, state, ins, run, env, name)?;
    state.vertex = Some(v);
    let text = history::run_text(&args, &run_history_args(state));
    Ok(HistoryEntry::layer(text))
}

/// COPY and ADD: the step is named by the instruction as written.
fn lower_copy(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &mut StageState,
    names: &mut StepNames,
    ins: &Instruction,
    cmd: &CopyCommand,
    env: &[(String, String)],
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let rest = ins.original.split_once(char::is_whitespace);
    let rest = rest.map(|x| x.1.trim()).unwrap_or("");
    let name = names.next(&format!("{} {rest}", ins.keyword.to_uppercase()));
    let (v, text) = copy::lower_copy(l, cx, state, ins, cmd, env, name)?;
    state.vertex = Some(v);
    Ok(HistoryEntry::layer(text))
}

fn lower_workdir(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &mut StageState,
    names: &mut StepNames,
    ins: &Instruction,
    arg: &str,
    env: &[(String, String)],
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let dir = l.expand(ins, env, arg, cx.escape)?;
    if dir.is_empty() {
        return Err(l.err(
            ins,
            format!("WORKDIR {arg}: the path is empty after expansion (normalizing workdir: cannot normalize nothing)"),
        ));
    }
    let config = &mut state.config.config;
    let cur = config.working_dir.clone().unwrap_or_else(|| "/".into());
    let dir = join_path(&cur, &dir, false);
    config.working_dir = Some(dir.clone());
    let mut entry = HistoryEntry::config(format!("WORKDIR {dir}"));
    // BuildKit makes no directory (and no layer) for the root.
    if dir != "/" {
        let name = names.next(&format!("WORKDIR {dir}"));
        let base = l.or_scratch(state.vertex);
        let chown = config
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .map(|u| command::parse_chown(&u));
        let mkdir = FileAction::Mkdir {
            path: dir,
            mode: 0o755,
            chown,
        };
        let vertex = Vertex {
            op: Op::File(FileOp {
                actions: vec![mkdir],
            }),
            inputs: vec![base],
            name,
            ignore_cache: cx.no_cache,
        };
        state.vertex = Some(l.add(vertex, Some(ins)));
        if let Some(e) = entry.as_mut() {
            e.empty_layer = false;
        }
    }
    Ok(entry)
}

fn lower_env_or_label(
    l: &Lowerer,
    state: &mut StageState,
    ins: &Instruction,
    cmd: &KeyValueCommand,
    env: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let kw = ins.keyword.as_str();
    // Every pair sees the values from before the instruction, as in BuildKit
    // (`ENV a=new b=$a` gives b the old a).
    let mut pairs = Vec::new();
    for (k, v) in &cmd.pairs {
        let k = l.expand(ins, env, k, escape)?;
        let v = l.expand(ins, env, v, escape)?;
        if kw == "env" {
            if k.is_empty() {
                return Err(l.err(ins, "ENV names can not be blank"));
            }
            state.args_over_env.remove(&k);
            env_set(&mut state.config.config.env, &k, &v);
        } else {
            state.config.config.labels.insert(k.clone(), v.clone());
        }
        pairs.push(format!("{k}={v}"));
    }
    Ok(HistoryEntry::config(format!(
        "{} {}",
        kw.to_uppercase(),
        pairs.join(" ")
    )))
}

fn lower_arg(
    l: &Lowerer,
    state: &mut StageState,
    ins: &Instruction,
    cmd: &ArgCommand,
    auto_args: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let mut shown = Vec::new();
    for decl in &cmd.args {
        // Unlike ENV, each ARG's default sees the ones declared before it.
        let env = scope(state);
        let (k, default) = expand_arg(l, ins, decl, &env, escape)?;
        let v = stage_arg_value(l, &k, default, auto_args);
        state.declared_args.push(k.clone());
        l.declared_args.borrow_mut().push(k.clone());
        match v {
            Some(v) => {
                shown.push(format!("{k}={v}"));
                state.args.retain(|(n, _)| *n != k);
                state.args_over_env.insert(k.clone());
                state.args.push((k, v));
            }
            // Without a value the ARG stays unset (an earlier value is kept).
            None => shown.push(k),
        }
    }
    Ok(HistoryEntry::config(format!("ARG {}", shown.join(" "))))
}

/// A stage ARG's value: the build arg, else its default, else a global ARG's or an
/// automatic one's.
fn stage_arg_value(
    l: &Lowerer,
    key: &str,
    default: Option<String>,
    auto_args: &[(String, String)],
) -> Option<String> {
    let global = || {
        if l.valueless_global_args.contains(key) {
            return None;
        }
        l.global_args
            .iter()
            .rev()
            .find(|(g, _)| g == key)
            .map(|(_, v)| v.clone())
    };
    let automatic = || {
        auto_args
            .iter()
            .find(|(g, _)| g == key)
            .map(|(_, v)| v.clone())
    };
    l.opts
        .build_args
        .get(key)
        .cloned()
        .or(default)
        .or_else(global)
        .or_else(automatic)
}

/// CMD (BuildKit marks every CMD as escaped, a Docker image spec compatibility flag).
fn lower_cmd(
    state: &mut StageState,
    cmd_set_in_stage: &mut bool,
    cmd: &ExecCommand,
) -> Option<HistoryEntry> {
    let (created_by, args) = exec_form(state, cmd, "CMD");
    *cmd_set_in_stage = true;
    state.config.config.cmd = args;
    state.config.config.args_escaped = true;
    HistoryEntry::config(created_by)
}

/// ENTRYPOINT: it resets a CMD inherited from the base image.
fn lower_entrypoint(
    state: &mut StageState,
    cmd_set_in_stage: bool,
    cmd: &ExecCommand,
) -> Option<HistoryEntry> {
    let (created_by, args) = exec_form(state, cmd, "ENTRYPOINT");
    state.config.config.entrypoint = args;
    if !cmd_set_in_stage {
        state.config.config.cmd = None;
    }
    HistoryEntry::config(created_by)
}

/// The history text and the config value of CMD/ENTRYPOINT (an empty list is left out
/// of the image, like Go's omitempty in BuildKit).
fn exec_form(state: &StageState, cmd: &ExecCommand, what: &str) -> (String, Option<Vec<String>>) {
    let args = command_args(state, &cmd.line);
    let created_by = format!("{what} {}", history::go_quoted_list(&args));
    (created_by, (!args.is_empty()).then_some(args))
}

fn lower_user(
    l: &Lowerer,
    state: &mut StageState,
    ins: &Instruction,
    cmd: &UserCommand,
    env: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let u = l.expand(ins, env, &cmd.user, escape)?;
    let created_by = format!("USER {u}");
    // An empty user is left out of the image, like Go's omitempty in BuildKit.
    state.config.config.user = (!u.is_empty()).then_some(u);
    Ok(HistoryEntry::config(created_by))
}

fn lower_expose(
    l: &Lowerer,
    state: &mut StageState,
    ins: &Instruction,
    cmd: &ExposeCommand,
    env: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let mut ports = BTreeSet::new();
    for word in &cmd.ports {
        // Like BuildKit, a variable may expand to several ports.
        let words = Expander::new(&env, escape)
            .process_words(word)
            .map_err(|e| l.err(ins, format!("EXPOSE {word:?}: {e}")))?;
        for spec in words {
            let keys = expose::parse_port_spec(&spec)
                .map_err(|e| l.err(ins, format!("EXPOSE {spec}: {e}")))?;
            ports.extend(keys);
        }
    }
    for key in &ports {
        state
            .config
            .config
            .exposed_ports
            .insert(key.clone(), EmptyObject {});
    }
    Ok(HistoryEntry::config(format!(
        "EXPOSE {}",
        history::go_port_map(&ports)
    )))
}

fn lower_volume(
    l: &Lowerer,
    state: &mut StageState,
    ins: &Instruction,
    cmd: &VolumeCommand,
    env: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let mut volumes = Vec::new();
    for v in &cmd.paths {
        // BuildKit trims each path before expanding it (`VOLUME [" /data "]`).
        let v = l.expand(ins, env, v.trim(), escape)?;
        if v.is_empty() {
            return Err(l.err(ins, "VOLUME specified can not be an empty string"));
        }
        state
            .config
            .config
            .volumes
            .insert(v.clone(), EmptyObject {});
        volumes.push(v);
    }
    Ok(HistoryEntry::config(format!(
        "VOLUME {}",
        history::go_list(&volumes)
    )))
}

fn lower_stopsignal(
    l: &Lowerer,
    state: &mut StageState,
    ins: &Instruction,
    cmd: &StopSignalCommand,
    env: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let s = l.expand(ins, env, &cmd.signal, escape)?;
    if !signal::is_valid_signal(&s) {
        return Err(l.err(ins, format!("Invalid signal: {s}")));
    }
    let created_by = format!("STOPSIGNAL {s}");
    state.config.config.stop_signal = Some(s);
    Ok(HistoryEntry::config(created_by))
}

fn lower_shell(state: &mut StageState, cmd: ShellCommand) -> Option<HistoryEntry> {
    let created_by = format!("SHELL {}", history::go_list(&cmd.args));
    state.shell = cmd.args.clone();
    state.config.config.shell = cmd.args;
    HistoryEntry::config(created_by)
}
