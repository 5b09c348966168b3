//! Networks: the built-in `bridge` (builder0, 10.88.0.0/16) and user-defined ones in
//! `ROOT/networks/NAME.json`, each a bridge `bn-<id>` with a /24 from 10.89.0.0/16.
//! On a user network containers find each other by name, alias and short id through their
//! `/etc/hosts`, rewritten in place whenever a container on it starts or stops (so a removed
//! container's name never resolves; busybox resolves only through /etc/hosts).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::store::{Container, ContainerStore};

/// Names `network create` may not take.
const RESERVED: [&str; 3] = ["bridge", "host", "none"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub id: String,
    pub subnet: String,
    pub gateway: String,
    pub bridge: String,
    pub created: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl NetworkRecord {
    /// The built-in default network (no name resolution, as docker's default bridge).
    pub fn default_bridge() -> NetworkRecord {
        NetworkRecord {
            name: "bridge".into(),
            id: "0".repeat(64),
            subnet: "10.88.0.0/16".into(),
            gateway: "10.88.0.1".into(),
            bridge: crate::network::BRIDGE.into(),
            created: String::new(),
            labels: BTreeMap::new(),
        }
    }

    pub fn is_user_defined(&self) -> bool {
        self.name != "bridge"
    }

    pub fn prefix(&self) -> Result<u8> {
        self.subnet
            .split_once('/')
            .and_then(|(_, p)| p.parse().ok())
            .ok_or_else(|| anyhow!("network {}: bad subnet {}", self.name, self.subnet))
    }

    pub fn gateway_ip(&self) -> Result<Ipv4Addr> {
        self.gateway
            .parse()
            .map_err(|_| anyhow!("network {}: bad gateway {}", self.name, self.gateway))
    }
}

/// The user-defined networks of one storage root.
pub struct NetworkStore {
    dir: PathBuf,
}

impl NetworkStore {
    pub fn open(root: &Path) -> Result<NetworkStore> {
        let dir = root.join("networks");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(NetworkStore { dir })
    }

    pub fn list(&self) -> Result<Vec<NetworkRecord>> {
        let mut out = vec![NetworkRecord::default_bridge()];
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "json") {
                let data = std::fs::read(entry.path())?;
                out.push(
                    serde_json::from_slice(&data)
                        .with_context(|| format!("parsing {}", entry.path().display()))?,
                );
            }
        }
        Ok(out)
    }

    /// By name, id or unique id prefix; a clear error for an unknown network.
    pub fn get(&self, name: &str) -> Result<NetworkRecord> {
        let all = self.list()?;
        if let Some(n) = all.iter().find(|n| n.name == name || n.id == name) {
            return Ok(n.clone());
        }
        let matches: Vec<_> = all
            .iter()
            .filter(|n| n.id.starts_with(name) && name.len() >= 3)
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            _ => bail!("network {name} not found"),
        }
    }

    /// `network create NAME [--subnet CIDR]`: a /24 from 10.89.0.0/16 not used by another
    /// network of this root or by an address on a host interface.
    pub fn create(
        &self,
        name: &str,
        subnet: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<NetworkRecord> {
        crate::names::validate_name(name).map_err(|_| anyhow!("invalid network name {name:?}"))?;
        if RESERVED.contains(&name) {
            bail!("network name {name} is reserved (built in)");
        }
        let _lock = crate::store::FileLock::exclusive(&self.dir.join(".lock"))?;
        let existing = self.list()?;
        if existing.iter().any(|n| n.name == name) {
            bail!("network with name {name} already exists");
        }
        let (subnet, gateway) = match subnet {
            Some(s) => explicit_subnet(s)?,
            None => free_subnet(&existing)?,
        };
        if existing.iter().any(|n| n.subnet == subnet) {
            bail!("--subnet {subnet}: used by another network");
        }
        let id = crate::names::new_id();
        let record = NetworkRecord {
            name: name.into(),
            bridge: format!("{}{}", crate::network::USER_BRIDGE_PREFIX, &id[..12]),
            id,
            subnet,
            gateway,
            created: crate::time::now_rfc3339(),
            labels,
        };
        crate::store::write_atomic(
            &self.dir.join(format!("{name}.json")),
            &serde_json::to_vec_pretty(&record)?,
        )?;
        Ok(record)
    }

    /// Removes a network no container uses.
    pub fn remove(&self, containers: &ContainerStore, name: &str) -> Result<()> {
        let net = self.get(name)?;
        if !net.is_user_defined() {
            bail!("bridge is a pre-defined network and cannot be removed");
        }
        let users: Vec<String> = containers
            .list()?
            .into_iter()
            .filter(|c| c.config.network_mode == net.name)
            .map(|c| c.config.name)
            .collect();
        if !users.is_empty() {
            bail!(
                "network {} is used by containers {}: remove them first",
                net.name,
                users.join(", ")
            );
        }
        crate::network::remove_bridge(&net);
        std::fs::remove_file(self.dir.join(format!("{}.json", net.name)))?;
        Ok(())
    }
}

fn explicit_subnet(s: &str) -> Result<(String, String)> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("--subnet {s:?}: want CIDR, e.g. 10.89.5.0/24"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| anyhow!("--subnet {s:?}: bad address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (8..=30).contains(p))
        .ok_or_else(|| anyhow!("--subnet {s:?}: prefix must be 8..30"))?;
    let mask = u32::MAX << (32 - prefix);
    let base = u32::from(addr) & mask;
    Ok((
        format!("{}/{prefix}", Ipv4Addr::from(base)),
        Ipv4Addr::from(base + 1).to_string(),
    ))
}

fn free_subnet(existing: &[NetworkRecord]) -> Result<(String, String)> {
    let host_addrs = std::process::Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for n in 0..=255u8 {
        let subnet = format!("10.89.{n}.0/24");
        let gateway = format!("10.89.{n}.1");
        let in_host = host_addrs.contains(&format!("inet 10.89.{n}."));
        if !in_host && !existing.iter().any(|e| e.subnet == subnet) {
            return Ok((subnet, gateway));
        }
    }
    bail!("no free /24 left in 10.89.0.0/16; give --subnet")
}

/// The network record a container's `network_mode` names (None: host, none, container:).
pub fn network_of(root: &Path, container: &Container) -> Result<Option<NetworkRecord>> {
    match container.config.network_mode.as_str() {
        "host" | "none" => Ok(None),
        m if m.starts_with("container:") => Ok(None),
        "bridge" => Ok(Some(NetworkRecord::default_bridge())),
        name => NetworkStore::open(root)?.get(name).map(Some),
    }
}

pub fn hosts_path(container: &Container) -> PathBuf {
    container.dir.join("hosts")
}

/// Rewrites `/etc/hosts` of every running container on `network` (in place: they are bind
/// mounts), listing the running peers; `leaving` is excluded even if its state still says
/// running.
pub fn refresh_hosts(store: &ContainerStore, network: &str, leaving: Option<&str>) -> Result<()> {
    let mut peers = Vec::new();
    for c in store.list()? {
        if c.config.network_mode != network || Some(c.id()) == leaving {
            continue;
        }
        let state = c.state()?;
        if state.status.is_active() && !state.ip.is_empty() {
            peers.push((c, state.ip));
        }
    }
    let user_defined = network != "bridge";
    for (c, ip) in &peers {
        let mut text = base_hosts(c, ip);
        if user_defined {
            for (peer, peer_ip) in &peers {
                if peer.id() != c.id() {
                    text.push_str(&format!("{peer_ip}\t{}\n", peer_names(peer).join(" ")));
                }
            }
        }
        write_in_place(&hosts_path(c), &text)?;
    }
    Ok(())
}

fn peer_names(c: &Container) -> Vec<String> {
    let mut names = vec![c.config.name.clone()];
    names.extend(c.config.network_aliases.iter().cloned());
    names.push(c.config.id[..12].to_string());
    names
}

/// localhost, the container's own address and hostname, and `--add-host` entries.
pub fn base_hosts(c: &Container, ip: &str) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, addr) in &c.config.extra_hosts {
        text.push_str(&format!("{addr}\t{name}\n"));
    }
    let hostname = &c.config.spec.hostname;
    if ip.is_empty() {
        text.push_str(&format!("127.0.1.1\t{hostname}\n"));
    } else {
        text.push_str(&format!("{ip}\t{hostname}\n"));
    }
    text
}

/// Truncates and writes (no rename: the container sees the file through a bind mount).
pub fn write_in_place(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
