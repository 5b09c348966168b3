//! The per-container monitor: a detached, single-threaded re-execution of the binary that
//! runs the container through the executor, writes its output to the json-file log, records
//! each exit and applies the restart policy. It lives exactly as long as the container runs
//! (restarts included), so an exited container costs no process. It is single-threaded
//! except for a healthcheck thread when the container has a healthcheck.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::logs::LogWriter;
use crate::store::{Container, ContainerStore, RestartPolicy, State, Status};
use crate::time::now_rfc3339;

/// Restart delays start here and double up to [`MAX_BACKOFF`], as docker's do.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run longer than this resets the delay.
const RESET_BACKOFF_AFTER: Duration = Duration::from_secs(10);

/// Entry point: `builder __container-monitor ROOT ID`. Never returns.
pub fn monitor_main() -> ! {
    let args: Vec<String> = std::env::args().collect();
    let (Some(root), Some(id)) = (args.get(2), args.get(3)) else {
        eprintln!("container monitor: usage: {} ROOT ID", crate::MONITOR_ARG);
        std::process::exit(crate::EXIT_OUR_ERROR);
    };
    // Second fork of the double fork: the session leader exits so the monitor can never
    // acquire a controlling terminal, and it is reparented away from `builder`.
    // SAFETY: called first thing in main, while the process is single-threaded.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(_) => std::process::exit(crate::EXIT_OUR_ERROR),
    }
    let _ = std::env::set_current_dir("/");
    let code = match run(Path::new(root), id) {
        Ok(()) => 0,
        Err(e) => {
            record_failure(Path::new(root), id, &format!("{e:#}"));
            1
        }
    };
    std::process::exit(code)
}

fn record_failure(root: &Path, id: &str, message: &str) {
    if let Ok(c) = ContainerStore::open(root).and_then(|s| s.load(id)) {
        if c.has_own_network() {
            crate::network::teardown(&c);
        }
        crate::cgroups::remove(id);
        let _ = c.update(|s| {
            s.status = Status::Exited;
            s.exit_code = crate::EXIT_OUR_ERROR;
            s.error = message.to_string();
            s.finished_at = now_rfc3339();
            s.monitor_pid = 0;
        });
    }
}

fn run(root: &Path, id: &str) -> Result<()> {
    let store = ContainerStore::open(root)?;
    let container = store.load(id)?;
    let pid = std::process::id();
    let start = crate::procs::start_time(pid).context("reading the monitor's start time")?;
    container.update(|s| {
        s.monitor_pid = pid;
        s.monitor_start = start;
        s.status = Status::Running;
        s.stop_requested = false;
        s.error.clear();
        s.started_at = now_rfc3339();
    })?;
    let mut spec = container.config.spec.clone();
    // Before any thread starts: filling a fresh volume forks.
    let own_mounts = std::mem::take(&mut spec.mounts); // --init's, over the volumes
    spec.mounts = crate::volumes::exec_mounts(&store.root, &container)?;
    spec.mounts.extend(own_mounts);
    let mut attachment = attach_network(&store, &container, &mut spec)?;
    spec.cgroup_paths = crate::cgroups::create(container.id(), &container.config.limits)?;
    let executor = executor::Executor::current_exe()?
        .with_state_dir(container.dir.clone())
        .with_seccomp_cache(Some(executor::seccomp_cache_in_store(root)));
    let executor = crate::attach::prepare(&container, executor)?;
    let mut log = LogWriter::open(&container.log_path(), container.config.log.clone())?;
    let mut backoff = FIRST_BACKOFF;
    // A terminal's prompt and echo end no line: each chunk is an entry, as docker's for -t.
    let chunked = container.config.tty;
    loop {
        let began = Instant::now();
        let stop_probes = Arc::new(AtomicBool::new(false));
        let prober = crate::health::spawn_prober(&container, stop_probes.clone());
        let result =
            executor.run_tracked(&spec, &executor::CancelToken::new(), &mut |stream, data| {
                let index = usize::from(stream == executor::OutputStream::Stderr);
                log.write(index, data);
                if chunked {
                    log.flush();
                }
            });
        log.flush();
        stop_probes.store(true, Ordering::SeqCst);
        if let Some(prober) = prober {
            let _ = prober.join();
        }
        let (code, error) = match result {
            Ok(outcome) => (outcome.exit_code, String::new()),
            Err(executor::ExecError::Setup(m)) => (setup_exit_code(&m), m),
            Err(e) => (crate::EXIT_OUR_ERROR, e.to_string()),
        };
        match record_exit(&container, code, error, &mut attachment) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(release(&container, &mut attachment, e)),
        }
        if began.elapsed() > RESET_BACKOFF_AFTER {
            backoff = FIRST_BACKOFF;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        match begin_restart(&container, &mut attachment) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(release(&container, &mut attachment, e)),
        }
    }
    crate::attach::cleanup(&container);
    // A foreground `run --rm` that its client detached from is marked since (config.json).
    let marked = || store.load(id).is_ok_and(|c| c.config.auto_remove);
    if container.config.auto_remove || marked() {
        crate::lifecycle::destroy(&store, &container, true)?;
    }
    Ok(())
}

/// Joins the container's network and prepares its /etc/hosts and resolv.conf.
fn attach_network(
    store: &ContainerStore,
    container: &Container,
    spec: &mut executor::ExecSpec,
) -> Result<Option<crate::network::Attachment>> {
    let config = &container.config;
    if !config.dns.is_empty() {
        let path = container.dir.join("resolv.conf");
        let text: String = config
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        crate::networks::write_in_place(&path, &text)?;
        spec.resolv_conf = Some(path);
    }
    if let Some(target) = config.network_mode.strip_prefix("container:") {
        let other = store.find(target)?;
        let state = other.live_state()?;
        let pid = crate::procs::container_pid(&state).ok_or_else(|| {
            anyhow::anyhow!("--network container:{target}: that container is not running")
        })?;
        spec.netns = Some(format!("/proc/{pid}/ns/net").into());
        return Ok(None);
    }
    let hosts = crate::networks::hosts_path(container);
    spec.hosts_file = Some(hosts.clone());
    if !container.has_own_network() {
        crate::networks::write_in_place(&hosts, &crate::networks::base_hosts(container, ""))?;
        return Ok(None);
    }
    let attachment = join_networks(store, container)?;
    spec.netns = Some(crate::network::netns_path(container));
    let networks: Vec<String> = attachment.networks.keys().cloned().collect();
    crate::networks::refresh_hosts(store, &networks, None, Some(container.id()))?;
    Ok(Some(attachment))
}

/// Sets up the container's namespace and interfaces under its lock, from the endpoints in
/// its config as they are now: a `network connect` either sees the namespace or lands in
/// the config read here.
fn join_networks(
    store: &ContainerStore,
    container: &Container,
) -> Result<crate::network::Attachment> {
    let _lock = container.lock()?;
    let config = store.load(container.id())?.config;
    let endpoints = crate::networks::endpoint_networks(&store.root, &config)?;
    let attachment = crate::network::setup(container, &endpoints, &config.ports)?;
    let ip = attachment.ip.map(|ip| ip.to_string()).unwrap_or_default();
    let hosts = crate::networks::hosts_path(container);
    crate::networks::write_in_place(&hosts, &crate::networks::base_hosts(container, &ip))?;
    let mut state = container.state()?;
    state.ip = ip;
    state.ports = attachment.ports.clone();
    state.networks = attachment.networks.clone();
    if let Err(e) = container.save_state(&state) {
        crate::network::teardown(container);
        return Err(e);
    }
    Ok(attachment)
}

/// The state could not be written (e.g. the container's directory was deleted under it):
/// still give back the network and cgroups, which nothing else would find later.
fn release(
    container: &Container,
    attachment: &mut Option<crate::network::Attachment>,
    error: anyhow::Error,
) -> anyhow::Error {
    if attachment.take().is_some() {
        crate::network::teardown(container);
    }
    crate::cgroups::remove(container.id());
    error
}

/// Records one exit; returns whether the restart policy starts the container again. When it
/// does not, the network is detached before the exit is visible, so a command that waited for
/// it finds the ports and addresses free.
fn record_exit(
    container: &Container,
    code: i32,
    error: String,
    attachment: &mut Option<crate::network::Attachment>,
) -> Result<bool> {
    let mut restart = false;
    let oom = code == 137 && crate::cgroups::oom_killed(container.id());
    container.update(|s| {
        s.exit_code = code;
        s.oom_killed = oom;
        s.finished_at = now_rfc3339();
        restart = error.is_empty() && should_restart(&container.config.restart, s, code);
        s.error = error;
        if restart {
            s.restart_count += 1;
            s.status = Status::Restarting;
        } else {
            if attachment.take().is_some() {
                crate::network::teardown(container);
                s.clear_network();
            }
            s.status = Status::Exited;
            s.monitor_pid = 0;
            crate::cgroups::remove(container.id());
        }
    })?;
    Ok(restart)
}

/// After the restart delay: runs again unless the user stopped the container meanwhile.
fn begin_restart(
    container: &Container,
    attachment: &mut Option<crate::network::Attachment>,
) -> Result<bool> {
    let state = container.update(|s| {
        if s.stop_requested {
            crate::cgroups::remove(container.id());
            if attachment.take().is_some() {
                crate::network::teardown(container);
                s.clear_network();
            }
            s.status = Status::Exited;
            s.monitor_pid = 0;
        } else {
            s.status = Status::Running;
            s.started_at = now_rfc3339();
        }
    })?;
    Ok(state.status == Status::Running)
}

pub(crate) fn should_restart(policy: &RestartPolicy, state: &State, code: i32) -> bool {
    if state.stop_requested {
        return false;
    }
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        RestartPolicy::OnFailure { max_retries } => {
            code != 0 && (*max_retries == 0 || state.restart_count < *max_retries)
        }
    }
}

/// Docker's codes for a program that could not be started: 127 not found, 126 not executable.
pub(crate) fn setup_exit_code(message: &str) -> i32 {
    if message.contains("not found") || message.contains("No such file") {
        127
    } else if message.contains("ermission denied") || message.contains("EACCES") {
        126
    } else {
        crate::EXIT_OUR_ERROR
    }
}

/// Checks a monitor invocation before spawning it (used by tests of bad input).
pub(crate) fn check_root(root: &Path) -> Result<()> {
    if !root.is_absolute() {
        bail!("the storage root must be an absolute path for a container monitor");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_failure_counts_restarts() {
        let policy = RestartPolicy::OnFailure { max_retries: 2 };
        let mut s = State::default();
        assert!(should_restart(&policy, &s, 1));
        assert!(!should_restart(&policy, &s, 0));
        s.restart_count = 2;
        assert!(!should_restart(&policy, &s, 1));
        s.restart_count = 0;
        s.stop_requested = true;
        assert!(!should_restart(&RestartPolicy::Always, &s, 0));
        assert_eq!(
            setup_exit_code("exec: \"x\": executable file not found in $PATH"),
            127
        );
        assert_eq!(setup_exit_code("exec /x: EACCES: Permission denied"), 126);
    }
}
