//! The lifecycle verbs: create, start, stop, kill, restart, rm, wait.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;

use crate::logs::LogOptions;
use crate::store::{Config, Container, ContainerStore, RestartPolicy, State, Status};

/// How often waiting commands look at the state.
const POLL: Duration = Duration::from_millis(20);
/// How long `start` waits for the program to be exec'd.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long stop/kill wait for the monitor to record an exit after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Everything `create` needs besides the root filesystem.
pub struct CreateRequest {
    pub name: Option<String>,
    pub image: String,
    pub image_id: String,
    pub spec: executor::ExecSpec,
    pub restart: RestartPolicy,
    pub stop_signal: String,
    pub stop_timeout: u32,
    pub labels: BTreeMap<String, String>,
    pub auto_remove: bool,
    pub log: LogOptions,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub health: Option<crate::HealthConfig>,
    pub network_mode: String,
    pub ports: Vec<crate::PortMapping>,
    pub network_aliases: Vec<String>,
    /// Every network joined, primary first (None: host, none, container:).
    pub endpoints: Option<Vec<crate::Endpoint>>,
    pub extra_hosts: Vec<(String, String)>,
    pub dns: Vec<String>,
    pub mounts: Vec<crate::MountSpec>,
    pub limits: crate::Limits,
    pub stdio: crate::StdioConfig,
}

/// An error with the exit code docker gives for it (125, 126, 127).
#[derive(Debug)]
pub struct ExitError {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitError {}

/// Records a new container. `prepare_rootfs(id)` makes its writable snapshot and returns the
/// rootfs mounts and the snapshot key; it runs only once the name is known to be free.
pub fn create(
    store: &ContainerStore,
    request: CreateRequest,
    prepare_rootfs: impl FnOnce(&str) -> Result<(Vec<executor::Mount>, String)>,
) -> Result<Container> {
    if let Some(name) = &request.name {
        crate::names::validate_name(name)?;
    }
    crate::procs::parse_signal(&request.stop_signal)
        .with_context(|| format!("--stop-signal {:?}", request.stop_signal))?;
    let _names = store.names_lock()?;
    let existing = store.list()?;
    let name = match request.name {
        Some(name) => {
            if let Some(c) = existing.iter().find(|c| c.config.name == name) {
                bail!("Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.", c.config.id);
            }
            name
        }
        None => loop {
            let name = crate::names::random_name();
            if !existing.iter().any(|c| c.config.name == name) {
                break name;
            }
        },
    };
    let id = crate::names::new_id();
    let mounts = crate::volumes::prepare_mounts(&store.root, &request.mounts)?;
    let (rootfs, snapshot_key) = prepare_rootfs(&id)?;
    let mut spec = request.spec;
    spec.rootfs = rootfs;
    if spec.hostname.is_empty() {
        spec.hostname = id[..12].to_string();
    }
    spec.stdio = if request.stdio.tty {
        executor::Stdio::Terminal
    } else {
        executor::Stdio::Piped
    };
    let config = Config {
        id,
        name,
        image: request.image,
        image_id: request.image_id,
        created: crate::time::now_rfc3339(),
        spec,
        snapshot_key,
        restart: request.restart,
        stop_signal: request.stop_signal,
        stop_timeout: request.stop_timeout,
        labels: request.labels,
        auto_remove: request.auto_remove,
        log: request.log,
        entrypoint: request.entrypoint,
        cmd: request.cmd,
        health: request.health,
        network_mode: request.network_mode,
        ports: request.ports,
        network_aliases: request.network_aliases,
        endpoints: request.endpoints,
        extra_hosts: request.extra_hosts,
        dns: request.dns,
        mounts,
        limits: request.limits,
        stdin_open: request.stdio.stdin_open,
        stdin_once: request.stdio.stdin_once,
        tty: request.stdio.tty,
        console_size: request
            .stdio
            .tty
            .then(crate::attach::terminal_size)
            .flatten(),
        init: request.stdio.init,
    };
    store.insert(&config)
}

/// Starts the container's monitor and returns once the program has been exec'd (or has
/// already exited). A program that cannot be started gives an [`ExitError`] (126/127).
pub fn start(store: &ContainerStore, container: &Container) -> Result<()> {
    crate::monitor::check_root(&store.root)?;
    {
        let _lock = container.lock()?;
        let state = container.live_state_locked()?;
        if state.status.is_active() {
            return Ok(());
        }
        if state.status == Status::Removing {
            bail!("container {} is being removed", container.config.name);
        }
        let mut state = state;
        state.status = Status::Created;
        state.monitor_pid = 0;
        state.error.clear();
        container.save_state(&state)?;
    }
    spawn_monitor(store, container)?;
    wait_started(container)
}

fn spawn_monitor(store: &ContainerStore, container: &Container) -> Result<()> {
    let exe = executor::self_exe().context("finding the builder binary")?;
    let mut command = Command::new(&exe);
    command
        .arg(crate::MONITOR_ARG)
        .arg(&store.root)
        .arg(container.id())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = command
        .status()
        .with_context(|| format!("starting the container monitor {}", exe.display()))?;
    if !status.success() {
        bail!("the container monitor failed to start ({status})");
    }
    Ok(())
}

fn wait_started(container: &Container) -> Result<()> {
    // What `/proc/PID/exe` of a helper that has not exec'd yet is: this binary.
    let exe = std::fs::metadata("/proc/self/exe").context("finding the builder binary")?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        let state = container.live_state()?;
        match state.status {
            Status::Created => {}
            Status::Exited | Status::Dead | Status::Removing => {
                if state.error.is_empty() {
                    return Ok(());
                }
                return Err(ExitError {
                    code: state.exit_code,
                    message: state.error,
                }
                .into());
            }
            Status::Running | Status::Restarting => {
                if state.status == Status::Restarting
                    || crate::procs::container_pid(&state)
                        .is_some_and(|pid| crate::procs::has_execed(pid, &exe))
                {
                    return Ok(());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!(
        "container {} did not start within {START_TIMEOUT:?}",
        container.config.name
    )
}

/// Sends the stop signal, waits `timeout` seconds (default: the container's), then SIGKILL.
/// The restart policy does not apply to a stopped container.
pub fn stop(container: &Container, timeout: Option<u32>) -> Result<()> {
    let state = container.update(|s| s.stop_requested = true)?;
    if !state.status.is_active() {
        return Ok(());
    }
    let signal = crate::procs::parse_signal(&container.config.stop_signal)?;
    if let Some(pid) = crate::procs::container_pid(&state) {
        crate::procs::send(pid, signal);
    }
    let timeout = Duration::from_secs(timeout.unwrap_or(container.config.stop_timeout).into());
    if wait_inactive(container, timeout)? {
        return Ok(());
    }
    kill_now(container)
}

fn kill_now(container: &Container) -> Result<()> {
    let state = container.live_state()?;
    if let Some(pid) = crate::procs::container_pid(&state) {
        crate::procs::send(pid, Signal::SIGKILL);
    }
    if wait_inactive(container, KILL_GRACE)? {
        return Ok(());
    }
    bail!(
        "container {} did not exit after SIGKILL",
        container.config.name
    )
}

/// Polls until the container is no longer running; false on timeout.
fn wait_inactive(container: &Container, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        match container.live_state() {
            Ok(s) if s.status.is_active() => {}
            Ok(_) => return Ok(true),
            // Removed meanwhile (--rm): gone is inactive.
            Err(_) if !container.dir.exists() => return Ok(true),
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL);
    }
}

/// Sends `signal` to the container's main process (docker's `kill -s`).
pub fn kill(container: &Container, signal: &str) -> Result<()> {
    let signal = crate::procs::parse_signal(signal)?;
    let state = container.live_state()?;
    let pid = crate::procs::container_pid(&state)
        .filter(|_| state.status == Status::Running)
        .ok_or_else(|| anyhow!("container {} is not running", container.config.name))?;
    let stop_signal = crate::procs::parse_signal(&container.config.stop_signal)?;
    if matches!(signal, Signal::SIGKILL | Signal::SIGTERM | Signal::SIGINT) || signal == stop_signal
    {
        container.update(|s| s.stop_requested = true)?;
    }
    crate::procs::send(pid, signal);
    Ok(())
}

/// `stop` then `start`.
pub fn restart(store: &ContainerStore, container: &Container, timeout: Option<u32>) -> Result<()> {
    stop(container, timeout)?;
    start(store, container)
}

/// Removes a container; a running one only with `force` (it is killed first); with
/// `volumes`, its anonymous volumes too.
pub fn remove(
    store: &ContainerStore,
    container: &Container,
    force: bool,
    volumes: bool,
) -> Result<()> {
    let state = container.live_state()?;
    if state.status.is_active() {
        if !force {
            bail!("cannot remove container \"/{}\": container is {}: stop the container before removing or force remove", container.config.name, state.status.as_str());
        }
        container.update(|s| s.stop_requested = true)?;
        kill_now(container)?;
    }
    destroy(store, container, volumes)
}

/// A foreground `run --rm` the user detached from: its monitor removes it once it stops, as
/// a detached `--rm` one (it is removed now if it already has).
pub fn remove_once_stopped(store: &ContainerStore, container: &Container) -> Result<()> {
    let mut container = container.clone();
    let stopped = {
        let _lock = container.lock()?;
        container.config.auto_remove = true;
        container.save_config()?;
        !container.live_state()?.status.is_active()
    };
    if stopped {
        // Its monitor may be removing it at the same moment; either one suffices.
        let _ = destroy(store, &container, true);
    }
    Ok(())
}

/// Deletes the container's snapshot and directory (it is not running).
pub(crate) fn destroy(store: &ContainerStore, container: &Container, volumes: bool) -> Result<()> {
    {
        let _lock = container.lock()?;
        let mut state = container.state()?;
        state.status = Status::Removing;
        container.save_state(&state)?;
    }
    if container.has_own_network() {
        crate::network::teardown(container);
    }
    crate::cgroups::remove(container.id());
    let snapshots = snapshotter::Snapshotter::open(&store.root)?;
    if snapshots.exists(&container.config.snapshot_key) {
        snapshots
            .remove(&container.config.snapshot_key)
            .with_context(|| format!("removing the filesystem of {}", container.config.name))?;
    }
    std::fs::remove_dir_all(&container.dir)
        .with_context(|| format!("removing {}", container.dir.display()))?;
    if volumes {
        crate::volumes::remove_anonymous(&store.root, container);
    }
    Ok(())
}

/// Blocks until the container exits; returns its exit code.
pub fn wait_exit(container: &Container) -> Result<i32> {
    let mut last: Option<State> = None;
    loop {
        match container.live_state() {
            Ok(s) if matches!(s.status, Status::Exited | Status::Dead) => return Ok(s.exit_code),
            Ok(s) => last = Some(s),
            Err(e) => {
                if !container.dir.exists() {
                    return last.map(|s| s.exit_code).ok_or(e);
                }
                return Err(e);
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Starts the containers whose restart policy brings them back after a reboot: `always`,
/// and `unless-stopped` unless the user stopped them. Returns the names started.
pub fn start_restartable(store: &ContainerStore) -> Result<Vec<String>> {
    let mut started = Vec::new();
    for container in store.list()? {
        let state = container.live_state()?;
        let wanted = match container.config.restart {
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !state.stop_requested,
            _ => false,
        };
        if wanted && !state.status.is_active() {
            start(store, &container)?;
            started.push(container.config.name.clone());
        }
    }
    Ok(started)
}
