//! The typed container-creation API: a [`ContainerSpec`] (what the user asked for, already
//! parsed) plus a [`PreparedImage`] (the image's defaults and a way to make its root
//! filesystem) become a container through [`ContainerStore::create`]. `builder run` maps its
//! flags to a spec; compose maps a service to one.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use crate::store::{Container, ContainerStore, RestartPolicy};

/// What an image contributes to a container unless the spec overrides it.
#[derive(Clone, Debug, Default)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<crate::HealthConfig>,
    /// `EXPOSE`d ports (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// `VOLUME` paths.
    pub volumes: Vec<String>,
}

/// Makes the writable root filesystem of a container from an image: given the snapshot key,
/// returns the rootfs mounts.
pub type RootfsMaker = dyn Fn(&str) -> Result<Vec<executor::Mount>> + Send + Sync;

/// An image ready to base containers on (pulled and unpacked by the caller).
pub struct PreparedImage {
    /// The reference the user gave.
    pub reference: String,
    /// The image's digest.
    pub image_id: String,
    pub defaults: ImageDefaults,
    pub make_rootfs: Box<RootfsMaker>,
}

/// Healthcheck overrides, field by field over the image's `HEALTHCHECK`.
#[derive(Clone, Debug, Default)]
pub struct HealthOverride {
    /// Drop the image's healthcheck.
    pub disable: bool,
    /// `["CMD", ..]` or `["CMD-SHELL", ..]`.
    pub test: Option<Vec<String>>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub retries: Option<u32>,
}

/// A container as asked for, every field already parsed.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    pub name: Option<String>,
    /// `Some(vec![])` clears the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// None: the image's CMD (unless the entrypoint was overridden).
    pub command: Option<Vec<String>>,
    /// Set over the image's environment, in order.
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    /// `bridge`, `host`, `none`, `container:NAME` or a network name.
    pub network_mode: String,
    pub network_aliases: Vec<String>,
    /// A static address on the primary network (`--ip`, compose `ipv4_address`).
    pub ipv4_address: Option<String>,
    /// More networks to join (`--network` repeated, a compose service's other networks).
    pub extra_networks: Vec<crate::Endpoint>,
    pub extra_hosts: Vec<(String, String)>,
    pub dns: Vec<String>,
    pub ports: Vec<crate::PortMapping>,
    /// Publish every `EXPOSE`d port on a free host port (`-P`).
    pub publish_all: bool,
    pub mounts: Vec<crate::MountSpec>,
    pub limits: crate::Limits,
    pub rlimits: Vec<executor::Rlimit>,
    pub restart: RestartPolicy,
    pub auto_remove: bool,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub stop_timeout: u32,
    pub log: crate::LogOptions,
    pub health: HealthOverride,
    pub read_only: bool,
    pub security: executor::Security,
    /// `-i`, `-t` and `--init`.
    pub stdio: StdioConfig,
}

/// A container's stdin, terminal and init process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdioConfig {
    /// `-i`: keep stdin open for attached clients.
    pub stdin_open: bool,
    /// Close the container's stdin at the first attached client's end of file (docker sets
    /// this for `run -i` without `-d`).
    pub stdin_once: bool,
    /// `-t`: a pseudo-terminal for the container's stdio.
    pub tty: bool,
    /// `--init`: tini as PID 1 (see [`crate::init_mount`]).
    pub init: bool,
}

impl ContainerSpec {
    /// The process to run from the image's defaults and the spec (rootfs left empty).
    pub fn exec_spec(&self, image: &ImageDefaults) -> Result<executor::ExecSpec> {
        let mut argv: Vec<String> = match &self.entrypoint {
            Some(e) => e.clone(),
            None => image.entrypoint.clone(),
        };
        match &self.command {
            Some(c) => argv.extend(c.iter().cloned()),
            None if self.entrypoint.is_none() => argv.extend(image.cmd.iter().cloned()),
            None => {}
        }
        if argv.is_empty() {
            bail!("no command specified: the image has no ENTRYPOINT or CMD; give one");
        }
        let mut env = image.env.clone();
        for (k, v) in &self.env {
            env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
            env.push(format!("{k}={v}"));
        }
        if !crate::endpoints::own_network(&self.network_mode)
            && (!self.extra_networks.is_empty() || self.ipv4_address.is_some())
        {
            bail!(
                "--network {} cannot be combined with other networks or --ip",
                self.network_mode
            );
        }
        // A bridge container joins the namespace its monitor sets up; until then (and should
        // that ever be missing) it is isolated, never on the host's network.
        if self.stdio.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let mut mounts = Vec::new();
        if self.stdio.init {
            mounts.push(crate::init::init_mount()?);
            argv.splice(0..0, crate::init::init_args());
        }
        let network = match self.network_mode.as_str() {
            "host" => executor::Network::Host,
            _ => executor::Network::None,
        };
        executor::resolve_caps(false, &self.security.cap_add, &self.security.cap_drop)?;
        Ok(executor::ExecSpec {
            args: argv,
            env,
            cwd: self
                .workdir
                .clone()
                .filter(|w| !w.is_empty())
                .or_else(|| Some(image.working_dir.clone()).filter(|w| !w.is_empty()))
                .unwrap_or_else(|| "/".into()),
            user: self.user.clone().unwrap_or_else(|| image.user.clone()),
            hostname: self.hostname.clone().unwrap_or_default(),
            network,
            readonly_rootfs: self.read_only,
            security: self.security.clone(),
            rlimits: self.rlimits.clone(),
            mounts,
            ..Default::default()
        })
    }

    /// The healthcheck: the image's, overridden field by field.
    pub fn health_config(&self, image: &ImageDefaults) -> Result<Option<crate::HealthConfig>> {
        let h = &self.health;
        if h.disable {
            if h.test.is_some() {
                bail!("--no-healthcheck conflicts with --health-cmd");
            }
            return Ok(None);
        }
        let mut config = image.healthcheck.clone().unwrap_or_default();
        if let Some(test) = &h.test {
            config.test = test.clone();
        }
        config.interval = h.interval.unwrap_or(config.interval);
        config.timeout = h.timeout.unwrap_or(config.timeout);
        config.start_period = h.start_period.unwrap_or(config.start_period);
        config.retries = h.retries.unwrap_or(config.retries);
        Ok(config.command().map(|_| config))
    }

    /// The spec's ports plus, with `publish_all`, every exposed port on a free host port.
    fn all_ports(&self, image: &ImageDefaults) -> Result<Vec<crate::PortMapping>> {
        let mut ports = self.ports.clone();
        if self.publish_all {
            for exposed in &image.exposed_ports {
                ports.extend(crate::PortMapping::parse_range(exposed)?);
            }
        }
        if !ports.is_empty() && matches!(self.network_mode.as_str(), "host" | "none") {
            bail!(
                "published ports need a bridge network (not --network {})",
                self.network_mode
            );
        }
        Ok(ports)
    }

    /// The spec's mounts plus an anonymous volume for each image `VOLUME` no mount covers.
    fn all_mounts(&self, image: &ImageDefaults) -> Result<Vec<crate::MountSpec>> {
        let mut mounts = self.mounts.clone();
        for path in &image.volumes {
            let target = path.trim_end_matches('/');
            if !mounts
                .iter()
                .any(|m| m.target.trim_end_matches('/') == target)
            {
                mounts.push(crate::MountSpec::parse_volume_flag(path)?);
            }
        }
        Ok(mounts)
    }

    /// Every network the container joins, checked (None: host, none, container:).
    fn endpoints(&self, store: &ContainerStore) -> Result<Option<Vec<crate::Endpoint>>> {
        let primary = crate::Endpoint {
            network: self.network_mode.clone(),
            aliases: self.network_aliases.clone(),
            ipv4_address: self.ipv4_address.clone(),
        };
        crate::endpoints::resolve(store, &self.network_mode, primary, &self.extra_networks)
    }

    fn request(
        &self,
        store: &ContainerStore,
        image: &PreparedImage,
    ) -> Result<crate::CreateRequest> {
        let defaults = &image.defaults;
        if self.auto_remove && self.restart != RestartPolicy::No {
            bail!("conflicting options: cannot specify both --restart and --rm");
        }
        let mut labels = defaults.labels.clone();
        labels.extend(self.labels.clone());
        Ok(crate::CreateRequest {
            name: self.name.clone(),
            image: image.reference.clone(),
            image_id: image.image_id.clone(),
            spec: self.exec_spec(defaults)?,
            restart: self.restart.clone(),
            stop_signal: self
                .stop_signal
                .clone()
                .or_else(|| defaults.stop_signal.clone())
                .unwrap_or_else(|| "SIGTERM".into()),
            stop_timeout: self.stop_timeout,
            labels,
            auto_remove: self.auto_remove,
            log: self.log.clone(),
            entrypoint: defaults.entrypoint.clone(),
            cmd: defaults.cmd.clone(),
            health: self.health_config(defaults)?,
            network_mode: self.network_mode.clone(),
            ports: self.all_ports(defaults)?,
            network_aliases: self.network_aliases.clone(),
            endpoints: self.endpoints(store)?,
            mounts: self.all_mounts(defaults)?,
            limits: self.limits.clone(),
            extra_hosts: self.extra_hosts.clone(),
            dns: self.dns.clone(),
            stdio: self.stdio,
        })
    }
}

impl ContainerStore {
    /// Creates (does not start) a container from a spec and a prepared image.
    pub fn create(&self, spec: &ContainerSpec, image: &PreparedImage) -> Result<Container> {
        let request = spec.request(self, image)?;
        crate::lifecycle::create(self, request, |id| {
            let key = format!("ctr-{id}");
            let rootfs = (image.make_rootfs)(&key)
                .with_context(|| format!("preparing the filesystem of {}", image.reference))?;
            Ok((rootfs, key))
        })
    }
}

/// docker's `--security-opt`: `seccomp=FILE|unconfined`, `no-new-privileges[=true|false]`,
/// applied to `security`.
pub fn apply_security_opts(security: &mut executor::Security, opts: &[String]) -> Result<()> {
    for opt in opts {
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
    Ok(())
}

/// `NAME:IP` (docker also takes `NAME=IP`) host entries.
pub fn parse_extra_hosts(flags: &[String]) -> Result<Vec<(String, String)>> {
    flags
        .iter()
        .map(|h| {
            let (name, ip) = h
                .split_once('=')
                .or_else(|| h.split_once(':'))
                .ok_or_else(|| anyhow::anyhow!("--add-host {h:?}: want NAME:IP"))?;
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| anyhow::anyhow!("--add-host {h:?}: {ip:?} is not an IP address"))?;
            Ok((name.to_string(), ip.to_string()))
        })
        .collect()
}

/// Memory limit and memory+swap with docker's rules (default swap: twice the memory).
pub fn memory_limits(
    memory: Option<&str>,
    swap: Option<&str>,
) -> Result<(Option<u64>, Option<i64>)> {
    let memory = memory
        .map(|m| crate::parse_bytes(m).with_context(|| format!("--memory {m:?}")))
        .transpose()?;
    let memory_swap = match (swap, memory) {
        (Some("-1"), _) => Some(-1),
        (Some(s), Some(m)) => {
            let swap = crate::parse_bytes(s).with_context(|| format!("--memory-swap {s:?}"))?;
            if swap < m {
                bail!("--memory-swap {s:?}: must be at least --memory");
            }
            Some(swap as i64)
        }
        (Some(_), None) => bail!("--memory-swap needs --memory"),
        (None, Some(m)) => Some(2 * m as i64),
        (None, None) => None,
    };
    Ok((memory, memory_swap))
}

/// What an image config gives a container by default.
impl ImageDefaults {
    pub fn from_config(image: &oci::ImageConfig) -> ImageDefaults {
        let c = &image.config;
        ImageDefaults {
            entrypoint: c.entrypoint.clone().unwrap_or_default(),
            cmd: c.cmd.clone().unwrap_or_default(),
            env: c.env.clone(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            user: c.user.clone().unwrap_or_default(),
            labels: c.labels.clone(),
            stop_signal: c.stop_signal.clone(),
            healthcheck: c.healthcheck.as_ref().map(|h| crate::HealthConfig {
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
}

impl PreparedImage {
    /// An image whose containers' root filesystems `make_rootfs` makes (e.g. a snapshot on the
    /// image's unpacked layers); defaults from its config.
    pub fn new(
        reference: &str,
        image_id: String,
        config: &oci::ImageConfig,
        make_rootfs: Box<RootfsMaker>,
    ) -> PreparedImage {
        PreparedImage {
            reference: reference.to_string(),
            image_id,
            defaults: ImageDefaults::from_config(config),
            make_rootfs,
        }
    }
}
