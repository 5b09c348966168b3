//! `builder run` and `builder create`: a container from a stored image, through the build
//! executor. Without `-d`/`--name`/`--restart` it runs in the foreground with inherited stdio
//! and leaves nothing behind; otherwise it becomes a managed container (see `runtime`).

use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(clap::Args)]
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
    /// Use the caller's terminal (foreground runs pass it through).
    #[arg(short = 't', long)]
    pub tty: bool,
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

impl RunArgs {
    /// Whether this run is a managed container rather than a one-off foreground process.
    fn managed(&self) -> bool {
        self.detach
            || self.memory.is_some()
            || self.cpus.is_some()
            || self.cpu_shares.is_some()
            || self.cpuset_cpus.is_some()
            || self.pids_limit.is_some()
            || !self.volume.is_empty()
            || !self.mount.is_empty()
            || !self.tmpfs.is_empty()
            || self.name.is_some()
            || self.restart != "no"
            || !self.publish.is_empty()
            || self.publish_all
    }

    /// The network mode, with docker's default for managed containers.
    fn network_mode(&self) -> Result<&str> {
        let mode = match self.network.first().map(String::as_str) {
            // Rootless, "host" is a user-mode network of the container's own (executor).
            Some("default") | None if self.managed() && !executor::userns::is_rootless() => {
                "bridge"
            }
            Some("default") | None => "host",
            Some(m) => m,
        };
        if executor::userns::is_rootless() && !matches!(mode, "host" | "none") {
            bail!("--network {mode}: rootless mode has no bridge networks; containers get a user-mode network (the default) or none");
        }
        match mode {
            "host" | "none" => Ok(mode),
            _ if !self.managed() => bail!(
                "--network {mode}: only host and none work for a plain foreground run; add --name or -d"
            ),
            "" | "container:" => bail!(
                "--network {mode:?}: want bridge, host, none, container:NAME or a network name"
            ),
            _ => Ok(mode),
        }
    }
}

/// The runtime's view of a prepared image: defaults from its config, rootfs made as a
/// snapshot on the image's.
pub fn into_prepared(
    image: engine::images::PreparedImage,
    reference: &str,
) -> runtime::PreparedImage {
    let defaults = image_defaults(&image.config);
    let engine::images::PreparedImage {
        snapshots,
        image_id,
        parent,
        ..
    } = image;
    runtime::PreparedImage {
        reference: reference.to_string(),
        image_id,
        defaults,
        make_rootfs: Box::new(move |key| {
            let mounts = snapshots.prepare(key, parent.as_deref())?;
            solver::solve::managed_rootfs(&mounts)
        }),
    }
}

/// What an image config gives a container by default.
pub fn image_defaults(image: &exporter::image::ImageConfig) -> runtime::ImageDefaults {
    let c = &image.config;
    runtime::ImageDefaults {
        entrypoint: c.entrypoint.clone().unwrap_or_default(),
        cmd: c.cmd.clone().unwrap_or_default(),
        env: c.env.clone(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        user: c.user.clone().unwrap_or_default(),
        labels: c.labels.clone(),
        stop_signal: c.stop_signal.clone(),
        healthcheck: c.healthcheck.as_ref().map(|h| runtime::HealthConfig {
            test: h.test.clone(),
            interval: h.interval.max(0) as u64,
            timeout: h.timeout.max(0) as u64,
            start_period: h.start_period.max(0) as u64,
            retries: h.retries.max(0) as u32,
        }),
        exposed_ports: c.exposed_ports.keys().cloned().collect(),
        volumes: c.volumes.keys().cloned().collect(),
    }
}

/// Resolves and unpacks a stored image (see `engine::images::prepare`).
pub async fn prepare_image(
    root: &Path,
    image: &str,
    platform: Option<&str>,
) -> Result<engine::images::PreparedImage> {
    engine::images::prepare(root, image, platform).await
}

/// docker's `--env-file`: `KEY=VALUE` or `KEY` lines; blank lines and `#` comments skipped.
fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--env-file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split('=').next().unwrap_or("");
        if key.is_empty() || key.contains(char::is_whitespace) {
            bail!(
                "--env-file {}:{}: variable name {key:?} must not be empty or contain whitespace",
                path.display(),
                n + 1
            );
        }
        out.push(line.to_string());
    }
    Ok(out)
}

pub async fn run(root: &Path, args: RunArgs) -> Result<i32> {
    if args.managed() {
        return crate::containers::run_managed(root, args).await;
    }
    let prepared = prepare_image(root, &args.image, args.platform.as_deref()).await?;
    let mut spec = container_spec(&args)?.exec_spec(&image_defaults(&prepared.config))?;
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

/// Creates a managed container from the flags (`create`, and `run -d`).
pub async fn create_container(root: &Path, args: &RunArgs) -> Result<runtime::Container> {
    let spec = container_spec(args)?;
    let prepared = prepare_image(root, &args.image, args.platform.as_deref()).await?;
    let image = into_prepared(prepared, &args.image);
    runtime::ContainerStore::open(root)?.create(&spec, &image)
}

/// The flags as a typed container spec.
fn container_spec(args: &RunArgs) -> Result<runtime::ContainerSpec> {
    let mut env = Vec::new();
    let mut assignments = Vec::new();
    for file in &args.env_file {
        assignments.extend(read_env_file(file)?);
    }
    assignments.extend(args.env.iter().cloned());
    for kv in &assignments {
        env.push(match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), std::env::var(kv).unwrap_or_default()),
        });
    }
    let mut security = executor::Security {
        privileged: args.privileged,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        ..Default::default()
    };
    runtime::apply_security_opts(&mut security, &args.security_opt)?;
    let labels: BTreeMap<String, String> = args
        .label
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    Ok(runtime::ContainerSpec {
        name: args.name.clone(),
        entrypoint: args.entrypoint.as_ref().map(|e| match e.as_str() {
            "" => vec![],
            e => vec![e.to_string()],
        }),
        command: Some(args.command.clone()).filter(|c| !c.is_empty()),
        env,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        hostname: args.hostname.clone(),
        network_mode: args.network_mode()?.to_string(),
        network_aliases: args.network_alias.clone(),
        ipv4_address: args.ip.clone(),
        extra_networks: runtime::Endpoint::named(args.network.get(1..).unwrap_or_default()),
        extra_hosts: runtime::parse_extra_hosts(&args.add_host)?,
        dns: dns_servers(&args.dns)?,
        ports: runtime::PortMapping::parse_list(&args.publish)?,
        publish_all: args.publish_all,
        mounts: mounts(args)?,
        limits: limits(args)?,
        rlimits: vec![],
        restart: runtime::RestartPolicy::parse(&args.restart)?,
        auto_remove: args.rm,
        labels,
        stop_signal: args.stop_signal.clone(),
        stop_timeout: args.stop_timeout,
        log: runtime::LogOptions::parse(&args.log_opt)?,
        health: health_override(args)?,
        read_only: args.read_only,
        security,
        stdio: runtime::StdioConfig {
            stdin_open: args.interactive,
            stdin_once: args.stdin_once,
            tty: args.tty,
            init: args.init,
        },
    })
}

fn dns_servers(flags: &[String]) -> Result<Vec<String>> {
    flags
        .iter()
        .map(|d| {
            d.parse::<std::net::IpAddr>()
                .map(|_| d.clone())
                .map_err(|_| anyhow!("--dns {d:?}: not an IP address"))
        })
        .collect()
}

/// The `--health-*` and `--no-healthcheck` flags.
fn health_override(args: &RunArgs) -> Result<runtime::HealthOverride> {
    let nanos = |flag: &str, value: &Option<String>| -> Result<Option<u64>> {
        value
            .as_deref()
            .map(|v| {
                runtime::parse_duration(v)
                    .map(|d| d.as_nanos() as u64)
                    .with_context(|| format!("--{flag} {v:?}"))
            })
            .transpose()
    };
    Ok(runtime::HealthOverride {
        disable: args.no_healthcheck,
        test: args
            .health_cmd
            .as_ref()
            .map(|cmd| vec!["CMD-SHELL".into(), cmd.clone()]),
        interval: nanos("health-interval", &args.health_interval)?,
        timeout: nanos("health-timeout", &args.health_timeout)?,
        start_period: nanos("health-start-period", &args.health_start_period)?,
        retries: args.health_retries,
    })
}

/// `-v`, `--mount`, `--tmpfs`.
fn mounts(args: &RunArgs) -> Result<Vec<runtime::MountSpec>> {
    let mut mounts = Vec::new();
    for v in &args.volume {
        mounts.push(runtime::MountSpec::parse_volume_flag(v)?);
    }
    for m in &args.mount {
        mounts.push(runtime::MountSpec::parse_mount_flag(m)?);
    }
    for t in &args.tmpfs {
        mounts.push(runtime::MountSpec::parse_tmpfs_flag(t)?);
    }
    Ok(mounts)
}

/// `--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`, `--cpuset-cpus`, `--pids-limit`.
fn limits(args: &RunArgs) -> Result<runtime::Limits> {
    let (memory, memory_swap) =
        runtime::memory_limits(args.memory.as_deref(), args.memory_swap.as_deref())?;
    if let Some(c) = args.cpus {
        if c <= 0.0 {
            bail!("--cpus {c}: must be more than 0");
        }
    }
    Ok(runtime::Limits {
        memory,
        memory_swap,
        cpus: args.cpus,
        cpu_shares: args.cpu_shares,
        cpuset_cpus: args.cpuset_cpus.clone(),
        pids_limit: args.pids_limit,
    })
}
