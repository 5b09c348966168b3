//! Paths the executor had to create in a rootfs (mount targets, `/etc/hosts`, the working
//! directory, ...). They are recorded so the caller can take them out of the committed layer
//! when the program left them untouched, as BuildKit does.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One path the executor created in the rootfs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedPath {
    /// Slash-separated, relative to the rootfs (no leading `/`).
    pub path: String,
    pub is_dir: bool,
    /// The parent directory's mtime (seconds, nanoseconds) before the path was created, when
    /// the parent already existed; restoring it hides the creation from a layer diff.
    pub parent_mtime: Option<(i64, i64)>,
    /// The parent's mtime just after the path was created. If it differs when the stub is
    /// removed, the program changed the directory itself (`ln -sf .. /etc/localtime`), and
    /// that change is kept.
    #[serde(default)]
    pub parent_mtime_after: Option<(i64, i64)>,
}

/// Appends [`CreatedPath`] records, one JSON object per line, to a file in the state directory.
pub(crate) struct Tracker {
    root: PathBuf,
    out: Option<File>,
}

impl Tracker {
    /// Records paths under `root` into `file` (created close-on-exec, so the program never
    /// inherits it). Without a file, nothing is recorded.
    pub(crate) fn new(root: &Path, file: Option<&Path>) -> Self {
        let out = file.and_then(|f| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .ok()
        });
        Tracker {
            root: root.to_path_buf(),
            out,
        }
    }

    /// From now on, host paths are container paths (after `pivot_root`).
    pub(crate) fn set_root(&mut self, root: &Path) {
        self.root = root.to_path_buf();
    }

    /// Records a path created by other means (descriptor-relative creation).
    pub(crate) fn record_created(
        &mut self,
        host: &Path,
        is_dir: bool,
        parent_mtime: Option<(i64, i64)>,
    ) {
        self.record(host, is_dir, parent_mtime);
    }

    fn record(&mut self, host: &Path, is_dir: bool, parent_mtime: Option<(i64, i64)>) {
        let parent_mtime_after = parent_mtime.and(host.parent().and_then(mtime_of));
        let (Some(out), Ok(rel)) = (self.out.as_mut(), host.strip_prefix(&self.root)) else {
            return;
        };
        let Some(rel) = rel.to_str() else {
            return;
        };
        if rel.is_empty() {
            return;
        }
        let entry = CreatedPath {
            path: rel.to_string(),
            is_dir,
            parent_mtime,
            parent_mtime_after,
        };
        if let Ok(mut line) = serde_json::to_vec(&entry) {
            line.push(b'\n');
            let _ = out.write_all(&line);
        }
    }

    /// `create_dir_all`, recording every directory it had to create.
    pub(crate) fn create_dir_all(&mut self, host: &Path) -> std::io::Result<()> {
        let missing = missing_ancestors(host);
        let parent_mtime = missing
            .last()
            .and_then(|top| top.parent())
            .and_then(mtime_of);
        std::fs::create_dir_all(host)?;
        for (i, dir) in missing.iter().rev().enumerate() {
            self.record(dir, true, if i == 0 { parent_mtime } else { None });
        }
        Ok(())
    }

    /// Creates an empty file (and its missing parents) unless something exists at `host`.
    pub(crate) fn create_file(&mut self, host: &Path) -> std::io::Result<()> {
        if std::fs::symlink_metadata(host).is_ok() {
            return Ok(());
        }
        if let Some(parent) = host.parent() {
            self.create_dir_all(parent)?;
        }
        let parent_mtime = host.parent().and_then(mtime_of);
        File::create(host)?;
        self.record(host, false, parent_mtime);
        Ok(())
    }
}

/// `host` and its ancestors that do not exist, deepest first.
fn missing_ancestors(host: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = Some(host);
    while let Some(p) = cur {
        if std::fs::symlink_metadata(p).is_ok() {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    missing
}

fn mtime_of(path: &Path) -> Option<(i64, i64)> {
    let md = std::fs::symlink_metadata(path).ok()?;
    Some((md.mtime(), md.mtime_nsec()))
}

/// Reads the records written by a [`Tracker`]; a missing file means nothing was created.
pub(crate) fn read_created(file: &Path) -> Vec<CreatedPath> {
    let Ok(f) = File::open(file) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}

/// Removes the created paths from `dir` (the rootfs, or the upper directory holding its
/// changes) where the program left them as they were: empty files and empty directories.
/// Deepest first, so a directory emptied by removing its stubs goes too; the parents'
/// mtimes are restored.
///
/// The program may have replaced any directory on the way with a symlink to a host path
/// (CVE-2024-23652), so every parent is opened beneath `dir` without following a symlink,
/// and removal and timestamps go through that descriptor.
pub fn remove_stubs(dir: &Path, created: &[CreatedPath]) {
    use rustix::fs::{open, Mode, OFlags};
    let Ok(root) = open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    for entry in created.iter().rev() {
        let rel = Path::new(&entry.path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let (Some(name), Some(parent_rel)) = (rel.file_name(), rel.parent()) else {
            continue;
        };
        let Ok(parent) = open_beneath(&root, parent_rel) else {
            continue;
        };
        let parent_mtime_now = fd_mtime(&parent);
        if remove_stub_at(&parent, name, entry) {
            let untouched =
                entry.parent_mtime_after.is_none() || entry.parent_mtime_after == parent_mtime_now;
            let restore = if untouched {
                entry.parent_mtime
            } else {
                parent_mtime_now
            };
            if let Some((sec, nsec)) = restore {
                let _ = set_fd_mtime(&parent, sec, nsec);
            }
        }
    }
}

/// Opens directory `rel` below `root`, failing on any symlink or `..` on the way.
fn open_beneath(root: &std::os::fd::OwnedFd, rel: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    Ok(openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Removes `name` in `parent` if it is still the untouched stub `entry` describes.
fn remove_stub_at(
    parent: &std::os::fd::OwnedFd,
    name: &std::ffi::OsStr,
    entry: &CreatedPath,
) -> bool {
    use rustix::fs::{statat, unlinkat, AtFlags, FileType};
    let Ok(st) = statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return false;
    };
    let kind = FileType::from_raw_mode(st.st_mode);
    if entry.is_dir {
        kind == FileType::Directory && unlinkat(parent, name, AtFlags::REMOVEDIR).is_ok()
    } else {
        kind == FileType::RegularFile
            && st.st_size == 0
            && unlinkat(parent, name, AtFlags::empty()).is_ok()
    }
}

fn fd_mtime(fd: &std::os::fd::OwnedFd) -> Option<(i64, i64)> {
    let st = rustix::fs::fstat(fd).ok()?;
    Some((st.st_mtime, st.st_mtime_nsec as i64))
}

fn set_fd_mtime(fd: &std::os::fd::OwnedFd, sec: i64, nsec: i64) -> std::io::Result<()> {
    use rustix::fs::{futimens, Timespec, Timestamps};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        },
    };
    futimens(fd, &times)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn set_mtime(path: &Path, sec: i64, nsec: i64) -> std::io::Result<()> {
        use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
        let keep = Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        };
        let times = Timestamps {
            last_access: keep,
            last_modification: Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            },
        };
        utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    #[test]
    fn untouched_stubs_are_removed_and_used_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        let record = root.path().join("created");
        let mut tracker = Tracker::new(root.path(), Some(&record));
        tracker.create_file(&root.path().join("etc/hosts")).unwrap();
        tracker
            .create_dir_all(&root.path().join("mnt/cache/deep"))
            .unwrap();
        tracker.create_dir_all(&root.path().join("work")).unwrap();
        // Existing paths are not recorded.
        tracker.create_dir_all(&root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("work/out"), "x").unwrap();
        let created = read_created(&record);
        let paths: Vec<&str> = created.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["etc/hosts", "mnt", "mnt/cache", "mnt/cache/deep", "work"]
        );
        std::fs::remove_file(&record).unwrap();
        remove_stubs(root.path(), &created);
        assert!(!root.path().join("etc/hosts").exists());
        assert!(root.path().join("etc").is_dir());
        assert!(!root.path().join("mnt").exists());
        assert!(root.path().join("work/out").exists());
    }

    #[test]
    fn removal_never_follows_a_symlink_the_program_planted() {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("cache")).unwrap();
        std::fs::write(host.path().join("hosts"), "").unwrap();
        set_mtime(host.path(), 1_000_000, 0).unwrap();
        let record = root.path().join("created");
        let mut tracker = Tracker::new(root.path(), Some(&record));
        tracker
            .create_dir_all(&root.path().join("mnt/cache"))
            .unwrap();
        tracker.create_file(&root.path().join("etc/hosts")).unwrap();
        let created = read_created(&record);
        // The step swaps the stub's parents for links to a host directory.
        std::fs::remove_dir_all(root.path().join("mnt")).unwrap();
        std::fs::remove_dir_all(root.path().join("etc")).unwrap();
        symlink(host.path(), root.path().join("mnt")).unwrap();
        symlink(host.path(), root.path().join("etc")).unwrap();
        remove_stubs(root.path(), &created);
        assert!(
            host.path().join("cache").is_dir(),
            "a host directory was removed"
        );
        assert!(
            host.path().join("hosts").exists(),
            "a host file was removed"
        );
        assert_eq!(
            mtime_of(host.path()),
            Some((1_000_000, 0)),
            "a host mtime changed"
        );
        assert!(root.path().join("mnt").is_symlink());
    }

    #[test]
    fn parent_mtime_is_restored_only_when_the_program_left_the_parent_alone() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        set_mtime(&etc, 1_000_000, 0).unwrap();
        let record = root.path().join("created");
        let mut tracker = Tracker::new(root.path(), Some(&record));
        tracker.create_file(&etc.join("hosts")).unwrap();
        tracker.create_file(&etc.join("resolv.conf")).unwrap();
        let created = read_created(&record);
        remove_stubs(root.path(), &created);
        assert_eq!(mtime_of(&etc), Some((1_000_000, 0)), "stubs leave no trace");

        tracker.create_file(&etc.join("hosts")).unwrap();
        tracker.create_file(&etc.join("resolv.conf")).unwrap();
        // The program changes /etc itself, a second later than anything the stubs did.
        std::fs::write(etc.join("timezone"), "UTC\n").unwrap();
        set_mtime(&etc, 2_000_000, 0).unwrap();
        let created = read_created(&record);
        remove_stubs(root.path(), &created[2..]);
        assert_eq!(
            mtime_of(&etc),
            Some((2_000_000, 0)),
            "the program's change stays"
        );
        assert!(!etc.join("hosts").exists());
    }
}
