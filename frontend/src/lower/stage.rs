//! Lowers one stage: its base (FROM), then each instruction through its own function.

use super::copy;
use super::steps::{self, StageCtx};
use super::*;

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
    let cx = StageCtx {
        index: input.index,
        states: input.states,
        stage_index: input.stage_index,
        resolver: input.resolver,
        escape: input.escape,
        no_cache: input.no_cache,
    };
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
            let suffix = if entry.buildkit_suffix {
                " # buildkit"
            } else {
                ""
            };
            state.config.history.push(History {
                created_by: Some(format!("{}{suffix}", entry.created_by)),
                comment: Some("buildkit.dockerfile.v0".into()),
                empty_layer: entry.empty_layer,
                ..Default::default()
            });
        }
    }
    l.in_trigger = None;
    Ok(state)
}

/// FROM's `--platform` and base name, expanded with the global ARGs.
fn base_and_platform(
    l: &Lowerer,
    from: &Instruction,
    input: &StageInputs,
) -> Result<(String, String), DockerfileError> {
    let flags = parse_flags(from, &["platform"]).map_err(|e| l.err(from, e))?;
    let mut global_env = input.auto_args.to_vec();
    global_env.extend(l.global_args.clone());
    let platform = match flags.get("platform") {
        Some(p) => {
            let spec = l.expand(from, &global_env, p, input.escape)?;
            let host_arch = split_platform(&l.opts.build_platform).1;
            crate::platform_spec::check(&spec, &host_arch).map_err(|e| l.err(from, e))?
        }
        None => l.opts.platform.clone(),
    };
    let base = l.expand(from, &global_env, &from.args[0], input.escape)?;
    if base.is_empty() {
        return Err(l.err(
            from,
            format!("base name ({}) should not be blank", from.args[0]),
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

/// One instruction: updates the state (and graph) and returns its history entry.
fn lower_instruction(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &mut StageState,
    walk: &mut Walk,
    ins: &Instruction,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let env = scope(state);
    let escape = cx.escape;
    let kw = ins.keyword.as_str();
    match kw {
        "run" => {
            // As BuildKit's progress does, the step name shows the flags (mounts, network).
            let flags: String = ins.flags.iter().map(|f| format!("{f} ")).collect();
            let name = walk.names.next(&format!("RUN {flags}{}", display_cmd(ins)));
            let (v, args) = steps::lower_run(l, cx, state, ins, &env, name)?;
            state.vertex = Some(v);
            Ok(HistoryEntry::layer(history::run_text(
                &args,
                &run_history_args(state),
            )))
        }
        "copy" | "add" => {
            let rest = ins.original.split_once(char::is_whitespace);
            let text = format!(
                "{} {}",
                kw.to_uppercase(),
                rest.map(|x| x.1.trim()).unwrap_or("")
            );
            let name = walk.names.next(&text);
            let (v, text) = copy::lower_copy(l, cx, state, ins, &env, name)?;
            state.vertex = Some(v);
            Ok(HistoryEntry::layer(text))
        }
        "workdir" => lower_workdir(l, cx, state, &mut walk.names, ins, &env),
        "env" | "label" => lower_env_or_label(l, state, ins, &env, escape),
        "arg" => lower_arg(l, state, ins, walk.auto_args, escape),
        "cmd" | "entrypoint" => lower_command(l, state, &mut walk.cmd_set_in_stage, ins),
        "user" => lower_user(l, state, ins, &env, escape),
        "expose" => lower_expose(l, state, ins, &env, escape),
        "volume" => lower_volume(l, state, ins, &env, escape),
        "stopsignal" => lower_stopsignal(l, state, ins, &env, escape),
        "shell" => lower_shell(l, state, ins),
        "maintainer" => {
            state.config.author = ins.args.first().cloned();
            Ok(HistoryEntry::config(format!(
                "MAINTAINER {}",
                ins.args.join(" ")
            )))
        }
        "onbuild" => {
            let inner = onbuild::trigger_text(l, ins)?;
            state.config.config.on_build.push(inner);
            Ok(None)
        }
        "healthcheck" => lower_healthcheck(l, state, ins),
        "from" => unreachable!("stages are split at FROM"),
        _ => Err(unknown_instruction(l, ins)),
    }
}

fn lower_workdir(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &mut StageState,
    names: &mut StepNames,
    ins: &Instruction,
    env: &[(String, String)],
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let arg = ins
        .args
        .first()
        .ok_or_else(|| l.err(ins, "WORKDIR requires exactly one argument"))?;
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
            .map(|u| parse_chown(&u));
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
    env: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let kw = ins.keyword.as_str();
    if !ins.args.len().is_multiple_of(3) || ins.args.is_empty() {
        return Err(l.err(
            ins,
            format!("{} requires at least one key=value pair", kw.to_uppercase()),
        ));
    }
    // Every pair sees the values from before the instruction, as in BuildKit
    // (`ENV a=new b=$a` gives b the old a).
    let mut pairs = Vec::new();
    for triple in ins.args.chunks(3) {
        let k = l.expand(ins, env, &triple[0], escape)?;
        let v = l.expand(ins, env, &triple[1], escape)?;
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
    auto_args: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let mut shown = Vec::new();
    for a in &ins.args {
        // Unlike ENV, each ARG's default sees the ones declared before it.
        let env = scope(state);
        let (k, default) = declare_arg(l, ins, a, &env, escape)?;
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

/// CMD and ENTRYPOINT.
fn lower_command(
    l: &Lowerer,
    state: &mut StageState,
    cmd_set_in_stage: &mut bool,
    ins: &Instruction,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let kw = ins.keyword.as_str();
    parse_flags(ins, &[]).map_err(|e| l.err(ins, e))?;
    let args = command_args(state, ins);
    let created_by = format!("{} {}", kw.to_uppercase(), history::go_quoted_list(&args));
    // An empty list is left out of the image, like Go's omitempty in BuildKit.
    let args = (!args.is_empty()).then_some(args);
    let config = &mut state.config.config;
    if kw == "cmd" {
        *cmd_set_in_stage = true;
        config.cmd = args;
        // BuildKit marks every CMD as escaped (a Docker image spec compatibility flag).
        config.args_escaped = true;
    } else {
        config.entrypoint = args;
        // An ENTRYPOINT resets a CMD inherited from the base image.
        if !*cmd_set_in_stage {
            config.cmd = None;
        }
    }
    Ok(HistoryEntry::config(created_by))
}

fn lower_user(
    l: &Lowerer,
    state: &mut StageState,
    ins: &Instruction,
    env: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let u = ins
        .args
        .first()
        .ok_or_else(|| l.err(ins, "USER requires exactly one argument"))?;
    let u = l.expand(ins, env, u, escape)?;
    let created_by = format!("USER {u}");
    // An empty user is left out of the image, like Go's omitempty in BuildKit.
    state.config.config.user = (!u.is_empty()).then_some(u);
    Ok(HistoryEntry::config(created_by))
}

fn lower_expose(
    l: &Lowerer,
    state: &mut StageState,
    ins: &Instruction,
    env: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    if ins.args.is_empty() {
        return Err(l.err(ins, "EXPOSE requires at least one argument"));
    }
    let mut ports = BTreeSet::new();
    for word in &ins.args {
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
    env: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    if ins.args.is_empty() {
        return Err(l.err(ins, "VOLUME requires at least one argument"));
    }
    let mut volumes = Vec::new();
    for v in &ins.args {
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
    env: &[(String, String)],
    escape: char,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let s = ins
        .args
        .first()
        .ok_or_else(|| l.err(ins, "STOPSIGNAL requires exactly one argument"))?;
    let s = l.expand(ins, env, s, escape)?;
    if !signal::is_valid_signal(&s) {
        return Err(l.err(ins, format!("Invalid signal: {s}")));
    }
    let created_by = format!("STOPSIGNAL {s}");
    state.config.config.stop_signal = Some(s);
    Ok(HistoryEntry::config(created_by))
}

fn lower_shell(
    l: &Lowerer,
    state: &mut StageState,
    ins: &Instruction,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    if !ins.json {
        return Err(l.err(
            ins,
            "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]",
        ));
    }
    state.shell = ins.args.clone();
    state.config.config.shell = ins.args.clone();
    Ok(HistoryEntry::config(format!(
        "SHELL {}",
        history::go_list(&ins.args)
    )))
}

fn lower_healthcheck(
    l: &Lowerer,
    state: &mut StageState,
    ins: &Instruction,
) -> Result<Option<HistoryEntry>, DockerfileError> {
    let flag_names = [
        "interval",
        "timeout",
        "start-period",
        "start-interval",
        "retries",
    ];
    let flags = parse_flags(ins, &flag_names).map_err(|e| l.err(ins, e))?;
    let kind = ins
        .args
        .first()
        .map(|s| s.to_uppercase())
        .unwrap_or_default();
    let mut hc = HealthConfig::default();
    match kind.as_str() {
        "NONE" if ins.args.len() > 1 => {
            return Err(l.err(ins, "HEALTHCHECK NONE takes no arguments"))
        }
        "NONE" => hc.test = vec!["NONE".into()],
        "CMD" => {
            let rest: Vec<String> = ins.args[1..].to_vec();
            if rest.is_empty() {
                return Err(l.err(ins, "Missing command after HEALTHCHECK CMD"));
            }
            hc.test = if ins.json {
                std::iter::once("CMD".to_string()).chain(rest).collect()
            } else {
                vec!["CMD-SHELL".into(), rest.join(" ")]
            };
        }
        _ => return Err(l.err(ins, "HEALTHCHECK must be followed by CMD or NONE")),
    }
    // BuildKit ignores the flags of HEALTHCHECK NONE.
    if kind == "CMD" {
        healthcheck_flags(l, ins, &flags, &mut hc)?;
    }
    let created_by = history::healthcheck_text(&hc);
    state.config.config.healthcheck = Some(hc);
    Ok(HistoryEntry::config(created_by))
}

/// HEALTHCHECK CMD's `--interval`, `--timeout`, `--start-period`, `--start-interval`, `--retries`.
fn healthcheck_flags(
    l: &Lowerer,
    ins: &Instruction,
    flags: &BTreeMap<String, String>,
    hc: &mut HealthConfig,
) -> Result<(), DockerfileError> {
    for (name, slot) in [
        ("interval", &mut hc.interval),
        ("timeout", &mut hc.timeout),
        ("start-period", &mut hc.start_period),
        ("start-interval", &mut hc.start_interval),
    ] {
        if let Some(v) = flags.get(name) {
            let ns = parse_duration_ns(v).ok_or_else(|| {
                l.err(
                    ins,
                    format!("invalid --{name}={v}: expected a duration such as 30s or 1m30s"),
                )
            })?;
            if ns != 0 && ns < 1_000_000 {
                return Err(l.err(ins, format!("Interval \"{name}\" cannot be less than 1ms")));
            }
            *slot = ns;
        }
    }
    if let Some(r) = flags.get("retries") {
        hc.retries = r
            .parse::<i32>()
            .map_err(|_| l.err(ins, format!("invalid --retries={r}")))?
            .into();
        if hc.retries < 0 {
            return Err(l.err(ins, format!("--retries cannot be negative ({r})")));
        }
    }
    Ok(())
}
