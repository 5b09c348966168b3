//! The worker: what ops run against. It holds the stores (content, snapshots, images),
//! the executor, the build's local sources with their indexes, imported caches and the
//! progress channel, and knows how to mount, export and materialise results. It knows
//! nothing of the build graph: scheduling is `solve`'s, and each op is an `ops` module.

use crate::context::{index_context, ContextIndex, LocalSource};
use crate::fileop::{self, CopyOptions, Owner, SourceTree};
use crate::mounts::ExecConfig;
use crate::progress::{now, Event, Progress};
use crate::solve::{Ref, SolverConfig};
use anyhow::{anyhow, bail, Context as _, Result};
use executor::Executor;
use exporter::{ImageStore, LayerBlob};
use oci::image::{Descriptor, ImageConfig, Platform};
use oci::reference::Reference;
use sha2::{Digest as _, Sha256};
use snapshotter::{ContentStore, Snapshotter};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) const LABEL_LAYER_DIGEST: &str = "builder.layer.digest";
pub(crate) const LABEL_LAYER_DIFF_ID: &str = "builder.layer.diffid";
pub(crate) const LABEL_LAYER_MEDIA_TYPE: &str = "builder.layer.mediatype";
pub(crate) const LABEL_LAYER_SIZE: &str = "builder.layer.size";
/// Set on snapshots whose layer blob this builder made (not unpacked from a base image).
pub(crate) const LABEL_LAYER_BUILT: &str = "builder.layer.built";

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

pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
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

/// The stores and services ops run against.
pub struct Worker {
    pub(crate) root: PathBuf,
    pub content: ContentStore,
    pub snapshots: Snapshotter,
    pub images: ImageStore,
    pub(crate) executor: Executor,
    locals: HashMap<String, Arc<dyn LocalSource>>,
    pub(crate) progress: Progress,
    indexes: Mutex<HashMap<String, Arc<ContextIndex>>>,
    /// Held while a layer's blob is being made, so it is made once.
    layer_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    runtime: tokio::runtime::Handle,
    cache: crate::cache::CacheState,
    pub(crate) exec_config: ExecConfig,
    pub(crate) layer_export: exporter::LayerExportOptions,
    /// Entries of the layers made as blobs in this process, for the stacking check.
    pub(crate) blob_listings: Mutex<HashMap<String, Arc<Vec<crate::rebase::LayerEntry>>>>,
    /// `--pull`: base images named by tag are resolved against their registry even when
    /// the store has the tag.
    pub(crate) pull_always: bool,
}

impl Worker {
    /// Opens the stores under `cfg.root`. Must be called inside a tokio runtime.
    pub(crate) fn open(cfg: SolverConfig) -> Result<Self> {
        let content = ContentStore::open(&cfg.root)?;
        let snapshots = Snapshotter::open(&cfg.root)?;
        let blobs = content.clone();
        snapshots.set_unpacker(Arc::new(move |info, dir| {
            unpack_own_layer(&blobs, info, dir).map_err(|e| format!("{e:#}"))
        }));
        let images = ImageStore::open(&cfg.root, content.clone())?;
        let worker = Self {
            root: cfg.root,
            content,
            snapshots,
            images,
            executor: cfg.executor,
            locals: cfg.locals,
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
        worker.remove_stale_snapshots();
        crate::mounts::sweep_stale(&worker.root);
        Ok(worker)
    }

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
        // Outside the lock: another context may be complete already.
        let src = self.local(name)?;
        src.wait_until_complete().map_err(|e| anyhow!(e))?;
        let mut map = self
            .indexes
            .lock()
            .map_err(|_| anyhow!("context index lock poisoned"))?;
        if let Some(idx) = map.get(name) {
            return Ok(idx.clone());
        }
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

    /// Reports a step's progress; steps without a name are internal and not shown.
    pub(crate) fn report(&self, event: Event) {
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
    pub(crate) fn run_step<T>(
        &self,
        i: usize,
        name: &str,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
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

    pub(crate) fn label_layer(
        &self,
        snapshot: &str,
        layer: &Descriptor,
        diff_id: &str,
    ) -> Result<()> {
        self.snapshots
            .set_labels(snapshot, layer_labels(layer, diff_id))?;
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

    /// The layers of a result, base first, creating (and remembering) blobs for built
    /// snapshots in the build's layer compression (the first image output's).
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

/// The labels naming a snapshot's own layer blob.
pub(crate) fn layer_labels(
    layer: &Descriptor,
    diff_id: &str,
) -> std::collections::BTreeMap<String, String> {
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
