//! Networks: the built-in `bridge` (builder0, 10.88.0.0/16) and user-defined ones in
//! `ROOT/networks/NAME.json`, each a bridge `bn-<id>` with a /24 from 10.89.0.0/16.
//! On a user network containers find each other by name, alias and short id through their
//! `/etc/hosts`, rewritten in place whenever a container on it starts, stops, connects or
//! disconnects (so a removed or disconnected container's name never resolves; busybox
//! resolves only through /etc/hosts).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::endpoints::{Attached, Endpoint};
use crate::store::{Config, Container, ContainerStore};

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
        self.create_ipam(name, subnet, None, labels)
    }

    /// [`NetworkStore::create`] with an explicit gateway inside the subnet (compose's
    /// `ipam.config[].gateway`); default: the subnet's first address.
    pub fn create_ipam(
        &self,
        name: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
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
        let (subnet, default_gateway) = match subnet {
            Some(s) => explicit_subnet(s)?,
            None => free_subnet(&existing)?,
        };
        if let Some(other) = existing.iter().find(|n| overlaps(&n.subnet, &subnet)) {
            bail!(
                "--subnet {subnet}: overlaps network {}'s subnet {}",
                other.name,
                other.subnet
            );
        }
        if let Some((iface, cidr)) = host_addresses()
            .into_iter()
            .find(|(_, cidr)| overlaps(cidr, &subnet))
        {
            bail!("--subnet {subnet}: overlaps address {cidr} of host interface {iface}");
        }
        let gateway = match gateway {
            Some(g) => checked_gateway(&subnet, g)?,
            None => default_gateway,
        };
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
            .filter(|c| c.on_network(&net.name))
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

/// `(interface, address/prefix)` of every IPv4 address on the host.
fn host_addresses() -> Vec<(String, String)> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "inet")?;
            Some((words.get(1)?.to_string(), words.get(at + 1)?.to_string()))
        })
        .collect()
}

/// Whether two CIDR subnets share an address.
fn overlaps(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Option<(u32, u32)> {
        let (addr, prefix) = s.split_once('/')?;
        let mask = u32::MAX.checked_shl(32 - prefix.parse::<u32>().ok()?)?;
        Some((u32::from(addr.parse::<Ipv4Addr>().ok()?) & mask, mask))
    };
    match (parse(a), parse(b)) {
        (Some((a, ma)), Some((b, mb))) => a & (ma & mb) == b & (ma & mb),
        _ => false,
    }
}

/// A gateway inside the subnet that is not its network or broadcast address.
fn checked_gateway(subnet: &str, gateway: &str) -> Result<String> {
    let mut probe = NetworkRecord::default_bridge();
    (probe.name, probe.subnet) = ("the new network".into(), subnet.into());
    probe.gateway = "0.0.0.0".into();
    let (base, prefix) = crate::endpoints::subnet_of(&probe)?;
    let ip: Ipv4Addr = gateway
        .parse()
        .map_err(|_| anyhow!("gateway {gateway:?}: not an IPv4 address"))?;
    let mask = u32::MAX << (32 - prefix);
    let n = u32::from(ip);
    if n & mask != base || n == base || n == base | !mask {
        bail!("gateway {gateway} is not a host address of subnet {subnet}");
    }
    Ok(gateway.to_string())
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
        if !in_host && !existing.iter().any(|e| overlaps(&e.subnet, &subnet)) {
            return Ok((subnet, gateway));
        }
    }
    bail!("no free /24 left in 10.89.0.0/16; give --subnet")
}

/// The network records of a container's endpoints, primary first.
pub fn endpoint_networks(root: &Path, config: &Config) -> Result<Vec<(NetworkRecord, Endpoint)>> {
    let store = NetworkStore::open(root)?;
    config
        .endpoints()
        .into_iter()
        .map(|e| {
            let net = match e.network.as_str() {
                "bridge" => NetworkRecord::default_bridge(),
                name => store.get(name)?,
            };
            Ok((net, e))
        })
        .collect()
}

pub fn hosts_path(container: &Container) -> PathBuf {
    container.dir.join("hosts")
}

/// A running container with its primary address and its interfaces by network.
type Running = (Container, String, BTreeMap<String, Attached>);

/// Rewrites `/etc/hosts` of every running container on one of `networks` (in place: they
/// are bind mounts), and of `also`, listing the peers on each network it is on. `leaving`
/// is left out everywhere even if its state still says running.
pub fn refresh_hosts(
    store: &ContainerStore,
    networks: &[String],
    leaving: Option<&str>,
    also: Option<&str>,
) -> Result<()> {
    let mut running: Vec<Running> = Vec::new();
    for c in store.list()? {
        if Some(c.id()) == leaving {
            continue;
        }
        // A container removed since it was listed has no state left.
        let Ok(state) = c.state() else { continue };
        if state.status.is_active() {
            let attached = state.attachments(&c.config);
            running.push((c, state.ip, attached));
        }
    }
    for (c, ip, attached) in &running {
        if !attached.keys().any(|n| networks.contains(n)) && Some(c.id()) != also {
            continue;
        }
        let text = hosts_text(c, ip, attached, &running);
        if let Err(e) = write_in_place(&hosts_path(c), &text) {
            if c.dir.exists() {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The container's own lines, then everyone (itself included) on each user-defined network
/// it is on (the default bridge resolves no names, as docker's).
fn hosts_text(
    c: &Container,
    ip: &str,
    attached: &BTreeMap<String, Attached>,
    running: &[Running],
) -> String {
    let mut text = base_hosts(c, ip);
    for network in attached.keys().filter(|n| *n != "bridge") {
        for (peer, _, peer_networks) in running {
            // The container itself too: its own name and aliases resolve, as with docker.
            if let Some(a) = peer_networks.get(network) {
                let names = peer_names(peer, network).join(" ");
                text.push_str(&format!("{}\t{names}\n", a.ip));
            }
        }
    }
    text
}

/// A peer's names on one network: its name, its aliases there, its short id.
fn peer_names(c: &Container, network: &str) -> Vec<String> {
    let mut names = vec![c.config.name.clone()];
    if let Some(e) = c
        .config
        .endpoints()
        .into_iter()
        .find(|e| e.network == network)
    {
        names.extend(e.aliases);
    }
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
