//! Content-addressed blob store: `ROOT/content/blobs/sha256/<hex>`, uploads staged in `ROOT/content/ingest`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::FlockOperation;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::util::{create_dir_all, fsync_dir, unique_name};

/// Ingest files older than this whose writer is gone (lock free) are removed on open.
const STALE_INGEST_AGE: Duration = Duration::from_secs(3600);

/// Blobs by sha256 digest ("sha256:<64 hex>") under ROOT/content/blobs/sha256/<hex>.
#[derive(Clone, Debug)]
pub struct ContentStore {
    inner: Arc<Dirs>,
}

#[derive(Debug)]
struct Dirs {
    blobs: PathBuf,
    ingest: PathBuf,
}

/// Returns the hex part of a well-formed "sha256:<64 lowercase hex>" digest.
fn digest_hex(digest: &str) -> Result<&str> {
    oci::sha256_hex(digest).map_err(|e| Error::Invalid(e.to_string()))
}

impl ContentStore {
    /// Opens (creating if needed) the content store under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let content = root.join("content");
        let blobs = create_dir_all(&content.join("blobs").join("sha256"))?;
        let ingest = create_dir_all(&content.join("ingest"))?;
        remove_stale_ingests(&ingest);
        Ok(ContentStore {
            inner: Arc::new(Dirs { blobs, ingest }),
        })
    }

    /// Path where the blob with `digest` lives (a never-existing path for malformed digests).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        match digest_hex(digest) {
            Ok(hex) => self.inner.blobs.join(hex),
            // Keep malformed input (e.g. "sha256:../x") from ever naming a real file.
            Err(_) => self.inner.blobs.join(".invalid-digest"),
        }
    }

    /// Whether the blob is present.
    pub fn has(&self, digest: &str) -> bool {
        digest_hex(digest).is_ok() && self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        digest_hex(digest)?;
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("blob {digest}"))
            } else {
                Error::io(format!("opening blob {}", path.display()), e)
            }
        })
    }

    /// Reads a whole blob into memory.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut data)
            .ctx(|| format!("reading blob {digest}"))?;
        Ok(data)
    }

    /// Stores `data` and returns its digest.
    pub fn put_bytes(&self, data: &[u8]) -> Result<String> {
        let mut writer = self.writer()?;
        writer
            .write_all(data)
            .ctx(|| "writing blob to ingest".to_string())?;
        Ok(writer.commit(None)?.0)
    }

    /// Starts a new blob upload staged in the ingest dir; hashes while writing.
    pub fn writer(&self) -> Result<BlobWriter> {
        let path = self.inner.ingest.join(unique_name(""));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx(|| format!("creating ingest file {}", path.display()))?;
        // The lock tells `remove_stale_ingests` in other processes that this file is live.
        rustix::fs::flock(&file, FlockOperation::LockExclusive)
            .ctx(|| format!("locking ingest file {}", path.display()))?;
        Ok(BlobWriter {
            file: Some(file),
            temp_path: path,
            hasher: Sha256::new(),
            size: 0,
            written_back: 0,
            blobs_dir: self.inner.blobs.clone(),
        })
    }

    /// Lists all blobs as (digest, size).
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        let dir = &self.inner.blobs;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let digest = format!("sha256:{name}");
            if digest_hex(&digest).is_err() {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted concurrently.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("stat of blob {digest}"), e)),
            };
            out.push((digest, meta.len()));
        }
        out.sort();
        Ok(out)
    }

    /// Deletes a blob; NotFound if absent.
    pub fn delete(&self, digest: &str) -> Result<()> {
        digest_hex(digest)?;
        let path = self.blob_path(digest);
        std::fs::remove_file(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("blob {digest}"))
            } else {
                Error::io(format!("deleting blob {}", path.display()), e)
            }
        })
    }

    /// Removes every ingest file no live writer holds (uploads of killed processes, however
    /// recent); returns the bytes freed. For garbage collection, which runs alone on the store.
    pub fn remove_abandoned_ingests(&self) -> u64 {
        remove_stale_ingests_older_than(&self.inner.ingest, Duration::ZERO)
    }

    /// The unfinished uploads in the ingest dir, each marked live if a writer still holds it.
    pub fn ingests(&self) -> Vec<Ingest> {
        let Ok(entries) = std::fs::read_dir(&self.inner.ingest) else {
            return Vec::new();
        };
        let mut out: Vec<Ingest> = entries
            .flatten()
            .filter_map(|entry| {
                let meta = entry.metadata().ok().filter(|m| m.is_file())?;
                let path = entry.path();
                let live = File::open(&path).is_ok_and(|f| {
                    rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_err()
                });
                Some(Ingest {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    path,
                    size: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    live,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Removes one ingest file unless a live writer holds it; returns the bytes freed.
    pub fn remove_ingest_if_abandoned(&self, name: &str) -> u64 {
        if name.contains('/') || name.starts_with('.') {
            return 0;
        }
        remove_if_abandoned(&self.inner.ingest.join(name))
    }
}

/// An upload staged in the ingest dir: a live writer's, or one a killed process left behind.
#[derive(Clone, Debug)]
pub struct Ingest {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
    /// A writer holds its lock.
    pub live: bool,
}

/// Best effort: removes ingest files left by killed writers.
fn remove_stale_ingests(ingest: &Path) {
    remove_stale_ingests_older_than(ingest, STALE_INGEST_AGE);
}

fn remove_stale_ingests_older_than(ingest: &Path, min_age: Duration) -> u64 {
    let Ok(entries) = std::fs::read_dir(ingest) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut freed = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= min_age);
        if old {
            freed += remove_if_abandoned(&entry.path());
        }
    }
    freed
}

/// Removes an ingest file whose lock no writer holds; returns its size if removed.
fn remove_if_abandoned(path: &Path) -> u64 {
    let Ok(file) = File::open(path) else {
        return 0;
    };
    let size = file.metadata().map_or(0, |m| m.len());
    if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok()
        && std::fs::remove_file(path).is_ok()
    {
        size
    } else {
        0
    }
}

/// An in-progress blob upload; dropping it without `commit` discards the data.
pub struct BlobWriter {
    file: Option<File>,
    temp_path: PathBuf,
    hasher: Sha256,
    size: u64,
    /// Bytes already handed to writeback, so the fsync at commit has only the tail left.
    written_back: u64,
    blobs_dir: PathBuf,
}

/// How much a blob writer lets pile up before starting its writeback.
const WRITEBACK_STEP: u64 = 8 << 20;

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("blob writer already finished"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if self.size - self.written_back >= WRITEBACK_STEP {
            // Start (not wait for) writing this stretch out; the commit's fsync then waits
            // for little. Only a hint: failure just leaves the work to the fsync.
            // SAFETY: plain syscall on an open fd with in-range offsets.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    self.written_back as i64,
                    (self.size - self.written_back) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.written_back = self.size;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Verifies `expected` (if given), fsyncs and atomically moves the blob into place; returns (digest, size).
    pub fn commit(mut self, expected: Option<&str>) -> Result<(String, u64)> {
        let hasher = std::mem::take(&mut self.hasher);
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Some(expected) = expected {
            digest_hex(expected)?;
            if expected != digest {
                return Err(Error::Invalid(format!(
                    "digest mismatch: expected {expected}, got {digest} ({} bytes)",
                    self.size
                )));
            }
        }
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Invalid("blob writer already finished".into()))?;
        let target = self.blobs_dir.join(&digest["sha256:".len()..]);
        if target.exists() {
            // Same digest, same bytes: the existing blob wins and Drop removes our temp file.
            self.file = Some(file);
            return Ok((digest, self.size));
        }
        file.sync_all()
            .ctx(|| format!("fsyncing {}", self.temp_path.display()))?;
        self.file = Some(file);
        // Renaming over a concurrently committed identical blob is harmless.
        std::fs::rename(&self.temp_path, &target)
            .ctx(|| format!("moving blob into place at {}", target.display()))?;
        self.file = None;
        fsync_dir(&self.blobs_dir)?;
        Ok((digest, self.size))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}
