//! Registry host settings from a buildkitd.toml-like file (`BUILDER_CONFIG`, default
//! `/etc/builder/builder.toml`) plus CA certificates from `certs.d/HOST[:PORT]/*.crt`.
//!
//! ```toml
//! certs_dir = "/etc/builder/certs.d"   # optional
//! [registry."docker.io"]
//! mirrors = ["127.0.0.1:5000"]
//! [registry."10.0.0.5:5000"]
//! http = true        # plain HTTP
//! insecure = true    # HTTPS without certificate verification
//! ca = ["/path/ca.pem"]
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/builder/builder.toml";
pub const DEFAULT_CERTS_DIR: &str = "/etc/builder/certs.d";
/// Environment variable naming the config file to use instead of the default.
pub const CONFIG_ENV: &str = "BUILDER_CONFIG";

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    certs_dir: Option<PathBuf>,
    #[serde(default)]
    registry: HashMap<String, HostConfig>,
}

/// Settings for one registry host (keyed as in image references: "docker.io", "host:port").
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Hosts tried, in order, before this registry when pulling.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Talk plain HTTP to this host.
    #[serde(default)]
    pub http: bool,
    /// Use HTTPS but skip certificate verification.
    #[serde(default)]
    pub insecure: bool,
    /// Extra CA certificates (PEM files) trusted for this host.
    #[serde(default)]
    pub ca: Vec<PathBuf>,
}

/// How to reach one host: scheme and TLS trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub plain_http: bool,
    pub skip_verify: bool,
    /// PEM files of CAs to trust in addition to the built-in roots.
    pub ca_files: Vec<PathBuf>,
}

#[derive(Debug, Default, Clone)]
pub struct RegistryConfig {
    hosts: HashMap<String, HostConfig>,
    certs_dir: PathBuf,
}

impl RegistryConfig {
    /// Loads `BUILDER_CONFIG` (which must exist if set) or the default path (optional).
    pub fn load() -> Result<Self> {
        match std::env::var_os(CONFIG_ENV) {
            Some(path) if !path.is_empty() => Self::load_file(Path::new(&path), true),
            _ => Self::load_file(Path::new(DEFAULT_CONFIG_PATH), false),
        }
    }

    /// Parses the file at `path`; a missing file is an error only if `required`.
    pub fn load_file(path: &Path, required: bool) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::with_certs_dir(PathBuf::from(DEFAULT_CERTS_DIR)))
            }
            Err(e) => return Err(Error::Config(format!("reading {}: {e}", path.display()))),
        };
        Self::parse(&text)
            .map_err(|message| Error::Config(format!("{}: {message}", path.display())))
    }

    /// Parses config text; the error carries the line and column.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        let mut config = Self::with_certs_dir(
            file.certs_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CERTS_DIR)),
        );
        config.hosts = file.registry;
        Ok(config)
    }

    fn with_certs_dir(certs_dir: PathBuf) -> Self {
        RegistryConfig {
            hosts: HashMap::new(),
            certs_dir,
        }
    }

    /// The settings for `host`, or defaults.
    pub fn host(&self, host: &str) -> HostConfig {
        self.hosts.get(host).cloned().unwrap_or_default()
    }

    /// Mirrors to try before `registry` for pulls.
    pub fn mirrors(&self, registry: &str) -> Vec<String> {
        self.host(registry).mirrors
    }

    /// Scheme and trust for `host`. Plain HTTP only where marked `http`, or for a loopback
    /// host that has no TLS settings (no CA, not `insecure`) — like docker's localhost rule.
    pub fn transport(&self, host: &str) -> Transport {
        let settings = self.host(host);
        let mut ca_files = settings.ca.clone();
        ca_files.extend(self.certs_d_files(host));
        let has_tls_settings = settings.insecure || !ca_files.is_empty();
        Transport {
            plain_http: settings.http || (is_loopback_host(host) && !has_tls_settings),
            skip_verify: settings.insecure,
            ca_files,
        }
    }

    /// `certs.d/HOST/*.crt`, sorted (client `*.cert`/`*.key` pairs are not supported).
    fn certs_d_files(&self, host: &str) -> Vec<PathBuf> {
        if host.contains('/') || host.starts_with('.') {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir(self.certs_dir.join(host)) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "crt"))
            .collect();
        files.sort();
        files
    }
}

/// True for `localhost` and loopback IPs, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let without_port = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or(bracketed)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    without_port == "localhost"
        || without_port
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("localhost:5000"));
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("127.5.6.7"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("registry-1.docker.io"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
    }

    #[test]
    fn parses_hosts_and_picks_transport() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs.d");
        std::fs::create_dir_all(certs.join("127.0.0.1:5443")).unwrap();
        std::fs::write(certs.join("127.0.0.1:5443/ca.crt"), "pem").unwrap();
        let text = format!(
            "certs_dir = {:?}\n[registry.\"docker.io\"]\nmirrors = [\"127.0.0.1:5000\"]\n\
             [registry.\"10.1.1.1:5000\"]\nhttp = true\n[registry.\"reg.example\"]\ninsecure = true\nca = [\"/x/ca.pem\"]\n",
            certs.display()
        );
        let config = RegistryConfig::parse(&text).unwrap();
        assert_eq!(config.mirrors("docker.io"), vec!["127.0.0.1:5000"]);
        assert!(config.mirrors("quay.io").is_empty());
        assert!(config.transport("10.1.1.1:5000").plain_http);
        assert!(config.transport("127.0.0.1:5000").plain_http);
        assert!(!config.transport("10.1.1.2:5000").plain_http);
        let tls_loopback = config.transport("127.0.0.1:5443");
        assert!(!tls_loopback.plain_http);
        assert_eq!(
            tls_loopback.ca_files,
            vec![certs.join("127.0.0.1:5443/ca.crt")]
        );
        let insecure = config.transport("reg.example");
        assert!(insecure.skip_verify && !insecure.plain_http);
        assert_eq!(insecure.ca_files, vec![PathBuf::from("/x/ca.pem")]);
    }

    #[test]
    fn bad_config_names_line_and_key() {
        let err =
            RegistryConfig::parse("[registry.\"docker.io\"]\nmirors = [\"x\"]\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("mirors"), "{err}");
        let err = RegistryConfig::parse("[registry.\"docker.io\"]\nhttp = \"yes\"\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn missing_required_file_is_an_error() {
        let err = RegistryConfig::load_file(Path::new("/nonexistent/builder.toml"), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/builder.toml"), "{err}");
        assert!(RegistryConfig::load_file(Path::new("/nonexistent/builder.toml"), false).is_ok());
    }
}
