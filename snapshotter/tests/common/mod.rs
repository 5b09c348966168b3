//! Helpers shared by the integration tests (which run as root with real overlay mounts).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use snapshotter::{mount_all, unmount, Mount};

/// Mounts `mounts` on a fresh dir under `base` and unmounts on drop.
pub struct Mounted {
    pub target: PathBuf,
}

impl Mounted {
    pub fn new(mounts: &[Mount], base: &Path, name: &str) -> Mounted {
        let target = base.join(name);
        std::fs::create_dir_all(&target).unwrap();
        mount_all(mounts, &target).unwrap();
        Mounted { target }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        unmount(&self.target).unwrap();
    }
}

/// Names of the entries in a tar, in archive order.
pub fn tar_names(data: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(data);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}
