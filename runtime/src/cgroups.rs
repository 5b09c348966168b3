//! Resource limits through cgroups: one directory per container, `builder/ID` under each v1
//! controller hierarchy (this machine) or under the v2 unified root. The executor's helper
//! joins them before it forks the container.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

const V1_ROOT: &str = "/sys/fs/cgroup";
const PERIOD_US: u64 = 100_000;

/// Docker's limit flags.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    /// Bytes.
    pub memory: Option<u64>,
    /// Memory plus swap in bytes; -1 unlimited.
    pub memory_swap: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub pids_limit: Option<i64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

fn unified() -> bool {
    Path::new(V1_ROOT).join("cgroup.controllers").exists()
}

/// Writes `value` to `dir/file`, naming both in the error.
fn set(dir: &Path, file: &str, value: &str) -> Result<()> {
    std::fs::write(dir.join(file), value)
        .with_context(|| format!("setting {} to {value}", dir.join(file).display()))
}

/// Creates the container's cgroups with its limits; returns the directories to join.
pub fn create(id: &str, limits: &Limits) -> Result<Vec<PathBuf>> {
    if limits.is_empty() {
        return Ok(Vec::new());
    }
    let result = if unified() {
        create_v2(id, limits)
    } else {
        create_v1(id, limits)
    };
    if result.is_err() {
        remove(id);
    }
    match result {
        // Without a delegated cgroup a rootless user cannot write cgroupfs (as podman warns).
        Err(e) if executor::userns::is_rootless() => {
            eprintln!("warning: rootless mode: resource limits are not applied ({e:#})");
            Ok(Vec::new())
        }
        result => result,
    }
}

fn create_v1(id: &str, l: &Limits) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let mut dir_for = |controller: &str| -> Result<PathBuf> {
        let hierarchy = Path::new(V1_ROOT).join(controller);
        if !hierarchy.exists() {
            bail!(
                "the {controller} cgroup controller is not mounted at {}",
                hierarchy.display()
            );
        }
        let parent = hierarchy.join("builder");
        std::fs::create_dir_all(&parent)?;
        if controller == "cpuset" {
            // A v1 cpuset group needs cpus and mems before tasks may join.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = std::fs::read_to_string(hierarchy.join(file))?;
                if std::fs::read_to_string(parent.join(file))?
                    .trim()
                    .is_empty()
                {
                    set(&parent, file, value.trim())?;
                }
            }
        }
        let dir = parent.join(id);
        std::fs::create_dir_all(&dir)?;
        dirs.push(dir.clone());
        Ok(dir)
    };
    if l.memory.is_some() || l.memory_swap.is_some() {
        let dir = dir_for("memory")?;
        if let Some(m) = l.memory {
            set(&dir, "memory.limit_in_bytes", &m.to_string())?;
        }
        if let Some(swap) = l.memory_swap {
            if dir.join("memory.memsw.limit_in_bytes").exists() {
                set(&dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
            }
        }
    }
    if l.cpus.is_some() || l.cpu_shares.is_some() {
        let dir = dir_for("cpu")?;
        if let Some(cpus) = l.cpus {
            set(&dir, "cpu.cfs_period_us", &PERIOD_US.to_string())?;
            set(
                &dir,
                "cpu.cfs_quota_us",
                &((cpus * PERIOD_US as f64) as u64).to_string(),
            )?;
        }
        if let Some(shares) = l.cpu_shares {
            set(&dir, "cpu.shares", &shares.to_string())?;
        }
    }
    if let Some(cpus) = &l.cpuset_cpus {
        let dir = dir_for("cpuset")?;
        set(
            &dir,
            "cpuset.mems",
            std::fs::read_to_string(dir.parent().unwrap().join("cpuset.mems"))?.trim(),
        )?;
        set(&dir, "cpuset.cpus", cpus)?;
    }
    if let Some(pids) = l.pids_limit {
        let dir = dir_for("pids")?;
        set(&dir, "pids.max", &pids_max(pids))?;
    }
    Ok(dirs)
}

fn create_v2(id: &str, l: &Limits) -> Result<Vec<PathBuf>> {
    let root = Path::new(V1_ROOT);
    let parent = root.join("builder");
    std::fs::create_dir_all(&parent)?;
    for dir in [root, parent.as_path()] {
        let _ = set(dir, "cgroup.subtree_control", "+memory +cpu +cpuset +pids");
    }
    let dir = parent.join(id);
    std::fs::create_dir_all(&dir)?;
    if let Some(m) = l.memory {
        set(&dir, "memory.max", &m.to_string())?;
    }
    if let (Some(swap), Some(m)) = (l.memory_swap, l.memory) {
        let swap_only = if swap < 0 {
            "max".to_string()
        } else {
            (swap as u64).saturating_sub(m).to_string()
        };
        set(&dir, "memory.swap.max", &swap_only)?;
    }
    if let Some(cpus) = l.cpus {
        set(
            &dir,
            "cpu.max",
            &format!("{} {PERIOD_US}", (cpus * PERIOD_US as f64) as u64),
        )?;
    }
    if let Some(shares) = l.cpu_shares {
        // Docker's conversion of v1 shares (2..262144) to v2 weight (1..10000).
        let weight = 1 + ((shares.clamp(2, 262144) - 2) * 9999) / 262142;
        set(&dir, "cpu.weight", &weight.to_string())?;
    }
    if let Some(cpus) = &l.cpuset_cpus {
        set(&dir, "cpuset.cpus", cpus)?;
    }
    if let Some(pids) = l.pids_limit {
        set(&dir, "pids.max", &pids_max(pids))?;
    }
    Ok(vec![dir])
}

/// Whether the kernel's OOM killer killed a process of the container.
pub fn oom_killed(id: &str) -> bool {
    let (dir, file) = if unified() {
        (Path::new(V1_ROOT).join("builder").join(id), "memory.events")
    } else {
        (
            Path::new(V1_ROOT).join("memory/builder").join(id),
            "memory.oom_control",
        )
    };
    std::fs::read_to_string(dir.join(file)).is_ok_and(|text| {
        text.lines()
            .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
    })
}

/// The container's existing cgroup directories (`exec` joins them too, as docker's does).
pub fn paths(id: &str) -> Vec<PathBuf> {
    let mut dirs = vec![Path::new(V1_ROOT).join("builder").join(id)];
    for controller in ["memory", "cpu", "cpuset", "pids"] {
        dirs.push(Path::new(V1_ROOT).join(controller).join("builder").join(id));
    }
    dirs.retain(|d| d.exists());
    dirs
}

/// Removes the container's cgroup directories (they are empty once it exited).
pub fn remove(id: &str) {
    for dir in paths(id) {
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Parses `--memory`-style sizes: `512m`, `1g`, `100k`, bytes.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let lower = s.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('b');
    let (digits, mult) = match trimmed.chars().last() {
        Some('k') => (&trimmed[..trimmed.len() - 1], 1u64 << 10),
        Some('m') => (&trimmed[..trimmed.len() - 1], 1 << 20),
        Some('g') => (&trimmed[..trimmed.len() - 1], 1 << 30),
        _ => (trimmed, 1),
    };
    match digits.parse::<f64>() {
        Ok(n) if n > 0.0 => Ok((n * mult as f64) as u64),
        _ => bail!("invalid size {s:?} (e.g. 512m, 1g)"),
    }
}

/// `pids.max` for `--pids-limit`: zero or negative means unlimited, as in docker.
fn pids_max(limit: i64) -> String {
    if limit <= 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}
