//! A private tmpfs for building a layer that is kept only as a blob: creating its files there
//! costs no disk inodes or writeback, which is most of what copying a large tree costs.

use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

/// Prefix of staging mount points under ROOT/tmp; `mounts::sweep_stale` unmounts those of
/// dead processes.
pub(crate) const STAGING_PREFIX: &str = "staging";

/// A tmpfs mounted under ROOT/tmp, unmounted and removed when dropped.
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    pub(crate) fn mount(root: &Path) -> Result<Self> {
        let dir = root.join("tmp").join(crate::worker::unique(STAGING_PREFIX));
        std::fs::create_dir_all(&dir)?;
        // A tree larger than this falls back to the disk (the copy fails with ENOSPC).
        let memory = available_memory().min(cgroup_headroom().unwrap_or(u64::MAX));
        let size = (memory / 4).clamp(64 << 20, 4 << 30);
        let options = std::ffi::CString::new(format!("size={size},mode=0755"))?;
        let flags = rustix::mount::MountFlags::empty();
        if let Err(e) = rustix::mount::mount("tmpfs", &dir, c"tmpfs", flags, options.as_c_str()) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e).with_context(|| format!("mounting a tmpfs on {}", dir.display()));
        }
        Ok(Self(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = snapshotter::unmount(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// MemAvailable from /proc/meminfo, in bytes (0 if unknown).
fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}

/// What this process's memory cgroup still allows (limit minus usage), if it has a limit: a
/// CI job in a container must not be killed for staging a big copy in memory.
fn cgroup_headroom() -> Option<u64> {
    let read =
        |path: String| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let (limit, usage) = if controllers.split(',').any(|c| c == "memory") {
            let dir = format!("/sys/fs/cgroup/memory{path}");
            (
                read(format!("{dir}/memory.limit_in_bytes")),
                read(format!("{dir}/memory.usage_in_bytes")),
            )
        } else if controllers.is_empty() {
            let dir = format!("/sys/fs/cgroup{path}");
            (
                read(format!("{dir}/memory.max")),
                read(format!("{dir}/memory.current")),
            )
        } else {
            continue;
        };
        // "max" does not parse, and v1 writes a huge number for no limit.
        if let (Some(limit), Some(usage)) = (limit, usage) {
            if limit < 1 << 60 {
                return Some(limit.saturating_sub(usage));
            }
        }
    }
    None
}
