//! Turning a [`Mount`] into `mount(2)` calls.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

use crate::Mount;

/// Mount data longer than this does not fit the kernel's one-page limit.
const MAX_MOUNT_DATA: usize = 4000;

/// Mount options split into `mount(2)` flags and filesystem-specific data.
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
}

/// Splits fstab-style options into flags, propagation flags and data, like containerd does.
pub(crate) fn parse_options(options: &[String]) -> ParsedOptions {
    let mut parsed = ParsedOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for option in options {
        let (clear, flag) = match option.as_str() {
            "defaults" => (false, MsFlags::empty()),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "suid" => (true, MsFlags::MS_NOSUID),
            "nodev" => (false, MsFlags::MS_NODEV),
            "dev" => (true, MsFlags::MS_NODEV),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "atime" => (true, MsFlags::MS_NOATIME),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let recursive = option.starts_with('r') && option != "private";
                let kind = match option.trim_start_matches('r') {
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    "unbindable" => MsFlags::MS_UNBINDABLE,
                    _ => MsFlags::MS_PRIVATE,
                };
                parsed.propagation = if recursive {
                    kind | MsFlags::MS_REC
                } else {
                    kind
                };
                continue;
            }
            _ => {
                parsed.data.push(option.clone());
                continue;
            }
        };
        if clear {
            parsed.flags.remove(flag);
        } else {
            parsed.flags.insert(flag);
        }
    }
    parsed
}

/// Mounts `m` at `target` (a host path that already exists).
pub(crate) fn mount_at(m: &Mount, target: &Path) -> Result<()> {
    let options = parse_options(&m.options);
    let is_bind = m.fstype == "bind" || options.flags.contains(MsFlags::MS_BIND);
    if is_bind {
        let bind_flags = MsFlags::MS_BIND | (options.flags & MsFlags::MS_REC);
        mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            bind_flags,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {} on {}", m.source, target.display()))?;
        // Flags of a bind mount only take effect through a remount.
        let extra = options.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            remount_bind(target, extra)?;
        }
    } else {
        let source = if m.source.is_empty() {
            m.fstype.as_str()
        } else {
            m.source.as_str()
        };
        let mut data = options.data.join(",");
        let mut relative_to = None;
        if m.fstype == "overlay" && data.len() > MAX_MOUNT_DATA {
            if let Some((dir, short)) = shorten_overlay_data(&options.data) {
                relative_to = Some(dir);
                data = short;
            }
        }
        if let Some(dir) = &relative_to {
            // overlayfs resolves relative layer paths against the caller's cwd.
            nix::unistd::chdir(dir.as_path())
                .with_context(|| format!("changing directory to {}", dir.display()))?;
        }
        let result = mount(
            Some(source),
            target,
            Some(m.fstype.as_str()),
            options.flags,
            (!data.is_empty()).then_some(data.as_str()),
        );
        if relative_to.is_some() {
            nix::unistd::chdir("/").context("changing directory to /")?;
        }
        result.with_context(|| {
            format!(
                "mounting {} ({}) on {} with options {:?}",
                source,
                m.fstype,
                target.display(),
                m.options
            )
        })?;
    }
    if !options.propagation.is_empty() {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            options.propagation,
            None::<&str>,
        )
        .with_context(|| format!("setting propagation of {}", target.display()))?;
    }
    Ok(())
}

/// Applies `flags` to the bind mount at `target`, keeping the lock-sensitive flags it already has
/// (read-only, nosuid, nodev, noexec, atime flags), which the kernel would otherwise clear or
/// refuse.
pub(crate) fn remount_bind(target: &Path, flags: MsFlags) -> Result<()> {
    let current = nix::sys::statvfs::statvfs(target)
        .with_context(|| format!("statvfs {}", target.display()))?
        .flags();
    use nix::sys::statvfs::FsFlags;
    let mut keep = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if current.contains(fs_flag) {
            keep |= ms_flag;
        }
    }
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | keep,
        None::<&str>,
    )
    .with_context(|| format!("remounting {} with {:?}", target.display(), flags))
}

/// Rewrites overlay `lowerdir`/`upperdir`/`workdir` paths relative to their longest common
/// parent directory, so long layer chains fit in one page (the trick containerd uses).
fn shorten_overlay_data(data: &[String]) -> Option<(PathBuf, String)> {
    let mut paths: Vec<&str> = Vec::new();
    for option in data {
        if let Some(lower) = option.strip_prefix("lowerdir=") {
            paths.extend(lower.split(':'));
        } else if let Some(dir) = option
            .strip_prefix("upperdir=")
            .or_else(|| option.strip_prefix("workdir="))
        {
            paths.push(dir);
        }
    }
    let first = Path::new(paths.first()?);
    let mut common: PathBuf = first.parent()?.to_path_buf();
    while !paths.iter().all(|p| Path::new(p).starts_with(&common)) {
        common = common.parent()?.to_path_buf();
    }
    if common.as_os_str().len() <= 1 {
        return None;
    }
    let relative = |p: &str| -> String {
        Path::new(p)
            .strip_prefix(&common)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_else(|_| p.to_string())
    };
    let rewritten: Vec<String> = data
        .iter()
        .map(|option| {
            if let Some(lower) = option.strip_prefix("lowerdir=") {
                let dirs: Vec<String> = lower.split(':').map(relative).collect();
                format!("lowerdir={}", dirs.join(":"))
            } else if let Some(dir) = option.strip_prefix("upperdir=") {
                format!("upperdir={}", relative(dir))
            } else if let Some(dir) = option.strip_prefix("workdir=") {
                format!("workdir={}", relative(dir))
            } else {
                option.clone()
            }
        })
        .collect();
    Some((common, rewritten.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let parsed = parse_options(&strings(&[
            "rbind", "ro", "nosuid", "rprivate", "size=64k", "mode=755",
        ]));
        assert_eq!(
            parsed.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        );
        assert_eq!(parsed.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(parsed.data, strings(&["size=64k", "mode=755"]));

        let parsed = parse_options(&strings(&["ro", "rw", "private"]));
        assert_eq!(parsed.flags, MsFlags::empty());
        assert_eq!(parsed.propagation, MsFlags::MS_PRIVATE);
    }

    #[test]
    fn long_overlay_data_becomes_relative() {
        let data = strings(&[
            "lowerdir=/var/lib/b/snapshots/2/fs:/var/lib/b/snapshots/1/fs",
            "upperdir=/var/lib/b/snapshots/3/fs",
            "workdir=/var/lib/b/snapshots/3/work",
            "index=off",
        ]);
        let (dir, short) = shorten_overlay_data(&data).unwrap();
        assert_eq!(dir, PathBuf::from("/var/lib/b/snapshots"));
        assert_eq!(
            short,
            "lowerdir=2/fs:1/fs,upperdir=3/fs,workdir=3/work,index=off"
        );
    }
}
