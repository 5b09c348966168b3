//! One build session on the server: check the request, bring the context copies up to date,
//! run the build, stream its output and results back; cancel it when the client goes away.

use crate::backend::{BuildBackend, BuildEvent, BuildJob};
use crate::proto::{
    client_message::Msg as In, server_message::Msg as Out, BuildResult, ClientMessage, Need,
    OutputChunk, ServerMessage, Start,
};
use crate::server::Config;
use crate::sync::Tree;
use crate::upload::{Incoming, Upload, Writer};
use anyhow::{anyhow, bail, Context as _, Result};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
pub struct Metrics {
    pub builds_running: AtomicI64,
    pub builds_total: AtomicU64,
    pub builds_failed: AtomicU64,
    pub cache_hits: AtomicU64,
    pub context_bytes_received: AtomicU64,
    pub context_files_received: AtomicU64,
}

/// Flags a client may pass through: none of them names a path on the server.
const PASS_FLAGS: &[&str] = &[
    "tag",
    "build-arg",
    "label",
    "target",
    "no-cache",
    "push",
    "progress",
    "platform",
    "no-cache-filter",
    "network",
    "add-host",
    "ulimit",
    "shm-size",
    "annotation",
    "pull",
    "call",
    "provenance",
    "sbom",
    "attest",
    "check",
    "quiet",
    "print",
    "allow",
    "cache-to",
    "cache-from",
    "build-context",
];

pub struct Service {
    root: PathBuf,
    config: Arc<Config>,
    backend: Arc<dyn BuildBackend>,
    metrics: Arc<Metrics>,
    cancel_all: watch::Receiver<bool>,
}

impl Service {
    pub fn new(
        root: PathBuf,
        config: Config,
        backend: Arc<dyn BuildBackend>,
        metrics: Arc<Metrics>,
        cancel_all: watch::Receiver<bool>,
    ) -> Result<Self> {
        let builds = root.join("remote/builds");
        // Leftovers of a server killed mid-build.
        let _ = std::fs::remove_dir_all(&builds);
        std::fs::create_dir_all(&builds)?;
        std::fs::create_dir_all(root.join("remote/sessions"))?;
        Ok(Self {
            root,
            config: Arc::new(config),
            backend,
            metrics,
            cancel_all,
        })
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.config.shutdown_timeout.unwrap_or(600))
    }
}

type OutStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl crate::proto::builder_server::Builder for Service {
    type BuildStream = OutStream;

    async fn build(
        &self,
        request: Request<Streaming<ClientMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let identity = client_identity(&request);
        let (tx, rx) = mpsc::channel::<Result<ServerMessage, Status>>(64);
        let session = Session {
            root: self.root.clone(),
            config: self.config.clone(),
            backend: self.backend.clone(),
            metrics: self.metrics.clone(),
            cancel_all: self.cancel_all.clone(),
            identity,
            inbound: request.into_inner(),
            tx: tx.clone(),
        };
        tokio::spawn(async move {
            let reply = match session.run().await {
                Ok(code) => BuildResult {
                    exit_code: code,
                    error: String::new(),
                },
                Err(e) => BuildResult {
                    exit_code: 1,
                    error: format!("{e:#}"),
                },
            };
            let _ = tx
                .send(Ok(ServerMessage {
                    msg: Some(Out::Result(reply)),
                }))
                .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Who the client is: its certificate's digest under mutual TLS, else "local" (unix socket
/// or `--insecure` loopback).
fn client_identity<T>(request: &Request<T>) -> String {
    match request.peer_certs() {
        Some(certs) if !certs.is_empty() => hex::encode(&Sha256::digest(&certs[0])[..16]),
        _ => "local".to_string(),
    }
}

struct Session {
    root: PathBuf,
    config: Arc<Config>,
    backend: Arc<dyn BuildBackend>,
    metrics: Arc<Metrics>,
    cancel_all: watch::Receiver<bool>,
    identity: String,
    inbound: Streaming<ClientMessage>,
    tx: mpsc::Sender<Result<ServerMessage, Status>>,
}

impl Session {
    async fn run(mut self) -> Result<i32> {
        let start = match self.next().await? {
            Some(In::Start(s)) => s,
            _ => bail!("protocol: the session must begin with Start"),
        };
        let scratch = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(self.root.join("remote/builds"))?;
        let mut job = self.check(&start, scratch.path())?;
        let (uploads, locks) = self.receive_manifests(&start).await?;
        let dirs: Vec<PathBuf> = uploads
            .iter()
            .map(|u| u.tree.path().to_path_buf())
            .collect();
        job.context = context_dir(&start, &dirs, "main")?;
        job.dockerfile = context_dir(&start, &dirs, "dockerfile")?.join(&start.dockerfile);
        for (c, dir) in start.contexts.iter().zip(&dirs) {
            if let Some(name) = c.name.strip_prefix("named:") {
                job.named_contexts.push((name.to_string(), dir.clone()));
            }
        }
        let agents = crate::ssh::ServerAgents::listen(scratch.path(), &start.ssh_ids, &self.tx)?;
        job.ssh = agents.sockets.clone();
        // The files come while the build runs; it waits for each context it reads.
        let (writer, gates) = crate::upload::spawn(uploads, self.metrics.clone());
        job.uploads = Some(gates);
        let code = self.run_build(job, &agents, writer).await?;
        drop(agents);
        drop(locks);
        if code == 0 {
            self.send_results(&start, scratch.path()).await?;
        }
        self.collect_garbage();
        Ok(code)
    }

    async fn next(&mut self) -> Result<Option<In>> {
        match self.inbound.next().await {
            None => Ok(None),
            Some(Err(status)) => Err(anyhow!("the client went away: {}", status.message())),
            Some(Ok(m)) => Ok(m.msg),
        }
    }

    async fn send(&self, msg: Out) -> Result<()> {
        self.tx
            .send(Ok(ServerMessage { msg: Some(msg) }))
            .await
            .map_err(|_| anyhow!("the client went away"))
    }

    /// Turns the request into a job, refusing anything that would name a server path.
    fn check(&self, start: &Start, scratch: &Path) -> Result<BuildJob> {
        let mut job = BuildJob::default();
        for f in &start.flags {
            if !PASS_FLAGS.contains(&f.name.as_str()) {
                bail!("--{} cannot be used with a remote builder", f.name);
            }
            check_flag_value(&f.name, &f.value, &self.config)?;
            job.flags.push(if f.has_value {
                format!("--{}={}", f.name, f.value)
            } else {
                format!("--{}", f.name)
            });
        }
        for c in &self.config.cache_from {
            job.flags.push(format!("--cache-from={c}"));
        }
        for c in &self.config.cache_to {
            job.flags.push(format!("--cache-to={c}"));
        }
        for (i, o) in start.outputs.iter().enumerate() {
            job.outputs
                .push(output_with_dest(&o.spec, &scratch.join(format!("out{i}")))?);
        }
        job.iidfile = start.want_iidfile.then(|| scratch.join("iidfile"));
        job.metadata_file = start.want_metadata.then(|| scratch.join("metadata"));
        for (i, s) in start.secrets.iter().enumerate() {
            // Secrets reach the build through its environment, never the server's disk.
            let var = format!("BUILDER_REMOTE_SECRET_{i}");
            let value = String::from_utf8(s.value.clone())
                .map_err(|_| anyhow!("--secret {}: only UTF-8 values can be forwarded", s.id))?;
            job.secrets.push(format!("id={},env={var}", s.id));
            job.provided_secrets.push((s.id.clone(), s.value.clone()));
            job.env.push((var, value));
        }
        if !start.registry_auth.is_empty() {
            job.env.push((
                "DOCKER_AUTH_CONFIG".into(),
                only_auths(&start.registry_auth)?,
            ));
        }
        for (k, v) in &start.env {
            if k != "SOURCE_DATE_EPOCH" {
                bail!("environment variable {k} cannot be forwarded to a remote builder");
            }
            job.env.push((k.clone(), v.clone()));
        }
        if start.dockerfile.contains('/') || start.dockerfile.is_empty() {
            bail!("protocol: bad Dockerfile name {:?}", start.dockerfile);
        }
        Ok(job)
    }

    /// Receives the manifests and asks for the files that differ; returns the contexts'
    /// trees, and their locks, held for the whole build.
    async fn receive_manifests(
        &mut self,
        start: &Start,
    ) -> Result<(Vec<Upload>, Vec<std::fs::File>)> {
        let mut uploads = Vec::new();
        let mut locks = Vec::new();
        for (i, c) in start.contexts.iter().enumerate() {
            let dir = session_dir(&self.root, &self.identity, &c.key, &c.name)?;
            let (lock, tree_dir) =
                tokio::task::spawn_blocking(move || lock_session(&dir)).await??;
            locks.push(lock);
            let manifest = match self.next().await? {
                Some(In::Manifest(m)) if m.context as usize == i => m,
                _ => bail!("protocol: expected the manifest of context {i}"),
            };
            let tree = Tree::open(&tree_dir)?;
            let root = manifest.root;
            let upload = tokio::task::spawn_blocking(move || {
                let need = tree.prepare(&manifest.entries)?;
                anyhow::Ok(Upload {
                    tree,
                    entries: manifest.entries,
                    root,
                    need,
                })
            })
            .await??;
            self.send(Out::Need(Need {
                context: i as u32,
                indexes: upload.need.clone(),
            }))
            .await?;
            uploads.push(upload);
        }
        Ok((uploads, locks))
    }

    /// Runs the job while receiving the upload, forwarding the build's output; cancels it
    /// (and stops the upload) when the client goes away or the server's shutdown timeout
    /// runs out. Returns once both the build and the upload are over.
    async fn run_build(
        &mut self,
        job: BuildJob,
        agents: &crate::ssh::ServerAgents,
        mut writer: Writer,
    ) -> Result<i32> {
        let (events_tx, mut events) = mpsc::channel::<BuildEvent>(64);
        let (cancel_tx, cancel) = watch::channel(false);
        let backend = self.backend.clone();
        self.metrics.builds_running.fetch_add(1, Ordering::Relaxed);
        self.metrics.builds_total.fetch_add(1, Ordering::Relaxed);
        let mut build = tokio::spawn(async move { backend.build(job, events_tx, cancel).await });
        let mut cancel_all = self.cancel_all.clone();
        let mut cancelled = false;
        let mut built = None;
        let mut uploaded = None;
        while built.is_none() || uploaded.is_none() {
            tokio::select! {
                r = &mut build, if built.is_none() => {
                    built = Some(r.map_err(|e| anyhow!("build task: {e}")).and_then(|r| r));
                }
                r = &mut writer.done, if uploaded.is_none() => {
                    let r = r.map_err(|e| anyhow!("upload task: {e}")).and_then(|r| r);
                    if r.is_err() && !cancelled {
                        cancelled = true;
                        let _ = cancel_tx.send(true);
                    }
                    uploaded = Some(r);
                }
                Some(ev) = events.recv() => self.forward(ev).await,
                m = self.inbound.next(), if !cancelled => match m {
                    Some(Ok(ClientMessage { msg: Some(In::File(chunk)) })) => {
                        pass(&writer, Incoming::Chunk(chunk)).await;
                    }
                    Some(Ok(ClientMessage { msg: Some(In::UploadDone(_)) })) => {
                        pass(&writer, Incoming::Done).await;
                    }
                    Some(Ok(ClientMessage { msg: Some(In::Ssh(data)) })) => agents.deliver(data),
                    Some(Ok(_)) => {}
                    _ => {
                        cancelled = true;
                        let _ = cancel_tx.send(true);
                        writer.tx = None;
                    }
                },
                _ = async { cancel_all.wait_for(|c| *c).await.map(|_| ()) }, if !cancelled => {
                    cancelled = true;
                    let _ = cancel_tx.send(true);
                    writer.tx = None;
                }
            }
        }
        while let Ok(ev) = events.try_recv() {
            self.forward(ev).await;
        }
        self.metrics.builds_running.fetch_sub(1, Ordering::Relaxed);
        let (built, uploaded) = (built.expect("set"), uploaded.expect("set"));
        // An upload that failed is why the build failed, if it did.
        let result = uploaded.and(built);
        if !matches!(result, Ok(0)) {
            self.metrics.builds_failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn forward(&self, ev: BuildEvent) {
        let msg = match ev {
            BuildEvent::Stdout(b) => Out::Stdout(b),
            BuildEvent::Stderr(b) => {
                let hits = count(&b, b" CACHED") + count(&b, b"\"cached\":true");
                self.metrics
                    .cache_hits
                    .fetch_add(hits as u64, Ordering::Relaxed);
                Out::Stderr(b)
            }
        };
        let _ = self.send(msg).await;
    }

    /// Streams back what the client asked to receive: outputs, iidfile, metadata.
    async fn send_results(&self, start: &Start, scratch: &Path) -> Result<()> {
        let mut names: Vec<String> = (0..start.outputs.len())
            .map(|i| format!("out{i}"))
            .collect();
        names.extend(["iidfile".to_string(), "metadata".to_string()]);
        for name in names {
            let path = scratch.join(&name);
            let Ok(md) = path.symlink_metadata() else {
                continue;
            };
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
            let is_dir = md.is_dir();
            let producer = tokio::task::spawn_blocking(move || produce(&path, is_dir, tx));
            while let Some(data) = rx.recv().await {
                self.send(Out::Output(OutputChunk {
                    name: name.clone(),
                    data,
                    eof: false,
                    is_dir_tar: is_dir,
                }))
                .await?;
            }
            producer.await??;
            self.send(Out::Output(OutputChunk {
                name,
                data: Vec::new(),
                eof: true,
                is_dir_tar: is_dir,
            }))
            .await?;
        }
        Ok(())
    }

    fn collect_garbage(&self) {
        let Some(keep) = self.config.keep_storage.clone() else {
            return;
        };
        if self.metrics.builds_running.load(Ordering::Relaxed) > 0 {
            return;
        }
        let backend = self.backend.clone();
        tokio::spawn(async move {
            if let Err(e) = backend.prune(keep).await {
                eprintln!("builder serve: GC: {e:#}");
            }
        });
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// A file's bytes, or a directory as a tar, in 1 MiB chunks.
fn produce(path: &Path, is_dir: bool, tx: mpsc::Sender<Vec<u8>>) -> Result<()> {
    struct ChunkWriter(mpsc::Sender<Vec<u8>>);
    impl std::io::Write for ChunkWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .blocking_send(buf.to_vec())
                .map_err(|_| std::io::Error::other("the client went away"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = std::io::BufWriter::with_capacity(1 << 20, ChunkWriter(tx));
    if is_dir {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        tar.append_dir_all(".", path)?;
        tar.into_inner()?.into_inner().map_err(|e| anyhow!("{e}"))?;
    } else {
        let mut out = out;
        std::io::copy(&mut std::fs::File::open(path)?, &mut out)?;
        out.into_inner().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

/// The `auths` of a forwarded docker config, and nothing else: a `credsStore` or
/// `credHelpers` would make the server run a program the client names.
fn only_auths(config: &[u8]) -> Result<String> {
    let config: serde_json::Value = serde_json::from_slice(config)
        .map_err(|e| anyhow!("protocol: the forwarded registry credentials: {e}"))?;
    let auths = config.get("auths").cloned().unwrap_or_default();
    Ok(serde_json::json!({ "auths": auths }).to_string())
}

fn check_flag_value(name: &str, value: &str, config: &Config) -> Result<()> {
    match name {
        "cache-to" | "cache-from" if value.split(',').any(|f| f.trim() == "type=local") => {
            bail!("--{name} type=local names a directory on the server; use type=registry with a remote builder")
        }
        "build-context" => {
            let (_, source) = value.split_once('=').unwrap_or(("", value));
            let remote = ["docker-image://", "https://", "http://", "git://", "git@"];
            if !remote.iter().any(|p| source.starts_with(p)) {
                bail!("--build-context {value}: only directories, docker-image:// and URLs can be used with a remote builder");
            }
            Ok(())
        }
        "allow" if !config.allow_entitlements.iter().any(|a| a == value) => {
            bail!("--allow {value}: this remote builder does not grant that entitlement")
        }
        _ => Ok(()),
    }
}

/// `spec` with the server's `dest`: outputs that write files go to the scratch directory;
/// `dest=-` (stdout) is kept.
fn output_with_dest(spec: &str, dest: &Path) -> Result<String> {
    let fields: Vec<(&str, &str)> = spec
        .split(',')
        .map(|f| f.split_once('=').unwrap_or((f, "")))
        .collect();
    let ty = fields
        .iter()
        .find(|(k, _)| *k == "type")
        .map(|(_, v)| *v)
        .unwrap_or("");
    if let Some((_, d)) = fields.iter().find(|(k, _)| *k == "dest") {
        if *d == "-" {
            return Ok(spec.to_string());
        }
        bail!("--output {spec:?}: protocol: dest must not be sent to the server");
    }
    match ty {
        "local" | "tar" | "oci" | "docker" => Ok(format!("{spec},dest={}", dest.display())),
        "image" | "registry" => Ok(spec.to_string()),
        other => bail!("--output type={other} is not supported with a remote builder"),
    }
}

/// Hands a message of the upload to the writer; a writer that stopped reports why itself.
async fn pass(writer: &Writer, msg: Incoming) {
    if let Some(tx) = &writer.tx {
        let _ = tx.send(msg).await;
    }
}

fn context_dir(start: &Start, dirs: &[PathBuf], name: &str) -> Result<PathBuf> {
    start
        .contexts
        .iter()
        .position(|c| c.name == name)
        .map(|i| dirs[i].clone())
        .ok_or_else(|| anyhow!("protocol: no {name:?} context"))
}

/// `ROOT/remote/sessions/<digest of identity, key, name>`: a client's copy of one context.
fn session_dir(root: &Path, identity: &str, key: &str, name: &str) -> Result<PathBuf> {
    let ok_name = name == "main"
        || name == "dockerfile"
        || name.strip_prefix("named:").is_some_and(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        });
    if !ok_name {
        bail!("protocol: bad context name {name:?}");
    }
    let digest = Sha256::new()
        .chain_update(identity)
        .chain_update([0])
        .chain_update(key)
        .chain_update([0])
        .chain_update(name)
        .finalize();
    Ok(root
        .join("remote/sessions")
        .join(hex::encode(&digest[..16])))
}

/// Locks a session directory for the whole build (a second build of the same context by
/// the same client waits), returning the lock and the tree's path.
fn lock_session(dir: &Path) -> Result<(std::fs::File, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::File::create(dir.join("lock"))
        .with_context(|| format!("locking {}", dir.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    Ok((lock, dir.join("tree")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_get_the_server_dest_and_refuse_a_client_one() {
        let d = Path::new("/s/out0");
        assert_eq!(
            output_with_dest("type=local", d).unwrap(),
            "type=local,dest=/s/out0"
        );
        assert_eq!(
            output_with_dest("type=tar,dest=-", d).unwrap(),
            "type=tar,dest=-"
        );
        assert!(output_with_dest("type=local,dest=/etc", d).is_err());
        assert!(output_with_dest("type=image,name=x", d).is_ok());
    }

    #[test]
    fn forwarded_credentials_keep_only_auths() {
        let sent =
            br#"{"auths":{"r":{"auth":"dTpw"}},"credsStore":"evil","credHelpers":{"r":"evil"}}"#;
        let kept: serde_json::Value = serde_json::from_str(&only_auths(sent).unwrap()).unwrap();
        assert_eq!(kept, serde_json::json!({"auths": {"r": {"auth": "dTpw"}}}));
        assert!(only_auths(b"not json").is_err());
    }

    #[test]
    fn local_caches_and_ungranted_entitlements_are_refused() {
        let config = Config::default();
        assert!(check_flag_value("cache-to", "type=local,dest=/", &config).is_err());
        assert!(check_flag_value("cache-from", "type=registry,ref=r/x", &config).is_ok());
        assert!(check_flag_value("allow", "security.insecure", &config).is_err());
    }

    #[test]
    fn context_names_cannot_escape_the_sessions_directory() {
        let root = Path::new("/r");
        assert!(session_dir(root, "id", "k", "../x").is_err());
        assert!(
            session_dir(root, "id", "k", "named:../../x").is_err() || {
                // Allowed characters still give a digest-named directory.
                session_dir(root, "id", "k", "named:../../x")
                    .unwrap()
                    .starts_with("/r/remote/sessions")
            }
        );
        assert!(session_dir(root, "id", "k", "main")
            .unwrap()
            .starts_with("/r/remote/sessions"));
    }
}
