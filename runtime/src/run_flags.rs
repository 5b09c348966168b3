//! `builder run`/`create`'s flags (read from the CLI's by field name) as a typed
//! [`ContainerSpec`](crate::ContainerSpec): env files, security options, mounts, limits,
//! healthcheck overrides and the network mode docker would pick.

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// `builder run`/`create`'s flags, as the command line gives them.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RunFlags {
    /// Run in the background and print the container id.
    pub detach: bool,
    /// Name of the container.
    pub name: Option<String>,
    /// Remove the container when it exits.
    pub rm: bool,
    /// Keep stdin open (foreground runs pass the terminal through).
    pub interactive: bool,
    /// Give the container a terminal of its own, relayed to the caller's (`-t`).
    pub tty: bool,
    /// Keys that detach from a `-i -t` container (see [`crate::detach_keys`]).
    pub detach_keys: Option<String>,
    /// Set an environment variable, KEY=VALUE.
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    pub env_file: Vec<std::path::PathBuf>,
    /// User to run as (name, uid, uid:gid).
    pub user: Option<String>,
    /// Working directory inside the container.
    pub workdir: Option<String>,
    /// Override the image's entrypoint.
    pub entrypoint: Option<String>,
    /// Network: bridge (default for -d/--name/--restart containers), host (default for a
    /// plain foreground run), none or a network name; repeat to join several networks.
    pub network: Vec<String>,
    /// Static IPv4 address on the (first) user-defined network.
    pub ip: Option<String>,
    /// Memory limit (e.g. 512m).
    pub memory: Option<String>,
    /// Memory plus swap limit (-1: unlimited; default twice --memory).
    pub memory_swap: Option<String>,
    /// CPUs the container may use (e.g. 1.5).
    pub cpus: Option<f64>,
    /// Relative CPU weight.
    pub cpu_shares: Option<u64>,
    /// CPUs to run on (e.g. 0-1, 0,2).
    pub cpuset_cpus: Option<String>,
    /// Maximum number of processes (-1: unlimited).
    pub pids_limit: Option<i64>,
    /// Mount a volume or host path: [NAME|/HOST/PATH:]/CONTAINER/PATH[:ro].
    pub volume: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=..,target=..[,readonly].
    pub mount: Vec<String>,
    /// Mount a tmpfs: /PATH[:size=..,mode=..].
    pub tmpfs: Vec<String>,
    /// Extra name of the container on a user-defined network.
    pub network_alias: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP.
    pub add_host: Vec<String>,
    /// A nameserver for the container's resolv.conf.
    pub dns: Vec<String>,
    /// Publish a container port: [IP:]HOST_PORT:CONTAINER_PORT[/udp] (bridge network).
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs on a free host port.
    pub publish_all: bool,
    /// Container hostname (default: the first 12 digits of its id).
    pub hostname: Option<String>,
    /// Restart policy: no, always, unless-stopped, on-failure[:N].
    pub restart: String,
    /// Set a label, KEY=VALUE.
    pub label: Vec<String>,
    /// Signal `stop` sends first.
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before killing.
    pub stop_timeout: u32,
    /// json-file log driver options: max-size=SIZE, max-file=N.
    pub log_opt: Vec<String>,
    /// Healthcheck command (run with /bin/sh -c in the container).
    pub health_cmd: Option<String>,
    /// Time between healthchecks (e.g. 30s, 500ms).
    pub health_interval: Option<String>,
    /// Time a healthcheck may take.
    pub health_timeout: Option<String>,
    /// Consecutive failures that make the container unhealthy.
    pub health_retries: Option<u32>,
    /// Start period during which failures do not count.
    pub health_start_period: Option<String>,
    /// Disable the image's HEALTHCHECK.
    pub no_healthcheck: bool,
    /// Run tini as PID 1 (reaps zombies, forwards signals), bound at /sbin/docker-init.
    pub init: bool,
    /// Set by a foreground `run -i`: the client's end of file closes the container's stdin.
    pub stdin_once: bool,
    /// Mount the container's root filesystem read-only.
    pub read_only: bool,
    /// Platform of the image to run, from a multi-platform image (default: this machine's).
    pub platform: Option<String>,
    /// Run with every capability, no seccomp filter, no masked paths and a writable /sys.
    pub privileged: bool,
    /// Add a capability (NET_ADMIN, CAP_NET_ADMIN or ALL) to Docker's default set.
    pub cap_add: Vec<String>,
    /// Drop a capability (or ALL) from Docker's default set.
    pub cap_drop: Vec<String>,
    /// seccomp=FILE|unconfined, no-new-privileges[=true|false].
    pub security_opt: Vec<String>,
    /// Image name or digest.
    pub image: String,
    /// Command (replaces the image's CMD).
    pub command: Vec<String>,
}

impl RunFlags {
    /// Whether this run is a managed container rather than a one-off foreground process.
    pub fn managed(&self) -> bool {
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
            // The container's own terminal is relayed by its monitor, as docker's daemon does.
            || self.tty
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

/// The flags as a typed container spec.
pub fn container_spec(args: &RunFlags) -> Result<crate::ContainerSpec> {
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
    crate::apply_security_opts(&mut security, &args.security_opt)?;
    let labels: BTreeMap<String, String> = args
        .label
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    Ok(crate::ContainerSpec {
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
        extra_networks: crate::Endpoint::named(args.network.get(1..).unwrap_or_default()),
        extra_hosts: crate::parse_extra_hosts(&args.add_host)?,
        dns: dns_servers(&args.dns)?,
        ports: crate::PortMapping::parse_list(&args.publish)?,
        publish_all: args.publish_all,
        mounts: mounts(args)?,
        limits: limits(args)?,
        rlimits: vec![],
        restart: crate::RestartPolicy::parse(&args.restart)?,
        auto_remove: args.rm,
        labels,
        stop_signal: args.stop_signal.clone(),
        stop_timeout: args.stop_timeout,
        log: crate::LogOptions::parse(&args.log_opt)?,
        health: health_override(args)?,
        read_only: args.read_only,
        security,
        stdio: crate::StdioConfig {
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
fn health_override(args: &RunFlags) -> Result<crate::HealthOverride> {
    let nanos = |flag: &str, value: &Option<String>| -> Result<Option<u64>> {
        value
            .as_deref()
            .map(|v| {
                crate::parse_duration(v)
                    .map(|d| d.as_nanos() as u64)
                    .with_context(|| format!("--{flag} {v:?}"))
            })
            .transpose()
    };
    Ok(crate::HealthOverride {
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
fn mounts(args: &RunFlags) -> Result<Vec<crate::MountSpec>> {
    let mut mounts = Vec::new();
    for v in &args.volume {
        mounts.push(crate::MountSpec::parse_volume_flag(v)?);
    }
    for m in &args.mount {
        mounts.push(crate::MountSpec::parse_mount_flag(m)?);
    }
    for t in &args.tmpfs {
        mounts.push(crate::MountSpec::parse_tmpfs_flag(t)?);
    }
    Ok(mounts)
}

/// `--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`, `--cpuset-cpus`, `--pids-limit`.
fn limits(args: &RunFlags) -> Result<crate::Limits> {
    let (memory, memory_swap) =
        crate::memory_limits(args.memory.as_deref(), args.memory_swap.as_deref())?;
    if let Some(c) = args.cpus {
        if c <= 0.0 {
            bail!("--cpus {c}: must be more than 0");
        }
    }
    Ok(crate::Limits {
        memory,
        memory_swap,
        cpus: args.cpus,
        cpu_shares: args.cpu_shares,
        cpuset_cpus: args.cpuset_cpus.clone(),
        pids_limit: args.pids_limit,
    })
}
