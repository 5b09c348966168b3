//! Per-run cgroups: created by the caller under a `builder` parent in each hierarchy the run
//! needs, joined by the container's init before it unshares its cgroup namespace, removed when
//! the run ends (and swept when a killed process left them).
//!
//! Today a run gets the cgroup v1 `devices` allow-list (Docker's default) and, when asked, a
//! `pids` limit. Memory and CPU limits are fields of [`CgroupSpec`] for a later runtime to fill.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Parent directory of every run's cgroup, in each hierarchy.
const PARENT: &str = "builder";

/// Resource limits of one run; `None` means unlimited.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CgroupSpec {
    /// Maximum number of tasks (`--pids-limit`); zero or negative means unlimited, as in docker.
    #[serde(default)]
    pub pids_limit: Option<i64>,
    /// Memory limit in bytes (not applied yet).
    #[serde(default)]
    pub memory: Option<u64>,
    /// CPU quota in CPUs (not applied yet).
    #[serde(default)]
    pub cpus: Option<f64>,
}

/// Docker's default device allow-list (moby `oci/devices_linux.go` and runc's defaults):
/// mknod of anything, read/write of the usual character devices only.
const DEVICE_ALLOW: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:1 rwm",   // console
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // pts/*
];

/// Chooses where the device allow-list is kept: `v1` (the `devices` controller) or `v2` (an
/// eBPF program on the run's cgroup v2). Unset: v1 when its controller is mounted, else v2.
pub const DEVICE_FILTER_ENV: &str = "BUILDER_CGROUP_DEVICES";

/// Where the run's device allow-list is kept.
#[derive(Debug, PartialEq)]
enum DeviceFilter {
    /// The v1 `devices` hierarchy at this path.
    V1(PathBuf),
    /// A BPF program on a cgroup in the v2 hierarchy at this path.
    V2(PathBuf),
    /// Neither exists (no cgroupfs): only `nodev` protects.
    None,
}

fn device_filter() -> Result<DeviceFilter> {
    let v1 = Path::new(CGROUP_ROOT).join("devices");
    let v1 = v1.join("devices.allow").exists().then_some(v1);
    let v2 = v2_root();
    Ok(match std::env::var(DEVICE_FILTER_ENV).as_deref() {
        Ok("v1") => DeviceFilter::V1(v1.with_context(|| {
            format!("{DEVICE_FILTER_ENV}=v1: no cgroup v1 devices controller is mounted")
        })?),
        Ok("v2") => DeviceFilter::V2(v2.with_context(|| {
            format!("{DEVICE_FILTER_ENV}=v2: no cgroup v2 hierarchy is mounted")
        })?),
        Ok("") | Err(_) => match (v1, v2) {
            (Some(v1), _) => DeviceFilter::V1(v1),
            (None, Some(v2)) => DeviceFilter::V2(v2),
            (None, None) => DeviceFilter::None,
        },
        Ok(other) => bail!("{DEVICE_FILTER_ENV}={other}: expected v1 or v2"),
    })
}

/// `/sys/fs/cgroup` when it is a cgroup v2 mount (a pure v2 host).
fn pure_v2_root() -> Option<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    root.join("cgroup.controllers")
        .exists()
        .then(|| root.to_path_buf())
}

/// The cgroup v2 hierarchy: `/sys/fs/cgroup` itself, or the hybrid layout's `unified`.
fn v2_root() -> Option<PathBuf> {
    let unified = Path::new(CGROUP_ROOT).join("unified");
    pure_v2_root().or_else(|| {
        unified
            .join("cgroup.controllers")
            .exists()
            .then_some(unified)
    })
}

/// Attaches Docker's default device allow-list, as an eBPF program, to the cgroup v2
/// directory `cgroup` (for callers that make cgroups of their own).
pub fn attach_device_filter(cgroup: &Path) -> Result<()> {
    crate::devices_bpf::attach(cgroup, &device_rules())
}

/// How many eBPF device filters are attached to the cgroup v2 directory `cgroup`.
pub fn device_filters_attached(cgroup: &Path) -> Result<u32> {
    crate::devices_bpf::attached_count(cgroup)
}

fn device_rules() -> Vec<crate::devices_bpf::DeviceRule> {
    DEVICE_ALLOW
        .iter()
        .map(|line| crate::devices_bpf::parse_rule(line).expect("the built-in list parses"))
        .collect()
}

/// The cgroup directories of one run; removed on drop.
#[derive(Debug, Default)]
pub(crate) struct RunCgroups {
    pub dirs: Vec<PathBuf>,
}

impl RunCgroups {
    /// Creates the run's cgroups: a device allow-list unless `privileged`, and a pids
    /// cgroup when `spec` limits pids. Nothing is created when neither applies.
    pub(crate) fn create(
        spec: &CgroupSpec,
        privileged: bool,
        given: &[PathBuf],
    ) -> Result<RunCgroups> {
        match Self::create_dirs(spec, privileged, given) {
            // Without a delegated cgroup a rootless user cannot write cgroupfs: run without
            // limits and say so once, as podman does.
            Err(e) if crate::userns::is_rootless() => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!(
                        "warning: rootless mode: cgroups are not writable ({e:#}); the device \
                         allow-list and resource limits are not applied"
                    )
                });
                Ok(RunCgroups::default())
            }
            result => result,
        }
    }

    fn create_dirs(spec: &CgroupSpec, privileged: bool, given: &[PathBuf]) -> Result<RunCgroups> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut run = RunCgroups::default();
        let pids_limit = spec.pids_limit.filter(|l| *l > 0);
        let v1_pids = Path::new(CGROUP_ROOT).join("pids");
        let pids_on_v2 = pids_limit.is_some() && !v1_pids.join("cgroup.procs").exists();
        let filter = if privileged {
            DeviceFilter::None
        } else {
            device_filter()?
        };
        if let DeviceFilter::V1(devices) = &filter {
            let dir = run.make_dir(devices, &name)?;
            write(&dir.join("devices.deny"), "a")?;
            for rule in DEVICE_ALLOW {
                write(&dir.join("devices.allow"), rule)?;
            }
        }
        // On v2 a task is in one cgroup: the filter and the pids limit share the run's.
        let v2_root = match &filter {
            DeviceFilter::V2(root) => Some(root.clone()),
            _ if pids_on_v2 => Some(pure_v2_root().ok_or_else(|| {
                anyhow::anyhow!("--pids-limit: this host has no pids cgroup controller")
            })?),
            _ => None,
        };
        let v2_dir = v2_root
            .map(|root| run.make_v2_dir(&root, given, &name, pids_on_v2))
            .transpose()?;
        if let (DeviceFilter::V2(_), Some(dir)) = (&filter, &v2_dir) {
            crate::devices_bpf::attach(dir, &device_rules())?;
        }
        if let Some(limit) = pids_limit {
            let dir = match &v2_dir {
                Some(dir) if pids_on_v2 => dir.clone(),
                _ => run.make_dir(&v1_pids, &name)?,
            };
            write(&dir.join("pids.max"), &limit.to_string())?;
        }
        Ok(run)
    }

    /// The run's cgroup in the v2 hierarchy at `root`: inside the caller's own v2 cgroup
    /// when it gave one (the container joins it first, then this one, so both apply),
    /// otherwise under `root/builder`.
    fn make_v2_dir(
        &mut self,
        root: &Path,
        given: &[PathBuf],
        name: &str,
        pids: bool,
    ) -> Result<PathBuf> {
        let caller_cgroup = given
            .iter()
            .find(|g| g.starts_with(root) && g.join("cgroup.controllers").exists());
        match caller_cgroup {
            Some(parent) if pids => bail!(
                "--pids-limit with the container's own cgroup {}: set pids.max there",
                parent.display()
            ),
            Some(parent) => {
                let dir = parent.join(name);
                std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
                self.dirs.push(dir.clone());
                Ok(dir)
            }
            None => {
                if pids {
                    enable_v2_controller(root, "pids")?;
                }
                self.make_dir(root, name)
            }
        }
    }

    fn make_dir(&mut self, hierarchy: &Path, name: &str) -> Result<PathBuf> {
        let parent = hierarchy.join(PARENT);
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", parent.display())),
        }
        let dir = parent.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.dirs.push(dir.clone());
        Ok(dir)
    }
}

impl Drop for RunCgroups {
    fn drop(&mut self) {
        for dir in &self.dirs {
            remove_when_empty(dir, Duration::from_secs(2));
        }
    }
}

/// Removes a cgroup directory, waiting for its last tasks (a killed container's) to exit.
fn remove_when_empty(dir: &Path, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return,
        }
    }
}

fn enable_v2_controller(root: &Path, controller: &str) -> Result<()> {
    let parent = root.join(PARENT);
    let _ = std::fs::create_dir(&parent);
    for dir in [root, parent.as_path()] {
        write(
            &dir.join("cgroup.subtree_control"),
            &format!("+{controller}"),
        )?;
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Moves the calling process into the caller's cgroups (`given`), then the run's own (which on
/// v2 lie inside the given one): on v2 a task is in one cgroup, and it must end in the run's,
/// where the device filter is.
pub(crate) fn join_all(run: &[PathBuf], given: &[PathBuf]) -> Result<()> {
    join(given).context("joining the given cgroups")?;
    join(run).context("joining the run's cgroups")
}

/// Moves the calling process into each of `dirs` (done by the container's init, so that the
/// cgroup namespace it unshares next is rooted there).
pub(crate) fn join(dirs: &[PathBuf]) -> Result<()> {
    for dir in dirs {
        write(&dir.join("cgroup.procs"), "0")?;
    }
    Ok(())
}

/// Removes run cgroups left by processes that are gone (killed before they could clean up).
pub fn sweep_stale_cgroups() {
    let Ok(hierarchies) = std::fs::read_dir(CGROUP_ROOT) else {
        return;
    };
    let mut parents: Vec<PathBuf> = hierarchies
        .flatten()
        .map(|h| h.path().join(PARENT))
        .collect();
    parents.push(Path::new(CGROUP_ROOT).join(PARENT));
    for parent in parents {
        sweep_runs_in(&parent, true);
    }
}

/// Removes the stale run cgroups (named `PID-N`) in `parent`; with `nested`, also those inside
/// a caller's cgroup there (a container's, on v2).
fn sweep_runs_in(parent: &Path, nested: bool) {
    let Ok(runs) = std::fs::read_dir(parent) else {
        return;
    };
    for run in runs.flatten() {
        let name = run.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            if nested && run.path().join("cgroup.controllers").exists() {
                sweep_runs_in(&run.path(), false);
            }
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            // A cgroup with tasks left refuses rmdir; it is tried again next time.
            let _ = std::fs::remove_dir(run.path());
        }
    }
}

/// Mounts the host's cgroup hierarchies read-only under `target` (the container's
/// `/sys/fs/cgroup`, on a tmpfs), as docker does; inside a cgroup namespace each shows the
/// run's own cgroup as its root.
pub(crate) fn mount_cgroupfs(target: &Path, writable: bool) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let table = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let hierarchies = cgroup_mounts(&table);
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let ro = if writable {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    if hierarchies.iter().any(|(name, _, _)| name.is_empty()) {
        // A pure cgroup v2 host: the unified hierarchy is /sys/fs/cgroup itself.
        return mount(
            Some("cgroup2"),
            target,
            Some("cgroup2"),
            base | ro,
            None::<&str>,
        )
        .context("mounting cgroup2 on /sys/fs/cgroup");
    }
    mount(Some("tmpfs"), target, Some("tmpfs"), base, Some("mode=755"))
        .context("mounting a tmpfs on /sys/fs/cgroup")?;
    for (name, fstype, data) in &hierarchies {
        let dir = target.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let data = (!data.is_empty()).then_some(data.as_str());
        let mounted = mount(Some("cgroup"), &dir, Some(fstype.as_str()), base | ro, data);
        // A user namespace may not mount cgroup v1 hierarchies; rootless containers go without.
        if !crate::userns::is_rootless() {
            mounted.with_context(|| format!("mounting cgroup {name}"))?;
        }
    }
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | base | MsFlags::MS_RDONLY,
        Some("mode=755"),
    )
    .context("making /sys/fs/cgroup read-only")
}

/// (directory name below /sys/fs/cgroup, fstype, mount data) of each hierarchy mounted there;
/// the pure-v2 case is the root itself (name "").
fn cgroup_mounts(mountinfo: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or("");
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("");
        let super_options = right.nth(1).unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let Some(name) = mount_point.strip_prefix(CGROUP_ROOT) else {
            continue;
        };
        let name = name.trim_start_matches('/');
        let data: Vec<&str> = if fstype == "cgroup" {
            super_options
                .split(',')
                .filter(|o| *o != "rw" && *o != "ro")
                .collect()
        } else {
            Vec::new()
        };
        if !name.contains('/') && !out.iter().any(|(n, _, _)| n == name) {
            out.push((name.to_string(), fstype.to_string(), data.join(",")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchies_come_from_mountinfo() {
        let table = "\
35 25 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 35 0:32 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
38 35 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
39 25 0:34 / /mnt/other rw - cgroup cgroup rw,pids
";
        assert_eq!(
            cgroup_mounts(table),
            vec![
                ("devices".into(), "cgroup".into(), "devices".into()),
                (
                    "systemd".into(),
                    "cgroup".into(),
                    "xattr,name=systemd".into()
                ),
                ("unified".into(), "cgroup2".into(), "".into()),
            ]
        );
    }
}
