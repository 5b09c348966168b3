//! Mount targets created and opened inside the rootfs through descriptors (openat2 with
//! RESOLVE_IN_ROOT). A step running at the same time and sharing a cache mount can swap a
//! directory on a target's path for a symlink; resolving by descriptor means no mkdir and no
//! mount of ours can be sent outside the root by that (the CVE-2024-23651 class).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{fstat, mkdirat, openat, openat2, Mode, OFlags, ResolveFlags};

use crate::stubs::Tracker;

/// The rootfs, open as a directory.
pub(crate) struct RootDir {
    fd: OwnedFd,
}

impl RootDir {
    pub(crate) fn open(host: &Path) -> io::Result<RootDir> {
        let fd = rustix::fs::open(
            host,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootDir { fd })
    }

    /// Opens container path `rel` (already relative) with symlinks resolved inside the root.
    fn resolve(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        Ok(openat2(
            &self.fd,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?)
    }

    /// Opens container path `path` (`O_PATH`), creating what is missing on the way as
    /// directories and the last component as a directory or (`leaf_is_dir` false) an empty
    /// file; each creation is recorded in `tracker`.
    pub(crate) fn open_creating(
        &self,
        path: &str,
        leaf_is_dir: bool,
        tracker: &mut Tracker,
    ) -> io::Result<OwnedFd> {
        let components: Vec<&OsStr> = Path::new(path)
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                Component::ParentDir => Some(OsStr::new("..")),
                _ => None,
            })
            .collect();
        let mut prefix = PathBuf::new();
        let mut parent_is_new = false;
        for (i, name) in components.iter().enumerate() {
            let next = prefix.join(name);
            match self.resolve(&next, OFlags::PATH) {
                Ok(_) => parent_is_new = false,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let is_dir = leaf_is_dir || i + 1 < components.len();
                    self.create_in(&prefix, name, is_dir, !parent_is_new, tracker)?;
                    parent_is_new = true;
                }
                Err(e) => return Err(e),
            }
            prefix = next;
        }
        self.resolve(&prefix, OFlags::PATH)
    }

    /// Creates `name` in the directory `parent` resolves to, and records it.
    fn create_in(
        &self,
        parent: &Path,
        name: &OsStr,
        is_dir: bool,
        record_parent_mtime: bool,
        tracker: &mut Tracker,
    ) -> io::Result<()> {
        let dir = self.resolve(parent, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let parent_mtime = fstat(&dir)
            .ok()
            .filter(|_| record_parent_mtime)
            .map(|st| (st.st_mtime, st.st_mtime_nsec as i64));
        let created = if is_dir {
            mkdirat(&dir, name, Mode::from_raw_mode(0o755))
        } else {
            openat(
                &dir,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        };
        match created {
            Ok(()) => {}
            // Someone made it meanwhile: it is not ours to record, and the next open resolves it.
            Err(rustix::io::Errno::EXIST) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let host_parent = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
        tracker.record_created(&host_parent.join(name), is_dir, parent_mtime);
        Ok(())
    }
}

/// Moves the mount at `staged` (a helper-owned path) onto the object `target` refers to.
pub(crate) fn move_mount_to(staged: &Path, target: &OwnedFd) -> io::Result<()> {
    use rustix::mount::{move_mount, MoveMountFlags};
    move_mount(
        rustix::fs::CWD,
        staged,
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    Ok(())
}
