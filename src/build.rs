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
    /// Output: type=oci|docker|local|image,dest=PATH
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print something instead of building: `graph` prints the lowered build graph.
    #[arg(long)]
    pub print: Option<String>,
    /// Target platform(s), comma-separated for a multi-platform image index (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Push the image (or multi-platform index) to the registry of each -t name.
    #[arg(long)]
    pub push: bool,
    /// Write the image (config) digest to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Export the build cache: type=local,dest=DIR | type=registry,ref=REF | type=inline
    /// [,mode=min|max][,mounts=true]; may be repeated.
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Import a build cache: type=local,src=DIR | type=registry,ref=REF (or just REF);
    /// may be repeated.
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
    /// The build context directory.
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

#[derive(Debug, PartialEq)]
pub(crate) enum Output {
    Oci(PathBuf),
    Docker(PathBuf),
    Local(PathBuf),
}

pub(crate) fn parse_output(spec: &str) -> Result<Output> {
    let mut kv: HashMap<&str, &str> = HashMap::new();
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            anyhow!("--output {spec:?}: expected key=value pairs such as type=oci,dest=out.tar")
        })?;
        kv.insert(k.trim(), v.trim());
    }
    let dest = || {
        kv.get("dest")
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("--output {spec:?}: dest= is required"))
    };
    match kv.get("type").copied() {
        Some("oci") => Ok(Output::Oci(dest()?)),
        Some("docker") => Ok(Output::Docker(dest()?)),
        Some("local") => Ok(Output::Local(dest()?)),
        Some(t) => bail!("--output {spec:?}: unknown type {t:?}; supported: oci, docker, local"),
        None => bail!("--output {spec:?}: type= is required (oci, docker or local)"),
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

pub async fn build(root: &Path, mut args: BuildArgs) -> Result<i32> {
    crate::push::check(args.push, &args.tags)?;
    if let Some(platforms) = crate::platforms::requested(args.platform.as_deref())? {
        if platforms.len() > 1 {
            return crate::platforms::build(root, args, platforms).await;
        }
        // Normalised, so `linux/aarch64` gives TARGETARCH=arm64.
        args.platform = platforms.first().map(ToString::to_string);
    }
    let outputs = args
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<Vec<_>>>()?;
    let build_args = parse_build_args(&args.build_args)?;
    let cache_to = args
        .cache_to
        .iter()
        .map(|s| crate::cache_flags::parse_cache_to(s))
        .collect::<Result<Vec<_>>>()?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|s| crate::cache_flags::parse_cache_from(s))
        .collect::<Result<Vec<_>>>()?;
    let no_cache_stages = crate::cache_flags::parse_no_cache_filter(&args.no_cache_filter)?;
    let exec_config =
        crate::secrets::exec_config(&args.secrets, &args.ssh, args.on_error.as_deref())?;
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
    let mut opts = BuildOptions {
        dockerfile_name: display_name.clone(),
        build_args,
        target: args.target.clone(),
        platform: platform.clone(),
        build_platform: host_str,
        no_cache_stages,
        named_contexts: Default::default(),
        lint_all_stages: args.check && args.target.is_none(),
    };

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let warning_tx = tx.clone();
    let renderer = tokio::spawn(render(rx, args.progress));
    let context_dir = frontend::ignore::ContextDir::open(&context, args.file.as_deref())
        .map_err(|e| anyhow!(e))?;
    let mut locals: HashMap<String, Arc<dyn solver::context::LocalSource>> = HashMap::new();
    locals.insert(frontend::lower::CONTEXT_NAME.into(), Arc::new(context_dir));
    opts.named_contexts =
        crate::build_context::parse_build_contexts(&args.build_contexts, &mut locals)?;
    let solver = Arc::new(Solver::new(SolverConfig {
        root: root.to_path_buf(),
        executor: executor::Executor::current_exe()?,
        locals,
        no_cache: args.no_cache,
        progress: solver::progress::Progress::new(tx),
        exec: exec_config,
    })?);

    if !args.no_cache {
        crate::cache_flags::import_caches(&solver, &cache_from).await;
    }

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
            drop((solver, warning_tx));
            let _ = renderer.await;
            if args.check {
                crate::checks_output::print_check(
                    &crate::checks_output::ast_warnings(&source),
                    &display_name,
                    &source,
                );
            }
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    if args.check {
        drop((solver, warning_tx));
        let _ = renderer.await;
        let code = crate::checks_output::print_check(&lowered.warnings, &display_name, &source);
        return Ok(code);
    }
    crate::checks_output::report(&lowered.warnings, &display_name, args.progress, &warning_tx);
    drop(warning_tx);
    if lowered.check_config.error && !lowered.warnings.is_empty() {
        drop(solver);
        let _ = renderer.await;
        eprintln!(
            "error: {}",
            crate::checks_output::error_message(&lowered.warnings)
        );
        return Ok(1);
    }
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

    // Export.
    let s2 = solver.clone();
    let out_ref = solved.output.clone();
    let layers = tokio::task::spawn_blocking(move || s2.export_layers(&out_ref)).await??;
    let mut config = lowered.image.clone();
    config.rootfs.kind = "layers".into();
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    let created = exporter::now_rfc3339();
    config.created = Some(created.clone());
    for h in config.history.iter_mut().filter(|h| h.created.is_none()) {
        h.created = Some(created.clone());
    }
    let descriptors: Vec<_> = layers.iter().map(|l| l.descriptor.clone()).collect();
    let manifest = if cache_to.contains(&solver::cache::CacheTo::Inline) {
        let (s2, d, r) = (
            solver.clone(),
            lowered.definition.clone(),
            solved.results.clone(),
        );
        tokio::task::spawn_blocking(move || {
            solver::cache::write_image_with_inline_cache(&s2, &config, &descriptors, &d, &r)
        })
        .await??
    } else {
        exporter::write_image(&solver.content, &config, &descriptors)?
    };
    for t in &args.tags {
        solver.images.tag(t, &manifest)?;
    }
    if args.push {
        crate::push::push_tags(&solver.content, &args.tags, &manifest).await?;
    }
    for o in &outputs {
        match o {
            Output::Oci(dest) => {
                let f = std::fs::File::create(dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                exporter::export_oci_archive(
                    &solver.content,
                    &manifest,
                    args.tags.first().map(String::as_str),
                    std::io::BufWriter::new(f),
                )?;
            }
            Output::Docker(dest) => {
                let f = std::fs::File::create(dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                exporter::export_docker_archive(
                    &solver.content,
                    &manifest,
                    &args.tags,
                    std::io::BufWriter::new(f),
                )?;
            }
            Output::Local(dest) => {
                let s2 = solver.clone();
                let (r, d) = (solved.output.clone(), dest.clone());
                tokio::task::spawn_blocking(move || s2.export_local(&r, &d)).await??;
            }
        }
    }
    let mut cache_exports = Vec::new();
    for to in &cache_to {
        if let Some(done) =
            solver::cache::export_cache(&solver, &lowered.definition, &solved.results, to).await?
        {
            cache_exports.push(done);
        }
    }
    if let Some(p) = &args.iidfile {
        std::fs::write(p, &manifest.digest)?;
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
    eprintln!(
        "built {} ({} steps run, {} cached)",
        manifest.digest, solved.executed, solved.cached
    );
    for t in &args.tags {
        eprintln!("naming to {t}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse() {
        assert_eq!(
            parse_output("type=oci,dest=a.tar").unwrap(),
            Output::Oci("a.tar".into())
        );
        assert!(parse_output("type=zip,dest=a").is_err());
        assert!(parse_output("type=oci").is_err());
        assert!(parse_output("oci").is_err());
    }
}
