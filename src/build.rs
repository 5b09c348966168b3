//! `builder build`: parse, lower, solve, export.

use crate::progress::{render, ProgressMode};
use anyhow::{anyhow, bail, Context as _, Result};
use exporter::image::{ImageConfig, Platform};
use frontend::lower::{BuildOptions, ImageResolver};
use solver::{Solver, SolverConfig};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Name (and tag) for the image; may be repeated.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Path of the Dockerfile (default: PATH/Dockerfile); may be outside the context.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variable, KEY=VALUE (or KEY to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Label for the image, KEY=VALUE (KEY alone: an empty value); may be repeated.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Build only up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Output, buildx style: type=image|registry|oci|docker|local|tar[,dest=PATH][,compression=gzip|zstd|uncompressed]...; `-` = rootfs tar on stdout.
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Push the image (or multi-platform index) to the registry of each -t name
    /// (shorthand for --output type=registry).
    #[arg(long)]
    pub push: bool,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print something instead of building: `graph` prints the lowered build graph.
    #[arg(long)]
    pub print: Option<String>,
    /// Target platform(s), comma-separated for a multi-platform image index (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Write the image (config) digest to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Export the build cache: type=local,dest=DIR | type=registry,ref=REF | type=inline |
    /// type=gha[,scope=S][,url=U][,token=T][,timeout=10m] [,mode=min|max][,mounts=true]; may be repeated.
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Import a build cache: type=local,src=DIR | type=registry,ref=REF (or just REF) |
    /// type=gha[,scope=S]; may be repeated.
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Do not use the cache for these stages (comma-separated; may be repeated).
    #[arg(long = "no-cache-filter")]
    pub no_cache_filter: Vec<String>,
    /// Write build result metadata (image digest, descriptor, names, cache) as JSON here.
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,
    /// Secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR][,type=file|env].
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// SSH agent for RUN --mount=type=ssh: `default` ($SSH_AUTH_SOCK) or ID=SOCKET.
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,
    /// What to do when a RUN fails: `fail` (default) or `shell` (open /bin/sh in its container).
    #[arg(long = "on-error", value_name = "fail|shell")]
    pub on_error: Option<String>,
    /// Named context, name=DIR|docker-image://REF|oci-layout://PATH; may be repeated.
    #[arg(long = "build-context")]
    pub build_contexts: Vec<String>,
    /// Run the build checks only, without building; exits non-zero on any warning.
    #[arg(long)]
    pub check: bool,
    /// Print only the image id on stdout (no progress); errors still go to stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Network for RUN steps: default, none, or host (needs --allow network.host).
    #[arg(long, value_name = "default|none|host")]
    pub network: Option<String>,
    /// Grant an entitlement: network.host or security.insecure; may be repeated.
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// Add NAME:IP (or NAME=IP; IP may be host-gateway) to RUN's /etc/hosts; may be repeated.
    #[arg(long = "add-host")]
    pub add_hosts: Vec<String>,
    /// Resource limit for RUN, NAME=SOFT[:HARD] (e.g. nofile=1024:2048); may be repeated.
    #[arg(long = "ulimit")]
    pub ulimits: Vec<String>,
    /// Size of RUN's /dev/shm (e.g. 128m, 2g, bytes; default 64m).
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Annotation [TYPE[,TYPE][PLATFORM]:]KEY=VALUE, TYPE = manifest (default), index,
    /// manifest-descriptor or index-descriptor; may be repeated.
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// Load the image into the local Docker engine (DOCKER_HOST or /var/run/docker.sock).
    #[arg(long)]
    pub load: bool,
    /// Resolve base images against their registry even when the store has them.
    #[arg(long)]
    pub pull: bool,
    /// What to do: build (default), check, outline or targets [,format=json].
    #[arg(long = "call", value_name = "build|check|outline|targets")]
    pub call: Option<String>,
    /// SLSA provenance attestation: true|false|mode=min|max[,builder-id=URI]
    /// (default: mode=min when pushing).
    #[arg(long)]
    pub provenance: Option<String>,
    /// SBOM attestation (SPDX 2.3 JSON of the packages in the image): true|false.
    #[arg(long)]
    pub sbom: Option<String>,
    /// Attestation: type=provenance[,mode=min|max][,builder-id=URI] | type=sbom
    /// [,disabled=true]; may be repeated.
    #[arg(long = "attest")]
    pub attest: Vec<String>,
    /// Build on a remote builder: tcp://HOST:PORT[,tcp://HOST2:PORT2...], unix:///PATH, or the
    /// name of one made with `builder builder create`.
    #[arg(long, env = "BUILDER_HOST")]
    pub builder: Option<String>,
    /// The build context directory; `-` reads a tar context (or a lone Dockerfile) from stdin.
    pub context: PathBuf,
}

/// Resolves base images through the solver (local store first, then registries).
pub(crate) struct SolverResolver {
    pub(crate) solver: Arc<Solver>,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl ImageResolver for SolverResolver {
    fn resolve(&self, reference: &str, platform: &str) -> Result<(String, ImageConfig)> {
        self.runtime
            .block_on(self.solver.resolve_image(reference, platform))
    }
}

pub(crate) fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            Some(_) => bail!("--build-arg {a:?}: the name is empty"),
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// `--label` values as buildx reads them: `KEY=VALUE`, or `KEY` for an empty value.
fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for label in labels {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        if k.is_empty() {
            bail!("--label {label:?}: the name is empty");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub async fn build(root: &Path, mut args: BuildArgs) -> Result<i32> {
    crate::output::check_push(args.push, &args.tags)?;
    let started = exporter::now_rfc3339();
    // Normalised, so `linux/aarch64` gives TARGETARCH=arm64.
    let platforms = crate::platforms::requested(args.platform.as_deref())?
        .unwrap_or_else(|| vec![Platform::host()]);
    let multi = platforms.len() > 1;
    let flags = crate::build_flags::prepare(&mut args, platforms.len())?;
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| crate::output::parse_output(o))
        .collect::<Result<Vec<_>>>()?;
    if args.push {
        outputs.push(crate::output::parse_output("type=registry")?);
    }
    let build_args = parse_build_args(&args.build_args)?;
    let attest_flags = crate::attest::parse(
        args.provenance.as_deref(),
        args.sbom.as_deref(),
        &args.attest,
        crate::output::pushes(&outputs),
    )?;
    let cache_to = args
        .cache_to
        .iter()
        .map(|s| crate::cache_flags::parse_cache_to(s, &args.tags))
        .collect::<Result<Vec<_>>>()?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|s| crate::cache_flags::parse_cache_from(s, &args.tags))
        .collect::<Result<Vec<_>>>()?;
    let no_cache_stages = crate::cache_flags::parse_no_cache_filter(&args.no_cache_filter)?;
    let exec_config =
        crate::secrets::exec_config(&args.secrets, &args.ssh, args.on_error.as_deref())?;
    let source_date_epoch = crate::output::source_date_epoch(&build_args)?;
    crate::output::check_outputs(&outputs, source_date_epoch, platforms.len())?;
    let inputs = crate::stdin_input::resolve(&args.context, args.file.as_deref())?;
    let dockerfile_path = inputs.file.clone();
    let context = inputs.context.canonicalize().map_err(|_| {
        anyhow!(
            "unable to prepare context: path {:?} not found",
            inputs.context.display().to_string()
        )
    })?;
    if !context.is_dir() {
        bail!(
            "unable to prepare context: path {:?} is not a directory",
            context.display().to_string()
        );
    }
    let (ast, source, display_name) = match read_dockerfile(&context, dockerfile_path.as_deref())? {
        Ok(parsed) => parsed,
        Err((err, source)) => {
            eprintln!(
                "error: {}",
                crate::source_excerpt::dockerfile_error(&err, &source)
            );
            return Ok(1);
        }
    };

    if crate::build_flags::print_call(flags.call, &ast, &source, &args.target, &build_args)? {
        return Ok(0);
    }
    let host = Platform::host();
    let mut opts = BuildOptions {
        dockerfile_name: display_name.clone(),
        build_args,
        target: args.target.clone(),
        platform: platforms[0].to_string(),
        platform_requested: args.platform.is_some(),
        labels: parse_labels(&args.labels)?,
        build_platform: format!("{}/{}", host.os, host.architecture),
        no_cache_stages,
        named_contexts: Default::default(),
        lint_all_stages: args.check && args.target.is_none(),
        run: flags.run,
    };

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let warning_tx = tx.clone();
    let terminal = solver::progress::Terminal::default();
    let renderer = tokio::spawn(render(rx, args.progress, terminal.clone()));
    let default_dockerfile = context.join("Dockerfile");
    let dockerfile = dockerfile_path.as_deref().unwrap_or(&default_dockerfile);
    let context_dir =
        frontend::ignore::ContextDir::open(&context, Some(dockerfile)).map_err(|e| anyhow!(e))?;
    let mut locals: HashMap<String, Arc<dyn solver::context::LocalSource>> = HashMap::new();
    locals.insert(frontend::lower::CONTEXT_NAME.into(), Arc::new(context_dir));
    opts.named_contexts =
        crate::build_context::parse_build_contexts(root, &args.build_contexts, &mut locals)?;
    let solver = Arc::new(
        Solver::new(SolverConfig {
            root: root.to_path_buf(),
            executor: executor::Executor::current_exe()?,
            locals,
            no_cache: args.no_cache,
            progress: solver::progress::Progress::new(tx).with_terminal(terminal),
            exec: exec_config,
            layer_export: crate::output::built_layer_options(&outputs, source_date_epoch)?,
        })?
        .with_pull_always(args.pull),
    );

    if !args.no_cache {
        crate::cache_flags::import_caches(&solver, &cache_from).await;
    }

    let (ast, source) = (Arc::new(ast), Arc::new(source));
    let lowerings = lower_for_platforms(&solver, &ast, &source, &opts, &platforms);
    let mut lowered_all = Vec::new();
    for (platform, lowering) in platforms.iter().zip(lowerings) {
        match lowering.await? {
            Ok(l) => lowered_all.push(l),
            Err(e) => {
                drop((solver, warning_tx));
                let _ = renderer.await;
                if args.check {
                    crate::checks_output::print_check(
                        &crate::checks_output::ast_warnings(&source),
                        &display_name,
                        &source,
                    );
                }
                let on = if multi {
                    format!(" (platform {platform})")
                } else {
                    String::new()
                };
                eprintln!(
                    "error: {}{on}",
                    crate::source_excerpt::dockerfile_error(&e, &source)
                );
                return Ok(1);
            }
        }
    }
    // Checks look at the Dockerfile, not at a platform: report them once.
    let first = &lowered_all[0];
    if args.check {
        drop((solver, warning_tx));
        let _ = renderer.await;
        let code = crate::checks_output::print_check(&first.warnings, &display_name, &source);
        return Ok(code);
    }
    let warning_summary =
        crate::checks_output::report(&first.warnings, &display_name, args.progress, &warning_tx);
    drop(warning_tx);
    if first.check_config.error && !first.warnings.is_empty() {
        drop(solver);
        let _ = renderer.await;
        eprintln!(
            "error: {}",
            crate::checks_output::error_message(&first.warnings)
        );
        return Ok(1);
    }
    let plan = crate::platforms::Plan::new(&platforms, lowered_all);
    if args.print.as_deref() == Some("graph") {
        print!("{}", plan.render_graph());
        return Ok(0);
    } else if let Some(p) = &args.print {
        bail!("--print {p:?}: unknown; supported: graph");
    }

    let cancel = executor::CancelToken::new();
    let ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        })
    };
    let solved = solver
        .solve_outputs(&plan.graph, &plan.outputs, &cancel)
        .await;
    ctrl_c.abort();
    let solved = match solved {
        Ok(s) => s,
        Err(e) => {
            drop(solver);
            let _ = renderer.await;
            if cancel.is_cancelled() && e.vertex.is_none() {
                eprintln!("error: build cancelled");
                return Ok(130);
            }
            // buildx lists the warnings before the error.
            drop(warning_summary);
            eprintln!(
                "error: {}",
                solve_error(&plan, &e, &source, &display_name, multi)
            );
            return Ok(1);
        }
    };

    let inline_cache = cache_to
        .contains(&solver::cache::CacheTo::Inline)
        .then(|| (plan.graph.clone(), solved.results.clone()));
    let targets = plan
        .targets
        .iter()
        .zip(&solved.outputs)
        .map(|(t, result)| crate::output::ExportTarget {
            platform: multi.then(|| t.platform.clone()),
            result: result.clone(),
            image: t.lowered.image.clone(),
        })
        .collect();
    let facts = crate::attest::BuildFacts {
        graph: &plan.graph,
        build_args: &opts.build_args,
        labels: &opts.labels,
        target: args.target.as_deref(),
        dockerfile_name: &display_name,
        dockerfile: &source,
        context: &context,
        secrets: &args.secrets,
        ssh: &args.ssh,
        started: source_date_epoch
            .map(|e| exporter::format_rfc3339(e as i64))
            .unwrap_or(started),
        source_date_epoch,
    };
    let attestations = crate::attest::request(&attest_flags, &facts, &args.tags)?;
    let manifest = crate::output::export(crate::output::ExportRequest {
        root,
        solver: solver.clone(),
        targets,
        tags: &args.tags,
        outputs,
        source_date_epoch,
        inline_cache,
        annotations: flags.annotations,
        attestations,
    })
    .await?;
    let loaded = args
        .load
        .then(|| crate::build_flags::load_into_docker(root, &solver.content, &manifest, &args.tags))
        .transpose()?;
    let mut cache_exports = Vec::new();
    for to in &cache_to {
        if let Some(done) =
            solver::cache::export_cache(&solver, &plan.graph, &plan.outputs, &solved.results, to)
                .await?
        {
            cache_exports.push(done);
        }
    }
    let image_id = crate::build_flags::image_id(&solver.content, &manifest);
    if let Some(p) = &args.iidfile {
        std::fs::write(p, &image_id)
            .with_context(|| format!("--iidfile: writing {}", p.display()))?;
    }
    if let Some(p) = &args.metadata_file {
        let meta = crate::cache_flags::Metadata {
            manifest: &manifest,
            tags: &args.tags,
            cache_exports: &cache_exports,
        };
        crate::cache_flags::write_metadata(p, &solver, &meta)?;
    }
    drop(solver);
    let _ = renderer.await;
    if args.quiet {
        println!("{image_id}");
        return Ok(0);
    }
    if let Some(loaded) = loaded {
        eprintln!("loaded into the Docker engine: {loaded}");
    }
    let for_platforms = if multi {
        let names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        format!(" for {}", names.join(", "))
    } else {
        String::new()
    };
    eprintln!(
        "built {}{for_platforms} ({} steps run, {} cached)",
        manifest.digest, solved.executed, solved.cached
    );
    for t in &args.tags {
        eprintln!("naming to {t}");
    }
    Ok(0)
}

/// Reads and parses the Dockerfile; a parse error comes back as the message to show.
#[allow(clippy::type_complexity)]
fn read_dockerfile(
    context: &Path,
    file: Option<&Path>,
) -> Result<Result<(frontend::Ast, Vec<u8>, String), (frontend::lower::DockerfileError, Vec<u8>)>> {
    let path = file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| context.join("Dockerfile"));
    let source = std::fs::read(&path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            _ => e.to_string(),
        };
        anyhow!("failed to read dockerfile: open {}: {why}", path.display())
    })?;
    if source.is_empty() {
        bail!("the Dockerfile cannot be empty");
    }
    let display_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "Dockerfile".into());
    Ok(match frontend::parse(&source) {
        Ok(ast) => Ok((ast, source, display_name)),
        Err(e) => Err((
            frontend::lower::DockerfileError {
                source_line: String::from_utf8_lossy(&source)
                    .lines()
                    .nth(e.line.saturating_sub(1))
                    .map(str::to_string),
                file: display_name,
                line: e.line,
                column: e.column,
                message: e.message.clone(),
            },
            source,
        )),
    })
}

/// Lowers the Dockerfile once per target platform, concurrently: each lowering may pull
/// its own base images.
fn lower_for_platforms(
    solver: &Arc<Solver>,
    ast: &Arc<frontend::Ast>,
    source: &Arc<Vec<u8>>,
    opts: &BuildOptions,
    platforms: &[Platform],
) -> Vec<tokio::task::JoinHandle<Result<frontend::lower::Lowered, frontend::lower::DockerfileError>>>
{
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

/// A failed step, with its Dockerfile line (and platforms, for several).
fn solve_error(
    plan: &crate::platforms::Plan,
    e: &solver::SolveError,
    source: &[u8],
    display_name: &str,
    multi: bool,
) -> String {
    let (location, failed_for) = plan.locate(e.vertex);
    let on = if multi {
        format!("[{failed_for}] ")
    } else {
        String::new()
    };
    match location {
        Some(loc) => {
            format!(
                "{on}{display_name}:{}: {}\n{}\nfailed to solve: {e}",
                loc.line,
                loc.text,
                crate::source_excerpt::excerpt(source, loc.line, loc.line)
            )
        }
        None => format!("{on}failed to solve: {e}"),
    }
}
