//! Volumes: named and anonymous ones in `ROOT/volumes/NAME/{_data,volume.json}`, bind mounts
//! and tmpfs, from `-v`, `--mount` and `--tmpfs`. A volume that is still empty when first
//! mounted is filled with the image's content at the mount point, as docker does.

use std::collections::BTreeMap;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::store::{Container, ContainerStore};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub created: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image `VOLUME`); removed by `rm -v` and `--rm`.
    pub anonymous: bool,
    /// Filled (or found non-empty) at first use: later uses never copy into it.
    #[serde(default)]
    pub initialized: bool,
}

/// One mount of a container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MountSpec {
    /// `volume`, `bind` or `tmpfs`.
    pub kind: String,
    /// Volume name or host path; empty for tmpfs.
    pub source: String,
    pub target: String,
    pub readonly: bool,
    /// tmpfs options (`size=64m`, `mode=1777`).
    #[serde(default)]
    pub options: Vec<String>,
}

impl MountSpec {
    /// `-v SRC:DST[:ro|rw]`, `-v DST` (anonymous volume).
    pub fn parse_volume_flag(flag: &str) -> Result<MountSpec> {
        let parts: Vec<&str> = flag.split(':').collect();
        let (source, target, opts) = match parts.as_slice() {
            [t] => ("", *t, ""),
            [s, t] => (*s, *t, ""),
            [s, t, o] => (*s, *t, *o),
            _ => bail!("-v {flag:?}: want [SOURCE:]TARGET[:ro]"),
        };
        let mut readonly = false;
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => readonly = true,
                "rw" | "z" | "Z" => {}
                _ => bail!("-v {flag:?}: unknown option {o:?} (ro, rw)"),
            }
        }
        check_target(target, flag)?;
        let kind = if source.starts_with('/') {
            "bind"
        } else {
            "volume"
        };
        Ok(MountSpec {
            kind: kind.into(),
            source: source.into(),
            target: target.into(),
            readonly,
            options: vec![],
        })
    }

    /// `--mount type=bind|volume|tmpfs,source=..,target=..,readonly,tmpfs-size=..`.
    pub fn parse_mount_flag(flag: &str) -> Result<MountSpec> {
        let mut spec = MountSpec {
            kind: "volume".into(),
            source: String::new(),
            target: String::new(),
            readonly: false,
            options: vec![],
        };
        for field in flag.split(',') {
            let (key, value) = field.split_once('=').unwrap_or((field, ""));
            match key {
                "type" => spec.kind = value.into(),
                "source" | "src" => spec.source = value.into(),
                "target" | "dst" | "destination" => spec.target = value.into(),
                "readonly" | "ro" => {
                    spec.readonly = value.is_empty() || value == "true" || value == "1"
                }
                "tmpfs-size" => spec.options.push(format!("size={value}")),
                "tmpfs-mode" => spec.options.push(format!("mode={value}")),
                "volume-nocopy" | "bind-propagation" | "consistency" => {}
                _ => bail!("--mount {flag:?}: unknown field {key:?}"),
            }
        }
        if !matches!(spec.kind.as_str(), "bind" | "volume" | "tmpfs") {
            bail!("--mount {flag:?}: type must be bind, volume or tmpfs");
        }
        check_target(&spec.target, flag)?;
        if spec.kind == "bind" && !Path::new(&spec.source).exists() {
            bail!(
                "--mount {flag:?}: bind source path does not exist: {}",
                spec.source
            );
        }
        Ok(spec)
    }

    /// `--tmpfs /path[:size=64m,mode=1777]`.
    pub fn parse_tmpfs_flag(flag: &str) -> Result<MountSpec> {
        let (target, opts) = flag.split_once(':').unwrap_or((flag, ""));
        check_target(target, flag)?;
        let options = opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(String::from)
            .collect();
        Ok(MountSpec {
            kind: "tmpfs".into(),
            source: String::new(),
            target: target.into(),
            readonly: false,
            options,
        })
    }
}

fn check_target(target: &str, flag: &str) -> Result<()> {
    if !target.starts_with('/') || target == "/" {
        bail!("{flag:?}: the mount target must be an absolute path other than /");
    }
    Ok(())
}

pub struct VolumeStore {
    dir: PathBuf,
}

impl VolumeStore {
    pub fn open(root: &Path) -> Result<VolumeStore> {
        let dir = root.join("volumes");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(VolumeStore { dir })
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// Creates a volume (a random name when None); an existing named volume is returned as is.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeRecord> {
        let (name, anonymous) = match name {
            Some(n) => {
                crate::names::validate_name(n).map_err(|_| {
                    anyhow!("invalid volume name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
                })?;
                (n.to_string(), false)
            }
            None => (crate::names::new_id(), true),
        };
        let _lock = crate::store::FileLock::exclusive(&self.dir.join(".lock"))?;
        if let Ok(existing) = self.get(&name) {
            return Ok(existing);
        }
        std::fs::create_dir_all(self.data_dir(&name))?;
        let record = VolumeRecord {
            name,
            created: crate::time::now_rfc3339(),
            labels,
            anonymous,
            initialized: false,
        };
        self.save(&record)?;
        Ok(record)
    }

    fn save(&self, record: &VolumeRecord) -> Result<()> {
        crate::store::write_atomic(
            &self.dir.join(&record.name).join("volume.json"),
            &serde_json::to_vec_pretty(record)?,
        )
    }

    pub fn get(&self, name: &str) -> Result<VolumeRecord> {
        if name.contains('/') || name.starts_with('.') {
            bail!("no such volume: {name}");
        }
        let path = self.dir.join(name).join("volume.json");
        let data = std::fs::read(&path).map_err(|_| anyhow!("no such volume: {name}"))?;
        Ok(serde_json::from_slice(&data)?)
    }

    pub fn list(&self) -> Result<Vec<VolumeRecord>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            if let Ok(v) = self.get(&entry.file_name().to_string_lossy()) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Containers (any state) whose mounts use the volume.
    pub fn users(&self, containers: &ContainerStore, name: &str) -> Result<Vec<String>> {
        Ok(containers
            .list()?
            .into_iter()
            .filter(|c| {
                c.config
                    .mounts
                    .iter()
                    .any(|m| m.kind == "volume" && m.source == name)
            })
            .map(|c| c.config.id)
            .collect())
    }

    /// Removes an unused volume.
    pub fn remove(&self, containers: &ContainerStore, name: &str) -> Result<()> {
        self.get(name)?;
        let users = self.users(containers, name)?;
        if !users.is_empty() {
            bail!("remove {name}: volume is in use - [{}]", users.join(", "));
        }
        std::fs::remove_dir_all(self.dir.join(name))
            .with_context(|| format!("removing volume {name}"))
    }

    /// Copies the image's content at `target` into a volume still uninitialized and empty.
    pub(crate) fn initialize(
        &self,
        name: &str,
        rootfs: &[executor::Mount],
        target: &str,
    ) -> Result<()> {
        let mut record = self.get(name)?;
        if record.initialized {
            return Ok(());
        }
        let data = self.data_dir(name);
        if std::fs::read_dir(&data)?.next().is_none() {
            copy_from_image(rootfs, target, &data)?;
        }
        record.initialized = true;
        self.save(&record)
    }
}

/// Resolves a container's volume mounts: named volumes are created when missing, anonymous
/// ones get a fresh volume. Returns the mounts with volume names filled in.
pub fn prepare_mounts(root: &Path, mounts: &[MountSpec]) -> Result<Vec<MountSpec>> {
    let volumes = VolumeStore::open(root)?;
    mounts
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m.kind == "volume" {
                let record = volumes.create(
                    (!m.source.is_empty()).then_some(m.source.as_str()),
                    BTreeMap::new(),
                )?;
                m.source = record.name;
            }
            if m.kind == "bind" && !Path::new(&m.source).exists() {
                // -v creates a missing host directory, as docker does.
                std::fs::create_dir_all(&m.source)
                    .with_context(|| format!("creating bind source {}", m.source))?;
            }
            Ok(m)
        })
        .collect()
}

/// The executor mounts for a container, initializing fresh volumes first.
pub(crate) fn exec_mounts(root: &Path, container: &Container) -> Result<Vec<executor::Mount>> {
    let volumes = VolumeStore::open(root)?;
    let mut out = Vec::new();
    for m in &container.config.mounts {
        let mut options = vec!["rbind".to_string()];
        if m.readonly {
            options.push("ro".into());
        }
        let mount = match m.kind.as_str() {
            "volume" => {
                volumes.initialize(&m.source, &container.config.spec.rootfs, &m.target)?;
                executor::Mount {
                    fstype: "bind".into(),
                    source: volumes.data_dir(&m.source).to_string_lossy().into(),
                    target: m.target.clone(),
                    options,
                }
            }
            "bind" => executor::Mount {
                fstype: "bind".into(),
                source: m.source.clone(),
                target: m.target.clone(),
                options,
            },
            _ => {
                let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
                options.extend(m.options.iter().cloned());
                executor::Mount {
                    fstype: "tmpfs".into(),
                    source: "tmpfs".into(),
                    target: m.target.clone(),
                    options,
                }
            }
        };
        out.push(mount);
    }
    Ok(out)
}

/// Removes the anonymous volumes of a removed container (`rm -v`, `--rm`).
pub(crate) fn remove_anonymous(root: &Path, container: &Container) {
    let Ok(volumes) = VolumeStore::open(root) else {
        return;
    };
    for m in &container.config.mounts {
        if m.kind == "volume" && volumes.get(&m.source).is_ok_and(|v| v.anonymous) {
            let _ = std::fs::remove_dir_all(volumes.dir.join(&m.source));
        }
    }
}

/// Mounts the rootfs in a private mount namespace of a forked child and copies `target`
/// from it into `dest`. Called by the single-threaded monitor before it starts threads.
fn copy_from_image(rootfs: &[executor::Mount], target: &str, dest: &Path) -> Result<()> {
    let scratch = tempfile_dir(dest)?;
    // SAFETY: the monitor is single-threaded here; the child only mounts, copies and exits.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let code = match copy_in_child(rootfs, target, dest, &scratch) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("filling volume: {e:#}");
                    1
                }
            };
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None)?;
            let _ = std::fs::remove_dir(&scratch);
            if !matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)) {
                bail!("copying the image's {target} into the volume failed");
            }
            Ok(())
        }
    }
}

fn tempfile_dir(dest: &Path) -> Result<PathBuf> {
    let dir = dest.with_file_name(format!("fill-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn copy_in_child(
    rootfs: &[executor::Mount],
    target: &str,
    dest: &Path,
    scratch: &Path,
) -> Result<()> {
    use nix::mount::MsFlags;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    let mounts: Vec<snapshotter::Mount> = rootfs
        .iter()
        .map(|m| snapshotter::Mount {
            fstype: m.fstype.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect();
    snapshotter::mount_all(&mounts, scratch)?;
    let source = executor::resolve_in_root(scratch, target)?;
    if source.is_dir() {
        copy_tree(&source, dest)?;
    }
    Ok(())
}

/// Copies a file, symlink or directory tree to `to` (which must not exist yet).
pub(crate) fn copy_any(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(from).with_context(|| format!("{}", from.display()))?;
    if meta.is_dir() {
        std::fs::create_dir(to).with_context(|| format!("creating {}", to.display()))?;
        return copy_tree(from, to);
    }
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else {
        std::fs::copy(from, to).with_context(|| format!("copying to {}", to.display()))?;
    }
    lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    Ok(())
}

/// Copies a directory's content keeping modes, owners and symlinks.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&src)?;
        if meta.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
            continue;
        }
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if meta.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            continue; // devices, sockets, fifos: not copied
        }
        lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_mount_and_tmpfs_flags_parse() {
        let m = MountSpec::parse_volume_flag("data:/var/lib/data:ro").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.readonly),
            ("volume", "data", true)
        );
        assert_eq!(
            MountSpec::parse_volume_flag("/host:/c").unwrap().kind,
            "bind"
        );
        assert_eq!(MountSpec::parse_volume_flag("/anon").unwrap().source, "");
        assert!(MountSpec::parse_volume_flag("x:relative").is_err());
        assert!(MountSpec::parse_volume_flag("x:/a:rx").is_err());
        let m = MountSpec::parse_mount_flag("type=tmpfs,target=/t,tmpfs-size=1m").unwrap();
        assert_eq!(m.options, vec!["size=1m"]);
        assert!(MountSpec::parse_mount_flag("type=bind,source=/nonexistent-x,target=/t").is_err());
        assert!(MountSpec::parse_mount_flag("type=nfs,target=/t").is_err());
        assert_eq!(
            MountSpec::parse_tmpfs_flag("/run:size=1m").unwrap().options,
            vec!["size=1m"]
        );
    }
}
