//! `cp` between the host and a running container, through `/proc/PID/root`; container paths
//! are resolved inside that root, so a symlink in the container cannot point the copy at the
//! host's files.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use crate::store::{Container, Status};

fn container_root(container: &Container) -> Result<PathBuf> {
    let state = container.live_state()?;
    let pid = crate::procs::container_pid(&state)
        .filter(|_| state.status == Status::Running)
        .ok_or_else(|| {
            anyhow!(
                "container {} is not running (cp needs a running container)",
                container.config.name
            )
        })?;
    Ok(PathBuf::from(format!("/proc/{pid}/root")))
}

/// Where a copy of `source` lands given `dest`: inside it when it is a directory.
fn landing(source_name: &Path, dest: &Path) -> Result<PathBuf> {
    if dest.is_dir() {
        let name = source_name
            .file_name()
            .ok_or_else(|| anyhow!("cannot copy {}", source_name.display()))?;
        return Ok(dest.join(name));
    }
    Ok(dest.to_path_buf())
}

/// Copies `path` in the container to `dest` on the host.
pub fn copy_out(container: &Container, path: &str, dest: &Path) -> Result<()> {
    let root = container_root(container)?;
    let source = executor::resolve_in_root(&root, path)?;
    if !source.exists() && std::fs::symlink_metadata(&source).is_err() {
        bail!(
            "Could not find the file {path} in container {}",
            container.config.name
        );
    }
    let target = landing(Path::new(path), dest)?;
    crate::volumes::copy_any(&source, &target)
}

/// Copies `source` on the host to `path` in the container.
pub fn copy_in(container: &Container, source: &Path, path: &str) -> Result<()> {
    let root = container_root(container)?;
    let dest = executor::resolve_in_root(&root, path)?;
    let target = landing(source, &dest)?;
    crate::volumes::copy_any(source, &target)
}
