//! `builder run` and `builder create`: a container from a stored image, through the build
//! executor. Without `-d`/`--name`/`--restart` it runs in the foreground with inherited stdio
//! and leaves nothing behind; otherwise it becomes a managed container (see `runtime`).

use anyhow::{anyhow, Context as _, Result};
use std::path::Path;

#[derive(clap::Args, serde::Serialize)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Name of the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open (foreground runs pass the terminal through).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the container a terminal of its own, relayed to this one.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Keys that detach from a -i -t container and leave it running (ctrl-p,ctrl-q).
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Set an environment variable, KEY=VALUE.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    #[arg(long = "env-file")]
    pub env_file: Vec<std::path::PathBuf>,
    /// User to run as (name, uid, uid:gid).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Network: bridge (default for -d/--name/--restart containers), host (default for a
    /// plain foreground run), none or a network name; repeat to join several networks.
    #[arg(long)]
    pub network: Vec<String>,
    /// Static IPv4 address on the (first) user-defined network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Memory limit (e.g. 512m).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Memory plus swap limit (-1: unlimited; default twice --memory).
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPUs the container may use (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Relative CPU weight.
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPUs to run on (e.g. 0-1, 0,2).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Mount a volume or host path: [NAME|/HOST/PATH:]/CONTAINER/PATH[:ro].
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=..,target=..[,readonly].
    #[arg(long = "mount")]
    pub mount: Vec<String>,
    /// Mount a tmpfs: /PATH[:size=..,mode=..].
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// Extra name of the container on a user-defined network.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// A nameserver for the container's resolv.conf.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Publish a container port: [IP:]HOST_PORT:CONTAINER_PORT[/udp] (bridge network).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Container hostname (default: the first 12 digits of its id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Restart policy: no, always, unless-stopped, on-failure[:N].
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Set a label, KEY=VALUE.
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Signal `stop` sends first.
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before killing.
    #[arg(long = "stop-timeout", default_value_t = 10)]
    pub stop_timeout: u32,
    /// json-file log driver options: max-size=SIZE, max-file=N.
    #[arg(long = "log-opt")]
    pub log_opt: Vec<String>,
    /// Healthcheck command (run with /bin/sh -c in the container).
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between healthchecks (e.g. 30s, 500ms).
    #[arg(long = "health-interval")]
    pub health_interval: Option<String>,
    /// Time a healthcheck may take.
    #[arg(long = "health-timeout")]
    pub health_timeout: Option<String>,
    /// Consecutive failures that make the container unhealthy.
    #[arg(long = "health-retries")]
    pub health_retries: Option<u32>,
    /// Start period during which failures do not count.
    #[arg(long = "health-start-period")]
    pub health_start_period: Option<String>,
    /// Disable the image's HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Run tini as PID 1 (reaps zombies, forwards signals), bound at /sbin/docker-init.
    #[arg(long)]
    pub init: bool,
    /// Set by a foreground `run -i`: the client's end of file closes the container's stdin.
    #[arg(skip)]
    pub stdin_once: bool,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Platform of the image to run, from a multi-platform image (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Run with every capability, no seccomp filter, no masked paths and a writable /sys.
    #[arg(long)]
    pub privileged: bool,
    /// Add a capability (NET_ADMIN, CAP_NET_ADMIN or ALL) to Docker's default set.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a capability (or ALL) from Docker's default set.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// seccomp=FILE|unconfined, no-new-privileges[=true|false].
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Image name or digest.
    pub image: String,
    /// Command (replaces the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The runtime's view of a prepared image (see `runtime::PreparedImage::on_snapshot`).
pub fn into_prepared(
    image: engine::images::PreparedImage,
    reference: &str,
) -> runtime::PreparedImage {
    let engine::images::PreparedImage {
        snapshots,
        image_id,
        config,
        parent,
    } = image;
    let make_rootfs = engine::images::managed_rootfs(snapshots, parent);
    runtime::PreparedImage::new(reference, image_id, &config, make_rootfs)
}

pub fn run(root: &Path, rt: &tokio::runtime::Runtime, args: RunArgs) -> Result<i32> {
    if crate::cli::typed::<runtime::RunFlags>(&args)?.managed() {
        return crate::containers::run_managed(root, rt, args);
    }
    rt.block_on(foreground(root, args))
}

/// A foreground run: no container record, the image's snapshot removed afterwards.
async fn foreground(root: &Path, args: RunArgs) -> Result<i32> {
    let prepared = engine::images::prepare(root, &args.image, args.platform.as_deref()).await?;
    let spec = runtime::container_spec(&crate::cli::typed(&args)?)?;
    let mut spec = spec.exec_spec(&runtime::ImageDefaults::from_config(&prepared.config))?;
    let key = format!(
        "container-{}-{}",
        std::process::id(),
        solver::progress::now() as u64
    );
    let snapshots = prepared.snapshots;
    let mounts = snapshots.prepare(&key, prepared.parent.as_deref())?;
    let rootfs = solver::solve::RootfsView::new(root, &mounts)?;
    spec.rootfs = rootfs.mounts();
    if spec.hostname.is_empty() {
        spec.hostname = key.chars().rev().take(12).collect();
    }
    spec.stdio = executor::Stdio::Inherit;
    let exec = runtime::foreground_stdin(executor::Executor::current_exe()?, args.interactive)?;
    let cancel = executor::CancelToken::new();
    let run_cancel = cancel.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            run_cancel.cancel();
        }
    });
    let result = tokio::task::spawn_blocking(move || exec.run(&spec, &cancel, &mut |_, _| {}))
        .await
        .context("container task")?;
    ctrl_c.abort();
    drop(rootfs);
    // A foreground run without a name leaves nothing to reuse: its filesystem always goes.
    snapshots.remove(&key)?;
    match result {
        Ok(code) => Ok(code),
        Err(executor::ExecError::Setup(msg)) => {
            eprintln!("error: {msg}");
            Ok(127)
        }
        Err(e) => Err(anyhow!("{e}")),
    }
}
