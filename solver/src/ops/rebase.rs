//! Whether a layer built on an empty tree can be stacked on a base as it is.
//!
//! A `COPY` only reads its base where its destination paths already exist. When none of the
//! copied paths meets a symlink, a type change or a directory with other owner or mode in the
//! base, stacking the layer made on an empty tree gives exactly the tree the copy would have
//! made on that base. The solver uses this to run such copies before their base is built
//! (as an automatic `--link`) and falls back to a plain copy when this returns false.

use crate::graph::{Definition, Op, Vertex};
use crate::ops::{Input, Produced, SolveOp, Step};
use crate::solve::Ref;
use crate::worker::{labelled_layer, sha256_hex, Worker};
use anyhow::{anyhow, bail};
use std::collections::HashSet;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One entry of a layer, as far as stacking it matters.
#[derive(Clone, Debug)]
pub struct LayerEntry {
    /// Path relative to the layer root.
    pub path: PathBuf,
    pub is_dir: bool,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl LayerEntry {
    fn of(path: PathBuf, md: &Metadata) -> Self {
        LayerEntry {
            path,
            is_dir: md.is_dir(),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        }
    }
}

/// How a layer entry meets the base.
enum Meets {
    /// The base has nothing there: nothing below it can conflict either.
    Nothing,
    /// Stacking gives what copying would; look below it if it is a directory.
    Same,
    Conflict,
}

fn meets(base: &Path, entry: &LayerEntry) -> io::Result<Meets> {
    let lower = match std::fs::symlink_metadata(base.join(&entry.path)) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Meets::Nothing),
        Err(e) => return Err(e),
    };
    if lower.file_type().is_symlink() {
        return Ok(Meets::Conflict); // a copy would follow the link (a file's too)
    }
    if entry.is_dir != lower.is_dir() {
        return Ok(Meets::Conflict);
    }
    if entry.is_dir
        && (entry.mode != lower.mode() & 0o7777
            || entry.uid != lower.uid()
            || entry.gid != lower.gid())
    {
        return Ok(Meets::Conflict);
    }
    Ok(Meets::Same)
}

/// True when stacking `layer` (a directory tree) on `base` equals copying it into `base`.
pub fn stacks_exactly(base: &Path, layer: &Path) -> io::Result<bool> {
    stacks_below(base, layer, Path::new(""))
}

fn stacks_below(base: &Path, layer: &Path, rel: &Path) -> io::Result<bool> {
    for dirent in std::fs::read_dir(layer.join(rel))? {
        let dirent = dirent?;
        let entry = LayerEntry::of(rel.join(dirent.file_name()), &dirent.metadata()?);
        match meets(base, &entry)? {
            Meets::Nothing => {}
            Meets::Conflict => return Ok(false),
            Meets::Same if entry.is_dir => {
                if !stacks_below(base, layer, &entry.path)? {
                    return Ok(false);
                }
            }
            Meets::Same => {}
        }
    }
    Ok(true)
}

/// The entries of the tree at `root`, parents before children, as its layer lists them.
pub fn tree_entries(root: &Path) -> io::Result<Vec<LayerEntry>> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        for dirent in std::fs::read_dir(root.join(&rel))? {
            let dirent = dirent?;
            let entry = LayerEntry::of(rel.join(dirent.file_name()), &dirent.metadata()?);
            if entry.is_dir {
                dirs.push(entry.path.clone());
            }
            out.push(entry);
        }
    }
    // Sorted by path, every directory precedes what it holds.
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// [`stacks_exactly`] for a layer known by its entries (parents listed before children), as
/// read from its blob.
pub fn entries_stack_exactly(base: &Path, entries: &[LayerEntry]) -> io::Result<bool> {
    // Directories of the layer the base lacks: their contents need no look.
    let mut new_dirs: HashSet<&Path> = HashSet::new();
    for entry in entries {
        if entry.path.parent().is_some_and(|p| new_dirs.contains(p)) {
            if entry.is_dir {
                new_dirs.insert(&entry.path);
            }
            continue;
        }
        match meets(base, entry)? {
            Meets::Nothing if entry.is_dir => {
                new_dirs.insert(&entry.path);
            }
            Meets::Conflict => return Ok(false),
            Meets::Nothing | Meets::Same => {}
        }
    }
    Ok(true)
}

/// A copy made on an empty tree (input 1) applied to its base (input 0): its layer is
/// stacked when that is exact, else the copy runs again on the base. Inputs 2.. are the
/// copy's other inputs (its sources).
pub(crate) struct Rebase<'a> {
    name: &'a str,
    /// The copy's vertex, run again when stacking is not exact.
    copy: Option<&'a Vertex>,
}

impl<'a> Rebase<'a> {
    pub fn new(def: &'a Definition, i: usize) -> Self {
        let v = &def.vertices[i];
        Rebase {
            name: &v.name,
            copy: v.inputs.get(1).map(|&j| &def.vertices[j]),
        }
    }
}

impl SolveOp for Rebase<'_> {
    /// The copy itself was reported as the step; stacking it is bookkeeping.
    fn shown(&self) -> bool {
        false
    }

    fn cache_key(&mut self, _: &Worker, _: &Step, inputs: &[Input]) -> anyhow::Result<String> {
        let (base, layer) = match inputs {
            [base, layer, ..] => (base, layer),
            _ => bail!("{}: a rebase needs a base and a layer", self.name),
        };
        Ok(sha256_hex(&[
            b"rebase",
            base.1.as_bytes(),
            layer.1.as_bytes(),
        ]))
    }

    fn run(&mut self, w: &Worker, step: &Step, inputs: &[Input]) -> anyhow::Result<Produced> {
        run_rebase(w, step.vertex, self.copy, inputs).map(Produced::built)
    }
}

/// Applies a copy made on an empty tree (input 1) to the base (input 0): by stacking its
/// layer when that is exact, else by running the copy again on the base.
fn run_rebase(
    w: &Worker,
    i: usize,
    copy: Option<&Vertex>,
    inputs: &[Input],
) -> anyhow::Result<String> {
    let layer_top = match &inputs[1].0 {
        Ref::Snapshot(s) => s.clone(),
        other => bail!("a rebase layer must be a snapshot, not {other:?}"),
    };
    let exact = match &inputs[0].0 {
        Ref::Scratch => true,
        Ref::Snapshot(base) => {
            let view = w.mount_view(base)?;
            stacks_exactly_on(w, view.path(), &layer_top)?
        }
        Ref::Local(n) => bail!("local directory {n:?} cannot be a base"),
    };
    if exact {
        return crate::ops::merge::run_merge(w, &inputs[..2]);
    }
    let Some((copy, Op::File(file))) = copy.map(|c| (c, &c.op)) else {
        bail!("a rebase layer must come from a file op");
    };
    let mut file_inputs = vec![inputs[0].clone()];
    file_inputs.extend(inputs[2..].iter().cloned());
    // The copy really runs again: show it as the step it is.
    w.run_step(i, &copy.name, || {
        crate::ops::file::run_file(w, file, &file_inputs)
    })
}

/// Whether stacking the layer of snapshot `layer` on the tree at `base` gives what copying
/// onto it would.
fn stacks_exactly_on(w: &Worker, base: &Path, layer: &str) -> anyhow::Result<bool> {
    let info = w.snapshots.stat(layer)?;
    if !info.pending {
        let upper = w.snapshots.upper_dir(layer)?;
        return Ok(stacks_exactly(base, &upper)?);
    }
    // Made as a blob: its listing, kept from making it or read from the blob.
    let known = w
        .blob_listings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(layer)
        .cloned();
    let entries = match known {
        Some(listing) => listing,
        None => match layer_entries(w, &info)? {
            Some(listing) => Arc::new(listing),
            None => return Ok(false),
        },
    };
    Ok(entries_stack_exactly(base, &entries)?)
}

/// The entries of a snapshot's own layer, read from its blob; None if the layer deletes
/// anything (whiteouts), which stacking cannot be checked for.
fn layer_entries(w: &Worker, info: &snapshotter::Info) -> anyhow::Result<Option<Vec<LayerEntry>>> {
    let layer = labelled_layer(&info.labels)
        .ok_or_else(|| anyhow!("snapshot {} names no layer blob", info.key))?;
    let mut archive = tar::Archive::new(exporter::open_layer(&w.content, &layer)?);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        // Rebuilt from components: a directory's trailing slash would make lstat follow
        // a symlink of the base at that path.
        let path: PathBuf = entry.path()?.components().collect();
        if path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b".wh."))
        {
            return Ok(None);
        }
        let header = entry.header();
        out.push(LayerEntry {
            path,
            is_dir: header.entry_type().is_dir(),
            mode: header.mode()? & 0o7777,
            uid: header.uid()? as u32,
            gid: header.gid()? as u32,
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree(paths: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for p in paths {
            let full = d.path().join(p.trim_end_matches('/'));
            if p.ends_with('/') {
                std::fs::create_dir_all(&full).unwrap();
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755)).unwrap();
            } else {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, p).unwrap();
            }
        }
        d
    }

    #[test]
    fn new_paths_and_replaced_files_stack() {
        let base = tree(&["etc/", "etc/passwd", "app/", "app/old"]);
        let layer = tree(&["src/", "src/a/", "src/a/b", "app/", "app/old", "app/new"]);
        assert!(stacks_exactly(base.path(), layer.path()).unwrap());
    }

    #[test]
    fn type_changes_symlinks_and_other_directory_metadata_do_not() {
        let layer = tree(&["app/", "app/f"]);
        let file_in_base = tree(&["app"]);
        assert!(!stacks_exactly(file_in_base.path(), layer.path()).unwrap());

        let link_in_base = tree(&["real/"]);
        std::os::unix::fs::symlink("real", link_in_base.path().join("app")).unwrap();
        assert!(!stacks_exactly(link_in_base.path(), layer.path()).unwrap());

        let private_dir = tree(&["app/"]);
        std::fs::set_permissions(
            private_dir.path().join("app"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        assert!(!stacks_exactly(private_dir.path(), layer.path()).unwrap());

        let dir_where_layer_has_file = tree(&["app/", "app/f/"]);
        assert!(!stacks_exactly(dir_where_layer_has_file.path(), layer.path()).unwrap());
    }

    #[test]
    fn entries_give_the_same_answers_as_trees() {
        let layer = tree(&["app/", "app/f", "src/", "src/a/", "src/a/b"]);
        let listed = tree_entries(layer.path()).unwrap();
        let cases = [
            (tree(&["etc/", "etc/passwd", "app/", "app/old"]), true),
            (tree(&["app"]), false),
            (tree(&["app/", "app/f/"]), false),
            (tree(&["src/", "src/a"]), false),
            (tree(&["other/", "other/a/"]), true),
        ];
        for (base, expected) in cases {
            assert_eq!(stacks_exactly(base.path(), layer.path()).unwrap(), expected);
            assert_eq!(
                entries_stack_exactly(base.path(), &listed).unwrap(),
                expected
            );
        }
        let link_in_base = tree(&["real/"]);
        std::os::unix::fs::symlink("real", link_in_base.path().join("src")).unwrap();
        assert!(!entries_stack_exactly(link_in_base.path(), &listed).unwrap());
    }
}
