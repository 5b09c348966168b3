//! `network connect` and `network disconnect`: a container joins or leaves a network. A
//! running container gets (or loses) an interface in its namespace at once; a created or
//! stopped one only has its config changed and joins at its next start. Names are updated
//! for it and its peers before the command returns, so a disconnected container's name no
//! longer resolves on that network.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use crate::endpoints::{Attached, Endpoint};
use crate::networks::{NetworkRecord, NetworkStore};
use crate::store::{Container, ContainerStore, State};

/// `network connect` flags.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// `--alias`: extra names of the container on this network.
    pub aliases: Vec<String>,
    /// `--ip`: a static address in the network's subnet.
    pub ipv4_address: Option<String>,
}

/// Connects `container` to `network`.
pub fn connect(
    store: &ContainerStore,
    container: &Container,
    network: &str,
    opts: &ConnectOptions,
) -> Result<()> {
    let net = NetworkStore::open(&store.root)?.get(network)?;
    let endpoint = Endpoint {
        network: net.name.clone(),
        aliases: opts.aliases.clone(),
        ipv4_address: opts.ipv4_address.clone(),
    };
    crate::endpoints::check_endpoint(&net, &endpoint)?;
    let mode = &container.config.network_mode;
    if !container.has_own_network() {
        bail!(
            "container {} uses --network {mode}: it cannot be connected to other networks",
            container.config.name
        );
    }
    let networks = {
        let _lock = container.lock()?;
        let mut current = store.load(container.id())?;
        let mut endpoints = current.config.endpoints();
        if endpoints.iter().any(|e| e.network == net.name) {
            bail!(
                "endpoint with name {} already exists in network {}",
                current.config.name,
                net.name
            );
        }
        let state = current.live_state_locked()?;
        let attached = attach_if_running(&current, &state, &net, &endpoint)?;
        endpoints.push(endpoint);
        current.config.endpoints = Some(endpoints);
        if let Err(e) = current.save_config() {
            if let Some(a) = &attached {
                crate::network::disconnect_endpoint(&current, a);
            }
            return Err(e);
        }
        if let Some(a) = attached {
            record_attached(&current, state, &net.name, a)?;
        }
        network_names(&current)
    };
    crate::networks::refresh_hosts(store, &networks, None, Some(container.id()))
}

/// A running container's new interface; None when it is not running (it joins at start).
fn attach_if_running(
    container: &Container,
    state: &State,
    net: &NetworkRecord,
    endpoint: &Endpoint,
) -> Result<Option<Attached>> {
    if !state.status.is_active() || !crate::network::netns_path(container).exists() {
        return Ok(None);
    }
    let taken: Vec<u8> = state.networks.values().map(|a| a.index).collect();
    let index = (0..=u8::MAX)
        .find(|i| !taken.contains(i))
        .unwrap_or(u8::MAX);
    let first = state.attachments(&container.config).is_empty();
    crate::network::connect_endpoint(container, net, endpoint, index, first).map(Some)
}

fn record_attached(
    container: &Container,
    mut state: State,
    network: &str,
    attached: Attached,
) -> Result<()> {
    if state.ip.is_empty() {
        // The only interface now: it takes the hostname and the published ports.
        state.ip = attached.ip.clone();
        let ip = attached.ip.parse::<Ipv4Addr>().ok();
        crate::network::repoint_ports(container, ip, &state.ports);
        let hosts = crate::networks::hosts_path(container);
        crate::networks::write_in_place(
            &hosts,
            &crate::networks::base_hosts(container, &state.ip),
        )?;
    }
    state.networks.insert(network.to_string(), attached);
    container.save_state(&state)
}

/// Disconnects `container` from `network`; with `force`, a container not (or no longer)
/// configured on it is not an error and whatever it still holds there is released.
pub fn disconnect(
    store: &ContainerStore,
    container: &Container,
    network: &str,
    force: bool,
) -> Result<()> {
    let net = NetworkStore::open(&store.root)?.get(network)?;
    let mut networks = {
        let _lock = container.lock()?;
        let mut current = store.load(container.id())?;
        let mut endpoints = current.config.endpoints();
        let before = endpoints.len();
        endpoints.retain(|e| e.network != net.name);
        if endpoints.len() == before && !force {
            bail!(
                "container {} is not connected to network {}",
                current.config.name,
                net.name
            );
        }
        let state = current.live_state_locked()?;
        if state.status.is_active() {
            detach_running(&current, state, &net.name)?;
        }
        current.config.endpoints = Some(endpoints);
        current.save_config()?;
        network_names(&current)
    };
    networks.push(net.name);
    crate::networks::refresh_hosts(store, &networks, None, Some(container.id()))
}

/// Removes the interface on `network` from a running container; when it was the primary
/// one, the next interface takes the default route, the hostname and the published ports.
fn detach_running(container: &Container, mut state: State, network: &str) -> Result<()> {
    let mut attached = state.attachments(&container.config);
    let Some(gone) = attached.remove(network) else {
        return Ok(());
    };
    crate::network::disconnect_endpoint(container, &gone);
    state.networks = attached;
    if state.ip == gone.ip {
        let next = state.networks.values().min_by_key(|a| a.index).cloned();
        state.ip = next.as_ref().map(|a| a.ip.clone()).unwrap_or_default();
        if let Some(next) = &next {
            crate::network::set_default_route(container, &next.gateway)?;
        }
        let ip = next.and_then(|a| a.ip.parse::<Ipv4Addr>().ok());
        crate::network::repoint_ports(container, ip, &state.ports);
        let hosts = crate::networks::hosts_path(container);
        crate::networks::write_in_place(
            &hosts,
            &crate::networks::base_hosts(container, &state.ip),
        )?;
    }
    container.save_state(&state)
}

fn network_names(container: &Container) -> Vec<String> {
    container
        .config
        .endpoints()
        .into_iter()
        .map(|e| e.network)
        .collect()
}

/// `network inspect`'s `Containers`: id → name and address of each container on `network`.
pub fn network_members(store: &ContainerStore, network: &str) -> Result<Map<String, Value>> {
    let mut members = Map::new();
    for c in store.list()? {
        if !c.on_network(network) {
            continue;
        }
        let Ok(state) = c.state() else { continue };
        let attached = state.attachments(&c.config);
        let ip = attached.get(network).map_or(String::new(), |a| {
            if a.prefix == 0 {
                a.ip.clone()
            } else {
                format!("{}/{}", a.ip, a.prefix)
            }
        });
        members.insert(
            c.config.id.clone(),
            json!({"Name": c.config.name, "IPv4Address": ip}),
        );
    }
    Ok(members)
}
