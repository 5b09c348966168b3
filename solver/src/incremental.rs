//! Incremental COPY of client files into a layer blob. After a full copy, what it read (each
//! context entry's stat) and which tar entry each context file became is kept under the
//! step's identity without content (the op and its inputs' names). When the same step misses
//! the cache because a few copied files changed only in content, mode or mtime, the new
//! layer tar is the previous one with those files' entries rewritten: no staging, no walk of
//! the copied tree, no read of the unchanged files. Anything else (an added or removed
//! entry, a changed directory or symlink, a hard-linked file, --chmod, --exclude) takes
//! the full copy. Each rewritten header is first checked against the previous one as the
//! full copy wrote it, so a change the splice cannot reproduce falls back too.

use crate::context::{ContextIndex, EntryKind, EntryStat};
use crate::fileop::{join_rel, SourceTree};
use crate::graph::{FileAction, FileOp};
use crate::rebase::LayerEntry;
use crate::worker::{sha256_hex, Worker};
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A copied context entry as the previous copy saw it.
#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Seen {
    kind: EntryKind,
    mode: u32,
    stat: EntryStat,
}

/// What the previous full (or incremental) copy of a step made.
#[derive(Serialize, Deserialize)]
struct Previous {
    layer: oci::Descriptor,
    diff_id: String,
    /// Every context entry the copy read, by relative path.
    read: BTreeMap<String, Seen>,
    /// Context file → the name of its regular-file entry in the layer tar.
    files: HashMap<String, String>,
    /// Splices since the last full copy.
    #[serde(default)]
    spliced: u32,
}

/// A copy eligible for the incremental path: one COPY of client files onto an empty tree.
pub(crate) struct IncrementalCopy {
    record: PathBuf,
    idx: std::sync::Arc<ContextIndex>,
    /// What the copy reads now; None if some path is not UTF-8 (never recorded).
    read: Option<BTreeMap<String, Seen>>,
}

/// A file whose tar entry is rewritten.
struct Change {
    before: Seen,
    now: Seen,
    source: PathBuf,
}

impl IncrementalCopy {
    /// The step's incremental state, if `file` is a copy this path handles.
    pub(crate) fn of(
        w: &Worker,
        op_json: &[u8],
        file: &FileOp,
        inputs: &[(crate::solve::Ref, String)],
    ) -> Result<Option<Self>> {
        let [FileAction::Copy {
            src_input,
            sources,
            chmod: None,
            exclude,
            parents: false,
            unpack: false,
            ..
        }] = file.actions.as_slice()
        else {
            return Ok(None);
        };
        let Some((crate::solve::Ref::Local(local), _)) = inputs.get(*src_input) else {
            return Ok(None);
        };
        if !exclude.is_empty() {
            return Ok(None);
        }
        let idx = w.context_index(local)?;
        // Local inputs by name and directory (another project's context is another step).
        let mut parts: Vec<&[u8]> = vec![b"incremental-copy", op_json];
        let names: Vec<String> = inputs
            .iter()
            .map(|(r, key)| match r {
                crate::solve::Ref::Local(name) => format!("local:{name}"),
                _ => key.clone(),
            })
            .collect();
        parts.extend(names.iter().map(|n| n.as_bytes()));
        parts.push(idx.root.as_os_str().as_bytes());
        let identity = sha256_hex(&parts);
        let read = read_entries(&idx, sources)?;
        Ok(Some(IncrementalCopy {
            record: w.root.join("cache").join("incremental").join(identity),
            idx,
            read,
        }))
    }

    /// The new layer tar spliced from the previous one into `out`, with its listing; None
    /// when this change needs the full copy.
    pub(crate) fn splice(
        &self,
        w: &Worker,
        out: &mut dyn Write,
    ) -> Result<Option<Vec<LayerEntry>>> {
        let (Some(read), Ok(bytes)) = (&self.read, std::fs::read(&self.record)) else {
            return Ok(None);
        };
        let Ok(previous) = serde_json::from_slice::<Previous>(&bytes) else {
            return Ok(None);
        };
        let Some(changes) = self.changes(&previous, read) else {
            return Ok(None);
        };
        if !w.content.has(&previous.layer.digest) {
            return Ok(None);
        }
        let old = exporter::open_layer(&w.content, &previous.layer)?;
        splice_tar(old, &changes, out).map(Some)
    }

    /// Rewritten entries by tar name, or None if some change is not one of a file's
    /// content, mode or mtime.
    fn changes(
        &self,
        previous: &Previous,
        read: &BTreeMap<String, Seen>,
    ) -> Option<HashMap<Vec<u8>, Change>> {
        if previous.read.len() != read.len() {
            return None;
        }
        let mut changes = HashMap::new();
        for ((rel, now), (old_rel, before)) in read.iter().zip(&previous.read) {
            if rel != old_rel {
                return None;
            }
            if now == before {
                continue;
            }
            let plain_file =
                |s: &Seen| s.kind == EntryKind::File && s.stat.nlink == 1 && s.mode & 0o7000 == 0;
            if !plain_file(now) || !plain_file(before) {
                return None;
            }
            let name = previous.files.get(rel)?;
            let source = self.idx.root.join(rel);
            if has_layer_xattr(&source) {
                return None;
            }
            changes.insert(
                name.as_bytes().to_vec(),
                Change {
                    before: *before,
                    now: *now,
                    source,
                },
            );
        }
        Some(changes)
    }

    /// Keeps what this copy made for the next build of the step (best effort).
    /// `data_sources`: staged file → context file, `staged`: the staging root.
    pub(crate) fn remember(
        &self,
        blob: &exporter::LayerBlob,
        data_sources: &HashMap<PathBuf, PathBuf>,
        staged: &Path,
    ) {
        let Some(read) = &self.read else { return };
        let mut files = HashMap::new();
        for (dest, src) in data_sources {
            let (Ok(name), Ok(rel)) = (dest.strip_prefix(staged), src.strip_prefix(&self.idx.root))
            else {
                return;
            };
            let (Some(name), Some(rel)) = (name.to_str(), rel.to_str()) else {
                return;
            };
            files.insert(rel.to_string(), name.to_string());
        }
        self.save(blob, read.clone(), files, 0);
    }

    /// Keeps the result of a splice: the same entries, now at their new stat.
    pub(crate) fn remember_spliced(&self, blob: &exporter::LayerBlob) {
        let (Some(read), Ok(bytes)) = (&self.read, std::fs::read(&self.record)) else {
            return;
        };
        if let Ok(previous) = serde_json::from_slice::<Previous>(&bytes) {
            self.save(blob, read.clone(), previous.files, previous.spliced + 1);
        }
    }

    fn save(
        &self,
        blob: &exporter::LayerBlob,
        read: BTreeMap<String, Seen>,
        files: HashMap<String, String>,
        spliced: u32,
    ) {
        let record = Previous {
            layer: blob.descriptor.clone(),
            diff_id: blob.diff_id.clone(),
            read,
            files,
            spliced,
        };
        if let Ok(bytes) = serde_json::to_vec(&record) {
            let _ = crate::context::write_atomic(&self.record, &bytes);
        }
    }
}

/// The context entries a copy of `sources` reads (as the cache key's checksum does), or None
/// if a path is not UTF-8 or a source goes through a symlink.
fn read_entries(idx: &ContextIndex, sources: &[String]) -> Result<Option<BTreeMap<String, Seen>>> {
    let src = SourceTree {
        root: &idx.root,
        index: Some(idx),
    };
    let mut read = BTreeMap::new();
    for s in sources {
        for rel in src.matches(s)? {
            if src.resolved_rel(&rel)? != rel {
                return Ok(None);
            }
            let under = if rel.is_empty() {
                Vec::new()
            } else {
                join_rel(&rel, b"")
            };
            let exact = idx.entries.get_key_value(rel.as_slice());
            let below = idx
                .entries
                .range(under.clone()..)
                .take_while(|(k, _)| k.starts_with(&under));
            for (path, e) in exact.into_iter().chain(below) {
                let Ok(path) = std::str::from_utf8(path) else {
                    return Ok(None);
                };
                let seen = Seen {
                    kind: e.kind,
                    mode: e.mode,
                    stat: e.stat,
                };
                read.insert(path.to_string(), seen);
            }
        }
    }
    Ok(Some(read))
}

/// Whether the file carries the one xattr a layer keeps (its header would need PAX records).
fn has_layer_xattr(path: &Path) -> bool {
    !matches!(
        rustix::fs::lgetxattr(path, "security.capability", &mut [0u8; 0]),
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP)
    )
}

/// One entry of a tar as written: all its header blocks (PAX ones included) and its name.
struct RawEntry {
    header: Vec<u8>,
    name: Vec<u8>,
    size: u64,
}

/// The header of `size` data bytes, rounded up to whole blocks.
fn padded(size: u64) -> u64 {
    size.div_ceil(512) * 512
}

/// Reads the next entry's headers; None at the end-of-archive block (then consumed).
fn next_entry(r: &mut impl Read) -> Result<Option<RawEntry>> {
    let mut header = Vec::new();
    let (mut pax_path, mut pax_size) = (None, None);
    loop {
        let mut block = [0u8; 512];
        r.read_exact(&mut block)?;
        if block.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let h = tar::Header::from_byte_slice(&block);
        let size = h.entry_size()?;
        header.extend_from_slice(&block);
        match block[156] {
            b'x' => {
                let mut payload = vec![0u8; padded(size) as usize];
                r.read_exact(&mut payload)?;
                for ext in tar::PaxExtensions::new(&payload[..size as usize]) {
                    let ext = ext?;
                    match ext.key_bytes() {
                        b"path" => pax_path = Some(ext.value_bytes().to_vec()),
                        b"size" => pax_size = ext.value()?.parse().ok(),
                        _ => {}
                    }
                }
                header.extend_from_slice(&payload);
            }
            b'g' | b'L' | b'K' => bail!("unexpected tar header type {}", block[156] as char),
            _ => {
                let name = pax_path.unwrap_or_else(|| h.path_bytes().into_owned());
                return Ok(Some(RawEntry {
                    header,
                    name,
                    size: pax_size.unwrap_or(size),
                }));
            }
        }
    }
}

/// Copies the tar `old` to `out`, rewriting the entries in `changes`; returns the listing
/// of the new layer.
fn splice_tar(
    old: impl Read,
    changes: &HashMap<Vec<u8>, Change>,
    out: &mut dyn Write,
) -> Result<Vec<LayerEntry>> {
    let mut old = std::io::BufReader::with_capacity(1 << 20, old);
    let mut listing = Vec::new();
    let mut replaced = 0;
    while let Some(entry) = next_entry(&mut old)? {
        let main = tar::Header::from_byte_slice(&entry.header[entry.header.len() - 512..]);
        let (uid, gid) = (main.uid()?, main.gid()?);
        let path = entry.name.strip_suffix(b"/").unwrap_or(&entry.name);
        listing.push(LayerEntry {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            is_dir: main.entry_type().is_dir(),
            mode: main.mode()?,
            uid: uid as u32,
            gid: gid as u32,
        });
        let data = padded(entry.size);
        let Some(change) = changes.get(&entry.name) else {
            out.write_all(&entry.header)?;
            std::io::copy(&mut (&mut old).take(data), out)?;
            continue;
        };
        let header_of = |s: &Seen| {
            let mtime = s.stat.mtime_ns.div_euclid(1_000_000_000).max(0) as u64;
            snapshotter::layer::regular_file_header(
                &entry.name,
                s.mode,
                uid,
                gid,
                s.stat.size,
                mtime,
            )
        };
        if header_of(&change.before) != entry.header {
            bail!(
                "the previous layer's entry {} is not what this copy writes",
                String::from_utf8_lossy(&entry.name)
            );
        }
        out.write_all(&header_of(&change.now))?;
        std::io::copy(&mut (&mut old).take(data), &mut std::io::sink())?;
        let file = std::fs::File::open(&change.source)
            .with_context(|| format!("reading {}", change.source.display()))?;
        let copied = std::io::copy(&mut file.take(change.now.stat.size), out)?;
        if copied != change.now.stat.size {
            bail!("{} changed while being copied", change.source.display());
        }
        out.write_all(&vec![0u8; (padded(copied) - copied) as usize])?;
        listing.last_mut().expect("pushed above").mode = change.now.mode;
        replaced += 1;
    }
    if replaced != changes.len() {
        bail!("the previous layer lacks some changed files");
    }
    // The end-of-archive blocks and anything after them, as the full copy wrote them.
    out.write_all(&[0u8; 512])?;
    std::io::copy(&mut old, out)?;
    listing.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}
