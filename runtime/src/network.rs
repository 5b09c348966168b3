//! The default `bridge` network: a Linux bridge `builder0` (10.88.0.0/16, not docker's
//! 172.17/16), one veth pair per container into a network namespace bind-mounted at
//! `ROOT/containers/ID/netns`, outbound NAT, and `-p` through DNAT, all in our own nftables
//! table `inet builder`.
//!
//! Everything a container adds is named after its id (veth `vb<id>`, nft rule comments, IPAM
//! entry, netns file), so [`teardown`] needs no record and can run again after a crash.
//! The bridge is host-global, so its address record is too: `/run/builder/BRIDGE-ipam.json`
//! (under a lock; /run empties at reboot, exactly when the veths are gone).
//!
//! Published ports on 127.0.0.1 are DNAT'd too: `route_localnet` is set on `builder0` only and
//! loopback sources leaving on it are masqueraded (kube-proxy's approach), so no userland proxy
//! copies the bytes. Each published port is also bound (and held) by the monitor, which
//! reserves it against other programs and gives a clear error when it is already in use.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::networks::NetworkRecord;
use crate::store::Container;

pub const BRIDGE: &str = "builder0";
/// Name prefix of user-defined networks' bridges (docker's is `br-`).
pub const USER_BRIDGE_PREFIX: &str = "bn-";
/// Covers the default bridge (10.88.0.0/16) and user networks (10.89.N.0/24).
const ALL_SUBNETS: &str = "10.88.0.0/15";
const TABLE: &str = "builder";
const IPAM_DIR: &str = "/run/builder";

/// One `-p [IP:]HOST:CONTAINER[/udp]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PortMapping {
    /// Empty for all addresses.
    pub host_ip: String,
    /// 0: chosen at start.
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl PortMapping {
    /// Parses docker's `-p` syntax.
    pub fn parse(spec: &str) -> Result<PortMapping> {
        let bad = || anyhow!("-p {spec:?}: want [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]");
        let (ports, protocol) = match spec.rsplit_once('/') {
            Some((p, proto @ ("tcp" | "udp"))) => (p, proto),
            Some(_) => return Err(bad()),
            None => (spec, "tcp"),
        };
        let parts: Vec<&str> = ports.rsplitn(3, ':').collect();
        let port = |s: &str| s.parse::<u16>().map_err(|_| bad());
        let (host_ip, host_port, container_port) = match parts.as_slice() {
            [c] => (String::new(), 0, port(c)?),
            [c, h] => (
                String::new(),
                if h.is_empty() { 0 } else { port(h)? },
                port(c)?,
            ),
            [c, h, ip] => {
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| anyhow!("-p {spec:?}: {ip:?} is not an IPv4 address"))?;
                (
                    ip.to_string(),
                    if h.is_empty() { 0 } else { port(h)? },
                    port(c)?,
                )
            }
            _ => return Err(bad()),
        };
        if container_port == 0 {
            return Err(bad());
        }
        let host_ip = if host_ip == "0.0.0.0" {
            String::new()
        } else {
            host_ip
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol: protocol.into(),
        })
    }
}

/// What the monitor holds while the container runs.
pub struct Attachment {
    pub ip: Ipv4Addr,
    pub ports: Vec<PortMapping>,
    /// Bound sockets reserving the published host ports.
    _reservations: Vec<Reservation>,
}

enum Reservation {
    Tcp(#[allow(dead_code)] TcpListener),
    Udp(#[allow(dead_code)] UdpSocket),
}

pub fn netns_path(container: &Container) -> PathBuf {
    container.dir.join("netns")
}

fn host_veth(id: &str) -> String {
    format!("vb{}", &id[..11])
}

fn peer_veth(id: &str) -> String {
    format!("vc{}", &id[..11])
}

/// Connects the container to the bridge; on error everything made so far is removed.
pub fn setup(
    container: &Container,
    net: &NetworkRecord,
    ports: &[PortMapping],
) -> Result<Attachment> {
    let result = try_setup(container, net, ports);
    if result.is_err() {
        teardown(container);
    }
    result
}

fn try_setup(
    container: &Container,
    net: &NetworkRecord,
    ports: &[PortMapping],
) -> Result<Attachment> {
    let (reservations, ports) = reserve_ports(ports)?;
    ensure_bridge(net)?;
    ensure_table()?;
    let ip = allocate_ip(container, net)?;
    // After the lease exists, so a concurrent last teardown cannot remove them under us.
    allow_iptables_forward();
    let (bridge, gateway, prefix) = (&net.bridge, net.gateway_ip()?, net.prefix()?);
    let netns = netns_path(container);
    std::fs::File::create(&netns).with_context(|| format!("creating {}", netns.display()))?;
    run("unshare", &[&format!("--net={}", netns.display()), "true"])?;
    let id = container.id();
    let (host, peer) = (host_veth(id), peer_veth(id));
    run(
        "ip",
        &["link", "add", &host, "type", "veth", "peer", "name", &peer],
    )?;
    run(
        "ip",
        &["link", "set", &peer, "netns", &netns.to_string_lossy()],
    )?;
    run("ip", &["link", "set", &host, "master", bridge, "up"])?;
    let inside = format!(
        "link set {peer} name eth0\naddr add {ip}/{prefix} dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {gateway}\n"
    );
    run_stdin(
        "nsenter",
        &[&format!("--net={}", netns.display()), "ip", "-batch", "-"],
        &inside,
    )?;
    add_port_rules(id, ip, &ports)?;
    Ok(Attachment {
        ip,
        ports,
        _reservations: reservations,
    })
}

/// Binds each host port (port 0: the kernel picks one); an address in use is a clear error.
fn reserve_ports(ports: &[PortMapping]) -> Result<(Vec<Reservation>, Vec<PortMapping>)> {
    let mut held = Vec::new();
    let mut resolved = Vec::new();
    for p in ports {
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        let addr = format!("{ip}:{}", p.host_port);
        let in_use = |e: std::io::Error| {
            anyhow!(
                "cannot publish port {addr}/{}: {e} (is another container or program using it?)",
                p.protocol
            )
        };
        let (reservation, port) = if p.protocol == "udp" {
            let s = UdpSocket::bind(&addr).map_err(in_use)?;
            let port = s.local_addr()?.port();
            (Reservation::Udp(s), port)
        } else {
            let s = TcpListener::bind(&addr).map_err(in_use)?;
            let port = s.local_addr()?.port();
            (Reservation::Tcp(s), port)
        };
        held.push(reservation);
        resolved.push(PortMapping {
            host_port: port,
            ..p.clone()
        });
    }
    Ok((held, resolved))
}

fn ensure_bridge(net: &NetworkRecord) -> Result<()> {
    let bridge = net.bridge.as_str();
    if !link_exists(bridge) {
        // Two starts may race to create it; the loser's "File exists" is fine.
        let _ = run("ip", &["link", "add", bridge, "type", "bridge"]);
        let gateway = format!("{}/{}", net.gateway, net.prefix()?);
        let _ = run("ip", &["addr", "add", &gateway, "dev", bridge]);
    }
    run("ip", &["link", "set", bridge, "up"])?;
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    )?;
    allow_iptables_forward();
    Ok(())
}

/// Deletes a user network's bridge (its containers are gone).
pub fn remove_bridge(net: &NetworkRecord) {
    if link_exists(&net.bridge) {
        let _ = run("ip", &["link", "del", &net.bridge]);
    }
}

/// Asks the kernel rather than /sys, which shows the interfaces of the namespace it was
/// mounted in, not necessarily ours.
fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("setting {path}"))
}

/// Our accept rules for iptables' FORWARD chain (docker hosts set its policy to DROP, which
/// our nftables table cannot override: every base chain must accept).
fn forward_rules() -> Vec<[String; 5]> {
    let user = format!("{USER_BRIDGE_PREFIX}+");
    [
        ("-i", BRIDGE),
        ("-o", BRIDGE),
        ("-i", user.as_str()),
        ("-o", user.as_str()),
    ]
    .iter()
    .map(|(dir, name)| {
        [
            "FORWARD".into(),
            dir.to_string(),
            name.to_string(),
            "-j".into(),
            "ACCEPT".into(),
        ]
    })
    .collect()
}

fn has_filter_forward() -> bool {
    Command::new("nft")
        .args(["list", "chain", "ip", "filter", "FORWARD"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn iptables(op: &str, rule: &[String; 5]) -> bool {
    Command::new("iptables")
        .arg(op)
        .args(rule)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Adds the accept rules, only where the filter FORWARD chain exists: asking iptables on a
/// host without it would create the table.
fn allow_iptables_forward() {
    if !has_filter_forward() {
        return;
    }
    for rule in forward_rules() {
        if !iptables("-C", &rule) {
            iptables("-I", &rule);
        }
    }
}

/// Removes the accept rules once no container holds an address (called under the IPAM lock).
fn remove_iptables_forward_if_unused() {
    let in_use = std::fs::read_dir(IPAM_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name().to_string_lossy().ends_with("-ipam.json")
                && std::fs::read(e.path())
                    .ok()
                    .and_then(|d| serde_json::from_slice::<Leases>(&d).ok())
                    .is_some_and(|l| !l.is_empty())
        });
    if in_use || !has_filter_forward() {
        return;
    }
    for rule in forward_rules() {
        while iptables("-C", &rule) && iptables("-D", &rule) {}
    }
}

/// Creates our table and its chains, and (re)writes its static rules in one transaction.
fn ensure_table() -> Result<()> {
    let (subnet, user) = (ALL_SUBNETS, format!("{USER_BRIDGE_PREFIX}*"));
    let script = format!(
        "add table inet {TABLE}
add chain inet {TABLE} prerouting {{ type nat hook prerouting priority dstnat; }}
add chain inet {TABLE} output {{ type nat hook output priority -100; }}
add chain inet {TABLE} postrouting {{ type nat hook postrouting priority srcnat; }}
add chain inet {TABLE} forward {{ type filter hook forward priority filter; }}
flush chain inet {TABLE} postrouting
flush chain inet {TABLE} forward
add rule inet {TABLE} postrouting ip saddr {subnet} ip daddr != {subnet} masquerade
add rule inet {TABLE} postrouting oifname \"{BRIDGE}\" ip saddr 127.0.0.0/8 masquerade
add rule inet {TABLE} postrouting oifname \"{user}\" ip saddr 127.0.0.0/8 masquerade
{isolation}add rule inet {TABLE} forward iifname \"{BRIDGE}\" accept
add rule inet {TABLE} forward oifname \"{BRIDGE}\" accept
add rule inet {TABLE} forward iifname \"{user}\" accept
add rule inet {TABLE} forward oifname \"{user}\" accept
",
        isolation = isolation_rules()
    );
    run_stdin("nft", &["-f", "-"], &script)
}

/// Drops traffic routed from one of our bridges to another, as docker isolates networks:
/// containers meet only on a network they share.
fn isolation_rules() -> String {
    let mut bridges = vec![BRIDGE.to_string()];
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(USER_BRIDGE_PREFIX) {
                bridges.push(name);
            }
        }
    }
    let ours = format!("{{ \"{BRIDGE}\", \"{USER_BRIDGE_PREFIX}*\" }}");
    bridges
        .iter()
        .map(|b| {
            format!("add rule inet {TABLE} forward iifname \"{b}\" oifname != \"{b}\" oifname {ours} drop\n")
        })
        .collect()
}

fn add_port_rules(id: &str, ip: Ipv4Addr, ports: &[PortMapping]) -> Result<()> {
    let mut script = String::new();
    for p in ports {
        let daddr = if p.host_ip.is_empty() {
            "fib daddr type local".to_string()
        } else {
            format!("ip daddr {}", p.host_ip)
        };
        for chain in ["prerouting", "output"] {
            script.push_str(&format!(
                "add rule inet {TABLE} {chain} {daddr} {proto} dport {hp} dnat ip to {ip}:{cp} comment \"{id}\"\n",
                proto = p.protocol,
                hp = p.host_port,
                cp = p.container_port,
            ));
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    run_stdin("nft", &["-f", "-"], &script)
}

/// Removes whatever the container's network left: nft rules, veth, netns, address.
/// Idempotent, and silent about parts that are already gone.
pub fn teardown(container: &Container) {
    let id = container.id();
    delete_rules(id);
    if link_exists(&host_veth(id)) {
        let _ = run("ip", &["link", "del", &host_veth(id)]);
    }
    let netns = netns_path(container);
    if netns.exists() {
        let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&netns);
    }
    let _ = release_ip(id);
    // Peers on the network must stop resolving its name.
    if let Some(root) = container.dir.parent().and_then(Path::parent) {
        if let Ok(store) = crate::store::ContainerStore::open(root) {
            let _ =
                crate::networks::refresh_hosts(&store, &container.config.network_mode, Some(id));
        }
    }
}

fn delete_rules(id: &str) {
    let Ok(out) = Command::new("nft")
        .args(["-j", "list", "table", "inet", TABLE])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return;
    };
    let mut script = String::new();
    for item in json["nftables"].as_array().into_iter().flatten() {
        let rule = &item["rule"];
        if rule["comment"].as_str() == Some(id) {
            script.push_str(&format!(
                "delete rule inet {TABLE} {} handle {}\n",
                rule["chain"].as_str().unwrap_or(""),
                rule["handle"]
            ));
        }
    }
    if !script.is_empty() {
        let _ = run_stdin("nft", &["-f", "-"], &script);
    }
}

/// `ip → "ROOT ID"` of every address in use on the bridge.
type Leases = BTreeMap<String, String>;

fn lease_file(bridge: &str) -> PathBuf {
    Path::new(IPAM_DIR).join(format!("{bridge}-ipam.json"))
}

fn with_leases<T>(bridge: &str, change: impl FnOnce(&mut Leases) -> Result<T>) -> Result<T> {
    std::fs::create_dir_all(IPAM_DIR)?;
    let _lock = crate::store::FileLock::exclusive(&Path::new(IPAM_DIR).join("ipam.lock"))?;
    let path = lease_file(bridge);
    let mut leases: Leases = match std::fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data).unwrap_or_default(),
        Err(_) => Leases::new(),
    };
    let result = change(&mut leases)?;
    crate::store::write_atomic(&path, &serde_json::to_vec_pretty(&leases)?)?;
    Ok(result)
}

fn allocate_ip(container: &Container, net: &NetworkRecord) -> Result<Ipv4Addr> {
    let owner = format!(
        "{} {}",
        container.dir.parent().unwrap_or(Path::new("")).display(),
        container.id()
    );
    let (gateway, prefix) = (u32::from(net.gateway_ip()?), net.prefix()?);
    with_leases(&net.bridge, |leases| {
        // Addresses of containers whose directory is gone were leaked by a crash.
        leases.retain(|_, who| {
            who.split_once(' ')
                .is_some_and(|(dir, id)| Path::new(dir).join(id).exists())
        });
        leases.retain(|_, who| *who != owner);
        for n in 2u32..(1 << (32 - prefix)) - 1 {
            let ip = Ipv4Addr::from(gateway - 1 + n);
            if let std::collections::btree_map::Entry::Vacant(free) = leases.entry(ip.to_string()) {
                free.insert(owner.clone());
                return Ok(ip);
            }
        }
        bail!("no free address left on network {}", net.name)
    })
}

/// Frees the container's address on whichever bridge it had one.
fn release_ip(id: &str) -> Result<()> {
    for entry in std::fs::read_dir(IPAM_DIR)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(bridge) = name.strip_suffix("-ipam.json") else {
            continue;
        };
        if std::fs::read_to_string(entry.path()).is_ok_and(|t| t.contains(id)) {
            with_leases(bridge, |leases| {
                leases.retain(|_, who| !who.ends_with(&format!(" {id}")));
                Ok(())
            })?;
            let _lock = crate::store::FileLock::exclusive(&Path::new(IPAM_DIR).join("ipam.lock"))?;
            remove_iptables_forward_if_unused();
        }
    }
    Ok(())
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    run_stdin_opt(program, args, None)
}

fn run_stdin(program: &str, args: &[&str], input: &str) -> Result<()> {
    run_stdin_opt(program, args, Some(input))
}

fn run_stdin_opt(program: &str, args: &[&str], input: Option<&str>) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (see scripts/install-deps.sh)"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_parse() {
        let p = PortMapping::parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            (
                p.host_ip.as_str(),
                p.host_port,
                p.container_port,
                p.protocol.as_str()
            ),
            ("127.0.0.1", 8080, 80, "udp")
        );
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port),
            ("", 8080, 80)
        );
        assert_eq!(PortMapping::parse("80").unwrap().host_port, 0);
        assert!(PortMapping::parse("x:80").is_err());
        assert!(PortMapping::parse("80/sctp").is_err());
        assert!(PortMapping::parse("nothost:1:2").is_err());
    }
}
