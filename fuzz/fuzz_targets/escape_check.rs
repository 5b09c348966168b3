//! Shared by the applier targets: a target dir inside an outer temp dir, and the check that
//! nothing was written beside it (an entry escaping through `..` or a symlink).

use std::path::{Path, PathBuf};

pub struct Sandbox {
    pub outer: tempfile::TempDir,
    pub target: PathBuf,
}

impl Sandbox {
    pub fn new() -> Self {
        let outer = tempfile::Builder::new()
            .prefix("builder-fuzz-")
            .tempdir()
            .expect("temp dir");
        let target = outer.path().join("target");
        std::fs::create_dir(&target).expect("target dir");
        Sandbox { outer, target }
    }

    /// Panics (a fuzz finding) if anything but `target` is in the outer dir.
    pub fn assert_contained(&self) {
        let beside: Vec<PathBuf> = std::fs::read_dir(self.outer.path())
            .expect("listing outer dir")
            .map(|e| e.expect("outer entry").path())
            .filter(|p| p != &self.target)
            .collect();
        assert!(beside.is_empty(), "written outside the target: {beside:?}");
        let md = std::fs::symlink_metadata(&self.target).expect("target");
        assert!(md.is_dir(), "target replaced by a non-directory");
    }

    pub fn path(&self) -> &Path {
        &self.target
    }
}
