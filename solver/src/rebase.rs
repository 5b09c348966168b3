//! Whether a layer built on an empty tree can be stacked on a base as it is.
//!
//! A `COPY` only reads its base where its destination paths already exist. When none of the
//! copied paths meets a symlink, a type change or a directory with other owner or mode in the
//! base, stacking the layer made on an empty tree gives exactly the tree the copy would have
//! made on that base. The solver uses this to run such copies before their base is built
//! (as an automatic `--link`) and falls back to a plain copy when this returns false.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// True when stacking `layer` (a directory tree) on `base` equals copying it into `base`.
pub fn stacks_exactly(base: &Path, layer: &Path) -> io::Result<bool> {
    for entry in std::fs::read_dir(layer)? {
        let entry = entry?;
        let upper = entry.metadata()?;
        let lower = match std::fs::symlink_metadata(base.join(entry.file_name())) {
            Ok(md) => md,
            // Nothing below a path the base lacks can conflict with it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if lower.file_type().is_symlink() && upper.is_dir() {
            return Ok(false); // a copy would follow the link
        }
        if upper.is_dir() != lower.is_dir() {
            return Ok(false);
        }
        if upper.is_dir() {
            let same_meta = upper.mode() & 0o7777 == lower.mode() & 0o7777
                && upper.uid() == lower.uid()
                && upper.gid() == lower.gid();
            if !same_meta || !stacks_exactly(&base.join(entry.file_name()), &entry.path())? {
                return Ok(false);
            }
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
}
