//! Small filesystem helpers: atomic writes, directory fsync, temp names, file locks.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;

use crate::error::{IoContext, Result};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A name unique across threads and processes, for temp files.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fsyncs a directory so renames and creations inside it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).ctx(|| format!("opening dir {} for fsync", dir.display()))?;
    f.sync_all()
        .ctx(|| format!("fsyncing dir {}", dir.display()))
}

/// Writes `data` to `path` atomically with permission bits `mode`: temp file in the same
/// dir, fsync, rename, dir fsync. Readers see the old file or the new one, never half.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(unique_name(".tmp-"));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))?;
        // The umask may have cleared bits the caller asked for.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .ctx(|| format!("setting the mode of {}", tmp.display()))?;
        f.write_all(data)
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("fsyncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .ctx(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a directory and its parents, with context on failure.
pub(crate) fn create_dir_all(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating dir {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// An flock held on a lock file; released on drop (closing the fd releases it).
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` is held, exclusive or shared.
    pub(crate) fn acquire(path: &Path, exclusive: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .ctx(|| format!("opening lock file {}", path.display()))?;
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        rustix::fs::flock(&file, op).ctx(|| format!("locking {}", path.display()))?;
        Ok(FileLock { _file: file })
    }
}

/// Whether this process runs in a user namespace (rootless mode), where overlay is mounted
/// with `userxattr` and keeps its metadata in `user.overlay.*` xattrs.
pub(crate) fn in_user_namespace() -> bool {
    static IN_USERNS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_USERNS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
    })
}
