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

#[derive(Serialize, Deserialize, Default)]
struct StatCache {
    files: HashMap<String, StatEntry>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct StatEntry {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    digest: String,
}

impl StatEntry {
    fn matches(&self, md: &std::fs::Metadata) -> bool {
        self.size == md.size()
            && self.mtime_ns == md.mtime() * 1_000_000_000 + md.mtime_nsec()
            && self.ctime_ns == md.ctime() * 1_000_000_000 + md.ctime_nsec()
            && self.ino == md.ino()
    }
}

/// Walks and checksums an included context, reusing the stat cache at `stat_cache` if given.
pub fn index_context(
    src: &dyn LocalSource,
    stat_cache: Option<&Path>,
) -> anyhow::Result<ContextIndex> {
    let root = src.root().to_path_buf();
    let mut listed: Vec<(String, std::fs::Metadata)> = Vec::new();
    walk(src, &root, "", &mut listed)?;

    let old: StatCache = stat_cache
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();

    let hashed: Vec<anyhow::Result<(String, Entry, Option<StatEntry>)>> = listed
        .into_par_iter()
        .map(|(rel, md)| {
            let ft = md.file_type();
            let mode = md.permissions().mode() & 0o7777;
            let path = root.join(&rel);
            if ft.is_dir() {
                return Ok((
                    rel,
                    Entry {
                        kind: EntryKind::Dir,
                        mode,
                        digest: [0; 32],
                    },
                    None,
                ));
            }
            if ft.is_symlink() {
                let target = std::fs::read_link(&path)?;
                let digest = Sha256::digest(target.as_os_str().as_encoded_bytes()).into();
                return Ok((
                    rel,
                    Entry {
                        kind: EntryKind::Symlink,
                        mode,
                        digest,
                    },
                    None,
                ));
            }
            if !ft.is_file() {
                return Ok((
                    rel,
                    Entry {
                        kind: EntryKind::Other,
                        mode,
                        digest: [0; 32],
                    },
                    None,
                ));
            }
            if let Some(cached) = old.files.get(&rel).filter(|c| c.matches(&md)) {
                let mut digest = [0u8; 32];
                if hex::decode_to_slice(&cached.digest, &mut digest).is_ok() {
                    return Ok((
                        rel,
                        Entry {
                            kind: EntryKind::File,
                            mode,
                            digest,
                        },
                        Some(cached.clone()),
                    ));
                }
            }
            let digest =
                hash_file(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let stat = StatEntry {
                size: md.size(),
                mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
                ino: md.ino(),
                digest: hex::encode(digest),
            };
            Ok((
                rel,
                Entry {
                    kind: EntryKind::File,
                    mode,
                    digest,
                },
                Some(stat),
            ))
        })
        .collect();

    let mut entries = BTreeMap::new();
    let mut new_cache = StatCache::default();
    for item in hashed {
        let (rel, entry, stat) = item?;
        if let Some(stat) = stat {
            new_cache.files.insert(rel.clone(), stat);
        }
        entries.insert(rel, entry);
    }
    if let Some(p) = stat_cache {
        if new_cache.files.len() != old.files.len()
            || new_cache
                .files
                .iter()
                .any(|(k, v)| old.files.get(k) != Some(v))
        {
            // Best effort: a lost stat cache only costs re-hashing next time.
            let _ = write_atomic(p, &serde_json::to_vec(&new_cache)?);
        }
    }
    Ok(ContextIndex { root, entries })
}

fn walk(
    src: &dyn LocalSource,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, std::fs::Metadata)>,
) -> anyhow::Result<()> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let md = std::fs::symlink_metadata(ent.path())?;
        let excluded = src.is_excluded(&rel);
        if md.is_dir() {
            if excluded && !src.may_reinclude_under(&rel) {
                continue;
            }
            let before = out.len();
            walk(src, &ent.path(), &rel, out)?;
            if !excluded || out.len() > before {
                out.insert(before, (rel, md));
            }
        } else if !excluded {
            out.push((rel, md));
        }
    }
    Ok(())
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

/// Writes a file atomically: temp name, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl ContextIndex {
    /// Checksum of the given relative paths and everything below them.
    pub fn checksum(&self, paths: &[String]) -> String {
        let mut h = Sha256::new();
        for p in paths {
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
