//! Helper side: the re-executed, single-threaded process that creates the namespaces and
//! becomes the container.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{open, FcntlArg, FdFlag, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Uid};

use crate::beneath::RootDir;
use crate::caps::CapSet;
use crate::mounts::{mount_at, remount_bind};
use crate::paths::resolve_in_root;
use crate::run::{HelperRequest, SPEC_FD, STATUS_FD};
use crate::stubs::Tracker;
use crate::user::resolve_user;
use crate::{ExecSpec, Network, Seccomp, DEFAULT_HOSTNAME, DEFAULT_PATH};

/// Exit code of the helper when it could not even read its protocol descriptors.
const PROTOCOL_ERROR_EXIT: i32 = 125;

/// Device nodes bind-mounted from the host into the container's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Paths hidden from the container, as in containerd's default spec (which BuildKit uses).
const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths made read-only in the container, as in containerd's default spec.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Entry point of the helper process; the binary calls this when its first argument is
/// [`crate::HELPER_ARG`], before starting any thread. Never returns.
///
/// Expects the spec on fd 3 and the status pipe on fd 4 (set up by [`crate::Executor::run`]).
pub fn helper_main() -> ! {
    // SAFETY: F_GETFD on a raw number only queries the descriptor table.
    if unsafe { libc::fcntl(SPEC_FD, libc::F_GETFD) } < 0
        || unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } < 0
    {
        eprintln!("executor helper: must be started by the executor (fds 3 and 4 missing)");
        std::process::exit(PROTOCOL_ERROR_EXIT);
    }
    // SAFETY: by protocol the caller handed us exactly these two descriptors, owned by nobody else.
    let (spec_fd, status_fd) = unsafe {
        (
            OwnedFd::from_raw_fd(SPEC_FD),
            OwnedFd::from_raw_fd(STATUS_FD),
        )
    };
    let code = match run_helper(spec_fd, &status_fd) {
        Ok(code) => code,
        Err(e) => {
            report(&status_fd, &e);
            1
        }
    };
    std::process::exit(code)
}

/// Writes a setup error to the status pipe, where the caller picks it up.
pub(crate) fn report(status_fd: &OwnedFd, error: &anyhow::Error) {
    let message = format!("{error:#}");
    let mut remaining = message.as_bytes();
    while !remaining.is_empty() {
        match nix::unistd::write(status_fd, remaining) {
            Ok(0) => break,
            Ok(n) => remaining = &remaining[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                // The caller is gone or the pipe is broken; stderr is all that is left.
                eprintln!("{message}");
                break;
            }
        }
    }
}

/// Paths in the helper's private state directory on the host.
struct StatePaths {
    /// The state directory itself (staging points for mounts live there).
    state: PathBuf,
    rootfs: PathBuf,
    hosts: PathBuf,
    resolv_conf: PathBuf,
    /// Where the paths created in the rootfs are recorded.
    created: PathBuf,
    /// The run's cgroups, which the container joins.
    cgroups: Vec<PathBuf>,
    /// The window size of the terminal of a [`crate::Stdio::Terminal`] run.
    console_size: (u16, u16),
}

fn run_helper(spec_fd: OwnedFd, status_fd: &OwnedFd) -> Result<i32> {
    nix::fcntl::fcntl(status_fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .context("marking the status pipe close-on-exec")?;
    let mut request_json = Vec::new();
    File::from(spec_fd)
        .read_to_end(&mut request_json)
        .context("reading the exec spec")?;
    let request: HelperRequest =
        serde_json::from_slice(&request_json).context("parsing the exec spec")?;
    crate::seccomp_cache::set_cache_dir(request.seccomp_cache.clone());
    let spec = request.spec;
    let console_size = request.console_size.unwrap_or((24, 80));
    if request.isolation == crate::Isolation::Chroot {
        return crate::chroot::run_chrooted(&spec, &request.state_dir, status_fd, console_size);
    }
    if let Some(pid) = spec.enter_pid {
        // The run's own cgroups hold the device allow-list: an exec'd process is kept to it.
        crate::cgroup::join_all(&request.cgroups, &spec.cgroup_paths)?;
        return crate::enter::enter_and_run(&spec, pid, status_fd, console_size);
    }
    let paths = StatePaths {
        state: request.state_dir.clone(),
        rootfs: request.state_dir.join("rootfs"),
        hosts: request.state_dir.join("hosts"),
        resolv_conf: request.state_dir.join("resolv.conf"),
        created: request.state_dir.join(crate::run::CREATED_FILE),
        cgroups: request.cgroups,
        console_size,
    };
    std::fs::create_dir(&paths.rootfs).context("creating the rootfs mount point")?;
    // Started before the pid namespace exists, so the network program stays outside it.
    let network = crate::usernet::connect(&spec, &paths.state.join("network.log"))
        .context("rootless network")?;
    let mut extra_hosts = spec.extra_hosts.clone();
    let mut resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    if let Some(net) = &network {
        extra_hosts.push((crate::usernet::HOST_NAME.into(), net.backend.host_address()));
        resolv = net.backend.resolv_conf(resolv);
    }
    let hostname = hostname_of(&spec);
    std::fs::write(&paths.hosts, hosts_file(hostname, &extra_hosts))
        .context("writing hosts file")?;
    std::fs::write(&paths.resolv_conf, resolv).context("writing resolv.conf")?;
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| {
        let hint = match e {
            nix::errno::Errno::EPERM => " (namespaces are not permitted here: in a container without privileges, build with --isolation=chroot)",
            _ => "",
        };
        anyhow!("creating a pid namespace: {e}{hint}")
    })?;
    fork_and_wait("the container process", status_fd, || {
        container_init(&spec, &paths, status_fd)
    })
    .map(|(code, _)| code)
}

/// Forks; the child runs `body` (which execs or fails: its error goes to `status_fd`), the
/// parent reaps it and returns its exit code (128+signal when killed) and its pid.
pub(crate) fn fork_and_wait(
    what: &str,
    status_fd: &OwnedFd,
    body: impl FnOnce() -> Result<Infallible>,
) -> Result<(i32, nix::unistd::Pid)> {
    // SAFETY: the helper is single-threaded (the binary calls helper_main before any thread).
    match unsafe { fork() }.with_context(|| format!("forking {what}"))? {
        ForkResult::Child => {
            let error = match body() {
                Ok(never) => match never {},
                Err(e) => e,
            };
            report(status_fd, &error);
            // SAFETY: _exit skips destructors and buffered output, which belong to the parent.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok((code, child)),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Ok((128 + signal as i32, child)),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(anyhow!(e).context(format!("waiting for {what}"))),
            }
        },
    }
}

/// The container's `/etc/hosts`: loopback names, then the extra entries in order.
pub(crate) fn hosts_file(hostname: &str, extra: &[(String, String)]) -> String {
    let mut hosts =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, address) in extra {
        hosts.push_str(&format!("{address}\t{name}\n"));
    }
    hosts
}

pub(crate) fn hostname_of(spec: &ExecSpec) -> &str {
    if spec.hostname.is_empty() {
        DEFAULT_HOSTNAME
    } else {
        &spec.hostname
    }
}

/// Runs in the container's PID 1: sets everything up and execs the program.
fn container_init(spec: &ExecSpec, paths: &StatePaths, status_fd: &OwnedFd) -> Result<Infallible> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("setting the parent-death signal")?;
    let terminal = spec.stdio == crate::Stdio::Terminal;
    if terminal {
        nix::unistd::setsid().context("starting the container's session")?;
    }
    // Nothing the caller leaked may reach the container (a host directory's descriptor would
    // be a way out through /proc/self/fd, CVE-2024-21626); the console socket goes once used.
    let console = if terminal {
        crate::console::CONSOLE_FD
    } else {
        status_fd.as_raw_fd()
    };
    close_inherited_fds(&[status_fd.as_raw_fd(), console])?;
    let confinement = Confinement::of(spec)?;
    crate::cgroup::join_all(&paths.cgroups, &spec.cgroup_paths)?;
    let mut namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if spec.network == Network::None {
        namespaces |= CloneFlags::CLONE_NEWNET;
    }
    unshare(namespaces).context("creating namespaces")?;
    if let Some(path) = &spec.netns {
        crate::enter::join_netns(path)?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private")?;

    let root = paths.rootfs.as_path();
    if spec.rootfs.is_empty() {
        bail!("no rootfs mounts given");
    }
    for m in &spec.rootfs {
        mount_at(m, root).context("mounting the rootfs")?;
    }
    let privileged = spec.security.privileged;
    if !privileged {
        // Device nodes a step makes (mknod is allowed, as in docker) cannot be opened.
        remount_bind(root, MsFlags::MS_NODEV).context("making the rootfs nodev")?;
    }
    let mut tracker = Tracker::new(root, Some(&paths.created));
    setup_proc(root, &mut tracker)?;
    setup_dev(root, spec.shm_size, &mut tracker, privileged)?;
    if terminal {
        take_console(root, paths.console_size)?;
    }
    setup_sys(root, &mut tracker, privileged)?;
    if !privileged {
        mask_paths(root)?;
    }
    let hosts = spec.hosts_file.as_deref().unwrap_or(&paths.hosts);
    bind_etc_file(root, hosts, "/etc/hosts", &mut tracker)?;
    let resolv_conf = spec.resolv_conf.as_deref().unwrap_or(&paths.resolv_conf);
    bind_etc_file(root, resolv_conf, "/etc/resolv.conf", &mut tracker)?;
    let root_dir = RootDir::open(root).context("opening the rootfs")?;
    for m in &spec.mounts {
        add_mount(m, &root_dir, paths, privileged, &mut tracker)
            .with_context(|| format!("mounting {}", m.target))?;
    }
    nix::unistd::sethostname(hostname_of(spec)).context("setting the hostname")?;
    if spec.readonly_rootfs {
        remount_bind(root, MsFlags::MS_RDONLY).context("making the rootfs read-only")?;
    }
    pivot_into(root)?;
    tracker.set_root(Path::new("/"));

    let (user, cwd) = user_and_workdir(spec)?;
    tracker
        .create_dir_all(Path::new(cwd))
        .with_context(|| format!("creating working directory {cwd}"))?;
    drop(tracker);
    exec_program(spec, cwd, &user, confinement)
}

/// The spec's user, resolved against the container's own `/etc/passwd` and `/etc/group` (so
/// call it after entering the container's root), and its working directory (`/` when unset).
pub(crate) fn user_and_workdir(spec: &ExecSpec) -> Result<(crate::user::ExecUser, &str)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    let group = std::fs::read_to_string("/etc/group").ok();
    let user =
        resolve_user(&spec.user, passwd.as_deref(), group.as_deref()).map_err(|e| anyhow!(e))?;
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    Ok((user, cwd))
}

/// Enters the working directory, sets the rlimits, locks the process down and execs the
/// program: the last steps of a container's PID 1 and of a process exec'd into it.
pub(crate) fn exec_program(
    spec: &ExecSpec,
    cwd: &str,
    user: &crate::user::ExecUser,
    confinement: Confinement,
) -> Result<Infallible> {
    enter_workdir(cwd)?;
    // Before dropping privileges: raising a hard limit needs CAP_SYS_RESOURCE.
    crate::rlimits::apply(&spec.rlimits)?;
    let env = build_env(&spec.env, user.home.as_deref());
    let program = find_program(&spec.args[0], &env)?;
    let args = to_cstrings(&spec.args).context("invalid argument")?;
    let env = env_cstrings(&env)?;
    if spec.stdio == crate::Stdio::Terminal {
        // The terminal belongs to the user, as runc's console; best effort, as in runc's
        // rootless mode where the uid may be unmapped.
        // SAFETY: fchown on fd 0 takes no pointers.
        let _ = unsafe { libc::fchown(0, user.uid, u32::MAX) };
    }
    confinement.lock_down(user)?;
    reset_signals();
    let program_c = CString::new(program.as_os_str().as_bytes())
        .with_context(|| format!("invalid program path {}", program.display()))?;
    let Err(err) = nix::unistd::execve(&program_c, &args, &env);
    let hint = match err {
        nix::errno::Errno::ENOEXEC => crate::emulation::enoexec_hint(&program),
        _ => String::new(),
    };
    Err(anyhow!("exec {}: {err}{hint}", spec.args[0]))
}

fn setup_proc(root: &Path, tracker: &mut Tracker) -> Result<()> {
    let target = ensure_dir_in_root(root, "/proc", tracker)?;
    mount(
        Some("proc"),
        &target,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context("mounting /proc")
}

/// Makes a terminal in the devpts instance setup_dev just mounted (before any of the spec's
/// mounts) this process's, sends its master to the caller and binds it at `/dev/console`.
fn take_console(root: &Path, size: (u16, u16)) -> Result<()> {
    let number = crate::console::allocate(&root.join("dev/pts/ptmx"), size)?;
    bind_console(root, number)
}

/// Binds the terminal (`/dev/pts/NUMBER` of the container's devpts) at `/dev/console`, as
/// runc does, so a program that writes to the console reaches it.
fn bind_console(root: &Path, number: u32) -> Result<()> {
    // /dev is the tmpfs setup_dev just mounted: nothing in the image can redirect this path.
    let target = root.join("dev/console");
    File::create(&target).context("creating /dev/console")?;
    let slave = root.join(format!("dev/pts/{number}"));
    mount(
        Some(&slave),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context("binding the terminal at /dev/console")
}

fn setup_dev(
    root: &Path,
    shm_size: Option<u64>,
    tracker: &mut Tracker,
    privileged: bool,
) -> Result<()> {
    let dev = ensure_dir_in_root(root, "/dev", tracker)?;
    // The bound device nodes are mounts of their own; nodes made in the tmpfs stay unusable.
    let nodev = if privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_NODEV
    };
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | nodev,
        Some("mode=755,size=65536k"),
    )
    .context("mounting /dev")?;
    for device in DEVICES {
        let target = dev.join(device);
        File::create(&target).with_context(|| format!("creating /dev/{device}"))?;
        let host = format!("/dev/{device}");
        mount(
            Some(host.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {host}"))?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).context("creating /dev/pts")?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .context("mounting /dev/pts")?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).context("creating /dev/shm")?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={}", shm_size.unwrap_or(64 << 20)).as_str()),
    )
    .context("mounting /dev/shm")?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        symlink(target, dev.join(link)).with_context(|| format!("creating /dev/{link}"))?;
    }
    Ok(())
}

fn setup_sys(root: &Path, tracker: &mut Tracker, privileged: bool) -> Result<()> {
    let target = ensure_dir_in_root(root, "/sys", tracker)?;
    let ro = if privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    let flags = ro | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if mount(Some("sysfs"), &target, Some("sysfs"), flags, None::<&str>).is_ok() {
        return crate::cgroup::mount_cgroupfs(&target.join("fs/cgroup"), privileged);
    }
    // A fresh sysfs can be refused (e.g. sharing a network namespace we do not own);
    // a read-only bind of the host's /sys is the fallback runc uses too.
    mount(
        Some("/sys"),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("bind-mounting /sys")?;
    remount_bind(&target, MsFlags::MS_RDONLY).context("making /sys read-only")
}

fn mask_paths(root: &Path) -> Result<()> {
    for path in MASKED_PATHS {
        let target = root.join(path.trim_start_matches('/'));
        let Ok(meta) = std::fs::symlink_metadata(&target) else {
            continue;
        };
        let result = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else {
            mount(
                Some("/dev/null"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.with_context(|| format!("masking {path}"))?;
    }
    for path in READONLY_PATHS {
        let target = root.join(path.trim_start_matches('/'));
        if !target.exists() {
            continue;
        }
        mount(
            Some(&target),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {path}"))?;
        remount_bind(&target, MsFlags::MS_RDONLY)
            .with_context(|| format!("making {path} read-only"))?;
    }
    Ok(())
}

/// What locks the process down just before exec, prepared (profile compiled) up front so
/// that a bad profile or capability name is a setup error before anything is mounted.
pub(crate) struct Confinement {
    caps: CapSet,
    /// The seccomp BPF program (compiled or from the cache).
    filter: Option<Vec<u8>>,
    no_new_privs: bool,
}

impl Confinement {
    pub(crate) fn of(spec: &ExecSpec) -> Result<Confinement> {
        let security = &spec.security;
        let caps =
            crate::caps::resolve(security.privileged, &security.cap_add, &security.cap_drop)?;
        let profile = match &security.seccomp {
            _ if security.privileged => None,
            Seccomp::Unconfined => None,
            Seccomp::Default => Some(crate::seccomp::DOCKER_DEFAULT_PROFILE),
            Seccomp::Profile(json) => Some(json.as_str()),
        };
        let target = crate::seccomp::Target::native(caps);
        let filter = profile
            .map(|json| crate::seccomp_cache::program_for(json, &target))
            .transpose()?;
        Ok(Confinement {
            caps,
            filter,
            no_new_privs: security.no_new_privileges,
        })
    }

    /// For chroot isolation: no `SYS_CHROOT` (a second chroot is the classic way out of one)
    /// and no filter of our own (an unprivileged container already has Docker's, and loading
    /// one there would need no_new_privs, which breaks setuid programs in RUN).
    pub(crate) fn for_chroot(mut self) -> Confinement {
        const CAP_SYS_CHROOT: u32 = 18;
        self.caps.0 &= !(1u64 << CAP_SYS_CHROOT);
        self.filter = None;
        self
    }

    /// Bounding set, seccomp (loaded while CAP_SYS_ADMIN is still held, as runc does when
    /// no_new_privs is off), user and groups, then the capability sets the program keeps.
    pub(crate) fn lock_down(self, user: &crate::user::ExecUser) -> Result<()> {
        // SAFETY: close_range only marks descriptors close-on-exec.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if self.no_new_privs {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
                return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
            }
        }
        crate::caps::drop_bounding(self.caps)?;
        if let Some(program) = &self.filter {
            crate::seccomp_cache::load(program)?;
        }
        let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).context("setting supplementary groups")?;
        nix::unistd::setgid(Gid::from_raw(user.gid))
            .with_context(|| format!("setting gid {}", user.gid))?;
        nix::unistd::setuid(Uid::from_raw(user.uid))
            .with_context(|| format!("setting uid {}", user.uid))?;
        crate::caps::apply(self.caps, user.uid)?;
        // Changing credentials clears the parent-death signal.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("setting the parent-death signal")
    }
}

/// Closes every descriptor from 3 up except `keep` (the status pipe).
pub(crate) fn close_inherited_fds(keep: &[i32]) -> Result<()> {
    let mut keep: Vec<u32> = keep.iter().map(|&fd| fd as u32).collect();
    keep.sort_unstable();
    let mut first = 3u32;
    let mut ranges = Vec::new();
    for fd in keep.into_iter().filter(|&fd| fd >= 3) {
        ranges.push((first, fd.saturating_sub(1)));
        first = fd + 1;
    }
    ranges.push((first, u32::MAX));
    for (first, last) in ranges {
        if first > last {
            continue;
        }
        // SAFETY: closes descriptors this process owns and no Rust object refers to.
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } < 0 {
            return Err(std::io::Error::last_os_error()).context("closing inherited descriptors");
        }
    }
    Ok(())
}

/// Enters the working directory and checks that it lies inside the new root: a directory
/// reached through a leaked descriptor would show as unreachable (CVE-2024-21626).
fn enter_workdir(cwd: &str) -> Result<()> {
    nix::unistd::chdir(cwd).with_context(|| format!("changing to working directory {cwd}"))?;
    match nix::unistd::getcwd() {
        Ok(dir) if dir.is_absolute() => Ok(()),
        _ => bail!("working directory {cwd} is outside the container's root filesystem"),
    }
}

/// Bind-mounts a helper-owned file read-only over `container_path`, creating an empty target if
/// the image has none. A read-only rootfs without the file just goes without it.
fn bind_etc_file(
    root: &Path,
    source: &Path,
    container_path: &str,
    tracker: &mut Tracker,
) -> Result<()> {
    let target = resolve_in_root(root, container_path)
        .with_context(|| format!("resolving {container_path}"))?;
    if let Some(parent) = target.parent() {
        if let Err(e) = tracker.create_dir_all(parent) {
            if e.raw_os_error() == Some(libc::EROFS) {
                return Ok(());
            }
            return Err(e).with_context(|| format!("creating the parent of {container_path}"));
        }
    }
    if !target.exists() {
        match tracker.create_file(&target) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("creating {container_path}")),
        }
    }
    mount(
        Some(source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {container_path}"))?;
    remount_bind(&target, MsFlags::MS_RDONLY)
        .with_context(|| format!("making {container_path} read-only"))
}

/// Mounts `m` on a helper-owned staging point (where flags are applied by a path nobody else
/// can change), then moves it onto its target, opened inside the root by descriptor. The
/// target is a directory, or an empty file when binding a non-directory (a file, a socket).
fn add_mount(
    m: &crate::Mount,
    root: &RootDir,
    paths: &StatePaths,
    privileged: bool,
    tracker: &mut Tracker,
) -> Result<()> {
    let is_bind = m.fstype == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
    let source_is_dir = !is_bind
        || std::fs::metadata(&m.source)
            .with_context(|| format!("bind source {}", m.source))?
            .is_dir();
    let target = root
        .open_creating(&m.target, source_is_dir, tracker)
        .context("creating the mount target")?;
    let stage = paths.state.join(if source_is_dir {
        "stage-dir"
    } else {
        "stage-file"
    });
    if source_is_dir {
        std::fs::create_dir_all(&stage).context("creating the staging directory")?;
    } else {
        std::fs::write(&stage, "").context("creating the staging file")?;
    }
    mount_at(m, &stage)?;
    if !privileged {
        remount_bind(&stage, MsFlags::MS_NODEV).context("making the mount nodev")?;
    }
    crate::beneath::move_mount_to(&stage, &target).context("moving the mount onto its target")
}

fn ensure_dir_in_root(root: &Path, container_path: &str, tracker: &mut Tracker) -> Result<PathBuf> {
    let target = resolve_in_root(root, container_path)
        .with_context(|| format!("resolving {container_path}"))?;
    tracker
        .create_dir_all(&target)
        .with_context(|| format!("creating {container_path}"))?;
    Ok(target)
}

/// Makes `root` the root directory and detaches the old root (runc's `pivot_root(".", ".")`).
fn pivot_into(root: &Path) -> Result<()> {
    let old_root = open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("opening the old root")?;
    let new_root = open(
        root,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("opening the new root")?;
    nix::unistd::fchdir(&new_root).context("entering the new root")?;
    nix::unistd::pivot_root(".", ".").context("pivot_root")?;
    // The old root is now stacked on "."; detach it so the host's tree is unreachable.
    nix::unistd::fchdir(&old_root).context("entering the old root")?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("making the old root a slave")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
    nix::unistd::chdir("/").context("entering /")?;
    Ok(())
}

/// The spec's environment plus `PATH` and `HOME` defaults when absent.
fn build_env(env: &[String], home: Option<&str>) -> Vec<String> {
    let mut env = env.to_vec();
    let has = |env: &[String], key: &str| env.iter().any(|e| e.split('=').next() == Some(key));
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", home.unwrap_or("/")));
    }
    env
}

/// Finds `name` like `exec.LookPath` with the container's `PATH` (the last `PATH=` wins).
fn find_program(name: &str, env: &[String]) -> Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    if !name.is_empty() {
        for dir in path.split(':') {
            let dir = if dir.is_empty() { "." } else { dir };
            let candidate = Path::new(dir).join(name);
            let Ok(meta) = std::fs::metadata(&candidate) else {
                continue;
            };
            if meta.is_file()
                && meta.permissions().mode() & 0o111 != 0
                && nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            {
                return Ok(candidate);
            }
        }
    }
    bail!("exec: {name:?}: executable file not found in $PATH")
}

/// Like [`to_cstrings`], but an error names only the variable: values may be secrets.
fn env_cstrings(env: &[String]) -> Result<Vec<CString>> {
    env.iter()
        .map(|kv| {
            CString::new(kv.as_bytes()).map_err(|_| {
                let name = kv.split('=').next().unwrap_or("");
                anyhow!("invalid environment variable {name:?}: its value contains a NUL byte")
            })
        })
        .collect()
}

fn to_cstrings(items: &[String]) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).with_context(|| format!("{s:?} contains a NUL byte")))
        .collect()
}

/// Restores default dispositions and an empty mask: ignored signals survive exec, and Rust
/// ignores SIGPIPE, which would break pipelines like `yes | head`.
fn reset_signals() {
    // SAFETY: plain signal-disposition and mask syscalls in a single-threaded process.
    unsafe {
        for signal in 1..libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_gets_path_and_home_defaults_only_when_absent() {
        let env = build_env(&["A=1".into()], Some("/home/app"));
        assert_eq!(
            env,
            vec![
                "A=1".to_string(),
                format!("PATH={DEFAULT_PATH}"),
                "HOME=/home/app".to_string()
            ]
        );
        let env = build_env(&["PATH=/x".into(), "HOME=/h".into()], None);
        assert_eq!(env, vec!["PATH=/x".to_string(), "HOME=/h".to_string()]);
        assert_eq!(build_env(&[], None)[1], "HOME=/");
    }

    #[test]
    fn missing_program_error_names_it() {
        let err = find_program("definitely-not-here", &["PATH=/nonexistent".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "exec: \"definitely-not-here\": executable file not found in $PATH"
        );
        assert_eq!(
            find_program("sh", &["PATH=/nonexistent:/bin".into()]).unwrap(),
            PathBuf::from("/bin/sh")
        );
    }
}
