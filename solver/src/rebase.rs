//! Whether a layer built on an empty tree can be stacked on a base as it is.
//!
//! A `COPY` only reads its base where its destination paths already exist. When none of the
//! copied paths meets a symlink, a type change or a directory with other owner or mode in the
//! base, stacking the layer made on an empty tree gives exactly the tree the copy would have
//! made on that base. The solver uses this to run such copies before their base is built
//! (as an automatic `--link`) and falls back to a plain copy when this returns false.

use std::collections::HashSet;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
