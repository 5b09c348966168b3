//! Build-cache export and import (`--cache-to`, `--cache-from`).
//!
//! A cache is a list of records, each a vertex's cache key and the layer chain (base first) of
//! its result. It travels as an OCI manifest whose config blob is a [`CacheConfig`] and whose
//! layers are the blobs the records name: in an OCI layout directory (`type=local`), in a
//! registry (`type=registry`), in the GitHub Actions cache service (`type=gha`: the config as a
//! scope's index entry, each blob an entry of its own), or inside an image config
//! (`type=inline`, the image's own layers being the blobs). Importing only reads the config; blobs are fetched when a build needs them.

use crate::context::write_atomic;
use crate::gha::{GhaCache, GhaSettings};
use crate::graph::{Definition, Op};
use crate::solve::{Ref, Solver};
use crate::worker::Worker;
use anyhow::{anyhow, bail, Context as _, Result};
use distribution::RegistryClient;
use exporter::LayerBlob;
use oci::image::{
    is_index_media_type, Descriptor, Index, Manifest, Platform, MEDIA_TYPE_OCI_MANIFEST,
};
use oci::{ImageConfig, Reference};
use serde::{Deserialize, Serialize};
use snapshotter::ContentStore;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Media type of a cache manifest's config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.builder.cache.config.v1+json";
/// Field of an image config that carries inline cache records.
pub const INLINE_CACHE_FIELD: &str = "builder.cache.v1";

/// How much of a build a cache export covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Only the steps whose layers make up the result.
    #[default]
    Min,
    /// Every step of the build, intermediate stages included.
    Max,
}

/// One `--cache-to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheTo {
    Local {
        dest: PathBuf,
        mode: CacheMode,
        mounts: bool,
    },
    Registry {
        reference: String,
        mode: CacheMode,
        mounts: bool,
    },
    /// Records (min mode) embedded in the built image's config.
    Inline,
    /// The GitHub Actions cache service.
    Gha {
        settings: GhaSettings,
        mode: CacheMode,
        mounts: bool,
    },
}

/// One `--cache-from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheFrom {
    Local {
        src: PathBuf,
    },
    /// A cache manifest, or an image with inline cache.
    Registry {
        reference: String,
    },
    Gha(GhaSettings),
}

impl CacheFrom {
    pub fn describe(&self) -> String {
        match self {
            CacheFrom::Local { src } => format!("type=local,src={}", src.display()),
            CacheFrom::Registry { reference } => format!("type=registry,ref={reference}"),
            CacheFrom::Gha(settings) => settings.describe(),
        }
    }
}

/// A layer of a record's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    pub descriptor: Descriptor,
    #[serde(rename = "diffID")]
    pub diff_id: String,
}

impl From<LayerBlob> for CacheLayer {
    fn from(l: LayerBlob) -> Self {
        CacheLayer {
            descriptor: l.descriptor,
            diff_id: l.diff_id,
        }
    }
}

impl From<&CacheLayer> for LayerBlob {
    fn from(l: &CacheLayer) -> Self {
        LayerBlob {
            descriptor: l.descriptor.clone(),
            diff_id: l.diff_id.clone(),
        }
    }
}

/// A record: a cache key and its result's layers, as indexes into [`CacheConfig::layers`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub key: String,
    pub layers: Vec<usize>,
}

/// A cache-mount directory exported as a tar blob (`mounts=true`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMountBlob {
    /// Directory name under `ROOT/cache/mounts/`: hex sha256 of the mount's id.
    pub dir: String,
    /// Index into [`CacheConfig::layers`].
    pub layer: usize,
}

/// The config blob of a cache manifest (and the inline cache field of an image config).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    pub layers: Vec<CacheLayer>,
    pub records: Vec<CacheRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<CacheMountBlob>,
}

impl CacheConfig {
    fn add_record(&mut self, key: &str, chain: Vec<LayerBlob>) {
        if self.records.iter().any(|r| r.key == key) {
            return;
        }
        let layers = chain
            .into_iter()
            .map(|l| self.add_layer(CacheLayer::from(l)))
            .collect();
        self.records.push(CacheRecord {
            key: key.to_string(),
            layers,
        });
    }

    fn add_layer(&mut self, layer: CacheLayer) -> usize {
        match self
            .layers
            .iter()
            .position(|l| l.descriptor.digest == layer.descriptor.digest)
        {
            Some(i) => i,
            None => {
                self.layers.push(layer);
                self.layers.len() - 1
            }
        }
    }

    /// Checks what an untrusted cache says before anything uses it.
    fn validate(&self) -> Result<()> {
        for l in &self.layers {
            check_digest(&l.descriptor.digest)?;
            check_digest(&l.diff_id)?;
        }
        for r in &self.records {
            check_digest(&r.key)?;
            if r.layers.iter().any(|&i| i >= self.layers.len()) {
                bail!("cache record {} names a layer that does not exist", r.key);
            }
        }
        for m in &self.mounts {
            if m.dir.len() != 64 || !m.dir.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("cache mount name {:?} is not a hex sha256", m.dir);
            }
            if m.layer >= self.layers.len() {
                bail!("cache mount {} names a layer that does not exist", m.dir);
            }
        }
        Ok(())
    }
}

fn check_digest(d: &str) -> Result<()> {
    oci::sha256_hex(d).map_err(|e| anyhow!("{e} in cache"))?;
    Ok(())
}

/// Where an imported record's blobs come from.
enum BlobSource {
    /// Already in the local content store.
    Content,
    /// An OCI layout directory.
    Dir(PathBuf),
    Registry(Box<(RegistryClient, Reference)>),
    Gha(Box<GhaCache>),
}

/// An imported cache, with a count of the steps it answered.
pub struct ImportSource {
    pub description: String,
    blobs: BlobSource,
    pub hits: AtomicUsize,
}

impl ImportSource {
    /// Puts a blob into the content store (verifying its digest) unless it is there already.
    fn fetch(&self, w: &Worker, blob: &Descriptor) -> Result<()> {
        let content = &w.content;
        if content.has(&blob.digest) {
            return Ok(());
        }
        match &self.blobs {
            BlobSource::Content => bail!("blob {} is missing from the store", blob.digest),
            BlobSource::Dir(dir) => {
                let path = layout_blob_path(dir, &blob.digest)?;
                let mut f = std::fs::File::open(&path)
                    .with_context(|| format!("opening cache blob {}", path.display()))?;
                let mut w = content.writer()?;
                std::io::copy(&mut f, &mut w)
                    .with_context(|| format!("reading cache blob {}", path.display()))?;
                w.commit(Some(&blob.digest))
                    .with_context(|| format!("cache blob {}", path.display()))?;
                Ok(())
            }
            BlobSource::Registry(b) => {
                let (client, reference) = &**b;
                w.runtime()
                    .block_on(client.pull_blob(reference, blob, content))
                    .with_context(|| format!("fetching cache blob {}", blob.digest))
            }
            BlobSource::Gha(cache) => w
                .runtime()
                .block_on(cache.download_blob(content, &blob.digest))
                .with_context(|| format!("fetching cache blob {}", blob.digest)),
        }
    }
}

/// A result known from an imported record but not yet unpacked.
#[derive(Clone)]
pub(crate) struct LazyChain {
    pub layers: Vec<CacheLayer>,
    source: Arc<ImportSource>,
}

/// The solver's view of imported caches and of results not yet materialised.
#[derive(Default)]
pub(crate) struct CacheState {
    sources: RwLock<Vec<Arc<ImportSource>>>,
    records: RwLock<HashMap<String, (Vec<CacheLayer>, usize)>>,
    /// Snapshot name (chain id) → how to make it.
    lazy: Mutex<HashMap<String, LazyChain>>,
}

/// Chain id of a layer stack, as the image unpacker names snapshots.
pub(crate) fn chain_id(diff_ids: impl IntoIterator<Item = impl AsRef<str>>) -> Option<String> {
    use sha2::Digest as _;
    let mut chain: Option<String> = None;
    for d in diff_ids {
        let d = d.as_ref();
        chain = Some(match chain {
            None => d.to_string(),
            Some(p) => format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(format!("{p} {d}").as_bytes()))
            ),
        });
    }
    chain
}

fn records_dir(root: &Path) -> PathBuf {
    root.join("cache").join("records")
}

/// Directory holding cache mounts, one per hex sha256 of the mount id.
pub fn mounts_dir(root: &Path) -> PathBuf {
    root.join("cache").join("mounts")
}

impl Worker {
    /// Registers the caches of `--cache-from`; their records answer local cache misses.
    pub fn add_cache_import(&self, description: String, config: CacheConfig, blobs: ImportBlobs) {
        let source = Arc::new(ImportSource {
            description,
            blobs: blobs.0,
            hits: AtomicUsize::new(0),
        });
        let mut sources = self.cache_state().sources.write().expect("lock");
        let n = sources.len();
        sources.push(source);
        let mut records = self.cache_state().records.write().expect("lock");
        for r in &config.records {
            let layers = r.layers.iter().map(|&i| config.layers[i].clone()).collect();
            records.entry(r.key.clone()).or_insert((layers, n));
        }
    }

    /// The imported caches and how many steps each answered.
    pub fn cache_import_hits(&self) -> Vec<(String, usize)> {
        self.cache_state()
            .sources
            .read()
            .expect("lock")
            .iter()
            .map(|s| (s.description.clone(), s.hits.load(Ordering::Relaxed)))
            .collect()
    }

    /// A cache hit from an imported record, or a record of an earlier import kept in this
    /// store; returns the (possibly not yet unpacked) snapshot name.
    pub(crate) fn cache_lookup_imported(&self, key: &str) -> Option<String> {
        let found = {
            let records = self.cache_state().records.read().ok()?;
            records.get(key).map(|(layers, n)| {
                let sources = self.cache_state().sources.read().expect("lock");
                (layers.clone(), sources[*n].clone())
            })
        };
        let (layers, source) = match found {
            Some(x) => x,
            None => {
                let path = records_dir(self.root()).join(key.trim_start_matches("sha256:"));
                let layers: Vec<CacheLayer> =
                    serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
                if !layers
                    .iter()
                    .all(|l| self.content.has(&l.descriptor.digest))
                {
                    return None;
                }
                let source = Arc::new(ImportSource {
                    description: "local".into(),
                    blobs: BlobSource::Content,
                    hits: AtomicUsize::new(0),
                });
                (layers, source)
            }
        };
        // A directory cache missing blobs (a partial copy) is a miss, not a failed build later.
        if let BlobSource::Dir(dir) = &source.blobs {
            let present = |l: &CacheLayer| {
                self.content.has(&l.descriptor.digest)
                    || layout_blob_path(dir, &l.descriptor.digest).is_ok_and(|p| p.is_file())
            };
            if !layers.iter().all(present) {
                return None;
            }
        }
        let name = chain_id(layers.iter().map(|l| &l.diff_id))?;
        source.hits.fetch_add(1, Ordering::Relaxed);
        // Remember the record so this store answers it next time without the import.
        if let Ok(json) = serde_json::to_vec(&layers) {
            let path = records_dir(self.root()).join(key.trim_start_matches("sha256:"));
            let _ = write_atomic(&path, &json);
        }
        if !self.snapshots.exists(&name) {
            self.cache_state()
                .lazy
                .lock()
                .ok()?
                .insert(name.clone(), LazyChain { layers, source });
        }
        Some(name)
    }

    /// With `--cache-from`, a base image is unpacked only if a step runs on it: when every
    /// step is a cache hit, nothing needs its files. Returns the snapshot name if deferred.
    pub(crate) fn defer_unpack(&self, layers: &[(Descriptor, String)]) -> Option<String> {
        if self.cache_state().sources.read().ok()?.is_empty() {
            return None;
        }
        let name = chain_id(layers.iter().map(|(_, d)| d))?;
        if self.snapshots.exists(&name) {
            return None;
        }
        let chain = LazyChain {
            layers: layers
                .iter()
                .map(|(descriptor, diff_id)| CacheLayer {
                    descriptor: descriptor.clone(),
                    diff_id: diff_id.clone(),
                })
                .collect(),
            source: Arc::new(ImportSource {
                description: "image".into(),
                blobs: BlobSource::Content,
                hits: AtomicUsize::new(0),
            }),
        };
        self.cache_state()
            .lazy
            .lock()
            .ok()?
            .insert(name.clone(), chain);
        Some(name)
    }

    /// The layers of a result not unpacked yet (fetching its blobs), if it is one.
    pub(crate) fn lazy_layers(&self, snapshot: &str) -> Result<Option<Vec<LayerBlob>>> {
        let chain = self
            .cache_state()
            .lazy
            .lock()
            .expect("lock")
            .get(snapshot)
            .cloned();
        let Some(chain) = chain else {
            return Ok(None);
        };
        for l in &chain.layers {
            chain.source.fetch(self, &l.descriptor)?;
        }
        Ok(Some(chain.layers.iter().map(LayerBlob::from).collect()))
    }

    /// Unpacks a result known only from a cache record, so a step can run on it.
    pub(crate) fn materialize(&self, r: &Ref) -> Result<()> {
        let Ref::Snapshot(name) = r else {
            return Ok(());
        };
        let Some(layers) = self.lazy_layers(name)? else {
            return Ok(());
        };
        let pairs: Vec<(Descriptor, String)> = layers
            .into_iter()
            .map(|l| (l.descriptor, l.diff_id))
            .collect();
        crate::ops::image::unpack_chain(self, &pairs)?;
        self.cache_state().lazy.lock().expect("lock").remove(name);
        Ok(())
    }
}

/// How an import's blobs are reached; made by [`load_cache`].
pub struct ImportBlobs(BlobSource);

/// Reads the cache config of a `--cache-from` (blobs stay where they are).
pub async fn load_cache(
    content: &ContentStore,
    from: &CacheFrom,
) -> Result<(CacheConfig, ImportBlobs)> {
    let (config, blobs) = match from {
        CacheFrom::Local { src } => {
            let index: Index = serde_json::from_slice(
                &std::fs::read(src.join("index.json"))
                    .with_context(|| format!("reading {}", src.join("index.json").display()))?,
            )
            .with_context(|| format!("parsing {}", src.join("index.json").display()))?;
            let mut found = None;
            for m in &index.manifests {
                let manifest: Manifest =
                    serde_json::from_slice(&std::fs::read(layout_blob_path(src, &m.digest)?)?)
                        .with_context(|| format!("parsing manifest {}", m.digest))?;
                if manifest.config.media_type == CACHE_CONFIG_MEDIA_TYPE {
                    let config = std::fs::read(layout_blob_path(src, &manifest.config.digest)?)?;
                    found = Some(serde_json::from_slice::<CacheConfig>(&config)?);
                    break;
                }
            }
            let config = found.ok_or_else(|| anyhow!("{} holds no build cache", src.display()))?;
            (config, BlobSource::Dir(src.clone()))
        }
        CacheFrom::Registry { reference } => {
            let r = Reference::parse(reference)
                .map_err(|e| anyhow!("invalid cache reference {reference:?}: {e}"))?;
            let client = RegistryClient::new();
            let mut top = client.pull_manifest(&r, content).await?;
            if is_index_media_type(&top.media_type) {
                let index: Index = serde_json::from_slice(&content.read_blob(&top.digest)?)?;
                let chosen = index
                    .find_platform(&Platform::host())
                    .ok_or_else(|| anyhow!("{reference} has no manifest for this platform"))?;
                let by_digest = Reference {
                    digest: Some(chosen.digest.clone()),
                    ..r.clone()
                };
                top = client.pull_manifest(&by_digest, content).await?;
            }
            let manifest: Manifest = serde_json::from_slice(&content.read_blob(&top.digest)?)?;
            client.pull_blob(&r, &manifest.config, content).await?;
            let raw = content.read_blob(&manifest.config.digest)?;
            let config = if manifest.config.media_type == CACHE_CONFIG_MEDIA_TYPE {
                serde_json::from_slice::<CacheConfig>(&raw)?
            } else {
                let image: serde_json::Value = serde_json::from_slice(&raw)?;
                match image.get(INLINE_CACHE_FIELD) {
                    Some(v) => serde_json::from_value::<CacheConfig>(v.clone())?,
                    None => {
                        bail!("{reference} is neither a build cache nor an image with inline cache")
                    }
                }
            };
            (config, BlobSource::Registry(Box::new((client, r))))
        }
        CacheFrom::Gha(settings) => load_gha(settings).await?,
    };
    config
        .validate()
        .with_context(|| format!("cache {}", from.describe()))?;
    Ok((config, ImportBlobs(blobs)))
}

/// The newest index of a `type=gha` scope.
async fn load_gha(settings: &GhaSettings) -> Result<(CacheConfig, BlobSource)> {
    let cache = GhaCache::new(settings)?;
    let index = cache.download_index().await?.ok_or_else(|| {
        anyhow!(
            "the cache service has no cache for scope {:?}",
            settings.scope
        )
    })?;
    let config =
        serde_json::from_slice::<CacheConfig>(&index).context("parsing the cache index")?;
    Ok((config, BlobSource::Gha(Box::new(cache))))
}

/// Restores the cache mounts an import carries, unless this store has them already.
pub fn restore_mounts(worker: &Worker, config: &CacheConfig, blobs: &ImportBlobs) -> Result<()> {
    let source = ImportSource {
        description: String::new(),
        blobs: match &blobs.0 {
            BlobSource::Content => BlobSource::Content,
            BlobSource::Dir(d) => BlobSource::Dir(d.clone()),
            BlobSource::Registry(b) => BlobSource::Registry(b.clone()),
            BlobSource::Gha(c) => BlobSource::Gha(c.clone()),
        },
        hits: AtomicUsize::new(0),
    };
    for m in &config.mounts {
        let dest = mounts_dir(worker.root()).join(&m.dir);
        if dest.exists() {
            continue;
        }
        let layer = &config.layers[m.layer].descriptor;
        source.fetch(worker, layer)?;
        let tmp =
            mounts_dir(worker.root()).join(format!(".restore-{}-{}", m.dir, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let res = (|| -> Result<()> {
            let reader = exporter::open_layer(&worker.content, layer)?;
            snapshotter::layer::apply_layer_tar(reader, &tmp)
                .with_context(|| format!("restoring cache mount {}", m.dir))?;
            std::fs::rename(&tmp, &dest)?;
            Ok(())
        })();
        if res.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        res?;
    }
    Ok(())
}

/// Vertices whose results a cache export records: for `min` the steps along each output's
/// root filesystem (input 0; one output per platform), for `max` every step.
fn exported_vertices(def: &Definition, outputs: &[usize], mode: CacheMode) -> Vec<usize> {
    let is_step = |i: usize| {
        !matches!(
            def.vertices[i].op,
            Op::Scratch | Op::Local { .. } | Op::Image { .. }
        )
    };
    match mode {
        CacheMode::Max => {
            let mut all: Vec<usize> = def
                .reachable()
                .into_iter()
                .filter(|&i| is_step(i))
                .collect();
            all.sort_unstable();
            all
        }
        CacheMode::Min => {
            let mut out = Vec::new();
            for &output in outputs {
                let mut cur = Some(output);
                while let Some(i) = cur {
                    if !is_step(i) {
                        break;
                    }
                    out.push(i);
                    // A rebased or linked copy's own layer is part of the image too, and a
                    // fresh store needs its key to find the stacked result.
                    if matches!(def.vertices[i].op, Op::Merge | Op::Rebase) {
                        out.extend(
                            def.vertices[i]
                                .inputs
                                .get(1)
                                .copied()
                                .filter(|&j| is_step(j)),
                        );
                    }
                    cur = def.vertices[i].inputs.first().copied();
                }
            }
            out.sort_unstable();
            out.dedup();
            out
        }
    }
}

/// The records of a finished solve (`results[i]` = vertex i's result and cache key).
pub fn collect_records(
    worker: &Worker,
    def: &Definition,
    outputs: &[usize],
    results: &[Option<(Ref, String)>],
    mode: CacheMode,
) -> Result<CacheConfig> {
    let mut config = CacheConfig::default();
    for i in exported_vertices(def, outputs, mode) {
        let Some((r @ Ref::Snapshot(_), key)) = &results[i] else {
            continue;
        };
        if def.vertices[i].ignore_cache {
            continue;
        }
        let chain = worker.export_layers(r)?;
        config.add_record(key, chain);
    }
    Ok(config)
}

/// Adds the store's cache-mount directories to an export, each as a tar blob.
fn add_mounts(worker: &Worker, config: &mut CacheConfig) -> Result<()> {
    let dir = mounts_dir(worker.root());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let blob = exporter::write_layer(&worker.content, &mut |w| {
            snapshotter::layer::write_diff_tar(&path, w, &Default::default())
                .map_err(std::io::Error::other)
        })?;
        let layer = config.add_layer(blob.into());
        config.mounts.push(CacheMountBlob { dir: name, layer });
    }
    Ok(())
}

/// Writes the cache manifest (config + layers) into the content store.
fn write_cache_manifest(content: &ContentStore, config: &CacheConfig) -> Result<Descriptor> {
    let bytes = serde_json::to_vec(config)?;
    let digest = content.put_bytes(&bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
        config: Descriptor::new(CACHE_CONFIG_MEDIA_TYPE, &digest, bytes.len() as u64),
        layers: config.layers.iter().map(|l| l.descriptor.clone()).collect(),
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec(&manifest)?;
    let digest = content.put_bytes(&bytes)?;
    Ok(Descriptor::new(
        MEDIA_TYPE_OCI_MANIFEST,
        &digest,
        bytes.len() as u64,
    ))
}

fn layout_blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    check_digest(digest)?;
    Ok(dir
        .join("blobs")
        .join("sha256")
        .join(digest.trim_start_matches("sha256:")))
}

/// Copies a blob from the content store into an OCI layout (skipping ones already there).
fn copy_to_layout(content: &ContentStore, dir: &Path, digest: &str) -> Result<()> {
    let dest = layout_blob_path(dir, digest)?;
    if dest.is_file() {
        return Ok(());
    }
    let parent = dest.parent().expect("blob path has a parent");
    std::fs::create_dir_all(parent)?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
    std::io::copy(&mut content.open_blob(digest)?, &mut tmp)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&dest).map_err(|e| e.error)?;
    Ok(())
}

/// What a cache export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct CacheExport {
    pub destination: String,
    pub manifest: String,
    pub records: usize,
    pub mounts: usize,
}

/// Exports the build cache of a finished solve of `outputs` (one per platform) to one
/// `--cache-to` (not `inline`).
pub async fn export_cache(
    solver: &Arc<Solver>,
    def: &Definition,
    outputs: &[usize],
    results: &[Option<(Ref, String)>],
    to: &CacheTo,
) -> Result<Option<CacheExport>> {
    let (mode, mounts) = match to {
        CacheTo::Local { mode, mounts, .. }
        | CacheTo::Registry { mode, mounts, .. }
        | CacheTo::Gha { mode, mounts, .. } => (*mode, *mounts),
        CacheTo::Inline => return Ok(None),
    };
    let (s, d, r, o) = (
        solver.clone(),
        def.clone(),
        results.to_vec(),
        outputs.to_vec(),
    );
    let config = tokio::task::spawn_blocking(move || -> Result<CacheConfig> {
        let mut config = collect_records(&s, &d, &o, &r, mode)?;
        if mounts {
            add_mounts(&s, &mut config)?;
        }
        Ok(config)
    })
    .await??;
    let manifest = write_cache_manifest(&solver.content, &config)?;
    let destination = match to {
        CacheTo::Local { dest, .. } => {
            let content = solver.content.clone();
            let (dest, config, manifest) = (dest.clone(), config.clone(), manifest.clone());
            tokio::task::spawn_blocking(move || write_layout(&content, &dest, &config, &manifest))
                .await??;
            format!("type=local,dest={}", config_dest_display(to))
        }
        CacheTo::Registry { reference, .. } => {
            let r = Reference::parse(reference)
                .map_err(|e| anyhow!("--cache-to ref={reference:?}: {e}"))?;
            RegistryClient::new()
                .push(&r, &manifest, &solver.content)
                .await
                .with_context(|| format!("pushing build cache to {reference}"))?;
            format!("type=registry,ref={reference}")
        }
        CacheTo::Gha { settings, .. } => {
            export_to_gha(&solver.content, settings, &config)
                .await
                .with_context(|| format!("exporting build cache to {}", settings.describe()))?;
            settings.describe()
        }
        CacheTo::Inline => unreachable!("handled above"),
    };
    Ok(Some(CacheExport {
        destination,
        manifest: manifest.digest,
        records: config.records.len(),
        mounts: config.mounts.len(),
    }))
}

/// Uploads the blobs the service lacks, then the scope's new index (so an index never names
/// a blob that is not there).
async fn export_to_gha(
    content: &ContentStore,
    settings: &GhaSettings,
    config: &CacheConfig,
) -> Result<()> {
    const PARALLEL_UPLOADS: usize = 4;
    let cache = GhaCache::new(settings)?;
    let mut digests: Vec<String> = config
        .layers
        .iter()
        .map(|l| l.descriptor.digest.clone())
        .collect();
    digests.dedup();
    let mut running = tokio::task::JoinSet::new();
    for digest in digests {
        if running.len() >= PARALLEL_UPLOADS {
            running.join_next().await.expect("tasks running")??;
        }
        let (cache, content) = (cache.clone(), content.clone());
        running.spawn(async move { cache.upload_blob(&content, &digest).await });
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    cache.upload_index(&serde_json::to_vec(config)?).await?;
    Ok(())
}

fn config_dest_display(to: &CacheTo) -> String {
    match to {
        CacheTo::Local { dest, .. } => dest.display().to_string(),
        _ => String::new(),
    }
}

/// Writes an OCI layout: blobs first, `index.json` last (atomically), so a reader never
/// sees an index naming missing blobs.
fn write_layout(
    content: &ContentStore,
    dir: &Path,
    config: &CacheConfig,
    manifest: &Descriptor,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let m: Manifest = serde_json::from_slice(&content.read_blob(&manifest.digest)?)?;
    for l in &config.layers {
        copy_to_layout(content, dir, &l.descriptor.digest)?;
    }
    copy_to_layout(content, dir, &m.config.digest)?;
    copy_to_layout(content, dir, &manifest.digest)?;
    write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut desc = manifest.clone();
    desc.annotations
        .insert("org.opencontainers.image.ref.name".into(), "latest".into());
    let index = Index {
        manifests: vec![desc],
        ..Index::new()
    };
    write_atomic(&dir.join("index.json"), &serde_json::to_vec(&index)?)?;
    Ok(())
}

/// Writes an image whose config carries the build's min-mode cache records (`--cache-to
/// type=inline`); only records whose layers are all the image's own are kept.
pub fn write_image_with_inline_cache(
    worker: &Worker,
    config: &ImageConfig,
    layers: &[Descriptor],
    def: &Definition,
    results: &[Option<(Ref, String)>],
    oci_media_types: bool,
) -> Result<Descriptor> {
    let outputs: Vec<usize> = def.output.into_iter().collect();
    let mut records = collect_records(worker, def, &outputs, results, CacheMode::Min)?;
    let own: std::collections::HashSet<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let layer_digests: Vec<String> = records
        .layers
        .iter()
        .map(|l| l.descriptor.digest.clone())
        .collect();
    records.records.retain(|r| {
        r.layers
            .iter()
            .all(|&i| own.contains(layer_digests[i].as_str()))
    });
    let mut value = serde_json::to_value(config)?;
    value
        .as_object_mut()
        .ok_or_else(|| anyhow!("image config is not an object"))?
        .insert(INLINE_CACHE_FIELD.into(), serde_json::to_value(&records)?);
    let bytes = serde_json::to_vec(&value)?;
    Ok(exporter::write_image_bytes(
        &worker.content,
        config,
        &bytes,
        layers,
        oci_media_types,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_matches_image_unpacker_naming() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(chain_id([&a]), Some(a.clone()));
        let two = chain_id([&a, &b]).unwrap();
        assert_ne!(two, a);
        assert!(two.starts_with("sha256:") && two.len() == 71);
        assert_eq!(chain_id(Vec::<String>::new()), None);
    }

    #[test]
    fn untrusted_config_is_validated() {
        let layer = CacheLayer {
            descriptor: Descriptor::new("x", &format!("sha256:{}", "1".repeat(64)), 1),
            diff_id: format!("sha256:{}", "2".repeat(64)),
        };
        let mut c = CacheConfig {
            layers: vec![layer],
            records: vec![CacheRecord {
                key: format!("sha256:{}", "3".repeat(64)),
                layers: vec![0],
            }],
            mounts: vec![],
        };
        c.validate().unwrap();
        c.records[0].layers = vec![1];
        assert!(c.validate().is_err());
        c.records[0].layers = vec![0];
        c.mounts.push(CacheMountBlob {
            dir: "../../etc".into(),
            layer: 0,
        });
        assert!(c.validate().is_err());
        c.mounts.clear();
        c.layers[0].descriptor.digest = "sha256:../x".into();
        assert!(c.validate().is_err());
    }
}
