//! The contract for a directory the client provides (the build context, a named context).
//! Only the type lives here; walking and hashing the directory is the solver's job.

use std::path::{Path, PathBuf};

/// A directory supplied by the client, with its ignore rules.
pub trait LocalSource: Send + Sync {
    /// The directory on the client's filesystem.
    fn root(&self) -> &Path;
    /// Whether the slash-separated relative path is excluded (by `.dockerignore`).
    fn is_excluded(&self, rel: &str) -> bool;
    /// Whether an excluded directory may still contain re-included entries (`!` rules),
    /// so that it must be walked anyway.
    fn may_reinclude_under(&self, rel_dir: &str) -> bool;
    /// Blocks until the directory is complete (a remote builder's context still being
    /// uploaded); an error when it never will be.
    fn wait_until_complete(&self) -> Result<(), String> {
        Ok(())
    }
    /// A file's content digest (SHA-256) when the source already knows it for exactly this
    /// file (`md` is its metadata now), so that it need not be read again.
    fn known_digest(&self, _rel: &[u8], _md: &std::fs::Metadata) -> Option<[u8; 32]> {
        None
    }
}

/// A plain directory with nothing excluded.
pub struct PlainDir(pub PathBuf);

impl LocalSource for PlainDir {
    fn root(&self) -> &Path {
        &self.0
    }
    fn is_excluded(&self, _rel: &str) -> bool {
        false
    }
    fn may_reinclude_under(&self, _rel_dir: &str) -> bool {
        false
    }
}
