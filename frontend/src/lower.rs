//! Lowers a parsed Dockerfile to the solver's build graph plus the final image config.

use crate::checks::{CheckConfig, CheckWarning};
use crate::parser::{Ast, Instruction};
use crate::shell::Expander;
use llb::graph::{Chown, Definition, ExecOp, FileAction, FileOp, NetworkMode, Op, Vertex};
use oci::image::{EmptyObject, HealthConfig, History, ImageConfig};
use std::collections::{BTreeMap, BTreeSet};

mod contexts;
mod expose;
mod history;
mod mounts;
mod onbuild;
mod signal;
mod sources;
mod steps;

pub use contexts::NamedContext;

/// The PATH BuildKit puts in an image that has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Name of the build context in the graph's `Local` ops.
pub const CONTEXT_NAME: &str = "context";

/// Looks up base images; the CLI backs this with the local store and registries.
pub trait ImageResolver {
    /// Returns the reference pinned to a manifest digest, and the image config.
    fn resolve(&self, reference: &str, platform: &str) -> anyhow::Result<(String, ImageConfig)>;
}

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Shown in messages, e.g. "Dockerfile".
    pub dockerfile_name: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Target platform, e.g. "linux/amd64".
    pub platform: String,
    /// The target platform was asked for (`--platform`): as in BuildKit, the image then
    /// says it is for that platform even when its last stage's base is for another.
    pub platform_requested: bool,
    /// `--label`s, set on the final image over the Dockerfile's.
    pub labels: BTreeMap<String, String>,
    /// Platform of the machine running the build.
    pub build_platform: String,
    /// Stages whose steps must not come from the cache.
    pub no_cache_stages: BTreeSet<String>,
    /// `--build-context name=...`: used for `FROM name`, `COPY --from=name` and
    /// `RUN --mount=from=name` before stages and images.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Lower every stage, not only those the target needs, so that checks see them all
    /// (`build --check` without `--target`).
    pub lint_all_stages: bool,
    /// Build-wide settings for `RUN` (`--network`, `--allow`, `--add-host`, ...).
    pub run: crate::run_flags::RunDefaults,
}

/// An error in the Dockerfile, with its position.
#[derive(Debug, Clone)]
pub struct DockerfileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The offending source line, for a caret display.
    pub source_line: Option<String>,
}

impl std::fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(src) = &self.source_line {
            let width = self.line.to_string().len();
            write!(
                f,
                "\n {:>width$} | {}\n {:>width$} | {}^",
                self.line,
                src,
                "",
                " ".repeat(self.column.saturating_sub(1))
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for DockerfileError {}

/// Where a vertex came from in the Dockerfile.
#[derive(Clone, Debug)]
pub struct Location {
    pub line: usize,
    pub end_line: usize,
    pub text: String,
}

/// A lowered build.
pub struct Lowered {
    pub definition: Definition,
    /// Config of the final image (without rootfs; the exporter fills diff ids).
    pub image: ImageConfig,
    /// Source position of each vertex made from an instruction.
    pub locations: BTreeMap<usize, Location>,
    /// Names of the stages that are part of the build, in order.
    pub stages: Vec<String>,
    /// Build-check warnings not skipped by the `# check=` directive, in source order.
    pub warnings: Vec<CheckWarning>,
    /// The `# check=` directive (`error=true` makes warnings fail the build).
    pub check_config: CheckConfig,
}

#[derive(Clone)]
struct StageState {
    vertex: Option<usize>,
    config: ImageConfig,
    /// Declared ARGs in scope that have a value (those without one stay unset).
    args: Vec<(String, String)>,
    /// Every ARG declared in the stage (and the stage it is based on), in order: BuildKit
    /// lists them in front of each RUN's history entry.
    declared_args: Vec<String>,
    /// ARGs set after an ENV of the same name: as in BuildKit (one environment, last
    /// assignment wins), they shadow it for expansion and RUN until the next ENV.
    args_over_env: BTreeSet<String>,
    shell: Vec<String>,
    platform: String,
}

struct StageSource<'a> {
    from: &'a Instruction,
    name: Option<String>,
    body: &'a [Instruction],
}

struct Lowerer<'a> {
    opts: &'a BuildOptions,
    source: Vec<String>,
    def: Definition,
    locations: BTreeMap<usize, Location>,
    global_args: Vec<(String, String)>,
    /// Global ARGs declared without a value or build arg: in scope for FROM, but a stage's
    /// `ARG name` does not take a value from them.
    valueless_global_args: BTreeSet<String>,
    /// Stage names by index (None for unnamed stages).
    stage_names: Vec<Option<String>>,
    /// Text of the ONBUILD trigger being lowered, if any (errors mention it).
    in_trigger: Option<String>,
    /// Warnings found while expanding variables (UndefinedVar, UndefinedArgInFrom).
    warnings: std::cell::RefCell<Vec<CheckWarning>>,
    /// ARGs declared in the stage being lowered: never "undefined", even without a value.
    declared_args: std::cell::RefCell<Vec<String>>,
}

fn lines_of(source: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(source)
        .lines()
        .map(str::to_string)
        .collect()
}

impl Lowerer<'_> {
    fn err(&self, ins: &Instruction, message: impl Into<String>) -> DockerfileError {
        self.err_at(ins.start_line, ins.column, message)
    }

    fn err_at(&self, line: usize, column: usize, message: impl Into<String>) -> DockerfileError {
        DockerfileError {
            file: self.opts.dockerfile_name.clone(),
            line,
            column: column.max(1),
            message: match &self.in_trigger {
                Some(t) => format!(
                    "ONBUILD trigger {t:?} of the base image: {}",
                    message.into()
                ),
                None => message.into(),
            },
            source_line: self.source.get(line.wrapping_sub(1)).cloned(),
        }
    }

    fn expand(
        &self,
        ins: &Instruction,
        env: &[(String, String)],
        word: &str,
        escape: char,
    ) -> Result<String, DockerfileError> {
        let (out, _, unset) = Expander::new(&env.to_vec(), escape)
            .process_word_with_matches(word)
            .map_err(|e| self.err(ins, format!("{} {word:?}: {e}", ins.keyword.to_uppercase())))?;
        for name in unset {
            self.warn_undefined(ins, env, &name);
        }
        Ok(out)
    }

    /// Records an UndefinedVar (UndefinedArgInFrom in FROM) warning for `$name`.
    fn warn_undefined(&self, ins: &Instruction, env: &[(String, String)], name: &str) {
        if ins.keyword != "from" && self.declared_args.borrow().iter().any(|a| a == name) {
            return;
        }
        let hint = suggest(name, env.iter().map(|(k, _)| k.as_str()));
        let (rule, message) = if ins.keyword == "from" {
            let hint = hint
                .map(|h| format!(" (did you mean {h}?)"))
                .unwrap_or_default();
            (
                "UndefinedArgInFrom",
                format!("FROM argument '{name}' is not declared{hint}"),
            )
        } else {
            let hint = hint
                .map(|h| format!(" (did you mean ${h}?)"))
                .unwrap_or_default();
            (
                "UndefinedVar",
                format!("Usage of undefined variable '${name}'{hint}"),
            )
        };
        self.warnings.borrow_mut().push(CheckWarning {
            rule,
            message,
            line: ins.start_line,
            column: ins.column.max(1),
        });
    }

    /// `vertex`, or the empty filesystem vertex for a stage that has none yet (FROM scratch).
    fn or_scratch(&mut self, vertex: Option<usize>) -> usize {
        if let Some(v) = vertex {
            return v;
        }
        self.add(
            Vertex {
                op: Op::Scratch,
                inputs: vec![],
                name: "scratch".into(),
                ignore_cache: false,
            },
            None,
        )
    }

    fn add(&mut self, vertex: Vertex, ins: Option<&Instruction>) -> usize {
        let id = self.def.add(vertex);
        if let Some(ins) = ins {
            self.locations.entry(id).or_insert(Location {
                line: ins.start_line,
                end_line: ins.end_line,
                text: ins.original.clone(),
            });
        }
        id
    }
}

/// Splits `--name=value` flags, rejecting unknown ones (a repeated flag keeps its last value).
fn parse_flags(ins: &Instruction, allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    Ok(steps::collect_flags(ins, allowed)?.into_iter().collect())
}

const INSTRUCTIONS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// `unknown instruction: RUNN (did you mean RUN?)`, BuildKit's wording.
fn unknown_instruction(l: &Lowerer, ins: &Instruction) -> DockerfileError {
    let hint = suggest(&ins.keyword, INSTRUCTIONS.iter().copied())
        .map(|s| format!(" (did you mean {}?)", s.to_uppercase()))
        .unwrap_or_default();
    l.err(
        ins,
        format!("unknown instruction: {}{hint}", ins.keyword.to_uppercase()),
    )
}

/// Optimal-string-alignment distance: edits plus adjacent transpositions ("rnu" → "run" is 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
pub fn suggest<'b>(word: &str, candidates: impl IntoIterator<Item = &'b str>) -> Option<&'b str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d > 0)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn env_get<'e>(env: &'e [String], key: &str) -> Option<&'e str> {
    env.iter().rev().find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

fn env_set(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|kv| kv.split_once('=').map(|(k, _)| k) == Some(key))
    {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// Expansion environment: ARGs in scope overridden by ENV, except ARGs set after it.
fn scope(state: &StageState) -> Vec<(String, String)> {
    let mut v = state.args.clone();
    v.extend(
        state
            .config
            .config
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    v.extend(
        state
            .args
            .iter()
            .filter(|(k, _)| state.args_over_env.contains(k))
            .cloned(),
    );
    v
}

/// Lowers a Dockerfile (already parsed) to a build graph.
pub fn lower(
    ast: &Ast,
    source: &[u8],
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<Lowered, DockerfileError> {
    let mut l = Lowerer {
        opts,
        source: lines_of(source),
        def: Definition::default(),
        locations: BTreeMap::new(),
        global_args: Vec::new(),
        valueless_global_args: BTreeSet::new(),
        stage_names: Vec::new(),
        in_trigger: None,
        warnings: Default::default(),
        declared_args: Default::default(),
    };
    let escape = ast.directives.escape;

    // Automatic platform args, then global ARGs before the first FROM.
    let (os, arch, variant) = split_platform(&opts.platform);
    let (bos, barch, bvariant) = split_platform(&opts.build_platform);
    // TARGETSTAGE is the stage asked for, else the last one's name (empty if unnamed).
    let target_stage = opts.target.clone().unwrap_or_else(|| {
        ast.instructions
            .iter()
            .rev()
            .find(|x| x.keyword == "from")
            .and_then(|from| match from.args.as_slice() {
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_lowercase()),
                _ => None,
            })
            .unwrap_or_default()
    });
    // As in BuildKit, a build arg of the same name overrides an automatic value.
    let auto_args: Vec<(String, String)> = [
        ("BUILDPLATFORM", opts.build_platform.clone()),
        ("BUILDOS", bos),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", barch),
        ("BUILDVARIANT", bvariant),
        ("TARGETPLATFORM", opts.platform.clone()),
        ("TARGETOS", os),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", arch),
        ("TARGETVARIANT", variant),
        ("TARGETSTAGE", target_stage),
    ]
    .into_iter()
    .map(|(k, v)| {
        let v = opts.build_args.get(k).cloned().unwrap_or(v);
        (k.to_string(), v)
    })
    .collect();
    let mut stages: Vec<StageSource> = Vec::new();
    let mut i = 0;
    let ins = &ast.instructions;
    // BuildKit parses every instruction before choosing stages: an unknown one fails the
    // build even in a stage the target does not need.
    if let Some(x) = ins
        .iter()
        .find(|x| !INSTRUCTIONS.contains(&x.keyword.as_str()))
    {
        return Err(unknown_instruction(&l, x));
    }
    while i < ins.len() && ins[i].keyword != "from" {
        let x = &ins[i];
        if x.keyword != "arg" {
            return Err(l.err(
                x,
                format!(
                    "{} comes before the first FROM; only ARG may appear there",
                    x.keyword.to_uppercase()
                ),
            ));
        }
        let mut env = auto_args.clone();
        env.extend(l.global_args.clone());
        for a in &x.args {
            let (k, v) = declare_arg(&l, x, a, &env, escape)?;
            // `ARG TARGETARCH` before FROM brings the automatic value into scope.
            let automatic = || {
                auto_args
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map(|(_, v)| v.clone())
            };
            let v = opts.build_args.get(&k).cloned().or(v).or_else(automatic);
            if v.is_some() {
                l.valueless_global_args.remove(&k);
            } else {
                l.valueless_global_args.insert(k.clone());
            }
            l.global_args.push((k, v.unwrap_or_default()));
        }
        i += 1;
    }
    if i == ins.len() {
        let line = ins.last().map(|x| x.end_line).unwrap_or(1);
        return Err(l.err_at(
            line,
            1,
            "the Dockerfile has no FROM instruction; a build stage must start with FROM",
        ));
    }
    while i < ins.len() {
        let from = &ins[i];
        let mut j = i + 1;
        while j < ins.len() && ins[j].keyword != "from" {
            j += 1;
        }
        let name = match from.args.as_slice() {
            [_] => None,
            [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_lowercase()),
            [] => {
                return Err(l.err(
                    from,
                    "FROM requires the name of a base image, e.g. FROM debian:bookworm",
                ))
            }
            _ => return Err(l.err(from, "FROM requires either one or three arguments")),
        };
        if let Some(n) = &name {
            if !is_valid_stage_name(n) {
                return Err(l.err(
                    from,
                    format!(
                        "invalid name for build stage: {}, name can't start with a number or contain symbols",
                        crate::parser::go_quote(&from.args[2])
                    ),
                ));
            }
            if stages.iter().any(|s| s.name.as_deref() == Some(n)) {
                return Err(l.err(from, format!("duplicate stage name {n:?}")));
            }
        }
        stages.push(StageSource {
            from,
            name,
            body: &ins[i + 1..j],
        });
        i = j;
    }

    l.stage_names = stages.iter().map(|s| s.name.clone()).collect();
    let target = match &opts.target {
        None => stages.len() - 1,
        Some(t) => {
            let t = t.to_lowercase();
            stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&t))
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        stages.iter().filter_map(|s| s.name.as_deref()).collect();
                    let hint = suggest(&t, names.iter().copied())
                        .map(|s| format!("; did you mean {s:?}?"))
                        .unwrap_or_default();
                    l.err_at(1, 1, format!("target stage {t:?} could not be found{hint}"))
                })?
        }
    };

    // A name or index may refer to a stage defined later (BuildKit orders stages by
    // their dependencies); a stage never to itself.
    let stage_index = |reference: &str, current: usize| -> Option<usize> {
        let r = reference.to_lowercase();
        stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&r))
            .or_else(|| r.parse::<usize>().ok().filter(|&n| n < stages.len()))
            .filter(|&d| d != current)
    };
    let mut deps: Vec<Vec<(usize, &Instruction)>> = vec![Vec::new(); stages.len()];

    // Which stages the target needs: FROM <stage> and COPY --from=<stage>.
    let mut needed = vec![false; stages.len()];
    let mut stack = if opts.lint_all_stages {
        (0..stages.len()).collect()
    } else {
        vec![target]
    };
    while let Some(s) = stack.pop() {
        if std::mem::replace(&mut needed[s], true) {
            continue;
        }
        let mut global_env = auto_args.clone();
        global_env.extend(l.global_args.clone());
        let base = l.expand(stages[s].from, &global_env, &stages[s].from.args[0], escape)?;
        // A named context of the same name replaces the stage.
        if let Some(d) = stage_index(&base, s).filter(|_| {
            !opts.named_contexts.contains_key(&base)
                && !opts.named_contexts.contains_key(&base.to_lowercase())
        }) {
            stack.push(d);
            deps[s].push((d, stages[s].from));
        }
        for x in stages[s].body {
            if x.keyword == "copy" || x.keyword == "run" {
                for f in &x.flags {
                    let from = match x.keyword.as_str() {
                        "copy" => f.strip_prefix("--from="),
                        _ => f.strip_prefix("--mount=").and_then(|m| {
                            m.split(',').find_map(|kv| kv.trim().strip_prefix("from="))
                        }),
                    };
                    if let Some(v) = from {
                        if opts.named_contexts.contains_key(v)
                            || opts.named_contexts.contains_key(&v.to_lowercase())
                        {
                            continue;
                        }
                        // Only a first guess (stage ARGs are not known yet): no warnings here.
                        let v = Expander::new(&global_env, escape)
                            .process_word(v)
                            .unwrap_or_else(|_| v.to_string());
                        match stage_index(&v, s) {
                            Some(d) => {
                                stack.push(d);
                                deps[s].push((d, x));
                            }
                            None if stages[s].name.as_deref()
                                == Some(v.to_lowercase().as_str()) =>
                            {
                                return Err(l.err(
                                    x,
                                    format!(
                                        "circular dependency detected on stage: {}",
                                        v.to_lowercase()
                                    ),
                                ));
                            }
                            None => {}
                        }
                    }
                }
            }
        }
    }

    let multi = stages.len() > 1;
    let mut states: Vec<Option<StageState>> = vec![None; stages.len()];
    let mut built_names = Vec::new();
    let order = crate::stage_order::dependency_order(&needed, &deps, |s| {
        stages[s].name.clone().unwrap_or_else(|| s.to_string())
    })
    .map_err(|(message, ins)| l.err(ins, message))?;
    for s in order {
        let st = &stages[s];
        let label = match (&st.name, multi) {
            (Some(n), _) => n.clone(),
            (None, true) => format!("stage-{s}"),
            (None, false) => String::new(),
        };
        built_names.push(if label.is_empty() {
            format!("stage-{s}")
        } else {
            label.clone()
        });
        let no_cache = opts.no_cache_stages.contains(&label)
            || st
                .name
                .as_ref()
                .is_some_and(|n| opts.no_cache_stages.contains(n));
        let state = lower_stage(
            &mut l,
            st,
            s,
            &label,
            &states,
            &stage_index,
            &auto_args,
            escape,
            resolver,
            no_cache,
        )?;
        states[s] = Some(state);
    }
    let final_state = states[target]
        .clone()
        .ok_or_else(|| l.err_at(1, 1, "internal error: target stage was not built"))?;
    let output = l.or_scratch(final_state.vertex);
    l.def.output = Some(output);
    let mut image = final_state.config;
    image.rootfs.diff_ids.clear();
    image.config.labels.extend(opts.labels.clone());
    if opts.platform_requested {
        let (os, architecture, variant) = split_platform(&opts.platform);
        if !variant.is_empty() || image.os != os || image.architecture != architecture {
            image.variant = (!variant.is_empty()).then_some(variant);
        }
        image.os = os;
        image.architecture = architecture;
    }
    // BuildKit writes the platform normalised as containerd does (arm64/v8 → arm64).
    let platform = image.platform().normalized();
    (image.os, image.architecture, image.variant) =
        (platform.os, platform.architecture, platform.variant);
    let check_config = CheckConfig::parse(ast.directives.check.as_deref());
    let mut warnings: Vec<CheckWarning> = crate::checks::check_ast_by_stage(ast)
        .into_iter()
        .filter(|(stage, _)| stage.is_none_or(|s| needed.get(s).copied().unwrap_or(false)))
        .map(|(_, w)| w)
        .collect();
    warnings.extend(l.warnings.take());
    Ok(Lowered {
        definition: l.def,
        image,
        locations: l.locations,
        stages: built_names,
        warnings: crate::checks::filter(warnings, &check_config),
        check_config,
    })
}

/// BuildKit's rule for `AS name` (after lowercasing): `^[a-z][a-z0-9-_.]*$`.
fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// The config BuildKit starts `FROM scratch` with: the platform, and WorkingDir `/`.
fn empty_image(os: String, architecture: String, variant: String) -> ImageConfig {
    let mut image = ImageConfig {
        os,
        architecture,
        variant: (!variant.is_empty()).then_some(variant),
        ..Default::default()
    };
    image.config.working_dir = Some("/".into());
    image
}

fn split_platform(p: &str) -> (String, String, String) {
    let mut it = p.split('/');
    (
        it.next().unwrap_or("").into(),
        it.next().unwrap_or("").into(),
        it.next().unwrap_or("").into(),
    )
}

/// Parses one ARG word (`name` or `name=default`), expanding the default.
fn declare_arg(
    l: &Lowerer,
    ins: &Instruction,
    word: &str,
    env: &[(String, String)],
    escape: char,
) -> Result<(String, Option<String>), DockerfileError> {
    match word.split_once('=') {
        Some(("", _)) => Err(l.err(ins, "ARG names can not be blank")),
        Some((k, v)) => Ok((k.to_string(), Some(l.expand(ins, env, v, escape)?))),
        None => Ok((word.to_string(), None)),
    }
}

#[allow(clippy::too_many_arguments)]
fn lower_stage(
    l: &mut Lowerer,
    st: &StageSource,
    index: usize,
    label: &str,
    states: &[Option<StageState>],
    stage_index: &dyn Fn(&str, usize) -> Option<usize>,
    auto_args: &[(String, String)],
    escape: char,
    resolver: &dyn ImageResolver,
    no_cache: bool,
) -> Result<StageState, DockerfileError> {
    let from = st.from;
    let flags = parse_flags(from, &["platform"]).map_err(|e| l.err(from, e))?;
    let mut global_env = auto_args.to_vec();
    global_env.extend(l.global_args.clone());
    let platform = match flags.get("platform") {
        Some(p) => {
            let spec = l.expand(from, &global_env, p, escape)?;
            let host_arch = split_platform(&l.opts.build_platform).1;
            crate::platform_spec::check(&spec, &host_arch).map_err(|e| l.err(from, e))?
        }
        None => l.opts.platform.clone(),
    };
    let base = l.expand(from, &global_env, &from.args[0], escape)?;
    if base.is_empty() {
        return Err(l.err(
            from,
            format!("base name ({}) should not be blank", from.args[0]),
        ));
    }
    let counts_as_step =
        |x: &Instruction| matches!(x.keyword.as_str(), "run" | "copy" | "add" | "workdir");
    // Grows by the base image's ONBUILD triggers once they are known.
    let total = std::cell::Cell::new(1 + st.body.iter().filter(|x| counts_as_step(x)).count());
    let step_name = |step: usize, text: &str| {
        let total = total.get();
        if label.is_empty() {
            format!("[{step}/{total}] {text}")
        } else {
            format!("[{label} {step}/{total}] {text}")
        }
    };
    let named = l.named_context_stage_base(from, &base, &platform, resolver)?;
    let mut state = if let Some((v, config)) = named {
        let (os, arch, variant) = split_platform(&platform);
        let config = config.unwrap_or_else(|| empty_image(os, arch, variant));
        StageState {
            vertex: Some(v),
            config,
            args: vec![],
            declared_args: vec![],
            args_over_env: BTreeSet::new(),
            shell: vec![],
            platform: platform.clone(),
        }
    } else if let Some(d) = stage_index(&base, index) {
        // As in BuildKit, the stage keeps the base stage's ARGs (values and history prefix).
        states[d]
            .clone()
            .ok_or_else(|| l.err(from, format!("stage {base:?} was not built")))?
    } else if base.eq_ignore_ascii_case("scratch") {
        let (os, arch, variant) = split_platform(&platform);
        let config = empty_image(os, arch, variant);
        StageState {
            vertex: None,
            config,
            args: vec![],
            declared_args: vec![],
            args_over_env: BTreeSet::new(),
            shell: vec![],
            platform: platform.clone(),
        }
    } else {
        let (pinned, config) = resolver
            .resolve(&base, &platform)
            .map_err(|e| l.err(from, format!("{e:#}")))?;
        let v = l.add(
            Vertex {
                op: Op::Image {
                    reference: pinned,
                    platform: platform.clone(),
                },
                inputs: vec![],
                name: step_name(1, &format!("FROM {base}")),
                ignore_cache: false,
            },
            Some(from),
        );
        StageState {
            vertex: Some(v),
            config,
            args: vec![],
            declared_args: vec![],
            args_over_env: BTreeSet::new(),
            shell: vec![],
            platform: platform.clone(),
        }
    };
    // A base image made with SHELL runs this stage's shell forms through that shell too.
    state.shell = state.config.config.shell.clone();
    if env_get(&state.config.config.env, "PATH").is_none() {
        env_set(&mut state.config.config.env, "PATH", DEFAULT_PATH);
    }
    let cx = steps::StageCtx {
        index,
        states,
        stage_index,
        resolver,
        escape,
        no_cache,
    };
    // The base's ONBUILD triggers run first; the new image does not inherit them.
    let triggers =
        onbuild::parse_triggers(l, from, &std::mem::take(&mut state.config.config.on_build))?;
    total.set(total.get() + triggers.iter().filter(|x| counts_as_step(x)).count());
    let mut step = 1;
    let mut cmd_set_in_stage = false;
    for (position, ins) in triggers.iter().chain(st.body).enumerate() {
        l.in_trigger = (position < triggers.len()).then(|| ins.original.clone());
        let kw = ins.keyword.as_str();
        let created_by: String;
        let mut empty_layer = true;
        // Only steps that add a layer get BuildKit's " # buildkit" suffix; ONBUILD records nothing.
        let mut buildkit_suffix = false;
        let mut record_history = true;
        let env = scope(&state);
        l.declared_args.replace(state.declared_args.clone());
        match kw {
            "run" => {
                step += 1;
                // As BuildKit's progress does, the step name shows the flags (mounts, network).
                let flags: String = ins.flags.iter().map(|f| format!("{f} ")).collect();
                let name = step_name(step, &format!("RUN {flags}{}", display_cmd(ins)));
                let (v, args) = steps::lower_run(l, &cx, &state, ins, &env, name)?;
                state.vertex = Some(v);
                created_by = history::run_text(&args, &run_history_args(&state));
                empty_layer = false;
                buildkit_suffix = true;
            }
            "copy" | "add" => {
                step += 1;
                let text = format!(
                    "{} {}",
                    kw.to_uppercase(),
                    ins.original
                        .split_once(char::is_whitespace)
                        .map(|x| x.1.trim())
                        .unwrap_or("")
                );
                let (v, text) =
                    steps::lower_copy(l, &cx, &state, ins, &env, step_name(step, &text))?;
                state.vertex = Some(v);
                created_by = text;
                empty_layer = false;
                buildkit_suffix = true;
            }
            "workdir" => {
                let arg = ins
                    .args
                    .first()
                    .ok_or_else(|| l.err(ins, "WORKDIR requires exactly one argument"))?;
                let dir = l.expand(ins, &env, arg, escape)?;
                if dir.is_empty() {
                    return Err(l.err(
                        ins,
                        format!("WORKDIR {arg}: the path is empty after expansion (normalizing workdir: cannot normalize nothing)"),
                    ));
                }
                let cur = state
                    .config
                    .config
                    .working_dir
                    .clone()
                    .unwrap_or_else(|| "/".into());
                let dir = join_path(&cur, &dir, false);
                state.config.config.working_dir = Some(dir.clone());
                created_by = format!("WORKDIR {dir}");
                // BuildKit makes no directory (and no layer) for the root.
                if dir != "/" {
                    step += 1;
                    let base = l.or_scratch(state.vertex);
                    let chown = state
                        .config
                        .config
                        .user
                        .clone()
                        .filter(|u| !u.is_empty())
                        .map(|u| parse_chown(&u));
                    let v = l.add(
                        Vertex {
                            op: Op::File(FileOp {
                                actions: vec![FileAction::Mkdir {
                                    path: dir.clone(),
                                    mode: 0o755,
                                    chown,
                                }],
                            }),
                            inputs: vec![base],
                            name: step_name(step, &format!("WORKDIR {dir}")),
                            ignore_cache: no_cache,
                        },
                        Some(ins),
                    );
                    state.vertex = Some(v);
                    empty_layer = false;
                }
            }
            "env" | "label" => {
                if ins.args.len() % 3 != 0 || ins.args.is_empty() {
                    return Err(l.err(
                        ins,
                        format!("{} requires at least one key=value pair", kw.to_uppercase()),
                    ));
                }
                // Every pair sees the values from before the instruction, as in BuildKit
                // (`ENV a=new b=$a` gives b the old a).
                let mut pairs = Vec::new();
                for triple in ins.args.chunks(3) {
                    let k = l.expand(ins, &env, &triple[0], escape)?;
                    let v = l.expand(ins, &env, &triple[1], escape)?;
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
                created_by = format!("{} {}", kw.to_uppercase(), pairs.join(" "));
            }
            "arg" => {
                let mut shown = Vec::new();
                for a in &ins.args {
                    // Unlike ENV, each ARG's default sees the ones declared before it.
                    let env = scope(&state);
                    let (k, default) = declare_arg(l, ins, a, &env, escape)?;
                    let v = l
                        .opts
                        .build_args
                        .get(&k)
                        .cloned()
                        .or(default)
                        .or_else(|| {
                            if l.valueless_global_args.contains(&k) {
                                return None;
                            }
                            l.global_args
                                .iter()
                                .rev()
                                .find(|(g, _)| *g == k)
                                .map(|(_, v)| v.clone())
                        })
                        .or_else(|| {
                            auto_args
                                .iter()
                                .find(|(g, _)| *g == k)
                                .map(|(_, v)| v.clone())
                        });
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
                created_by = format!("ARG {}", shown.join(" "));
            }
            "cmd" | "entrypoint" => {
                parse_flags(ins, &[]).map_err(|e| l.err(ins, e))?;
                let args = command_args(&state, ins);
                created_by = format!("{} {}", kw.to_uppercase(), history::go_quoted_list(&args));
                // An empty list is left out of the image, like Go's omitempty in BuildKit.
                let args = (!args.is_empty()).then_some(args);
                if kw == "cmd" {
                    cmd_set_in_stage = true;
                    state.config.config.cmd = args;
                    // BuildKit marks every CMD as escaped (a Docker image spec compatibility flag).
                    state.config.config.args_escaped = true;
                } else {
                    state.config.config.entrypoint = args;
                    // An ENTRYPOINT resets a CMD inherited from the base image.
                    if !cmd_set_in_stage {
                        state.config.config.cmd = None;
                    }
                }
            }
            "user" => {
                let u = ins
                    .args
                    .first()
                    .ok_or_else(|| l.err(ins, "USER requires exactly one argument"))?;
                let u = l.expand(ins, &env, u, escape)?;
                created_by = format!("USER {u}");
                // An empty user is left out of the image, like Go's omitempty in BuildKit.
                state.config.config.user = (!u.is_empty()).then_some(u);
            }
            "expose" => {
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
                created_by = format!("EXPOSE {}", history::go_port_map(&ports));
            }
            "volume" => {
                if ins.args.is_empty() {
                    return Err(l.err(ins, "VOLUME requires at least one argument"));
                }
                let mut volumes = Vec::new();
                for v in &ins.args {
                    // BuildKit trims each path before expanding it (`VOLUME [" /data "]`).
                    let v = l.expand(ins, &env, v.trim(), escape)?;
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
                created_by = format!("VOLUME {}", history::go_list(&volumes));
            }
            "stopsignal" => {
                let s = ins
                    .args
                    .first()
                    .ok_or_else(|| l.err(ins, "STOPSIGNAL requires exactly one argument"))?;
                let s = l.expand(ins, &env, s, escape)?;
                if !signal::is_valid_signal(&s) {
                    return Err(l.err(ins, format!("Invalid signal: {s}")));
                }
                created_by = format!("STOPSIGNAL {s}");
                state.config.config.stop_signal = Some(s);
            }
            "shell" => {
                if !ins.json {
                    return Err(l.err(ins, "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]"));
                }
                state.shell = ins.args.clone();
                state.config.config.shell = ins.args.clone();
                created_by = format!("SHELL {}", history::go_list(&ins.args));
            }
            "maintainer" => {
                state.config.author = ins.args.first().cloned();
                created_by = format!("MAINTAINER {}", ins.args.join(" "));
            }
            "onbuild" => {
                let inner = onbuild::trigger_text(l, ins)?;
                state.config.config.on_build.push(inner);
                created_by = String::new();
                record_history = false;
            }
            "healthcheck" => {
                let flags = parse_flags(
                    ins,
                    &[
                        "interval",
                        "timeout",
                        "start-period",
                        "start-interval",
                        "retries",
                    ],
                )
                .map_err(|e| l.err(ins, e))?;
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
                for (name, slot) in [
                    ("interval", &mut hc.interval),
                    ("timeout", &mut hc.timeout),
                    ("start-period", &mut hc.start_period),
                    ("start-interval", &mut hc.start_interval),
                ] {
                    // BuildKit ignores the flags of HEALTHCHECK NONE.
                    if let Some(v) = flags.get(name).filter(|_| kind == "CMD") {
                        let ns = parse_duration_ns(v).ok_or_else(|| l.err(ins, format!("invalid --{name}={v}: expected a duration such as 30s or 1m30s")))?;
                        if ns != 0 && ns < 1_000_000 {
                            return Err(
                                l.err(ins, format!("Interval \"{name}\" cannot be less than 1ms"))
                            );
                        }
                        *slot = ns;
                    }
                }
                if let Some(r) = flags.get("retries").filter(|_| kind == "CMD") {
                    hc.retries = r
                        .parse::<i32>()
                        .map_err(|_| l.err(ins, format!("invalid --retries={r}")))?
                        .into();
                    if hc.retries < 0 {
                        return Err(l.err(ins, format!("--retries cannot be negative ({r})")));
                    }
                }
                created_by = history::healthcheck_text(&hc);
                state.config.config.healthcheck = Some(hc);
            }
            "from" => unreachable!("stages are split at FROM"),
            _ => return Err(unknown_instruction(l, ins)),
        }
        if record_history {
            let suffix = if buildkit_suffix { " # buildkit" } else { "" };
            state.config.history.push(History {
                created_by: Some(format!("{created_by}{suffix}")),
                comment: Some("buildkit.dockerfile.v0".into()),
                empty_layer,
                ..Default::default()
            });
        }
    }
    l.in_trigger = None;
    Ok(state)
}

/// The stage's declared ARGs with their current values (ENV wins; unset ones are empty),
/// each once, in order of first declaration: the `|N K=V` prefix of RUN history entries.
fn run_history_args(state: &StageState) -> Vec<(String, String)> {
    let env = scope(state);
    let mut out: Vec<(String, String)> = Vec::new();
    for key in &state.declared_args {
        if out.iter().any(|(k, _)| k == key) {
            continue;
        }
        let value = env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        out.push((key.clone(), value));
    }
    out
}

/// Arguments of RUN/CMD/ENTRYPOINT: JSON form as is, shell form through the stage's shell.
fn command_args(state: &StageState, ins: &Instruction) -> Vec<String> {
    if ins.json {
        return ins.args.clone();
    }
    let mut args = if state.shell.is_empty() {
        vec!["/bin/sh".to_string(), "-c".to_string()]
    } else {
        state.shell.clone()
    };
    args.push(ins.args.join(" "));
    args
}

fn display_cmd(ins: &Instruction) -> String {
    if ins.json {
        format!(
            "[{}]",
            ins.args
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    } else {
        ins.args.join(" ")
    }
}

fn parse_chown(s: &str) -> Chown {
    match s.split_once(':') {
        Some((u, g)) => Chown {
            user: u.into(),
            group: Some(g.into()),
        },
        None => Chown {
            user: s.into(),
            group: None,
        },
    }
}

/// Joins a possibly relative path onto a directory, cleaning it.
fn join_path(base: &str, p: &str, keep_trailing_slash: bool) -> String {
    let full = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{base}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in full.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if keep_trailing_slash && (p.ends_with('/') || p == "." || p.ends_with("/.")) && out != "/" {
        out.push('/');
    }
    out
}

/// Parses Go-style durations (`30s`, `1m30s`, `500ms`) into nanoseconds.
fn parse_duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    // Go's time.ParseDuration: an optional sign, and a bare "0" needs no unit.
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some((sign * total) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_like_buildkit() {
        assert_eq!(join_path("/app", "bin/", true), "/app/bin/");
        assert_eq!(join_path("/app", ".", true), "/app/");
        assert_eq!(join_path("/app", "../x", false), "/x");
        assert_eq!(join_path("/", "/abs", false), "/abs");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration_ns("10x"), None);
        assert_eq!(parse_duration_ns("0"), Some(0));
        assert_eq!(parse_duration_ns("5"), None);
        assert_eq!(parse_duration_ns("-1s"), Some(-1_000_000_000));
        assert_eq!(parse_duration_ns("1.5h"), Some(5_400_000_000_000));
    }

    /// Every image is an arm64/v8 image, as its config spells it.
    struct Arm64V8;

    impl ImageResolver for Arm64V8 {
        fn resolve(&self, reference: &str, _: &str) -> anyhow::Result<(String, ImageConfig)> {
            let config = ImageConfig {
                os: "linux".into(),
                architecture: "aarch64".into(),
                variant: Some("v8".into()),
                ..Default::default()
            };
            Ok((format!("{reference}@sha256:{}", "a".repeat(64)), config))
        }
    }

    #[test]
    fn the_image_platform_is_normalised_like_buildkits() {
        let src = b"FROM base\nENV A=1\n";
        let ast = crate::parse(src).unwrap();
        let opts = BuildOptions {
            dockerfile_name: "Dockerfile".into(),
            platform: "linux/arm64".into(),
            build_platform: "linux/amd64".into(),
            ..Default::default()
        };
        let image = lower(&ast, src, &opts, &Arm64V8).unwrap().image;
        assert_eq!(
            (image.architecture.as_str(), image.variant),
            ("arm64", None)
        );
    }

    #[test]
    fn a_declared_arg_without_a_value_is_not_an_undefined_variable() {
        let src = b"FROM busybox\nARG EMPTY\nARG A B=${A}x\nENV X=$EMPTY Y=$B Z=$NOPE\n";
        let ast = crate::parse(src).unwrap();
        let opts = BuildOptions {
            dockerfile_name: "Dockerfile".into(),
            platform: "linux/amd64".into(),
            build_platform: "linux/amd64".into(),
            ..Default::default()
        };
        let warnings = lower(&ast, src, &opts, &Arm64V8).unwrap().warnings;
        let rules: Vec<(&str, usize)> = warnings.iter().map(|w| (w.rule, w.line)).collect();
        assert_eq!(rules, [("UndefinedVar", 4)], "{warnings:?}");
        assert!(warnings[0].message.contains("$NOPE"), "{warnings:?}");
    }

    #[test]
    fn automatic_args_include_the_target_stage_and_yield_to_build_args() {
        let src = b"FROM busybox AS Build\nARG TARGETSTAGE TARGETOSVERSION TARGETARCH\nRUN true\n";
        let ast = crate::parse(src).unwrap();
        let mut opts = BuildOptions {
            dockerfile_name: "Dockerfile".into(),
            platform: "linux/amd64".into(),
            build_platform: "linux/amd64".into(),
            ..Default::default()
        };
        opts.build_args.insert("TARGETARCH".into(), "custom".into());
        let history = lower(&ast, src, &opts, &Arm64V8).unwrap().image.history;
        let texts: Vec<&str> = history
            .iter()
            .filter_map(|h| h.created_by.as_deref())
            .collect();
        assert_eq!(
            texts,
            [
                "ARG TARGETSTAGE=build TARGETOSVERSION= TARGETARCH=custom",
                "RUN |3 TARGETSTAGE=build TARGETOSVERSION= TARGETARCH=custom /bin/sh -c true # buildkit"
            ]
        );
    }

    #[test]
    fn suggestions_find_near_words() {
        assert_eq!(suggest("rnu", INSTRUCTIONS.iter().copied()), Some("run"));
        assert_eq!(suggest("bulder", ["builder", "final"]), Some("builder"));
        assert_eq!(suggest("zzzzzzzz", ["builder"]), None);
    }
}
