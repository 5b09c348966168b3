//! The default `bridge` network: a Linux bridge `builder0` (10.88.0.0/16, not docker's
//! 172.17/16), one veth pair per container into a network namespace bind-mounted at
//! `ROOT/containers/ID/netns`, outbound NAT, and `-p` through DNAT, all in our own nftables
//! table `inet builder`.
//!
//! Everything a container adds is named after its id (veths `vb<id>[NN]`, nft rule comments,
//! IPAM entries, netns file), so [`teardown`] needs no record and can run again after a crash.
//! A container may join several networks (`eth0` on the first, `eth1`...; see `endpoints`).
//! The bridge is host-global, so its address record is too: `/run/builder/BRIDGE-ipam.json`
//! (under a lock; /run empties at reboot, exactly when the veths are gone).
//!
//! Published ports on 127.0.0.1 are DNAT'd too: `route_localnet` is set on `builder0` only and
//! loopback sources leaving on it are masqueraded (kube-proxy's approach), so no userland proxy
//! copies the bytes. Each published port is also bound (and held) by the monitor, which
//! reserves it against other programs and gives a clear error when it is already in use.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::endpoints::{Attached, Endpoint};
use crate::networks::NetworkRecord;
pub use crate::ports::PortMapping;
use crate::store::Container;

pub const BRIDGE: &str = "builder0";
/// Name prefix of user-defined networks' bridges (docker's is `br-`).
pub const USER_BRIDGE_PREFIX: &str = "bn-";
/// Covers the default bridge (10.88.0.0/16) and user networks (10.89.N.0/24).
const ALL_SUBNETS: &str = "10.88.0.0/15";
const TABLE: &str = "builder";
const IPAM_DIR: &str = "/run/builder";

/// What the monitor holds while the container runs.
pub struct Attachment {
    /// The primary interface's address (ports, hostname), if any network is joined.
    pub ip: Option<Ipv4Addr>,
    pub networks: BTreeMap<String, Attached>,
    pub ports: Vec<PortMapping>,
    /// Bound sockets reserving the published host ports.
    _reservations: Vec<crate::ports::Reservation>,
}

pub fn netns_path(container: &Container) -> PathBuf {
    container.dir.join("netns")
}

/// The host end of interface `index`: `vb<id>` for eth0, `vb<id><NN>` for the others.
fn host_veth(id: &str, index: u8) -> String {
    match index {
        0 => format!("vb{}", &id[..11]),
        n => format!("vb{}{n:02x}", &id[..11]),
    }
}

fn peer_veth(id: &str, index: u8) -> String {
    match index {
        0 => format!("vc{}", &id[..11]),
        n => format!("vc{}{n:02x}", &id[..11]),
    }
}

/// Gives the container its network namespace with one interface per endpoint (the first
/// carries the default route and the published ports); on error everything made so far
/// is removed.
pub fn setup(
    container: &Container,
    endpoints: &[(NetworkRecord, Endpoint)],
    ports: &[PortMapping],
) -> Result<Attachment> {
    let result = try_setup(container, endpoints, ports);
    if result.is_err() {
        teardown(container);
    }
    result
}

fn try_setup(
    container: &Container,
    endpoints: &[(NetworkRecord, Endpoint)],
    ports: &[PortMapping],
) -> Result<Attachment> {
    let (reservations, ports) = crate::ports::reserve_ports(ports)?;
    for (net, _) in endpoints {
        ensure_bridge(net)?;
    }
    ensure_table()?;
    let netns = netns_path(container);
    std::fs::File::create(&netns).with_context(|| format!("creating {}", netns.display()))?;
    run("unshare", &[&format!("--net={}", netns.display()), "true"])?;
    if endpoints.is_empty() {
        in_netns(container, "link set lo up\n")?;
    }
    let mut networks = BTreeMap::new();
    let mut ip = None;
    for (index, (net, endpoint)) in endpoints.iter().enumerate() {
        let attached = attach(container, net, endpoint, index as u8, index == 0)?;
        ip = ip.or(attached.ip.parse().ok());
        networks.insert(net.name.clone(), attached);
    }
    match ip {
        Some(ip) => add_port_rules(container.id(), ip, &ports)?,
        None if !ports.is_empty() => {
            bail!("published ports need a network: the container is connected to none")
        }
        None => {}
    }
    Ok(Attachment {
        ip,
        networks,
        ports,
        _reservations: reservations,
    })
}

/// One interface: an address from the network's IPAM, a veth pair from its bridge into the
/// container's namespace as `eth<index>`.
fn attach(
    container: &Container,
    net: &NetworkRecord,
    endpoint: &Endpoint,
    index: u8,
    default_route: bool,
) -> Result<Attached> {
    let requested = match &endpoint.ipv4_address {
        Some(ip) => Some(crate::endpoints::check_static_ip(net, ip, "address")?),
        None => None,
    };
    let ip = allocate_ip(container, net, requested)?;
    // After the lease exists, so a concurrent last teardown cannot remove them under us.
    allow_iptables_forward();
    let (gateway, prefix) = (net.gateway_ip()?, net.prefix()?);
    let id = container.id();
    let (host, peer) = (host_veth(id, index), peer_veth(id, index));
    run(
        "ip",
        &["link", "add", &host, "type", "veth", "peer", "name", &peer],
    )?;
    let netns = netns_path(container);
    run(
        "ip",
        &["link", "set", &peer, "netns", &netns.to_string_lossy()],
    )?;
    run("ip", &["link", "set", &host, "master", &net.bridge, "up"])?;
    let mut inside = format!(
        "link set {peer} name eth{index}\naddr add {ip}/{prefix} dev eth{index}\nlink set eth{index} up\nlink set lo up\n"
    );
    if default_route {
        inside.push_str(&format!("route add default via {gateway}\n"));
    }
    in_netns(container, &inside)?;
    Ok(Attached {
        ip: ip.to_string(),
        prefix,
        gateway: gateway.to_string(),
        index,
        bridge: net.bridge.clone(),
    })
}

/// Runs `ip -batch` commands inside the container's network namespace.
fn in_netns(container: &Container, commands: &str) -> Result<()> {
    let netns = netns_path(container);
    run_stdin(
        "nsenter",
        &[&format!("--net={}", netns.display()), "ip", "-batch", "-"],
        commands,
    )
}

/// Adds an interface to a running container's namespace (`network connect`); on error
/// nothing of it is left.
pub fn connect_endpoint(
    container: &Container,
    net: &NetworkRecord,
    endpoint: &Endpoint,
    index: u8,
    default_route: bool,
) -> Result<Attached> {
    ensure_bridge(net)?;
    ensure_table()?;
    let result = attach(container, net, endpoint, index, default_route);
    if result.is_err() {
        remove_interface(container.id(), index, &net.bridge);
    }
    result
}

/// Removes one interface of a running container (`network disconnect`): the host end of
/// its veth (the container's end goes with it) and its address lease.
pub fn disconnect_endpoint(container: &Container, attached: &Attached) {
    remove_interface(container.id(), attached.index, &attached.bridge);
}

fn remove_interface(id: &str, index: u8, bridge: &str) {
    let host = host_veth(id, index);
    if link_exists(&host) {
        let _ = run("ip", &["link", "del", &host]);
    }
    let _ = with_leases(bridge, |leases| {
        leases.retain(|_, who| !who.ends_with(&format!(" {id}")));
        Ok(())
    });
    if let Ok(_lock) = crate::store::FileLock::exclusive(&Path::new(IPAM_DIR).join("ipam.lock")) {
        remove_iptables_forward_if_unused();
    }
}

/// Makes `eth<index>` (through `gateway`) the default route, after the interface that had
/// it was disconnected.
pub fn set_default_route(container: &Container, gateway: &str) -> Result<()> {
    in_netns(container, &format!("route replace default via {gateway}\n"))
}

/// Points the published ports at `ip` (None: no interface left; the rules go).
pub fn repoint_ports(container: &Container, ip: Option<Ipv4Addr>, ports: &[PortMapping]) {
    delete_rules(container.id());
    if let Some(ip) = ip {
        let _ = add_port_rules(container.id(), ip, ports);
    }
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
/// Outbound NAT matches our address range and, for networks given another subnet
/// (`--subnet`, compose `ipam`), anything routed from one of our bridges to the outside.
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
add rule inet {TABLE} postrouting iifname {{ \"{BRIDGE}\", \"{user}\" }} oifname != {{ \"{BRIDGE}\", \"{user}\" }} masquerade
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
    for link in links_starting_with(&format!("vb{}", &id[..11])) {
        let _ = run("ip", &["link", "del", &link]);
    }
    let netns = netns_path(container);
    if netns.exists() {
        let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&netns);
    }
    let _ = release_ip(id);
    // Peers on its networks must stop resolving its name.
    if let Some(root) = container.dir.parent().and_then(Path::parent) {
        if let Ok(store) = crate::store::ContainerStore::open(root) {
            // The caller's copy of the config may predate a `network connect`.
            let config = store
                .load(id)
                .map_or(container.config.clone(), |c| c.config);
            let mut names: Vec<String> =
                config.endpoints().into_iter().map(|e| e.network).collect();
            names.extend(container.config.endpoints().into_iter().map(|e| e.network));
            let _ = crate::networks::refresh_hosts(&store, &names, Some(id), None);
        }
    }
}

/// Host interfaces whose name starts with `prefix` (asking the kernel, as [`link_exists`]).
fn links_starting_with(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() else {
        return vec![];
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|name| name.starts_with(prefix))
        .collect()
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

/// An address on `net` for the container: `requested` (a clear error naming the holder when
/// taken) or the first free one not reserved as another container's static address.
fn allocate_ip(
    container: &Container,
    net: &NetworkRecord,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let owner = format!(
        "{} {}",
        container.dir.parent().unwrap_or(Path::new("")).display(),
        container.id()
    );
    let reserved = reserved_static_ips(container, net);
    let (base, prefix) = crate::endpoints::subnet_of(net)?;
    let gateway = net.gateway_ip()?;
    with_leases(&net.bridge, |leases| {
        // Addresses of containers whose directory is gone were leaked by a crash.
        leases.retain(|_, who| {
            who.split_once(' ')
                .is_some_and(|(dir, id)| Path::new(dir).join(id).exists())
        });
        leases.retain(|_, who| *who != owner);
        if let Some(ip) = requested {
            if let Some(holder) = leases.get(&ip.to_string()) {
                bail!(
                    "address {ip} on network {} is already in use by container {}",
                    net.name,
                    holder_name(holder)
                );
            }
            leases.insert(ip.to_string(), owner.clone());
            return Ok(ip);
        }
        for n in 1u32..(1 << (32 - prefix)) - 1 {
            let ip = Ipv4Addr::from(base + n);
            if ip == gateway || reserved.contains(&ip.to_string()) {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(free) = leases.entry(ip.to_string()) {
                free.insert(owner.clone());
                return Ok(ip);
            }
        }
        bail!("no free address left on network {}", net.name)
    })
}

/// Static addresses other containers of this root ask for on `net`: dynamic allocation
/// leaves them free, so a service with `ipv4_address` can start after the others.
fn reserved_static_ips(container: &Container, net: &NetworkRecord) -> Vec<String> {
    let Some(root) = container.dir.parent().and_then(Path::parent) else {
        return vec![];
    };
    let Ok(all) = crate::store::ContainerStore::open(root).and_then(|s| s.list()) else {
        return vec![];
    };
    all.iter()
        .filter(|c| c.id() != container.id())
        .flat_map(|c| c.config.endpoints())
        .filter(|e| e.network == net.name)
        .filter_map(|e| e.ipv4_address)
        .collect()
}

/// The name of the container holding a lease (`"CONTAINERS_DIR ID"`), or its id.
fn holder_name(holder: &str) -> String {
    let Some((dir, id)) = holder.split_once(' ') else {
        return holder.to_string();
    };
    std::fs::read(Path::new(dir).join(id).join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .and_then(|v| v["name"].as_str().map(String::from))
        .unwrap_or_else(|| id.to_string())
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
