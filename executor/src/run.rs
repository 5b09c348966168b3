//! Caller side: starting the helper process, streaming its output, cancellation.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as ProcessStdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use serde::{Deserialize, Serialize};

use crate::cgroup::RunCgroups;
use crate::stubs::{read_created, CreatedPath};
use crate::{ExecError, ExecSpec, Isolation, OutputStream, Stdio, HELPER_ARG};

/// How a run ended.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The process's exit code (128+signal if it was killed).
    pub exit_code: i32,
    /// Paths the executor created in the rootfs (mount targets, `/etc/hosts`, the working
    /// directory, ...), parents first; see [`crate::remove_stubs`].
    pub created: Vec<CreatedPath>,
}

/// File descriptor on which the helper reads the JSON spec.
pub(crate) const SPEC_FD: i32 = 3;
/// File descriptor on which the helper and the container report setup errors.
pub(crate) const STATUS_FD: i32 = 4;

/// Name of the file in the state directory where the helper records the paths it created.
pub(crate) const CREATED_FILE: &str = "created";

/// Prefix of state directory names; the creating process's pid follows, so directories left
/// by a killed process can be told apart from live ones.
const STATE_PREFIX: &str = "builder-exec-";

/// How long output pipes may stay open after the helper exited before we stop reading.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Starts containers by re-executing a helper program (normally the builder binary itself).
#[derive(Clone, Debug)]
pub struct Executor {
    helper_program: PathBuf,
    helper_args: Vec<String>,
    state_parent: Option<PathBuf>,
    isolation: Isolation,
    /// The container's stdin for [`Stdio::Piped`] (instead of `/dev/null`).
    stdin: Option<Arc<OwnedFd>>,
    /// Where the terminal of each [`Stdio::Terminal`] run goes.
    terminal: Option<crate::TerminalSlot>,
    seccomp_cache: Option<PathBuf>,
}

/// What the caller sends the helper on [`SPEC_FD`].
#[derive(Serialize, Deserialize)]
pub(crate) struct HelperRequest {
    pub spec: ExecSpec,
    /// An empty, caller-owned directory for the rootfs mount point and the generated
    /// `/etc/hosts` and `/etc/resolv.conf`; the caller removes it even if the helper is killed.
    pub state_dir: PathBuf,
    /// The run's cgroup directories, created and removed by the caller.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    #[serde(default)]
    pub isolation: Isolation,
    /// Where compiled seccomp programs are cached (see `seccomp_cache`).
    #[serde(default)]
    pub seccomp_cache: Option<PathBuf>,
    /// The window size (rows, columns) of a [`Stdio::Terminal`] run's terminal.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
}

impl Executor {
    /// An executor that starts `helper_program helper_args...`, which must call
    /// [`crate::helper_main`] (e.g. a binary whose first argument is [`HELPER_ARG`]).
    pub fn new(helper_program: PathBuf, helper_args: Vec<String>) -> Self {
        Executor {
            helper_program,
            helper_args,
            state_parent: None,
            isolation: crate::default_isolation(),
            stdin: None,
            terminal: None,
            seccomp_cache: crate::seccomp_cache_dir(),
        }
    }

    /// Runs with [`Stdio::Piped`] read their stdin from `fd` (e.g. a pipe the caller
    /// writes to) instead of `/dev/null`, and runs with [`Stdio::Inherit`] instead of the
    /// caller's stdin.
    pub fn with_stdin(mut self, fd: OwnedFd) -> Self {
        self.stdin = Some(Arc::new(fd));
        self
    }

    /// The terminal of runs with [`Stdio::Terminal`]: each run's container allocates its own
    /// in its devpts and sends the master back; while the run lasts it is in `slot` (for
    /// input and window size) and what it reads goes to `on_output`. Only the container's
    /// processes hold the slave, so once they are gone the master reads to the end of their
    /// output (EIO) instead of guessing when it is drained.
    pub fn with_terminal(mut self, slot: crate::TerminalSlot) -> Self {
        self.terminal = Some(slot);
        self
    }

    /// Runs with `isolation` instead of the process default.
    pub fn with_isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Caches compiled seccomp programs in `dir` (`None`: compile each run) instead of the
    /// process default ([`crate::set_seccomp_cache_dir`]).
    pub fn with_seccomp_cache(mut self, dir: Option<PathBuf>) -> Self {
        self.seccomp_cache = dir;
        self
    }

    /// This executor's isolation.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Puts each run's small state directory (rootfs mount point, generated `/etc/hosts` and
    /// `/etc/resolv.conf`) under `dir` instead of the system temp directory.
    pub fn with_state_dir(mut self, dir: PathBuf) -> Self {
        self.state_parent = Some(dir);
        self
    }

    /// An executor that re-executes the current binary with [`HELPER_ARG`].
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(Executor::new(self_exe()?, vec![HELPER_ARG.to_string()]))
    }

    /// Runs `spec` and returns the process's exit code (128+signal if it was killed).
    ///
    /// Blocks until the container is gone; async callers use `spawn_blocking`. Output chunks are
    /// passed to `on_output` as they arrive, only for [`Stdio::Piped`]. Cancelling `cancel`
    /// kills the container and makes this return [`ExecError::Cancelled`].
    pub fn run(
        &self,
        spec: &ExecSpec,
        cancel: &CancelToken,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<i32, ExecError> {
        self.run_tracked(spec, cancel, on_output)
            .map(|outcome| outcome.exit_code)
    }

    /// Like [`Executor::run`], and also reports the paths the executor created in the rootfs.
    pub fn run_tracked(
        &self,
        spec: &ExecSpec,
        cancel: &CancelToken,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<RunOutcome, ExecError> {
        if cancel.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        if spec.args.is_empty() {
            return Err(ExecError::Setup("no command given to execute".into()));
        }
        let state_parent = self.state_parent.clone().unwrap_or_else(std::env::temp_dir);
        sweep_stale_state_dirs_once(&state_parent);
        let cgroups = match self.isolation {
            Isolation::Oci => RunCgroups::create(
                &spec.resources,
                spec.security.privileged,
                &spec.cgroup_paths,
            )
            .map_err(|e| ExecError::Setup(format!("creating the run's cgroups: {e:#}")))?,
            // No cgroupfs to write to; limits cannot be kept.
            Isolation::Chroot if spec.resources != Default::default() => {
                return Err(ExecError::Setup(
                    "resource limits need cgroups, which chroot isolation cannot use".into(),
                ))
            }
            Isolation::Chroot => RunCgroups::default(),
        };
        let prefix = format!("{STATE_PREFIX}{}-", std::process::id());
        let state_dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(&state_parent)?;
        let request = HelperRequest {
            spec: spec.clone(),
            state_dir: state_dir.path().to_path_buf(),
            cgroups: cgroups.dirs.clone(),
            isolation: self.isolation,
            seccomp_cache: self.seccomp_cache.clone(),
            console_size: self.terminal.as_ref().map(|slot| slot.size()),
        };
        let spec_json = serde_json::to_vec(&request).map_err(std::io::Error::other)?;

        let (spec_read, spec_write) = cloexec_pipe()?;
        let mut spec_write = std::fs::File::from(spec_write);
        let (status_read, status_write) = cloexec_pipe()?;
        // Move the helper's ends above the standard range so the dup2 calls in the child cannot
        // clobber each other.
        // The originals are dropped here: any extra write end would keep the status pipe open.
        let spec_read = dup_above(spec_read, 10)?;
        let status_write = dup_above(status_write, 10)?;

        let console = (spec.stdio == Stdio::Terminal)
            .then(console_socket)
            .transpose()?;
        let helper_console = console.as_ref().map(|(_, theirs)| theirs.as_raw_fd());
        let mut child = self.spawn_helper(spec.stdio, spec_read, status_write, helper_console)?;
        let console = console.map(|(ours, _theirs)| ours);

        // From here on the helper must be reaped whatever happens.
        let registration = match cancel.register(&child) {
            Ok(registration) => registration,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.into());
            }
        };
        // The helper reads the whole spec before anything else; a write error means it died,
        // which its exit status and status pipe explain better.
        let _ = spec_write.write_all(&spec_json);
        drop(spec_write);

        let terminal = self.receive_terminal(console);
        let pump_result = pump_output(&mut child, terminal, &registration.pidfd, on_output);
        if let Some(slot) = &self.terminal {
            slot.clear();
        }
        if pump_result.is_err() {
            // We can no longer deliver output; do not leave the container running unobserved.
            let _ = rustix::process::pidfd_send_signal(
                registration.pidfd.as_fd(),
                rustix::process::Signal::KILL,
            );
        }
        drop(registration);
        let status = child.wait()?;
        pump_result?;

        let mut message = String::new();
        std::fs::File::from(status_read).read_to_string(&mut message)?;
        if cancel.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        let message = message.trim();
        if !message.is_empty() {
            return Err(ExecError::Setup(message.to_string()));
        }
        Ok(RunOutcome {
            exit_code: exit_code_of(status)?,
            created: read_created(&state_dir.path().join(CREATED_FILE)),
        })
    }

    /// The master the run's container sent over `console`, put in the terminal slot; a copy to
    /// read its output from. None when the run failed before making one: its status says why.
    fn receive_terminal(&self, console: Option<OwnedFd>) -> Option<std::fs::File> {
        let master = crate::console::receive_master(&console?).ok().flatten()?;
        self.terminal.as_ref()?.install(master).try_clone().ok()
    }

    /// The helper's command, started from a read-only view of the program: a container must
    /// not be able to reopen the helper's executable for writing (CVE-2019-5736).
    fn helper_command(&self) -> std::io::Result<Command> {
        let program = crate::sealed_exe::sealed_program(&self.helper_program).map_err(|e| {
            let helper = self.helper_program.display();
            std::io::Error::new(e.kind(), format!("starting executor helper {helper}: {e}"))
        })?;
        let mut command = Command::new(crate::sealed_exe::exec_path(&program));
        command.arg0(&self.helper_program).args(&self.helper_args);
        Ok(command)
    }

    /// Starts the helper with the spec pipe's read end and the status pipe's write end
    /// at [`SPEC_FD`] and [`STATUS_FD`]; it dies with us (PDEATHSIG).
    fn spawn_helper(
        &self,
        stdio: Stdio,
        spec_read: OwnedFd,
        status_write: OwnedFd,
        console: Option<i32>,
    ) -> Result<Child, ExecError> {
        let mut command = self.helper_command()?;
        let (stdin, stdout, stderr) = match stdio {
            Stdio::Piped => (
                match &self.stdin {
                    Some(fd) => ProcessStdio::from(fd.try_clone()?),
                    None => ProcessStdio::null(),
                },
                ProcessStdio::piped(),
                ProcessStdio::piped(),
            ),
            // The container makes a terminal of its own the stdio of its processes.
            Stdio::Terminal => {
                if self.terminal.is_none() {
                    return Err(ExecError::Setup(
                        "a terminal run needs Executor::with_terminal".into(),
                    ));
                }
                (
                    ProcessStdio::null(),
                    ProcessStdio::null(),
                    ProcessStdio::null(),
                )
            }
            Stdio::Inherit => (
                match &self.stdin {
                    Some(fd) => ProcessStdio::from(fd.try_clone()?),
                    None => ProcessStdio::inherit(),
                },
                ProcessStdio::inherit(),
                ProcessStdio::inherit(),
            ),
            Stdio::Null => (
                ProcessStdio::null(),
                ProcessStdio::null(),
                ProcessStdio::null(),
            ),
        };
        command.stdin(stdin).stdout(stdout).stderr(stderr);
        let spec_raw = spec_read.as_raw_fd();
        let status_raw = status_write.as_raw_fd();
        let parent_pid = std::process::id() as libc::pid_t;
        // SAFETY: the closure only makes async-signal-safe system calls (dup2, prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(spec_raw, SPEC_FD) < 0 || libc::dup2(status_raw, STATUS_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = console {
                    if libc::dup2(fd, crate::console::CONSOLE_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // The container must not outlive us; PDEATHSIG survives the exec.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent_pid {
                    return Err(std::io::Error::other("executor caller exited"));
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "starting executor helper {}: {e}",
                    self.helper_program.display()
                ),
            )
        })?;
        // Our copies of the helper's ends must close: an extra write end would keep the
        // status pipe open.
        drop(spec_read);
        drop(status_write);
        Ok(child)
    }
}

/// The helper's exit code, or 128+signal if it was killed.
fn exit_code_of(status: std::process::ExitStatus) -> Result<i32, ExecError> {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(code),
        (None, Some(signal)) => Ok(128 + signal),
        (None, None) => Err(ExecError::Setup(format!(
            "executor helper ended with unknown status {status}"
        ))),
    }
}

/// Runs [`sweep_stale_state_dirs`] once per parent directory and process.
fn sweep_stale_state_dirs_once(parent: &std::path::Path) {
    static SWEPT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
    if !swept.iter().any(|p| p == parent) {
        if swept.is_empty() {
            crate::cgroup::sweep_stale_cgroups();
        }
        swept.push(parent.to_path_buf());
        sweep_stale_state_dirs(parent);
    }
}

/// Removes state directories whose creating process is gone (it was killed before it could
/// clean up). The rootfs was only mounted in the dead container's mount namespace; a
/// directory that still has something mounted on it is left alone rather than emptied.
pub fn sweep_stale_state_dirs(parent: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(STATE_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        if has_mount_below(&dir) {
            continue;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Whether a mount point lies inside `dir` (per the host's mount table).
fn has_mount_below(dir: &std::path::Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let dir = dir.to_string_lossy();
    table.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mount_point| mount_point.starts_with(dir.as_ref()))
    })
}

/// Reads stdout/stderr of the helper (if piped) and the terminal's master (if any) until
/// they close and the helper has exited. The caller keeps the terminal's slave open, so the
/// master never ends by itself: once the helper has exited, what is buffered is drained.
fn pump_output(
    child: &mut Child,
    terminal: Option<std::fs::File>,
    pidfd: &OwnedFd,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) -> std::io::Result<()> {
    let mut streams: [(Option<std::fs::File>, OutputStream); 3] = [
        (
            child.stdout.take().map(|o| OwnedFd::from(o).into()),
            OutputStream::Stdout,
        ),
        (
            child.stderr.take().map(|e| OwnedFd::from(e).into()),
            OutputStream::Stderr,
        ),
        (terminal, OutputStream::Stdout),
    ];
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(at) = exited_at {
            if streams.iter().all(|(s, _)| s.is_none()) || at.elapsed() > DRAIN_GRACE {
                return Ok(());
            }
        }
        let watch_pid = exited_at.is_none();
        let mut fds: Vec<PollFd> = streams
            .iter()
            .flat_map(|(s, _)| {
                s.as_ref()
                    .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            })
            .collect();
        if watch_pid {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
        }
        // After the exit no slave is open: the master reads what is left, then EIO.
        match poll(&mut fds, PollTimeout::from(250u16)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let mut ready = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()));
        let ready_streams: Vec<bool> = streams
            .iter()
            .map(|(s, _)| s.is_some() && ready.next().unwrap_or(false))
            .collect();
        if watch_pid && ready.next().unwrap_or(false) {
            exited_at = Some(Instant::now());
        }
        drop(fds);
        for ((pipe, stream), is_ready) in streams.iter_mut().zip(ready_streams) {
            if is_ready {
                read_chunk(pipe, *stream, &mut buf, on_output)?;
            }
        }
    }
}

/// Reads once from a ready pipe; closes it (sets `None`) at end of file, and a terminal's
/// master when no slave is open any more (EIO).
fn read_chunk<R: Read>(
    pipe: &mut Option<R>,
    stream: OutputStream,
    buf: &mut [u8],
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) -> std::io::Result<()> {
    let Some(reader) = pipe.as_mut() else {
        return Ok(());
    };
    match reader.read(buf) {
        Ok(0) => *pipe = None,
        Ok(n) => on_output(stream, &buf[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
        Err(e) if e.raw_os_error() == Some(libc::EIO) => *pipe = None,
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The console socket's two ends: ours, and the helper's (moved above the standard range so
/// the dup2 calls in the child cannot clobber it).
fn console_socket() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((ours, dup_above(theirs, 10)?))
}

fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn dup_above(fd: OwnedFd, min: i32) -> std::io::Result<OwnedFd> {
    Ok(
        nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min)).map(|raw| {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) returned a fresh descriptor that nobody else owns.
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
        })?,
    )
}

/// Cancels runs: cloneable, thread-safe; [`CancelToken::cancel`] kills every container currently
/// running with this token, and makes later runs with it fail at once.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    next_id: AtomicU64,
    /// pidfds of running helpers; signalling a pidfd cannot hit a recycled pid.
    running: Mutex<HashMap<u64, Arc<OwnedFd>>>,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Kills the running containers started with this token (their helpers get SIGKILL, which
    /// takes down each container's whole pid namespace) and marks the token cancelled.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for pidfd in running.values() {
            let _ =
                rustix::process::pidfd_send_signal(pidfd.as_fd(), rustix::process::Signal::KILL);
        }
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    fn register(&self, child: &Child) -> std::io::Result<Registration> {
        let pid = rustix::process::Pid::from_raw(child.id() as i32)
            .ok_or_else(|| std::io::Error::other("helper has an invalid pid"))?;
        let pidfd = Arc::new(rustix::process::pidfd_open(
            pid,
            rustix::process::PidfdFlags::empty(),
        )?);
        let id = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        self.inner
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id, pidfd.clone());
        // A cancel that ran before the insert did not see this helper.
        if self.is_cancelled() {
            let _ =
                rustix::process::pidfd_send_signal(pidfd.as_fd(), rustix::process::Signal::KILL);
        }
        Ok(Registration {
            token: self.clone(),
            id,
            pidfd,
        })
    }
}

/// Removes a helper from its token when the run ends.
struct Registration {
    token: CancelToken,
    id: u64,
    pidfd: Arc<OwnedFd>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.token
            .inner
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.id);
    }
}

/// This binary, to re-execute: `/proc/self/exe` names the running image even after the file on
/// disk was replaced (an upgrade, a relink), where its path would start another binary or none.
pub fn self_exe() -> std::io::Result<PathBuf> {
    let running = Path::new("/proc/self/exe");
    if running.exists() {
        Ok(running.to_path_buf())
    } else {
        std::env::current_exe()
    }
}
