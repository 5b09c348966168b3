//! `STOPSIGNAL` validation as moby's `signal.ParseSignal` on Linux: a non-zero number, or a
//! signal name with or without `SIG`, in any case. The image keeps the text as written.

const NAMES: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
];

pub(super) fn is_valid_signal(raw: &str) -> bool {
    if let Ok(n) = raw.parse::<i64>() {
        return n != 0 && i32::try_from(n).is_ok();
    }
    let upper = raw.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if NAMES.contains(&name) {
        return true;
    }
    // Real-time signals: RTMIN+1..RTMIN+15 and RTMAX-14..RTMAX-1.
    let offset = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..=15).contains(&n))
    };
    offset("RTMIN+") || (offset("RTMAX-") && !name.ends_with("-15"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_moby() {
        for ok in [
            "SIGTERM",
            "term",
            "SigKill",
            "9",
            "RTMIN+3",
            "SIGRTMAX-14",
            "SIGWINCH",
        ] {
            assert!(is_valid_signal(ok), "{ok}");
        }
        for bad in ["0", "SIGFOO", "", "RTMAX-15", "RTMIN+16", "SIG"] {
            assert!(!is_valid_signal(bad), "{bad}");
        }
    }
}
