//! Argument checks whose wording follows BuildKit's Dockerfile frontend, so a broken
//! Dockerfile fails with the message a BuildKit user knows.

/// `FROM image AS name`: BuildKit's stage-name rule, `^[a-z][a-z0-9-_.]*$` once lower-cased.
pub fn stage_name(name: &str) -> Result<(), String> {
    let lower = name.to_lowercase();
    let mut chars = lower.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
        ))
    }
}

/// One `EXPOSE` word (already expanded): `port[-port][/tcp|udp|sctp]`, as Docker's port
/// spec parser checks it.
pub fn expose_port(spec: &str) -> Result<(), String> {
    let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    if !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let valid_number = |s: &str| !s.is_empty() && s.parse::<u16>().is_ok();
    let valid = match port.split_once('-') {
        Some((a, b)) => {
            valid_number(a) && valid_number(b) && a.parse::<u16>().ok() <= b.parse::<u16>().ok()
        }
        None => valid_number(port),
    };
    if valid {
        Ok(())
    } else {
        Err(format!("invalid containerPort: {port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names() {
        assert!(stage_name("build").is_ok());
        assert!(stage_name("Build-2.x_y").is_ok());
        assert!(stage_name("1bad")
            .unwrap_err()
            .contains("can't start with a number"));
        assert!(stage_name("a$b").is_err());
    }

    #[test]
    fn expose_ports() {
        assert!(expose_port("80").is_ok());
        assert!(expose_port("80/UDP").is_ok());
        assert!(expose_port("8000-8010/tcp").is_ok());
        assert_eq!(
            expose_port("abc").unwrap_err(),
            "invalid containerPort: abc"
        );
        assert_eq!(expose_port("80/xyz").unwrap_err(), "invalid proto: xyz");
        assert!(expose_port("70000").is_err());
    }
}
