//! Rootless networking: in rootless mode the host's network namespace is not ours to share,
//! so a "host" network run gets a network namespace of its own connected to the outside by a
//! user-mode TCP/IP stack, slirp4netns (the default) or pasta (Debian's `passt`, which
//! rootless podman >= 5 prefers; under load Debian 12's pasta was seen to hang in
//! uninterruptible sleep at teardown and delay `stop`, so it is opt-in here). The host's loopback is reachable as `host.containers.internal`.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use crate::{ExecSpec, Network};

/// Name of the host in the container's `/etc/hosts`, as podman writes it.
pub(crate) const HOST_NAME: &str = "host.containers.internal";

/// Chooses the user-mode network program: `pasta` or `slirp4netns` (unset: slirp4netns, and
/// pasta when slirp4netns is not installed or fails to start).
pub const USERNET_ENV: &str = "BUILDER_USERNET";

/// slirp4netns's fixed addresses: the host's loopback and its DNS forwarder.
const SLIRP_HOST: &str = "10.0.2.2";
const SLIRP_DNS: &str = "10.0.2.3";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Slirp4netns,
    Pasta,
}

impl Backend {
    /// The backends a run may use, preferred first: rootless, a "host" network, no namespace
    /// given; none when the run needs none. Errors when no program is installed.
    pub(crate) fn for_spec(spec: &ExecSpec) -> Result<Vec<Backend>> {
        if !crate::userns::is_rootless() || spec.network != Network::Host || spec.netns.is_some() {
            return Ok(Vec::new());
        }
        let wanted = match std::env::var(USERNET_ENV).as_deref() {
            Ok("pasta") => vec![Backend::Pasta],
            Ok("slirp4netns") => vec![Backend::Slirp4netns],
            Ok("") | Err(_) => vec![Backend::Slirp4netns, Backend::Pasta],
            Ok(other) => bail!("{USERNET_ENV}={other}: expected pasta or slirp4netns"),
        };
        let installed: Vec<Backend> = wanted
            .into_iter()
            .filter(|b| find_in_path(b.program()).is_some())
            .collect();
        if installed.is_empty() {
            bail!(
                "rootless mode gives a run network access through pasta or slirp4netns, and \
                 neither is installed (Debian: apt-get install passt slirp4netns); use \
                 --network none to run without a network"
            )
        }
        Ok(installed)
    }

    fn program(self) -> &'static str {
        match self {
            Backend::Slirp4netns => "slirp4netns",
            Backend::Pasta => "pasta",
        }
    }

    /// The address under which the container reaches the host's 127.0.0.1.
    pub(crate) fn host_address(self) -> String {
        match self {
            Backend::Slirp4netns => SLIRP_HOST.into(),
            // pasta maps its gateway address (the host's default gateway) to the host.
            Backend::Pasta => crate::default_gateway()
                .map(|g| g.to_string())
                .unwrap_or_else(|| "127.0.0.1".into()),
        }
    }

    /// The container's resolv.conf given the host's.
    pub(crate) fn resolv_conf(self, host: Vec<u8>) -> Vec<u8> {
        match self {
            Backend::Slirp4netns => format!("nameserver {SLIRP_DNS}\n").into_bytes(),
            Backend::Pasta => host,
        }
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| crate::DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Connects the run (see [`enter_connected_namespace`]) through the first of its backends that
/// starts; `None` when it needs no user-mode network.
pub(crate) fn connect(spec: &ExecSpec, log: &Path) -> Result<Option<UserNet>> {
    let mut failures = Vec::new();
    for backend in Backend::for_spec(spec)? {
        match enter_connected_namespace(backend, log) {
            Ok(net) => return Ok(Some(net)),
            Err(e) => failures.push(format!("{}: {e:#}", backend.program())),
        }
    }
    if failures.is_empty() {
        return Ok(None);
    }
    bail!("{}", failures.join("; "))
}

/// Moves the calling process (the helper, before it makes the pid namespace, so that the
/// network program stays outside it) into a new network namespace connected by `backend`;
/// the container's process inherits it.
///
/// A child makes the namespace: the network program must start in the namespace we are in,
/// and a user namespace cannot set its way back into the host's.
pub(crate) fn enter_connected_namespace(backend: Backend, log: &Path) -> Result<UserNet> {
    let (ready_read, ready_write) = cloexec_pipe()?;
    let (hold_read, hold_write) = cloexec_pipe()?;
    // SAFETY: the helper is single-threaded; the child only makes raw system calls.
    let holder = match unsafe { nix::unistd::fork() }.context("forking")? {
        nix::unistd::ForkResult::Child => {
            // Our copy of the write end would keep the read below from ever ending.
            drop((ready_read, hold_write));
            // Without capabilities, so that pasta, which drops most of its own before it
            // opens /proc/PID/ns/net, passes the kernel's ptrace access check on this process
            // (its permitted set must cover ours); otherwise that open fails with EACCES.
            let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                && crate::caps::apply(crate::caps::CapSet(0), 0).is_ok();
            if made {
                let _ = nix::unistd::write(&ready_write, b"1");
                let _ = nix::unistd::read(&hold_read, &mut [0u8; 1]);
            }
            // SAFETY: _exit skips the helper's destructors and buffers.
            unsafe { libc::_exit(i32::from(!made)) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop((ready_write, hold_read));
    let entered = (|| {
        if !matches!(nix::unistd::read(&ready_read, &mut [0u8; 1]), Ok(1)) {
            bail!("could not create a network namespace");
        }
        let netns = PathBuf::from(format!("/proc/{holder}/ns/net"));
        let namespace = std::fs::File::open(&netns).context("opening the network namespace")?;
        let net = start(backend, &netns, log)?;
        nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("entering the network namespace")?;
        Ok(net)
    })();
    drop(hold_write);
    let _ = nix::sys::wait::waitpid(holder, None);
    entered
}

/// A running user-mode network; stopped on drop.
pub(crate) struct UserNet {
    pub backend: Backend,
    child: Option<Child>,
    /// slirp4netns stops when this closes.
    _exit_write: Option<OwnedFd>,
    /// pasta runs as a daemon; its pid file.
    pid_file: Option<PathBuf>,
}

fn above_ten(fd: OwnedFd) -> Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .context("duplicating a pipe")?;
    // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor nobody else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")
}

fn start(backend: Backend, netns: &Path, log: &Path) -> Result<UserNet> {
    let log_file = std::fs::File::create(log).context("creating the network log")?;
    let mut command = match backend {
        Backend::Slirp4netns => {
            let mut c = Command::new("slirp4netns");
            c.args(["--configure", "--mtu=65520", "--netns-type=path"])
                .args(["--ready-fd=3", "--exit-fd=4"])
                .arg(netns)
                .arg("tap0");
            c
        }
        Backend::Pasta => {
            let mut c = Command::new("pasta");
            c.args(["--config-net", "--quiet", "--netns"])
                .arg(netns)
                .arg("--pid")
                .arg(log.with_extension("pid"));
            c
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let result = match backend {
        Backend::Slirp4netns => start_slirp(command),
        Backend::Pasta => start_pasta(command, log),
    };
    result.map_err(|e| {
        let detail = std::fs::read_to_string(log).unwrap_or_default();
        let hint = if detail.contains("/dev/net/tun") {
            " (user-mode networking needs /dev/net/tun readable and writable by the user: \
             mode 0666, as Debian's udev rules set it)"
        } else {
            ""
        };
        anyhow!("{e:#}: {}{hint}", detail.trim())
    })
}

fn start_slirp(mut command: Command) -> Result<UserNet> {
    let (ready_read, ready_write) = cloexec_pipe()?;
    let (exit_read, exit_write) = cloexec_pipe()?;
    // Above the target numbers, so the two dup2 calls cannot clobber each other.
    let (ready_write, exit_read) = (above_ten(ready_write)?, above_ten(exit_read)?);
    let (ready_raw, exit_raw) = (ready_write.as_raw_fd(), exit_read.as_raw_fd());
    // SAFETY: dup2 is async-signal-safe; the new descriptors lose close-on-exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(ready_raw, 3) < 0 || libc::dup2(exit_raw, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().context("starting slirp4netns")?;
    drop((ready_write, exit_read));
    let net = UserNet {
        backend: Backend::Slirp4netns,
        child: Some(child),
        _exit_write: Some(exit_write),
        pid_file: None,
    };
    let mut byte = [0u8; 1];
    if !matches!(std::fs::File::from(ready_read).read(&mut byte), Ok(1)) {
        bail!("slirp4netns failed");
    }
    Ok(net)
}

fn start_pasta(mut command: Command, log: &Path) -> Result<UserNet> {
    // Without -f pasta returns once the namespace is configured, leaving its daemon behind.
    let status = command.status().context("starting pasta")?;
    if !status.success() {
        bail!("pasta failed ({status})");
    }
    Ok(UserNet {
        backend: Backend::Pasta,
        child: None,
        _exit_write: None,
        pid_file: Some(log.with_extension("pid")),
    })
}

impl Drop for UserNet {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let daemon = self
            .pid_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = daemon {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}
