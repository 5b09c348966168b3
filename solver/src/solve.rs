//! Walks a build graph: computes cache keys, reuses cached results, and runs
//! independent vertices concurrently.

use crate::chmod::ModeSpec;
use crate::context::{index_context, write_atomic, ContextIndex, LocalSource};
use crate::fileop::{self, CopyOptions, Owner, SourceTree};
use crate::graph::{Definition, ExecOp, FileAction, FileOp, NetworkMode, Op, Vertex};
use crate::mounts::ExecConfig;
use crate::multi::MultiSolveOutput;
use crate::patterns::PatternMatcher;
use crate::progress::{now, Event, Progress};
use anyhow::{anyhow, bail, Context as _, Result};
use executor::{CancelToken, ExecSpec, Executor};
use exporter::{ImageStore, LayerBlob};
use oci::image::{Descriptor, ImageConfig, Manifest, Platform};
use oci::reference::Reference;
use sha2::{Digest as _, Sha256};
use snapshotter::{ContentStore, Snapshotter};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) const LABEL_LAYER_DIGEST: &str = "builder.layer.digest";
pub(crate) const LABEL_LAYER_DIFF_ID: &str = "builder.layer.diffid";
const LABEL_LAYER_MEDIA_TYPE: &str = "builder.layer.mediatype";
const LABEL_LAYER_SIZE: &str = "builder.layer.size";
/// Set on snapshots whose layer blob this builder made (not unpacked from a base image).
const LABEL_LAYER_BUILT: &str = "builder.layer.built";

/// The result of one vertex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ref {
    /// An empty filesystem.
    Scratch,
    /// A committed snapshot.
    Snapshot(String),
    /// A client directory, by name.
    Local(String),
}

/// Why a solve failed, and at which vertex.
#[derive(Debug)]
pub struct SolveError {
    pub vertex: Option<usize>,
    pub error: anyhow::Error,
}

impl std::fmt::Display for SolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for SolveError {}

/// What a solve produced.
#[derive(Debug)]
pub struct SolveOutput {
    pub output: Ref,
    /// Vertices that really ran.
    pub executed: usize,
    /// Vertices answered from the cache.
    pub cached: usize,
    /// Each vertex's result and cache key (None for vertices the output does not need).
    pub results: Vec<Option<(Ref, String)>>,
}

/// Everything a solver needs from its surroundings.
pub struct SolverConfig {
    pub root: PathBuf,
    pub executor: Executor,
    pub locals: HashMap<String, Arc<dyn LocalSource>>,
    pub no_cache: bool,
    pub progress: Progress,
    /// Secrets, SSH agents and failure handling for exec ops.
    pub exec: ExecConfig,
    /// What the build's image export asks of built layers: layers made before the export
    /// (a copy stacked on a base, made as a blob) are made this way, so the export reuses them.
    pub layer_export: exporter::LayerExportOptions,
}

pub struct Solver {
    pub(crate) root: PathBuf,
    pub content: ContentStore,
    pub snapshots: Snapshotter,
    pub images: ImageStore,
    pub(crate) executor: Executor,
    locals: HashMap<String, Arc<dyn LocalSource>>,
    no_cache: bool,
    pub(crate) progress: Progress,
    indexes: Mutex<HashMap<String, Arc<ContextIndex>>>,
    /// Held while a layer's blob is being made, so it is made once.
    layer_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    runtime: tokio::runtime::Handle,
    cache: crate::cache::CacheState,
    pub(crate) exec_config: ExecConfig,
    layer_export: exporter::LayerExportOptions,
    /// Entries of the layers made as blobs in this process, for the stacking check.
    blob_listings: Mutex<HashMap<String, Arc<Vec<crate::rebase::LayerEntry>>>>,
    /// `--pull`: base images named by tag are resolved against their registry even when
    /// the store has the tag.
    pull_always: bool,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// A name unique to this process and moment, for temporary snapshots and mount points.
pub(crate) fn unique(prefix: &str) -> String {
    let n = NONCE.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{:x}", std::process::id(), t & 0xffff_ffff)
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Each output must be a valid root of `def` (no cycles, inputs in range).
fn validate_outputs(def: &Definition, outputs: &[usize]) -> Result<(), SolveError> {
    let mut checked = def.clone();
    for &o in outputs {
        checked.output = Some(o);
        checked.validate().map_err(|e| SolveError {
            vertex: None,
            error: anyhow!(e),
        })?;
    }
    Ok(())
}

/// For each needed vertex, how many distinct inputs it waits for; for each vertex, the
/// needed vertices that wait for it.
fn dependency_counts(def: &Definition, needed: &[usize]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n = def.vertices.len();
    let mut pending: Vec<usize> = vec![0; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &i in needed {
        let mut inputs = def.vertices[i].inputs.clone();
        inputs.sort_unstable();
        inputs.dedup();
        pending[i] = inputs.len();
        for j in inputs {
            dependents[j].push(i);
        }
    }
    (pending, dependents)
}

/// Steps run and steps answered from the cache.
#[derive(Default)]
struct StepTally {
    executed: usize,
    cached: usize,
}

impl StepTally {
    /// Counts what progress shows as steps, not the empty tree, the context or the
    /// stacking of a rebased copy.
    fn count(&mut self, op: &Op, was_cached: bool) {
        if matches!(op, Op::Scratch | Op::Local { .. } | Op::Rebase) {
            return;
        }
        if was_cached {
            self.cached += 1;
        } else {
            self.executed += 1;
        }
    }
}

/// Removes a mount point and its mount when dropped, so errors never leak mounts.
pub(crate) struct MountGuard(pub(crate) PathBuf);

impl MountGuard {
    pub(crate) fn mount(root: &Path, mounts: &[snapshotter::Mount]) -> Result<Self> {
        let dir = root.join("tmp").join(unique("mnt"));
        std::fs::create_dir_all(&dir)?;
        snapshotter::mount_all(mounts, &dir)
            .with_context(|| format!("mounting {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Unmounts now and reports failure; in mountless mode this is when a writable view's
    /// changes are written to its snapshot.
    pub(crate) fn release(mut self) -> Result<()> {
        let dir = std::mem::take(&mut self.0);
        snapshotter::unmount(&dir).with_context(|| format!("unmounting {}", dir.display()))?;
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = snapshotter::unmount(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A read-only view of a committed snapshot mounted on the host; unmounted, then removed,
/// when dropped.
pub(crate) struct MountedView {
    mount: MountGuard,
    _view: crate::mounts::TempSnapshot,
}

impl MountedView {
    pub(crate) fn path(&self) -> &Path {
        &self.mount.0
    }
}

impl Solver {
    /// Mounts a read-only view of the committed snapshot `snapshot`.
    pub(crate) fn mount_view(&self, snapshot: &str) -> Result<MountedView> {
        let key = unique("view");
        let mounts = self.snapshots.view(&key, snapshot)?;
        let view = crate::mounts::TempSnapshot {
            snapshots: self.snapshots.clone(),
            key,
        };
        let mount = MountGuard::mount(&self.root, &mounts)?;
        Ok(MountedView { mount, _view: view })
    }

    /// Opens the stores under `cfg.root`. Must be called inside a tokio runtime.
    pub fn new(cfg: SolverConfig) -> Result<Self> {
        let content = ContentStore::open(&cfg.root)?;
        let snapshots = Snapshotter::open(&cfg.root)?;
        let blobs = content.clone();
        snapshots.set_unpacker(Arc::new(move |info, dir| {
            unpack_own_layer(&blobs, info, dir).map_err(|e| format!("{e:#}"))
        }));
        let images = ImageStore::open(&cfg.root, content.clone())?;
        let solver = Self {
            root: cfg.root,
            content,
            snapshots,
            images,
            executor: cfg.executor,
            locals: cfg.locals,
            no_cache: cfg.no_cache,
            progress: cfg.progress,
            indexes: Mutex::new(HashMap::new()),
            layer_locks: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            cache: Default::default(),
            exec_config: cfg.exec,
            layer_export: cfg.layer_export,
            blob_listings: Default::default(),
            pull_always: false,
        };
        solver.remove_stale_snapshots();
        crate::mounts::sweep_stale(&solver.root);
        Ok(solver)
    }

    /// `--pull`: re-resolve tagged base images against their registry.
    pub fn with_pull_always(mut self, pull: bool) -> Self {
        self.pull_always = pull;
        self
    }

    pub(crate) fn cache_state(&self) -> &crate::cache::CacheState {
        &self.cache
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Removes temporary snapshots left by processes that died (kill -9).
    fn remove_stale_snapshots(&self) {
        let Ok(all) = self.snapshots.walk() else {
            return;
        };
        for info in all {
            if info.kind == snapshotter::Kind::Committed {
                continue;
            }
            let pid = info
                .key
                .split('-')
                .nth(1)
                .and_then(|p| p.parse::<i32>().ok());
            if let Some(pid) = pid {
                if pid != std::process::id() as i32 && !Path::new(&format!("/proc/{pid}")).exists()
                {
                    let _ = self.snapshots.remove(&info.key);
                }
            }
        }
    }

    /// Looks an image up in the local store, pulling it if absent; returns the
    /// reference pinned to the platform manifest digest, and its config.
    pub async fn resolve_image(
        &self,
        reference: &str,
        platform: &str,
    ) -> Result<(String, ImageConfig)> {
        let r = Reference::parse(reference)
            .map_err(|e| anyhow!("invalid image reference {reference:?}: {e}"))?;
        let platform: Platform = platform
            .parse()
            .map_err(|e| anyhow!("invalid platform {platform:?}: {e:?}"))?;
        let stored = r.digest.as_deref().filter(|d| self.content.has(d));
        let local = if self.pull_always && r.digest.is_none() {
            None
        } else {
            self.images.resolve(&r.full_name())?
        };
        let target = match local {
            Some(d) => d,
            // Pinned to something already in the store (e.g. loaded from an OCI layout).
            None if stored.is_some() => self.stored_descriptor(stored.unwrap_or_default())?,
            None => {
                let client = distribution::RegistryClient::new();
                let d = client
                    .pull(&r, &platform, &self.content)
                    .await
                    .map_err(|e| match self.pull_always {
                        true => anyhow!("pulling {} (--pull) failed: {e}", r.familiar_name()),
                        false => anyhow!(
                            "{} not found locally, and pulling it failed: {e}",
                            r.familiar_name()
                        ),
                    })?;
                if r.digest.is_none() {
                    self.images.tag(&r.full_name(), &d)?;
                }
                d
            }
        };
        let (manifest, _, config) = self.images.load_image(&target, &platform)?;
        let pinned = format!(
            "{}@{}",
            Reference { digest: None, ..r }.full_name(),
            manifest.digest
        );
        Ok((pinned, config))
    }

    /// The descriptor of a manifest or index in the content store, its media type read
    /// from the document itself.
    fn stored_descriptor(&self, digest: &str) -> Result<Descriptor> {
        let bytes = self.content.read_blob(digest)?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {digest} as a manifest or index"))?;
        let media_type = doc["mediaType"]
            .as_str()
            .ok_or_else(|| anyhow!("{digest} has no mediaType"))?;
        Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
    }

    fn local(&self, name: &str) -> Result<Arc<dyn LocalSource>> {
        self.locals
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("no local directory named {name:?} was provided"))
    }

    pub(crate) fn context_index(&self, name: &str) -> Result<Arc<ContextIndex>> {
        let mut map = self
            .indexes
            .lock()
            .map_err(|_| anyhow!("context index lock poisoned"))?;
        if let Some(idx) = map.get(name) {
            return Ok(idx.clone());
        }
        let src = self.local(name)?;
        let key = sha256_hex(&[name.as_bytes(), src.root().as_os_str().as_encoded_bytes()]);
        let cache = self
            .root
            .join("cache")
            .join("stat")
            .join(format!("{}.bin", &key[7..]));
        let idx = Arc::new(index_context(src.as_ref(), Some(&cache))?);
        map.insert(name.to_string(), idx.clone());
        Ok(idx)
    }

    fn cache_index_path(&self, key: &str) -> PathBuf {
        self.root
            .join("cache")
            .join("keys")
            .join(key.trim_start_matches("sha256:"))
    }

    fn cache_lookup(&self, key: &str) -> Option<String> {
        let name = std::fs::read_to_string(self.cache_index_path(key)).ok()?;
        let info = self.snapshots.stat(&name).ok()?;
        (info.kind == snapshotter::Kind::Committed).then(|| {
            crate::gc::mark_used(&self.cache_index_path(key));
            name
        })
    }

    fn cache_record(&self, key: &str, snapshot: &str) -> Result<()> {
        write_atomic(&self.cache_index_path(key), snapshot.as_bytes())?;
        Ok(())
    }

    /// Solves the output of `def` (and only what it needs).
    pub async fn solve(
        self: &Arc<Self>,
        def: &Definition,
        cancel: &CancelToken,
    ) -> Result<SolveOutput, SolveError> {
        def.validate().map_err(|e| SolveError {
            vertex: None,
            error: anyhow!(e),
        })?;
        let outputs: Vec<usize> = def.output.into_iter().collect();
        let mut solved = self.solve_outputs(def, &outputs, cancel).await?;
        Ok(SolveOutput {
            output: solved.outputs.remove(0),
            executed: solved.executed,
            cached: solved.cached,
            results: solved.results,
        })
    }

    /// Solves several vertices of `def` in one walk (a multi-platform build's per-platform
    /// outputs), so vertices they share run once; `def.output` is ignored.
    pub async fn solve_outputs(
        self: &Arc<Self>,
        def: &Definition,
        outputs: &[usize],
        cancel: &CancelToken,
    ) -> Result<MultiSolveOutput, SolveError> {
        validate_outputs(def, outputs)?;
        let def = Arc::new(def.clone());
        let needed = def.reachable_from(outputs);
        let (mut pending, dependents) = dependency_counts(&def, &needed);
        let mut results: Vec<Option<(Ref, String)>> = vec![None; def.vertices.len()];
        let mut tally = StepTally::default();
        let mut set = tokio::task::JoinSet::new();
        let mut first_error: Option<SolveError> = None;
        let as_blob = Arc::new(self.layers_made_as_blobs(&def, &needed, &dependents));

        let spawn = |set: &mut tokio::task::JoinSet<_>,
                     i: usize,
                     results: &[Option<(Ref, String)>]| {
            let inputs: Vec<(Ref, String)> = def.vertices[i]
                .inputs
                .iter()
                .map(|&j| results[j].clone().expect("inputs solved first"))
                .collect();
            let this = self.clone();
            let def = def.clone();
            let cancel = cancel.clone();
            let as_blob = as_blob[i];
            set.spawn_blocking(move || (i, this.run_vertex(&def, i, &inputs, as_blob, &cancel)));
        };
        for &i in &needed {
            if pending[i] == 0 {
                spawn(&mut set, i, &results);
            }
        }
        while let Some(joined) = set.join_next().await {
            let (i, res) = match joined {
                Ok(x) => x,
                Err(e) => {
                    cancel.cancel();
                    first_error.get_or_insert(SolveError {
                        vertex: None,
                        error: anyhow!("build step panicked: {e}"),
                    });
                    continue;
                }
            };
            match res {
                Ok((r, key, was_cached)) => {
                    tally.count(&def.vertices[i].op, was_cached);
                    if !was_cached {
                        self.export_early_if_stacked(&def, i, &dependents[i], &r);
                    }
                    results[i] = Some((r, key));
                    if first_error.is_some() {
                        continue;
                    }
                    for &d in &dependents[i] {
                        pending[d] -= 1;
                        if pending[d] == 0 {
                            spawn(&mut set, d, &results);
                        }
                    }
                }
                Err(e) => {
                    // Stop siblings promptly (their containers are killed) but wait for
                    // them, so their temporary snapshots are cleaned up.
                    cancel.cancel();
                    if first_error.is_none() {
                        first_error = Some(SolveError {
                            vertex: Some(i),
                            error: e,
                        });
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let outputs = outputs
            .iter()
            .map(|&o| {
                results[o].clone().map(|r| r.0).ok_or_else(|| SolveError {
                    vertex: None,
                    error: anyhow!("output was not solved"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MultiSolveOutput {
            outputs,
            executed: tally.executed,
            cached: tally.cached,
            results,
        })
    }

    /// Compresses a fresh layer that a dependent stacks (`COPY --link`, a rebased copy)
    /// while the steps its stacking waits for still run.
    fn export_early_if_stacked(
        self: &Arc<Self>,
        def: &Definition,
        i: usize,
        dependents: &[usize],
        r: &Ref,
    ) {
        if self.layer_export.mtime_clamp.is_none()
            && self.layer_is_stacked_later(def, i, dependents)
        {
            let (this, r) = (self.clone(), r.clone());
            tokio::task::spawn_blocking(move || this.export_layers(&r));
        }
    }

    /// Whether vertex `i`'s layer will be stacked onto another tree by a dependent
    /// (`COPY --link` or a rebased copy), which needs its blob.
    fn layer_is_stacked_later(&self, def: &Definition, i: usize, dependents: &[usize]) -> bool {
        dependents.iter().any(|&d| {
            let v = &def.vertices[d];
            matches!(v.op, Op::Merge | Op::Rebase) && v.inputs.iter().skip(1).any(|&j| j == i)
        })
    }

    /// The file ops to make straight into a layer blob: copies onto an empty tree whose
    /// result is only ever stacked on a base and exported, never mounted. Their files then
    /// never touch the disk unless a later build runs a step on them.
    fn layers_made_as_blobs(
        &self,
        def: &Definition,
        needed: &[usize],
        dependents: &[Vec<usize>],
    ) -> Vec<bool> {
        let mut as_blob = vec![false; def.vertices.len()];
        if self.layer_export.mtime_clamp.is_some() {
            // The export rewrites every built layer anyway.
            return as_blob;
        }
        let mut memo = vec![None; def.vertices.len()];
        for &i in needed {
            let v = &def.vertices[i];
            let on_scratch = v
                .inputs
                .first()
                .is_some_and(|&j| matches!(def.vertices[j].op, Op::Scratch));
            as_blob[i] = matches!(v.op, Op::File(_))
                && on_scratch
                && self.layer_is_stacked_later(def, i, &dependents[i])
                && !tree_is_read(def, i, dependents, &mut memo);
        }
        as_blob
    }

    /// Computes the cache key of a vertex and produces its result, from the cache if possible.
    fn run_vertex(
        &self,
        def: &Definition,
        i: usize,
        inputs: &[(Ref, String)],
        as_blob: bool,
        cancel: &CancelToken,
    ) -> Result<(Ref, String, bool)> {
        if cancel.is_cancelled() {
            bail!("cancelled");
        }
        let v = &def.vertices[i];
        let name = v.name.clone();
        match &v.op {
            Op::Scratch => Ok((Ref::Scratch, "scratch".into(), true)),
            Op::Local { name: local } => {
                let key = self.run_step(i, &name, || {
                    Ok(self.context_index(local)?.checksum(&[String::new()]))
                })?;
                // Reading the context runs no step; it does not count as work done.
                Ok((Ref::Local(local.clone()), key, true))
            }
            Op::Image {
                reference,
                platform,
            } => self.run_image_vertex(i, name, reference, platform),
            Op::Exec(exec) => {
                let op_json = serde_json::to_vec(&v.op)?;
                let input_keys = self.exec_input_keys(exec, inputs)?;
                let mut parts: Vec<&[u8]> = vec![b"exec", &op_json];
                parts.extend(input_keys.iter().map(|k| k.as_bytes()));
                let key = sha256_hex(&parts);
                let _claim = crate::inflight::claim(&self.root, &key, cancel)?;
                self.cached_or_run(i, &name, &key, v.ignore_cache, inputs, || {
                    self.run_exec(i, exec, inputs, cancel)
                })
            }
            Op::File(file) => self.run_file_vertex(v, i, file, inputs, as_blob),
            Op::Rebase => {
                let (base, layer) = match inputs {
                    [base, layer, ..] => (base, layer),
                    _ => bail!("{name}: a rebase needs a base and a layer"),
                };
                let key = sha256_hex(&[b"rebase", base.1.as_bytes(), layer.1.as_bytes()]);
                // The copy itself was reported as the step; stacking it is bookkeeping.
                self.cached_or_run(i, "", &key, v.ignore_cache, inputs, || {
                    self.run_rebase(def, i, inputs)
                })
            }
            Op::Merge => {
                let mut parts: Vec<&[u8]> = vec![b"merge"];
                parts.extend(inputs.iter().map(|(_, k)| k.as_bytes()));
                let key = sha256_hex(&parts);
                self.cached_or_run(i, &name, &key, v.ignore_cache, inputs, || {
                    crate::merge::run_merge(self, inputs)
                })
            }
            Op::Http {
                url,
                filename,
                checksum,
            } => self.run_http_vertex(v, i, inputs, url, filename, checksum.as_deref()),
            Op::Git {
                remote,
                reference,
                subdir,
                keep_git_dir,
            } => {
                let resolved = crate::git::resolve(remote, reference.as_deref())?;
                let keep = if *keep_git_dir { remote.as_str() } else { "" };
                let key = sha256_hex(&[
                    b"git",
                    resolved.commit.as_bytes(),
                    subdir.as_deref().unwrap_or("").as_bytes(),
                    keep.as_bytes(),
                ]);
                self.cached_or_run(i, &name, &key, v.ignore_cache, inputs, || {
                    crate::git::checkout(self, remote, &resolved, subdir.as_deref(), *keep_git_dir)
                })
            }
        }
    }

    /// Pulls and unpacks a base image; its progress is the pull, or a cache hit.
    fn run_image_vertex(
        &self,
        i: usize,
        name: String,
        reference: &str,
        platform: &str,
    ) -> Result<(Ref, String, bool)> {
        let started = now();
        let (r, key, was_cached) = self.unpack_image(reference, platform)?;
        if was_cached {
            self.progress.send(Event::Cached {
                vertex: i,
                name,
                time: started,
            });
        } else {
            self.progress.send(Event::Started {
                vertex: i,
                name: name.clone(),
                time: started,
            });
            self.progress.send(Event::Completed {
                vertex: i,
                name,
                time: now(),
                error: None,
            });
        }
        Ok((r, key, was_cached))
    }

    /// A file op, keyed by its inputs' keys (a context input by the sources it reads).
    fn run_file_vertex(
        &self,
        v: &Vertex,
        i: usize,
        file: &FileOp,
        inputs: &[(Ref, String)],
        as_blob: bool,
    ) -> Result<(Ref, String, bool)> {
        let op_json = serde_json::to_vec(&v.op)?;
        let mut input_keys = Vec::new();
        for (n, (r, k)) in inputs.iter().enumerate() {
            input_keys.push(match r {
                Ref::Local(local) => self.local_sources_checksum(local, file, n)?,
                _ => k.clone(),
            });
        }
        let mut parts: Vec<&[u8]> = vec![b"file", &op_json];
        parts.extend(input_keys.iter().map(|k| k.as_bytes()));
        let key = sha256_hex(&parts);
        self.cached_or_run(i, &v.name, &key, v.ignore_cache, inputs, || {
            if as_blob {
                // Anything the staging area cannot hold (size, xattrs) is copied on disk.
                if let Ok(made) = self.run_file_as_blob(file, inputs) {
                    return Ok(made);
                }
            }
            self.run_file(file, inputs)
        })
    }

    /// A download. A pinned checksum is the key; otherwise the content is, so it is
    /// downloaded first (and dropped if the cache answers).
    fn run_http_vertex(
        &self,
        v: &Vertex,
        i: usize,
        inputs: &[(Ref, String)],
        url: &str,
        filename: &str,
        checksum: Option<&str>,
    ) -> Result<(Ref, String, bool)> {
        let (key, fetched) = match checksum {
            Some(c) => {
                crate::http::validate_checksum(c)?;
                (
                    sha256_hex(&[b"http", filename.as_bytes(), c.as_bytes()]),
                    None,
                )
            }
            None => {
                let f = crate::http::fetch(self, url, filename)?;
                let mtime = f.mtime.unwrap_or(-1).to_string();
                let key = sha256_hex(&[
                    b"http",
                    filename.as_bytes(),
                    f.digest.as_bytes(),
                    mtime.as_bytes(),
                ]);
                (key, Some(f))
            }
        };
        let unused = fetched.as_ref().map(|f| f.active.clone());
        let mut fetched = fetched;
        let res = self.cached_or_run(i, &v.name, &key, v.ignore_cache, inputs, || {
            let f = match fetched.take() {
                Some(f) => f,
                None => crate::http::fetch(self, url, filename)?,
            };
            crate::http::commit(self, f, url, checksum)
        });
        if let (Some(active), Some(_)) = (unused, fetched) {
            // Answered from the cache: the download was not needed.
            let _ = self.snapshots.remove(&active);
        }
        res
    }

    /// Reports a step's progress; steps without a name are internal and not shown.
    fn report(&self, event: Event) {
        let named = match &event {
            Event::Started { name, .. }
            | Event::Cached { name, .. }
            | Event::Completed { name, .. } => !name.is_empty(),
            _ => true,
        };
        if named {
            self.progress.send(event);
        }
    }

    /// Runs `work` as a step: reported started, then completed with its error, if any.
    fn run_step<T>(&self, i: usize, name: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
        self.report(Event::Started {
            vertex: i,
            name: name.to_string(),
            time: now(),
        });
        let res = work();
        self.report(Event::Completed {
            vertex: i,
            name: name.to_string(),
            time: now(),
            error: res.as_ref().err().map(|e| format!("{e:#}")),
        });
        res
    }

    fn cached_or_run(
        &self,
        i: usize,
        name: &str,
        key: &str,
        ignore_cache: bool,
        inputs: &[(Ref, String)],
        run: impl FnOnce() -> Result<String>,
    ) -> Result<(Ref, String, bool)> {
        if !self.no_cache && !ignore_cache {
            let hit = self
                .cache_lookup(key)
                .or_else(|| self.cache_lookup_imported(key));
            if let Some(snap) = hit {
                self.report(Event::Cached {
                    vertex: i,
                    name: name.to_string(),
                    time: now(),
                });
                return Ok((Ref::Snapshot(snap), key.to_string(), true));
            }
        }
        let snap = self.run_step(i, name, || {
            // Inputs known only from imported cache records are unpacked now that a step
            // needs them.
            inputs.iter().try_for_each(|(r, _)| self.materialize(r))?;
            run()
        })?;
        self.cache_record(key, &snap)?;
        Ok((Ref::Snapshot(snap), key.to_string(), false))
    }

    /// Checksum of the files a file op reads from the local input at position `input`.
    fn local_sources_checksum(&self, local: &str, file: &FileOp, input: usize) -> Result<String> {
        let idx = self.context_index(local)?;
        let src = SourceTree {
            root: &idx.root,
            index: Some(&idx),
        };
        let mut paths = Vec::new();
        // Sources copied with --exclude: checksums of only what they copy, so editing an
        // excluded file keeps the cache.
        let mut filtered = Vec::new();
        for a in &file.actions {
            if let FileAction::Copy {
                src_input,
                sources,
                exclude,
                ..
            } = a
            {
                if *src_input == input {
                    let matcher = PatternMatcher::new(exclude.iter().map(String::as_str))
                        .map_err(|(n, e)| anyhow!("invalid --exclude #{n}: {e}"))?;
                    for s in sources {
                        let m = src
                            .matches(s)
                            .map_err(|e| anyhow!("failed to compute cache key: {e}"))?;
                        if matcher.is_empty() {
                            paths.extend(m);
                        } else {
                            for rel in m {
                                filtered.push(fileop::checksum_excluding(&idx, &rel, &matcher));
                            }
                        }
                    }
                }
            }
        }
        let all = idx.checksum(&paths);
        if filtered.is_empty() {
            return Ok(all);
        }
        let mut parts: Vec<&[u8]> = vec![all.as_bytes()];
        parts.extend(filtered.iter().map(|k| k.as_bytes()));
        Ok(sha256_hex(&parts))
    }

    /// Makes sure an image's layers are unpacked as a snapshot chain; returns the top.
    ///
    /// The top's chain id (from the config's diff ids) is also the vertex's cache key, as in
    /// BuildKit: it names the filesystem, so it is the same on every machine and for every
    /// manifest (compression, tag, registry) carrying those layers.
    fn unpack_image(&self, reference: &str, platform: &str) -> Result<(Ref, String, bool)> {
        let r = Reference::parse(reference)
            .map_err(|e| anyhow!("invalid image reference {reference:?}: {e}"))?;
        let manifest_digest = match &r.digest {
            Some(d) => d.clone(),
            None => {
                let (pinned, _) = self
                    .runtime
                    .block_on(self.resolve_image(reference, platform))?;
                pinned
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_string())
                    .ok_or_else(|| anyhow!("unpinned image {pinned}"))?
            }
        };
        if !self.content.has(&manifest_digest) {
            let platform_parsed: Platform = platform
                .parse()
                .map_err(|e| anyhow!("invalid platform {platform:?}: {e:?}"))?;
            self.runtime
                .block_on(distribution::RegistryClient::new().pull(
                    &r,
                    &platform_parsed,
                    &self.content,
                ))
                .map_err(|e| anyhow!("pulling {reference}: {e}"))?;
        }
        let manifest: Manifest = serde_json::from_slice(&self.content.read_blob(&manifest_digest)?)
            .with_context(|| format!("reading manifest {manifest_digest}"))?;
        let config: ImageConfig =
            serde_json::from_slice(&self.content.read_blob(&manifest.config.digest)?)
                .with_context(|| format!("reading image config {}", manifest.config.digest))?;
        if manifest.layers.len() != config.rootfs.diff_ids.len() {
            bail!(
                "image {reference} has {} layers but {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            );
        }
        let layers: Vec<(Descriptor, String)> = manifest
            .layers
            .into_iter()
            .zip(config.rootfs.diff_ids)
            .collect();
        if let Some(top) = self.defer_unpack(&layers) {
            return Ok((Ref::Snapshot(top.clone()), top, false));
        }
        let (top, all_cached) = self.unpack_layers(&layers, true)?;
        // The key is the chain id whichever snapshot holds the files, so it stays the same
        // across stores.
        match (top, crate::cache::chain_id(layers.iter().map(|(_, d)| d))) {
            (Some(top), Some(chain)) => Ok((Ref::Snapshot(top), chain, all_cached)),
            _ => Ok((Ref::Scratch, "scratch".into(), all_cached)),
        }
    }

    /// Makes sure a layer stack (base first, blobs in the content store) is unpacked as a
    /// snapshot chain named by chain ids; returns the top and whether all of it existed.
    pub(crate) fn unpack_chain(
        &self,
        layers: &[(Descriptor, String)],
    ) -> Result<(Option<String>, bool)> {
        self.unpack_layers(layers, false)
    }

    /// [`Self::unpack_chain`]; with `reuse_built`, a layer this store built (a snapshot on the
    /// same parent with the same diff id) stands in for an unpacked copy of it, so running or
    /// building on a just-built image unpacks nothing. Returns the top snapshot's name.
    fn unpack_layers(
        &self,
        layers: &[(Descriptor, String)],
        reuse_built: bool,
    ) -> Result<(Option<String>, bool)> {
        let mut parent: Option<String> = None;
        let mut parent_chain: Option<String> = None;
        let mut all_cached = true;
        let mut built: Option<Vec<snapshotter::Info>> = None;
        for (layer, diff_id) in layers {
            let chain = match &parent_chain {
                None => diff_id.clone(),
                Some(p) => sha256_hex_plain(&format!("{p} {diff_id}")),
            };
            parent_chain = Some(chain.clone());
            if self.snapshots.exists(&chain) {
                parent = Some(chain);
                continue;
            }
            if reuse_built {
                let built = match &mut built {
                    Some(b) => b,
                    None => built.insert(
                        self.snapshots
                            .walk()?
                            .into_iter()
                            .filter(|i| {
                                i.kind == snapshotter::Kind::Committed
                                    && i.labels.contains_key(LABEL_LAYER_BUILT)
                            })
                            .collect(),
                    ),
                };
                let same = built.iter().find(|i| {
                    i.parent == parent
                        && i.labels.get(LABEL_LAYER_DIFF_ID).map(String::as_str) == Some(diff_id)
                });
                if let Some(same) = same {
                    parent = Some(same.key.clone());
                    continue;
                }
            }
            {
                all_cached = false;
                let active = unique("unpack");
                self.snapshots.prepare(&active, parent.as_deref())?;
                let res = (|| -> Result<()> {
                    let dir = self.snapshots.upper_dir(&active)?;
                    let reader = exporter::open_layer(&self.content, layer)?;
                    snapshotter::layer::apply_layer_tar(reader, &dir)
                        .with_context(|| format!("unpacking layer {}", layer.digest))?;
                    Ok(())
                })();
                if let Err(e) = res {
                    let _ = self.snapshots.remove(&active);
                    return Err(e);
                }
                match self.snapshots.commit(&chain, &active) {
                    Ok(()) => {}
                    Err(snapshotter::Error::AlreadyExists(_)) => {
                        let _ = self.snapshots.remove(&active);
                    }
                    Err(e) => return Err(e.into()),
                }
                self.label_layer(&chain, layer, diff_id)?;
            }
            parent = Some(chain);
        }
        Ok((parent, all_cached))
    }

    fn label_layer(&self, snapshot: &str, layer: &Descriptor, diff_id: &str) -> Result<()> {
        self.snapshots
            .set_labels(snapshot, layer_labels(layer, diff_id))?;
        Ok(())
    }

    fn parent_of(inputs: &[(Ref, String)]) -> Result<Option<String>> {
        match inputs.first() {
            None | Some((Ref::Scratch, _)) => Ok(None),
            Some((Ref::Snapshot(s), _)) => Ok(Some(s.clone())),
            Some((Ref::Local(n), _)) => {
                bail!("local directory {n:?} cannot be used as a root filesystem")
            }
        }
    }

    /// Commits an active snapshot under a fresh name.
    fn commit_new(&self, active: &str) -> Result<String> {
        let name = unique("layer");
        self.snapshots.commit(&name, active)?;
        Ok(name)
    }

    fn run_exec(
        &self,
        i: usize,
        exec: &ExecOp,
        inputs: &[(Ref, String)],
        cancel: &CancelToken,
    ) -> Result<String> {
        crate::inflight::count_exec_step();
        let parent = Self::parent_of(inputs)?;
        let active = unique("active");
        let mounts = self.snapshots.prepare(&active, parent.as_deref())?;
        let res = (|| -> Result<()> {
            let prepared = self.prepare_mounts(exec, inputs, cancel)?;
            // chroot isolation runs in a directory: a copy of the rootfs where nothing may
            // mount, whose changes reach the snapshot when it is released.
            let rootfs_dir = match self.executor.isolation() {
                executor::Isolation::Chroot => Some(MountGuard::mount(&self.root, &mounts)?),
                executor::Isolation::Oci => None,
            };
            let spec = ExecSpec {
                rootfs: match &rootfs_dir {
                    Some(dir) => vec![rootfs_bind(&dir.0)],
                    None => rootfs_mounts(&mounts),
                },
                mounts: prepared.mounts.clone(),
                args: exec.args.clone(),
                env: prepared.environment(&exec.env),
                cwd: exec.cwd.clone(),
                user: exec.user.clone(),
                network: match exec.network {
                    NetworkMode::Host => executor::Network::Host,
                    NetworkMode::None => executor::Network::None,
                },
                security: executor::Security {
                    privileged: exec.insecure,
                    ..Default::default()
                },
                extra_hosts: exec.extra_hosts.clone(),
                rlimits: exec
                    .ulimits
                    .iter()
                    .map(|u| executor::Rlimit {
                        name: u.name.clone(),
                        soft: u.soft,
                        hard: u.hard,
                    })
                    .collect(),
                shm_size: exec.shm_size,
                ..Default::default()
            };
            let progress = self.progress.clone();
            let mut on_output = |stream: executor::OutputStream, data: &[u8]| {
                let stream = match stream {
                    executor::OutputStream::Stdout => 1,
                    executor::OutputStream::Stderr => 2,
                };
                progress.send(Event::Log {
                    vertex: i,
                    stream,
                    data: String::from_utf8_lossy(data).into_owned(),
                });
            };
            let outcome = self
                .executor
                .run_tracked(&spec, cancel, &mut on_output)
                .map_err(|e| anyhow!("{e}"))?;
            let code = outcome.exit_code;
            if code != 0 {
                if self.exec_config.on_error_shell && !cancel.is_cancelled() {
                    self.debug_shell(&spec, cancel);
                }
                bail!(
                    "process {:?} did not complete successfully: exit code: {code}",
                    exec.args.join(" ")
                );
            }
            if let Some(dir) = rootfs_dir {
                dir.release()?;
            }
            let upper = self.snapshots.upper_dir(&active)?;
            executor::remove_stubs(&upper, &outcome.created);
            crate::mounts::prune_copied_up_dirs(
                &upper,
                &crate::mounts::lower_dirs(&mounts),
                &outcome.created,
            );
            Ok(())
        })();
        match res {
            Ok(()) => self.commit_new(&active),
            Err(e) => {
                let _ = self.snapshots.remove(&active);
                Err(e)
            }
        }
    }

    /// Applies a copy made on an empty tree (input 1) to the base (input 0): by stacking its
    /// layer when that is exact, else by running the copy again on the base.
    fn run_rebase(&self, def: &Definition, i: usize, inputs: &[(Ref, String)]) -> Result<String> {
        let layer_top = match &inputs[1].0 {
            Ref::Snapshot(s) => s.clone(),
            other => bail!("a rebase layer must be a snapshot, not {other:?}"),
        };
        let exact = match &inputs[0].0 {
            Ref::Scratch => true,
            Ref::Snapshot(base) => {
                let view = self.mount_view(base)?;
                self.stacks_exactly_on(view.path(), &layer_top)?
            }
            Ref::Local(n) => bail!("local directory {n:?} cannot be a base"),
        };
        if exact {
            return crate::merge::run_merge(self, &inputs[..2]);
        }
        let copy = &def.vertices[def.vertices[i].inputs[1]];
        let Op::File(file) = &copy.op else {
            bail!("a rebase layer must come from a file op");
        };
        let mut file_inputs = vec![inputs[0].clone()];
        file_inputs.extend(inputs[2..].iter().cloned());
        // The copy really runs again: show it as the step it is.
        self.run_step(i, &copy.name, || self.run_file(file, &file_inputs))
    }

    /// Whether stacking the layer of snapshot `layer` on the tree at `base` gives what copying
    /// onto it would.
    fn stacks_exactly_on(&self, base: &Path, layer: &str) -> Result<bool> {
        let info = self.snapshots.stat(layer)?;
        if !info.pending {
            let upper = self.snapshots.upper_dir(layer)?;
            return Ok(crate::rebase::stacks_exactly(base, &upper)?);
        }
        // Made as a blob: its listing, kept from making it or read from the blob.
        let known = self
            .blob_listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(layer)
            .cloned();
        let entries = match known {
            Some(listing) => listing,
            None => match self.layer_entries(&info)? {
                Some(listing) => Arc::new(listing),
                None => return Ok(false),
            },
        };
        Ok(crate::rebase::entries_stack_exactly(base, &entries)?)
    }

    /// The entries of a snapshot's own layer, read from its blob; None if the layer deletes
    /// anything (whiteouts), which stacking cannot be checked for.
    fn layer_entries(
        &self,
        info: &snapshotter::Info,
    ) -> Result<Option<Vec<crate::rebase::LayerEntry>>> {
        let layer = labelled_layer(&info.labels)
            .ok_or_else(|| anyhow!("snapshot {} names no layer blob", info.key))?;
        let mut archive = tar::Archive::new(exporter::open_layer(&self.content, &layer)?);
        let mut out = Vec::new();
        for entry in archive.entries()? {
            let entry = entry?;
            // Rebuilt from components: a directory's trailing slash would make lstat follow
            // a symlink of the base at that path.
            let path: PathBuf = entry.path()?.components().collect();
            if path
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b".wh."))
            {
                return Ok(None);
            }
            let header = entry.header();
            out.push(crate::rebase::LayerEntry {
                path,
                is_dir: header.entry_type().is_dir(),
                mode: header.mode()? & 0o7777,
                uid: header.uid()? as u32,
                gid: header.gid()? as u32,
            });
        }
        Ok(Some(out))
    }

    fn run_file(&self, file: &FileOp, inputs: &[(Ref, String)]) -> Result<String> {
        let parent = Self::parent_of(inputs)?;
        let active = unique("active");
        let mounts = self.snapshots.prepare(&active, parent.as_deref())?;
        let res = (|| -> Result<()> {
            let upper = self.snapshots.upper_dir(&active)?;
            let mut dest = FileDest::Overlay {
                view: MountGuard::mount(&self.root, &mounts)?,
                mounts: mounts.clone(),
                upper,
            };
            self.apply_file_actions(file, inputs, &mut dest)?;
            if let FileDest::Overlay { view, .. } = dest {
                view.release()?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => self.commit_new(&active),
            Err(e) => {
                let _ = self.snapshots.remove(&active);
                Err(e)
            }
        }
    }

    /// Runs a file op on an empty tree in a tmpfs and keeps only its layer blob: the result
    /// is a pending snapshot whose files are unpacked only if something reads them.
    fn run_file_as_blob(&self, file: &FileOp, inputs: &[(Ref, String)]) -> Result<String> {
        let staging = crate::staging::Tmpfs::mount(&self.root)?;
        let mut dest = FileDest::Plain(staging.path().to_path_buf());
        self.apply_file_actions(file, inputs, &mut dest)?;
        let compression = self.layer_export.compression;
        let blob = exporter::write_layer_with(&self.content, &compression, &mut |w| {
            snapshotter::layer::write_diff_tar(staging.path(), w, &Default::default())
                .map_err(std::io::Error::other)
        })?;
        let name = unique("layer");
        let mut labels = layer_labels(&blob.descriptor, &blob.diff_id);
        labels.insert(LABEL_LAYER_BUILT.into(), "1".into());
        self.snapshots.create_pending(&name, None, labels)?;
        // Listing the staged tree now spares the stacking check a read of the whole blob.
        let listing = crate::rebase::tree_entries(staging.path())?;
        self.blob_listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), Arc::new(listing));
        Ok(name)
    }

    /// Applies a file op's actions to `dest`.
    fn apply_file_actions(
        &self,
        file: &FileOp,
        inputs: &[(Ref, String)],
        dest: &mut FileDest,
    ) -> Result<()> {
        // Source views stay mounted across actions; dropped (even on error) at the end.
        let mut views: HashMap<usize, MountedView> = HashMap::new();
        for action in &file.actions {
            match action {
                FileAction::Copy {
                    src_input,
                    sources,
                    dest: to,
                    chown,
                    chmod,
                    exclude,
                    parents,
                    unpack,
                } => {
                    let owner = fileop::resolve_owner_opt(dest.path(), chown.as_ref())?;
                    let opts = CopyOptions {
                        owner,
                        chmod: chmod.as_deref().map(ModeSpec::parse).transpose()?,
                        exclude: PatternMatcher::new(exclude.iter().map(String::as_str))
                            .map_err(|(n, e)| anyhow!("invalid --exclude #{n}: {e}"))?,
                        parents: *parents,
                        unpack: *unpack,
                        direct_upper: dest.direct_upper(),
                    };
                    let wrote_direct = match inputs.get(*src_input) {
                        Some((Ref::Local(local), _)) => {
                            let idx = self.context_index(local)?;
                            let src = SourceTree {
                                root: &idx.root,
                                index: Some(&idx),
                            };
                            fileop::copy(&src, sources, dest.path(), to, &opts)?
                        }
                        Some((Ref::Snapshot(snap), _)) => {
                            if !views.contains_key(src_input) {
                                views.insert(*src_input, self.mount_view(snap)?);
                            }
                            let src = SourceTree {
                                root: views[src_input].path(),
                                index: None,
                            };
                            fileop::copy(&src, sources, dest.path(), to, &opts)?
                        }
                        Some((Ref::Scratch, _)) => {
                            let empty = tempfile::tempdir()?;
                            let src = SourceTree {
                                root: empty.path(),
                                index: None,
                            };
                            fileop::copy(&src, sources, dest.path(), to, &opts)?
                        }
                        None => bail!("copy source input {src_input} does not exist"),
                    };
                    if wrote_direct {
                        dest.refresh(&self.root)?;
                    }
                }
                FileAction::Mkdir { path, mode, chown } => {
                    let owner = fileop::resolve_owner_opt(dest.path(), chown.as_ref())?;
                    fileop::make_dir(dest.path(), path, *mode, owner)?;
                }
                FileAction::Mkfile {
                    path,
                    data,
                    mode,
                    chown,
                } => {
                    let owner = fileop::resolve_owner_opt(dest.path(), chown.as_ref())?;
                    fileop::make_file(dest.path(), path, data, *mode, owner)?;
                }
            }
        }
        Ok(())
    }

    /// When each layer of a result was made (base first), as RFC 3339; None where unknown
    /// (results known only from an imported cache). A cached step keeps its time, so a
    /// rebuild from cache gives the same image config, as with BuildKit.
    pub fn layer_times(&self, r: &Ref) -> Result<Vec<Option<String>>> {
        let Ref::Snapshot(top) = r else {
            return Ok(Vec::new());
        };
        if let Some(layers) = self.lazy_layers(top)? {
            return Ok(vec![None; layers.len()]);
        }
        let mut times = Vec::new();
        let mut cur = Some(top.clone());
        while let Some(key) = cur {
            let info = self.snapshots.stat(&key)?;
            cur = info.parent;
            times.push(Some(exporter::format_rfc3339(info.created as i64)));
        }
        times.reverse();
        Ok(times)
    }

    /// The layers of a result, base first, creating (and remembering) gzip blobs for built
    /// snapshots.
    pub fn export_layers(&self, r: &Ref) -> Result<Vec<LayerBlob>> {
        let options = exporter::LayerExportOptions {
            compression: self.layer_export.compression,
            mtime_clamp: None,
        };
        self.export_layers_with(r, &options)
    }

    /// The layers of a result for an export with `options` (compression, timestamps).
    ///
    /// Layers built here are (re)written in the requested compression; layers from base images
    /// keep theirs unless `force-compression` is set, as in BuildKit. With a timestamp clamp,
    /// built layers are rewritten and not remembered (their blob depends on the clamp).
    pub fn export_layers_with(
        &self,
        r: &Ref,
        options: &exporter::LayerExportOptions,
    ) -> Result<Vec<LayerBlob>> {
        let Ref::Snapshot(top) = r else {
            return match r {
                Ref::Scratch => Ok(Vec::new()),
                _ => bail!("a local directory cannot be exported as an image"),
            };
        };
        // Results known only from an imported cache keep the blobs the cache has.
        if let Some(layers) = self.lazy_layers(top)? {
            return Ok(layers);
        }
        let mut chain = Vec::new();
        let mut cur = Some(top.clone());
        while let Some(key) = cur {
            let info = self.snapshots.stat(&key)?;
            cur = info.parent.clone();
            chain.push(info);
        }
        chain.reverse();
        let wanted = options.compression.kind;
        let mut out = Vec::new();
        for info in chain {
            // One export per layer at a time: an early export may still be compressing it.
            let lock = self
                .layer_locks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(info.key.clone())
                .or_default()
                .clone();
            let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
            let info = self.snapshots.stat(&info.key)?;
            let l = &info.labels;
            let built = l.get(LABEL_LAYER_BUILT).is_some();
            let stored = match (
                l.get(LABEL_LAYER_DIGEST),
                l.get(LABEL_LAYER_DIFF_ID),
                l.get(LABEL_LAYER_MEDIA_TYPE),
                l.get(LABEL_LAYER_SIZE),
            ) {
                (Some(d), Some(diff), Some(mt), Some(size)) if self.content.has(d) => {
                    Some(LayerBlob {
                        descriptor: Descriptor {
                            media_type: mt.clone(),
                            digest: d.clone(),
                            size: size.parse().unwrap_or(0),
                            ..Default::default()
                        },
                        diff_id: diff.clone(),
                    })
                }
                _ => None,
            };
            let stored_kind = stored
                .as_ref()
                .and_then(|b| exporter::CompressionKind::of_media_type(&b.descriptor.media_type));
            if let Some(blob) = stored {
                let from_base_image = !built;
                if stored_kind == Some(wanted) && (options.mtime_clamp.is_none() || from_base_image)
                {
                    out.push(blob);
                    continue;
                }
                if info.pending && options.mtime_clamp.is_none() {
                    // Not unpacked: recompress the blob rather than unpack and re-tar it.
                    let blob = exporter::recompress_layer(
                        &self.content,
                        &blob.descriptor,
                        &options.compression,
                    )?;
                    self.label_layer(&info.key, &blob.descriptor, &blob.diff_id)?;
                    out.push(blob);
                    continue;
                }
                if from_base_image {
                    out.push(if options.compression.force {
                        exporter::recompress_layer(
                            &self.content,
                            &blob.descriptor,
                            &options.compression,
                        )?
                    } else {
                        blob
                    });
                    continue;
                }
            }
            let upper = self.snapshots.upper_dir(&info.key)?;
            let diff_options = snapshotter::layer::DiffOptions {
                mtime_clamp: options.mtime_clamp,
                lower_dirs: snapshotter::layer::lower_dirs_from_mounts(
                    &self.snapshots.mounts(&info.key)?,
                    &upper,
                ),
                ..Default::default()
            };
            let blob = exporter::write_layer_with(&self.content, &options.compression, &mut |w| {
                snapshotter::layer::write_diff_tar(&upper, w, &diff_options)
                    .map_err(std::io::Error::other)
            })?;
            if options.mtime_clamp.is_none() {
                self.label_layer(&info.key, &blob.descriptor, &blob.diff_id)?;
                self.snapshots
                    .set_label(&info.key, LABEL_LAYER_BUILT, "1")?;
            }
            out.push(blob);
        }
        Ok(out)
    }

    /// Copies the whole filesystem of a result into `dest`, owners kept.
    pub fn export_local(&self, r: &Ref, dest: &Path) -> Result<()> {
        self.export_local_owned(r, dest, None)
    }

    /// [`Solver::export_local`], every entry owned by `owner` when given (BuildKit's
    /// `--output type=local` gives the files to the user receiving them).
    pub fn export_local_owned(&self, r: &Ref, dest: &Path, owner: Option<Owner>) -> Result<()> {
        let opts = CopyOptions {
            owner,
            ..Default::default()
        };
        std::fs::create_dir_all(dest)?;
        self.materialize(r)?;
        match r {
            Ref::Scratch => Ok(()),
            Ref::Local(name) => {
                let idx = self.context_index(name)?;
                let src = SourceTree {
                    root: &idx.root,
                    index: Some(&idx),
                };
                fileop::copy(&src, &[".".into()], dest, "/", &opts).map(drop)
            }
            Ref::Snapshot(snap) => {
                let view = self.mount_view(snap)?;
                let src = SourceTree {
                    root: view.path(),
                    index: None,
                };
                fileop::copy(&src, &[".".into()], dest, "/", &opts).map(drop)
            }
        }
    }
}

/// A snapshot's mounts as the executor's root filesystem mounts.
pub fn rootfs_mounts(mounts: &[snapshotter::Mount]) -> Vec<executor::Mount> {
    mounts
        .iter()
        .map(|m| executor::Mount {
            fstype: m.fstype.clone(),
            source: m.source.clone(),
            target: "/".into(),
            options: m.options.clone(),
        })
        .collect()
}

/// A directory as the executor's root filesystem.
fn rootfs_bind(dir: &Path) -> executor::Mount {
    executor::Mount {
        fstype: "bind".into(),
        source: dir.to_string_lossy().into_owned(),
        target: "/".into(),
        options: vec!["rbind".into(), "rw".into()],
    }
}

fn sha256_hex_plain(s: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(s.as_bytes())))
}

/// Where a file op writes: an overlay mount of the active snapshot (with its upper dir, which
/// copies may write directly), or a plain directory.
enum FileDest {
    Overlay {
        view: MountGuard,
        mounts: Vec<snapshotter::Mount>,
        upper: PathBuf,
    },
    Plain(PathBuf),
}

impl FileDest {
    fn path(&self) -> &Path {
        match self {
            FileDest::Overlay { view, .. } => &view.0,
            FileDest::Plain(dir) => dir,
        }
    }

    fn upper(&self) -> &Path {
        match self {
            FileDest::Overlay { upper, .. } => upper,
            FileDest::Plain(dir) => dir,
        }
    }

    /// Where copies may write straight to the layer; not under a copied (mountless) view,
    /// whose changes are found by diffing it.
    fn direct_upper(&self) -> Option<PathBuf> {
        match self {
            FileDest::Overlay { .. } if snapshotter::mountless() => None,
            _ => Some(self.upper().to_path_buf()),
        }
    }

    /// After a write straight to the upper dir, overlay must be remounted to see it.
    fn refresh(&mut self, root: &Path) -> Result<()> {
        if let FileDest::Overlay { view, mounts, .. } = self {
            let fresh = MountGuard::mount(root, mounts)?;
            // The old mount goes (unmounted on drop) once the new one is up.
            drop(std::mem::replace(view, fresh));
        }
        Ok(())
    }
}

/// The labels naming a snapshot's own layer blob.
fn layer_labels(layer: &Descriptor, diff_id: &str) -> std::collections::BTreeMap<String, String> {
    [
        (LABEL_LAYER_DIGEST, layer.digest.clone()),
        (LABEL_LAYER_MEDIA_TYPE, layer.media_type.clone()),
        (LABEL_LAYER_SIZE, layer.size.to_string()),
        (LABEL_LAYER_DIFF_ID, diff_id.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The layer blob a snapshot's labels name, if they name one.
pub(crate) fn labelled_layer(
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<Descriptor> {
    Some(Descriptor {
        media_type: labels.get(LABEL_LAYER_MEDIA_TYPE)?.clone(),
        digest: labels.get(LABEL_LAYER_DIGEST)?.clone(),
        size: labels.get(LABEL_LAYER_SIZE)?.parse().ok()?,
        ..Default::default()
    })
}

/// Fills `dir` with the files of the pending snapshot `info` from its layer blob.
fn unpack_own_layer(content: &ContentStore, info: &snapshotter::Info, dir: &Path) -> Result<()> {
    let layer = labelled_layer(&info.labels)
        .ok_or_else(|| anyhow!("snapshot {} names no layer blob", info.key))?;
    let reader = exporter::open_layer(content, &layer)?;
    snapshotter::layer::apply_layer_tar(reader, dir)
        .with_context(|| format!("unpacking layer {}", layer.digest))?;
    Ok(())
}

/// Whether anything reads the files of vertex `i`'s result (mounts it, copies from it, runs
/// on it), looking through the stacking ops that only pass layers on.
fn tree_is_read(
    def: &Definition,
    i: usize,
    dependents: &[Vec<usize>],
    memo: &mut Vec<Option<bool>>,
) -> bool {
    if let Some(known) = memo[i] {
        return known;
    }
    // Cycles cannot occur (validated graph); mark to be safe against deep recursion on revisits.
    memo[i] = Some(true);
    let read = dependents[i].iter().any(|&d| {
        let v = &def.vertices[d];
        match v.op {
            // A rebase reads its base (the stacking check) and a fallback copy's sources.
            Op::Rebase => {
                v.inputs.iter().position(|&j| j == i) != Some(1)
                    || tree_is_read(def, d, dependents, memo)
            }
            Op::Merge => tree_is_read(def, d, dependents, memo),
            _ => true,
        }
    });
    memo[i] = Some(read);
    read
}
