//! Validation of platform specifiers (`--platform` and `FROM --platform`) with the rules of
//! containerd's `platforms.Parse`, which BuildKit uses, so that a typo fails the same way:
//! one word must be a known OS or architecture, two or three words are taken as given,
//! more are an error.

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
    // Spellings containerd normalises to the names above.
    "aarch64",
    "x86_64",
    "x86-64",
    "i386",
    "i486",
    "i586",
    "i686",
    "armhf",
    "armel",
];

/// Checks one platform specifier; a lone OS (`linux`) becomes `os/HOST_ARCH` as in
/// containerd. The error is BuildKit's wording.
pub fn check(spec: &str, host_arch: &str) -> Result<String, String> {
    let invalid =
        |why: &str| format!("failed to parse platform {spec}: {spec:?}: {why}: invalid argument");
    if spec.contains('*') {
        return Err(invalid("wildcards not yet supported"));
    }
    let parts: Vec<&str> = spec.split('/').collect();
    for part in &parts {
        let valid = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(format!(
                "failed to parse platform {spec}: {part:?} is an invalid component of {spec:?}: platform specifier component must match \"^[A-Za-z0-9_.-]+$\": invalid argument"
            ));
        }
    }
    match parts.as_slice() {
        [word] => {
            let lower = word.to_ascii_lowercase();
            if KNOWN_OS.contains(&lower.as_str()) {
                Ok(format!("{lower}/{host_arch}"))
            } else if KNOWN_ARCH.contains(&lower.as_str()) {
                Ok(spec.to_string())
            } else {
                Err(invalid("unknown operating system or architecture"))
            }
        }
        [_, _] | [_, _, _] => Ok(spec.to_string()),
        _ => Err(invalid("cannot parse platform specifier")),
    }
}

/// Checks that a build can target the platform: its OS and architecture are ones Go (and so
/// BuildKit's images) knows, so a typo is not built as the host's architecture under a made-up
/// name.
pub fn check_target(os: &str, arch: &str) -> Result<(), String> {
    if !KNOWN_OS.contains(&os) {
        return Err(format!(
            "unknown operating system {os:?}; e.g. linux, windows, freebsd"
        ));
    }
    if !KNOWN_ARCH.contains(&arch) {
        return Err(format!(
            "unknown architecture {arch:?}; e.g. amd64, arm64, arm/v7, 386, ppc64le, s390x, riscv64"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check, check_target};

    #[test]
    fn targets_must_be_known() {
        assert!(check_target("linux", "arm64").is_ok());
        assert!(check_target("linux", "nonsense")
            .unwrap_err()
            .contains("unknown architecture \"nonsense\""));
        assert!(check_target("lnux", "amd64").is_err());
    }

    #[test]
    fn follows_containerd_rules() {
        assert_eq!(check("linux", "amd64").unwrap(), "linux/amd64");
        assert_eq!(check("arm64", "amd64").unwrap(), "arm64");
        assert_eq!(check("linux/bogus", "amd64").unwrap(), "linux/bogus");
        assert_eq!(check("linux/arm/v7", "amd64").unwrap(), "linux/arm/v7");
        let err = check("bogus", "amd64").unwrap_err();
        assert!(
            err.contains("unknown operating system or architecture"),
            "{err}"
        );
        let err = check("a/b/c/d", "amd64").unwrap_err();
        assert!(err.contains("cannot parse platform specifier"), "{err}");
        let err = check("linux//amd64", "amd64").unwrap_err();
        assert!(err.contains("invalid component"), "{err}");
        assert!(check("linux/*", "amd64").is_err());
    }
}
