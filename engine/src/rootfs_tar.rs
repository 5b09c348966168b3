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
    mut out: impl Write,
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
    // Laid out as BuildKit's tar exporter writes it: Go's headers, names sorted, directories
    // with a trailing slash, hard links kept, modes without file-type bits.
    let options = snapshotter::layer::DiffOptions {
        round_mtime: true,
        ..Default::default()
    };
    snapshotter::layer::write_diff_tar(&scratch.0, &mut out, &options)
        .context("writing the rootfs tar")?;
    out.flush().context("flushing the rootfs tar")?;
    Ok(())
}
