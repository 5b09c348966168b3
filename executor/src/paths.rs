//! Resolving container paths inside a rootfs on the host without escaping it through symlinks
//! or `..` (the rootfs is untrusted: an image may contain `etc -> /` style links).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Upper bound on symlinks followed while resolving one path, like the kernel's ELOOP limit.
const MAX_SYMLINKS: usize = 255;

/// Returns the host path of `path` (an absolute or relative container path) inside `root`,
/// following symlinks as if `root` were `/`. Components that do not exist are appended as-is.
pub fn resolve_in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components_of(Path::new(path));
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links_followed = 0;

    while let Some(component) = pending.pop_front() {
        if component == "." || component.is_empty() {
            continue;
        }
        if component == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&component);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links_followed += 1;
                if links_followed > MAX_SYMLINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("too many levels of symbolic links resolving {path}"),
                    ));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut target_components = components_of(&target);
                target_components.extend(pending);
                pending = target_components;
            }
            Ok(_) => resolved.push(component),
            Err(e) if e.kind() == io::ErrorKind::NotFound => resolved.push(component),
            Err(e) => return Err(e),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn components_of(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn stays_inside_root_through_absolute_and_dotdot_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/", root.join("escape")).unwrap();
        symlink("../../../../..", root.join("usr/up")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();

        assert_eq!(
            resolve_in_root(root, "/escape/etc").unwrap(),
            root.join("etc")
        );
        assert_eq!(
            resolve_in_root(root, "/usr/up/etc").unwrap(),
            root.join("etc")
        );
        assert_eq!(resolve_in_root(root, "/../../x").unwrap(), root.join("x"));
        assert_eq!(
            resolve_in_root(root, "/lib/x/y").unwrap(),
            root.join("usr/lib/x/y")
        );
        assert_eq!(resolve_in_root(root, "work").unwrap(), root.join("work"));
    }

    #[test]
    fn symlink_loops_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        assert!(resolve_in_root(dir.path(), "/a/x").is_err());
    }
}
