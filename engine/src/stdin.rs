//! `builder build -f - DIR` (Dockerfile on stdin) and `builder build -` (a tar context, or a
//! bare Dockerfile with an empty context, on stdin), as `docker build` accepts them. Stdin
//! is spooled into a temporary directory that lives as long as the build.

use anyhow::{bail, Context as _, Result};
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The context directory and Dockerfile path a build should use.
pub struct BuildInputs {
    pub context: PathBuf,
    pub file: Option<PathBuf>,
    /// Holds what came from stdin; removed on drop.
    _spool: Option<tempfile::TempDir>,
}

fn is_stdin(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// Resolves `-` for the context and/or the Dockerfile; other paths pass through unchanged.
pub fn resolve(context: &Path, file: Option<&Path>) -> Result<BuildInputs> {
    let file_from_stdin = file.is_some_and(is_stdin);
    if is_stdin(context) && file_from_stdin {
        bail!("invalid argument: can't use stdin for both build context and dockerfile");
    }
    if !is_stdin(context) && !file_from_stdin {
        return Ok(BuildInputs {
            context: context.to_path_buf(),
            file: file.map(Path::to_path_buf),
            _spool: None,
        });
    }
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .context("reading stdin")?;
    let spool = tempfile::Builder::new()
        .prefix("builder-stdin-")
        .tempdir()
        .context("creating a directory for stdin")?;
    let dockerfile = spool.path().join("Dockerfile");
    if file_from_stdin {
        std::fs::write(&dockerfile, &data)?;
        return Ok(BuildInputs {
            context: context.to_path_buf(),
            file: Some(dockerfile),
            _spool: Some(spool),
        });
    }
    let context_dir = spool.path().join("context");
    std::fs::create_dir(&context_dir)?;
    if is_gzip(&data) {
        let tar = flate2::read::GzDecoder::new(&data[..]);
        unpack(tar, &context_dir)?;
    } else if is_tar(&data) {
        unpack(&data[..], &context_dir)?;
    } else {
        // A plain Dockerfile: the context is empty and -f is ignored, as with docker.
        std::fs::write(&dockerfile, &data)?;
        return Ok(BuildInputs {
            context: context_dir,
            file: Some(dockerfile),
            _spool: Some(spool),
        });
    }
    // With a tar context, -f names a file inside the archive.
    let file = file.map(|f| context_dir.join(f.strip_prefix("/").unwrap_or(f)));
    Ok(BuildInputs {
        context: context_dir,
        file,
        _spool: Some(spool),
    })
}

fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}

/// A ustar/GNU header carries "ustar" at offset 257.
fn is_tar(data: &[u8]) -> bool {
    data.get(257..262) == Some(b"ustar".as_slice())
}

fn unpack(reader: impl std::io::Read, dir: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    archive
        .unpack(dir)
        .context("unpacking the build context tar from stdin")
}
