//! `EXPOSE` port specs, parsed as Docker's `nat.ParsePortSpec` does:
//! `[ip:][hostPort:]port[-endPort][/proto]`, each port of a range exposed on its own.

/// The `port/proto` keys one spec exposes, or why it is invalid.
pub(super) fn parse_port_spec(raw: &str) -> Result<Vec<String>, String> {
    let (ip, host_port, container) = split_parts(raw);
    let (port_text, proto) = match container.split_once('/') {
        Some((port, "")) => (port, "tcp".to_string()),
        Some((port, proto)) => (port, proto.to_lowercase()),
        None => (container, "tcp".to_string()),
    };
    if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
        let bare = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(ip);
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("invalid IP address: {ip}"));
        }
    }
    if port_text.is_empty() {
        return Err(format!("no port specified: {raw}<empty>"));
    }
    let (start, end) =
        port_range(port_text).ok_or_else(|| format!("invalid containerPort: {port_text}"))?;
    if let Some(host) = host_port.filter(|h| !h.is_empty()) {
        let (host_start, host_end) =
            port_range(host).ok_or_else(|| format!("invalid hostPort: {host}"))?;
        if end - start != host_end - host_start && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port_text} and {host}"
            ));
        }
    }
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// `ip:host:container` → its parts; an IPv6 address may itself hold colons.
fn split_parts(raw: &str) -> (Option<&str>, Option<&str>, &str) {
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.len() {
        1 => (None, None, parts[0]),
        2 => (None, Some(parts[0]), parts[1]),
        n => {
            let ip_end = raw.len() - parts[n - 1].len() - parts[n - 2].len() - 2;
            (Some(&raw[..ip_end]), Some(parts[n - 2]), parts[n - 1])
        }
    }
}

/// `80` or `8000-8010` (16-bit decimal ports, leading zeros allowed).
fn port_range(text: &str) -> Option<(u16, u16)> {
    let parse = |s: &str| -> Option<u16> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match text.split_once('-') {
        None => parse(text).map(|p| (p, p)),
        Some((a, b)) => {
            let (start, end) = (parse(a)?, parse(b)?);
            (end >= start).then_some((start, end))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_expand_like_docker() {
        assert_eq!(parse_port_spec("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_port_spec("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(parse_port_spec("080/").unwrap(), ["80/tcp"]);
        assert_eq!(
            parse_port_spec("7000-7002/sctp").unwrap(),
            ["7000/sctp", "7001/sctp", "7002/sctp"]
        );
        assert_eq!(parse_port_spec("8080:80").unwrap(), ["80/tcp"]);
        assert_eq!(
            parse_port_spec("127.0.0.1:8080:80/udp").unwrap(),
            ["80/udp"]
        );
        assert_eq!(parse_port_spec("[::1]:8080:80").unwrap(), ["80/tcp"]);
        assert_eq!(
            parse_port_spec("2001:4860:0:2001::68::333").unwrap(),
            ["333/tcp"]
        );
        assert_eq!(parse_port_spec("::::80").unwrap(), ["80/tcp"]);
        assert_eq!(
            parse_port_spec("0.0.0.0:1234-1235:3333-3334/tcp").unwrap(),
            ["3333/tcp", "3334/tcp"]
        );
        assert!(parse_port_spec("localhost:1234:1234/tcp").is_err());
    }

    #[test]
    fn bad_specs_are_refused() {
        assert_eq!(parse_port_spec("80/xyz").unwrap_err(), "invalid proto: xyz");
        assert_eq!(
            parse_port_spec("http").unwrap_err(),
            "invalid containerPort: http"
        );
        assert!(parse_port_spec("90-80").is_err());
        assert!(parse_port_spec("70000").is_err());
        assert!(parse_port_spec("/tcp").is_err());
        assert!(parse_port_spec("nope:80:80").is_err());
    }
}
