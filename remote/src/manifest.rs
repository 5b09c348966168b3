//! The client's side of the context upload: the tree's metadata with `.dockerignore`
//! applied, parents before children.

use crate::proto::Entry;
use anyhow::{bail, Context as _, Result};
use solver::context::LocalSource;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Lists `src` (sorted, each directory before what it holds). Sockets, fifos and devices are
/// left out, as `docker build` leaves them out.
pub fn walk(src: &dyn LocalSource) -> Result<Vec<Entry>> {
    let root = src.root().to_path_buf();
    let mut out = Vec::new();
    walk_dir(src, &root, "", &mut out)?;
    Ok(out)
}

fn walk_dir(src: &dyn LocalSource, root: &Path, rel: &str, out: &mut Vec<Entry>) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for name in names {
        let Some(name) = name.to_str() else {
            bail!(
                "{}: a file name that is not UTF-8 cannot be sent to a remote builder",
                dir.join(&name).display()
            );
        };
        let child = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let path = root.join(&child);
        let md = path
            .symlink_metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        let excluded = src.is_excluded(&child);
        if md.is_dir() {
            if excluded && !src.may_reinclude_under(&child) {
                continue;
            }
            out.push(entry(&child, &md, String::new()));
            walk_dir(src, root, &child, out)?;
        } else if excluded {
            continue;
        } else if md.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            let Some(target) = target.to_str() else {
                bail!("{}: a symlink target that is not UTF-8", path.display());
            };
            out.push(entry(&child, &md, target.to_string()));
        } else if md.is_file() {
            out.push(entry(&child, &md, String::new()));
        }
    }
    Ok(())
}

/// The context directory's own metadata (path "").
pub fn root_entry(src: &dyn LocalSource) -> Result<Entry> {
    let md = std::fs::metadata(src.root())
        .with_context(|| format!("reading {}", src.root().display()))?;
    Ok(entry("", &md, String::new()))
}

fn entry(path: &str, md: &std::fs::Metadata, link: String) -> Entry {
    Entry {
        path: path.to_string(),
        mode: md.mode(),
        size: if md.is_file() { md.size() } else { 0 },
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        uid: md.uid(),
        gid: md.gid(),
        link,
    }
}

/// A directory holding one file that matters: the Dockerfile, sent as its own context so
/// that a `-f` outside the build context works.
pub struct SingleFile {
    pub dir: PathBuf,
    pub name: String,
}

impl LocalSource for SingleFile {
    fn root(&self) -> &Path {
        &self.dir
    }
    fn is_excluded(&self, rel: &str) -> bool {
        rel != self.name
    }
    fn may_reinclude_under(&self, _rel_dir: &str) -> bool {
        false
    }
}
