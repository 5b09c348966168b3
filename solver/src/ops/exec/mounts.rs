//! Extra mounts of exec ops (`RUN --mount`): binds of other inputs, persistent cache
//! directories, tmpfs, secrets and SSH agent sockets; and the cache-key rules for them.

use super::ssh_proxy::{SshProxy, SSH_DIR_PREFIX};
use crate::context::ContextIndex;
use crate::fileop::{self, CopyOptions, SourceTree};
use crate::graph::{CacheSharing, ExecOp, MountKind, MountOwner};
use crate::solve::Ref;
use crate::worker::{unique, MountGuard, Worker};
use anyhow::{anyhow, bail, Context as _, Result};
use executor::CancelToken;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the value of a secret comes from. It is read only when a step uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// The contents of a file.
    File(PathBuf),
    /// The value of an environment variable of the builder process.
    Env(String),
    /// BuildKit's shorthand `--secret id=X`: the environment variable `X` if set,
    /// otherwise the file `X`.
    EnvOrFile(String),
    /// A value a client provides when asked (e.g. over a build server's session).
    Provided(ProvidedSecret),
}

/// Reads a provided secret's value; `None` when the client has none.
#[derive(Clone)]
pub struct ProvidedSecret(pub std::sync::Arc<dyn Fn() -> Result<Option<Vec<u8>>> + Send + Sync>);

impl std::fmt::Debug for ProvidedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProvidedSecret")
    }
}

impl PartialEq for ProvidedSecret {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ProvidedSecret {}

impl SecretSource {
    /// The secret's value; `None` when the variable (or the shorthand's file) does not
    /// exist. A file named with `src=` must exist: as in BuildKit, a wrong path is an error,
    /// not a silently absent secret.
    pub fn read(&self) -> Result<Option<Vec<u8>>> {
        let read_file = |path: &Path| match std::fs::read(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("reading secret file {}: {e}", path.display())),
        };
        match self {
            SecretSource::File(path) => match read_file(path)? {
                Some(v) => Ok(Some(v)),
                None => bail!("secret file {} does not exist", path.display()),
            },
            SecretSource::Env(var) => Ok(std::env::var_os(var).map(|v| v.into_encoded_bytes())),
            SecretSource::EnvOrFile(name) => match std::env::var_os(name) {
                Some(v) => Ok(Some(v.into_encoded_bytes())),
                None => read_file(Path::new(name)),
            },
            SecretSource::Provided(read) => (read.0)(),
        }
    }
}

/// What the client provides to exec ops beyond the graph: secrets, SSH agents, and what to
/// do when a step fails.
#[derive(Clone, Debug, Default)]
pub struct ExecConfig {
    /// Secret id → where its value comes from (`--secret`).
    pub secrets: HashMap<String, SecretSource>,
    /// SSH id → agent socket path (`--ssh`).
    pub ssh: HashMap<String, PathBuf>,
    /// Start an interactive `/bin/sh` in a failed step's container (`--on-error=shell`).
    pub on_error_shell: bool,
}

/// A temporary snapshot removed when dropped.
/// A temporary snapshot, removed when dropped.
pub(crate) struct TempSnapshot {
    pub(crate) snapshots: snapshotter::Snapshotter,
    pub(crate) key: String,
}

impl Drop for TempSnapshot {
    fn drop(&mut self) {
        let _ = self.snapshots.remove(&self.key);
    }
}

/// Something that must live while the step runs and be released after it.
#[allow(dead_code)] // The values are only held, for their `Drop`.
enum Resource {
    HostMount(MountGuard),
    Snapshot(TempSnapshot),
    /// A held `flock` on a cache mount's lock file.
    Lock(File),
    Dir(tempfile::TempDir),
    Ssh(SshProxy),
}

/// The executor mounts and environment of one exec op, and what backs them.
#[derive(Default)]
pub(crate) struct PreparedMounts {
    pub mounts: Vec<executor::Mount>,
    /// `KEY=VALUE` entries that override the op's environment (secrets, `SSH_AUTH_SOCK`).
    pub env: Vec<String>,
    resources: Vec<Resource>,
}

impl Drop for PreparedMounts {
    fn drop(&mut self) {
        // Newest first: host mounts go before the snapshots under them.
        while let Some(resource) = self.resources.pop() {
            drop(resource);
        }
    }
}

impl PreparedMounts {
    /// The op's environment with these overrides applied (an override replaces a variable).
    pub fn environment(&self, base: &[String]) -> Vec<String> {
        let key = |kv: &str| kv.split('=').next().unwrap_or("").to_string();
        let overridden: BTreeSet<String> = self.env.iter().map(|kv| key(kv)).collect();
        base.iter()
            .filter(|kv| !overridden.contains(&key(kv)))
            .chain(self.env.iter())
            .cloned()
            .collect()
    }
}

/// A mount source path as a slash-separated path relative to the input's root ("" = root).
fn relative(source: &str) -> String {
    source
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A mount target as an absolute path: relative ones are below the working directory, as in
/// BuildKit. An empty target (an env-only secret) stays empty.
fn absolute_target(cwd: &str, target: &str) -> String {
    if target.is_empty() || target.starts_with('/') {
        return target.to_string();
    }
    format!("{}/{target}", cwd.trim_end_matches('/'))
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn bind(source: &Path, target: &str, readonly: bool) -> executor::Mount {
    let mut options = vec!["rbind".to_string()];
    if readonly {
        options.push("ro".into());
    }
    executor::Mount {
        fstype: "bind".into(),
        source: source.to_string_lossy().into_owned(),
        target: target.to_string(),
        options,
    }
}

fn set_owner(path: &Path, owner: &MountOwner) -> Result<()> {
    std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
        .with_context(|| format!("changing the owner of {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(owner.mode & 0o7777))
        .with_context(|| format!("changing the mode of {}", path.display()))
}

/// Where secret files live while a step runs: memory-backed when possible, never in the store.
fn secret_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

const SECRET_DIR_PREFIX: &str = "builder-secret-";

/// Whether the process that created a `NAME-<pid>-...` entry is gone.
fn creator_is_dead(rest_after_prefix: &str) -> bool {
    rest_after_prefix
        .split('-')
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
}

fn is_mount_point_or_has_mounts(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let path = path.to_string_lossy();
    table.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|m| m.starts_with(path.as_ref()))
    })
}

/// Removes secret files and temporary mount directories left by killed builder processes.
pub(crate) fn sweep_stale(root: &Path) {
    if let Ok(entries) = std::fs::read_dir(secret_parent()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let rest = name.to_str().and_then(|n| {
                n.strip_prefix(SECRET_DIR_PREFIX)
                    .or_else(|| n.strip_prefix(SSH_DIR_PREFIX))
            });
            if let Some(rest) = rest {
                if creator_is_dead(rest) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    // Temporary mount points and bind/cache copies, and half-built cache directories.
    for dir in [root.join("tmp"), root.join("cache").join("mounts-staging")] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((prefix, rest)) = name.to_str().and_then(|n| n.split_once('-')) else {
                continue;
            };
            if prefix == crate::staging::STAGING_PREFIX && creator_is_dead(rest) {
                // A dead build's staging tmpfs only holds memory: drop it.
                let _ = snapshotter::unmount(&entry.path());
                let _ = std::fs::remove_dir(entry.path());
                continue;
            }
            if matches!(prefix, "mnt" | "bind" | "cache")
                && creator_is_dead(rest)
                && !is_mount_point_or_has_mounts(&entry.path())
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The exec op's view of the worker for its mounts: what they read (inputs, the build's
/// local sources, secrets, SSH agents) and where they live (the storage root).
pub(crate) struct ExecMounts<'a>(pub &'a Worker);

impl std::ops::Deref for ExecMounts<'_> {
    type Target = Worker;

    fn deref(&self) -> &Worker {
        self.0
    }
}

impl ExecMounts<'_> {
    /// The keys of an exec op's inputs for its cache key: a local input read by bind or
    /// cache-base mounts counts only with the checksum of the subtrees they read.
    pub(crate) fn exec_input_keys(
        &self,
        exec: &ExecOp,
        inputs: &[(Ref, String)],
    ) -> Result<Vec<String>> {
        let mut keys = Vec::with_capacity(inputs.len());
        for (n, (r, key)) in inputs.iter().enumerate() {
            let Ref::Local(local) = r else {
                keys.push(key.clone());
                continue;
            };
            let mut sources: Vec<String> = exec
                .mounts
                .iter()
                .filter_map(|m| match &m.kind {
                    MountKind::Bind { input, source, .. } if *input == n => Some(relative(source)),
                    MountKind::Cache {
                        base: Some((input, source)),
                        ..
                    } if *input == n => Some(relative(source)),
                    _ => None,
                })
                .collect();
            if sources.is_empty() {
                keys.push(key.clone());
                continue;
            }
            sources.sort();
            sources.dedup();
            let idx = self.context_index(local)?;
            keys.push(idx.checksum(&sources));
        }
        Ok(keys)
    }

    /// Sets up everything the op's extra mounts need. Secrets and SSH sockets that are
    /// optional and missing are left out.
    pub(crate) fn prepare_mounts(
        &self,
        exec: &ExecOp,
        inputs: &[(Ref, String)],
        cancel: &CancelToken,
    ) -> Result<PreparedMounts> {
        let mut out = PreparedMounts::default();
        let mut ssh_sock_set = false;
        // A cache used twice in one step is locked once: a second flock would wait for the first.
        let mut caches: HashMap<&str, PathBuf> = HashMap::new();
        for m in &exec.mounts {
            let target = absolute_target(&exec.cwd, &m.target);
            let target = target.as_str();
            match &m.kind {
                MountKind::Tmpfs { size } => out.mounts.push(executor::Mount {
                    fstype: "tmpfs".into(),
                    source: "tmpfs".into(),
                    target: target.to_string(),
                    options: size.map(|s| vec![format!("size={s}")]).unwrap_or_default(),
                }),
                MountKind::Bind {
                    input,
                    source,
                    readonly,
                } => {
                    let mount = self
                        .bind_input(*input, source, target, *readonly, inputs, &mut out)
                        .with_context(|| format!("mount {target}"))?;
                    out.mounts.push(mount);
                }
                MountKind::Cache {
                    id,
                    sharing,
                    readonly,
                    base,
                    owner,
                } => {
                    let dir = match caches.get(id.as_str()) {
                        Some(dir) => dir.clone(),
                        None => self
                            .cache_dir(id, *sharing, base.as_ref(), owner, inputs, cancel, &mut out)
                            .with_context(|| format!("cache mount {target} (id {id:?})"))?,
                    };
                    out.mounts.push(bind(&dir, target, *readonly));
                    caches.insert(id, dir);
                }
                MountKind::Secret {
                    id,
                    required,
                    env,
                    owner,
                } => {
                    let value = match self.exec_config.secrets.get(id) {
                        Some(source) => source
                            .read()
                            .with_context(|| format!("secret {id:?} (--secret id={id})"))?,
                        None => None,
                    };
                    let Some(value) = value else {
                        if *required {
                            bail!(
                                "secret {id:?} not found: provide it with --secret id={id},src=FILE or --secret id={id},env=VARIABLE"
                            );
                        }
                        continue;
                    };
                    if let Some(var) = env {
                        let text = String::from_utf8(value.clone()).map_err(|_| {
                            anyhow!("secret {id:?} is not UTF-8 text, so it cannot be put in the environment variable {var}")
                        })?;
                        out.env.push(format!("{var}={text}"));
                    }
                    if !target.is_empty() {
                        let dir = tempfile::Builder::new()
                            .prefix(&format!("{SECRET_DIR_PREFIX}{}-", std::process::id()))
                            .tempdir_in(secret_parent())
                            .context("creating a private directory for a secret")?;
                        let file = dir.path().join("secret");
                        std::fs::write(&file, &value)
                            .with_context(|| format!("writing secret {id:?}"))?;
                        set_owner(&file, owner)?;
                        out.mounts.push(bind(&file, target, true));
                        out.resources.push(Resource::Dir(dir));
                    }
                }
                MountKind::Ssh {
                    id,
                    required,
                    owner,
                } => {
                    let Some(socket) = self.exec_config.ssh.get(id) else {
                        if *required {
                            bail!("no SSH agent {id:?} was provided: pass it with --ssh {id}=SOCKET (or --ssh default for $SSH_AUTH_SOCK)");
                        }
                        continue;
                    };
                    let md = std::fs::metadata(socket).with_context(|| {
                        format!("SSH agent socket {} (--ssh {id})", socket.display())
                    })?;
                    if !std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()) {
                        bail!(
                            "--ssh {id}={}: not a socket; only agent sockets are supported",
                            socket.display()
                        );
                    }
                    let proxy = SshProxy::start(&secret_parent(), socket, owner)?;
                    out.mounts.push(bind(&proxy.socket(), target, false));
                    out.resources.push(Resource::Ssh(proxy));
                    if !ssh_sock_set {
                        ssh_sock_set = true;
                        out.env.push(format!("SSH_AUTH_SOCK={target}"));
                    }
                }
            }
        }
        Ok(out)
    }

    /// A host directory holding `source` of input `input`, as a bind mount at `target`.
    /// Writes to a writable bind go to a throwaway copy or overlay.
    fn bind_input(
        &self,
        input: usize,
        source: &str,
        target: &str,
        readonly: bool,
        inputs: &[(Ref, String)],
        out: &mut PreparedMounts,
    ) -> Result<executor::Mount> {
        let rel = relative(source);
        match inputs.get(input) {
            None => bail!("the mount reads input {input}, which the step does not have"),
            Some((Ref::Scratch, _)) => {
                if !rel.is_empty() {
                    bail!("source {source:?} not found: the mounted stage is empty");
                }
                let dir = self.temp_dir("bind")?;
                let mount = bind(dir.path(), target, readonly);
                out.resources.push(Resource::Dir(dir));
                Ok(mount)
            }
            Some((Ref::Snapshot(snap), _)) => {
                let key = unique("bind");
                let mounts = if readonly {
                    self.snapshots.view(&key, snap)?
                } else {
                    self.snapshots.prepare(&key, Some(snap))?
                };
                out.resources.push(Resource::Snapshot(TempSnapshot {
                    snapshots: self.snapshots.clone(),
                    key,
                }));
                let guard = MountGuard::mount(&self.root, &mounts)?;
                let path = executor::resolve_in_root(&guard.0, &rel)
                    .with_context(|| format!("resolving source {source:?}"))?;
                out.resources.push(Resource::HostMount(guard));
                if std::fs::symlink_metadata(&path).is_err() {
                    bail!("source {source:?} not found in the mounted stage or image");
                }
                Ok(bind(&path, target, readonly))
            }
            Some((Ref::Local(local), _)) => {
                let idx = self.context_index(local)?;
                if !idx.contains(&rel) {
                    bail!("source {source:?} not found in the build context {local:?}");
                }
                let path = executor::resolve_in_root(&idx.root, &rel)
                    .with_context(|| format!("resolving source {source:?}"))?;
                // Symlinks resolve inside the context, so one pointing elsewhere dangles.
                if std::fs::symlink_metadata(&path).is_err() {
                    bail!("source {source:?} is a symbolic link to a path that is not in the build context {local:?}");
                }
                if !subtree_fully_included(&idx, &path) {
                    // .dockerignore hides part of it: mount a copy of what is included.
                    let dir = self.temp_dir("bind")?;
                    let src = SourceTree {
                        root: &idx.root,
                        index: Some(&idx),
                    };
                    let from = if rel.is_empty() { ".".into() } else { rel };
                    let is_dir = std::fs::metadata(&path).map(|m| m.is_dir())?;
                    let dest = if is_dir { "/" } else { "/file" };
                    fileop::copy(&src, &[from], dir.path(), dest, &CopyOptions::default())?;
                    let copied = if is_dir {
                        dir.path().to_path_buf()
                    } else {
                        dir.path().join("file")
                    };
                    let mount = bind(&copied, target, readonly);
                    out.resources.push(Resource::Dir(dir));
                    return Ok(mount);
                }
                if readonly || !path.is_dir() {
                    // A single file cannot take an overlay; a writable file bind is
                    // a copy.
                    if readonly {
                        return Ok(bind(&path, target, true));
                    }
                    let dir = self.temp_dir("bind")?;
                    let copy = dir.path().join("file");
                    std::fs::copy(&path, &copy)
                        .with_context(|| format!("copying {}", path.display()))?;
                    let mount = bind(&copy, target, false);
                    out.resources.push(Resource::Dir(dir));
                    return Ok(mount);
                }
                let lower = path.to_string_lossy().into_owned();
                if lower.contains([',', ':']) {
                    bail!("source {source:?}: a writable mount of a context path containing ',' or ':' is not supported");
                }
                let dir = self.temp_dir("bind")?;
                let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
                std::fs::create_dir(&upper)?;
                std::fs::create_dir(&work)?;
                let mount = executor::Mount {
                    fstype: "overlay".into(),
                    source: "overlay".into(),
                    target: target.to_string(),
                    options: vec![
                        format!("lowerdir={lower}"),
                        format!("upperdir={}", upper.display()),
                        format!("workdir={}", work.display()),
                    ],
                };
                out.resources.push(Resource::Dir(dir));
                Ok(mount)
            }
        }
    }

    /// `--on-error=shell`: an interactive `/bin/sh` with the caller's stdio in the failed
    /// step's container (same rootfs with its changes, mounts, environment, directory and
    /// user). One at a time, since they share the terminal.
    pub(crate) fn debug_shell(&self, failed: &executor::ExecSpec, cancel: &CancelToken) {
        static TERMINAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _terminal = TERMINAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut shell = failed.clone();
        shell.args = vec!["/bin/sh".into()];
        shell.stdio = executor::Stdio::Inherit;
        // The progress display steps aside while the shell has the terminal.
        self.progress.terminal().hand_over(|| {
            eprintln!(
                "step failed: {:?}; starting /bin/sh in its container (exit the shell to end the build)",
                failed.args.join(" ")
            );
            if let Err(e) = self.executor.run(&shell, cancel, &mut |_, _| {}) {
                eprintln!("could not start the debug shell: {e}");
            }
        });
    }

    fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        let parent = self.root.join("tmp");
        std::fs::create_dir_all(&parent)?;
        Ok(tempfile::Builder::new()
            .prefix(&format!("{prefix}-{}-", std::process::id()))
            .tempdir_in(parent)?)
    }

    /// The directory of a cache mount, created (and seeded from `base`) on first use, with
    /// the lock its sharing mode asks for held in `out`.
    #[allow(clippy::too_many_arguments)]
    fn cache_dir(
        &self,
        id: &str,
        sharing: CacheSharing,
        base: Option<&(usize, String)>,
        owner: &MountOwner,
        inputs: &[(Ref, String)],
        cancel: &CancelToken,
        out: &mut PreparedMounts,
    ) -> Result<PathBuf> {
        let name = hex_sha256(id.as_bytes());
        let cache_root = self.root.join("cache");
        let locks = cache_root.join("mount-locks");
        std::fs::create_dir_all(&locks)?;
        std::fs::create_dir_all(cache_root.join("mounts"))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(locks.join(&name))
            .context("opening the cache lock")?;
        // The lock's mtime is the mount's last use, for `builder prune --filter until=`.
        let _ = lock.set_modified(std::time::SystemTime::now());
        let got_it = match sharing {
            CacheSharing::Shared => lock_wait(&lock, false, cancel)?,
            CacheSharing::Locked => lock_wait(&lock, true, cancel)?,
            CacheSharing::Private => {
                // Exclusive only to find out whether anyone else uses it; then shared, so
                // that shared users are not held up.
                if try_lock(&lock, true)? {
                    lock_wait(&lock, false, cancel)?
                } else {
                    false
                }
            }
        };
        if !got_it {
            // A busy private cache: this step gets a fresh one of its own.
            let dir = self.temp_dir("cache")?;
            let path = dir.path().join("cache");
            std::fs::create_dir(&path)?;
            set_owner(&path, owner)?;
            self.seed_cache(&path, base, inputs, out)?;
            out.resources.push(Resource::Dir(dir));
            return Ok(path);
        }
        out.resources.push(Resource::Lock(lock));
        let dir = cache_root.join("mounts").join(&name);
        if !dir.exists() {
            // Built aside and renamed into place, so a half-seeded cache is never seen.
            let staging_parent = cache_root.join("mounts-staging");
            std::fs::create_dir_all(&staging_parent)?;
            let staging = staging_parent.join(unique("cache"));
            std::fs::create_dir(&staging)?;
            let built = (|| {
                set_owner(&staging, owner)?;
                self.seed_cache(&staging, base, inputs, out)
            })();
            if let Err(e) = built {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
            if std::fs::rename(&staging, &dir).is_err() {
                // Someone else created it meanwhile; theirs wins.
                let _ = std::fs::remove_dir_all(&staging);
                if !dir.is_dir() {
                    bail!("creating cache directory {}", dir.display());
                }
            }
        }
        Ok(dir)
    }

    /// Copies `base` (input index, path) into an empty cache directory.
    fn seed_cache(
        &self,
        dir: &Path,
        base: Option<&(usize, String)>,
        inputs: &[(Ref, String)],
        out: &mut PreparedMounts,
    ) -> Result<()> {
        let Some((input, source)) = base else {
            return Ok(());
        };
        let mount = self.bind_input(*input, source, "/", true, inputs, out)?;
        let from = PathBuf::from(&mount.source);
        if !from.is_dir() {
            bail!("the cache base {source:?} is not a directory");
        }
        let src = SourceTree {
            root: &from,
            index: None,
        };
        fileop::copy(&src, &[".".into()], dir, "/", &CopyOptions::default())?;
        Ok(())
    }
}

/// Whether `.dockerignore` leaves every entry under `path` (a path in the context) included.
fn subtree_fully_included(idx: &ContextIndex, path: &Path) -> bool {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !md.is_dir() {
        return true;
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return false;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let Ok(rel) = p.strip_prefix(&idx.root) else {
                return false;
            };
            let rel = std::os::unix::ffi::OsStrExt::as_bytes(rel.as_os_str());
            if !idx.entries.contains_key(rel) {
                return false;
            }
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    true
}

fn try_lock(file: &File, exclusive: bool) -> Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match flock(file, op) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(anyhow!("locking a cache mount: {e}")),
    }
}

/// Waits for the lock, giving up when the build is cancelled. Always `Ok(true)` on success.
fn lock_wait(file: &File, exclusive: bool, cancel: &CancelToken) -> Result<bool> {
    loop {
        if try_lock(file, exclusive)? {
            return Ok(true);
        }
        if cancel.is_cancelled() {
            bail!("cancelled");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After the stubs are gone, directories that overlay copied up only to hold them are
/// identical to their lower versions and empty in the upper dir: drop those too, so the
/// layer does not carry them.
/// Whether any proper ancestor of `rel` below `base` is a symbolic link (or missing).
fn crosses_symlink(base: &Path, rel: &Path) -> bool {
    let mut at = base.to_path_buf();
    let mut components = rel.components().peekable();
    while let Some(component) = components.next() {
        if components.peek().is_none() {
            return false;
        }
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(md) if md.is_dir() => {}
            _ => return true,
        }
    }
    false
}

pub(crate) fn prune_copied_up_dirs(
    upper: &Path,
    lowers: &[PathBuf],
    created: &[executor::CreatedPath],
) {
    let mut candidates: BTreeSet<PathBuf> = BTreeSet::new();
    for c in created {
        let mut p = Path::new(&c.path).parent();
        while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
            candidates.insert(dir.to_path_buf());
            p = dir.parent();
        }
    }
    // Deepest first.
    for rel in candidates.iter().rev() {
        // The step may have swapped a directory on the way for a link to a host path.
        if crosses_symlink(upper, rel) {
            continue;
        }
        let in_upper = upper.join(rel);
        let Ok(md) = std::fs::symlink_metadata(&in_upper) else {
            continue;
        };
        if !md.is_dir() || std::fs::read_dir(&in_upper).map_or(true, |mut d| d.next().is_some()) {
            continue;
        }
        if rustix::fs::getxattr(&in_upper, "trusted.overlay.opaque", &mut [0u8; 4]).is_ok() {
            continue;
        }
        let Some(lower) = lowers
            .iter()
            .map(|l| l.join(rel))
            .find(|l| std::fs::symlink_metadata(l).is_ok())
        else {
            continue;
        };
        let Ok(lmd) = std::fs::symlink_metadata(&lower) else {
            continue;
        };
        let same = lmd.is_dir()
            && lmd.mode() == md.mode()
            && lmd.uid() == md.uid()
            && lmd.gid() == md.gid()
            && lmd.mtime() == md.mtime()
            && lmd.mtime_nsec() == md.mtime_nsec();
        if same {
            let _ = std::fs::remove_dir(&in_upper);
        }
    }
}

/// The lower directories of a snapshot's overlay mount, top first.
pub(crate) fn lower_dirs(mounts: &[snapshotter::Mount]) -> Vec<PathBuf> {
    mounts
        .iter()
        .flat_map(|m| m.options.iter())
        .filter_map(|o| o.strip_prefix("lowerdir="))
        .flat_map(|l| l.split(':'))
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_never_follows_a_link_planted_in_the_upper_dir() {
        let upper = tempfile::tempdir().unwrap();
        let lower = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("x")).unwrap();
        std::fs::create_dir_all(lower.path().join("mnt/x")).unwrap();
        // Make the lower's copy look exactly like the host directory.
        let host_md = std::fs::metadata(host.path().join("x")).unwrap();
        let times = std::fs::FileTimes::new().set_modified(host_md.modified().unwrap());
        std::fs::File::open(lower.path().join("mnt/x"))
            .unwrap()
            .set_times(times)
            .unwrap();
        std::os::unix::fs::symlink(host.path(), upper.path().join("mnt")).unwrap();
        let created = vec![executor::CreatedPath {
            path: "mnt/x/stub".into(),
            is_dir: true,
            parent_mtime: None,
            parent_mtime_after: None,
        }];
        prune_copied_up_dirs(upper.path(), &[lower.path().to_path_buf()], &created);
        assert!(
            host.path().join("x").is_dir(),
            "a host directory was removed"
        );
    }

    #[test]
    fn relative_targets_are_below_the_working_directory() {
        assert_eq!(absolute_target("/app", "node_modules"), "/app/node_modules");
        assert_eq!(absolute_target("/", "cache"), "/cache");
        assert_eq!(absolute_target("", "cache"), "/cache");
        assert_eq!(absolute_target("/app", "/abs"), "/abs");
        assert_eq!(absolute_target("/app", ""), "");
    }

    #[test]
    fn sources_are_normalised_relative_paths() {
        assert_eq!(relative("/"), "");
        assert_eq!(relative("."), "");
        assert_eq!(relative("./src/"), "src");
        assert_eq!(relative("/a//b/./c"), "a/b/c");
    }

    #[test]
    fn overrides_replace_variables() {
        let mut p = PreparedMounts::default();
        p.env.push("TOKEN=new".into());
        assert_eq!(
            p.environment(&["A=1".into(), "TOKEN=old".into()]),
            vec!["A=1".to_string(), "TOKEN=new".to_string()]
        );
    }

    #[test]
    fn shorthand_secret_prefers_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, "from-file").unwrap();
        let name = file.to_string_lossy().into_owned();
        assert_eq!(
            SecretSource::EnvOrFile(name.clone()).read().unwrap(),
            Some(b"from-file".to_vec())
        );
        let err = SecretSource::File(dir.path().join("missing"))
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert_eq!(
            SecretSource::Env("BUILDER_TEST_SURELY_UNSET_VAR".into())
                .read()
                .unwrap(),
            None
        );
    }
}
