//! `-o type=tar` / `-o -`: a build result's filesystem as one tar stream.

use anyhow::{Context as _, Result};
use solver::{Ref, Solver};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Removes a scratch directory however the export ends.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the result's filesystem into a scratch directory under `scratch_root` (inside the
/// storage root) and streams it as a tar to `out`, entries sorted by name.
pub fn write_rootfs_tar(
    solver: &Solver,
    result: &Ref,
    scratch_root: &Path,
    out: impl Write,
) -> Result<()> {
    std::fs::create_dir_all(scratch_root)
        .with_context(|| format!("creating {}", scratch_root.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let scratch =
        ScratchDir(scratch_root.join(format!("rootfs-tar-{}-{nanos}", std::process::id())));
    solver.export_local(result, &scratch.0)?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    append_tree(&mut builder, &scratch.0, Path::new(""))?;
    let mut out = builder.into_inner().context("finishing the rootfs tar")?;
    out.flush().context("flushing the rootfs tar")?;
    Ok(())
}

fn append_tree<W: Write>(builder: &mut tar::Builder<W>, dir: &Path, rel: &Path) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = rel.join(entry.file_name());
        builder
            .append_path_with_name(&path, &name)
            .with_context(|| format!("adding {} to the tar", name.display()))?;
        if entry.file_type()?.is_dir() {
            append_tree(builder, &path, &name)?;
        }
    }
    Ok(())
}
