//! `builder run` and `builder create`: a container from a stored image, through the build
//! executor. Without `-d`/`--name`/`--restart` it runs in the foreground with inherited stdio
//! and leaves nothing behind; otherwise it becomes a managed container (see `runtime`).

use anyhow::{anyhow, bail, Context as _, Result};
use solver::graph::{Definition, Op, Vertex};
use solver::{Ref, Solver, SolverConfig};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

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
    /// plain foreground run) or none.
    #[arg(long)]
    pub network: Option<String>,
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

/// The confinement asked for by `--privileged`, `--cap-add/--cap-drop` and `--security-opt`.
fn security_of(args: &RunArgs) -> Result<executor::Security> {
    let mut security = executor::Security {
        privileged: args.privileged,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        ..Default::default()
    };
    // Checked here so that a typo is a flag error, not a container setup error.
    executor::resolve_caps(false, &security.cap_add, &security.cap_drop)?;
    for opt in &args.security_opt {
        let (key, value) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match (key, value) {
            ("seccomp", "unconfined") => security.seccomp = executor::Seccomp::Unconfined,
            ("seccomp", "") => bail!("--security-opt seccomp needs a file or unconfined"),
            ("seccomp", file) => {
                let json = std::fs::read_to_string(file)
                    .with_context(|| format!("--security-opt seccomp={file}"))?;
                security.seccomp = executor::Seccomp::Profile(json);
            }
            ("no-new-privileges", "" | "true") => security.no_new_privileges = true,
            ("no-new-privileges", "false") => security.no_new_privileges = false,
            _ => bail!(
                "--security-opt {opt:?}: supported are seccomp=FILE, seccomp=unconfined and no-new-privileges"
            ),
        }
    }
    Ok(security)
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
        let mode = match self.network.as_deref() {
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

/// An image ready to run: its config and a snapshot to base the rootfs on.
struct PreparedImage {
    solver: Arc<Solver>,
    image_id: String,
    config: exporter::image::ImageConfig,
    parent: Option<String>,
}

async fn prepare_image(root: &Path, image: &str, platform: Option<&str>) -> Result<PreparedImage> {
    let solver = Arc::new(Solver::new(SolverConfig {
        root: root.to_path_buf(),
        executor: executor::Executor::current_exe()?,
        locals: HashMap::new(),
        no_cache: false,
        progress: solver::progress::Progress::discard(),
        exec: Default::default(),
        layer_export: Default::default(),
    })?);
    let target = solver
        .images
        .resolve(image)?
        .ok_or_else(|| anyhow!("no such image: {image} (see `builder images`)"))?;
    let wanted = crate::platforms::run_platform(platform)?;
    let (manifest, _, config) = solver.images.load_image(&target, &wanted)?;
    crate::platforms::check_image_platform(image, &config, &wanted, platform.is_some())?;
    let reference = exporter::reference::Reference::parse(image)
        .map(|r| exporter::reference::Reference { digest: None, ..r }.full_name())
        .unwrap_or(image.to_string());
    let def = Definition {
        vertices: vec![Vertex {
            op: Op::Image {
                reference: format!("{reference}@{}", manifest.digest),
                platform: config.platform().to_string(),
            },
            inputs: vec![],
            name: "image".into(),
            ignore_cache: false,
        }],
        output: Some(0),
    };
    let solved = solver
        .solve(&def, &executor::CancelToken::new())
        .await
        .map_err(|e| anyhow!("preparing {image}: {e}"))?;
    let parent = match &solved.output {
        Ref::Snapshot(s) => Some(s.clone()),
        _ => None,
    };
    Ok(PreparedImage {
        solver,
        image_id: manifest.digest.clone(),
        config,
        parent,
    })
}

/// The process spec from the image config and the flags (rootfs left empty).
fn process_spec(
    args: &RunArgs,
    image: &exporter::image::ImageConfig,
) -> Result<executor::ExecSpec> {
    let c = &image.config;
    let mut argv: Vec<String> = match &args.entrypoint {
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.clone()],
        None => c.entrypoint.clone().unwrap_or_default(),
    };
    if args.command.is_empty() {
        if args.entrypoint.is_none() {
            argv.extend(c.cmd.clone().unwrap_or_default());
        }
    } else {
        argv.extend(args.command.clone());
    }
    if argv.is_empty() {
        bail!("no command specified: the image has no ENTRYPOINT or CMD; give one after the image name");
    }
    let mut env = c.env.clone();
    let mut assignments = Vec::new();
    for file in &args.env_file {
        assignments.extend(read_env_file(file)?);
    }
    assignments.extend(args.env.iter().cloned());
    for kv in &assignments {
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), std::env::var(kv).unwrap_or_default()),
        };
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
        env.push(format!("{k}={v}"));
    }
    // A bridge container joins the namespace its monitor sets up; until then (and should
    // that ever be missing) it is isolated, never on the host's network.
    let network = match args.network_mode()? {
        "host" => executor::Network::Host,
        _ => executor::Network::None,
    };
    Ok(executor::ExecSpec {
        args: argv,
        env,
        cwd: args
            .workdir
            .clone()
            .or_else(|| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: args
            .user
            .clone()
            .or_else(|| c.user.clone())
            .unwrap_or_default(),
        hostname: args.hostname.clone().unwrap_or_default(),
        network,
        readonly_rootfs: args.read_only,
        security: security_of(args)?,
        ..Default::default()
    })
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
    let mut spec = process_spec(&args, &prepared.config)?;
    let key = format!(
        "container-{}-{}",
        std::process::id(),
        solver::progress::now() as u64
    );
    let solver = prepared.solver;
    let mounts = solver.snapshots.prepare(&key, prepared.parent.as_deref())?;
    spec.rootfs = solver::solve::rootfs_mounts(&mounts);
    if spec.hostname.is_empty() {
        spec.hostname = key.chars().rev().take(12).collect();
    }
    spec.stdio = executor::Stdio::Inherit;
    let exec = executor::Executor::current_exe()?;
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
    // A foreground run without a name leaves nothing to reuse: its filesystem always goes.
    solver.snapshots.remove(&key)?;
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
    let prepared = prepare_image(root, &args.image, args.platform.as_deref()).await?;
    let spec = process_spec(args, &prepared.config)?;
    let image = &prepared.config.config;
    let mut labels: BTreeMap<String, String> = image.labels.clone();
    for l in &args.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let request = runtime::CreateRequest {
        name: args.name.clone(),
        image: args.image.clone(),
        image_id: prepared.image_id.clone(),
        spec,
        restart: runtime::RestartPolicy::parse(&args.restart)?,
        stop_signal: args
            .stop_signal
            .clone()
            .or_else(|| image.stop_signal.clone())
            .unwrap_or_else(|| "SIGTERM".into()),
        stop_timeout: args.stop_timeout,
        labels,
        auto_remove: args.rm,
        log: runtime::LogOptions::parse(&args.log_opt)?,
        entrypoint: image.entrypoint.clone().unwrap_or_default(),
        cmd: image.cmd.clone().unwrap_or_default(),
        health: health_config(args, image.healthcheck.as_ref())?,
        network_mode: args.network_mode()?.to_string(),
        ports: published_ports(args, image)?,
        network_aliases: args.network_alias.clone(),
        mounts: container_mounts(args, image)?,
        limits: limits(args)?,
        extra_hosts: extra_hosts(&args.add_host)?,
        dns: args
            .dns
            .iter()
            .map(|d| {
                d.parse::<std::net::IpAddr>()
                    .map(|_| d.clone())
                    .map_err(|_| anyhow!("--dns {d:?}: not an IP address"))
            })
            .collect::<Result<_>>()?,
    };
    if args.interactive || args.tty {
        bail!("-i/-t are supported for foreground runs without --name/--restart only (a managed container's stdin is not attached yet)");
    }
    if args.rm && args.restart != "no" {
        bail!("conflicting options: cannot specify both --restart and --rm");
    }
    let store = runtime::ContainerStore::open(root)?;
    let solver = prepared.solver.clone();
    let parent = prepared.parent.clone();
    runtime::create(&store, request, |id| {
        let key = format!("ctr-{id}");
        let mounts = solver.snapshots.prepare(&key, parent.as_deref())?;
        Ok((solver::solve::rootfs_mounts(&mounts), key))
    })
}

/// The healthcheck: the image's, overridden field by field by the `--health-*` flags.
fn health_config(
    args: &RunArgs,
    image: Option<&exporter::image::HealthConfig>,
) -> Result<Option<runtime::HealthConfig>> {
    if args.no_healthcheck {
        if args.health_cmd.is_some() {
            bail!("--no-healthcheck conflicts with --health-cmd");
        }
        return Ok(None);
    }
    let mut config = match image {
        Some(h) => runtime::HealthConfig {
            test: h.test.clone(),
            interval: h.interval.max(0) as u64,
            timeout: h.timeout.max(0) as u64,
            start_period: h.start_period.max(0) as u64,
            retries: h.retries.max(0) as u32,
        },
        None => runtime::HealthConfig::default(),
    };
    if let Some(cmd) = &args.health_cmd {
        config.test = vec!["CMD-SHELL".into(), cmd.clone()];
    }
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
    if let Some(n) = nanos("health-interval", &args.health_interval)? {
        config.interval = n;
    }
    if let Some(n) = nanos("health-timeout", &args.health_timeout)? {
        config.timeout = n;
    }
    if let Some(n) = nanos("health-start-period", &args.health_start_period)? {
        config.start_period = n;
    }
    if let Some(r) = args.health_retries {
        config.retries = r;
    }
    Ok(config.command().map(|_| config))
}

/// `-p` mappings, plus every `EXPOSE`d port on a free host port with `-P`.
fn published_ports(
    args: &RunArgs,
    image: &exporter::image::ContainerConfig,
) -> Result<Vec<runtime::PortMapping>> {
    let mut ports = args
        .publish
        .iter()
        .map(|p| runtime::PortMapping::parse(p))
        .collect::<Result<Vec<_>>>()?;
    if args.publish_all {
        for exposed in image.exposed_ports.keys() {
            ports.push(runtime::PortMapping::parse(exposed)?);
        }
    }
    if !ports.is_empty() && args.network_mode()? != "bridge" {
        bail!(
            "-p/-P need the bridge network (not --network {})",
            args.network_mode()?
        );
    }
    Ok(ports)
}

/// `--add-host NAME:IP` (docker also takes `NAME=IP`).
fn extra_hosts(flags: &[String]) -> Result<Vec<(String, String)>> {
    flags
        .iter()
        .map(|h| {
            let (name, ip) = h
                .split_once('=')
                .or_else(|| h.split_once(':'))
                .ok_or_else(|| anyhow!("--add-host {h:?}: want NAME:IP"))?;
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| anyhow!("--add-host {h:?}: {ip:?} is not an IP address"))?;
            Ok((name.to_string(), ip.to_string()))
        })
        .collect()
}

/// `-v`, `--mount`, `--tmpfs`, plus an anonymous volume for each image `VOLUME` no mount covers.
fn container_mounts(
    args: &RunArgs,
    image: &exporter::image::ContainerConfig,
) -> Result<Vec<runtime::MountSpec>> {
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
    for path in image.volumes.keys() {
        let target = path.trim_end_matches('/');
        if !mounts
            .iter()
            .any(|m| m.target.trim_end_matches('/') == target)
        {
            mounts.push(runtime::MountSpec::parse_volume_flag(path)?);
        }
    }
    Ok(mounts)
}

/// `--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`, `--cpuset-cpus`, `--pids-limit`.
fn limits(args: &RunArgs) -> Result<runtime::Limits> {
    let memory = args
        .memory
        .as_deref()
        .map(|m| runtime::parse_bytes(m).with_context(|| format!("--memory {m:?}")))
        .transpose()?;
    let memory_swap = match (args.memory_swap.as_deref(), memory) {
        (Some("-1"), _) => Some(-1),
        (Some(s), Some(m)) => {
            let swap = runtime::parse_bytes(s).with_context(|| format!("--memory-swap {s:?}"))?;
            if swap < m {
                bail!("--memory-swap {s:?}: must be at least --memory");
            }
            Some(swap as i64)
        }
        (Some(_), None) => bail!("--memory-swap needs --memory"),
        (None, Some(m)) => Some(2 * m as i64),
        (None, None) => None,
    };
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
