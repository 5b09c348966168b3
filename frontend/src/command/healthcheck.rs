//! HEALTHCHECK: `NONE`, or `CMD` with its timing flags (never expanded, as in BuildKit).

use super::flags::{parse_flags, Flag, UnknownAt};
use super::CommandError;
use crate::parser::Instruction;
use oci::image::HealthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HealthFlag {
    Interval,
    Timeout,
    StartPeriod,
    StartInterval,
    Retries,
}

const HEALTH_FLAGS: &[(&str, HealthFlag)] = &[
    ("interval", HealthFlag::Interval),
    ("timeout", HealthFlag::Timeout),
    ("start-period", HealthFlag::StartPeriod),
    ("start-interval", HealthFlag::StartInterval),
    ("retries", HealthFlag::Retries),
];

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCommand {
    pub health: HealthConfig,
}

impl HealthcheckCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        // No source lines: HEALTHCHECK's errors point at the keyword.
        let flags = parse_flags(ins, &[], HEALTH_FLAGS, UnknownAt::Keyword)?;
        let kind = ins
            .args
            .first()
            .map(|s| s.to_uppercase())
            .unwrap_or_default();
        let mut health = HealthConfig::default();
        match kind.as_str() {
            "NONE" if ins.args.len() > 1 => {
                return Err(CommandError::at(ins, "HEALTHCHECK NONE takes no arguments"))
            }
            // BuildKit ignores the flags of HEALTHCHECK NONE.
            "NONE" => health.test = vec!["NONE".into()],
            "CMD" => {
                let rest = ins.args[1..].to_vec();
                if rest.is_empty() {
                    return Err(CommandError::at(
                        ins,
                        "Missing command after HEALTHCHECK CMD",
                    ));
                }
                health.test = if ins.json {
                    std::iter::once("CMD".to_string()).chain(rest).collect()
                } else {
                    vec!["CMD-SHELL".into(), rest.join(" ")]
                };
                set_timing(&flags, &mut health).map_err(|e| CommandError::at(ins, e))?;
            }
            _ => {
                return Err(CommandError::at(
                    ins,
                    "HEALTHCHECK must be followed by CMD or NONE",
                ))
            }
        }
        Ok(HealthcheckCommand { health })
    }
}

/// The last value of each timing flag, checked and set (durations first, then retries).
fn set_timing(flags: &[Flag<HealthFlag>], hc: &mut HealthConfig) -> Result<(), String> {
    let last = |name| flags.iter().rev().find(|f| f.name == name);
    for (name, slot) in [
        (HealthFlag::Interval, &mut hc.interval),
        (HealthFlag::Timeout, &mut hc.timeout),
        (HealthFlag::StartPeriod, &mut hc.start_period),
        (HealthFlag::StartInterval, &mut hc.start_interval),
    ] {
        let Some(flag) = last(name) else { continue };
        let (text, v) = (flag_name(name), &flag.value);
        let ns = parse_duration_ns(v).ok_or_else(|| {
            format!("invalid --{text}={v}: expected a duration such as 30s or 1m30s")
        })?;
        if ns != 0 && ns < 1_000_000 {
            return Err(format!("Interval \"{text}\" cannot be less than 1ms"));
        }
        *slot = ns;
    }
    if let Some(flag) = last(HealthFlag::Retries) {
        let r = &flag.value;
        hc.retries = r
            .parse::<i32>()
            .map_err(|_| format!("invalid --retries={r}"))?
            .into();
        if hc.retries < 0 {
            return Err(format!("--retries cannot be negative ({r})"));
        }
    }
    Ok(())
}

fn flag_name(flag: HealthFlag) -> &'static str {
    HEALTH_FLAGS
        .iter()
        .find(|(_, f)| *f == flag)
        .map_or("", |(n, _)| n)
}

/// Parses Go-style durations (`30s`, `1m30s`, `500ms`) into nanoseconds.
pub fn parse_duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    // Go's time.ParseDuration: an optional sign, and a bare "0" needs no unit.
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some((sign * total) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration_ns("10x"), None);
        assert_eq!(parse_duration_ns("0"), Some(0));
        assert_eq!(parse_duration_ns("5"), None);
        assert_eq!(parse_duration_ns("-1s"), Some(-1_000_000_000));
        assert_eq!(parse_duration_ns("1.5h"), Some(5_400_000_000_000));
    }
}
