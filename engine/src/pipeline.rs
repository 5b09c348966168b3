//! The build pipeline, phase by phase: each request is checked and its Dockerfile parsed
//! ([`Job::prepare`]); one solver is opened for all requests ([`Session`]); each is lowered
//! once per platform into a [`Plan`]; the plans are merged and solved in one walk
//! ([`solve_all`]); then each request is exported, its caches exported and its metadata
//! gathered ([`Job::finish`]).

use crate::excerpt::dockerfile_error;
use crate::platforms::Plan;
use crate::request::{
    BuildError, BuildRequest, BuildResult, CheckReport, Dockerfile, Outcome, PlatformImage,
};
use crate::settings::Call;
use crate::{Event, EventSink};
use anyhow::{anyhow, Result};
use executor::CancelToken;
use exporter::image::{ImageConfig, Platform};
use frontend::checks::CheckWarning;
use frontend::lower::{BuildOptions, DockerfileError, ImageResolver, Lowered, CONTEXT_NAME};
use solver::context::LocalSource;
use solver::{Definition, Op, Ref, Solver, SolverConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Runs one build. Events go to `events` until this returns; `cancel` stops the solve.
pub async fn build(
    root: &Path,
    request: BuildRequest,
    events: EventSink,
    cancel: &CancelToken,
) -> Result<Outcome, BuildError> {
    let mut outcomes = build_many(root, vec![request], events, cancel).await?;
    Ok(outcomes.remove(0))
}

/// Runs several builds as one solve, so the steps they share run once (`compose build`),
/// and answers each in order. Solver-wide settings are the union of the requests': any
/// `no_cache` or `pull` applies to all, every secret and SSH agent is available to all.
/// The first failure fails them all.
pub async fn build_many(
    root: &Path,
    requests: Vec<BuildRequest>,
    events: EventSink,
    cancel: &CancelToken,
) -> Result<Vec<Outcome>, BuildError> {
    let mut outcomes: Vec<Option<Outcome>> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    for (index, request) in requests.into_iter().enumerate() {
        outcomes.push(None);
        match Job::prepare(root, index, request, &jobs)? {
            Prepared::Answer(outcome) => outcomes[index] = Some(outcome),
            Prepared::Job(job) => jobs.push(*job),
        }
    }
    if !jobs.is_empty() {
        let session = Session::open(root, &jobs, &events)?;
        let done = run_jobs(&session, jobs, &events, cancel, &mut outcomes).await;
        session.close().await;
        done?;
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// Lowers, solves and finishes every job, filling in their outcomes.
async fn run_jobs(
    session: &Session,
    jobs: Vec<Job>,
    events: &EventSink,
    cancel: &CancelToken,
    outcomes: &mut [Option<Outcome>],
) -> Result<(), BuildError> {
    let solver = &session.solver;
    for job in &jobs {
        if !job.request.no_cache {
            crate::cache::import_caches(solver, &job.request.cache_from, events).await;
        }
    }
    let mut planned = Vec::new();
    for job in jobs {
        match job.lower(solver, events).await? {
            Lowering::Done(outcome) => outcomes[job.index] = Some(outcome),
            Lowering::Plan(plan) => planned.push((job, plan)),
        }
    }
    if planned.is_empty() {
        return Ok(());
    }
    let solved = solve_all(solver, &planned, cancel).await?;
    for ((job, plan), part) in planned.iter().zip(solved.parts) {
        let result = job
            .finish(session, plan, part, (solved.executed, solved.cached))
            .await?;
        outcomes[job.index] = Some(Outcome::Built(Box::new(result)));
    }
    Ok(())
}

/// The solver shared by every request of a build, and the task forwarding its events.
struct Session {
    root: std::path::PathBuf,
    solver: Arc<Solver>,
    forward: tokio::task::JoinHandle<()>,
}

/// Whether any request exports an image (whose layers are worth compressing during the build).
fn wants_images(jobs: &[Job]) -> bool {
    jobs.iter().any(|job| {
        job.request
            .outputs
            .iter()
            .any(|o| matches!(o.image_format(job.source_date_epoch), Ok(Some(_))))
    })
}

impl Session {
    fn open(root: &Path, jobs: &[Job], events: &EventSink) -> Result<Session> {
        let mut locals: HashMap<String, Arc<dyn LocalSource>> = HashMap::new();
        for job in jobs {
            locals.extend(job.locals.iter().cloned());
        }
        let requests: Vec<&BuildRequest> = jobs.iter().map(|j| &j.request).collect();
        let exec = crate::secrets::exec_config(
            &requests
                .iter()
                .map(|r| r.secrets.clone())
                .collect::<Vec<_>>(),
            &requests.iter().map(|r| r.ssh.clone()).collect::<Vec<_>>(),
            requests.iter().any(|r| r.on_error_shell),
        );
        let first = &jobs[0];
        let layer_export =
            crate::output::built_layer_options(&first.request.outputs, first.source_date_epoch)?;
        let (progress, forward) = events.solver_progress();
        let solver = Solver::new(SolverConfig {
            root: root.to_path_buf(),
            executor: executor::Executor::current_exe()?,
            locals,
            no_cache: requests.iter().any(|r| r.no_cache),
            progress,
            exec,
            layer_export,
        })?
        .with_pull_always(requests.iter().any(|r| r.pull))
        .with_background_layers(wants_images(jobs));
        Ok(Session {
            root: root.to_path_buf(),
            solver: Arc::new(solver),
            forward,
        })
    }

    /// Drops the solver and waits until its last event has been delivered.
    async fn close(self) {
        drop(self.solver);
        let _ = self.forward.await;
    }
}

enum Prepared {
    /// Answered without building (`--call=outline|targets`).
    Answer(Outcome),
    Job(Box<Job>),
}

enum Lowering {
    /// Answered after lowering (`--call=check`, `print_graph`).
    Done(Outcome),
    Plan(Plan),
}

/// One request on its way through the pipeline.
struct Job {
    index: usize,
    request: BuildRequest,
    ast: Arc<frontend::Ast>,
    source: Arc<Vec<u8>>,
    /// The Dockerfile's name in messages.
    file: String,
    platforms: Vec<Platform>,
    opts: BuildOptions,
    /// The name the main context is served under (`context`, or `context@N` when another
    /// request of the build has another main context).
    main_local: String,
    locals: Vec<(String, Arc<dyn LocalSource>)>,
    started: String,
    source_date_epoch: Option<u64>,
}

impl Job {
    /// Checks the request and parses its Dockerfile; answers `--call=outline|targets`.
    fn prepare(
        root: &Path,
        index: usize,
        request: BuildRequest,
        earlier: &[Job],
    ) -> Result<Prepared, BuildError> {
        let started = exporter::now_rfc3339();
        let platforms = match request.platforms.is_empty() {
            true => vec![Platform::host()],
            false => request.platforms.clone(),
        };
        let source_date_epoch = crate::output::source_date_epoch(&request.build_args)?;
        crate::output::check_outputs(&request.outputs, source_date_epoch, platforms.len())?;
        let (ast, source, file) = read_dockerfile(&request.dockerfile)?;
        let answer = crate::settings::answer_call(
            request.call,
            &ast,
            &source,
            request.target.as_deref(),
            &request.build_args,
        )?;
        if let Some(text) = answer {
            return Ok(Prepared::Answer(Outcome::Answer(text)));
        }
        let main_local = main_local_name(index, &request.context, earlier);
        let suffix = if index == 0 {
            String::new()
        } else {
            format!("@{index}")
        };
        let (named_contexts, mut locals) = crate::context::lowering_contexts(
            root,
            &request.named_contexts,
            &format!("{CONTEXT_NAME}{suffix}"),
        )?;
        locals.push((main_local.clone(), request.context.clone()));
        let opts = lowering_options(&request, &file, &platforms[0], named_contexts);
        Ok(Prepared::Job(Box::new(Job {
            index,
            request,
            ast: Arc::new(ast),
            source: Arc::new(source),
            file,
            platforms,
            opts,
            main_local,
            locals,
            started,
            source_date_epoch,
        })))
    }

    /// Lowers the Dockerfile for every platform into one plan; reports the checks.
    async fn lower(
        &self,
        solver: &Arc<Solver>,
        events: &EventSink,
    ) -> Result<Lowering, BuildError> {
        let lowerings =
            lower_for_platforms(solver, &self.ast, &self.source, &self.opts, &self.platforms);
        let mut lowered_all = Vec::new();
        for (platform, lowering) in self.platforms.iter().zip(lowerings) {
            match lowering.await.map_err(|e| anyhow!(e))? {
                Ok(lowered) => lowered_all.push(self.rename_main_context(lowered)),
                Err(e) => return Err(self.lowering_error(&e, platform)),
            }
        }
        // Checks look at the Dockerfile, not at a platform: report them once.
        let first = &lowered_all[0];
        if self.request.call == Call::Check {
            return Ok(Lowering::Done(Outcome::Checked(
                self.report(first.warnings.clone()),
            )));
        }
        for warning in &first.warnings {
            events.send(Event::CheckWarning {
                file: self.file.clone(),
                warning: warning.clone(),
            });
        }
        if first.check_config.error && !first.warnings.is_empty() {
            return Err(BuildError::Lint(lint_error_message(&first.warnings)));
        }
        let plan = Plan::new(&self.platforms, lowered_all);
        if self.request.print_graph {
            return Ok(Lowering::Done(Outcome::Graph(plan.render_graph())));
        }
        Ok(Lowering::Plan(plan))
    }

    fn report(&self, warnings: Vec<CheckWarning>) -> CheckReport {
        CheckReport {
            warnings,
            file: self.file.clone(),
            source: self.source.to_vec(),
        }
    }

    /// A Dockerfile error found while lowering for `platform` (named for several).
    fn lowering_error(&self, e: &DockerfileError, platform: &Platform) -> BuildError {
        let on = match self.platforms.len() > 1 {
            true => format!(" (platform {platform})"),
            false => String::new(),
        };
        BuildError::Dockerfile {
            message: format!("{}{on}", dockerfile_error(e, &self.source)),
            check: (self.request.call == Call::Check)
                .then(|| self.report(ast_warnings(&self.source))),
        }
    }

    /// Serves the main context under this job's own name when it is not `context`.
    fn rename_main_context(&self, mut lowered: Lowered) -> Lowered {
        if self.main_local != CONTEXT_NAME {
            for vertex in &mut lowered.definition.vertices {
                if let Op::Local { name } = &mut vertex.op {
                    if name == CONTEXT_NAME {
                        name.clone_from(&self.main_local);
                    }
                }
            }
        }
        lowered
    }
}

/// What lowering needs from a request (for its first platform).
fn lowering_options(
    request: &BuildRequest,
    file: &str,
    platform: &Platform,
    named_contexts: std::collections::BTreeMap<String, frontend::lower::NamedContext>,
) -> BuildOptions {
    let host = Platform::host();
    BuildOptions {
        dockerfile_name: file.to_string(),
        build_args: request.build_args.clone(),
        target: request.target.clone(),
        platform: platform.to_string(),
        platform_requested: !request.platforms.is_empty(),
        labels: request.labels.clone(),
        build_platform: format!("{}/{}", host.os, host.architecture),
        no_cache_stages: request.no_cache_stages.clone(),
        named_contexts,
        lint_all_stages: request.call == Call::Check && request.target.is_none(),
        run: request.run.clone(),
    }
}

/// The local name for a request's main context: shared with an earlier request that has
/// the same context (same `Arc`), so their steps on it are the same vertices.
fn main_local_name(index: usize, context: &Arc<dyn LocalSource>, earlier: &[Job]) -> String {
    if let Some(job) = earlier
        .iter()
        .find(|j| Arc::ptr_eq(&j.request.context, context))
    {
        return job.main_local.clone();
    }
    match earlier.iter().any(|j| j.main_local == CONTEXT_NAME) {
        false => CONTEXT_NAME.to_string(),
        true => format!("{CONTEXT_NAME}@{index}"),
    }
}

/// The syntax-only warnings, for `--call=check` when lowering itself failed.
fn ast_warnings(source: &[u8]) -> Vec<CheckWarning> {
    use frontend::checks::{check_ast, filter, CheckConfig};
    match frontend::parse(source) {
        Ok(ast) => {
            let cfg = CheckConfig::parse(ast.directives.check.as_deref());
            filter(check_ast(&ast), &cfg)
        }
        Err(_) => Vec::new(),
    }
}

/// The message for a build stopped by `# check=error=true`.
fn lint_error_message(warnings: &[CheckWarning]) -> String {
    let mut rules: Vec<&str> = warnings.iter().map(|w| w.rule).collect();
    rules.dedup();
    format!(
        "lint violation found for rules: {} (the Dockerfile sets check=error=true)",
        rules.join(", ")
    )
}

/// Reads and parses the Dockerfile: its AST, bytes and name.
fn read_dockerfile(
    dockerfile: &Dockerfile,
) -> Result<(frontend::Ast, Vec<u8>, String), BuildError> {
    let (source, name) = match dockerfile {
        Dockerfile::Bytes { name, source } => (source.clone(), name.clone()),
        Dockerfile::Path(path) => {
            let source = std::fs::read(path).map_err(|e| {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
                    _ => e.to_string(),
                };
                anyhow!("failed to read dockerfile: open {}: {why}", path.display())
            })?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "Dockerfile".into());
            (source, name)
        }
    };
    if source.is_empty() {
        return Err(anyhow!("the Dockerfile cannot be empty").into());
    }
    match frontend::parse(&source) {
        Ok(ast) => Ok((ast, source, name)),
        Err(e) => {
            let error = DockerfileError {
                source_line: String::from_utf8_lossy(&source)
                    .lines()
                    .nth(e.line.saturating_sub(1))
                    .map(str::to_string),
                file: name,
                line: e.line,
                column: e.column,
                message: e.message.clone(),
            };
            Err(BuildError::Dockerfile {
                message: dockerfile_error(&error, &source),
                check: None,
            })
        }
    }
}

/// Resolves base images through the solver (local store first, then registries).
struct SolverResolver {
    solver: Arc<Solver>,
    runtime: tokio::runtime::Handle,
}

impl ImageResolver for SolverResolver {
    fn resolve(&self, reference: &str, platform: &str) -> Result<(String, ImageConfig)> {
        self.runtime
            .block_on(self.solver.resolve_image(reference, platform))
    }
}

/// Lowers the Dockerfile once per target platform, concurrently: each lowering may pull
/// its own base images.
fn lower_for_platforms(
    solver: &Arc<Solver>,
    ast: &Arc<frontend::Ast>,
    source: &Arc<Vec<u8>>,
    opts: &BuildOptions,
    platforms: &[Platform],
) -> Vec<tokio::task::JoinHandle<Result<Lowered, DockerfileError>>> {
    platforms
        .iter()
        .map(|platform| {
            let mut opts = opts.clone();
            opts.platform = platform.to_string();
            let resolver = SolverResolver {
                solver: solver.clone(),
                runtime: tokio::runtime::Handle::current(),
            };
            let (ast, source) = (ast.clone(), source.clone());
            tokio::task::spawn_blocking(move || {
                frontend::lower::lower(&ast, &source, &opts, &resolver)
            })
        })
        .collect()
}

/// The build graph of every request merged into one, so steps they share run once.
struct Merged {
    graph: Definition,
    /// Every request's output vertices, request after request.
    outputs: Vec<usize>,
    /// Per request: where each vertex of its plan landed in `graph`.
    placed: Vec<Vec<usize>>,
}

impl Merged {
    fn new(plans: &[&Plan]) -> Merged {
        if let [plan] = plans {
            return Merged {
                graph: plan.graph.clone(),
                outputs: plan.outputs.clone(),
                placed: vec![(0..plan.graph.vertices.len()).collect()],
            };
        }
        let mut merged = Merged {
            graph: Definition::default(),
            outputs: Vec::new(),
            placed: Vec::new(),
        };
        for plan in plans {
            let placed = solver::multi::merge_into(&mut merged.graph, &plan.graph, |_, name| {
                name.to_string()
            });
            merged
                .outputs
                .extend(plan.outputs.iter().map(|&o| placed[o]));
            merged.placed.push(placed);
        }
        merged.graph.output = merged.outputs.first().copied();
        merged
    }
}

/// One request's share of the common solve.
struct SolvedPart {
    /// One result per platform.
    outputs: Vec<Ref>,
    /// Each vertex of the request's plan: its result and cache key.
    results: Vec<Option<(Ref, String)>>,
}

struct Solved {
    parts: Vec<SolvedPart>,
    executed: usize,
    cached: usize,
}

/// Solves every request's plan in one walk of the merged graph.
async fn solve_all(
    solver: &Arc<Solver>,
    planned: &[(Job, Plan)],
    cancel: &CancelToken,
) -> Result<Solved, BuildError> {
    let plans: Vec<&Plan> = planned.iter().map(|(_, plan)| plan).collect();
    let merged = Merged::new(&plans);
    let solved = solver
        .solve_outputs(&merged.graph, &merged.outputs, cancel)
        .await
        .map_err(|e| solve_error(planned, &merged, &e, cancel))?;
    let mut outputs = solved.outputs.into_iter();
    let parts = plans
        .iter()
        .zip(&merged.placed)
        .map(|(plan, placed)| SolvedPart {
            outputs: outputs.by_ref().take(plan.outputs.len()).collect(),
            results: placed.iter().map(|&g| solved.results[g].clone()).collect(),
        })
        .collect();
    Ok(Solved {
        parts,
        executed: solved.executed,
        cached: solved.cached,
    })
}

/// A failed step, with its Dockerfile line (and platforms, for several).
fn solve_error(
    planned: &[(Job, Plan)],
    merged: &Merged,
    e: &solver::SolveError,
    cancel: &CancelToken,
) -> BuildError {
    if cancel.is_cancelled() && e.vertex.is_none() {
        return BuildError::Cancelled;
    }
    let owner = e.vertex.and_then(|v| {
        planned
            .iter()
            .zip(&merged.placed)
            .find_map(|((job, plan), placed)| {
                Some((job, plan, placed.iter().position(|&g| g == v)?))
            })
    });
    let (job, plan, vertex) = match owner {
        Some((job, plan, local)) => (job, plan, Some(local)),
        None => (&planned[0].0, &planned[0].1, None),
    };
    let (location, failed_for) = plan.locate(vertex);
    let on = match job.platforms.len() > 1 {
        true => format!("[{failed_for}] "),
        false => String::new(),
    };
    BuildError::Solve(match location {
        Some(loc) => format!(
            "{on}{}:{}: {}\n{}\nfailed to solve: {e}",
            job.file,
            loc.line,
            loc.text,
            crate::excerpt::excerpt(&job.source, loc.line, loc.line)
        ),
        None => format!("{on}failed to solve: {e}"),
    })
}

impl Job {
    /// Exports the request's images and outputs, then its caches; gathers the metadata.
    async fn finish(
        &self,
        session: &Session,
        plan: &Plan,
        part: SolvedPart,
        (executed, cached): (usize, usize),
    ) -> Result<BuildResult, BuildError> {
        let (request, solver) = (&self.request, &session.solver);
        let inline_cache = request
            .cache_to
            .contains(&solver::cache::CacheTo::Inline)
            .then(|| (plan.graph.clone(), part.results.clone()));
        let multi = self.platforms.len() > 1;
        let targets = plan
            .targets
            .iter()
            .zip(&part.outputs)
            .map(|(t, result)| crate::output::ExportTarget {
                platform: multi.then(|| t.platform.clone()),
                result: result.clone(),
                image: t.lowered.image.clone(),
            })
            .collect();
        let attestations =
            crate::attest::request(&request.attestations, &self.facts(plan), &request.tags)?;
        let done = crate::output::export(crate::output::ExportRequest {
            context: crate::output::ExportContext {
                root: session.root.clone(),
                solver: solver.clone(),
                targets: Arc::new(targets),
                tags: request.tags.clone(),
            },
            outputs: request.outputs.clone(),
            source_date_epoch: self.source_date_epoch,
            inline_cache,
            annotations: request.annotations.clone(),
            attestations,
        })
        .await?;
        let cache_exports = self.export_caches(solver, plan, &part).await?;
        let metadata = crate::cache::metadata(
            solver,
            &crate::cache::Metadata {
                manifest: &done.main,
                tags: &request.tags,
                cache_exports: &cache_exports,
            },
        )?;
        Ok(BuildResult {
            image_id: crate::settings::image_id(&solver.content, &done.main),
            platforms: platform_images(&solver.content, &done.main, &self.platforms),
            image: done.main,
            multi_platform: multi,
            metadata,
            cache_exports,
            executed,
            cached,
            notes: done.notes,
        })
    }

    /// Performs each `--cache-to`.
    async fn export_caches(
        &self,
        solver: &Arc<Solver>,
        plan: &Plan,
        part: &SolvedPart,
    ) -> Result<Vec<solver::cache::CacheExport>> {
        let mut done = Vec::new();
        for to in &self.request.cache_to {
            let exported =
                solver::cache::export_cache(solver, &plan.graph, &plan.outputs, &part.results, to);
            done.extend(exported.await?);
        }
        Ok(done)
    }

    /// What the provenance records about this build.
    fn facts<'a>(&'a self, plan: &'a Plan) -> crate::attest::BuildFacts<'a> {
        let started = self
            .source_date_epoch
            .map(|e| exporter::format_rfc3339(e as i64))
            .unwrap_or_else(|| self.started.clone());
        crate::attest::BuildFacts {
            graph: &plan.graph,
            build_args: &self.opts.build_args,
            labels: &self.opts.labels,
            target: self.request.target.as_deref(),
            dockerfile_name: &self.file,
            dockerfile: &self.source,
            context: self.request.context.root(),
            secret_ids: self.request.secrets.ids(),
            ssh_ids: self.request.ssh.ids(),
            started,
            source_date_epoch: self.source_date_epoch,
        }
    }
}

/// Each platform's manifest: the image itself, or the index's entry for the platform.
fn platform_images(
    content: &exporter::ContentStore,
    image: &exporter::image::Descriptor,
    platforms: &[Platform],
) -> Vec<PlatformImage> {
    let index = content
        .read_blob(&image.digest)
        .ok()
        .filter(|_| exporter::image::is_index_media_type(&image.media_type))
        .and_then(|bytes| serde_json::from_slice::<exporter::Index>(&bytes).ok());
    platforms
        .iter()
        .map(|platform| {
            let manifest = match &index {
                None => Some(image.clone()),
                Some(index) => index
                    .manifests
                    .iter()
                    .filter(|d| !exporter::attestation::is_attestation(d))
                    .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(platform)))
                    .cloned(),
            };
            let config_digest = manifest.as_ref().and_then(|m| {
                let bytes = content.read_blob(&m.digest).ok()?;
                let manifest: exporter::Manifest = serde_json::from_slice(&bytes).ok()?;
                Some(manifest.config.digest)
            });
            PlatformImage {
                platform: platform.clone(),
                manifest,
                config_digest,
            }
        })
        .collect()
}
