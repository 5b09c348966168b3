//! The typed Compose model the runtime consumes, read from the canonical
//! (normalised, long-form) tree that `loader::load` produces.

use serde::Deserialize;
use std::collections::BTreeMap;

/// A duration as Compose writes it (`1m30s`, `500ms`); kept as text here,
/// `parse_duration` turns it into a `std::time::Duration`.
pub type DurationText = String;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ComposeModel {
    pub name: String,
    pub services: BTreeMap<String, Service>,
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    pub secrets: BTreeMap<String, FileObject>,
    pub configs: BTreeMap<String, FileObject>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Service {
    pub build: Option<Build>,
    pub image: Option<String>,
    pub pull_policy: Option<String>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub environment: BTreeMap<String, Option<String>>,
    pub env_file: Vec<EnvFile>,
    pub ports: Vec<Port>,
    pub expose: Vec<String>,
    pub networks: BTreeMap<String, Option<ServiceNetwork>>,
    pub network_mode: Option<String>,
    pub hostname: Option<String>,
    pub extra_hosts: Option<serde_json::Value>,
    pub volumes: Vec<ServiceVolume>,
    pub tmpfs: Option<serde_json::Value>,
    pub secrets: Vec<serde_json::Value>,
    pub configs: Vec<serde_json::Value>,
    pub depends_on: BTreeMap<String, Dependency>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: Option<String>,
    pub deploy: Option<Deploy>,
    pub scale: Option<u32>,
    pub stop_signal: Option<String>,
    pub stop_grace_period: Option<DurationText>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub init: Option<bool>,
    pub tty: Option<bool>,
    pub stdin_open: Option<bool>,
    pub read_only: Option<bool>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub ulimits: BTreeMap<String, serde_json::Value>,
    pub logging: Option<Logging>,
    pub profiles: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Build {
    pub context: String,
    pub dockerfile: Option<String>,
    pub dockerfile_inline: Option<String>,
    pub args: BTreeMap<String, Option<String>>,
    pub target: Option<String>,
    pub secrets: Vec<serde_json::Value>,
    pub ssh: Option<serde_json::Value>,
    pub cache_from: Vec<String>,
    pub cache_to: Vec<String>,
    pub platforms: Vec<String>,
    pub tags: Vec<String>,
    pub additional_contexts: Option<serde_json::Value>,
    pub labels: Option<serde_json::Value>,
    pub network: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct EnvFile {
    pub path: String,
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Port {
    pub name: Option<String>,
    pub mode: String,
    pub host_ip: Option<String>,
    pub target: u16,
    /// A port or a range (`"8000-8010"`); absent means an ephemeral port.
    pub published: Option<String>,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub priority: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ServiceVolume {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub bind: Option<BindOptions>,
    pub volume: Option<VolumeOptions>,
    pub tmpfs: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct BindOptions {
    pub propagation: Option<String>,
    pub create_host_path: bool,
    pub selinux: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct VolumeOptions {
    pub nocopy: bool,
    pub subpath: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct TmpfsOptions {
    pub size: Option<i64>,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Dependency {
    /// `service_started`, `service_healthy` or `service_completed_successfully`.
    pub condition: String,
    pub restart: bool,
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]`, `["NONE"]`, or a shell string.
    pub test: Option<serde_json::Value>,
    pub interval: Option<DurationText>,
    pub timeout: Option<DurationText>,
    pub retries: Option<u64>,
    pub start_period: Option<DurationText>,
    pub start_interval: Option<DurationText>,
    pub disable: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Deploy {
    pub replicas: Option<u32>,
    pub resources: Resources,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Resources {
    pub limits: Option<ResourceLimits>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ResourceLimits {
    pub cpus: Option<serde_json::Value>,
    pub memory: Option<String>,
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Network {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub external: Option<serde_json::Value>,
    pub internal: bool,
    pub ipam: Option<serde_json::Value>,
    pub labels: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Volume {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub external: Option<serde_json::Value>,
    pub labels: Option<serde_json::Value>,
}

/// A top-level secret or config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct FileObject {
    pub name: Option<String>,
    pub file: Option<String>,
    pub environment: Option<String>,
    pub content: Option<String>,
    pub external: Option<serde_json::Value>,
}

impl ComposeModel {
    /// The typed view of a loaded project's canonical tree.
    pub fn from_project(project: &crate::Project) -> Result<ComposeModel, String> {
        serde_json::from_value(project.model.to_json()).map_err(|e| format!("compose model: {e}"))
    }

    /// Replica count: `scale`, else `deploy.replicas`, else 1.
    pub fn replicas(&self, service: &str) -> u32 {
        let s = &self.services[service];
        s.scale
            .or(s.deploy.as_ref().and_then(|d| d.replicas))
            .unwrap_or(1)
    }
}

/// Parses a Compose/Go duration: `1h2m3s`, `1.5s`, `250ms`, `10us`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * secs;
        rest = &rest[unit_len..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}
