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
    /// Build only up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Output, buildx style: type=image|registry|oci|docker|local|tar[,dest=PATH][,compression=gzip|zstd|uncompressed]...; `-` = rootfs tar on stdout.
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Push the image to its registry (shorthand for --output type=registry).
    #[arg(long)]
    pub push: bool,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print something instead of building: `graph` prints the lowered build graph.
    #[arg(long)]
    pub print: Option<String>,
    /// Target platform (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Write the image (config) digest to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// The build context directory.
    pub context: PathBuf,
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

fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>> {
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

pub async fn build(root: &Path, args: BuildArgs) -> Result<i32> {
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| crate::output::parse_output(o))
        .collect::<Result<Vec<_>>>()?;
    if args.push {
        outputs.push(crate::output::parse_output("type=registry")?);
    }
    let build_args = parse_build_args(&args.build_args)?;
    let source_date_epoch = crate::output::source_date_epoch(&build_args)?;
    crate::output::check_outputs(&outputs, source_date_epoch)?;
    let context = args
        .context
        .canonicalize()
        .with_context(|| format!("build context {}", args.context.display()))?;
    if !context.is_dir() {
        bail!("build context {} is not a directory", context.display());
    }
    let dockerfile_path = args
        .file
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let source = std::fs::read(&dockerfile_path)
        .with_context(|| format!("reading Dockerfile {}", dockerfile_path.display()))?;
    let display_name = dockerfile_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "Dockerfile".into());
    let ast = match frontend::parse(&source) {
        Ok(ast) => ast,
        Err(e) => {
            let line = String::from_utf8_lossy(&source)
                .lines()
                .nth(e.line.saturating_sub(1))
                .unwrap_or("")
                .to_string();
            let err = frontend::lower::DockerfileError {
                file: display_name,
                line: e.line,
                column: e.column,
                message: e.message.clone(),
                source_line: Some(line),
            };
            eprintln!("error: {err}");
            return Ok(1);
        }
    };

    let host = Platform::host();
    let host_str = format!("{}/{}", host.os, host.architecture);
    let platform = args.platform.clone().unwrap_or_else(|| host_str.clone());
    let opts = BuildOptions {
        dockerfile_name: display_name.clone(),
        build_args,
        target: args.target.clone(),
        platform: platform.clone(),
        build_platform: host_str,
        no_cache_stages: Default::default(),
    };

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let renderer = tokio::spawn(render(rx, args.progress));
    let context_dir = frontend::ignore::ContextDir::open(&context, args.file.as_deref())
        .map_err(|e| anyhow!(e))?;
    let mut locals: HashMap<String, Arc<dyn solver::context::LocalSource>> = HashMap::new();
    locals.insert(frontend::lower::CONTEXT_NAME.into(), Arc::new(context_dir));
    let solver = Arc::new(Solver::new(SolverConfig {
        root: root.to_path_buf(),
        executor: executor::Executor::current_exe()?,
        locals,
        no_cache: args.no_cache,
        progress: solver::progress::Progress::new(tx),
    })?);

    let resolver = SolverResolver {
        solver: solver.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let (ast2, src2, opts2) = (ast, source.clone(), opts);
    let lowered = tokio::task::spawn_blocking(move || {
        frontend::lower::lower(&ast2, &src2, &opts2, &resolver)
    })
    .await?;
    let lowered = match lowered {
        Ok(l) => l,
        Err(e) => {
            drop(solver);
            let _ = renderer.await;
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    if args.print.as_deref() == Some("graph") {
        print!("{}", lowered.definition.render());
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
    let solved = solver.solve(&lowered.definition, &cancel).await;
    ctrl_c.abort();
    let solved = match solved {
        Ok(s) => s,
        Err(e) => {
            let location = e.vertex.and_then(|v| lowered.locations.get(&v));
            drop(solver);
            let _ = renderer.await;
            if cancel.is_cancelled() && e.vertex.is_none() {
                eprintln!("error: build cancelled");
                return Ok(130);
            }
            match location {
                Some(loc) => {
                    let src = String::from_utf8_lossy(&source);
                    eprintln!(
                        "error: {display_name}:{}: {}\n {:>4} | {}\nfailed to solve: {e}",
                        loc.line,
                        loc.text,
                        loc.line,
                        src.lines().nth(loc.line - 1).unwrap_or("")
                    );
                }
                None => eprintln!("error: failed to solve: {e}"),
            }
            return Ok(1);
        }
    };

    let manifest = crate::output::export(crate::output::ExportRequest {
        root,
        solver: solver.clone(),
        result: solved.output.clone(),
        image: lowered.image.clone(),
        tags: &args.tags,
        outputs,
        source_date_epoch,
    })
    .await?;
    if let Some(p) = &args.iidfile {
        std::fs::write(p, &manifest.digest)?;
    }
    drop(solver);
    let _ = renderer.await;
    eprintln!(
        "built {} ({} steps run, {} cached)",
        manifest.digest, solved.executed, solved.cached
    );
    for t in &args.tags {
        eprintln!("naming to {t}");
    }
    Ok(0)
}
