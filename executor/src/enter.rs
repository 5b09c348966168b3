//! "Enter an existing container" mode (`exec`): the helper joins the namespaces and root of a
//! running container's PID 1 instead of creating new ones, then forks the process (a joined
//! pid namespace applies to children only) and execs it as the requested user.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{anyhow, Context, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use crate::helper::{exec_program, report, user_and_workdir, Confinement};
use crate::ExecSpec;

/// Namespaces joined, in order; the mount namespace last, since joining it changes what
/// `/proc` paths mean.
const NAMESPACES: [(&str, CloneFlags); 5] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Opens a namespace file of the container's PID 1. A process is briefly not dumpable while
/// it changes its credentials (before its exec), and the kernel then refuses the open; retry
/// for a moment before reporting that.
fn open_namespace(path: &str) -> std::io::Result<File> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match File::open(path) {
            Err(e)
                if e.kind() == std::io::ErrorKind::PermissionDenied
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Runs `spec` inside the container whose PID 1 has host pid `pid`; returns its exit code.
pub(crate) fn enter_and_run(
    spec: &ExecSpec,
    pid: u32,
    status_fd: &OwnedFd,
    console_size: (u16, u16),
) -> Result<i32> {
    let mut joins = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("/proc/{pid}/ns/{name}");
        let file = open_namespace(&path)
            .with_context(|| format!("opening {path} (is the container running?)"))?;
        joins.push((name, file, flag));
    }
    let root = File::open(format!("/proc/{pid}/root")).context("opening the container's root")?;
    for (name, file, flag) in &joins {
        setns(file.as_fd(), *flag)
            .with_context(|| format!("joining the container's {name} namespace"))?;
    }
    nix::unistd::fchdir(&root).context("entering the container's root")?;
    nix::unistd::chroot(".").context("changing root to the container's")?;
    // SAFETY: the helper is single-threaded.
    match unsafe { fork() }.context("forking the exec'd process")? {
        ForkResult::Child => {
            let error = match exec_in_container(spec, console_size) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            report(status_fd, &error);
            // SAFETY: _exit skips destructors that belong to the parent.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => {
            if spec.stdio == crate::Stdio::Terminal {
                // Only the exec'd process may hold it: the caller then sees it close.
                crate::console::close_socket();
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(anyhow!(e).context("waiting for the exec'd process")),
                }
            }
        }
    }
}

fn exec_in_container(spec: &ExecSpec, console_size: (u16, u16)) -> Result<Infallible> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("setting the parent-death signal")?;
    if spec.stdio == crate::Stdio::Terminal {
        // The container's own /dev/ptmx (pts/ptmx of its devpts), as its root is ours now.
        nix::unistd::setsid().context("starting a session")?;
        crate::console::allocate(std::path::Path::new("/dev/ptmx"), console_size)?;
    }
    let (user, cwd) = user_and_workdir(spec)?;
    // An exec'd process is confined as the container is (docker exec keeps its caps and seccomp).
    let confinement = Confinement::of(spec)?;
    exec_program(spec, cwd, &user, confinement)
}

/// Joins the network namespace bind-mounted at `path`.
pub(crate) fn join_netns(path: &std::path::Path) -> Result<()> {
    let file = File::open(path)
        .with_context(|| format!("opening network namespace {}", path.display()))?;
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("joining network namespace {}", path.display()))
}
