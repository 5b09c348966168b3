//! `builder build` as a library: its flags (read from the CLI's by field name) become a
//! [`BuildRequest`]; the events are rendered and the outcome printed as the CLI does, for the
//! CLI itself and for `compose build`.

use crate::checks_output::WarningSummary;
use crate::output::{parse_output, DockerLoad, Exporter};
use crate::render::{render, ProgressMode};
use crate::{BuildError, BuildRequest, BuildResult, Outcome};
use anyhow::{bail, Context as _, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every `builder build` flag, as typed as the command line gives it.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct BuildFlags {
    /// Name (and tag) for the image; may be repeated.
    pub tags: Vec<String>,
    /// Path of the Dockerfile (default: PATH/Dockerfile); may be outside the context.
    pub file: Option<PathBuf>,
    /// Build-time variable, KEY=VALUE (or KEY to take it from the environment).
    pub build_args: Vec<String>,
    /// Label for the image, KEY=VALUE (KEY alone: an empty value); may be repeated.
    pub labels: Vec<String>,
    /// Build only up to this stage.
    pub target: Option<String>,
    /// Do not use the cache.
    pub no_cache: bool,
    /// Output, buildx style: type=image|registry|oci|docker|local|tar[,dest=PATH][,compression=gzip|zstd|uncompressed]...; `-` = rootfs tar on stdout.
    pub outputs: Vec<String>,
    /// Push the image (or multi-platform index) to the registry of each -t name
    /// (shorthand for --output type=registry).
    pub push: bool,
    /// Progress output.
    pub progress: ProgressMode,
    /// Print something instead of building: `graph` prints the lowered build graph.
    pub print: Option<String>,
    /// Target platform(s), comma-separated for a multi-platform image index (default: this machine's).
    pub platform: Option<String>,
    /// Write the image (config) digest to this file.
    pub iidfile: Option<PathBuf>,
    /// Export the build cache: type=local,dest=DIR | type=registry,ref=REF | type=inline |
    /// type=gha[,scope=S][,url=U][,token=T][,timeout=10m] [,mode=min|max][,mounts=true]; may be repeated.
    pub cache_to: Vec<String>,
    /// Import a build cache: type=local,src=DIR | type=registry,ref=REF (or just REF) |
    /// type=gha[,scope=S]; may be repeated.
    pub cache_from: Vec<String>,
    /// Do not use the cache for these stages (comma-separated; may be repeated).
    pub no_cache_filter: Vec<String>,
    /// Write build result metadata (image digest, descriptor, names, cache) as JSON here.
    pub metadata_file: Option<PathBuf>,
    /// Secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR][,type=file|env].
    pub secrets: Vec<String>,
    /// SSH agent for RUN --mount=type=ssh: `default` ($SSH_AUTH_SOCK) or ID=SOCKET.
    pub ssh: Vec<String>,
    /// What to do when a RUN fails: `fail` (default) or `shell` (open /bin/sh in its container).
    pub on_error: Option<String>,
    /// Named context, name=DIR|docker-image://REF|oci-layout://PATH; may be repeated.
    pub build_contexts: Vec<String>,
    /// Run the build checks only, without building; exits non-zero on any warning.
    pub check: bool,
    /// Print only the image id on stdout (no progress); errors still go to stderr.
    pub quiet: bool,
    /// Network for RUN steps: default, none, or host (needs --allow network.host).
    pub network: Option<String>,
    /// Grant an entitlement: network.host or security.insecure; may be repeated.
    pub allow: Vec<String>,
    /// Add NAME:IP (or NAME=IP; IP may be host-gateway) to RUN's /etc/hosts; may be repeated.
    pub add_hosts: Vec<String>,
    /// Resource limit for RUN, NAME=SOFT[:HARD] (e.g. nofile=1024:2048); may be repeated.
    pub ulimits: Vec<String>,
    /// Size of RUN's /dev/shm (e.g. 128m, 2g, bytes; default 64m).
    pub shm_size: Option<String>,
    /// Annotation [TYPE[,TYPE][PLATFORM]:]KEY=VALUE, TYPE = manifest (default), index,
    /// manifest-descriptor or index-descriptor; may be repeated.
    pub annotations: Vec<String>,
    /// Load the image into the local Docker engine (DOCKER_HOST or /var/run/docker.sock).
    pub load: bool,
    /// Resolve base images against their registry even when the store has them.
    pub pull: bool,
    /// What to do: build (default), check, outline or targets [,format=json].
    pub call: Option<String>,
    /// SLSA provenance attestation: true|false|mode=min|max[,builder-id=URI]
    /// (default: mode=min when pushing).
    pub provenance: Option<String>,
    /// SBOM attestation (SPDX 2.3 JSON of the packages in the image): true|false.
    pub sbom: Option<String>,
    /// Attestation: type=provenance[,mode=min|max][,builder-id=URI] | type=sbom
    /// [,disabled=true]; may be repeated.
    pub attest: Vec<String>,
    /// Build on a remote builder: tcp://HOST:PORT[,tcp://HOST2:PORT2...], unix:///PATH, or the
    /// name of one made with `builder builder create`.
    pub builder: Option<String>,
    /// The build context directory; `-` reads a tar context (or a lone Dockerfile) from stdin.
    pub context: PathBuf,
}

pub fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>> {
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

pub async fn build(root: &Path, mut args: BuildFlags) -> Result<i32> {
    let (request, _stdin) = request(root, &args)?;
    if args.quiet {
        args.progress = ProgressMode::Quiet;
    }
    let (session, events) = Session::start(args.progress);
    let outcome = crate::build(root, request, events, &session.cancel).await;
    let summary = session.finish().await;
    match outcome {
        Ok(outcome) => print_outcome(outcome, &args, summary),
        Err(e) => Ok(print_error(e, summary)?),
    }
}

/// Several builds in one solve (`compose build`): steps they share run once, one renderer
/// shows them all, and each result is printed with its own flags.
pub async fn build_all(root: &Path, all: Vec<BuildFlags>) -> Result<i32> {
    let mut requests = Vec::new();
    let mut _spools = Vec::new();
    for args in &all {
        let (request, spool) = request(root, args)?;
        requests.push(request);
        _spools.push(spool);
    }
    let progress = all.first().map_or(ProgressMode::Auto, |a| a.progress);
    let (session, events) = Session::start(progress);
    let outcomes = crate::build_many(root, requests, events, &session.cancel).await;
    let summary = session.finish().await;
    match outcomes {
        Ok(outcomes) => {
            for (outcome, args) in outcomes.into_iter().zip(&all) {
                if let Outcome::Built(result) = outcome {
                    print_built(&result, args)?;
                }
            }
            drop(summary);
            Ok(0)
        }
        Err(e) => Ok(print_error(e, summary)?),
    }
}

/// A build's progress renderer and its Ctrl-C watch.
struct Session {
    cancel: executor::CancelToken,
    ctrl_c: tokio::task::JoinHandle<()>,
    renderer: tokio::task::JoinHandle<Vec<String>>,
}

impl Session {
    fn start(progress: ProgressMode) -> (Session, crate::EventSink) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let terminal = solver::progress::Terminal::default();
        let renderer = tokio::spawn(render(rx, progress, terminal.clone()));
        let cancel = executor::CancelToken::new();
        let ctrl_c = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    cancel.cancel();
                }
            })
        };
        let session = Session {
            cancel,
            ctrl_c,
            renderer,
        };
        (session, crate::EventSink::new(tx, terminal))
    }

    /// Waits for the renderer to drain (the engine has dropped its sink).
    async fn finish(self) -> WarningSummary {
        self.ctrl_c.abort();
        WarningSummary {
            lines: self.renderer.await.unwrap_or_default(),
        }
    }
}

/// The request the flags describe, and the spool of what came from stdin (kept until the
/// build ends).
fn request(root: &Path, args: &BuildFlags) -> Result<(BuildRequest, crate::stdin::BuildInputs)> {
    crate::output::check_push(args.push, &args.tags)?;
    let platforms = crate::platforms::requested(args.platform.as_deref())?.unwrap_or_default();
    let call = crate::settings::parse_call(args.call.as_deref(), args.check)?;
    let annotations = crate::settings::parse_annotations(&args.annotations, platforms.len())?;
    let run = crate::settings::run_defaults(&crate::settings::RunFlags {
        network: args.network.as_deref(),
        allow: &args.allow,
        add_hosts: &args.add_hosts,
        ulimits: &args.ulimits,
        shm_size: args.shm_size.as_deref(),
    })?;
    let outputs = outputs(args)?;
    let build_args = parse_build_args(&args.build_args)?;
    let attestations = crate::attest::parse(
        args.provenance.as_deref(),
        args.sbom.as_deref(),
        &args.attest,
        crate::output::pushes(&outputs),
    )?;
    let cache = |spec: &String| crate::cache::parse_cache_to(spec, &args.tags);
    let cache_to = args.cache_to.iter().map(cache).collect::<Result<_>>()?;
    let cache = |spec: &String| crate::cache::parse_cache_from(spec, &args.tags);
    let cache_from = args.cache_from.iter().map(cache).collect::<Result<_>>()?;
    let no_cache_stages = crate::cache::parse_no_cache_filter(&args.no_cache_filter)?;
    let secrets = Arc::new(crate::secrets::LocalSecrets::parse(&args.secrets)?);
    let ssh = Arc::new(crate::secrets::LocalSsh::parse(&args.ssh)?);
    let on_error_shell = crate::secrets::parse_on_error(args.on_error.as_deref())?;
    let inputs = crate::stdin::resolve(&args.context, args.file.as_deref())?;
    let context = crate::context::local_dir(&inputs.context, inputs.file.as_deref())?;
    let dockerfile = inputs
        .file
        .clone()
        .unwrap_or_else(|| context.root().join("Dockerfile"));
    let mut request = BuildRequest::new(crate::Dockerfile::Path(dockerfile), context);
    request.named_contexts = crate::context::parse_build_contexts(root, &args.build_contexts)?;
    request.print_graph = match args.print.as_deref() {
        None => false,
        Some("graph") => true,
        Some(p) => bail!("--print {p:?}: unknown; supported: graph"),
    };
    request.labels = parse_labels(&args.labels)?;
    (request.build_args, request.platforms, request.call) = (build_args, platforms, call);
    (request.outputs, request.annotations, request.run) = (outputs, annotations, run);
    (request.cache_to, request.cache_from) = (cache_to, cache_from);
    (request.no_cache_stages, request.attestations) = (no_cache_stages, attestations);
    (request.secrets, request.ssh, request.on_error_shell) = (secrets, ssh, on_error_shell);
    (request.tags, request.target) = (args.tags.clone(), args.target.clone());
    (request.no_cache, request.pull) = (args.no_cache, args.pull);
    Ok((request, inputs))
}

/// `-o` values, `--push` and `--load` as exporters.
fn outputs(args: &BuildFlags) -> Result<Vec<Arc<dyn Exporter>>> {
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| Ok(parse_output(o)?.into_exporter()))
        .collect::<Result<Vec<_>>>()?;
    if args.push {
        outputs.push(parse_output("type=registry")?.into_exporter());
    }
    if args.load {
        outputs.push(Arc::new(DockerLoad));
    }
    Ok(outputs)
}

fn print_outcome(outcome: Outcome, args: &BuildFlags, summary: WarningSummary) -> Result<i32> {
    match outcome {
        Outcome::Answer(text) | Outcome::Graph(text) => print!("{text}"),
        Outcome::Checked(report) => {
            return Ok(crate::checks_output::print_check(
                &report.warnings,
                &report.file,
                &report.source,
            ))
        }
        Outcome::Built(result) => print_built(&result, args)?,
    }
    drop(summary);
    Ok(0)
}

fn print_built(result: &BuildResult, args: &BuildFlags) -> Result<()> {
    if let Some(p) = &args.iidfile {
        std::fs::write(p, &result.image_id)
            .with_context(|| format!("--iidfile: writing {}", p.display()))?;
    }
    if let Some(p) = &args.metadata_file {
        result.write_metadata(p)?;
    }
    if args.quiet {
        println!("{}", result.image_id);
        return Ok(());
    }
    eprint!("{}", result.summary(&args.tags));
    Ok(())
}

/// Prints a failed build the way buildx does (warnings listed before a step's error, after
/// a lint error); the exit code, or the error for `main` to print.
fn print_error(error: BuildError, summary: WarningSummary) -> Result<i32> {
    match error {
        BuildError::Dockerfile { message, check } => {
            if let Some(report) = check {
                crate::checks_output::print_check(&report.warnings, &report.file, &report.source);
            }
            eprintln!("error: {message}");
        }
        BuildError::Lint(message) => {
            eprintln!("error: {message}");
            drop(summary);
        }
        BuildError::Solve(message) => {
            drop(summary);
            eprintln!("error: {message}");
        }
        BuildError::Cancelled => {
            eprintln!("error: build cancelled");
            return Ok(130);
        }
        BuildError::Other(e) => return Err(e),
    }
    Ok(1)
}
