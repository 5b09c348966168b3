//! Containers without a daemon: state in `ROOT/containers/ID`, one detached monitor process
//! per running container (stdio, json-file logs, exit status, restart policy), and the
//! lifecycle verbs (`create`, `start`, `stop`, `kill`, `rm`, `wait`) plus `ps`/`inspect`/`logs`.
//!
//! The monitor is this program re-executed with [`MONITOR_ARG`] as its first argument; the
//! binary calls [`monitor_main`] before starting any thread.

mod attach;
mod cgroups;
pub mod command;
mod connect;
mod copy;
pub mod detach_keys;
mod endpoints;
mod exec;
mod health;
mod init;
mod lifecycle;
mod logs;
mod monitor;
mod names;
mod network;
mod networks;
mod ports;
mod procs;
mod run_flags;
mod spec;
mod store;
pub mod template;
mod time;
mod view;
mod volumes;

pub use attach::{attach, attach_running, attach_until_detached, foreground_stdin, AttachOptions};
pub use cgroups::{parse_bytes, Limits};
pub use connect::{connect, disconnect, network_members, ConnectOptions};
pub use copy::{copy_in, copy_out};
pub use endpoints::{check_static_ip, Attached, Endpoint};
pub use exec::{compose_exec_stdio, exec, exec_to_stdio, ExecRequest};
pub use health::{parse_duration, HealthConfig};
pub use init::{init_binary, init_mount, INIT_PATH};
pub use lifecycle::{
    create, kill, remove, remove_once_stopped, restart, start, start_restartable, stop, wait_exit,
    CreateRequest, ExitError,
};
pub use logs::{follow_logs, LogOptions, LogsQuery};
pub use monitor::monitor_main;
pub use network::{PortMapping, BRIDGE};
pub use networks::{NetworkRecord, NetworkStore};
pub use procs::{container_processes, usage, ProcessInfo};
pub use run_flags::{container_spec, RunFlags};
pub use spec::{
    apply_security_opts, memory_limits, parse_extra_hosts, ContainerSpec, HealthOverride,
    ImageDefaults, PreparedImage, RootfsMaker, StdioConfig,
};
pub use store::{Config, Container, ContainerStore, RestartPolicy, State, Status};
pub use view::{inspect_json, ps_rows, PsFilter};
pub use volumes::{MountSpec, VolumeRecord, VolumeStore};

/// First argument that makes the builder binary act as a container monitor.
pub const MONITOR_ARG: &str = "__container-monitor";

/// Exit code of a command that failed before the container ran (docker's 125).
pub const EXIT_OUR_ERROR: i32 = 125;
