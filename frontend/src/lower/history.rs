//! The `created_by` texts BuildKit's Dockerfile frontend writes into the image history.
//! They come from Go's `fmt` verbs (`%v`, `%q`, `%+v`), so Go's formatting is mirrored here.

use crate::parser::go_quote;
use oci::image::HealthConfig;
use std::collections::BTreeSet;

/// Go's `%v` of a `[]string`: `[a b c]`.
pub(super) fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `%q` of a `[]string`: `["a" "b c"]`.
pub(super) fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a `map[nat.Port]struct{}`: keys sorted, `map[443/udp:{} 80/tcp:{}]`.
pub(super) fn go_port_map(ports: &BTreeSet<String>) -> String {
    let entries: Vec<String> = ports.iter().map(|p| format!("{p}:{{}}")).collect();
    format!("map[{}]", entries.join(" "))
}

/// `RUN` history: the command line after the shell, prefixed by `|N K=V ...` for the
/// stage's declared build args (as BuildKit's runCommandString does).
pub(super) fn run_text(args: &[String], build_args: &[(String, String)]) -> String {
    let mut words: Vec<String> = Vec::new();
    if !build_args.is_empty() {
        words.push(format!("|{}", build_args.len()));
        words.extend(build_args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    words.extend(args.iter().cloned());
    format!("RUN {}", words.join(" "))
}

/// `HEALTHCHECK` history: Go's `%+v` of the health config struct.
pub(super) fn healthcheck_text(hc: &HealthConfig) -> String {
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_list(&hc.test),
        go_duration(hc.interval),
        go_duration(hc.timeout),
        go_duration(hc.start_period),
        go_duration(hc.start_interval),
        hc.retries
    )
}

/// Go's `time.Duration.String()` for a count of nanoseconds: `1m30s`, `1.5s`, `500ms`, `0s`.
pub(super) fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    if ns < 1_000 {
        return format!("{sign}{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{sign}{}µs", decimal(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{sign}{}ms", decimal(ns, 1_000_000));
    }
    let seconds = decimal(ns % 60_000_000_000, 1_000_000_000);
    let minutes_total = ns / 60_000_000_000;
    if minutes_total == 0 {
        return format!("{sign}{seconds}s");
    }
    let (hours, minutes) = (minutes_total / 60, minutes_total % 60);
    if hours == 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    }
}

/// `value / unit` with the fraction's trailing zeros dropped (`1500, 1000` → `1.5`).
fn decimal(value: u64, unit: u64) -> String {
    let (whole, frac) = (value / unit, value % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(2_000), "2µs");
        assert_eq!(go_duration(999), "999ns");
        assert_eq!(go_duration(3_661_250_000_000), "1h1m1.25s");
    }

    #[test]
    fn lists_print_like_go() {
        let v = vec!["/bin/sh".to_string(), "-c".into(), "echo \"hi\"".into()];
        assert_eq!(go_list(&v), "[/bin/sh -c echo \"hi\"]");
        assert_eq!(go_quoted_list(&v), r#"["/bin/sh" "-c" "echo \"hi\""]"#);
        let ports: BTreeSet<String> = ["80/tcp".to_string(), "443/udp".into()].into();
        assert_eq!(go_port_map(&ports), "map[443/udp:{} 80/tcp:{}]");
    }

    #[test]
    fn run_text_prefixes_build_args() {
        let args = vec!["/bin/sh".to_string(), "-c".into(), "make".into()];
        assert_eq!(run_text(&args, &[]), "RUN /bin/sh -c make");
        let build_args = vec![("A".to_string(), "1".to_string()), ("B".into(), "".into())];
        assert_eq!(
            run_text(&args, &build_args),
            "RUN |2 A=1 B= /bin/sh -c make"
        );
    }
}
