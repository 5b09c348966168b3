//! The server's copy of an uploaded context, brought up to date from the client's manifest
//! like fsutil's diffcopy: only files whose metadata differ are requested and written.
//!
//! Nothing a client sends can write outside the copy: every path is checked (relative, no
//! `.`/`..`/empty components, its parent a directory of the same manifest), and every file
//! operation goes through a parent directory opened with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, so a symlink in the tree (or planted by an earlier upload) is never
//! followed.

use crate::proto::Entry;
use anyhow::{anyhow, bail, Context as _, Result};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

pub fn kind_of(mode: u32) -> Option<Kind> {
    match mode & S_IFMT {
        S_IFDIR => Some(Kind::Dir),
        S_IFREG => Some(Kind::File),
        S_IFLNK => Some(Kind::Symlink),
        _ => None,
    }
}

/// Checks a manifest: relative clean paths, no duplicates, each parent a directory listed
/// before its children. Returns the index of each path.
pub fn validate(entries: &[Entry]) -> Result<HashMap<&str, usize>> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        check_path(&e.path)?;
        let kind = kind_of(e.mode)
            .ok_or_else(|| anyhow!("context entry {:?}: unsupported file type", e.path))?;
        if kind == Kind::Symlink && e.link.is_empty() {
            bail!("context entry {:?}: a symlink without a target", e.path);
        }
        if let Some((parent, _)) = e.path.rsplit_once('/') {
            let parent_is_dir = seen
                .get(parent)
                .is_some_and(|&p| kind_of(entries[p].mode) == Some(Kind::Dir));
            if !parent_is_dir {
                bail!(
                    "context entry {:?}: its parent is not a directory listed before it",
                    e.path
                );
            }
        }
        if seen.insert(&e.path, i).is_some() {
            bail!("context entry {:?}: listed twice", e.path);
        }
    }
    Ok(seen)
}

/// A path inside the context: relative, slash-separated, without `.`, `..` or empty parts.
pub fn check_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        bail!("context entry {path:?}: not a clean relative path inside the context");
    }
    Ok(())
}

/// The server's copy of one context, `dir`, opened once so that every operation is relative
/// to it.
pub struct Tree {
    dir: PathBuf,
    root: OwnedFd,
    /// The directory the last file was written in: a context's files come directory by
    /// directory, so most files need no new path walk.
    last_dir: std::sync::Mutex<Option<(String, Arc<OwnedFd>)>>,
}

impl Tree {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let root = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            root,
            last_dir: std::sync::Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Opens the directory `rel` (relative, "" for the root) without following any symlink
    /// and without leaving the tree.
    fn open_dir(&self, rel: &str) -> Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        rustix::fs::openat2(
            &self.root,
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .with_context(|| format!("opening {rel:?} in the context copy"))
    }

    fn open_parent<'a>(&self, rel: &'a str) -> Result<(OwnedFd, &'a str)> {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        Ok((self.open_dir(parent)?, name))
    }

    /// Removes what the manifest no longer has (or has as another type, or a symlink with
    /// another target), creates directories and symlinks, and returns the indexes of the
    /// regular files that must be uploaded.
    pub fn prepare(&self, entries: &[Entry]) -> Result<Vec<u32>> {
        let index = validate(entries)?;
        // Directories may be replaced below: no descriptor of an old one is kept.
        *self.last_dir.lock().map_err(|_| anyhow!("poisoned lock"))? = None;
        // The tree was finished under this very manifest (a no-op rebuild): nothing to check.
        let digest = manifest_digest(entries);
        if std::fs::read_to_string(self.marker()).is_ok_and(|d| d == digest) {
            return Ok(Vec::new());
        }
        match std::fs::remove_file(self.marker()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.remove_stale(&index, entries)?;
        let mut need = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match kind_of(e.mode) {
                Some(Kind::Dir) => self.make_dir(e)?,
                Some(Kind::Symlink) => self.make_symlink(e)?,
                Some(Kind::File) if !self.file_matches(e) => need.push(i as u32),
                _ => {}
            }
        }
        Ok(need)
    }

    fn remove_stale(&self, index: &HashMap<&str, usize>, entries: &[Entry]) -> Result<()> {
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let dir = if rel.is_empty() {
                self.dir.clone()
            } else {
                self.dir.join(&rel)
            };
            for found in std::fs::read_dir(&dir)? {
                let found = found?;
                let name = found.file_name().to_string_lossy().into_owned();
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                // Relative to the open directory (no symlink followed, no full path walk).
                let md = found.metadata()?;
                let keep = index
                    .get(child.as_str())
                    .is_some_and(|&i| same_type(&found.path(), &md, &entries[i]));
                if !keep {
                    remove_any(&found.path(), &md)?;
                } else if md.is_dir() {
                    stack.push(child);
                }
            }
        }
        Ok(())
    }

    fn make_dir(&self, e: &Entry) -> Result<()> {
        let (parent, name) = self.open_parent(&e.path)?;
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(err) => Err(anyhow!("creating directory {:?}: {err}", e.path)),
        }
    }

    fn make_symlink(&self, e: &Entry) -> Result<()> {
        let (parent, name) = self.open_parent(&e.path)?;
        match rustix::fs::symlinkat(e.link.as_str(), &parent, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(err) => bail!("creating symlink {:?}: {err}", e.path),
        }
        set_owner_and_times(&parent, name, e)
    }

    fn file_matches(&self, e: &Entry) -> bool {
        // Relative to the tree's descriptor: a short path walk per file of a large context.
        let Ok(st) = rustix::fs::statat(&self.root, e.path.as_str(), AtFlags::SYMLINK_NOFOLLOW)
        else {
            return false;
        };
        st.st_mode & 0o170000 == 0o100000
            && st.st_size as u64 == e.size
            && st.st_mode == e.mode
            && st.st_uid == e.uid
            && st.st_gid == e.gid
            && st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128 == e.mtime_ns as i128
    }

    /// Starts receiving file `e`, written in place (created, or truncated: only files that
    /// differ are received). A file left half-written by a dropped upload never matches its
    /// manifest entry, as its mtime is set last, so the next upload sends it again.
    pub fn begin_file(&self, e: &Entry) -> Result<IncomingFile> {
        if kind_of(e.mode) != Some(Kind::File) {
            bail!("context entry {:?}: data sent for a non-file", e.path);
        }
        let (parent, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
        let dir = self.cached_dir(parent)?;
        // `name` is one clean component (`validate`); the file itself is not followed
        // either if it is a symlink.
        let file = rustix::fs::openat2(
            &*dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .with_context(|| format!("creating {:?} in the context copy", e.path))?;
        Ok(IncomingFile {
            file: std::fs::File::from(file),
            entry: e.clone(),
            written: 0,
            hash: sha2::Sha256::default(),
        })
    }

    fn cached_dir(&self, rel: &str) -> Result<Arc<OwnedFd>> {
        let mut last = self.last_dir.lock().map_err(|_| anyhow!("poisoned lock"))?;
        if let Some((_, fd)) = last.as_ref().filter(|(p, _)| p == rel) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(self.open_dir(rel)?);
        *last = Some((rel.to_string(), fd.clone()));
        Ok(fd)
    }

    /// Gives directories (and the root, if given) their modes, owners and times once their
    /// contents are in place.
    pub fn finish(&self, entries: &[Entry], root: Option<&Entry>) -> Result<()> {
        for e in entries.iter().rev() {
            if kind_of(e.mode) == Some(Kind::Dir) {
                let (parent, name) = self.open_parent(&e.path)?;
                rustix::fs::chmodat(
                    &parent,
                    name,
                    Mode::from_raw_mode(e.mode & 0o7777),
                    AtFlags::empty(),
                )?;
                set_owner_and_times(&parent, name, e)?;
            }
        }
        if let Some(r) = root.filter(|r| kind_of(r.mode) == Some(Kind::Dir)) {
            rustix::fs::fchmod(&self.root, Mode::from_raw_mode(r.mode & 0o7777))?;
            set_owner_and_times(&self.root, ".", r)?;
        }
        std::fs::write(self.marker(), manifest_digest(entries))?;
        Ok(())
    }

    /// Beside the tree: the digest of the manifest the tree was last finished under. Only
    /// the server writes the tree, and any upload removes this first.
    fn marker(&self) -> PathBuf {
        self.dir.with_file_name("tree.complete")
    }
}

fn manifest_digest(entries: &[Entry]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for e in entries {
        h.update(prost::Message::encode_length_delimited_to_vec(e));
    }
    hex::encode(h.finalize())
}

fn same_type(path: &Path, md: &std::fs::Metadata, e: &Entry) -> bool {
    match kind_of(e.mode) {
        Some(Kind::Dir) => md.is_dir(),
        Some(Kind::File) => md.is_file(),
        Some(Kind::Symlink) => {
            md.file_type().is_symlink()
                && std::fs::read_link(path).is_ok_and(|t| t.as_os_str() == e.link.as_str())
        }
        None => false,
    }
}

fn remove_any(path: &Path, md: &std::fs::Metadata) -> Result<()> {
    if md.is_dir() {
        // remove_dir_all does not follow symlinks inside.
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .with_context(|| format!("removing {}", path.display()))
}

fn set_owner_and_times(parent: &impl AsFd, name: &str, e: &Entry) -> Result<()> {
    rustix::fs::chownat(
        parent,
        name,
        Some(rustix::fs::Uid::from_raw(e.uid)),
        Some(rustix::fs::Gid::from_raw(e.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("chown {:?}", e.path))?;
    let t = timespec(e.mtime_ns);
    rustix::fs::utimensat(
        parent,
        name,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("setting the times of {:?}", e.path))
}

fn timespec(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// A file being received; [`IncomingFile::commit`] gives it its metadata.
pub struct IncomingFile {
    file: std::fs::File,
    entry: Entry,
    written: u64,
    hash: sha2::Sha256,
}

impl IncomingFile {
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.written += data.len() as u64;
        if self.written > self.entry.size {
            bail!(
                "context entry {:?}: more data than its size {}",
                self.entry.path,
                self.entry.size
            );
        }
        sha2::Digest::update(&mut self.hash, data);
        std::io::Write::write_all(&mut self.file, data)
            .with_context(|| format!("writing {:?}", self.entry.path))
    }

    /// Gives the complete file its owner, mode and mtime (in that order: chown clears
    /// set-id bits, and the mtime says the file is complete); returns its SHA-256.
    pub fn commit(self) -> Result<[u8; 32]> {
        let e = &self.entry;
        if self.written != e.size {
            bail!(
                "context entry {:?}: got {} bytes of {}",
                e.path,
                self.written,
                e.size
            );
        }
        let f = &self.file;
        rustix::fs::fchown(
            f,
            Some(rustix::fs::Uid::from_raw(e.uid)),
            Some(rustix::fs::Gid::from_raw(e.gid)),
        )?;
        rustix::fs::fchmod(f, Mode::from_raw_mode(e.mode & 0o7777))?;
        let t = timespec(e.mtime_ns);
        rustix::fs::futimens(
            f,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        )?;
        Ok(sha2::Digest::finalize(self.hash).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, mode: u32, size: u64, link: &str) -> Entry {
        Entry {
            path: path.into(),
            mode,
            size,
            mtime_ns: 1_700_000_000_123_456_789,
            uid: 0,
            gid: 0,
            link: link.into(),
        }
    }

    fn put(tree: &Tree, entry: &Entry, data: &[u8]) -> Result<()> {
        let mut f = tree.begin_file(entry)?;
        f.write(data)?;
        f.commit().map(drop)
    }

    #[test]
    fn paths_that_leave_the_tree_are_refused() {
        for bad in ["../x", "/etc/passwd", "a/../../x", "a//b", "./a", "", "a/."] {
            assert!(
                validate(&[e(bad, S_IFREG | 0o644, 0, "")]).is_err(),
                "{bad:?}"
            );
        }
        // A file below a symlink (the symlink-then-write trick) is refused before any write.
        let sneaky = [
            e("l", S_IFLNK | 0o777, 0, "/tmp"),
            e("l/x", S_IFREG | 0o644, 1, ""),
        ];
        assert!(validate(&sneaky).is_err());
        // A child listed before its parent, or under a parent not listed.
        assert!(validate(&[e("d/x", S_IFREG | 0o644, 0, "")]).is_err());
        assert!(validate(&[
            e("f", S_IFREG | 0o644, 0, ""),
            e("f", S_IFREG | 0o644, 0, "")
        ])
        .is_err());
    }

    #[test]
    fn a_symlink_left_by_an_earlier_upload_is_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(&dir.path().join("tree")).unwrap();
        // Upload 1: `d` is a symlink to a directory outside the tree.
        let first = [e("d", S_IFLNK | 0o777, 0, outside.path().to_str().unwrap())];
        assert!(tree.prepare(&first).unwrap().is_empty());
        assert!(tree
            .path()
            .join("d")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink());
        // Writing through it directly is refused by the kernel (RESOLVE_NO_SYMLINKS)...
        let through = e("d/x", S_IFREG | 0o644, 3, "");
        assert!(put(&tree, &through, b"bad").is_err());
        // ...and upload 2, with `d` a directory, replaces the symlink before writing.
        let second = [e("d", S_IFDIR | 0o755, 0, ""), through.clone()];
        assert_eq!(tree.prepare(&second).unwrap(), vec![1]);
        put(&tree, &through, b"ok!").unwrap();
        tree.finish(&second, None).unwrap();
        assert_eq!(std::fs::read(tree.path().join("d/x")).unwrap(), b"ok!");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn only_changed_files_are_requested_and_stale_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(&dir.path().join("tree")).unwrap();
        let a = e("a", S_IFREG | 0o644, 2, "");
        let b = e("b", S_IFREG | 0o600, 3, "");
        let first = [a.clone(), b.clone()];
        assert_eq!(tree.prepare(&first).unwrap(), vec![0, 1]);
        put(&tree, &a, b"aa").unwrap();
        put(&tree, &b, b"bbb").unwrap();
        tree.finish(&first, None).unwrap();
        assert!(tree.prepare(&first).unwrap().is_empty(), "nothing changed");
        let mut a2 = a.clone();
        a2.mtime_ns += 1;
        assert_eq!(tree.prepare(&[a2]).unwrap(), vec![0]);
        assert!(!tree.path().join("b").exists(), "b left the manifest");
        // More bytes than announced are refused; a dropped file is sent again next time.
        let mut f = tree.begin_file(&a).unwrap();
        assert!(f.write(b"too long").is_err());
        drop(f);
        assert_eq!(tree.prepare(std::slice::from_ref(&a)).unwrap(), vec![0]);
        put(&tree, &a, b"aa").unwrap();
        tree.finish(std::slice::from_ref(&a), None).unwrap();
        assert!(tree.prepare(&[a]).unwrap().is_empty());
    }
}
