//! Build-wide settings for every `RUN` step, parsed from `docker build`'s flags with docker's
//! syntax: `--network`, `--allow`, `--add-host`, `--ulimit`, `--shm-size`.

use llb::graph::{NetworkMode, Ulimit};
use std::net::IpAddr;

/// Docker's ulimit names (`docker run --ulimit`, go-units).
pub const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// What `RUN` steps get unless the Dockerfile says otherwise.
#[derive(Clone, Debug, Default)]
pub struct RunDefaults {
    /// `--network=none|host`; `None` is `default`.
    pub network: Option<NetworkMode>,
    pub entitlements: Entitlements,
    pub extra_hosts: Vec<(String, String)>,
    pub ulimits: Vec<Ulimit>,
    pub shm_size: Option<u64>,
}

/// buildx's entitlements (`--allow`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entitlements {
    pub network_host: bool,
    pub security_insecure: bool,
}

impl Entitlements {
    /// Adds the `--allow` values (comma-separated lists are accepted too, as buildx).
    pub fn allow(&mut self, value: &str) -> Result<(), String> {
        for name in value.split(',').map(str::trim) {
            match name {
                "network.host" => self.network_host = true,
                "security.insecure" => self.security_insecure = true,
                other => {
                    return Err(format!(
                    "--allow {other:?}: invalid entitlement; use network.host or security.insecure"
                ))
                }
            }
        }
        Ok(())
    }
}

/// `--network`: `default`, `none` or `host` (which needs `--allow network.host`).
pub fn parse_network(value: &str, allowed: Entitlements) -> Result<Option<NetworkMode>, String> {
    match value {
        "default" | "" => Ok(None),
        "none" => Ok(Some(NetworkMode::None)),
        "host" if allowed.network_host => Ok(Some(NetworkMode::Host)),
        "host" => {
            Err("network.host is not allowed: --network=host needs --allow network.host".into())
        }
        other => Err(format!(
            "--network {other:?}: network mode not supported; use default, none or host"
        )),
    }
}

/// `--add-host NAME:IP` or `NAME=IP` (IPv6 as `NAME:[::1]`, `NAME=::1` or `NAME:::1`);
/// `host-gateway` is replaced by `gateway`.
pub fn parse_add_host(value: &str, gateway: IpAddr) -> Result<(String, String), String> {
    let (name, address) = value
        .split_once('=')
        .or_else(|| value.split_once(':'))
        .ok_or_else(|| format!("--add-host {value:?}: want NAME:IP or NAME=IP"))?;
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(format!("--add-host {value:?}: invalid host name {name:?}"));
    }
    let ip = if address == "host-gateway" {
        gateway
    } else {
        address
            .parse::<IpAddr>()
            .map_err(|_| format!("--add-host {value:?}: invalid IP address {address:?}"))?
    };
    Ok((name.to_string(), ip.to_string()))
}

/// `--ulimit NAME=SOFT[:HARD]` (HARD defaults to SOFT; -1 is unlimited).
pub fn parse_ulimit(value: &str) -> Result<Ulimit, String> {
    let bad = |why: &str| format!("--ulimit {value:?}: {why}");
    let (name, limits) = value
        .split_once('=')
        .ok_or_else(|| bad("want NAME=SOFT[:HARD], e.g. nofile=1024:2048"))?;
    if !ULIMIT_NAMES.contains(&name) {
        return Err(bad(&format!(
            "invalid ulimit type {name:?}; use one of {}",
            ULIMIT_NAMES.join(", ")
        )));
    }
    let number = |s: &str| {
        s.parse::<i64>()
            .ok()
            .filter(|n| *n >= -1)
            .ok_or_else(|| bad(&format!("invalid limit {s:?}")))
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => (number(limits)?, number(limits)?),
    };
    let unlimited = |n: i64| if n == -1 { u64::MAX } else { n as u64 };
    if unlimited(soft) > unlimited(hard) {
        return Err(bad(
            "the soft limit must be less than or equal to the hard limit",
        ));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// A size as docker's `RAMInBytes`: bytes, or a number with `k`, `m`, `g`, `t`, `p`
/// (powers of 1024; an optional `b`/`ib` after it).
pub fn parse_size(flag: &str, value: &str) -> Result<u64, String> {
    let bad = || format!("{flag} {value:?}: invalid size; use e.g. 64m, 2g or a number of bytes");
    let lower = value.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim_start();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let bytes = number * (1u64 << shift) as f64;
    if bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_host_forms() {
        let gw: IpAddr = "10.0.0.1".parse().unwrap();
        let ok = |v: &str| parse_add_host(v, gw).unwrap();
        assert_eq!(ok("db:1.2.3.4"), ("db".into(), "1.2.3.4".into()));
        assert_eq!(ok("db=1.2.3.4"), ("db".into(), "1.2.3.4".into()));
        assert_eq!(ok("v6:[::1]"), ("v6".into(), "::1".into()));
        assert_eq!(ok("v6=::1"), ("v6".into(), "::1".into()));
        assert_eq!(ok("v6:::1"), ("v6".into(), "::1".into()));
        assert_eq!(ok("gw:host-gateway"), ("gw".into(), "10.0.0.1".into()));
        let err = parse_add_host("db:999.1.1.1", gw).unwrap_err();
        assert!(
            err.contains("--add-host") && err.contains("999.1.1.1"),
            "{err}"
        );
        assert!(parse_add_host("nocolon", gw).is_err());
        assert!(parse_add_host(":1.2.3.4", gw).is_err());
        // No second line can be smuggled into /etc/hosts through the name.
        assert!(parse_add_host("a\n1.1.1.1 evil:1.2.3.4", gw).is_err());
    }

    #[test]
    fn ulimits() {
        let u = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 1024, 2048));
        let u = parse_ulimit("core=-1").unwrap();
        assert_eq!((u.soft, u.hard), (-1, -1));
        assert_eq!(parse_ulimit("nproc=10").unwrap().hard, 10);
        assert!(parse_ulimit("nofile=2048:1024")
            .unwrap_err()
            .contains("soft limit"));
        assert!(parse_ulimit("files=1")
            .unwrap_err()
            .contains("invalid ulimit type"));
        assert!(parse_ulimit("nofile=x").unwrap_err().contains("--ulimit"));
        assert!(parse_ulimit("nofile").is_err());
    }

    #[test]
    fn sizes() {
        let size = |v: &str| parse_size("--shm-size", v);
        assert_eq!(size("1024"), Ok(1024));
        assert_eq!(size("512m"), Ok(512 << 20));
        assert_eq!(size("2g"), Ok(2 << 30));
        assert_eq!(size("2GB"), Ok(2 << 30));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("1.5k"), Ok(1536));
        assert!(size("12x").unwrap_err().contains("--shm-size"));
        assert!(size("0").is_err());
        assert!(size("-5m").is_err());
    }

    #[test]
    fn network_needs_entitlement() {
        let none = Entitlements::default();
        assert_eq!(parse_network("default", none), Ok(None));
        assert_eq!(parse_network("none", none), Ok(Some(NetworkMode::None)));
        let err = parse_network("host", none).unwrap_err();
        assert!(err.contains("network.host is not allowed"), "{err}");
        let mut allowed = Entitlements::default();
        allowed.allow("network.host").unwrap();
        assert_eq!(parse_network("host", allowed), Ok(Some(NetworkMode::Host)));
        assert!(parse_network("bridge", allowed).is_err());
        assert!(allowed.allow("device").is_err());
    }
}
