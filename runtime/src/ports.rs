//! Published ports: docker's `-p` syntax with ranges, and the host sockets the monitor binds
//! to reserve them (a port in use is a clear error before anything else is made).

use std::net::{Ipv4Addr, TcpListener, UdpSocket};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

/// One published container port: `-p [IP:]HOST:CONTAINER[/udp]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PortMapping {
    /// Empty for all addresses.
    pub host_ip: String,
    /// 0: chosen at start.
    pub host_port: u16,
    /// With `-p 8000-8010:80`: the last host port to try (the first free one is bound).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_port_end: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl PortMapping {
    /// Parses one `-p` naming a single container port.
    pub fn parse(spec: &str) -> Result<PortMapping> {
        match Self::parse_range(spec)?.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!("-p {spec:?}: want a single port here, not a range"),
        }
    }

    /// Every `-p` flag, ranges expanded to one mapping per container port.
    pub fn parse_list(specs: &[String]) -> Result<Vec<PortMapping>> {
        let mut out = Vec::new();
        for spec in specs {
            out.extend(Self::parse_range(spec)?);
        }
        Ok(out)
    }

    /// Parses docker's `-p [IP:][HOST[-END]:]CONTAINER[-END][/tcp|/udp]`: a container range
    /// maps onto a host range of the same length (or onto ephemeral ports); one container
    /// port with a host range takes the first free host port of it.
    pub fn parse_range(spec: &str) -> Result<Vec<PortMapping>> {
        let bad =
            || anyhow!("-p {spec:?}: want [IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]");
        let (ports, protocol) = match spec.rsplit_once('/') {
            Some((p, proto @ ("tcp" | "udp"))) => (p, proto),
            Some(_) => return Err(bad()),
            None => (spec, "tcp"),
        };
        let parts: Vec<&str> = ports.rsplitn(3, ':').collect();
        let (host_ip, host, container) = match parts.as_slice() {
            [c] => ("", "", *c),
            [c, h] => ("", *h, *c),
            [c, h, ip] => {
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| anyhow!("-p {spec:?}: {ip:?} is not an IPv4 address"))?;
                (*ip, *h, *c)
            }
            _ => return Err(bad()),
        };
        let range = |s: &str| -> Result<(u16, u16)> {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let (a, b) = (a.parse::<u16>(), b.parse::<u16>());
            match (a, b) {
                (Ok(a), Ok(b)) if a <= b => Ok((a, b)),
                _ => Err(bad()),
            }
        };
        let (c1, c2) = range(container)?;
        let (h1, h2) = if host.is_empty() {
            (0, 0)
        } else {
            range(host)?
        };
        if c1 == 0 || (h1 == 0 && h2 != 0) {
            return Err(bad());
        }
        let host_ip = if host_ip == "0.0.0.0" { "" } else { host_ip };
        let one = |host_port, host_port_end, container_port| PortMapping {
            host_ip: host_ip.to_string(),
            host_port,
            host_port_end,
            container_port,
            protocol: protocol.into(),
        };
        if c1 == c2 {
            return Ok(vec![one(h1, if h2 > h1 { h2 } else { 0 }, c1)]);
        }
        if h1 != 0 && h2 - h1 != c2 - c1 {
            bail!("-p {spec:?}: the host range {host} and the container range {container} differ in length");
        }
        Ok((0..=c2 - c1)
            .map(|i| one(if h1 == 0 { 0 } else { h1 + i }, 0, c1 + i))
            .collect())
    }

    fn host_addr(&self) -> &str {
        if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        }
    }
}

/// A bound host socket reserving a published port.
pub enum Reservation {
    Tcp(#[allow(dead_code)] TcpListener),
    Udp(#[allow(dead_code)] UdpSocket),
}

/// Binds each host port (port 0: the kernel picks one; a host range: its first free port);
/// an address in use is a clear error and every socket bound so far is closed again.
pub fn reserve_ports(ports: &[PortMapping]) -> Result<(Vec<Reservation>, Vec<PortMapping>)> {
    let mut held = Vec::new();
    let mut resolved = Vec::new();
    for p in ports {
        let last = p.host_port_end.max(p.host_port);
        let mut outcome = Err(anyhow!("no port to bind"));
        for port in p.host_port..=last {
            outcome = bind(p, port);
            if outcome.is_ok() {
                break;
            }
        }
        let (reservation, port) = match outcome {
            Ok(bound) => bound,
            Err(e) if last > p.host_port => bail!(
                "cannot publish port {}:{}-{last}/{}: no free port in the range (last error: {e})",
                p.host_addr(),
                p.host_port,
                p.protocol
            ),
            Err(e) => return Err(e),
        };
        held.push(reservation);
        resolved.push(PortMapping {
            host_port: port,
            host_port_end: 0,
            ..p.clone()
        });
    }
    Ok((held, resolved))
}

fn bind(p: &PortMapping, port: u16) -> Result<(Reservation, u16)> {
    let addr = format!("{}:{port}", p.host_addr());
    let in_use = |e: std::io::Error| {
        anyhow!(
            "cannot publish port {addr}/{}: {e} (is another container or program using it?)",
            p.protocol
        )
    };
    Ok(if p.protocol == "udp" {
        let s = UdpSocket::bind(&addr).map_err(in_use)?;
        let port = s.local_addr()?.port();
        (Reservation::Udp(s), port)
    } else {
        let s = TcpListener::bind(&addr).map_err(in_use)?;
        let port = s.local_addr()?.port();
        (Reservation::Tcp(s), port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triples(spec: &str) -> Vec<(String, u16, u16, u16, String)> {
        PortMapping::parse_range(spec)
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.host_ip,
                    p.host_port,
                    p.host_port_end,
                    p.container_port,
                    p.protocol,
                )
            })
            .collect()
    }

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

    #[test]
    fn ranges_expand_to_one_mapping_per_port() {
        assert_eq!(
            triples("8000-8002:80-82"),
            [
                ("".into(), 8000, 0, 80, "tcp".into()),
                ("".into(), 8001, 0, 81, "tcp".into()),
                ("".into(), 8002, 0, 82, "tcp".into())
            ]
        );
        assert_eq!(
            triples("127.0.0.1:9000-9001:9000-9001/udp"),
            [
                ("127.0.0.1".into(), 9000, 0, 9000, "udp".into()),
                ("127.0.0.1".into(), 9001, 0, 9001, "udp".into())
            ]
        );
        assert_eq!(
            triples("7000-7005:80"),
            [("".into(), 7000, 7005, 80, "tcp".into())]
        );
        assert_eq!(triples("90-91").len(), 2);
        assert_eq!(triples("90-91")[1].1, 0, "ephemeral host ports");
        let err = |s: &str| format!("{:#}", PortMapping::parse_range(s).unwrap_err());
        assert!(err("8000-8001:80-82").contains("differ in length"));
        assert!(err("82-80").contains("want [IP:]"));
        assert!(err("8000:80-82").contains("differ in length"));
        assert!(PortMapping::parse("80-81").is_err());
    }

    #[test]
    fn a_range_partly_in_use_binds_nothing() {
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let start = port - 1;
        let spec = format!("127.0.0.1:{start}-{}:80-82", port + 1);
        let err = reserve_ports(&PortMapping::parse_range(&spec).unwrap()).err();
        let err = format!("{:#}", err.expect("port in use"));
        assert!(err.contains(&format!("127.0.0.1:{port}/tcp")), "{err}");
        // The port before the busy one was bound and released again.
        if TcpListener::bind(("127.0.0.1", start)).is_err() {
            eprintln!("port {start} taken by another program meanwhile; not conclusive");
        }
        // A host range skips the busy port.
        let p = PortMapping::parse_range(&format!("127.0.0.1:{port}-{}:80", port + 1)).unwrap();
        if let Ok((_held, resolved)) = reserve_ports(&p) {
            assert_eq!(resolved[0].host_port, port + 1);
        }
    }
}
