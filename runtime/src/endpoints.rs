//! The networks a container joins: [`Endpoint`]s as asked (in `config.json`, changed by
//! `network connect`/`disconnect` under the container's lock) and [`Attached`] interfaces
//! while it runs (in `state.json`). The first endpoint is the primary one: it carries the
//! default route, the published ports and the hostname's address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::networks::NetworkRecord;
use crate::store::{Config, Container, State};

/// One network a container joins, with its names and optional static address there.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    /// The network's name.
    pub network: String,
    /// Extra names on a user-defined network (`--network-alias`, `--alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A static address inside the network's subnet (`--ip`, compose `ipv4_address`).
    #[serde(default)]
    pub ipv4_address: Option<String>,
}

/// An interface of a running container on one network.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Attached {
    pub ip: String,
    pub prefix: u8,
    pub gateway: String,
    /// Interface number: `eth<index>` inside, host veth named after it.
    pub index: u8,
    pub bridge: String,
}

impl Endpoint {
    /// Endpoints on the named networks, without aliases or static addresses.
    pub fn named(networks: &[String]) -> Vec<Endpoint> {
        networks
            .iter()
            .map(|n| Endpoint {
                network: n.clone(),
                ..Default::default()
            })
            .collect()
    }
}

impl Config {
    /// The networks this container joins, primary first (none for host, none and
    /// container: modes). Containers made before endpoints existed join `network_mode`.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        match &self.endpoints {
            Some(list) => list.clone(),
            None if own_network(&self.network_mode) => vec![Endpoint {
                network: self.network_mode.clone(),
                aliases: self.network_aliases.clone(),
                ipv4_address: None,
            }],
            None => vec![],
        }
    }
}

/// Whether a network mode gives the container its own namespace with bridge interfaces.
pub(crate) fn own_network(mode: &str) -> bool {
    !matches!(mode, "host" | "none") && !mode.starts_with("container:")
}

impl Container {
    /// Whether the container is configured to join `network` (by name).
    pub fn on_network(&self, network: &str) -> bool {
        self.config.endpoints().iter().any(|e| e.network == network)
    }
}

impl State {
    /// Network name → interface of a running container (a state written before
    /// per-network records existed has only `ip`, on `network_mode`).
    pub fn attachments(&self, config: &Config) -> BTreeMap<String, Attached> {
        if self.networks.is_empty() && !self.ip.is_empty() && own_network(&config.network_mode) {
            let legacy = Attached {
                ip: self.ip.clone(),
                ..Default::default()
            };
            return BTreeMap::from([(config.network_mode.clone(), legacy)]);
        }
        self.networks.clone()
    }

    /// Forgets every interface (the network was torn down).
    pub(crate) fn clear_network(&mut self) {
        self.ip.clear();
        self.networks.clear();
    }
}

/// Checks a requested static address against a network: an IPv4 address inside its subnet
/// that is neither the network, gateway nor broadcast address. `what` names the flag or key.
pub fn check_static_ip(net: &NetworkRecord, ip: &str, what: &str) -> Result<Ipv4Addr> {
    let addr: Ipv4Addr = ip
        .parse()
        .map_err(|_| anyhow!("{what} {ip:?}: not an IPv4 address"))?;
    if !net.is_user_defined() {
        bail!(
            "{what} {ip}: a static address needs a user-defined network (not the default bridge)"
        );
    }
    let (base, prefix) = subnet_of(net)?;
    let mask = u32::MAX << (32 - prefix);
    let n = u32::from(addr);
    if n & mask != base {
        bail!(
            "{what} {ip} is outside network {}'s subnet {}",
            net.name,
            net.subnet
        );
    }
    if n == base || n == base | !mask || addr == net.gateway_ip()? {
        bail!(
            "{what} {ip} is the network, broadcast or gateway address of {} ({})",
            net.name,
            net.subnet
        );
    }
    Ok(addr)
}

/// The subnet's base address and prefix length.
pub(crate) fn subnet_of(net: &NetworkRecord) -> Result<(u32, u8)> {
    let base = net
        .subnet
        .split_once('/')
        .and_then(|(a, _)| a.parse::<Ipv4Addr>().ok())
        .ok_or_else(|| anyhow!("network {}: bad subnet {}", net.name, net.subnet))?;
    let prefix = net.prefix()?;
    Ok((u32::from(base) & (u32::MAX << (32 - prefix)), prefix))
}

/// The endpoints of a new container: its primary network (`network_mode` with its aliases
/// and static address) and any more (`--network` repeated, compose's `networks`), each
/// checked and named by its network's name. None for host, none and container: modes.
pub(crate) fn resolve(
    store: &crate::ContainerStore,
    mode: &str,
    primary: Endpoint,
    extra: &[Endpoint],
) -> Result<Option<Vec<Endpoint>>> {
    if let Some(target) = mode.strip_prefix("container:") {
        store.find(target)?;
    }
    if !own_network(mode) {
        if !primary.aliases.is_empty() {
            bail!("--network-alias needs a user-defined network (see `builder network create`)");
        }
        if let Some(e) = extra.first() {
            bail!(
                "--network {mode} cannot be combined with another network ({})",
                e.network
            );
        }
        if primary.ipv4_address.is_some() {
            bail!("--ip needs a user-defined network (not --network {mode})");
        }
        return Ok(None);
    }
    let networks = crate::NetworkStore::open(&store.root)?;
    let mut out: Vec<Endpoint> = Vec::new();
    for e in std::iter::once(primary).chain(extra.iter().cloned()) {
        let net = networks.get(&e.network)?;
        check_endpoint(&net, &e)?;
        if out.iter().any(|o| o.network == net.name) {
            bail!("network {} given twice", net.name);
        }
        out.push(Endpoint {
            network: net.name.clone(),
            ..e
        });
    }
    Ok(Some(out))
}

/// Aliases and a static address only on a user-defined network; the address in its subnet.
pub(crate) fn check_endpoint(net: &NetworkRecord, e: &Endpoint) -> Result<()> {
    if !e.aliases.is_empty() && !net.is_user_defined() {
        bail!("--network-alias needs a user-defined network (see `builder network create`)");
    }
    if let Some(ip) = &e.ipv4_address {
        check_static_ip(net, ip, &format!("network {}: address", net.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_addresses_must_be_usable_hosts_of_the_subnet() {
        let mut net = NetworkRecord::default_bridge();
        net.name = "front".into();
        net.subnet = "10.89.7.0/24".into();
        net.gateway = "10.89.7.1".into();
        assert!(check_static_ip(&net, "10.89.7.20", "--ip").is_ok());
        let err = |ip: &str| format!("{:#}", check_static_ip(&net, ip, "--ip").unwrap_err());
        assert!(err("10.89.8.2").contains("outside network front's subnet 10.89.7.0/24"));
        assert!(err("10.89.7.1").contains("gateway"));
        assert!(err("10.89.7.255").contains("broadcast"));
        assert!(err("10.89.7.0").contains("network, broadcast"));
        assert!(err("nope").contains("not an IPv4 address"));
        let bridge = NetworkRecord::default_bridge();
        assert!(format!(
            "{:#}",
            check_static_ip(&bridge, "10.88.0.9", "--ip").unwrap_err()
        )
        .contains("user-defined network"));
    }
}
