//! Client-provided directories (the build context) and content checksums of them.
//!
//! Cache keys of ops that read the context depend on the checksums of exactly
//! the files they read: content, type and permission bits, never mtimes. A stat
//! cache (size, mtime, ctime, inode → content digest) persisted in the store
//! lets a no-op rebuild skip re-reading unchanged files.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A directory supplied by the client, with its ignore rules.
pub trait LocalSource: Send + Sync {
    /// The directory on the client's filesystem.
    fn root(&self) -> &Path;
    /// Whether the slash-separated relative path is excluded (by `.dockerignore`).
    fn is_excluded(&self, rel: &str) -> bool;
    /// Whether an excluded directory may still contain re-included entries (`!` rules),
    /// so that it must be walked anyway.
    fn may_reinclude_under(&self, rel_dir: &str) -> bool;
}

/// A plain directory with nothing excluded.
pub struct PlainDir(pub PathBuf);

impl LocalSource for PlainDir {
    fn root(&self) -> &Path {
        &self.0
    }
    fn is_excluded(&self, _rel: &str) -> bool {
        false
    }
    fn may_reinclude_under(&self, _rel_dir: &str) -> bool {
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One included entry of a context.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: EntryKind,
    pub mode: u32,
    /// Content digest of a file, or of a symlink's target.
    pub digest: [u8; 32],
}

/// Every included entry of a context, by slash-separated relative path.
pub struct ContextIndex {
    pub root: PathBuf,
    pub entries: BTreeMap<String, Entry>,
}

/// What a file's content digest was last time, keyed by stat data that changes whenever the
/// content can have changed (size, mtime, ctime, inode).
#[derive(Clone, Copy, PartialEq)]
struct StatEntry {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    digest: [u8; 32],
}

impl StatEntry {
    fn of(md: &std::fs::Metadata, digest: [u8; 32]) -> Self {
        StatEntry {
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
            digest,
        }
    }

    fn matches(&self, md: &std::fs::Metadata) -> bool {
        *self == StatEntry::of(md, self.digest)
    }
}

/// The stat cache file: a compact binary format, because a JSON map of 20k paths costs
/// more to parse than a no-op rebuild should take. Layout: magic, then per entry a
/// little-endian u32 path length, the path, size, mtime, ctime, inode and digest.
struct StatCache;

const STAT_CACHE_MAGIC: &[u8; 8] = b"bldstat1";
const STAT_RECORD_LEN: usize = 8 * 4 + 32;

impl StatCache {
    fn decode(buf: &[u8]) -> HashMap<&str, StatEntry> {
        let mut out = HashMap::new();
        let Some(mut rest) = buf.strip_prefix(STAT_CACHE_MAGIC.as_slice()) else {
            return out;
        };
        let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        while rest.len() >= 4 {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            if rest.len() < 4 + len + STAT_RECORD_LEN {
                break; // truncated: keep what was read
            }
            let Ok(path) = std::str::from_utf8(&rest[4..4 + len]) else {
                break;
            };
            let r = &rest[4 + len..4 + len + STAT_RECORD_LEN];
            out.insert(
                path,
                StatEntry {
                    size: u64_at(r, 0),
                    mtime_ns: u64_at(r, 8) as i64,
                    ctime_ns: u64_at(r, 16) as i64,
                    ino: u64_at(r, 24),
                    digest: r[32..64].try_into().unwrap(),
                },
            );
            rest = &rest[4 + len + STAT_RECORD_LEN..];
        }
        out
    }

    fn encode<'a>(entries: impl Iterator<Item = (&'a str, &'a StatEntry)>) -> Vec<u8> {
        let mut out = STAT_CACHE_MAGIC.to_vec();
        for (path, e) in entries {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            for v in [e.size, e.mtime_ns as u64, e.ctime_ns as u64, e.ino] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&e.digest);
        }
        out
    }
}

/// Walks and checksums an included context, reusing the stat cache at `stat_cache` if given.
pub fn index_context(
    src: &dyn LocalSource,
    stat_cache: Option<&Path>,
) -> anyhow::Result<ContextIndex> {
    let root = src.root().to_path_buf();
    let listed = walk(src, &root, "")?;

    let old_bytes = stat_cache
        .and_then(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    let old = StatCache::decode(&old_bytes);

    let hashed: Vec<anyhow::Result<(String, Entry, Option<StatEntry>)>> = listed
        .into_par_iter()
        .map(|(rel, md)| {
            let ft = md.file_type();
            let mode = md.permissions().mode() & 0o7777;
            let path = root.join(&rel);
            let entry = |kind, digest| Entry { kind, mode, digest };
            if ft.is_dir() {
                return Ok((rel, entry(EntryKind::Dir, [0; 32]), None));
            }
            if ft.is_symlink() {
                let target = std::fs::read_link(&path)?;
                let digest = Sha256::digest(target.as_os_str().as_encoded_bytes()).into();
                return Ok((rel, entry(EntryKind::Symlink, digest), None));
            }
            if !ft.is_file() {
                return Ok((rel, entry(EntryKind::Other, [0; 32]), None));
            }
            if let Some(cached) = old.get(rel.as_str()).filter(|c| c.matches(&md)) {
                let cached = *cached;
                return Ok((rel, entry(EntryKind::File, cached.digest), Some(cached)));
            }
            let digest =
                hash_file(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            Ok((
                rel,
                entry(EntryKind::File, digest),
                Some(StatEntry::of(&md, digest)),
            ))
        })
        .collect();

    let mut entries = Vec::with_capacity(hashed.len());
    let mut stats = Vec::with_capacity(hashed.len());
    for item in hashed {
        let (rel, entry, stat) = item?;
        if let Some(stat) = stat {
            stats.push((rel.clone(), stat));
        }
        entries.push((rel, entry));
    }
    if let Some(p) = stat_cache {
        let unchanged =
            stats.len() == old.len() && stats.iter().all(|(k, v)| old.get(k.as_str()) == Some(v));
        if !unchanged {
            // Best effort: a lost stat cache only costs re-hashing next time.
            let bytes = StatCache::encode(stats.iter().map(|(k, v)| (k.as_str(), v)));
            let _ = write_atomic(p, &bytes);
        }
    }
    // Bulk-building from a sorted list is much cheaper than 20k single inserts.
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(ContextIndex {
        root,
        entries: entries.into_iter().collect(),
    })
}

/// Lists the included entries below `dir` (directories before their contents), reading
/// subdirectories in parallel.
fn walk(
    src: &dyn LocalSource,
    dir: &Path,
    prefix: &str,
) -> anyhow::Result<Vec<(String, std::fs::Metadata)>> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        // DirEntry::metadata stats relative to the open directory: no full path walk.
        let md = ent.metadata()?;
        let excluded = src.is_excluded(&rel);
        if md.is_dir() {
            if !excluded || src.may_reinclude_under(&rel) {
                dirs.push((ent.path(), rel, md, excluded));
            }
        } else if !excluded {
            files.push((rel, md));
        }
    }
    let below: Vec<anyhow::Result<Vec<_>>> = dirs
        .par_iter()
        .map(|(path, rel, _, _)| walk(src, path, rel))
        .collect();
    for ((_, rel, md, excluded), sub) in dirs.into_iter().zip(below) {
        let sub = sub?;
        // An excluded directory appears only when something below it was re-included.
        if !excluded || !sub.is_empty() {
            files.push((rel, md));
        }
        files.extend(sub);
    }
    Ok(files)
}

fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Writes a file atomically: temp name, fsync, rename. The file is private (0600).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_with_mode(path, data, 0o600)
}

/// [`write_atomic`] with the given permission bits (e.g. 0644 for a user's output file),
/// creating the parent directory if needed.
pub fn write_atomic_with_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    snapshotter::atomic_write(path, data, mode).map_err(std::io::Error::other)
}

impl ContextIndex {
    /// Checksum of the given relative paths and everything below them.
    pub fn checksum(&self, paths: &[String]) -> String {
        let mut h = Sha256::new();
        // A COPY follows symlinks in its source path, so what the target holds is read too.
        let resolved: Vec<String> = paths
            .iter()
            .filter_map(|p| {
                let r = crate::fileop::resolve_in_root(&self.root, p, true).ok()?;
                let r = r
                    .strip_prefix(&self.root)
                    .ok()?
                    .to_string_lossy()
                    .into_owned();
                (r != *p).then_some(r)
            })
            .collect();
        for p in paths.iter().chain(&resolved) {
            h.update(b"\0path\0");
            h.update(p.as_bytes());
            let under = if p.is_empty() {
                String::new()
            } else {
                format!("{p}/")
            };
            let exact = self.entries.get_key_value(p.as_str());
            let below = self
                .entries
                .range(under.clone()..)
                .take_while(|(k, _)| k.starts_with(&under));
            for (rel, e) in exact.into_iter().chain(below) {
                h.update(rel.as_bytes());
                h.update([0, e.kind as u8]);
                h.update(e.mode.to_le_bytes());
                h.update(e.digest);
            }
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// Whether the relative path (or the root, for "") is present.
    pub fn contains(&self, rel: &str) -> bool {
        rel.is_empty() || self.entries.contains_key(rel)
    }
}
