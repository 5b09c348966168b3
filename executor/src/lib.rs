//! Runs one process in a rootfs, in its own namespaces.
//!
//! The builder is a multi-threaded tokio program, so it never forks and does namespace work
//! itself. [`Executor::run`] re-executes the builder binary with [`HELPER_ARG`] as its first
//! argument; that single-threaded helper ([`helper_main`]) unshares a pid namespace, forks the
//! container's PID 1, which sets up mounts, hostname, user and environment, pivots into the
//! rootfs and execs the requested program. With [`Isolation::Chroot`] (containers that may
//! neither mount nor unshare) the helper only chroots into a rootfs directory (`chroot.rs`).
//!
//! Protocol between caller and helper: fd 3 of the helper carries the JSON [`ExecSpec`]; fd 4 is
//! a close-on-exec status pipe that stays empty when the program was exec'd, and otherwise holds
//! a setup error message. The helper exits with the program's exit status (128+signal when it was
//! killed by a signal).

mod beneath;
mod caps;
mod cgroup;
mod chroot;
mod console;
mod devices_bpf;
mod emulation;
mod enter;
mod helper;
mod mounts;
mod paths;
mod rlimits;
mod run;
mod sealed_exe;
mod seccomp;
mod seccomp_cache;
mod stubs;
mod user;
mod usernet;
pub mod userns;
mod userns_pause;

use serde::{Deserialize, Serialize};

pub use caps::{resolve as resolve_caps, CapSet};
pub use cgroup::{
    attach_device_filter, device_filters_attached, sweep_stale_cgroups, CgroupSpec,
    DEVICE_FILTER_ENV,
};
pub use chroot::namespaces_unavailable;
pub use console::TerminalSlot;
pub use helper::helper_main;
pub use paths::resolve_in_root;
pub use run::{self_exe, sweep_stale_state_dirs, CancelToken, Executor, RunOutcome};
pub use seccomp::DOCKER_DEFAULT_PROFILE;
pub use seccomp_cache::{
    cache_dir as seccomp_cache_dir, dir_in_store as seccomp_cache_in_store,
    set_cache_dir as set_seccomp_cache_dir,
};
pub use stubs::{remove_stubs, CreatedPath};
pub use usernet::USERNET_ENV;

/// First argument that makes the builder binary act as the executor helper.
pub const HELPER_ARG: &str = "__executor-helper";

/// How a run is separated from the caller.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Isolation {
    /// Namespaces, mounts and Docker's confinement (an OCI runtime's isolation).
    #[default]
    Oci,
    /// Only chroot into a rootfs directory, in the caller's namespaces: for containers that
    /// may neither mount nor unshare (unprivileged CI jobs). Not isolated from the caller.
    Chroot,
}

static DEFAULT_ISOLATION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets the isolation of executors made from now on in this process.
pub fn set_default_isolation(isolation: Isolation) {
    DEFAULT_ISOLATION.store(
        isolation == Isolation::Chroot,
        std::sync::atomic::Ordering::SeqCst,
    );
}

/// The isolation new executors get (see [`set_default_isolation`]).
pub fn default_isolation() -> Isolation {
    if DEFAULT_ISOLATION.load(std::sync::atomic::Ordering::SeqCst) {
        Isolation::Chroot
    } else {
        Isolation::Oci
    }
}

/// Default hostname inside the container, as in BuildKit.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// `PATH` set when the spec's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One mount, in the style of the OCI runtime spec.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Mount {
    /// `"bind"`, `"overlay"`, `"tmpfs"`, `"proc"`, or any filesystem type the kernel knows.
    pub fstype: String,
    /// Host path for binds; a free-form name (e.g. `"overlay"`) otherwise.
    pub source: String,
    /// Absolute path inside the container; `"/"` for rootfs mounts.
    pub target: String,
    /// Mount flags (`"ro"`, `"rbind"`, `"nosuid"`, ...) and filesystem data
    /// (`"lowerdir=..."`, `"size=..."`, `"mode=..."`).
    pub options: Vec<String>,
}

/// Network mode of the container.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub enum Network {
    /// Share the host's network namespace; in rootless mode (see [`userns`]), where that
    /// namespace is not ours, a namespace of its own with a user-mode network instead.
    #[default]
    Host,
    /// A fresh network namespace with only a loopback interface (down).
    None,
}

/// Where the container's standard streams go.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub enum Stdio {
    /// stdin is `/dev/null`; stdout and stderr are delivered to the `on_output` callback.
    #[default]
    Piped,
    /// All three streams are inherited from the caller.
    Inherit,
    /// All three streams are `/dev/null`.
    Null,
    /// All three streams are the slave of a terminal the container allocates in its own devpts
    /// (see [`Executor::with_terminal`]); the process leads a new session with it as the
    /// controlling terminal, and what the master reads is delivered to `on_output` as stdout.
    Terminal,
}

/// Everything needed to run one process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Mounted in order at the new root (target `"/"`), e.g. one overlay or one bind mount.
    pub rootfs: Vec<Mount>,
    /// Extra mounts with targets inside the container, mounted in order after `/proc`, `/dev`,
    /// `/sys`, `/etc/hosts` and `/etc/resolv.conf`. Missing targets are created.
    pub mounts: Vec<Mount>,
    /// The program and its arguments; `args[0]` is looked up in the container's `PATH`.
    pub args: Vec<String>,
    /// The environment, exactly as given (`"K=V"`), plus `PATH` and `HOME` defaults if absent.
    pub env: Vec<String>,
    /// Working directory inside the container (empty means `"/"`); created if missing.
    pub cwd: String,
    /// `""`, `"user"`, `"uid"`, `"user:group"`, `"uid:gid"`; names are resolved in the rootfs.
    pub user: String,
    /// Empty means [`DEFAULT_HOSTNAME`].
    pub hostname: String,
    /// Network namespace mode.
    pub network: Network,
    /// Standard stream handling.
    pub stdio: Stdio,
    /// Remount the rootfs read-only (the mounts on top of it keep their own modes).
    pub readonly_rootfs: bool,
    /// Confinement: capabilities, seccomp, no_new_privs, privileged mode.
    #[serde(default)]
    pub security: Security,
    /// Resource limits (a per-run cgroup).
    #[serde(default)]
    pub resources: CgroupSpec,
    /// Cgroup directories made by the caller (e.g. a runtime's per-container cgroups), joined
    /// after the run's own, before the container's cgroup namespace is created.
    #[serde(default)]
    pub cgroup_paths: Vec<std::path::PathBuf>,
    /// Lines added to the container's `/etc/hosts`, as (name, address).
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// Resource limits set before the program starts.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Size of `/dev/shm` in bytes; `None` means 64 MiB, as docker.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// Run inside the running container whose PID 1 has this host pid (its namespaces and
    /// root) instead of creating one; `rootfs`, `mounts`, `hostname` and `network` are unused.
    #[serde(default)]
    pub enter_pid: Option<u32>,
    /// Join this existing network namespace (e.g. a bind-mounted `/proc/PID/ns/net`) instead
    /// of `network`'s; the caller set up its interfaces.
    #[serde(default)]
    pub netns: Option<std::path::PathBuf>,
    /// A caller-owned file bound (read-only) at `/etc/hosts` instead of a generated one; the
    /// caller may rewrite it in place while the container runs.
    #[serde(default)]
    pub hosts_file: Option<std::path::PathBuf>,
    /// Likewise for `/etc/resolv.conf`.
    #[serde(default)]
    pub resolv_conf: Option<std::path::PathBuf>,
}

/// The seccomp filter of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub enum Seccomp {
    /// Docker's default profile ([`DOCKER_DEFAULT_PROFILE`]).
    #[default]
    Default,
    /// No filter (`--security-opt seccomp=unconfined`).
    Unconfined,
    /// A Docker-format JSON profile (`--security-opt seccomp=FILE`, its contents).
    Profile(String),
}

/// How a run is confined. The default is Docker's: its 14 capabilities, its seccomp profile,
/// masked and read-only paths, a device allow-list, a private cgroup namespace.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Security {
    /// Every capability, no seccomp filter, no masked paths, no device list, writable `/sys`
    /// (`RUN --security=insecure`, `run --privileged`).
    pub privileged: bool,
    /// Capabilities added to Docker's default (`NET_ADMIN`, `CAP_NET_ADMIN` or `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities dropped from Docker's default (applied before `cap_add`).
    pub cap_drop: Vec<String>,
    pub seccomp: Seccomp,
    /// Set no_new_privs: setuid binaries and file capabilities grant nothing.
    pub no_new_privileges: bool,
}

/// One resource limit by docker's name (`nofile`, `nproc`, `core`, ...); -1 is unlimited.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Rlimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Why a run did not produce an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The container could not be set up or the program could not be started
    /// (e.g. `exec: "foo": executable file not found in $PATH`, a failed mount, unknown user).
    #[error("{0}")]
    Setup(String),
    /// Talking to the helper process failed.
    #[error("executor I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The run was cancelled through its [`CancelToken`]; the container was killed.
    #[error("cancelled")]
    Cancelled,
}

/// Which stream a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// The host's address as docker's `host-gateway` means it for a container sharing the
/// host's network: the source address of the default route (no packet is sent), or
/// 127.0.0.1 when there is no default route.
pub fn host_gateway_ip() -> std::net::IpAddr {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let Some(gateway) = default_gateway() else {
        return loopback;
    };
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect((gateway, 9)).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(loopback)
}

/// The IPv4 gateway of the default route, from `/proc/net/route`.
fn default_gateway() -> Option<std::net::Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"00000000") {
            return None;
        }
        // The kernel prints the address in host byte order.
        let raw = u32::from_str_radix(fields.get(2)?, 16).ok()?;
        Some(std::net::Ipv4Addr::from(raw.to_le_bytes()))
    })
}
