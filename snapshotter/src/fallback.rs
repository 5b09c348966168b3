//! The copying fallback of rootless mode: where overlay cannot be mounted in the user
//! namespace (kernels before 5.11; a store on a filesystem without `user.*` xattrs), views
//! are copies ([`crate::mountless`]), as in chroot isolation, while the executor still
//! isolates with namespaces.
//!
//! Chosen once per process, before any mount: forced by [`SNAPSHOTTER_ENV`]`=copy`, kept
//! when the store was made with copies (its whiteouts are files, which overlay would show),
//! and otherwise taken when a probe mount of overlay with `userxattr` fails.

use std::path::{Path, PathBuf};

use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

use crate::error::{Error, Result};

/// `overlay` (never fall back) or `copy` (always copy); unset: probe in rootless mode.
pub const SNAPSHOTTER_ENV: &str = "BUILDER_SNAPSHOTTER";

/// Chooses overlay mounts or copies for this process (see the module doc); returns why it
/// copies (also printed as a warning in rootless mode), or `None`. `rootless`: this process
/// is in a user namespace of its own.
pub fn choose_views(store_root: &Path, rootless: bool) -> Result<Option<String>> {
    let why = match std::env::var(SNAPSHOTTER_ENV).as_deref() {
        Ok("copy") => Some(format!("{SNAPSHOTTER_ENV}=copy")),
        Ok("overlay") => None,
        Ok("") | Err(_) if !rootless || crate::mountless::mountless() => None,
        Ok("") | Err(_) if crate::mountless::store_is_mountless(store_root) => {
            Some("the store was made with copies".into())
        }
        Ok("") | Err(_) => probe_overlay(store_root)
            .err()
            .map(|e| format!("overlay cannot be mounted in the user namespace ({e})")),
        Ok(other) => {
            return Err(Error::Invalid(format!(
                "{SNAPSHOTTER_ENV}={other}: expected overlay or copy"
            )))
        }
    };
    if let Some(why) = &why {
        crate::mountless::set_mountless(true);
        if rootless {
            eprintln!("warning: rootless mode: {why}; snapshots are copied, not mounted (slower)");
        }
    }
    Ok(why)
}

/// Mounts a small overlay (with `userxattr` in a user namespace) under the store, where the
/// real ones go, and unmounts it.
pub fn probe_overlay(store_root: &Path) -> std::io::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("overlay-probe-")
        .tempdir_in(probe_parent(store_root)?)?;
    let sub = |name: &str| -> std::io::Result<PathBuf> {
        let path = dir.path().join(name);
        std::fs::create_dir(&path)?;
        Ok(path)
    };
    let (lower, upper, work, merged) = (sub("l")?, sub("u")?, sub("w")?, sub("m")?);
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    if crate::util::in_user_namespace() {
        data.push_str(",userxattr");
    }
    let data = std::ffi::CString::new(data).map_err(std::io::Error::other)?;
    mount(
        "overlay",
        &merged,
        "overlay",
        MountFlags::empty(),
        Some(data.as_c_str()),
    )?;
    // Writing through it is what needs the xattrs of the upper filesystem.
    let written = std::fs::write(merged.join("probe"), b"");
    unmount(&merged, UnmountFlags::DETACH)?;
    written
}

fn probe_parent(store_root: &Path) -> std::io::Result<PathBuf> {
    let parent = store_root.join("tmp");
    std::fs::create_dir_all(&parent)?;
    Ok(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_probe_mounts_here_and_bad_values_are_named() {
        let root = tempfile::tempdir().unwrap();
        if rustix::process::geteuid().is_root() {
            probe_overlay(root.path()).expect("overlay works as root here");
            assert_eq!(
                std::fs::read_dir(root.path().join("tmp")).unwrap().count(),
                0,
                "the probe leaves nothing"
            );
        }
        std::env::set_var(SNAPSHOTTER_ENV, "zfs");
        let err = choose_views(root.path(), true).unwrap_err().to_string();
        std::env::remove_var(SNAPSHOTTER_ENV);
        assert!(err.contains("BUILDER_SNAPSHOTTER=zfs"), "{err}");
    }
}
