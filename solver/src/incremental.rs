//! Incremental COPY of client files into a layer blob. After a full copy, what it read (each
//! context entry's stat) and which tar entry each context file became is kept under the
//! step's identity without content (the op, its inputs' names, the context directory). When
//! the same step misses the cache because a few copied files changed, were added or were
//! removed, the new layer tar is the previous one with those entries (and their directories')
//! rewritten, dropped or inserted in place: no staging, no walk of the copied tree, no read
//! of the unchanged files. Anything else (a changed symlink, an added or removed directory, a
//! hard-linked or setuid file, --chmod, --exclude) takes the full copy. Each rewritten header
//! is first checked against the previous one as the full copy wrote it, so a change the
//! splice cannot reproduce falls back too.

use crate::context::{ContextIndex, EntryKind, EntryStat};
use crate::fileop::SourceTree;
use crate::graph::{FileAction, FileOp};
use crate::rebase::LayerEntry;
use crate::worker::{sha256_hex, Worker};
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// Context directory copied as a directory entry → that entry's name (no slash).
    #[serde(default)]
    dirs: HashMap<String, String>,
    /// A directory the copy matched → where its contents went (its own entry, if any, was
    /// made by the copy, not copied: its stat does not matter).
    #[serde(default)]
    roots: HashMap<String, String>,
    /// The owner the copy gave its files.
    #[serde(default)]
    owner: Option<(u64, u64)>,
    /// Splices since the last full copy.
    #[serde(default)]
    spliced: u32,
}

/// A copy eligible for the incremental path: one COPY of client files onto an empty tree.
pub(crate) struct IncrementalCopy {
    record: PathBuf,
    idx: std::sync::Arc<ContextIndex>,
    /// What the copy reads now; None if some path is not UTF-8 (never recorded).
    reads: Option<Reads>,
}

/// How the previous layer tar becomes the new one, by tar name.
#[derive(Default)]
pub(crate) struct Edits {
    /// Files and directories whose header (and a file's data) is rewritten.
    changed: HashMap<Vec<u8>, Change>,
    removed: HashSet<Vec<u8>>,
    /// New files, in the tar's order.
    added: Vec<(Vec<u8>, Change)>,
    /// The record's file map after the edits.
    files: HashMap<String, String>,
}

/// A file or directory whose tar entry is rewritten (or added: `before` unused).
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
        let reads = read_entries(&idx, sources)?;
        Ok(Some(IncrementalCopy {
            record: w
                .root
                .join("cache")
                .join("incremental")
                .join(identity.trim_start_matches("sha256:")),
            idx,
            reads,
        }))
    }

    /// The new layer tar spliced from the previous one into `out`, with its listing; None
    /// when this change needs the full copy.
    pub(crate) fn splice(
        &self,
        w: &Worker,
        out: &mut dyn Write,
    ) -> Result<Option<(Vec<LayerEntry>, Edits)>> {
        let (Some(Reads { read, .. }), Ok(bytes)) = (&self.reads, std::fs::read(&self.record))
        else {
            return Ok(None);
        };
        let Ok(previous) = serde_json::from_slice::<Previous>(&bytes) else {
            return Ok(None);
        };
        let Some(edits) = self.edits(&previous, read) else {
            return Ok(None);
        };
        if !w.content.has(&previous.layer.digest) {
            return Ok(None);
        }
        let old = exporter::open_layer(&w.content, &previous.layer)?;
        let listing = splice_tar(old, &edits, previous.owner, out)?;
        Ok(Some((listing, edits)))
    }

    /// The edits turning the previous layer into this one, or None if some change is not
    /// one the splice makes.
    fn edits(&self, previous: &Previous, read: &BTreeMap<String, Seen>) -> Option<Edits> {
        let mut edits = Edits {
            files: previous.files.clone(),
            ..Default::default()
        };
        let mut rels: Vec<&String> = read.keys().chain(previous.read.keys()).collect();
        rels.sort_unstable();
        rels.dedup();
        for rel in rels {
            match (read.get(rel), previous.read.get(rel)) {
                (Some(now), Some(before)) if now == before => {}
                (Some(now), Some(before)) if now.kind == EntryKind::Dir => {
                    if before.kind != EntryKind::Dir {
                        return None;
                    }
                    if previous.roots.contains_key(rel) {
                        continue;
                    }
                    let name = format!("{}/", previous.dirs.get(rel)?);
                    edits
                        .changed
                        .insert(name.into_bytes(), self.change(rel, *before, *now));
                }
                (Some(now), Some(before)) => {
                    if !plain_file(now) || !plain_file(before) {
                        return None;
                    }
                    let name = previous.files.get(rel)?;
                    let change = self.change(rel, *before, *now);
                    if has_layer_xattr(&change.source) {
                        return None;
                    }
                    edits.changed.insert(name.clone().into_bytes(), change);
                }
                (None, Some(before)) => {
                    if !plain_file(before) {
                        return None;
                    }
                    let name = edits.files.remove(rel)?;
                    edits.removed.insert(name.into_bytes());
                }
                (Some(now), None) => {
                    let change = self.change(rel, *now, *now);
                    if !plain_file(now)
                        || previous.owner.is_none()
                        || has_layer_xattr(&change.source)
                    {
                        return None;
                    }
                    let (parent, file_name) = match rel.rsplit_once('/') {
                        Some((parent, file_name)) => (parent, file_name),
                        None => ("", rel.as_str()),
                    };
                    let dir = previous.dirs.get(parent).or(previous.roots.get(parent))?;
                    let name = if dir.is_empty() {
                        file_name.to_string()
                    } else {
                        format!("{dir}/{file_name}")
                    };
                    edits.files.insert(rel.clone(), name.clone());
                    edits.added.push((name.into_bytes(), change));
                }
                (None, None) => unreachable!("listed from one of them"),
            }
        }
        edits
            .added
            .sort_by(|a, b| walk_order(&a.0).cmp(&walk_order(&b.0)));
        Some(edits)
    }

    fn change(&self, rel: &str, before: Seen, now: Seen) -> Change {
        Change {
            before,
            now,
            source: self.idx.root.join(rel),
        }
    }

    /// Keeps what this copy made for the next build of the step (best effort).
    /// `data_sources`: staged file → context file, `staged`: the staging root.
    pub(crate) fn remember(
        &self,
        blob: &exporter::LayerBlob,
        data_sources: &HashMap<PathBuf, PathBuf>,
        staged: &Path,
    ) {
        let Some(Reads { read, matched }) = &self.reads else {
            return;
        };
        let mut files = HashMap::new();
        let mut owner = None;
        for (dest, src) in data_sources {
            let (Ok(name), Ok(rel)) = (dest.strip_prefix(staged), src.strip_prefix(&self.idx.root))
            else {
                return;
            };
            let (Some(name), Some(rel)) = (name.to_str(), rel.to_str()) else {
                return;
            };
            files.insert(rel.to_string(), name.to_string());
            if owner.is_none() {
                use std::os::unix::fs::MetadataExt;
                let Ok(md) = std::fs::symlink_metadata(dest) else {
                    return;
                };
                owner = Some((md.uid() as u64, md.gid() as u64));
            }
        }
        let (dirs, roots) = directories(read, matched, &files);
        let record = Previous {
            layer: blob.descriptor.clone(),
            diff_id: blob.diff_id.clone(),
            read: read.clone(),
            files,
            dirs,
            roots,
            owner,
            spliced: 0,
        };
        self.save(&record);
    }

    /// Keeps the result of a splice: the same record, at the new stat and files.
    pub(crate) fn remember_spliced(&self, blob: &exporter::LayerBlob, edits: Edits) {
        let (Some(Reads { read, .. }), Ok(bytes)) = (&self.reads, std::fs::read(&self.record))
        else {
            return;
        };
        if let Ok(previous) = serde_json::from_slice::<Previous>(&bytes) {
            let record = Previous {
                layer: blob.descriptor.clone(),
                diff_id: blob.diff_id.clone(),
                read: read.clone(),
                files: edits.files,
                spliced: previous.spliced + 1,
                ..previous
            };
            self.save(&record);
        }
    }

    /// Writes the record under a temporary name and renames it into place, without the fsync
    /// of a durable write: a record lost or torn by a crash only means a full copy next time.
    fn save(&self, record: &Previous) {
        let (Ok(bytes), Some(dir)) = (serde_json::to_vec(record), self.record.parent()) else {
            return;
        };
        let temp = dir.join(crate::worker::unique(".tmp"));
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            use std::os::unix::fs::OpenOptionsExt;
            // Private, as the stat cache: it lists the context's paths.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&bytes)
        });
        if written
            .and_then(|()| std::fs::rename(&temp, &self.record))
            .is_err()
        {
            let _ = std::fs::remove_file(&temp);
        }
    }
}

fn plain_file(s: &Seen) -> bool {
    s.kind == EntryKind::File && s.stat.nlink == 1 && s.mode & 0o7000 == 0
}

/// The order of a layer tar's entries: depth first, names sorted by bytes.
fn walk_order(name: &[u8]) -> Vec<&[u8]> {
    name.strip_suffix(b"/")
        .unwrap_or(name)
        .split(|b| *b == b'/')
        .collect()
}

/// The directories the copied files are in: (copied directory → its entry's name, matched
/// directory → where its contents went). Derived from the files' names, walking up both.
fn directories(
    read: &BTreeMap<String, Seen>,
    matched: &HashSet<String>,
    files: &HashMap<String, String>,
) -> (HashMap<String, String>, HashMap<String, String>) {
    let parent = |p: &str| {
        p.rsplit_once('/')
            .map_or("", |(parent, _)| parent)
            .to_string()
    };
    let is_dir = |rel: &str| read.get(rel).is_some_and(|s| s.kind == EntryKind::Dir);
    let (mut dirs, mut roots) = (HashMap::new(), HashMap::new());
    for (rel, name) in files {
        let (mut rel, mut name) = (rel.clone(), name.clone());
        while !rel.is_empty() {
            let (dir, dir_name) = (parent(&rel), parent(&name));
            if matched.contains(&dir) {
                roots.insert(dir, dir_name);
                break;
            }
            if !is_dir(&dir) {
                break;
            }
            dirs.insert(dir.clone(), dir_name.clone());
            (rel, name) = (dir, dir_name);
        }
    }
    (dirs, roots)
}

/// What a copy reads: every context entry by path, and the paths its sources matched.
struct Reads {
    read: BTreeMap<String, Seen>,
    matched: HashSet<String>,
}

/// The context entries a copy of `sources` reads (as the cache key's checksum does), or None
/// if a path is not UTF-8 or a source goes through a symlink.
fn read_entries(idx: &ContextIndex, sources: &[String]) -> Result<Option<Reads>> {
    let src = SourceTree {
        root: &idx.root,
        index: Some(idx),
    };
    let mut read = BTreeMap::new();
    let mut matched = HashSet::new();
    for s in sources {
        for rel in src.matches(s)? {
            if src.resolved_rel(&rel)? != rel {
                return Ok(None);
            }
            let Ok(text) = std::str::from_utf8(&rel) else {
                return Ok(None);
            };
            matched.insert(text.to_string());
            for (path, e) in idx.subtree(&rel).1 {
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
    // Directories matched by several sources merge into one destination, where the last one's
    // entries win: the splice keeps to one tree per copy.
    let dir_matched = matched
        .iter()
        .any(|m| read.get(m).is_some_and(|s| s.kind == EntryKind::Dir) || m.is_empty());
    if dir_matched && matched.len() > 1 {
        return Ok(None);
    }
    Ok(Some(Reads { read, matched }))
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

/// Copies the tar `old` to `out` with `edits` made; returns the listing of the new layer.
/// `owner`: the owner of the copy's files (for added ones).
fn splice_tar(
    old: impl Read,
    edits: &Edits,
    owner: Option<(u64, u64)>,
    out: &mut dyn Write,
) -> Result<Vec<LayerEntry>> {
    let mut old = std::io::BufReader::with_capacity(1 << 20, old);
    let mut listing = Vec::new();
    let (mut rewritten, mut dropped) = (0, 0);
    let mut added = edits.added.iter().peekable();
    let owner = owner.unwrap_or_default();
    while let Some(entry) = next_entry(&mut old)? {
        while let Some((name, file)) =
            added.next_if(|(n, _)| walk_order(n) < walk_order(&entry.name))
        {
            listing.push(write_file(out, name, file, owner)?);
        }
        let data = padded(entry.size);
        if edits.removed.contains(&entry.name) {
            std::io::copy(&mut (&mut old).take(data), &mut std::io::sink())?;
            dropped += 1;
            continue;
        }
        let main = tar::Header::from_byte_slice(&entry.header[entry.header.len() - 512..]);
        let ids = (main.uid()?, main.gid()?);
        let Some(change) = edits.changed.get(&entry.name) else {
            listing.push(layer_entry(
                &entry.name,
                main.entry_type().is_dir(),
                main.mode()?,
                ids,
            ));
            out.write_all(&entry.header)?;
            std::io::copy(&mut (&mut old).take(data), out)?;
            continue;
        };
        let kind = main.entry_type();
        let is_dir = kind.is_dir();
        let header_of = |s: &Seen| {
            let size = if is_dir { 0 } else { s.stat.size };
            snapshotter::layer::plain_entry_header(&entry.name, kind, s.mode, ids, size, mtime(s))
        };
        if header_of(&change.before) != entry.header {
            bail!(
                "the previous layer's entry {} is not what this copy writes",
                String::from_utf8_lossy(&entry.name)
            );
        }
        std::io::copy(&mut (&mut old).take(data), &mut std::io::sink())?;
        if is_dir {
            out.write_all(&header_of(&change.now))?;
            listing.push(layer_entry(&entry.name, true, change.now.mode, ids));
        } else {
            listing.push(write_file(out, &entry.name, change, ids)?);
        }
        rewritten += 1;
    }
    for (name, file) in added {
        listing.push(write_file(out, name, file, owner)?);
    }
    if rewritten != edits.changed.len() || dropped != edits.removed.len() {
        bail!("the previous layer lacks some changed entries");
    }
    // The end-of-archive blocks and anything after them, as the full copy wrote them.
    out.write_all(&[0u8; 512])?;
    std::io::copy(&mut old, out)?;
    listing.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

/// A header's mtime: whole seconds, as the full copy's tar writer truncates them.
fn mtime(s: &Seen) -> u64 {
    s.stat.mtime_ns.div_euclid(1_000_000_000).max(0) as u64
}

fn layer_entry(name: &[u8], is_dir: bool, mode: u32, (uid, gid): (u64, u64)) -> LayerEntry {
    let path = name.strip_suffix(b"/").unwrap_or(name);
    LayerEntry {
        path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
        is_dir,
        mode,
        uid: uid as u32,
        gid: gid as u32,
    }
}

/// Writes a regular file entry with the data of `file.source` at its new stat.
fn write_file(
    out: &mut dyn Write,
    name: &[u8],
    file: &Change,
    ids: (u64, u64),
) -> Result<LayerEntry> {
    let now = &file.now;
    let kind = tar::EntryType::Regular;
    let header = snapshotter::layer::plain_entry_header(
        name,
        kind,
        now.mode,
        ids,
        now.stat.size,
        mtime(now),
    );
    out.write_all(&header)?;
    let source = std::fs::File::open(&file.source)
        .with_context(|| format!("reading {}", file.source.display()))?;
    let copied = std::io::copy(&mut source.take(now.stat.size), out)?;
    if copied != now.stat.size {
        bail!("{} changed while being copied", file.source.display());
    }
    out.write_all(&vec![0u8; (padded(copied) - copied) as usize])?;
    Ok(layer_entry(name, false, now.mode, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(kind: EntryKind) -> Seen {
        Seen {
            kind,
            mode: 0o755,
            stat: EntryStat::default(),
        }
    }

    #[test]
    fn walk_order_is_depth_first_with_names_sorted_by_bytes() {
        let mut names: Vec<&[u8]> = vec![b"a-x", b"a/z", b"a/", b"a/b/", b"a/b/c", b"B"];
        names.sort_by(|a, b| walk_order(a).cmp(&walk_order(b)));
        let want: Vec<&[u8]> = vec![b"B", b"a/", b"a/b/", b"a/b/c", b"a/z", b"a-x"];
        assert_eq!(names, want);
    }

    #[test]
    fn directories_below_the_matched_one_are_copies_and_it_is_a_root() {
        // COPY src /dst: src/d/f became dst/d/f, src/g became dst/g.
        let read: BTreeMap<String, Seen> = [
            ("src", EntryKind::Dir),
            ("src/d", EntryKind::Dir),
            ("src/d/f", EntryKind::File),
            ("src/g", EntryKind::File),
        ]
        .into_iter()
        .map(|(p, k)| (p.to_string(), seen(k)))
        .collect();
        let matched: HashSet<String> = ["src".to_string()].into();
        let files: HashMap<String, String> = [("src/d/f", "dst/d/f"), ("src/g", "dst/g")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let (dirs, roots) = directories(&read, &matched, &files);
        assert_eq!(dirs, [("src/d".to_string(), "dst/d".to_string())].into());
        assert_eq!(roots, [("src".to_string(), "dst".to_string())].into());
    }
}
