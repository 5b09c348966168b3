//! Disk accounting and garbage collection of a storage root (`builder du`, `builder prune`).
//!
//! What the root holds, and what keeps it:
//! - blobs reachable from a tagged image (index → manifests → config + layers) are never removed;
//! - committed snapshots whose layer chain (diff ids, base first) is a prefix of a tagged
//!   image's are that image's unpacked layers: removed only with `--all` (the blobs stay, so
//!   they can be unpacked again);
//! - every other committed snapshot is a build-cache result, named by the cache keys under
//!   `ROOT/cache/keys`; records kept from imported caches live under `ROOT/cache/records`;
//! - cache mounts (`ROOT/cache/mounts`) go only with `--all` or `--filter type=exec.cachemount`;
//! - blobs that only cache results or records name go with them; blobs nothing names go too.
//!
//! Safety: every command that reads or writes the store holds [`StoreLock`] shared for its
//! whole run; prune holds it exclusive, so it never sees a build's half-made snapshots, blobs
//! or cache entries. Removal goes references first (cache keys and records, then snapshot
//! metadata, then files), so a prune killed at any point leaves a usable store: a snapshot left
//! without keys is collected by the next prune, dirs left without metadata are swept when the
//! snapshotter opens, and a blob removed under a cache result's label is written again on export.

use crate::cache::{chain_id, mounts_dir, CacheLayer};
use crate::worker::{LABEL_LAYER_DIFF_ID, LABEL_LAYER_DIGEST};
use anyhow::{bail, Context as _, Result};
use exporter::ImageStore;
use oci::image::{is_index_media_type, is_manifest_media_type};
use serde::Serialize;
use snapshotter::{ContentStore, Kind, Snapshotter};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file every builder process locks: shared while it uses the store, exclusive to prune.
pub const STORE_LOCK_FILE: &str = "store.lock";

/// A held flock on `ROOT/store.lock`, released when dropped (or when the process dies).
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    fn open(root: &Path) -> Result<File> {
        let path = root.join(STORE_LOCK_FILE);
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening the store lock {}", path.display()))
    }

    /// Taken by builds and every other command using the store; many can hold it at once.
    /// Waits while a prune runs, calling `on_wait` first if it has to.
    pub fn shared(root: &Path, on_wait: impl FnOnce()) -> Result<Self> {
        Self::acquire(root, false, on_wait)
    }

    /// Taken by prune: waits for every other builder process on this root to finish, calling
    /// `on_wait` first if it has to wait.
    pub fn exclusive(root: &Path, on_wait: impl FnOnce()) -> Result<Self> {
        Self::acquire(root, true, on_wait)
    }

    fn acquire(root: &Path, exclusive: bool, on_wait: impl FnOnce()) -> Result<Self> {
        let file = Self::open(root)?;
        let tried = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match tried {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait();
                let (locked, how) = if exclusive {
                    (file.lock(), "exclusive")
                } else {
                    (file.lock_shared(), "shared")
                };
                locked.with_context(|| format!("locking {} ({how})", root.display()))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", root.display()))
            }
        }
        Ok(StoreLock { _file: file })
    }
}

/// Records that a cache entry (a file under `ROOT/cache`) was just used, for `until` and
/// `keep-storage`. Best effort: a lost mark only makes the entry look older.
pub fn mark_used(path: &Path) {
    if let Ok(f) = File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// What an entry of the store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A committed snapshot holding (part of) a tagged image's unpacked layers.
    ImageLayer,
    /// A committed snapshot only the build cache uses.
    CacheResult,
    /// A writable or view snapshot of a builder process (left behind if that process died).
    Active,
    /// A record kept from an imported cache (`--cache-from`).
    CacheRecord,
    /// A `RUN --mount=type=cache` directory.
    CacheMount,
    /// The stat cache of a build context.
    ContextIndex,
    /// A blob in the content store.
    Blob,
    /// An unfinished blob upload in `content/ingest` (a live writer's, or a killed one's).
    Upload,
}

impl EntryKind {
    pub const ALL: [EntryKind; 8] = [
        EntryKind::ImageLayer,
        EntryKind::CacheResult,
        EntryKind::Active,
        EntryKind::CacheRecord,
        EntryKind::CacheMount,
        EntryKind::ContextIndex,
        EntryKind::Blob,
        EntryKind::Upload,
    ];

    /// A name for tables.
    pub fn title(self) -> &'static str {
        match self {
            EntryKind::ImageLayer => "image layers (unpacked)",
            EntryKind::CacheResult => "build cache results",
            EntryKind::Active => "active snapshots",
            EntryKind::CacheRecord => "imported cache records",
            EntryKind::CacheMount => "cache mounts",
            EntryKind::ContextIndex => "context indexes",
            EntryKind::Blob => "content blobs",
            EntryKind::Upload => "unfinished uploads",
        }
    }

    /// BuildKit's record type, as `--filter type=` names it.
    fn filter_type(self) -> FilterType {
        match self {
            EntryKind::CacheMount => FilterType::CacheMount,
            EntryKind::ContextIndex => FilterType::SourceLocal,
            _ => FilterType::Regular,
        }
    }
}

/// The record types `--filter type=` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterType {
    /// `regular`: build results, their blobs and records.
    Regular,
    /// `exec.cachemount`.
    CacheMount,
    /// `source.local`: build-context stat caches.
    SourceLocal,
}

impl std::str::FromStr for FilterType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "regular" => Ok(FilterType::Regular),
            "exec.cachemount" => Ok(FilterType::CacheMount),
            "source.local" => Ok(FilterType::SourceLocal),
            _ => Err(format!(
                "unknown type {s:?}: want regular, exec.cachemount or source.local"
            )),
        }
    }
}

/// What a prune may remove.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Also images' unpacked snapshots and cache mounts.
    pub all: bool,
    /// Only entries of these types (empty: all types the other options allow).
    pub types: Vec<FilterType>,
    /// Only entries not used for this long.
    pub until: Option<Duration>,
    /// Keep the most recently used entries up to this many bytes.
    pub keep_storage: Option<u64>,
}

/// One entry of the store, as `du` lists it and `prune` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub kind: EntryKind,
    /// Snapshot key, blob digest, cache mount or file name.
    pub id: String,
    /// Bytes on disk.
    pub size: u64,
    /// Unix seconds of the last use known.
    pub last_used: u64,
    /// Removed by a prune with the options asked about.
    pub reclaimable: bool,
    /// Removed by `prune --all`.
    pub reclaimable_all: bool,
    /// Why it is kept, if it is kept whatever the options: "tagged image", "in use".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_for: Option<&'static str>,
}

/// How an entry is removed.
#[derive(Clone, Debug)]
enum Target {
    Snapshot {
        key: String,
        parent: Option<String>,
        /// Cache key files naming this snapshot.
        key_files: Vec<PathBuf>,
    },
    Record(PathBuf),
    Mount(String),
    ContextIndex(PathBuf),
    Blob(String),
    /// An ingest file, by name.
    Upload(String),
}

#[derive(Clone, Debug)]
struct Item {
    entry: Entry,
    target: Target,
    /// Never removed: part of a tagged image's content, or in use by a live process.
    pinned: Option<&'static str>,
    /// Removed only with `--all` (an image's unpacked snapshot or record).
    needs_all: bool,
    /// Blobs this entry names (labels of a snapshot, layers of a record).
    blobs: Vec<String>,
    /// Number of ancestors (for snapshots), so parents sort before children.
    depth: usize,
}

/// The stores of one root, and what is in them.
pub struct Inventory {
    root: PathBuf,
    snapshots: Snapshotter,
    content: ContentStore,
    items: Vec<Item>,
    /// Cache key files naming snapshots that do not exist.
    dangling_keys: Vec<PathBuf>,
}

/// What a prune removed.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub removed: Vec<Entry>,
    /// Bytes of blob uploads left by killed processes.
    pub abandoned_uploads: u64,
    /// All bytes freed.
    pub reclaimed: u64,
}

fn cache_dir(root: &Path) -> PathBuf {
    root.join("cache")
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mtime_secs(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(unix_secs)
        .unwrap_or(0)
}

/// Files directly in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if let Some(name) = entry.file_name().to_str() {
            // Temp files of atomic writes in progress or interrupted.
            if !name.starts_with('.') {
                out.push((name.to_string(), entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Allocated bytes under `path`, each inode once.
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// A snapshot key made by `solve::unique` names its process: "prefix-PID-...".
fn creator_alive(key: &str) -> bool {
    match key.split('-').nth(1).and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists(),
        // Not one of ours: assume someone uses it.
        None => true,
    }
}

type ImageRoots = (HashSet<String>, HashSet<String>, HashSet<String>);

/// What the tagged images hold: blobs reachable from them, the chain ids of every prefix of
/// their layer stacks, and their layers' diff ids.
fn image_roots(images: &ImageStore, content: &ContentStore) -> Result<ImageRoots> {
    let mut blobs = HashSet::new();
    let mut chains = HashSet::new();
    let mut layer_diff_ids = HashSet::new();
    let mut queue: Vec<(String, String)> = images
        .list()?
        .into_iter()
        .map(|(_, d)| (d.digest, d.media_type))
        .collect();
    while let Some((digest, media_type)) = queue.pop() {
        if !blobs.insert(digest.clone()) {
            continue;
        }
        let is_index = is_index_media_type(&media_type);
        if !is_index && !is_manifest_media_type(&media_type) {
            continue;
        }
        // Indexes may name manifests for platforms never pulled.
        let Ok(bytes) = content.read_blob(&digest) else {
            continue;
        };
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {digest} as a manifest or index"))?;
        let descriptor = |v: &serde_json::Value| {
            Some((
                v.get("digest")?.as_str()?.to_string(),
                v.get("mediaType")?.as_str().unwrap_or_default().to_string(),
            ))
        };
        let list = |field: &str| -> Vec<(String, String)> {
            doc.get(field)
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(descriptor).collect())
                .unwrap_or_default()
        };
        if is_index {
            queue.extend(list("manifests"));
            continue;
        }
        blobs.extend(list("layers").into_iter().map(|(d, _)| d));
        let Some((config, _)) = doc.get("config").and_then(descriptor) else {
            continue;
        };
        blobs.insert(config.clone());
        let diff_ids: Vec<String> = content
            .read_blob(&config)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|c| {
                c.pointer("/rootfs/diff_ids")?.as_array().map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(String::from))
                        .collect()
                })
            })
            .unwrap_or_default();
        for n in 1..=diff_ids.len() {
            chains.extend(chain_id(&diff_ids[..n]));
        }
        layer_diff_ids.extend(diff_ids);
    }
    Ok((blobs, chains, layer_diff_ids))
}

/// Cache keys: key file → snapshot name.
fn cache_keys(root: &Path) -> Result<KeysBySnapshot> {
    let mut keys_by_snapshot = KeysBySnapshot::new();
    for (_, path) in files_in(&cache_dir(root).join("keys"))? {
        let Ok(name) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mtime = mtime_secs(&path);
        keys_by_snapshot
            .entry(name)
            .or_default()
            .push((path, mtime));
    }
    Ok(keys_by_snapshot)
}

/// Lineage, last use and live-process pins of every snapshot.
fn snapshot_facts(all: &[snapshotter::Info], keys_by_snapshot: &KeysBySnapshot) -> SnapshotFacts {
    let by_key: HashMap<&str, &snapshotter::Info> =
        all.iter().map(|i| (i.key.as_str(), i)).collect();
    let mut chain_of = HashMap::new();
    let mut depth_of = HashMap::new();
    for info in all {
        // Ancestors, nearest first (metadata has no cycles: the snapshotter checks on mount).
        let mut lineage = vec![info];
        while let Some(parent) = lineage.last().and_then(|i| i.parent.as_deref()) {
            match by_key.get(parent) {
                Some(p) if lineage.len() <= all.len() => lineage.push(p),
                _ => break,
            }
        }
        depth_of.insert(info.key.clone(), lineage.len() - 1);
        let diff_ids: Option<Vec<&String>> = lineage
            .iter()
            .rev()
            .map(|i| i.labels.get(LABEL_LAYER_DIFF_ID))
            .collect();
        chain_of.insert(info.key.clone(), diff_ids.and_then(chain_id));
    }
    // Last use: creation, the cache keys naming it, and the last use of anything built on it.
    let mut last_used: HashMap<String, u64> = all
        .iter()
        .map(|i| {
            let keys = keys_by_snapshot.get(&i.key).into_iter().flatten();
            let newest = keys.map(|(_, t)| *t).max().unwrap_or(0);
            (i.key.clone(), i.created.max(newest))
        })
        .collect();
    let mut deepest_first: Vec<&snapshotter::Info> = all.iter().collect();
    deepest_first.sort_by_key(|i| std::cmp::Reverse(depth_of[&i.key]));
    for info in &deepest_first {
        if let Some(parent) = info.parent.as_deref() {
            let t = last_used[&info.key];
            if let Some(p) = last_used.get_mut(parent) {
                *p = (*p).max(t);
            }
        }
    }
    // Ancestors of snapshots a live process uses stay.
    let mut pinned_by_active: HashSet<String> = HashSet::new();
    for info in all {
        if info.kind != Kind::Committed && creator_alive(&info.key) {
            let mut cur = info.parent.clone();
            while let Some(k) = cur {
                if !pinned_by_active.insert(k.clone()) {
                    break;
                }
                cur = by_key.get(k.as_str()).and_then(|i| i.parent.clone());
            }
        }
    }
    SnapshotFacts {
        chain_of,
        depth_of,
        last_used,
        pinned_by_active,
    }
}

/// Snapshots, each taking its cache key files out of `keys_by_snapshot`.
fn snapshot_items(
    snapshots: &Snapshotter,
    keys_by_snapshot: &mut KeysBySnapshot,
    (_, image_chains, image_diff_ids): &ImageRoots,
) -> Result<Vec<Item>> {
    let all = snapshots.walk()?;
    let facts = snapshot_facts(&all, keys_by_snapshot);
    let mut items = Vec::new();
    for info in &all {
        // A copy made on an empty tree (an automatic `--link`) holds one image layer on its
        // own: the step's cache result, the same bytes as the layer stacked in the image.
        let is_link_layer = info.parent.is_none()
            && info
                .labels
                .get(LABEL_LAYER_DIFF_ID)
                .is_some_and(|d| image_diff_ids.contains(d));
        let is_image = is_link_layer
            || facts.chain_of[&info.key]
                .as_ref()
                .is_some_and(|c| image_chains.contains(c));
        let (kind, pinned) = match info.kind {
            Kind::Committed if is_image => (EntryKind::ImageLayer, None),
            Kind::Committed => (EntryKind::CacheResult, None),
            _ if creator_alive(&info.key) => (EntryKind::Active, Some("in use")),
            _ => (EntryKind::Active, None),
        };
        let pinned = pinned.or(facts
            .pinned_by_active
            .contains(&info.key)
            .then_some("in use"));
        let key_files = keys_by_snapshot
            .remove(&info.key)
            .unwrap_or_default()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let target = Target::Snapshot {
            key: info.key.clone(),
            parent: info.parent.clone(),
            key_files,
        };
        let size = snapshots.usage(&info.key).unwrap_or(0);
        let used = facts.last_used[&info.key];
        let mut item = Item::plain(kind, info.key.clone(), size, used, target).pinned(pinned);
        item.needs_all = kind == EntryKind::ImageLayer;
        item.blobs = info
            .labels
            .get(LABEL_LAYER_DIGEST)
            .cloned()
            .into_iter()
            .collect();
        item.depth = facts.depth_of[&info.key];
        items.push(item);
    }
    Ok(items)
}

/// Records kept from imported caches.
fn record_items(root: &Path, (_, image_chains, image_diff_ids): &ImageRoots) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (name, path) in files_in(&cache_dir(root).join("records"))? {
        let layers: Vec<CacheLayer> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let chain = chain_id(layers.iter().map(|l| &l.diff_id));
        // As for snapshots: a whole image's stack, or one of its layers made on its own.
        let is_link_layer = layers.len() == 1 && image_diff_ids.contains(&layers[0].diff_id);
        let is_image = is_link_layer || chain.is_some_and(|c| image_chains.contains(&c));
        let (size, used) = (disk_usage(&path), mtime_secs(&path));
        let id = format!("sha256:{name}");
        let mut item = Item::plain(EntryKind::CacheRecord, id, size, used, Target::Record(path));
        item.needs_all = is_image;
        item.blobs = layers.into_iter().map(|l| l.descriptor.digest).collect();
        items.push(item);
    }
    Ok(items)
}

/// Cache mounts; their lock file is touched on every use. A plain prune keeps them through
/// `type_ok`, so that a type filter can name them.
fn mount_items(root: &Path) -> Result<Vec<Item>> {
    let locks = cache_dir(root).join("mount-locks");
    let mut items = Vec::new();
    for (name, path) in files_in(&mounts_dir(root))? {
        let used = mtime_secs(&path).max(mtime_secs(&locks.join(&name)));
        let target = Target::Mount(name.clone());
        items.push(Item::plain(
            EntryKind::CacheMount,
            name,
            disk_usage(&path),
            used,
            target,
        ));
    }
    Ok(items)
}

/// Blobs; those a tagged image holds are pinned.
fn blob_items(content: &ContentStore, image_blobs: &HashSet<String>) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (digest, size) in content.list()? {
        let pinned = image_blobs.contains(&digest).then_some("tagged image");
        let used = mtime_secs(&content.blob_path(&digest));
        let target = Target::Blob(digest.clone());
        items.push(Item::plain(EntryKind::Blob, digest, size, used, target).pinned(pinned));
    }
    Ok(items)
}

/// Cache key files by the snapshot they name, with their mtimes.
type KeysBySnapshot = HashMap<String, Vec<(PathBuf, u64)>>;

impl Item {
    /// An entry nothing pins, removed by a plain prune, naming no blobs.
    fn plain(kind: EntryKind, id: String, size: u64, last_used: u64, target: Target) -> Self {
        Item {
            entry: Entry {
                kind,
                id,
                size,
                last_used,
                reclaimable: false,
                reclaimable_all: false,
                kept_for: None,
            },
            target,
            pinned: None,
            needs_all: false,
            blobs: Vec::new(),
            depth: 0,
        }
    }

    /// Pinned for `why` (also shown as the entry's `kept_for`).
    fn pinned(mut self, why: Option<&'static str>) -> Self {
        self.pinned = why;
        self.entry.kept_for = why;
        self
    }
}

/// What the snapshot walk works out about each snapshot, by key.
struct SnapshotFacts {
    /// Chain id of the layers from the root to it (None when one has no diff id).
    chain_of: HashMap<String, Option<String>>,
    /// Number of ancestors.
    depth_of: HashMap<String, usize>,
    /// Newest of its creation, its cache keys and anything built on it.
    last_used: HashMap<String, u64>,
    /// Ancestors of snapshots a live process uses.
    pinned_by_active: HashSet<String>,
}

impl Inventory {
    /// Looks at everything under `root`. Hold [`StoreLock`] (shared for a look, exclusive to prune).
    pub fn scan(root: &Path) -> Result<Self> {
        let content = ContentStore::open(root)?;
        let snapshots = Snapshotter::open(root)?;
        let images = ImageStore::open(root, content.clone())?;
        let roots = image_roots(&images, &content)?;
        let mut keys_by_snapshot = cache_keys(root)?;
        let mut items = snapshot_items(&snapshots, &mut keys_by_snapshot, &roots)?;
        let dangling_keys = keys_by_snapshot
            .into_values()
            .flatten()
            .map(|(p, _)| p)
            .collect();
        items.extend(record_items(root, &roots)?);
        items.extend(mount_items(root)?);
        // Build-context stat caches, rewritten by every build of that context.
        for (name, path) in files_in(&cache_dir(root).join("stat"))? {
            let (size, used) = (disk_usage(&path), mtime_secs(&path));
            let target = Target::ContextIndex(path);
            items.push(Item::plain(
                EntryKind::ContextIndex,
                name,
                size,
                used,
                target,
            ));
        }
        items.extend(blob_items(&content, &roots.0)?);
        // Uploads; a killed process's are reclaimable, a live writer's are not.
        for upload in content.ingests() {
            let used = unix_secs(upload.modified);
            let (id, size) = (upload.name.clone(), upload.size);
            let item = Item::plain(
                EntryKind::Upload,
                id,
                size,
                used,
                Target::Upload(upload.name),
            );
            items.push(item.pinned(upload.live.then_some("in use")));
        }
        let mut inventory = Inventory {
            root: root.to_path_buf(),
            snapshots,
            content,
            items,
            dangling_keys,
        };
        let all_plan = inventory.plan(&PruneOptions {
            all: true,
            ..Default::default()
        });
        for (item, removed) in inventory.items.iter_mut().zip(all_plan) {
            item.entry.reclaimable_all = removed;
        }
        Ok(inventory)
    }

    /// Every entry, with `reclaimable` answering for a prune with `options`.
    pub fn entries(&self, options: &PruneOptions) -> Vec<Entry> {
        let plan = self.plan(options);
        self.items
            .iter()
            .zip(plan)
            .map(|(item, removed)| Entry {
                reclaimable: removed,
                ..item.entry.clone()
            })
            .collect()
    }

    /// Which items a prune with `options` removes (parallel to `self.items`).
    fn plan(&self, options: &PruneOptions) -> Vec<bool> {
        let now = unix_secs(SystemTime::now());
        let type_ok = |kind: EntryKind| {
            if options.types.is_empty() {
                kind != EntryKind::CacheMount || options.all
            } else {
                options.types.contains(&kind.filter_type())
            }
        };
        let old_enough = |item: &Item| match options.until {
            None => true,
            Some(d) => item.entry.last_used.saturating_add(d.as_secs()) <= now,
        };
        // Blobs some entry names follow that entry; only the others are entries of their own.
        let named: HashSet<&str> = self
            .items
            .iter()
            .flat_map(|i| i.blobs.iter().map(String::as_str))
            .collect();
        let follows =
            |item: &Item| matches!(&item.target, Target::Blob(d) if named.contains(d.as_str()));
        let mut remove: Vec<bool> = self
            .items
            .iter()
            .map(|item| {
                item.pinned.is_none()
                    && (options.all || !item.needs_all)
                    && !follows(item)
                    && type_ok(item.entry.kind)
                    && old_enough(item)
            })
            .collect();

        if let Some(budget) = options.keep_storage {
            // Most recently used first; parents before their children, which they outlive.
            let mut order: Vec<usize> = (0..self.items.len()).filter(|&i| remove[i]).collect();
            order.sort_by_key(|&i| {
                let item = &self.items[i];
                (std::cmp::Reverse(item.entry.last_used), item.depth)
            });
            let mut kept = 0u64;
            for i in order {
                let size = self.items[i].entry.size;
                if kept + size > budget {
                    break;
                }
                kept += size;
                remove[i] = false;
            }
        }

        // A snapshot stays while anything built on it stays.
        let index_of: HashMap<&str, usize> = self
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match &item.target {
                Target::Snapshot { key, .. } => Some((key.as_str(), i)),
                _ => None,
            })
            .collect();
        let mut by_depth: Vec<usize> = index_of.values().copied().collect();
        by_depth.sort_by_key(|&i| std::cmp::Reverse(self.items[i].depth));
        for i in by_depth {
            if remove[i] {
                continue;
            }
            let mut parent = match &self.items[i].target {
                Target::Snapshot { parent, .. } => parent.clone(),
                _ => None,
            };
            while let Some(p) = parent {
                let Some(&pi) = index_of.get(p.as_str()) else {
                    break;
                };
                remove[pi] = false;
                parent = match &self.items[pi].target {
                    Target::Snapshot { parent, .. } => parent.clone(),
                    _ => None,
                };
            }
        }

        // Blobs named by entries go when every entry naming them goes.
        let kept_names: HashSet<&str> = self
            .items
            .iter()
            .zip(&remove)
            .filter(|(_, removed)| !**removed)
            .flat_map(|(i, _)| i.blobs.iter().map(String::as_str))
            .collect();
        for (item, removed) in self.items.iter().zip(remove.iter_mut()) {
            if let Target::Blob(d) = &item.target {
                if follows(item) {
                    *removed = item.pinned.is_none()
                        && type_ok(EntryKind::Blob)
                        && !kept_names.contains(d.as_str());
                }
            }
        }
        remove
    }

    /// Removes what a prune with `options` removes. Hold [`StoreLock::exclusive`].
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport> {
        let plan = self.plan(options);
        let chosen: Vec<&Item> = self
            .items
            .iter()
            .zip(&plan)
            .filter(|(_, removed)| **removed)
            .map(|(item, _)| item)
            .collect();
        let mut report = PruneReport::default();
        // Leftovers of killed processes: temp mounts and copies, half-made cache mounts.
        // Nothing else runs on the store now, so no age limit is needed.
        crate::mounts::sweep_stale(&self.root);
        let mut done = |item: &Item| {
            report.reclaimed += item.entry.size;
            report.removed.push(Entry {
                reclaimable: true,
                ..item.entry.clone()
            });
        };

        // 1. References: cache keys and records, so nothing answers from what goes next.
        if options.types.is_empty() || options.types.contains(&FilterType::Regular) {
            for path in &self.dangling_keys {
                remove_file(path)?;
            }
        }
        for item in &chosen {
            match &item.target {
                Target::Snapshot { key_files, .. } => {
                    for path in key_files {
                        remove_file(path)?;
                    }
                }
                Target::Record(path) => {
                    remove_file(path)?;
                    done(item);
                }
                _ => {}
            }
        }
        crash_point("references");
        // 2. Snapshots, in one metadata write (the plan never leaves a child of one behind).
        let snapshots: Vec<&Item> = chosen
            .iter()
            .copied()
            .filter(|i| matches!(i.target, Target::Snapshot { .. }))
            .collect();
        let keys: Vec<String> = snapshots.iter().map(|i| i.entry.id.clone()).collect();
        self.snapshots
            .remove_all(&keys)
            .context("removing snapshots")?;
        snapshots.into_iter().for_each(&mut done);
        crash_point("snapshots");
        // 3. Cache mounts, build-context indexes, then blobs.
        for item in &chosen {
            match &item.target {
                Target::Mount(name) if self.remove_mount(name)? => done(item),
                Target::ContextIndex(path) => {
                    remove_file(path)?;
                    done(item);
                }
                // Checked again: a writer may have taken it since the scan.
                Target::Upload(name) if self.content.remove_ingest_if_abandoned(name) > 0 => {
                    report.abandoned_uploads += item.entry.size;
                    done(item);
                }
                _ => {}
            }
        }
        crash_point("mounts");
        for item in &chosen {
            if let Target::Blob(digest) = &item.target {
                match self.content.delete(digest) {
                    Ok(()) | Err(snapshotter::Error::NotFound(_)) => done(item),
                    Err(e) => return Err(e).with_context(|| format!("removing blob {digest}")),
                }
            }
        }
        Ok(report)
    }

    /// Removes a cache mount unless a build holds its lock; false if it was busy.
    fn remove_mount(&self, name: &str) -> Result<bool> {
        let lock_path = cache_dir(&self.root).join("mount-locks").join(name);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            return Ok(false);
        }
        // Renamed out of place first, so a kill -9 leaves either the whole cache or a staging
        // dir that the next build sweeps (its name says its creator is dead).
        let staging = cache_dir(&self.root).join("mounts-staging");
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        let doomed = staging.join(format!("cache-{}-gc-{name}", std::process::id()));
        let dir = mounts_dir(&self.root).join(name);
        std::fs::rename(&dir, &doomed)
            .with_context(|| format!("moving {} aside", dir.display()))?;
        crash_point("mount-moved");
        std::fs::remove_dir_all(&doomed)
            .with_context(|| format!("removing {}", doomed.display()))?;
        remove_file(&lock_path)?;
        Ok(true)
    }
}

/// For crash-consistency tests: `BUILDER_PRUNE_ABORT_AFTER=<phase>` ends the process right
/// after that phase of a prune, without unwinding, as a kill -9 would.
fn crash_point(phase: &str) {
    if std::env::var_os("BUILDER_PRUNE_ABORT_AFTER").is_some_and(|p| p == phase) {
        std::process::abort();
    }
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Totals per kind: (entries, bytes, reclaimable bytes, reclaimable bytes with `--all`).
pub fn totals(entries: &[Entry]) -> BTreeMap<EntryKind, (usize, u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for e in entries {
        let t: &mut (usize, u64, u64, u64) = out.entry(e.kind).or_default();
        t.0 += 1;
        t.1 += e.size;
        if e.reclaimable {
            t.2 += e.size;
        }
        if e.reclaimable_all {
            t.3 += e.size;
        }
    }
    out
}

/// Parses a Go duration as `--filter until=` takes it: "24h", "1h30m", "90s", "500ms".
pub fn parse_duration(text: &str) -> Result<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        bail!("empty duration: want e.g. 24h, 90m or 1h30m");
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().map_err(|_| {
            anyhow::anyhow!("invalid duration {text:?}: want e.g. 24h, 90m or 1h30m")
        })?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => {
                bail!("invalid duration {text:?}: unit {unit:?} is not one of ns, us, ms, s, m, h")
            }
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(number * seconds);
    }
    Ok(total)
}

/// Parses a size as docker's `--keep-storage` takes it: bytes, or with b/k/m/g/t (binary,
/// optionally followed by "b" or "ib"), e.g. "512m", "10GB", "1.5GiB".
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size {text:?}: want e.g. 512MB, 10GB or 1048576"))?;
    let scale: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => bail!("invalid size {text:?}: unit {unit:?} is not one of b, k, m, g, t"),
    };
    Ok((number * scale as f64) as u64)
}

/// Bytes as docker prints them (one formatter for the whole project, in `oci`).
pub use oci::human_size;

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits a snapshot on `parent` holding one file of `bytes` bytes.
    fn commit(snaps: &Snapshotter, name: &str, parent: Option<&str>, bytes: usize) {
        let active = format!("{name}-making");
        snaps.prepare(&active, parent).unwrap();
        let dir = snaps.upper_dir(&active).unwrap();
        std::fs::write(dir.join(name), vec![1u8; bytes]).unwrap();
        snaps.commit(name, &active).unwrap();
    }

    fn removed_ids(report: &PruneReport) -> Vec<&str> {
        let mut ids: Vec<&str> = report.removed.iter().map(|e| e.id.as_str()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn snapshots_a_live_process_builds_on_stay_and_dead_ones_go() {
        let root = tempfile::tempdir().unwrap();
        let snaps = Snapshotter::open(root.path()).unwrap();
        commit(&snaps, "base", None, 10);
        commit(&snaps, "child", Some("base"), 10);
        commit(&snaps, "other", Some("base"), 10);
        let live = format!("active-{}-0-0", std::process::id());
        snaps.prepare(&live, Some("child")).unwrap();
        // No process has this id (above the largest pid_max), so its snapshot is a leftover.
        snaps.prepare("active-4194305-0-0", Some("other")).unwrap();

        let report = Inventory::scan(root.path())
            .unwrap()
            .prune(&PruneOptions::default())
            .unwrap();
        assert_eq!(removed_ids(&report), ["active-4194305-0-0", "other"]);
        let left: BTreeMap<String, Kind> = snaps
            .walk()
            .unwrap()
            .into_iter()
            .map(|i| (i.key, i.kind))
            .collect();
        let expected: BTreeMap<String, Kind> = [
            ("base".to_string(), Kind::Committed),
            ("child".to_string(), Kind::Committed),
            (live, Kind::Active),
        ]
        .into();
        assert_eq!(left, expected);
    }

    #[test]
    fn keep_storage_keeps_parents_before_children() {
        let root = tempfile::tempdir().unwrap();
        let snaps = Snapshotter::open(root.path()).unwrap();
        commit(&snaps, "base", None, 64 << 10);
        commit(&snaps, "child", Some("base"), 64 << 10);
        let inventory = Inventory::scan(root.path()).unwrap();
        let size = |id: &str| {
            inventory
                .entries(&PruneOptions::default())
                .into_iter()
                .find(|e| e.id == id)
                .unwrap()
                .size
        };
        let (base, child) = (size("base"), size("child"));
        let plan = |keep: u64| {
            let entries = inventory.entries(&PruneOptions {
                keep_storage: Some(keep),
                ..Default::default()
            });
            let mut gone: Vec<String> = entries
                .into_iter()
                .filter(|e| e.reclaimable)
                .map(|e| e.id)
                .collect();
            gone.sort();
            gone
        };
        assert_eq!(plan(base + child), Vec::<String>::new());
        assert_eq!(plan(base + child - 1), ["child"], "the child goes first");
        assert_eq!(plan(base), ["child"]);
        assert_eq!(plan(base - 1), ["base", "child"]);
    }

    #[test]
    fn durations_follow_go_syntax() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["", "24", "3d", "h", "1x"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn sizes_use_binary_units_like_docker() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("10GB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("0").unwrap(), 0);
        for bad in ["", "ten", "5x", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
