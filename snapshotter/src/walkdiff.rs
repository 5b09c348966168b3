//! Snapshots without mounts (chroot isolation): a snapshot's view is a plain copy of what its
//! overlay would show, and a writable view's changes are found afterwards by walking the copy
//! against what was copied in, and written into the snapshot's upper dir as overlay would have
//! (changed entries and their parent dirs copied up, whiteouts for deletions). The upper dir
//! then goes through the same layer writer as on the overlay path.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags, CWD};

use crate::error::{Error, IoContext, Result};
use crate::lowers::{is_whiteout, Lowers};

/// An entry as it was copied into the tree, to tell later whether it changed.
struct Original {
    ino: u64,
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    rdev: u64,
    /// Where it was copied from, to compare contents when only the ctime moved.
    source: PathBuf,
}

impl Original {
    fn of(md: &Metadata, source: PathBuf) -> Self {
        Original {
            ino: md.ino(),
            ctime: (md.ctime(), md.ctime_nsec()),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            rdev: md.rdev(),
            source,
        }
    }
}

/// A copied tree: what each path (slash-separated, relative, "" for the root) was, and the
/// names each directory held.
#[derive(Default)]
pub(crate) struct Tree {
    originals: HashMap<Vec<u8>, Original>,
    children: HashMap<Vec<u8>, Vec<Vec<u8>>>,
}

/// Hard links seen so far: (device, inode) of a source to the first path made for it.
type Links = HashMap<(u64, u64), PathBuf>;

/// Copies what the stacked `layers` (nearest first, overlay's rules) show into the empty
/// directory `target`, remembering every entry.
pub(crate) fn materialise(layers: Vec<PathBuf>, target: &Path) -> Result<Tree> {
    let lowers = Lowers::new(layers.clone());
    let mut tree = Tree::default();
    let mut links = Links::new();
    // The root's attributes come from the nearest layer that has a root.
    if let Some(root) = layers.iter().find(|d| d.is_dir()) {
        let md = std::fs::symlink_metadata(root).ctx(|| format!("stat {}", root.display()))?;
        copy_attrs(root, &md, target)?;
    }
    copy_children(&lowers, b"", target, &mut tree, &mut links)?;
    if let Some(root) = layers.iter().find(|d| d.is_dir()) {
        let md = std::fs::symlink_metadata(root).ctx(|| format!("stat {}", root.display()))?;
        set_times(target, &md)?;
        remember(&mut tree, Vec::new(), target, root.clone())?;
    }
    Ok(tree)
}

fn copy_children(
    lowers: &Lowers,
    rel: &[u8],
    dir: &Path,
    tree: &mut Tree,
    links: &mut Links,
) -> Result<()> {
    let mut names = Vec::new();
    for (name, source) in lowers.children(rel) {
        let md = std::fs::symlink_metadata(&source).ctx(|| format!("stat {}", source.display()))?;
        if md.file_type().is_socket() || is_whiteout(&md) {
            continue;
        }
        let dest = dir.join(OsStr::from_bytes(&name));
        let child_rel = join_rel(rel, &name);
        copy_entry(&source, &md, &dest, links)?;
        if md.is_dir() {
            copy_children(lowers, &child_rel, &dest, tree, links)?;
            set_times(&dest, &md)?;
        }
        remember(tree, child_rel, &dest, source)?;
        names.push(name);
    }
    tree.children.insert(rel.to_vec(), names);
    Ok(())
}

fn remember(tree: &mut Tree, rel: Vec<u8>, dest: &Path, source: PathBuf) -> Result<()> {
    let md = std::fs::symlink_metadata(dest).ctx(|| format!("stat {}", dest.display()))?;
    tree.originals.insert(rel, Original::of(&md, source));
    Ok(())
}

/// Writes what changed in `target` since [`materialise`] into `upper`; `lowers` are the
/// layers below `upper` (nearest first), which decide where deletions need a whiteout.
pub(crate) fn write_changes(
    tree: &Tree,
    target: &Path,
    upper: &Path,
    lowers: Vec<PathBuf>,
) -> Result<()> {
    let walk = Walk {
        tree,
        target,
        upper,
        lowers: Lowers::new(lowers),
    };
    let mut links = Links::new();
    let root_md = std::fs::symlink_metadata(target).ctx(|| format!("stat {}", target.display()))?;
    if tree
        .originals
        .get(b"".as_slice())
        .is_none_or(|o| !walk.unchanged(o, target, &root_md))
    {
        copy_attrs(target, &root_md, upper)?;
    }
    walk.dir(b"", &mut links)?;
    if std::fs::symlink_metadata(upper).is_ok() {
        set_times(upper, &root_md)?;
    }
    Ok(())
}

struct Walk<'a> {
    tree: &'a Tree,
    target: &'a Path,
    upper: &'a Path,
    lowers: Lowers,
}

impl Walk<'_> {
    fn path_in(&self, base: &Path, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(OsStr::from_bytes(rel))
        }
    }

    /// Compares directory `rel` (a directory in the target) with what was copied in.
    fn dir(&self, rel: &[u8], links: &mut Links) -> Result<()> {
        let dir = self.path_in(self.target, rel);
        let mut present = std::collections::HashSet::new();
        let entries = std::fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.ctx(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name().as_bytes().to_vec();
            let child_rel = join_rel(rel, &name);
            self.entry(&child_rel, links)?;
            present.insert(name);
        }
        let was = self
            .tree
            .children
            .get(rel)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for name in was.iter().filter(|n| !present.contains(*n)) {
            self.deleted(&join_rel(rel, name))?;
        }
        let upper_dir = self.path_in(self.upper, rel);
        if let Ok(umd) = std::fs::symlink_metadata(&upper_dir) {
            if umd.is_dir() {
                let md =
                    std::fs::symlink_metadata(&dir).ctx(|| format!("stat {}", dir.display()))?;
                set_times(&upper_dir, &md)?;
            }
        }
        Ok(())
    }

    fn entry(&self, rel: &[u8], links: &mut Links) -> Result<()> {
        let path = self.path_in(self.target, rel);
        let md = std::fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
        if md.file_type().is_socket() {
            return Ok(());
        }
        let original = self.tree.originals.get(rel);
        let changed = original.is_none_or(|o| !self.unchanged(o, &path, &md));
        if changed {
            self.copy_up(rel, &path, &md, links)?;
        }
        if md.is_dir() {
            // Walked even when unchanged: a file inside may have been rewritten in place.
            self.dir(rel, links)?;
        }
        Ok(())
    }

    /// Whether the entry at `path` is still the one copied in as `o`.
    fn unchanged(&self, o: &Original, path: &Path, md: &Metadata) -> bool {
        if md.ino() == o.ino && (md.ctime(), md.ctime_nsec()) == o.ctime {
            return true;
        }
        // Touched (e.g. rewritten and restored): compare what a layer would record.
        if md.mode() != o.mode
            || md.uid() != o.uid
            || md.gid() != o.gid
            || md.rdev() != o.rdev
            || (md.mtime(), md.mtime_nsec()) != o.mtime
            || (!md.is_dir() && md.size() != o.size)
            || xattrs(path) != xattrs(&o.source)
        {
            return false;
        }
        if md.file_type().is_symlink() {
            return std::fs::read_link(path).ok() == std::fs::read_link(&o.source).ok();
        }
        !md.is_file() || same_contents(path, &o.source)
    }

    /// Puts the entry at `rel` into the upper dir (replacing what is there), after its parents.
    fn copy_up(&self, rel: &[u8], path: &Path, md: &Metadata, links: &mut Links) -> Result<()> {
        self.parents_in_upper(rel)?;
        let dest = self.path_in(self.upper, rel);
        let whiteout = whiteout_path(&dest);
        if std::fs::symlink_metadata(&whiteout).is_ok() {
            std::fs::remove_file(&whiteout).ctx(|| format!("removing {}", whiteout.display()))?;
        }
        if let Ok(existing) = std::fs::symlink_metadata(&dest) {
            if existing.is_dir() && md.is_dir() {
                return copy_attrs(path, md, &dest);
            }
            remove_any(&dest, &existing)?;
        }
        copy_entry(path, md, &dest, links)
    }

    /// Makes the directories above `rel` in the upper dir, with the target's attributes.
    fn parents_in_upper(&self, rel: &[u8]) -> Result<()> {
        let mut prefix = Vec::new();
        let comps: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
        for comp in &comps[..comps.len() - 1] {
            prefix = join_rel(&prefix, comp);
            let dest = self.path_in(self.upper, &prefix);
            if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let source = self.path_in(self.target, &prefix);
            let md =
                std::fs::symlink_metadata(&source).ctx(|| format!("stat {}", source.display()))?;
            std::fs::create_dir(&dest).ctx(|| format!("creating {}", dest.display()))?;
            copy_attrs(&source, &md, &dest)?;
        }
        Ok(())
    }

    /// `rel` was copied in and is gone: drop what the upper dir has there, and hide the
    /// lowers' entry with a whiteout.
    fn deleted(&self, rel: &[u8]) -> Result<()> {
        let dest = self.path_in(self.upper, rel);
        if let Ok(existing) = std::fs::symlink_metadata(&dest) {
            remove_any(&dest, &existing)?;
        }
        if self.lowers.lookup(rel).is_none() {
            return Ok(());
        }
        self.parents_in_upper(rel)?;
        let whiteout = whiteout_path(&dest);
        std::fs::File::create(&whiteout)
            .ctx(|| format!("creating whiteout {}", whiteout.display()))?;
        rustix::fs::chmod(&whiteout, Mode::empty()).ctx(|| format!("chmod {}", whiteout.display()))
    }
}

/// The aufs-style whiteout file that deletes `path` (see [`crate::lowers::WHITEOUT_PREFIX`]).
fn whiteout_path(path: &Path) -> PathBuf {
    let mut name = crate::lowers::WHITEOUT_PREFIX.as_bytes().to_vec();
    name.extend_from_slice(path.file_name().map(OsStr::as_bytes).unwrap_or_default());
    path.with_file_name(OsStr::from_bytes(&name))
}

fn remove_any(path: &Path, md: &Metadata) -> Result<()> {
    if md.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .ctx(|| format!("removing {}", path.display()))
}

/// Makes `dest` like `source` (type, contents, owner, mode, xattrs; times for non-dirs are
/// set by the caller, for dirs after their contents). Hard links stay links.
fn copy_entry(source: &Path, md: &Metadata, dest: &Path, links: &mut Links) -> Result<()> {
    let ft = md.file_type();
    let key = (md.dev(), md.ino());
    if !ft.is_dir() && md.nlink() > 1 {
        if let Some(first) = links.get(&key) {
            return std::fs::hard_link(first, dest)
                .ctx(|| format!("linking {} to {}", dest.display(), first.display()));
        }
        links.insert(key, dest.to_path_buf());
    }
    if ft.is_dir() {
        std::fs::create_dir(dest).ctx(|| format!("creating {}", dest.display()))?;
    } else if ft.is_file() {
        copy_file(source, dest)?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(source).ctx(|| format!("reading {}", source.display()))?;
        std::os::unix::fs::symlink(&target, dest)
            .ctx(|| format!("creating symlink {}", dest.display()))?;
    } else {
        let kind = FileType::from_raw_mode(md.mode());
        rustix::fs::mknodat(CWD, dest, kind, Mode::empty(), md.rdev())
            .ctx(|| format!("creating {}", dest.display()))?;
    }
    copy_attrs(source, md, dest)?;
    if !ft.is_dir() {
        set_times(dest, md)?;
    }
    Ok(())
}

fn copy_file(source: &Path, dest: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut from = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(source)
        .ctx(|| format!("opening {}", source.display()))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .ctx(|| format!("creating {}", dest.display()))?;
    std::io::copy(&mut from, &mut to).ctx(|| format!("copying {}", source.display()))?;
    Ok(())
}

/// Owner, then mode (chown clears setuid bits), then xattrs. Overlay's own xattrs are not
/// copied, and `trusted.*` ones are skipped where this process may not set them.
fn copy_attrs(source: &Path, md: &Metadata, dest: &Path) -> Result<()> {
    rustix::fs::chownat(
        CWD,
        dest,
        Some(Uid::from_raw(md.uid())),
        Some(Gid::from_raw(md.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx(|| format!("chown {}", dest.display()))?;
    if !md.file_type().is_symlink() {
        rustix::fs::chmodat(
            CWD,
            dest,
            Mode::from_raw_mode(md.mode() & 0o7777),
            AtFlags::empty(),
        )
        .ctx(|| format!("chmod {}", dest.display()))?;
    }
    for (name, value) in crate::layer::list_xattrs(source)? {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let name = OsStr::from_bytes(&name);
        match rustix::fs::lsetxattr(dest, name, &value, XattrFlags::empty()) {
            Ok(()) => {}
            Err(rustix::io::Errno::PERM) if name.as_bytes().starts_with(b"trusted.") => {}
            Err(e) => {
                return Err(Error::io(
                    format!("setting xattr {name:?} on {}", dest.display()),
                    e,
                ))
            }
        }
    }
    Ok(())
}

fn set_times(dest: &Path, md: &Metadata) -> Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, dest, &times, AtFlags::SYMLINK_NOFOLLOW)
        .ctx(|| format!("setting times of {}", dest.display()))
}

fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    crate::layer::list_xattrs(path).unwrap_or_default()
}

fn same_contents(a: &Path, b: &Path) -> bool {
    let (Ok(mut fa), Ok(mut fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let Ok(na) = fa.read(&mut ba) else {
            return false;
        };
        if na == 0 {
            return fb.read(&mut bb[..1]).is_ok_and(|n| n == 0);
        }
        if fb.read_exact(&mut bb[..na]).is_err() || ba[..na] != bb[..na] {
            return false;
        }
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
