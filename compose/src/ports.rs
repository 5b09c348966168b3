//! Port short syntax (`[ip:][host[-range]:]container[-range][/proto]`), parsed
//! as docker/go-connections `nat` v0.4.0 does and converted to the long form.

use crate::yaml::{Map, Node, Value};
use std::net::IpAddr;

/// One container port (or range) and the host side it binds to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub start: u16,
    pub end: u16,
    pub proto: String,
    pub host_ip: String,
    pub host_port: String,
}

impl PortMapping {
    /// nat's `Port` string: `1234/tcp` or `1234-1240/tcp`.
    pub fn key(&self) -> String {
        if self.start == self.end {
            format!("{}/{}", self.start, self.proto)
        } else {
            format!("{}-{}/{}", self.start, self.end, self.proto)
        }
    }
}

/// Go's `strconv.ParseUint(s, 10, 16)`, with its error wording.
pub fn parse_u16(s: &str) -> Result<u16, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
    }
    s.parse::<u16>()
        .map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))
}

/// `nat.ParsePortRange`: `"8000-8080"` or `"8080"`.
pub fn parse_port_range(ports: &str) -> Result<(u16, u16), String> {
    if ports.is_empty() {
        return Err("Empty string specified for ports.".into());
    }
    let Some((a, b)) = ports.split_once('-') else {
        let p = parse_u16(ports)?;
        return Ok((p, p));
    };
    let b = b.split('-').next().unwrap_or("");
    let (start, end) = (parse_u16(a)?, parse_u16(b)?);
    if end < start {
        return Err(format!("Invalid range specified for the Port: {ports}"));
    }
    Ok((start, end))
}

/// `nat.SplitProtoPort`: `"1234/udp"` → `("udp", "1234")`.
pub fn split_proto_port(raw: &str) -> (String, String) {
    let parts: Vec<&str> = raw.split('/').collect();
    if raw.is_empty() || parts[0].is_empty() {
        return (String::new(), String::new());
    }
    if parts.len() == 1 || parts[1].is_empty() {
        return ("tcp".into(), parts[0].into());
    }
    (parts[1].into(), parts[0].into())
}

fn split_parts(raw: &str) -> (String, String, String) {
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let container = parts[n - 1].to_string();
    match n {
        1 => (String::new(), String::new(), container),
        2 => (String::new(), parts[0].into(), container),
        3 => (parts[0].into(), parts[1].into(), container),
        _ => (parts[..n - 2].join(":"), parts[n - 2].into(), container),
    }
}

/// `nat.ParsePortSpec`: one spec, expanded to one mapping per container port.
pub fn parse_port_spec(raw: &str) -> Result<Vec<PortMapping>, String> {
    let (mut ip, host_port, container) = split_parts(raw);
    let (proto, container) = split_proto_port(&container);
    if let Some(inner) = ip.strip_prefix('[') {
        ip = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("Invalid ip address {ip}"))?
            .to_string();
    }
    if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
        return Err(format!("Invalid ip address: {ip}"));
    }
    if container.is_empty() {
        return Err(format!("No port specified: {raw}<empty>"));
    }
    let (start, end) =
        parse_port_range(&container).map_err(|_| format!("Invalid containerPort: {container}"))?;
    let (host_start, host_end) = if host_port.is_empty() {
        (0, 0)
    } else {
        parse_port_range(&host_port).map_err(|_| format!("Invalid hostPort: {host_port}"))?
    };
    if !host_port.is_empty() && end - start != host_end - host_start && end != start {
        return Err(format!(
            "Invalid ranges specified for container and host Ports: {container} and {host_port}"
        ));
    }
    let proto_lower = proto.to_lowercase();
    if !["tcp", "udp", "sctp"].contains(&proto_lower.as_str()) {
        return Err(format!("Invalid proto: {proto}"));
    }
    let mut out = Vec::new();
    for i in 0..=(end - start) {
        let mut host = if host_port.is_empty() {
            String::new()
        } else {
            (host_start + i).to_string()
        };
        if start == end && host_start != host_end {
            host = format!("{host}-{host_end}");
        }
        let port = start + i;
        out.push(PortMapping {
            start: port,
            end: port,
            proto: proto_lower.clone(),
            host_ip: ip.clone(),
            host_port: host,
        });
    }
    Ok(out)
}

/// compose-go's `ParsePortConfig`: one short-syntax string to long-form ports,
/// sorted by nat's port key as a string.
pub fn parse_port_config(value: &str) -> Result<Vec<Node>, String> {
    let mut mappings = parse_port_spec(value)?;
    mappings.sort_by_key(|m| m.key());
    Ok(mappings.iter().map(long_port).collect())
}

fn long_port(m: &PortMapping) -> Node {
    let mut map = Map::new();
    map.insert("mode".into(), Node::str("ingress"));
    if !m.host_ip.is_empty() {
        map.insert("host_ip".into(), Node::str(&m.host_ip));
    }
    map.insert("target".into(), Node::new(Value::Int(m.start.into())));
    if !m.host_port.is_empty() {
        map.insert("published".into(), Node::str(&m.host_port));
    }
    map.insert("protocol".into(), Node::str(&m.proto));
    Node::map(map)
}

/// Long-syntax defaults: `protocol: tcp`, `mode: ingress`, `published` as a string.
pub fn port_defaults(port: &mut Map) {
    port.entry("mode".to_string())
        .or_insert_with(|| Node::str("ingress"));
    port.entry("protocol".to_string())
        .or_insert_with(|| Node::str("tcp"));
}

/// The whole `ports:` list to long form. With `ignore_errors` (before
/// interpolation), a list with an unparsable entry is returned unchanged.
pub fn transform_ports(list: &[Node], ignore_errors: bool) -> Result<Vec<Node>, String> {
    let mut out = Vec::new();
    for item in list {
        match &item.value {
            Value::Map(m) => {
                let mut m = m.clone();
                if let Some(p) = m.get_mut("published") {
                    if let Some(t) = p.scalar_text() {
                        p.value = Value::Str(t);
                    }
                }
                if let Some(t) = m.get_mut("target") {
                    if let Some(n) = t.as_str().and_then(|s| s.parse::<i64>().ok()) {
                        t.value = Value::Int(n);
                    }
                }
                let mut node = Node {
                    value: Value::Map(m),
                    ..item.clone()
                };
                port_defaults(node.as_map_mut().expect("map"));
                out.push(node);
            }
            _ => {
                let text = item.scalar_text().unwrap_or_default();
                match parse_port_config(&text) {
                    Ok(ports) => out.extend(ports.into_iter().map(|mut p| {
                        p.pos = item.pos;
                        p
                    })),
                    Err(_) if ignore_errors => return Ok(list.to_vec()),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(out)
}
