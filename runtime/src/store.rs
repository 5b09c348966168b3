//! Container records on disk: `ROOT/containers/ID/{config.json,state.json,lock,ID-json.log}`.
//!
//! `config.json` is written at create and again only when `network connect`/`disconnect`
//! change its endpoints; `state.json` is rewritten atomically (temp name, fsync, rename) while
//! holding the container's `lock` file (flock), so the monitor and any number of `builder`
//! commands can update it concurrently. Both rewrites happen under that lock.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::logs::LogOptions;

/// When the monitor starts a container again after it exited.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub enum RestartPolicy {
    /// Never (docker's `no`).
    #[default]
    No,
    /// Whatever the exit status, unless stopped by the user.
    Always,
    /// Like `Always`, but a container stopped by the user stays stopped across reboots.
    UnlessStopped,
    /// Only after a non-zero exit, at most `max_retries` times (0: no limit).
    OnFailure { max_retries: u32 },
}

impl RestartPolicy {
    /// Parses docker's `--restart` syntax: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once(':') {
            None if s == "no" || s.is_empty() => Ok(RestartPolicy::No),
            None if s == "always" => Ok(RestartPolicy::Always),
            None if s == "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            None if s == "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: 0 }),
            Some(("on-failure", n)) => n
                .parse()
                .map(|max_retries| RestartPolicy::OnFailure { max_retries })
                .map_err(|_| anyhow!("--restart {s:?}: the retry count must be a number")),
            Some((name, _)) if name != "on-failure" => {
                bail!("--restart {s:?}: maximum retry count cannot be used with restart policy {name:?}")
            }
            _ => bail!(
                "--restart {s:?}: invalid restart policy (want no, always, unless-stopped or on-failure[:N])"
            ),
        }
    }

    /// Docker's name for the policy (`HostConfig.RestartPolicy.Name`).
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure { .. } => "on-failure",
        }
    }
}

/// What a container is, fixed at create time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    pub name: String,
    /// The image reference the user gave.
    pub image: String,
    /// The image's digest.
    pub image_id: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The process to run (rootfs mounts, argv, env, user, cwd, hostname, network).
    pub spec: executor::ExecSpec,
    /// Snapshot holding the container's writable layer; removed with the container.
    pub snapshot_key: String,
    pub restart: RestartPolicy,
    /// Signal name sent by `stop` (e.g. `SIGTERM`).
    pub stop_signal: String,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: u32,
    pub labels: BTreeMap<String, String>,
    /// `--rm`: remove the container when it exits.
    pub auto_remove: bool,
    pub log: LogOptions,
    /// The image's entrypoint and cmd as given (for inspect's `Config`).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// The healthcheck (image `HEALTHCHECK` or `--health-*`), if any.
    #[serde(default)]
    pub health: Option<crate::HealthConfig>,
    /// `bridge`, `host` or `none`.
    #[serde(default = "default_network")]
    pub network_mode: String,
    /// `-p`/`-P` mappings as asked (host port 0: chosen at start).
    #[serde(default)]
    pub ports: Vec<crate::PortMapping>,
    /// `--network-alias`: extra names on a user-defined network.
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// `--add-host NAME:IP`.
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// `--dns`: nameservers for the container's resolv.conf.
    #[serde(default)]
    pub dns: Vec<String>,
    /// Volumes, binds and tmpfs mounts.
    #[serde(default)]
    pub mounts: Vec<crate::MountSpec>,
    /// cgroup limits.
    #[serde(default)]
    pub limits: crate::Limits,
    /// The networks joined, primary first; `None` in configs older than endpoints (see
    /// [`Config::endpoints`]). Changed by `network connect`/`disconnect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<crate::Endpoint>>,
    /// `-i`: the monitor keeps the container's stdin open for clients to attach to.
    #[serde(default)]
    pub stdin_open: bool,
    /// The first attached client's end of file closes the container's stdin (`run -i`).
    #[serde(default)]
    pub stdin_once: bool,
    /// `-t`: the container's stdio is a terminal (output logged as stdout).
    #[serde(default)]
    pub tty: bool,
    /// The terminal's first size (rows, columns): the creating command's terminal's, so a
    /// program that reads it at once sees the right one.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// `--init`: an init process (tini) runs as PID 1 and starts the command.
    #[serde(default)]
    pub init: bool,
}

fn default_network() -> String {
    "host".into()
}

/// Docker's container states.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Restarting,
    Exited,
    Removing,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Removing => "removing",
            Status::Dead => "dead",
        }
    }

    /// Whether a monitor should be alive for this state.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Restarting)
    }
}

/// What a container is doing; rewritten by the monitor and the lifecycle commands.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// The monitor's pid and its start time (clock ticks since boot), which tells it apart
    /// from an unrelated process that got the same pid after the monitor died.
    pub monitor_pid: u32,
    pub monitor_start: u64,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    pub restart_count: u32,
    /// The user stopped or killed the container: the restart policy does not apply.
    pub stop_requested: bool,
    pub oom_killed: bool,
    #[serde(default)]
    pub health: Option<crate::health::Health>,
    /// Address on the bridge while running.
    #[serde(default)]
    pub ip: String,
    /// Published ports with the host ports actually bound.
    #[serde(default)]
    pub ports: Vec<crate::PortMapping>,
    /// Network name → the container's interface there, while running.
    #[serde(default)]
    pub networks: std::collections::BTreeMap<String, crate::Attached>,
}

/// One container directory.
#[derive(Clone, Debug)]
pub struct Container {
    pub dir: PathBuf,
    pub config: Config,
}

/// An flock held until dropped.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes an exclusive lock on `path`, creating the file; blocks while another holds it.
    pub fn exclusive(path: &Path) -> Result<FileLock> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock {}", path.display()))?;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}

impl Container {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Whether the container has its own network namespace (on bridges, or none of them
    /// after `network disconnect`).
    pub fn has_own_network(&self) -> bool {
        crate::endpoints::own_network(&self.config.network_mode)
    }

    /// Rewrites `config.json` (endpoints changed); the caller holds [`Container::lock`].
    pub(crate) fn save_config(&self) -> Result<()> {
        write_atomic(
            &self.dir.join("config.json"),
            &serde_json::to_vec_pretty(&self.config)?,
        )
    }

    pub fn lock(&self) -> Result<FileLock> {
        FileLock::exclusive(&self.dir.join("lock"))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.config.id))
    }

    /// The state as last written (no lock: the rename makes every read whole).
    pub fn state(&self) -> Result<State> {
        let path = self.dir.join("state.json");
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes the state atomically; the caller holds [`Container::lock`].
    pub fn save_state(&self, state: &State) -> Result<()> {
        write_atomic(
            &self.dir.join("state.json"),
            &serde_json::to_vec_pretty(state)?,
        )
    }

    /// Reads, changes and writes the state under the lock; returns the new state.
    pub fn update(&self, change: impl FnOnce(&mut State)) -> Result<State> {
        let _lock = self.lock()?;
        let mut state = self.state()?;
        change(&mut state);
        self.save_state(&state)?;
        Ok(state)
    }

    /// The state, corrected when its monitor died without recording the end (killed, or the
    /// machine rebooted): the container is then recorded as exited.
    pub fn live_state(&self) -> Result<State> {
        let state = self.state()?;
        if !needs_correction(&state) {
            return Ok(state);
        }
        let _lock = self.lock()?;
        self.live_state_locked()
    }

    /// [`Container::live_state`] of a listed container; `None` when it was removed since it was
    /// listed (`run --rm` ending, another `rm`), so listings race no removal.
    pub fn live_state_if_present(&self) -> Result<Option<State>> {
        match self.live_state() {
            Ok(state) => Ok(Some(state)),
            Err(_) if !self.dir.join("state.json").exists() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Container::live_state`] for a caller that holds the lock.
    pub fn live_state_locked(&self) -> Result<State> {
        let mut state = self.state()?;
        if needs_correction(&state) {
            state.status = Status::Exited;
            state.exit_code = 137;
            state.error = "the container's monitor process died".into();
            state.finished_at = crate::time::now_rfc3339();
            state.monitor_pid = 0;
            state.clear_network();
            self.save_state(&state)?;
            if self.has_own_network() {
                crate::network::teardown(self);
            }
            crate::cgroups::remove(self.id());
        }
        Ok(state)
    }
}

fn needs_correction(state: &State) -> bool {
    state.status.is_active() && !crate::procs::monitor_alive(state)
}

/// Writes `data` to a temp file next to `path`, fsyncs and renames it over `path`.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// All containers under `ROOT/containers`.
#[derive(Clone, Debug)]
pub struct ContainerStore {
    pub root: PathBuf,
    dir: PathBuf,
}

impl ContainerStore {
    pub fn open(root: &Path) -> Result<ContainerStore> {
        let dir = root.join("containers");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ContainerStore {
            root: root.to_path_buf(),
            dir,
        })
    }

    /// Serialises creations so two containers cannot take one name.
    pub(crate) fn names_lock(&self) -> Result<FileLock> {
        FileLock::exclusive(&self.dir.join(".names.lock"))
    }

    /// Every container, oldest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            if let Ok(c) = self.load_dir(&entry.path()) {
                out.push(c);
            }
        }
        out.sort_by(|a, b| a.config.created.cmp(&b.config.created));
        Ok(out)
    }

    fn load_dir(&self, dir: &Path) -> Result<Container> {
        let path = dir.join("config.json");
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let config: Config =
            serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Container {
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// Loads by full id (used by the monitor).
    pub fn load(&self, id: &str) -> Result<Container> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            bail!("invalid container id {id:?}");
        }
        self.load_dir(&self.dir.join(id))
    }

    /// Finds a container by name, full id or unique id prefix, as docker does.
    pub fn find(&self, name_or_id: &str) -> Result<Container> {
        let all = self.list()?;
        let wanted = name_or_id.trim_start_matches('/');
        if let Some(c) = all
            .iter()
            .find(|c| c.config.id == wanted || c.config.name == wanted)
        {
            return Ok(c.clone());
        }
        let matches: Vec<&Container> = all
            .iter()
            .filter(|c| !wanted.is_empty() && c.config.id.starts_with(wanted))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => bail!("No such container: {name_or_id}"),
            _ => bail!("multiple containers match {name_or_id:?}: give more of the id"),
        }
    }

    /// Creates the directory and records of a new container; the caller holds
    /// [`ContainerStore::names_lock`].
    pub(crate) fn insert(&self, config: &Config) -> Result<Container> {
        let dir = self.dir.join(&config.id);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let container = Container {
            dir,
            config: config.clone(),
        };
        // State first: `list` shows a container once its config exists, and a listed
        // container must have a state to read (compose creates containers concurrently).
        container.save_state(&State::default())?;
        write_atomic(
            &container.dir.join("config.json"),
            &serde_json::to_vec_pretty(config)?,
        )?;
        Ok(container)
    }
}
