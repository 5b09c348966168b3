//! Client-provided directories (the build context) and content checksums of them.
//!
//! Cache keys of ops that read the context depend on the checksums of exactly
//! the files they read: content, type and permission bits, never mtimes. A stat
//! cache (size, mtime, ctime, inode → content digest) persisted in the store
//! lets a no-op rebuild skip re-reading unchanged files.

use crate::fileop::{join_rel, match_text, rel_path};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use llb::local::{LocalSource, PlainDir};

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
    /// What the entry's stat said when indexed (see [`EntryStat`]).
    pub stat: EntryStat,
}

/// Stat data that changes whenever anything a copy of the entry carries can have changed
/// (ctime moves on content, mode, owner, xattr and link-count changes): an incremental copy
/// reuses the previous copy of an entry whose stat is the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub nlink: u64,
}

impl EntryStat {
    fn of(md: &std::fs::Metadata) -> Self {
        EntryStat {
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
            nlink: md.nlink(),
        }
    }
}

/// Every included entry of a context, by slash-separated relative path. Paths are bytes:
/// file names need not be UTF-8 (Docker copies them as they are).
pub struct ContextIndex {
    pub root: PathBuf,
    pub entries: BTreeMap<Vec<u8>, Entry>,
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
    fn decode(buf: &[u8]) -> HashMap<&[u8], StatEntry> {
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
            let path = &rest[4..4 + len];
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

    fn encode<'a>(entries: impl Iterator<Item = (&'a [u8], &'a StatEntry)>) -> Vec<u8> {
        let mut out = STAT_CACHE_MAGIC.to_vec();
        for (path, e) in entries {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path);
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
    let listed = walk(src, &root)?;

    let old_bytes = stat_cache
        .and_then(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    let old = StatCache::decode(&old_bytes);

    let hashed: Vec<anyhow::Result<Hashed>> = listed
        .into_par_iter()
        .map(|(rel, md)| {
            let ft = md.file_type();
            let mode = md.permissions().mode() & 0o7777;
            let path = root.join(rel_path(&rel));
            let stat = EntryStat::of(&md);
            let entry = |kind, digest| Entry {
                kind,
                mode,
                digest,
                stat,
            };
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
            if let Some(cached) = old.get(rel.as_slice()).filter(|c| c.matches(&md)) {
                let cached = *cached;
                return Ok((rel, entry(EntryKind::File, cached.digest), Some(cached)));
            }
            if let Some(digest) = src.known_digest(&rel, &md) {
                let stat = StatEntry::of(&md, digest);
                return Ok((rel, entry(EntryKind::File, digest), Some(stat)));
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
            stats.len() == old.len() && stats.iter().all(|(k, v)| old.get(k.as_slice()) == Some(v));
        if !unchanged {
            // Best effort: a lost stat cache only costs re-hashing next time.
            let bytes = StatCache::encode(stats.iter().map(|(k, v)| (k.as_slice(), v)));
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

/// Context entries as [`walk`] lists them: relative path (bytes) and metadata.
type Listed = Vec<(Vec<u8>, std::fs::Metadata)>;

/// An indexed entry, and its stat cache record for files.
type Hashed = (Vec<u8>, Entry, Option<StatEntry>);

/// A directory found by [`walk`], kept until its descendants are known.
struct FoundDir {
    rel: Vec<u8>,
    md: Option<std::fs::Metadata>,
    parent: usize,
    excluded: bool,
    /// Something below it is included.
    has_included: bool,
}

/// Lists the included entries of the context (paths as bytes), reading each level's
/// directories in parallel. Level by level rather than recursively, so a tree of any depth
/// fits in a thread's stack.
fn walk(src: &dyn LocalSource, root: &Path) -> anyhow::Result<Listed> {
    let mut dirs = vec![FoundDir {
        rel: Vec::new(),
        md: None,
        parent: 0,
        excluded: false,
        has_included: false,
    }];
    let mut files = Vec::new();
    let mut level: Vec<usize> = vec![0];
    while !level.is_empty() {
        let listed: Vec<anyhow::Result<Listed>> = level
            .par_iter()
            .map(|&i| list_dir(&root.join(rel_path(&dirs[i].rel)), &dirs[i].rel))
            .collect();
        let mut next = Vec::new();
        for (&parent, children) in level.iter().zip(listed) {
            for (rel, md) in children? {
                let excluded = src.is_excluded(&match_text(&rel));
                if !md.is_dir() {
                    if !excluded {
                        files.push((rel, md));
                        dirs[parent].has_included = true;
                    }
                } else if !excluded || src.may_reinclude_under(&match_text(&rel)) {
                    next.push(dirs.len());
                    dirs.push(FoundDir {
                        rel,
                        md: Some(md),
                        parent,
                        excluded,
                        has_included: false,
                    });
                }
            }
        }
        level = next;
    }
    // Children come after their parents: deepest first, each tells its parent it stays.
    for i in (1..dirs.len()).rev() {
        if !dirs[i].excluded || dirs[i].has_included {
            let parent = dirs[i].parent;
            dirs[parent].has_included = true;
        }
    }
    // An excluded directory appears only when something below it was re-included.
    for dir in dirs.into_iter().skip(1) {
        if !dir.excluded || dir.has_included {
            files.push((dir.rel, dir.md.expect("only the root has no metadata")));
        }
    }
    Ok(files)
}

/// The entries of one context directory at `rel`, with their metadata.
fn list_dir(dir: &Path, rel: &[u8]) -> anyhow::Result<Listed> {
    let reading = |e: std::io::Error| anyhow::anyhow!("reading {}: {e}", dir.display());
    let rd = match std::fs::read_dir(dir) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NAMETOOLONG.raw_os_error()) => {
            return Err(too_deep(dir, rel))
        }
        other => other.map_err(reading)?,
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(reading)?;
        // DirEntry::metadata stats relative to the open directory: no full path walk.
        let md = ent.metadata().map_err(reading)?;
        out.push((join_rel(rel, &ent.file_name().into_vec()), md));
    }
    Ok(out)
}

/// The error for a context directory whose path the kernel refuses (longer than PATH_MAX):
/// its depth and an abbreviated path rather than kilobytes of it.
fn too_deep(dir: &Path, rel: &[u8]) -> anyhow::Error {
    let text = match_text(rel);
    let chars: Vec<char> = text.chars().collect();
    let shown = if chars.len() > 100 {
        let head: String = chars[..40].iter().collect();
        let tail: String = chars[chars.len() - 40..].iter().collect();
        format!("{head}…{tail}")
    } else {
        text.into_owned()
    };
    anyhow::anyhow!(
        "build context directory {shown:?} is nested too deep: at {} levels its path is {} \
         bytes, beyond the kernel's {PATH_MAX}-byte limit (PATH_MAX); flatten it or exclude it \
         in .dockerignore",
        rel.split(|b| *b == b'/').count(),
        dir.as_os_str().len(),
    )
}

/// Linux's PATH_MAX: a path handed to a system call, its NUL included, must fit in it.
const PATH_MAX: usize = 4096;

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
    /// The entry at `rel` (if any) and every entry below it, in path order, with the prefix
    /// (`rel/`, or nothing for the root) that the ones below start with.
    pub fn subtree<'a>(
        &'a self,
        rel: &[u8],
    ) -> (Vec<u8>, impl Iterator<Item = (&'a Vec<u8>, &'a Entry)> + 'a) {
        let under = if rel.is_empty() {
            Vec::new()
        } else {
            crate::fileop::join_rel(rel, b"")
        };
        let exact = self.entries.get_key_value(rel);
        let prefix = under.clone();
        let below = self
            .entries
            .range(under.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix));
        (under, exact.into_iter().chain(below))
    }

    /// Checksum of the given relative paths and everything below them.
    pub fn checksum(&self, paths: &[impl AsRef<[u8]>]) -> String {
        let mut h = Sha256::new();
        // A COPY follows symlinks in its source path, so what the target holds is read too.
        let resolved: Vec<Vec<u8>> = paths
            .iter()
            .filter_map(|p| {
                let p = p.as_ref();
                let r = crate::fileop::resolve_in_root(&self.root, p, true).ok()?;
                let r = r.strip_prefix(&self.root).ok()?.as_os_str().as_bytes();
                (r != p).then(|| r.to_vec())
            })
            .collect();
        let all = paths
            .iter()
            .map(AsRef::as_ref)
            .chain(resolved.iter().map(Vec::as_slice));
        for p in all {
            h.update(b"\0path\0");
            h.update(p);
            let under = if p.is_empty() {
                Vec::new()
            } else {
                join_rel(p, b"")
            };
            let exact = self.entries.get_key_value(p);
            let below = self
                .entries
                .range(under.clone()..)
                .take_while(|(k, _)| k.starts_with(&under));
            for (rel, e) in exact.into_iter().chain(below) {
                h.update(rel);
                h.update([0, e.kind as u8]);
                h.update(e.mode.to_le_bytes());
                h.update(e.digest);
            }
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// Whether the relative path (or the root, for "") is present.
    pub fn contains(&self, rel: impl AsRef<[u8]>) -> bool {
        let rel = rel.as_ref();
        rel.is_empty() || self.entries.contains_key(rel)
    }
}
