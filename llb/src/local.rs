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
