//! Overlayfs snapshots with containerd's verbs; metadata in one JSON file guarded by an flock.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, IoContext, Result};
use crate::mount::Mount;
use crate::util::{atomic_write, create_dir_all, now_secs, FileLock};

/// Kind of a snapshot, as in containerd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Writable, made by `prepare`.
    Active,
    /// Read-only view of a committed snapshot, made by `view`.
    View,
    /// Immutable, made by `commit`; can be a parent.
    Committed,
}

/// Public description of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Info {
    /// The snapshot's key (or committed name).
    pub key: String,
    /// The committed parent, if any.
    pub parent: Option<String>,
    /// Active, View or Committed.
    pub kind: Kind,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Committed but not unpacked yet: its dir is filled from its layer blob (by the
    /// [`Unpacker`]) the first time something reads it.
    pub pending: bool,
}

/// Fills the dir of a pending snapshot (second argument) with that snapshot's own layer; set
/// by whoever can read layer blobs (the solver).
pub type Unpacker = Arc<dyn Fn(&Info, &Path) -> std::result::Result<(), String> + Send + Sync>;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    id: u64,
    parent: Option<String>,
    kind: Kind,
    created: u64,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pending: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Metadata {
    next_id: u64,
    snapshots: BTreeMap<String, Record>,
}

/// Overlayfs snapshots, keys are arbitrary strings (e.g. "sha256:..." chain ids or "build-123-4").
#[derive(Clone, Debug)]
pub struct Snapshotter {
    inner: Arc<Paths>,
}

struct Paths {
    dir: PathBuf,
    metadata: PathBuf,
    lock: PathBuf,
    unpacker: OnceLock<Unpacker>,
    /// The metadata file's bytes when last parsed, and what they parsed to: most reads find
    /// the file unchanged and skip parsing it again.
    parsed: std::sync::Mutex<Option<(Vec<u8>, Metadata)>>,
}

impl std::fmt::Debug for Paths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paths").field("dir", &self.dir).finish()
    }
}

impl Snapshotter {
    /// Opens (creating if needed) the snapshot store under ROOT/snapshots and removes dirs left by crashes.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = create_dir_all(&root.join("snapshots"))?;
        let text = dir.to_string_lossy();
        if text.contains(',') || text.contains(':') {
            return Err(Error::Invalid(format!(
                "storage root {text} contains ',' or ':', which overlay mount options cannot express"
            )));
        }
        let snap = Snapshotter {
            inner: Arc::new(Paths {
                metadata: dir.join("metadata.json"),
                lock: dir.join("lock"),
                dir,
                unpacker: OnceLock::new(),
                parsed: Default::default(),
            }),
        };
        crate::mountless::check_store(&snap.inner.dir)?;
        snap.remove_orphans()?;
        Ok(snap)
    }

    /// Installs what fills pending snapshots; without one, reading a pending snapshot fails.
    pub fn set_unpacker(&self, unpacker: Unpacker) {
        let _ = self.inner.unpacker.set(unpacker);
    }

    /// Creates a writable snapshot on top of a committed `parent`; returns its mounts.
    pub fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        if let Some(p) = parent {
            self.unpack_pending(p, true)?;
        }
        self.create(key, parent, Kind::Active)
    }

    /// Creates a read-only view of the committed snapshot `parent`; returns its mounts.
    pub fn view(&self, key: &str, parent: &str) -> Result<Vec<Mount>> {
        self.unpack_pending(parent, true)?;
        self.create(key, Some(parent), Kind::View)
    }

    /// The mounts for an existing snapshot (committed ones mount read-only).
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let first = {
            let _lock = self.lock(false)?;
            let meta = self.load()?;
            let record = get(&meta, key)?;
            match record.kind {
                Kind::Committed => Some(key.to_string()),
                _ => record.parent.clone(),
            }
        };
        if let Some(first) = first {
            self.unpack_pending(&first, true)?;
        }
        let _lock = self.lock(false)?;
        let meta = self.load()?;
        self.mounts_for(&meta, key)
    }

    /// Records a committed snapshot whose files are not unpacked yet: its dir is filled from
    /// its layer (see [`Unpacker`]) when first read. `labels` must say which layer that is.
    pub fn create_pending(
        &self,
        name: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.create_with(name, parent, Kind::Committed, labels, true)
            .map(drop)
    }

    /// Fills the pending snapshots among `key` (and, with `chain`, its ancestors).
    ///
    /// Each is unpacked into a fresh dir that is then renamed over the empty placeholder, so
    /// two processes unpacking the same snapshot cannot mix their files: the second rename
    /// fails on the non-empty dir and its copy is dropped.
    fn unpack_pending(&self, key: &str, chain: bool) -> Result<()> {
        let todo: Vec<(Info, u64)> = {
            let _lock = self.lock(false)?;
            let meta = self.load()?;
            let mut todo = Vec::new();
            let mut next = Some(key.to_string());
            let mut seen = HashSet::new();
            while let Some(k) = next {
                if !seen.insert(k.clone()) {
                    break;
                }
                let record = get(&meta, &k)?;
                if record.pending {
                    todo.push((info(&k, record), record.id));
                }
                next = if chain { record.parent.clone() } else { None };
            }
            todo
        };
        if todo.is_empty() {
            return Ok(());
        }
        let unpacker = self.inner.unpacker.get().ok_or_else(|| {
            Error::Invalid(format!(
                "snapshot {key:?} is not unpacked and nothing here can unpack it"
            ))
        })?;
        for (info, id) in todo {
            let fs = self.fs_dir(id);
            let tmp = self.id_dir(id).join(format!(
                "fs.unpack-{}-{}",
                std::process::id(),
                unique_suffix()
            ));
            create_dir_all(&tmp)?;
            let filled = copy_root_attrs(&fs, &tmp).and_then(|()| {
                unpacker(&info, &tmp)
                    .map_err(|e| Error::Invalid(format!("unpacking snapshot {}: {e}", info.key)))
            });
            if let Err(e) = filled {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            if std::fs::rename(&tmp, &fs).is_err() {
                // Another process filled it first: keep theirs.
                let _ = std::fs::remove_dir_all(&tmp);
            }
            let _lock = self.lock(true)?;
            let mut meta = self.load()?;
            if let Some(record) = meta.snapshots.get_mut(&info.key) {
                if record.pending {
                    record.pending = false;
                    self.save(&meta)?;
                }
            }
        }
        Ok(())
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`.
    pub fn commit(&self, name: &str, key: &str) -> Result<()> {
        check_key(name)?;
        let _lock = self.lock(true)?;
        let mut meta = self.load()?;
        let record = get(&meta, key)?;
        if record.kind != Kind::Active {
            return Err(Error::Invalid(format!(
                "cannot commit snapshot {key:?}: it is {:?}, not Active",
                record.kind
            )));
        }
        if meta.snapshots.contains_key(name) {
            return Err(Error::AlreadyExists(format!("snapshot {name}")));
        }
        let mut record = meta
            .snapshots
            .remove(key)
            .ok_or_else(|| Error::NotFound(format!("snapshot {key}")))?;
        record.kind = Kind::Committed;
        meta.snapshots.insert(name.to_string(), record);
        self.save(&meta)
    }

    /// Removes a snapshot and its files; Invalid if other snapshots are based on it.
    pub fn remove(&self, key: &str) -> Result<()> {
        let id = {
            let _lock = self.lock(true)?;
            let mut meta = self.load()?;
            let id = get(&meta, key)?.id;
            let children: Vec<&String> = meta
                .snapshots
                .iter()
                .filter(|(_, r)| r.parent.as_deref() == Some(key))
                .map(|(k, _)| k)
                .collect();
            if !children.is_empty() {
                return Err(Error::Invalid(format!(
                    "cannot remove snapshot {key:?}: snapshots {children:?} are based on it"
                )));
            }
            meta.snapshots.remove(key);
            self.save(&meta)?;
            id
        };
        // Outside the lock: ids are never reused, and a crash here leaves an orphan that `open` removes.
        remove_dir_if_exists(&self.id_dir(id))
    }

    /// Removes several snapshots with one metadata write (garbage collection); removes
    /// nothing, Invalid, if a snapshot not in `keys` is based on one of them.
    pub fn remove_all(&self, keys: &[String]) -> Result<()> {
        let ids = {
            let _lock = self.lock(true)?;
            let mut meta = self.load()?;
            let doomed: HashSet<&str> = keys.iter().map(String::as_str).collect();
            let ids = keys
                .iter()
                .map(|k| get(&meta, k).map(|r| r.id))
                .collect::<Result<Vec<u64>>>()?;
            let kept_child = meta.snapshots.iter().find(|(k, r)| {
                !doomed.contains(k.as_str())
                    && r.parent.as_deref().is_some_and(|p| doomed.contains(p))
            });
            if let Some((child, r)) = kept_child {
                return Err(Error::Invalid(format!(
                    "cannot remove snapshot {:?}: snapshot {child:?} is based on it",
                    r.parent.as_deref().unwrap_or_default()
                )));
            }
            for key in keys {
                meta.snapshots.remove(key);
            }
            self.save(&meta)?;
            ids
        };
        // As in `remove`: a crash from here on leaves orphans that `open` removes.
        for id in ids {
            remove_dir_if_exists(&self.id_dir(id))?;
        }
        Ok(())
    }

    /// Describes a snapshot.
    pub fn stat(&self, key: &str) -> Result<Info> {
        let _lock = self.lock(false)?;
        let meta = self.load()?;
        Ok(info(key, get(&meta, key)?))
    }

    /// Whether a snapshot with this key exists.
    pub fn exists(&self, key: &str) -> bool {
        self.stat(key).is_ok()
    }

    /// Lists all snapshots.
    pub fn walk(&self) -> Result<Vec<Info>> {
        let _lock = self.lock(false)?;
        let meta = self.load()?;
        Ok(meta.snapshots.iter().map(|(k, r)| info(k, r)).collect())
    }

    /// Disk usage in bytes (allocated blocks, hardlinks counted once) of this snapshot's own dir.
    pub fn usage(&self, key: &str) -> Result<u64> {
        let dir = {
            let _lock = self.lock(false)?;
            let meta = self.load()?;
            self.id_dir(get(&meta, key)?.id)
        };
        disk_usage(&dir)
    }

    /// The dir holding this snapshot's own changes (overlay upperdir; for a parentless snapshot, the whole fs).
    pub fn upper_dir(&self, key: &str) -> Result<PathBuf> {
        let (dir, pending) = {
            let _lock = self.lock(false)?;
            let meta = self.load()?;
            let record = get(&meta, key)?;
            if record.kind == Kind::View {
                return Err(Error::Invalid(format!(
                    "snapshot {key:?} is a view and has no dir of its own"
                )));
            }
            (self.fs_dir(record.id), record.pending)
        };
        if pending {
            self.unpack_pending(key, false)?;
        }
        Ok(dir)
    }

    /// Sets (or replaces) a label on a snapshot.
    pub fn set_label(&self, key: &str, name: &str, value: &str) -> Result<()> {
        self.set_labels(key, [(name.to_string(), value.to_string())])
    }

    /// Sets (or replaces) several labels on a snapshot in one metadata write.
    pub fn set_labels(
        &self,
        key: &str,
        labels: impl IntoIterator<Item = (String, String)>,
    ) -> Result<()> {
        let _lock = self.lock(true)?;
        let mut meta = self.load()?;
        let record = meta
            .snapshots
            .get_mut(key)
            .ok_or_else(|| Error::NotFound(format!("snapshot {key}")))?;
        record.labels.extend(labels);
        self.save(&meta)
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind) -> Result<Vec<Mount>> {
        self.create_with(key, parent, kind, BTreeMap::new(), false)
    }

    /// Records a new snapshot and makes its dirs; returns its mounts (none when pending).
    fn create_with(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: BTreeMap<String, String>,
        pending: bool,
    ) -> Result<Vec<Mount>> {
        check_key(key)?;
        let _lock = self.lock(true)?;
        let mut meta = self.load()?;
        if meta.snapshots.contains_key(key) {
            return Err(Error::AlreadyExists(format!("snapshot {key}")));
        }
        let parent_id = match parent {
            Some(p) => {
                let record = get(&meta, p)?;
                if record.kind != Kind::Committed {
                    return Err(Error::Invalid(format!(
                        "parent snapshot {p:?} is {:?}; only Committed snapshots can be parents",
                        record.kind
                    )));
                }
                Some(record.id)
            }
            None => None,
        };
        let id = meta.next_id;
        meta.next_id += 1;
        let dir = self.id_dir(id);
        // A crash between mkdir and saving metadata can leave this id's dir behind.
        remove_dir_if_exists(&dir)?;
        let result = (|| {
            create_dir_all(&dir)?;
            // An active snapshot writes into its fs dir; a pending one is unpacked into it.
            if kind == Kind::Active || pending {
                let fs = create_dir_all(&dir.join("fs"))?;
                if let Some(pid) = parent_id {
                    if kind == Kind::Active {
                        create_dir_all(&dir.join("work"))?;
                    }
                    copy_root_attrs(&self.fs_dir(pid), &fs)?;
                }
            }
            meta.snapshots.insert(
                key.to_string(),
                Record {
                    id,
                    parent: parent.map(str::to_string),
                    kind,
                    created: now_secs(),
                    labels,
                    pending,
                },
            );
            let mounts = if pending {
                Vec::new()
            } else {
                self.mounts_for(&meta, key)?
            };
            self.save(&meta)?;
            Ok(mounts)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn mounts_for(&self, meta: &Metadata, key: &str) -> Result<Vec<Mount>> {
        let record = get(meta, key)?;
        let lowers = match record.kind {
            Kind::Active => match &record.parent {
                None => {
                    return Ok(vec![Mount {
                        fstype: "bind".into(),
                        source: path_str(&self.fs_dir(record.id))?,
                        options: vec!["rbind".into(), "rw".into()],
                    }])
                }
                Some(parent) => self.chain(meta, parent)?,
            },
            Kind::View => {
                let parent = record.parent.as_deref().ok_or_else(|| {
                    Error::Invalid(format!("view {key:?} has no parent in metadata"))
                })?;
                self.chain(meta, parent)?
            }
            Kind::Committed => self.chain(meta, key)?,
        };
        let lowerdir = format!("lowerdir={}", lowers.join(":"));
        if record.kind != Kind::Active {
            if lowers.len() == 1 {
                // Overlay needs two lowers when it has no upper; one lower is just a read-only bind.
                return Ok(vec![Mount {
                    fstype: "bind".into(),
                    source: lowers[0].clone(),
                    options: vec!["rbind".into(), "ro".into()],
                }]);
            }
            let mut options = vec!["ro".to_string(), lowerdir];
            if crate::util::in_user_namespace() {
                options.push("userxattr".into());
            }
            check_option_length(&options)?;
            return Ok(vec![overlay(options)]);
        }
        let dir = self.id_dir(record.id);
        let mut options = vec![
            // Our diff code reads plain upper dirs; these features would store changes elsewhere.
            "index=off".to_string(),
            "metacopy=off".to_string(),
            "redirect_dir=off".to_string(),
            lowerdir,
            format!("upperdir={}", path_str(&dir.join("fs"))?),
            format!("workdir={}", path_str(&dir.join("work"))?),
        ];
        if crate::util::in_user_namespace() {
            // Overlay in a user namespace cannot use trusted.* xattrs (kernel >= 5.11), and
            // with user.* xattrs it refuses to follow redirects ("off" means follow them).
            options[2] = "redirect_dir=nofollow".into();
            options.push("userxattr".into());
        }
        check_option_length(&options)?;
        Ok(vec![overlay(options)])
    }

    /// The fs dirs of `key` and its ancestors, nearest first.
    fn chain(&self, meta: &Metadata, key: &str) -> Result<Vec<String>> {
        let mut dirs = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Some(key.to_string());
        while let Some(k) = next {
            if !seen.insert(k.clone()) {
                return Err(Error::Invalid(format!(
                    "snapshot metadata has a parent cycle at {k:?}"
                )));
            }
            let record = get(meta, &k)?;
            dirs.push(path_str(&self.fs_dir(record.id))?);
            next = record.parent.clone();
        }
        Ok(dirs)
    }

    fn id_dir(&self, id: u64) -> PathBuf {
        self.inner.dir.join(id.to_string())
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.id_dir(id).join("fs")
    }

    fn lock(&self, exclusive: bool) -> Result<FileLock> {
        FileLock::acquire(&self.inner.lock, exclusive)
    }

    fn load(&self) -> Result<Metadata> {
        let path = &self.inner.metadata;
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Metadata::default()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let mut parsed = self.inner.parsed.lock().unwrap_or_else(|e| e.into_inner());
        // Compared byte for byte, so another process's write is never missed.
        if let Some((bytes, meta)) = parsed.as_ref() {
            if *bytes == data {
                return Ok(meta.clone());
            }
        }
        let meta: Metadata = serde_json::from_slice(&data).map_err(|e| {
            Error::Invalid(format!("corrupt snapshot metadata {}: {e}", path.display()))
        })?;
        *parsed = Some((data, meta.clone()));
        Ok(meta)
    }

    fn save(&self, meta: &Metadata) -> Result<()> {
        let data = serde_json::to_vec_pretty(meta)
            .map_err(|e| Error::Invalid(format!("serializing snapshot metadata: {e}")))?;
        atomic_write(&self.inner.metadata, &data, 0o644)?;
        *self.inner.parsed.lock().unwrap_or_else(|e| e.into_inner()) = Some((data, meta.clone()));
        Ok(())
    }

    /// Removes numeric dirs that no metadata record owns (left by a crash mid-prepare or mid-remove).
    fn remove_orphans(&self) -> Result<()> {
        let _lock = self.lock(true)?;
        let meta = self.load()?;
        let live: HashSet<u64> = meta.snapshots.values().map(|r| r.id).collect();
        // Only a pending snapshot can have an unpack left by a process that died in it.
        let pending: HashSet<u64> = meta
            .snapshots
            .values()
            .filter(|r| r.pending)
            .map(|r| r.id)
            .collect();
        let dir = &self.inner.dir;
        for entry in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if !live.contains(&id) {
                // Best effort: a concurrent `remove` may be deleting the same dir.
                let _ = std::fs::remove_dir_all(entry.path());
            } else if pending.contains(&id) {
                remove_stale_unpacks(&entry.path());
            }
        }
        Ok(())
    }
}

fn overlay(options: Vec<String>) -> Mount {
    Mount {
        fstype: "overlay".into(),
        source: "overlay".into(),
        options,
    }
}

fn check_option_length(options: &[String]) -> Result<()> {
    let len: usize = options.iter().map(|o| o.len() + 1).sum();
    if len > crate::mount::MAX_MOUNT_DATA {
        return Err(Error::Invalid(format!(
            "overlay mount options would be {len} bytes, above the {}-byte limit of mount(2): \
             too many layers for this storage root path",
            crate::mount::MAX_MOUNT_DATA
        )));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::Invalid("snapshot key must not be empty".into()));
    }
    Ok(())
}

fn get<'a>(meta: &'a Metadata, key: &str) -> Result<&'a Record> {
    meta.snapshots
        .get(key)
        .ok_or_else(|| Error::NotFound(format!("snapshot {key}")))
}

fn info(key: &str, r: &Record) -> Info {
    Info {
        key: key.to_string(),
        parent: r.parent.clone(),
        kind: r.kind,
        created: r.created,
        labels: r.labels.clone(),
        pending: r.pending,
    }
}

/// Removes unpack dirs left in a snapshot's dir by processes that died mid-unpack.
fn remove_stale_unpacks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("fs.unpack-"))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Distinguishes temporary dirs made by one process.
fn unique_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Invalid(format!("path {} is not UTF-8", path.display())))
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", dir.display()), e)),
    }
}

/// Gives a new upper dir the owner and mode of the parent's root, since overlay takes the root's attributes from the upper.
fn copy_root_attrs(parent_fs: &Path, fs: &Path) -> Result<()> {
    let meta = std::fs::metadata(parent_fs).ctx(|| format!("stat {}", parent_fs.display()))?;
    std::os::unix::fs::chown(fs, Some(meta.uid()), Some(meta.gid()))
        .ctx(|| format!("chown {}", fs.display()))?;
    std::fs::set_permissions(fs, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .ctx(|| format!("chmod {}", fs.display()))
}

/// Allocated bytes under `dir`, counting each inode once; does not follow symlinks.
fn disk_usage(dir: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        };
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).ctx(|| format!("listing {}", path.display()))? {
                stack.push(entry.ctx(|| format!("listing {}", path.display()))?.path());
            }
        }
    }
    Ok(total)
}
