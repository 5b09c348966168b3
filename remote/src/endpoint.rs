//! Server addresses (`tcp://HOST:PORT`, `unix:///PATH`), TLS material, and the choice of a
//! node among several: rendezvous hashing of the context key, so a project always goes to
//! the same node (its cache is there) and moves to the next one only when that node is down.

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl Address {
    pub fn parse(text: &str) -> Result<Self> {
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                bail!("{text:?}: a unix address needs an absolute path, unix:///PATH");
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let Some(hostport) = text.strip_prefix("tcp://") else {
            bail!("{text:?}: expected tcp://HOST:PORT or unix:///PATH");
        };
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = hostport
            .rsplit_once(':')
            .with_context(|| format!("{text:?}: missing :PORT"))?;
        let port = port
            .parse()
            .with_context(|| format!("{text:?}: bad port {port:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            bail!("{text:?}: missing host");
        }
        Ok(Address::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// Whether the address is on this machine's loopback (plain connections are allowed there
    /// only with `--insecure`).
    pub fn is_loopback(&self) -> bool {
        match self {
            Address::Unix(_) => true,
            Address::Tcp { host, .. } => {
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// PEM text of a CA certificate, and of this side's certificate and key.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct TlsFiles {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl TlsFiles {
    pub fn read(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<Self> {
        let read = |p: Option<&Path>, what: &str| -> Result<Option<String>> {
            p.map(|p| std::fs::read_to_string(p).with_context(|| format!("{what} {}", p.display())))
                .transpose()
        };
        Ok(TlsFiles {
            ca: read(ca, "--tlscacert")?,
            cert: read(cert, "--tlscert")?,
            key: read(key, "--tlskey")?,
        })
    }

    /// Docker's convention: `ca.pem`, `cert.pem` and `key.pem` in one directory
    /// (`BUILDER_CERT_PATH`); missing files are left out.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let some = |name: &str| {
            let p = dir.join(name);
            p.exists().then_some(p)
        };
        Self::read(
            some("ca.pem").as_deref(),
            some("cert.pem").as_deref(),
            some("key.pem").as_deref(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// The nodes of a builder, ordered for `key`: the highest rendezvous score first.
pub fn order_nodes<'a>(nodes: &'a [Address], key: &str) -> Vec<&'a Address> {
    let mut scored: Vec<(u64, &Address)> = nodes
        .iter()
        .map(|n| {
            let h = Sha256::new()
                .chain_update(n.to_string())
                .chain_update([0])
                .chain_update(key)
                .finalize();
            (u64::from_be_bytes(h[..8].try_into().expect("8 bytes")), n)
        })
        .collect();
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.into_iter().map(|(_, n)| n).collect()
}

/// `tcp://a:1,tcp://b:2` (or one address).
pub fn parse_list(text: &str) -> Result<Vec<Address>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| Address::parse(s.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print() {
        let a = Address::parse("tcp://127.0.0.1:1234").unwrap();
        assert_eq!(a.to_string(), "tcp://127.0.0.1:1234");
        assert!(a.is_loopback());
        assert!(!Address::parse("tcp://10.0.0.1:1").unwrap().is_loopback());
        assert_eq!(
            Address::parse("unix:///run/b.sock").unwrap(),
            Address::Unix("/run/b.sock".into())
        );
        assert!(Address::parse("http://x:1").is_err());
        assert!(Address::parse("tcp://x").is_err());
        assert!(Address::parse("unix://rel").is_err());
    }

    #[test]
    fn node_order_is_stable_and_spreads_keys() {
        let nodes = parse_list("tcp://a:1,tcp://b:2,tcp://c:3").unwrap();
        let first = order_nodes(&nodes, "host:/src/app")[0].clone();
        // Removing another node keeps the choice (consistent hashing).
        let others: Vec<_> = nodes.iter().filter(|n| **n != first).cloned().collect();
        let fewer: Vec<_> = vec![first.clone(), others[0].clone()];
        assert_eq!(order_nodes(&fewer, "host:/src/app")[0], &first);
        let chosen: std::collections::HashSet<_> = (0..30)
            .map(|i| order_nodes(&nodes, &format!("k{i}"))[0].clone())
            .collect();
        assert_eq!(chosen.len(), 3, "30 keys should reach every node");
    }
}
