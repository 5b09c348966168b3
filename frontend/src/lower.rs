//! Lowers a parsed Dockerfile to the solver's build graph plus the final image config.

use crate::checks::{CheckConfig, CheckWarning};
use crate::command::{self, ArgDecl, Command, CommandError, CommandLine, INSTRUCTIONS};
use crate::parser::{Ast, Instruction};
use crate::shell::Expander;
use llb::graph::{Definition, ExecOp, FileAction, FileOp, NetworkMode, Op, Vertex};
use oci::image::{EmptyObject, History, ImageConfig};
use std::collections::{BTreeMap, BTreeSet};

mod contexts;
mod copy;
mod expose;
mod history;
mod onbuild;
mod signal;
mod sources;
mod stage;
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

impl<'a> Lowerer<'a> {
    fn new(opts: &'a BuildOptions, source: &[u8]) -> Self {
        Lowerer {
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
        }
    }

    /// The instruction parsed into its typed command.
    fn command(&self, ins: &Instruction) -> Result<Command, DockerfileError> {
        Command::parse(ins, &self.source).map_err(|e| self.command_error(e))
    }

    fn command_error(&self, e: CommandError) -> DockerfileError {
        self.err_at(e.span.line, e.span.column, e.message)
    }

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

/// Lowers a Dockerfile (already parsed) to a build graph, in phases: the instructions
/// checked, the global ARGs, the stages split, the target, the stages it needs in
/// dependency order lowered, the final image.
pub fn lower(
    ast: &Ast,
    source: &[u8],
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<Lowered, DockerfileError> {
    let mut l = Lowerer::new(opts, source);
    let escape = ast.directives.escape;
    let auto_args = automatic_args(ast, opts);
    let ins = &ast.instructions;
    check_instructions(&l, ins)?;
    let first_from = lower_global_args(&mut l, ins, &auto_args, escape)?;
    let stages = split_stages(&l, ins, first_from)?;
    l.stage_names = stages.iter().map(|s| s.name.clone()).collect();
    let target = target_stage(&l, &stages)?;
    let stage_index =
        |reference: &str, current: usize| stage_by_reference(&stages, reference, current);
    let graph = StageGraph {
        stages: &stages,
        stage_index: &stage_index,
        auto_args: &auto_args,
        escape,
    };
    let (needed, deps) = graph.needed_stages(&l, target)?;
    let order = crate::stage_order::dependency_order(&needed, &deps, |s| {
        stages[s].name.clone().unwrap_or_else(|| s.to_string())
    })
    .map_err(|(message, ins)| l.err(ins, message))?;
    let (states, built_names) = graph.lower_stages(&mut l, order, resolver)?;
    let final_state = states[target]
        .clone()
        .ok_or_else(|| l.err_at(1, 1, "internal error: target stage was not built"))?;
    Ok(finish(l, ast, final_state, &needed, built_names))
}

/// BuildKit parses every instruction before choosing stages: an unknown one fails the
/// build even in a stage the target does not need.
fn check_instructions(l: &Lowerer, ins: &[Instruction]) -> Result<(), DockerfileError> {
    match ins
        .iter()
        .find(|x| !INSTRUCTIONS.contains(&x.keyword.as_str()))
    {
        Some(x) => Err(l.command_error(command::unknown_instruction(x))),
        None => Ok(()),
    }
}

/// A stage by name or index. It may be defined later (BuildKit orders stages by their
/// dependencies); a stage never refers to itself.
fn stage_by_reference(stages: &[StageSource], reference: &str, current: usize) -> Option<usize> {
    let r = reference.to_lowercase();
    stages
        .iter()
        .position(|s| s.name.as_deref() == Some(&r))
        .or_else(|| r.parse::<usize>().ok().filter(|&n| n < stages.len()))
        .filter(|&d| d != current)
}

/// The graph's output, the final image, and the check warnings of the stages built.
fn finish(
    mut l: Lowerer,
    ast: &Ast,
    final_state: StageState,
    needed: &[bool],
    built_names: Vec<String>,
) -> Lowered {
    let output = l.or_scratch(final_state.vertex);
    l.def.output = Some(output);
    let image = final_image(l.opts, final_state.config);
    let check_config = CheckConfig::parse(ast.directives.check.as_deref());
    let mut warnings: Vec<CheckWarning> = crate::checks::check_ast_by_stage(ast)
        .into_iter()
        .filter(|(stage, _)| stage.is_none_or(|s| needed.get(s).copied().unwrap_or(false)))
        .map(|(_, w)| w)
        .collect();
    warnings.extend(l.warnings.take());
    Lowered {
        definition: l.def,
        image,
        locations: l.locations,
        stages: built_names,
        warnings: crate::checks::filter(warnings, &check_config),
        check_config,
    }
}

/// The automatic platform ARGs and TARGETSTAGE; as in BuildKit, a build arg of the same
/// name overrides an automatic value.
fn automatic_args(ast: &Ast, opts: &BuildOptions) -> Vec<(String, String)> {
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
    [
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
    .collect()
}

/// The ARGs before the first FROM; returns the index of that FROM.
fn lower_global_args(
    l: &mut Lowerer,
    ins: &[Instruction],
    auto_args: &[(String, String)],
    escape: char,
) -> Result<usize, DockerfileError> {
    let mut i = 0;
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
        let Command::Arg(arg) = l.command(x)? else {
            unreachable!("an ARG parses as one");
        };
        let mut env = auto_args.to_vec();
        env.extend(l.global_args.clone());
        for decl in &arg.args {
            let (k, v) = expand_arg(l, x, decl, &env, escape)?;
            // `ARG TARGETARCH` before FROM brings the automatic value into scope.
            let automatic = || {
                auto_args
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map(|(_, v)| v.clone())
            };
            let v = l.opts.build_args.get(&k).cloned().or(v).or_else(automatic);
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
    Ok(i)
}

/// Cuts the instructions from `first_from` on into stages, checking their names.
fn split_stages<'a>(
    l: &Lowerer,
    ins: &'a [Instruction],
    first_from: usize,
) -> Result<Vec<StageSource<'a>>, DockerfileError> {
    let mut stages: Vec<StageSource> = Vec::new();
    let mut i = first_from;
    while i < ins.len() {
        let from = &ins[i];
        let mut j = i + 1;
        while j < ins.len() && ins[j].keyword != "from" {
            j += 1;
        }
        let name = command::FromCommand::stage_name(from).map_err(|e| l.command_error(e))?;
        if let Some(n) = &name {
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
    Ok(stages)
}

/// The index of `--target`'s stage, else the last stage's.
fn target_stage(l: &Lowerer, stages: &[StageSource]) -> Result<usize, DockerfileError> {
    let Some(t) = &l.opts.target else {
        return Ok(stages.len() - 1);
    };
    let t = t.to_lowercase();
    stages
        .iter()
        .position(|s| s.name.as_deref() == Some(&t))
        .ok_or_else(|| {
            let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
            let hint = suggest(&t, names.iter().copied())
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_default();
            l.err_at(1, 1, format!("target stage {t:?} could not be found{hint}"))
        })
}

/// The stages of a Dockerfile and what resolving references between them needs.
struct StageGraph<'g> {
    stages: &'g [StageSource<'g>],
    stage_index: &'g dyn Fn(&str, usize) -> Option<usize>,
    auto_args: &'g [(String, String)],
    escape: char,
}

/// For each stage, the stages it depends on and the instruction that names them.
type StageDeps<'a> = Vec<Vec<(usize, &'a Instruction)>>;

impl<'g> StageGraph<'g> {
    /// Which stages the target needs (FROM <stage>, COPY --from and RUN --mount=from),
    /// and each stage's dependencies.
    fn needed_stages(
        &self,
        l: &Lowerer,
        target: usize,
    ) -> Result<(Vec<bool>, StageDeps<'g>), DockerfileError> {
        let opts = l.opts;
        let mut deps: StageDeps<'g> = vec![Vec::new(); self.stages.len()];
        let mut needed = vec![false; self.stages.len()];
        let mut stack = if opts.lint_all_stages {
            (0..self.stages.len()).collect()
        } else {
            vec![target]
        };
        let mut global_env = self.auto_args.to_vec();
        global_env.extend(l.global_args.clone());
        while let Some(s) = stack.pop() {
            if std::mem::replace(&mut needed[s], true) {
                continue;
            }
            let from = self.stages[s].from;
            let base = l.expand(from, &global_env, &from.args[0], self.escape)?;
            // A named context of the same name replaces the stage.
            if let Some(d) = (self.stage_index)(&base, s).filter(|_| !is_named_context(opts, &base))
            {
                stack.push(d);
                deps[s].push((d, from));
            }
            for (d, x) in self.body_dependencies(l, s, &global_env)? {
                stack.push(d);
                deps[s].push((d, x));
            }
        }
        Ok((needed, deps))
    }

    /// The stages stage `s`'s COPY --from and RUN --mount=from name.
    fn body_dependencies(
        &self,
        l: &Lowerer,
        s: usize,
        global_env: &[(String, String)],
    ) -> Result<Vec<(usize, &'g Instruction)>, DockerfileError> {
        let mut found = Vec::new();
        for x in self.stages[s].body {
            for v in command::stage_references(x) {
                if is_named_context(l.opts, v) {
                    continue;
                }
                // Only a first guess (stage ARGs are not known yet): no warnings here.
                let v = Expander::new(&global_env, self.escape)
                    .process_word(v)
                    .unwrap_or_else(|_| v.to_string());
                match (self.stage_index)(&v, s) {
                    Some(d) => found.push((d, x)),
                    None if self.stages[s].name.as_deref() == Some(v.to_lowercase().as_str()) => {
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
        Ok(found)
    }

    /// Lowers the stages in `order`; returns each stage's state and the built stages' names.
    fn lower_stages(
        &self,
        l: &mut Lowerer,
        order: Vec<usize>,
        resolver: &dyn ImageResolver,
    ) -> Result<(Vec<Option<StageState>>, Vec<String>), DockerfileError> {
        let opts = l.opts;
        let multi = self.stages.len() > 1;
        let mut states: Vec<Option<StageState>> = vec![None; self.stages.len()];
        let mut built_names = Vec::new();
        for s in order {
            let st = &self.stages[s];
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
            let input = stage::StageInputs {
                index: s,
                label: &label,
                states: &states,
                stage_index: self.stage_index,
                auto_args: self.auto_args,
                escape: self.escape,
                resolver,
                no_cache,
            };
            let state = stage::lower_stage(l, st, &input)?;
            states[s] = Some(state);
        }
        Ok((states, built_names))
    }
}

/// `--build-context` has a context of this name (as written or lowercased).
fn is_named_context(opts: &BuildOptions, name: &str) -> bool {
    opts.named_contexts.contains_key(name) || opts.named_contexts.contains_key(&name.to_lowercase())
}

/// The target stage's config made the image's: `--label`s, the platform asked for, and
/// no diff ids (the exporter fills them).
fn final_image(opts: &BuildOptions, mut image: ImageConfig) -> ImageConfig {
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
    image
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

/// One ARG declaration with its default expanded.
fn expand_arg(
    l: &Lowerer,
    ins: &Instruction,
    decl: &ArgDecl,
    env: &[(String, String)],
    escape: char,
) -> Result<(String, Option<String>), DockerfileError> {
    let default = match &decl.default {
        Some(v) => Some(l.expand(ins, env, v, escape)?),
        None => None,
    };
    Ok((decl.name.clone(), default))
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
fn command_args(state: &StageState, line: &CommandLine) -> Vec<String> {
    if line.json {
        return line.args.clone();
    }
    let mut args = if state.shell.is_empty() {
        vec!["/bin/sh".to_string(), "-c".to_string()]
    } else {
        state.shell.clone()
    };
    args.push(line.args.join(" "));
    args
}

fn display_cmd(line: &CommandLine) -> String {
    if line.json {
        format!(
            "[{}]",
            line.args
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    } else {
        line.args.join(" ")
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
