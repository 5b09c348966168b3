//! [`InProcessBackend`]: the server runs builds through `engine::build` in its own process.
//! Every build opens its solver over the one store, and the solver's steps in flight are
//! shared across builds (`solver::inflight`), so identical steps of concurrent clients run
//! once. A client's forwarded registry credentials are seen only by the threads of its
//! build's runtime. `--call`, `--check` and `--print` (answers printed by the CLI) still run
//! as `builder build` children.

use crate::backend::{BoxFuture, BuildBackend, BuildEvent, BuildJob, ProcessBackend};
use crate::render::{self, Mode};
use anyhow::{bail, Result};
use engine::output::parse_output;
use engine::{BuildError, BuildRequest, BuildResult, Outcome};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

pub struct InProcessBackend {
    root: PathBuf,
    child: ProcessBackend,
}

impl InProcessBackend {
    /// Builds in the store at `root`; `program` is this executable, for the builds that
    /// still run as children.
    pub fn new(program: PathBuf, root: PathBuf) -> Self {
        let child = ProcessBackend {
            program,
            root: root.clone(),
        };
        Self { root, child }
    }
}

impl BuildBackend for InProcessBackend {
    fn build(
        &self,
        job: BuildJob,
        events: mpsc::Sender<BuildEvent>,
        cancel: watch::Receiver<bool>,
    ) -> BoxFuture<'_, Result<i32>> {
        if needs_child(&job) {
            return self.child.build(job, events, cancel);
        }
        Box::pin(build_here(&self.root, job, events, cancel))
    }

    fn prune(&self, keep_storage: String) -> BoxFuture<'_, Result<()>> {
        self.child.prune(keep_storage)
    }
}

fn needs_child(job: &BuildJob) -> bool {
    Flags(&job.flags).has_any(&["call", "check", "print"])
}

/// The job's `--name[=value]` flags.
struct Flags<'a>(&'a [String]);

impl Flags<'_> {
    fn all(&self, name: &str) -> Vec<String> {
        let prefix = format!("--{name}=");
        self.0
            .iter()
            .filter_map(|f| f.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    fn last(&self, name: &str) -> Option<String> {
        self.all(name).pop()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|f| *f == format!("--{name}"))
    }

    fn has_any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.has(n) || self.last(n).is_some())
    }
}

async fn build_here(
    root: &Path,
    job: BuildJob,
    events: mpsc::Sender<BuildEvent>,
    mut cancel: watch::Receiver<bool>,
) -> Result<i32> {
    let flags = Flags(&job.flags);
    let mode = Mode::from_flag(flags.last("progress").as_deref());
    // The Dockerfile's context comes first in an upload; the others may still be coming.
    if let Some(gate) = job
        .uploads
        .as_ref()
        .and_then(|g| g.of(dockerfile_dir(&job)))
    {
        if let Err(e) = gate.opened().await {
            return Ok(fail(&events, &format!("error: {e:#}"), 1).await);
        }
    }
    let stdout_dir = tempfile::tempdir_in(root.join("remote/builds"))?;
    let request = match request(root, &job, stdout_dir.path()) {
        Ok(r) => r,
        Err(e) => return Ok(fail(&events, &format!("error: {e:#}"), 1).await),
    };
    let token = executor::CancelToken::new();
    let watcher = {
        let token = token.clone();
        tokio::spawn(async move {
            if cancel.wait_for(|c| *c).await.is_ok() {
                token.cancel();
            }
        })
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let renderer = tokio::spawn(render::forward(rx, mode, events.clone()));
    let sink = engine::EventSink::new(tx, solver::progress::Terminal::default());
    let auth = job
        .env
        .iter()
        .find(|(k, _)| k == "DOCKER_AUTH_CONFIG")
        .map(|(_, v)| v.clone().into_bytes());
    let outcome = run_engine(root, request, auth, sink, token).await;
    watcher.abort();
    let summary = renderer.await.unwrap_or_default();
    let code = match outcome {
        Ok(Outcome::Built(result)) => report(&result, &job, stdout_dir.path(), &events).await?,
        Ok(_) => 0,
        Err(BuildError::Cancelled) => fail(&events, "error: build cancelled", 130).await,
        Err(e) => fail(&events, &format!("error: {e}"), 1).await,
    };
    let _ = events
        .send(BuildEvent::Stderr(render::summary_text(&summary)))
        .await;
    Ok(code)
}

/// Runs the engine on a runtime of its own (its build future is not `Send`), whose threads
/// alone see the client's forwarded registry credentials `auth`.
async fn run_engine(
    root: &Path,
    request: BuildRequest,
    auth: Option<Vec<u8>>,
    sink: engine::EventSink,
    token: executor::CancelToken,
) -> Result<Outcome, BuildError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let root = root.to_path_buf();
    std::thread::Builder::new()
        .name("build".into())
        .spawn(move || {
            let rt = match build_runtime(auth) {
                Ok(rt) => rt,
                Err(e) => return drop(tx.send(Err(BuildError::Other(e)))),
            };
            let outcome = rt.block_on(engine::build(&root, request, sink, &token));
            let _ = tx.send(outcome);
            // Dropping the runtime waits for its background work (layer compression).
        })
        .map_err(|e| BuildError::Other(e.into()))?;
    rx.await.unwrap_or_else(|_| {
        Err(BuildError::Other(anyhow::anyhow!(
            "the build thread panicked"
        )))
    })
}

/// A runtime for one build; it and its blocking threads (and the calling thread) load the
/// client's credentials instead of the server's.
fn build_runtime(auth: Option<Vec<u8>>) -> Result<tokio::runtime::Runtime> {
    distribution::auth::set_thread_auth_config(auth.as_deref())?;
    let auth = Arc::new(auth);
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            let _ = distribution::auth::set_thread_auth_config(auth.as_deref());
        })
        .build()?)
}

async fn fail(events: &mpsc::Sender<BuildEvent>, message: &str, code: i32) -> i32 {
    let _ = events
        .send(BuildEvent::Stderr(format!("{message}\n").into_bytes()))
        .await;
    code
}

/// Writes the iidfile and metadata the session sends back, streams `dest=-` outputs as
/// stdout, and prints what a local build prints at its end.
async fn report(
    result: &BuildResult,
    job: &BuildJob,
    stdout_dir: &Path,
    events: &mpsc::Sender<BuildEvent>,
) -> Result<i32> {
    if let Some(p) = &job.iidfile {
        std::fs::write(p, &result.image_id)?;
    }
    if let Some(p) = &job.metadata_file {
        result.write_metadata(p)?;
    }
    for i in 0..job.outputs.len() {
        if let Ok(bytes) = std::fs::read(stdout_dir.join(format!("out{i}"))) {
            for chunk in bytes.chunks(1 << 20) {
                let _ = events.send(BuildEvent::Stdout(chunk.to_vec())).await;
            }
        }
    }
    let flags = Flags(&job.flags);
    if flags.has("quiet") {
        let id = format!("{}\n", result.image_id).into_bytes();
        let _ = events.send(BuildEvent::Stdout(id)).await;
        return Ok(0);
    }
    let text = result.summary(&flags.all("tag"));
    let _ = events.send(BuildEvent::Stderr(text.into_bytes())).await;
    Ok(0)
}

/// The engine request the job describes, as `builder build` makes it from its flags.
fn request(root: &Path, job: &BuildJob, stdout_dir: &Path) -> Result<BuildRequest> {
    let flags = Flags(&job.flags);
    let tags = flags.all("tag");
    let push = flags.has("push");
    engine::output::check_push(push, &tags)?;
    let platforms = engine::platforms::requested(flags.last("platform").as_deref())?;
    let platforms = platforms.unwrap_or_default();
    let annotations =
        engine::settings::parse_annotations(&flags.all("annotation"), platforms.len())?;
    let run = engine::settings::run_defaults(&engine::settings::RunFlags {
        network: flags.last("network").as_deref(),
        allow: &flags.all("allow"),
        add_hosts: &flags.all("add-host"),
        ulimits: &flags.all("ulimit"),
        shm_size: flags.last("shm-size").as_deref(),
    })?;
    let outputs = outputs(job, push, stdout_dir)?;
    let attestations = engine::attest::parse(
        flags.last("provenance").as_deref(),
        flags.last("sbom").as_deref(),
        &flags.all("attest"),
        engine::output::pushes(&outputs),
    )?;
    let context = local_dir(job, &job.context, Some(&job.dockerfile))?;
    let dockerfile = engine::Dockerfile::Path(job.dockerfile.clone());
    let mut request = BuildRequest::new(dockerfile, context);
    request.named_contexts =
        engine::context::parse_build_contexts(root, &flags.all("build-context"))?;
    for (name, dir) in &job.named_contexts {
        let source = local_dir(job, dir, None)?;
        request
            .named_contexts
            .insert(name.to_lowercase(), engine::NamedSource::Local(source));
    }
    request.build_args = build_args(job, &flags)?;
    request.labels = key_values(&flags.all("label"));
    caches(&mut request, &flags, &tags)?;
    request.secrets = Arc::new(ProvidedSecrets(job.provided_secrets.clone()));
    request.ssh = Arc::new(RelayedAgents(job.ssh.clone()));
    (request.platforms, request.annotations, request.run) = (platforms, annotations, run);
    (request.outputs, request.attestations) = (outputs, attestations);
    (request.target, request.tags) = (flags.last("target"), tags);
    (request.no_cache, request.pull) = (flags.has("no-cache"), flags.has("pull"));
    Ok(request)
}

fn dockerfile_dir(job: &BuildJob) -> &Path {
    job.dockerfile.parent().unwrap_or(Path::new("/"))
}

/// A context directory of the job: read once its upload is complete.
fn local_dir(
    job: &BuildJob,
    dir: &Path,
    dockerfile: Option<&Path>,
) -> Result<Arc<dyn solver::context::LocalSource>> {
    match job.uploads.as_ref().and_then(|g| g.of(dir)) {
        Some(gate) => Ok(Arc::new(crate::upload::UploadedDir::new(
            dir, dockerfile, gate,
        )?)),
        None => engine::context::local_dir(dir, dockerfile),
    }
}

fn caches(request: &mut BuildRequest, flags: &Flags, tags: &[String]) -> Result<()> {
    for spec in flags.all("cache-to") {
        request
            .cache_to
            .push(engine::cache::parse_cache_to(&spec, tags)?);
    }
    for spec in flags.all("cache-from") {
        request
            .cache_from
            .push(engine::cache::parse_cache_from(&spec, tags)?);
    }
    request.no_cache_stages = engine::cache::parse_no_cache_filter(&flags.all("no-cache-filter"))?;
    Ok(())
}

/// `--build-arg KEY=VALUE` (the client resolved bare names; the server's environment is
/// never read), with the client's SOURCE_DATE_EPOCH as buildx passes it.
fn build_args(job: &BuildJob, flags: &Flags) -> Result<BTreeMap<String, String>> {
    let mut args = BTreeMap::new();
    for a in flags.all("build-arg") {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => args.insert(k.to_string(), v.to_string()),
            _ => bail!("--build-arg {a:?}: expected KEY=VALUE"),
        };
    }
    for (k, v) in &job.env {
        if k == "SOURCE_DATE_EPOCH" {
            args.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Ok(args)
}

fn key_values(values: &[String]) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The outputs, with `dest=-` (the client's stdout) written to a file first.
fn outputs(
    job: &BuildJob,
    push: bool,
    stdout_dir: &Path,
) -> Result<Vec<Arc<dyn engine::output::Exporter>>> {
    let mut out = Vec::new();
    for (i, spec) in job.outputs.iter().enumerate() {
        let spec = match spec.split(',').any(|f| f == "dest=-") {
            true => spec.replace(
                "dest=-",
                &format!("dest={}", stdout_dir.join(format!("out{i}")).display()),
            ),
            false => spec.clone(),
        };
        out.push(parse_output(&spec)?.into_exporter());
    }
    if push {
        out.push(parse_output("type=registry")?.into_exporter());
    }
    Ok(out)
}

/// The client's `--secret` values, held in memory only.
struct ProvidedSecrets(Vec<(String, Vec<u8>)>);

impl engine::secrets::SecretProvider for ProvidedSecrets {
    fn ids(&self) -> Vec<String> {
        self.0.iter().map(|(id, _)| id.clone()).collect()
    }

    fn source(&self, id: &str) -> Option<solver::SecretSource> {
        let value = self.0.iter().rev().find(|(i, _)| i == id)?.1.clone();
        Some(solver::SecretSource::Provided(solver::ProvidedSecret(
            Arc::new(move || Ok(Some(value.clone()))),
        )))
    }
}

/// The client's SSH agents, relayed over the session (`crate::ssh`).
struct RelayedAgents(Vec<(String, PathBuf)>);

impl engine::secrets::SshProvider for RelayedAgents {
    fn ids(&self) -> Vec<String> {
        self.0.iter().map(|(id, _)| id.clone()).collect()
    }

    fn socket(&self, id: &str) -> Option<PathBuf> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, p)| p.clone())
    }
}
