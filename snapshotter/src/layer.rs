//! Layer diff <-> tar: OCI layer tars from overlay upper dirs and back into overlay lower dirs.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use crate::error::{Error, IoContext, Result};
use crate::gotar;
use crate::lowers::{is_whiteout, same_entry, Lowers};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Overlay metadata xattrs: `trusted.` as root, `user.` for an overlay mounted with
/// `userxattr` in a user namespace (rootless mode).
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// The one xattr written into layers.
const LAYER_XATTR: &[u8] = b"security.capability";
/// Largest id the 8-byte octal ustar field holds; larger ones go into PAX records.
const USTAR_MAX_ID: u64 = 0o7777777;

/// The xattr that marks a directory opaque for the overlay mounts of this process.
fn opaque_xattr() -> &'static str {
    if crate::util::in_user_namespace() {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// Options for [`write_diff_tar`].
#[derive(Clone, Debug, Default)]
pub struct DiffOptions {
    /// Clamp mtimes above this (SOURCE_DATE_EPOCH).
    pub mtime_clamp: Option<u64>,
    /// The layer dirs below the upper dir, nearest first, as overlay stacks them (all fully
    /// present). With them the diff is BuildKit's: an entry whose type, mode, owner (and for
    /// files size, mtime and content) did not change is left out unless it is the parent of a
    /// change, and an opaque directory is written as whiteouts of what it hides. Without them
    /// every upper entry is written and opaque directories get the `.wh..wh..opq` marker.
    pub lower_dirs: Vec<PathBuf>,
    /// Round mtimes to the nearest second instead of truncating them: what Go's tar
    /// writer does for headers without a chosen format, as in BuildKit's tar exporter.
    pub round_mtime: bool,
    /// Regular files whose data is read from another file (a staged tree of sparse copies):
    /// path in the walked tree → the file with the data. Metadata still comes from the tree.
    pub data_sources: Option<std::sync::Arc<HashMap<PathBuf, PathBuf>>>,
}

/// The header blocks [`write_diff_tar`] writes for a regular file or directory without
/// xattrs (`name` with a directory's trailing slash): what an incremental copy needs to
/// rewrite one entry of a layer tar byte for byte.
pub fn plain_entry_header(
    name: &[u8],
    kind: tar::EntryType,
    mode: u32,
    (uid, gid): (u64, u64),
    size: u64,
    mtime: u64,
) -> Vec<u8> {
    let fields = gotar::Fields {
        name,
        link: &[],
        mode: (mode & 0o7777) as u64,
        uid,
        gid,
        size,
        mtime,
        typeflag: kind.as_byte(),
        dev_major: 0,
        dev_minor: 0,
    };
    let mut pax = Vec::new();
    for (key, id) in [("uid", uid), ("gid", gid)] {
        if id > USTAR_MAX_ID {
            pax.push((key.to_string(), id.to_string().into_bytes()));
        }
    }
    gotar::header_blocks(&fields, &pax)
}

/// The lower dirs of a committed snapshot whose own dir is `upper`, from its (read-only) mounts.
pub fn lower_dirs_from_mounts(mounts: &[crate::Mount], upper: &Path) -> Vec<PathBuf> {
    mounts
        .iter()
        .flat_map(|m| m.options.iter())
        .filter_map(|o| o.strip_prefix("lowerdir="))
        .flat_map(|dirs| dirs.split(':'))
        .map(PathBuf::from)
        .filter(|d| d != upper)
        .collect()
}

/// Writes an uncompressed OCI layer tar from an overlay upper dir.
pub fn write_diff_tar(upper: &Path, out: impl Write, opts: &DiffOptions) -> Result<()> {
    // A diff against lowers that are not all there would drop changes; write every entry then.
    let lowers = (!opts.lower_dirs.is_empty() && opts.lower_dirs.iter().all(|d| d.is_dir()))
        .then(|| Lowers::new(opts.lower_dirs.clone()));
    let mut writer = DiffWriter {
        builder: tar::Builder::new(out),
        opts,
        hardlinks: HashMap::new(),
        upper,
        lowers,
        written_dirs: HashSet::new(),
    };
    writer.walk_dir(upper, &[])?;
    writer
        .builder
        .into_inner()
        .ctx(|| "finishing layer tar".to_string())?
        .flush()
        .ctx(|| "flushing layer tar".to_string())
}

struct DiffWriter<'a, W: Write> {
    builder: tar::Builder<W>,
    opts: &'a DiffOptions,
    /// (dev, ino) of multiply linked files -> the archive path first written for them.
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    upper: &'a Path,
    lowers: Option<Lowers>,
    /// Directories already in the tar, so that each one's parents are written once, first.
    written_dirs: HashSet<Vec<u8>>,
}

/// The names in `dir`, sorted by bytes (the order Go's filepath.Walk gives BuildKit).
fn sorted_names(dir: &Path) -> Result<Vec<OsString>> {
    let mut names: Vec<OsString> = std::fs::read_dir(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .ctx(|| format!("listing {}", dir.display()))?;
    if crate::mountless::mountless() {
        // Whiteout files sort as the 0/0 devices of an overlay upper dir would: by the name
        // they delete (the opaque marker, written with its dir, first).
        names.sort_by(|a, b| sort_key(a).cmp(sort_key(b)));
    } else {
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    }
    Ok(names)
}

fn sort_key(name: &OsStr) -> &[u8] {
    let name = name.as_bytes();
    if name == OPAQUE_MARKER.as_bytes() {
        return b"";
    }
    name.strip_prefix(WHITEOUT_PREFIX.as_bytes())
        .unwrap_or(name)
}

/// A step of the diff walk. The walk keeps its own stack of these (a tree of any depth fits
/// in the thread's stack) and visits entries in the order a recursive walk would.
enum DiffStep {
    /// Every entry of an upper dir, sorted by name.
    Walk { dir: PathBuf, rel: Vec<u8> },
    /// One upper entry `name` of the dir at `parent_rel`.
    Entry {
        path: PathBuf,
        parent_rel: Vec<u8>,
        name: OsString,
    },
    /// The changes inside an upper dir whose contents replace the lowers' (see `diff_hidden`).
    Hidden {
        dir: PathBuf,
        rel: Vec<u8>,
        lower_is_dir: bool,
    },
    /// One name of such a dir: in the lowers, in the upper dir, or both.
    HiddenChild {
        dir: PathBuf,
        rel: Vec<u8>,
        name: Vec<u8>,
        lower: Option<PathBuf>,
        upper: Option<Box<(PathBuf, std::fs::Metadata)>>,
    },
}

impl<W: Write> DiffWriter<'_, W> {
    fn walk_dir(&mut self, dir: &Path, rel: &[u8]) -> Result<()> {
        let mut stack = vec![DiffStep::Walk {
            dir: dir.to_path_buf(),
            rel: rel.to_vec(),
        }];
        while let Some(step) = stack.pop() {
            match step {
                DiffStep::Walk { dir, rel } => {
                    for name in sorted_names(&dir)?.into_iter().rev() {
                        stack.push(DiffStep::Entry {
                            path: dir.join(&name),
                            parent_rel: rel.clone(),
                            name,
                        });
                    }
                }
                DiffStep::Entry {
                    path,
                    parent_rel,
                    name,
                } => stack.extend(self.write_entry(path, &parent_rel, &name)?),
                DiffStep::Hidden {
                    dir,
                    rel,
                    lower_is_dir,
                } => {
                    let children = self.diff_hidden(&dir, &rel, lower_is_dir)?;
                    stack.extend(children.into_iter().rev());
                }
                DiffStep::HiddenChild {
                    dir,
                    rel,
                    name,
                    lower,
                    upper,
                } => stack.extend(self.hidden_child(&dir, &rel, &name, lower, upper)?),
            }
        }
        Ok(())
    }

    /// Writes one upper entry if it changed; returns the walk of its contents for a dir.
    fn write_entry(
        &mut self,
        path: PathBuf,
        parent_rel: &[u8],
        name: &OsStr,
    ) -> Result<Option<DiffStep>> {
        let rel = join_rel(parent_rel, name.as_bytes());
        let meta = std::fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
        if is_whiteout(&meta) {
            let mtime = self.clamp(meta.mtime());
            let mut wh = join_rel(parent_rel, WHITEOUT_PREFIX.as_bytes());
            wh.extend_from_slice(name.as_bytes());
            self.append_marker(wh, mtime)?;
            return Ok(None);
        }
        if crate::mountless::mountless()
            && meta.is_file()
            && name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes())
        {
            // A mountless snapshot's whiteout or opaque marker file: already the tar's name.
            let mtime = self.clamp(meta.mtime());
            self.append_marker(rel, mtime)?;
            return Ok(None);
        }
        // None: lowers unknown; Some(None): the path is new.
        let lower = self.lowers.as_ref().map(|lowers| lowers.lookup(&rel));
        let unchanged =
            matches!(&lower, Some(Some((lp, lmd))) if same_entry(lp, lmd, &path, &meta));
        if !unchanged {
            self.append_entry(&path, &meta, rel.clone())?;
        }
        if !meta.is_dir() {
            return Ok(None);
        }
        let opaque = crate::lowers::is_opaque(&path);
        Ok(Some(match lower {
            // BuildKit walks an opaque dir against what it hides: whiteouts for what is gone.
            Some(Some((_, lmd))) if opaque && lmd.is_dir() => DiffStep::Hidden {
                dir: path,
                rel,
                lower_is_dir: true,
            },
            Some(_) => DiffStep::Walk { dir: path, rel },
            None => {
                if opaque {
                    let mtime = self.clamp(meta.mtime());
                    self.append_marker(join_rel(&rel, OPAQUE_MARKER.as_bytes()), mtime)?;
                }
                DiffStep::Walk { dir: path, rel }
            }
        }))
    }

    /// The names inside `dir` (at `rel`), whose upper contents replace the lowers' (an opaque
    /// dir, or a dir under one), each to be written by [`Self::hidden_child`]: whiteouts for
    /// lower names it lacks, upper entries that differ from the lower ones, and everything
    /// inside them.
    fn diff_hidden(&mut self, dir: &Path, rel: &[u8], lower_is_dir: bool) -> Result<Vec<DiffStep>> {
        let mut lower_children = match (&self.lowers, lower_is_dir) {
            (Some(lowers), true) => lowers.children(rel),
            _ => Default::default(),
        };
        let mut upper_children = std::collections::BTreeMap::new();
        for name in sorted_names(dir)? {
            let path = dir.join(&name);
            let md = std::fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
            // Whiteouts under an opaque dir hide nothing the diff could see.
            if !is_whiteout(&md) {
                upper_children.insert(name.into_vec(), (path, md));
            }
        }
        let mut names: Vec<Vec<u8>> = lower_children
            .keys()
            .chain(upper_children.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        Ok(names
            .into_iter()
            .map(|name| DiffStep::HiddenChild {
                dir: dir.to_path_buf(),
                rel: rel.to_vec(),
                lower: lower_children.remove(&name),
                upper: upper_children.remove(&name).map(Box::new),
                name,
            })
            .collect())
    }

    /// Writes one name of a dir that hides the lowers; returns the walk inside it for a dir.
    fn hidden_child(
        &mut self,
        dir: &Path,
        rel: &[u8],
        name: &[u8],
        lower: Option<PathBuf>,
        upper: Option<Box<(PathBuf, std::fs::Metadata)>>,
    ) -> Result<Option<DiffStep>> {
        let child_rel = join_rel(rel, name);
        match (lower, upper.map(|b| *b)) {
            (Some(_), None) => {
                let mtime = self.clamp(std::fs::symlink_metadata(dir).map_or(0, |m| m.mtime()));
                let mut wh = join_rel(rel, WHITEOUT_PREFIX.as_bytes());
                wh.extend_from_slice(name);
                self.append_marker(wh, mtime)?;
                Ok(None)
            }
            (lower, Some((path, md))) => {
                let lower_md =
                    lower.and_then(|l| std::fs::symlink_metadata(&l).ok().map(|m| (l, m)));
                let unchanged =
                    matches!(&lower_md, Some((lp, lmd)) if same_entry(lp, lmd, &path, &md));
                if !unchanged {
                    self.append_entry(&path, &md, child_rel.clone())?;
                }
                Ok(md.is_dir().then(|| DiffStep::Hidden {
                    dir: path,
                    rel: child_rel,
                    lower_is_dir: matches!(&lower_md, Some((_, lmd)) if lmd.is_dir()),
                }))
            }
            (None, None) => Ok(None),
        }
    }

    /// Writes the directories above `rel` that are not in the tar yet, outermost first, as
    /// containerd's change writer does before every entry.
    fn include_parents(&mut self, rel: &[u8]) -> Result<()> {
        let Some(slash) = rel.iter().rposition(|b| *b == b'/') else {
            return Ok(());
        };
        let parent = rel[..slash].to_vec();
        if self.written_dirs.contains(&parent) {
            return Ok(());
        }
        let path = self.upper.join(OsStr::from_bytes(&parent));
        let meta = std::fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
        self.append_entry(&path, &meta, parent)
    }

    /// Writes one entry from the upper dir (after its parents).
    fn append_entry(&mut self, path: &Path, meta: &std::fs::Metadata, rel: Vec<u8>) -> Result<()> {
        self.include_parents(&rel)?;
        let ft = meta.file_type();
        let rounded_up = self.opts.round_mtime && meta.mtime_nsec() >= 500_000_000;
        let mtime = self.clamp(meta.mtime() + rounded_up as i64);
        let mut header = tar::Header::new_ustar();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(meta.uid() as u64);
        header.set_gid(meta.gid() as u64);
        header.set_mtime(mtime);
        header.set_size(0);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if (meta.uid() as u64) > USTAR_MAX_ID {
            pax.push(("uid".into(), meta.uid().to_string().into_bytes()));
        }
        if (meta.gid() as u64) > USTAR_MAX_ID {
            pax.push(("gid".into(), meta.gid().to_string().into_bytes()));
        }
        for (xname, value) in list_xattrs(path)? {
            // Like BuildKit's (containerd's) layer writer: file capabilities are the only
            // xattr a layer carries; user.* and security labels stay on the build host.
            if xname != LAYER_XATTR {
                continue;
            }
            let xname = String::from_utf8(xname).map_err(|e| {
                Error::Invalid(format!(
                    "xattr name {:?} on {} is not UTF-8",
                    String::from_utf8_lossy(e.as_bytes()),
                    path.display()
                ))
            })?;
            pax.push((format!("{PAX_XATTR_PREFIX}{xname}"), value));
        }

        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            let mut dir_name = rel.clone();
            dir_name.push(b'/');
            self.written_dirs.insert(rel);
            return self.append(header, dir_name, None, pax, std::io::empty());
        }

        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.hardlinks.get(&key) {
                let target = first.clone();
                header.set_entry_type(tar::EntryType::Link);
                return self.append(header, rel, Some(target), pax, std::io::empty());
            }
            self.hardlinks.insert(key, rel.clone());
        }

        if ft.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let source = self.opts.data_sources.as_ref().and_then(|s| s.get(path));
            let file = open_nofollow(source.map_or(path, PathBuf::as_path))?;
            let reader = ExactReader {
                inner: file,
                remaining: meta.len(),
                path,
            };
            self.append(header, rel, None, pax, reader)
        } else if ft.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            let target = std::fs::read_link(path).ctx(|| format!("readlink {}", path.display()))?;
            let target = target.into_os_string().into_vec();
            self.append(header, rel, Some(target), pax, std::io::empty())
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            header.set_entry_type(kind);
            if !ft.is_fifo() {
                header
                    .set_device_major(rustix::fs::major(meta.rdev()))
                    .ctx(|| format!("device number of {}", path.display()))?;
                header
                    .set_device_minor(rustix::fs::minor(meta.rdev()))
                    .ctx(|| format!("device number of {}", path.display()))?;
            }
            self.append(header, rel, None, pax, std::io::empty())
        } else {
            // Sockets cannot be represented in a tar; Docker and BuildKit skip them too.
            Ok(())
        }
    }

    fn clamp(&self, mtime: i64) -> u64 {
        let mtime = mtime.max(0) as u64;
        match self.opts.mtime_clamp {
            Some(clamp) if mtime > clamp => clamp,
            _ => mtime,
        }
    }

    /// An empty regular file entry used for whiteouts and opaque markers.
    fn append_marker(&mut self, name: Vec<u8>, mtime: u64) -> Result<()> {
        self.include_parents(&name)?;
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_size(0);
        self.append(header, name, None, Vec::new(), std::io::empty())
    }

    /// Writes an entry whose fields are in `header`, with Go's header layout.
    fn append(
        &mut self,
        header: tar::Header,
        name: Vec<u8>,
        link: Option<Vec<u8>>,
        pax: Vec<(String, Vec<u8>)>,
        data: impl Read,
    ) -> Result<()> {
        let display = String::from_utf8_lossy(&name).into_owned();
        let bad = |what: &str| Error::Invalid(format!("tar {what} of {display}"));
        let fields = gotar::Fields {
            name: &name,
            link: link.as_deref().unwrap_or_default(),
            mode: header.mode().map_err(|_| bad("mode"))? as u64,
            uid: header.uid().map_err(|_| bad("uid"))?,
            gid: header.gid().map_err(|_| bad("gid"))?,
            size: header.size().map_err(|_| bad("size"))?,
            mtime: header.mtime().map_err(|_| bad("mtime"))?,
            typeflag: header.entry_type().as_byte(),
            dev_major: header.device_major().ok().flatten().unwrap_or(0) as u64,
            dev_minor: header.device_minor().ok().flatten().unwrap_or(0) as u64,
        };
        let blocks = gotar::header_blocks(&fields, &pax);
        let (extended, main) = blocks.split_at(blocks.len() - 512);
        self.builder
            .get_mut()
            .write_all(extended)
            .ctx(|| format!("writing PAX header for {display}"))?;
        let main = tar::Header::from_byte_slice(main).clone();
        self.builder
            .append(&main, data)
            .ctx(|| format!("writing tar entry {display}"))
    }
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = parent.to_vec();
    if !out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

fn open_nofollow(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .ctx(|| format!("opening {}", path.display()))
}

/// Yields exactly `remaining` bytes, failing if the file shrank (a short entry would corrupt the tar).
struct ExactReader<'a> {
    inner: File,
    remaining: u64,
    path: &'a Path,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being archived", self.path.display()),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// All xattrs of `path` (not following symlinks); empty where the filesystem has none.
pub(crate) fn list_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = loop {
        let size = match rustix::fs::llistxattr_query(path) {
            Ok(s) => s,
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::io(
                    format!("listing xattrs of {}", path.display()),
                    e,
                ))
            }
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                break buf;
            }
            // Grew between the two calls.
            Err(Errno::RANGE) => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("listing xattrs of {}", path.display()),
                    e,
                ))
            }
        }
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        if let Some(value) = get_xattr(path, name_os)? {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// One xattr of `path` (not following symlinks), None if absent.
fn get_xattr(path: &Path, name: impl AsRef<OsStr>) -> Result<Option<Vec<u8>>> {
    let name = name.as_ref();
    loop {
        let size = match rustix::fs::lgetxattr_query(path, name) {
            Ok(s) => s,
            Err(Errno::NODATA) | Err(Errno::NOTSUP) => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("reading xattr {name:?} of {}", path.display()),
                    e,
                ))
            }
        };
        let mut buf = vec![0u8; size];
        if size == 0 {
            return Ok(Some(buf));
        }
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::RANGE) => continue,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("reading xattr {name:?} of {}", path.display()),
                    e,
                ))
            }
        }
    }
}

/// Metadata of one tar entry, with PAX overrides applied.
struct EntryMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    times: Timestamps,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Extracts an uncompressed OCI layer tar into an (empty) snapshot dir meant as an overlay lowerdir. Returns bytes written.
pub fn apply_layer_tar(input: impl Read, dir: &Path) -> Result<u64> {
    let root: OwnedFd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("opening layer dir {}", dir.display()))?;
    let mut archive = tar::Archive::new(input);
    let mut written = 0u64;
    // Dir mtimes are set last: creating entries inside a dir changes its mtime.
    let mut dir_times: Vec<(Vec<OsString>, Timestamps)> = Vec::new();
    let entries = archive.entries().ctx(|| "reading layer tar".to_string())?;
    for entry in entries {
        let mut entry = entry.ctx(|| "reading layer tar entry".to_string())?;
        let raw_path = entry
            .path()
            .ctx(|| "reading tar entry path".to_string())?
            .into_owned();
        let display = raw_path.display().to_string();
        let comps = safe_components(&raw_path)?;
        let Some((name, parents)) = comps.split_last() else {
            // The layer root itself ("./"); the snapshot dir keeps its own attributes.
            continue;
        };
        let meta = entry_meta(&mut entry, &display)?;
        let parent = open_dir_nofollow(&root, parents, true, &display)?;
        if apply_whiteout(&parent, name, &meta, &display)? {
            continue;
        }
        let at = EntryAt {
            parent: &parent,
            name,
            meta: &meta,
            display: &display,
        };
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                written += at.write_file(&mut entry)?;
            }
            tar::EntryType::Directory => {
                at.make_dir()?;
                dir_times.push((comps.clone(), meta.times));
            }
            tar::EntryType::Symlink => at.make_symlink(&entry)?,
            tar::EntryType::Link => at.make_hardlink(&root, &entry)?,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                at.make_node(entry.header(), kind)?
            }
            tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(Error::Invalid(format!(
                    "tar entry {display} has unsupported type {other:?}"
                )))
            }
        }
    }
    restore_dir_times(&root, &dir_times)?;
    Ok(written)
}

/// An opaque marker or a whiteout (`.wh.NAME`) entry, made as overlay wants it; false for
/// any other name.
fn apply_whiteout(parent: &OwnedFd, name: &OsStr, meta: &EntryMeta, display: &str) -> Result<bool> {
    if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        // `.wh..` and `.wh...` would delete the directory itself or its parent, outside the layer.
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(Error::Invalid(format!(
                "tar whiteout of {display} names no entry"
            )));
        }
    }
    if crate::mountless::mountless() && name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
        mountless_marker(parent, name, meta, display)?;
        return Ok(true);
    }
    if name.as_bytes() == OPAQUE_MARKER.as_bytes() {
        rustix::fs::fsetxattr(parent, opaque_xattr(), b"y", XattrFlags::empty())
            .ctx(|| format!("marking parent of {display} opaque"))?;
        return Ok(true);
    }
    let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(false);
    };
    if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        // Other `.wh..wh.` names are aufs bookkeeping with no overlay meaning.
        return Ok(true);
    }
    let hidden = OsStr::from_bytes(hidden);
    remove_existing(parent, hidden, false, display)?;
    rustix::fs::mknodat(
        parent,
        hidden,
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .ctx(|| format!("creating whiteout for {display}"))?;
    rustix::fs::utimensat(parent, hidden, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
        .ctx(|| format!("setting mtime of whiteout {display}"))?;
    Ok(true)
}

/// Where one tar entry lands: a name in an opened parent dir, with its metadata.
struct EntryAt<'e> {
    parent: &'e OwnedFd,
    name: &'e OsStr,
    meta: &'e EntryMeta,
    display: &'e str,
}

impl EntryAt<'_> {
    /// A regular file; returns the bytes written.
    fn write_file(&self, contents: &mut impl Read) -> Result<u64> {
        let display = self.display;
        remove_existing(self.parent, self.name, false, display)?;
        let fd = rustix::fs::openat(
            self.parent,
            self.name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .ctx(|| format!("creating {display}"))?;
        let mut file = File::from(fd);
        let written = std::io::copy(contents, &mut file).ctx(|| format!("writing {display}"))?;
        apply_fd_meta(file.as_fd(), self.meta, display)?;
        rustix::fs::futimens(&file, &self.meta.times)
            .ctx(|| format!("setting mtime of {display}"))?;
        Ok(written)
    }

    /// A directory (an existing one is kept); its times are set at the end.
    fn make_dir(&self) -> Result<()> {
        if !remove_existing(self.parent, self.name, true, self.display)? {
            rustix::fs::mkdirat(self.parent, self.name, Mode::from_raw_mode(0o700))
                .ctx(|| format!("creating dir {}", self.display))?;
        }
        let fd = open_child_dir(self.parent, self.name, self.display)?;
        apply_fd_meta(fd.as_fd(), self.meta, self.display)
    }

    fn make_symlink<R: Read>(&self, entry: &tar::Entry<R>) -> Result<()> {
        let display = self.display;
        let target = entry
            .link_name()
            .ctx(|| format!("reading symlink target of {display}"))?
            .ok_or_else(|| Error::Invalid(format!("symlink {display} has no target")))?
            .into_owned();
        remove_existing(self.parent, self.name, false, display)?;
        rustix::fs::symlinkat(&target, self.parent, self.name)
            .ctx(|| format!("creating symlink {display}"))?;
        apply_at_meta(self.parent, self.name, self.meta, false, display)
    }

    /// A hard link to an entry already extracted under `root`.
    fn make_hardlink<R: Read>(&self, root: &OwnedFd, entry: &tar::Entry<R>) -> Result<()> {
        let display = self.display;
        let target = entry
            .link_name()
            .ctx(|| format!("reading hardlink target of {display}"))?
            .ok_or_else(|| Error::Invalid(format!("hardlink {display} has no target")))?
            .into_owned();
        let target_comps = safe_components(&target)?;
        let Some((target_name, target_parents)) = target_comps.split_last() else {
            return Err(Error::Invalid(format!(
                "hardlink {display} points at the layer root"
            )));
        };
        let target_dir = open_dir_nofollow(root, target_parents, false, display)?;
        remove_existing(self.parent, self.name, false, display)?;
        // Flags empty: linkat does not follow a symlink target, so links stay inside the layer.
        rustix::fs::linkat(
            &target_dir,
            target_name.as_os_str(),
            self.parent,
            self.name,
            AtFlags::empty(),
        )
        .ctx(|| format!("hardlinking {display} to {}", target.display()))
    }

    /// A character or block device, or a fifo.
    fn make_node(&self, header: &tar::Header, kind: tar::EntryType) -> Result<()> {
        let display = self.display;
        let (file_type, dev) = if kind == tar::EntryType::Fifo {
            (FileType::Fifo, 0)
        } else {
            let (major, minor) =
                device_numbers(header).ctx(|| format!("device number of {display}"))?;
            let ft = if kind == tar::EntryType::Char {
                FileType::CharacterDevice
            } else {
                FileType::BlockDevice
            };
            (ft, rustix::fs::makedev(major, minor))
        };
        remove_existing(self.parent, self.name, false, display)?;
        rustix::fs::mknodat(
            self.parent,
            self.name,
            file_type,
            Mode::from_raw_mode(0o600),
            dev,
        )
        .ctx(|| format!("creating device node {display}"))?;
        apply_at_meta(self.parent, self.name, self.meta, true, display)
    }
}

/// Sets the directories' times, deepest last-made first, once nothing more lands in them.
fn restore_dir_times(root: &OwnedFd, dir_times: &[(Vec<OsString>, Timestamps)]) -> Result<()> {
    for (comps, times) in dir_times.iter().rev() {
        let display = comps.join(OsStr::new("/")).to_string_lossy().into_owned();
        match open_dir_nofollow(root, comps, false, &display) {
            Ok(fd) => rustix::fs::futimens(&fd, times)
                .ctx(|| format!("setting mtime of dir {display}"))?,
            // Replaced by a later entry of the same layer.
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Normal components of an archive path; rejects absolute paths and `..`.
fn safe_components(path: &Path) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::Invalid(format!(
                    "tar entry {} has an absolute path",
                    path.display()
                )))
            }
            Component::ParentDir => {
                return Err(Error::Invalid(format!(
                    "tar entry {} contains a `..` component",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

fn entry_meta<R: Read>(entry: &mut tar::Entry<'_, R>, display: &str) -> Result<EntryMeta> {
    let header = entry.header();
    let mode = header.mode().ctx(|| format!("mode of {display}"))? & 0o7777;
    let old = header.as_old();
    let mut uid = numeric_field(&old.uid, header.uid(), "uid", display)?;
    let mut gid = numeric_field(&old.gid, header.gid(), "gid", display)?;
    let mut mtime = (
        numeric_field(&old.mtime, header.mtime(), "mtime", display)? as i64,
        0i64,
    );
    let mut atime = None;
    let mut xattrs = Vec::new();
    if let Some(exts) = entry
        .pax_extensions()
        .ctx(|| format!("reading PAX header of {display}"))?
    {
        for ext in exts {
            let ext = ext.ctx(|| format!("reading PAX header of {display}"))?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            if let Some(xname) = key.strip_prefix(PAX_XATTR_PREFIX) {
                // A layer must not plant overlay metadata such as redirects; opaque dirs use the marker.
                let overlay_meta = OVERLAY_XATTR_PREFIXES
                    .iter()
                    .any(|prefix| xname.as_bytes().starts_with(prefix));
                if !overlay_meta {
                    xattrs.push((xname.to_string(), value.to_vec()));
                }
                continue;
            }
            let text = std::str::from_utf8(value).unwrap_or("");
            match key {
                "uid" => uid = parse_pax_number(text, display)?,
                "gid" => gid = parse_pax_number(text, display)?,
                "mtime" => mtime = parse_pax_time(text, display)?,
                "atime" => atime = Some(parse_pax_time(text, display)?),
                _ => {}
            }
        }
    }
    let to_id = |v: u64, what: &str| {
        u32::try_from(v)
            .ok()
            .filter(|v| *v != u32::MAX)
            .ok_or_else(|| Error::Invalid(format!("{what} {v} of {display} is out of range")))
    };
    let ts = |(sec, nsec): (i64, i64)| Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    Ok(EntryMeta {
        mode,
        uid: to_id(uid, "uid")?,
        gid: to_id(gid, "gid")?,
        times: Timestamps {
            last_access: ts(atime.unwrap_or(mtime)),
            last_modification: ts(mtime),
        },
        xattrs,
    })
}

/// The (major, minor) device numbers of a tar header; an all-NUL or blank field is 0, as Go's
/// archive/tar (and so BuildKit) reads it. GNU tar and Python's tarfile leave them NUL.
pub fn device_numbers(header: &tar::Header) -> std::io::Result<(u32, u32)> {
    let bytes = header.as_bytes();
    let blank = |field: &[u8]| field.iter().all(|b| *b == 0 || *b == b' ');
    let major = if blank(&bytes[329..337]) {
        0
    } else {
        header.device_major()?.unwrap_or(0)
    };
    let minor = if blank(&bytes[337..345]) {
        0
    } else {
        header.device_minor()?.unwrap_or(0)
    };
    Ok((major, minor))
}

/// A header number; an all-blank field counts as 0, as Go's archive/tar reads it.
fn numeric_field(
    raw: &[u8],
    parsed: std::io::Result<u64>,
    what: &str,
    display: &str,
) -> Result<u64> {
    if raw.iter().all(|b| *b == 0 || *b == b' ') {
        return Ok(0);
    }
    parsed.ctx(|| format!("{what} of {display}"))
}

fn parse_pax_number(text: &str, display: &str) -> Result<u64> {
    text.trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("bad PAX number {text:?} for {display}")))
}

/// Parses a PAX time like "1700000000.123456789" into (secs, nanos).
fn parse_pax_time(text: &str, display: &str) -> Result<(i64, i64)> {
    let bad = || Error::Invalid(format!("bad PAX time {text:?} for {display}"));
    let (secs, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: i64 = digits.parse().map_err(|_| bad())?;
    // "-1.5" means 1.5s before the epoch.
    Ok(if secs < 0 || text.trim().starts_with('-') && nanos > 0 {
        (secs - 1, 1_000_000_000 - nanos)
    } else {
        (secs, nanos)
    })
}

/// Opens `comps` below `root` as directories without following any symlink, creating missing ones if asked.
fn open_dir_nofollow(
    root: &OwnedFd,
    comps: &[OsString],
    create: bool,
    display: &str,
) -> Result<OwnedFd> {
    let mut current = rustix::fs::openat(
        root,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("opening layer root for {display}"))?;
    for comp in comps {
        current = match try_open_child_dir(&current, comp) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&current, comp.as_os_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(Error::io(format!("creating parent {comp:?} of {display}"), e))
                    }
                }
                open_child_dir(&current, comp, display)?
            }
            Err(Errno::NOENT) => {
                return Err(Error::NotFound(format!("{comp:?} on the way to {display}")))
            }
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                return Err(Error::Invalid(format!(
                    "{display}: path component {comp:?} is a symlink or not a directory; refusing to follow it"
                )))
            }
            Err(e) => return Err(Error::io(format!("opening {comp:?} on the way to {display}"), e)),
        };
    }
    Ok(current)
}

fn try_open_child_dir(parent: &OwnedFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn open_child_dir(parent: &OwnedFd, name: &OsStr, display: &str) -> Result<OwnedFd> {
    try_open_child_dir(parent, name).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => Error::Invalid(format!(
            "{display}: {name:?} is a symlink or not a directory; refusing to follow it"
        )),
        e => Error::io(format!("opening dir {display}"), e),
    })
}

/// Clears the way for a new entry `name`; with `keep_dir`, an existing dir stays (returns true).
fn remove_existing(parent: &OwnedFd, name: &OsStr, keep_dir: bool, display: &str) -> Result<bool> {
    let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(s) => s,
        Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(Error::io(format!("stat {display}"), e)),
    };
    let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
    if is_dir && keep_dir {
        return Ok(true);
    }
    if is_dir {
        // remove_dir_all never follows symlinks; the /proc path pins the already-resolved parent.
        std::fs::remove_dir_all(proc_path(parent, name))
            .ctx(|| format!("replacing dir {display}"))?;
    } else {
        rustix::fs::unlinkat(parent, name, AtFlags::empty())
            .ctx(|| format!("replacing {display}"))?;
    }
    Ok(false)
}

/// A path naming `name` inside the directory open as `parent`, for calls that have no *at form.
fn proc_path(parent: &OwnedFd, name: &OsStr) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name)
}

/// A whiteout or opaque marker kept as the empty file the tar names (mountless snapshots:
/// no 0/0 devices or trusted xattrs in an unprivileged container); a whiteout also removes
/// what the layer's own earlier entries put at the hidden name.
fn mountless_marker(parent: &OwnedFd, name: &OsStr, meta: &EntryMeta, display: &str) -> Result<()> {
    let hidden = &name.as_bytes()[WHITEOUT_PREFIX.len()..];
    if name.as_bytes() != OPAQUE_MARKER.as_bytes()
        && !hidden.starts_with(WHITEOUT_PREFIX.as_bytes())
    {
        remove_existing(parent, OsStr::from_bytes(hidden), false, display)?;
    }
    remove_existing(parent, name, false, display)?;
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .ctx(|| format!("creating whiteout {display}"))?;
    rustix::fs::futimens(&fd, &meta.times).ctx(|| format!("setting mtime of whiteout {display}"))
}

/// Owner, then mode (chown clears setuid bits), then xattrs, on an open file or dir.
fn apply_fd_meta(fd: std::os::fd::BorrowedFd<'_>, meta: &EntryMeta, display: &str) -> Result<()> {
    rustix::fs::fchown(
        fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )
    .ctx(|| format!("chown {display}"))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).ctx(|| format!("chmod {display}"))?;
    for (name, value) in &meta.xattrs {
        rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty())
            .ctx(|| format!("setting xattr {name} on {display}"))?;
    }
    Ok(())
}

/// Owner, mode, xattrs and times for entries that cannot be opened (symlinks, devices, fifos).
fn apply_at_meta(
    parent: &OwnedFd,
    name: &OsStr,
    meta: &EntryMeta,
    chmod: bool,
    display: &str,
) -> Result<()> {
    rustix::fs::chownat(
        parent,
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx(|| format!("chown {display}"))?;
    if chmod {
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(meta.mode),
            AtFlags::empty(),
        )
        .ctx(|| format!("chmod {display}"))?;
    }
    let path = proc_path(parent, name);
    for (xname, value) in &meta.xattrs {
        rustix::fs::lsetxattr(&path, xname.as_str(), value, XattrFlags::empty())
            .ctx(|| format!("setting xattr {xname} on {display}"))?;
    }
    rustix::fs::utimensat(parent, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
        .ctx(|| format!("setting mtime of {display}"))
}
