//! Linux capabilities: names, Docker's default set, `--cap-add/--cap-drop`, and applying a set
//! to the container process (bounding set first, the rest after the uid change).

use anyhow::{bail, Context, Result};

/// Capability names by number, as in `linux/capability.h` (without the `CAP_` prefix).
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A set of capabilities as a bit mask (bit N is capability N), as in `/proc/self/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// Whether capability `name` (with or without `CAP_`) is in the set.
    pub fn has(&self, name: &str) -> bool {
        number_of(name).is_some_and(|n| self.0 & (1 << n) != 0)
    }

    /// The set's names with the `CAP_` prefix, as seccomp profiles spell them.
    pub fn names(&self) -> Vec<String> {
        (0..NAMES.len())
            .filter(|n| self.0 & (1 << n) != 0)
            .map(|n| format!("CAP_{}", NAMES[n]))
            .collect()
    }
}

fn number_of(name: &str) -> Option<usize> {
    let bare = name.trim().to_ascii_uppercase();
    let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
    NAMES.iter().position(|n| *n == bare)
}

/// The highest capability number the running kernel knows.
pub fn last_cap() -> usize {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() - 1)
}

/// Every capability the kernel (and this table) knows.
pub fn all_caps() -> CapSet {
    let top = last_cap().min(NAMES.len() - 1);
    CapSet(if top >= 63 {
        u64::MAX
    } else {
        (1u64 << (top + 1)) - 1
    })
}

/// Docker's default set, changed by `--cap-add`/`--cap-drop` (names with or without `CAP_`,
/// any case, or `ALL`); drops apply first and adds win, as in docker. `privileged` means all.
pub fn resolve(privileged: bool, add: &[String], drop: &[String]) -> Result<CapSet> {
    if privileged {
        return Ok(all_caps());
    }
    let mut set = DOCKER_DEFAULT
        .iter()
        .filter_map(|n| number_of(n))
        .fold(0u64, |acc, n| acc | 1 << n);
    for (list, flag) in [(drop, "--cap-drop"), (add, "--cap-add")] {
        for name in list {
            let bits = if name.eq_ignore_ascii_case("ALL") {
                all_caps().0
            } else {
                match number_of(name) {
                    Some(n) => 1u64 << n,
                    None => bail!("{flag} {name}: unknown capability (e.g. NET_ADMIN or CAP_NET_ADMIN, or ALL)"),
                }
            };
            if flag == "--cap-drop" {
                set &= !bits;
            } else {
                set |= bits;
            }
        }
    }
    Ok(CapSet(set & all_caps().0))
}

/// Removes every capability outside `keep` from the bounding set (needs CAP_SETPCAP, so it runs
/// while the process still holds everything).
pub(crate) fn drop_bounding(keep: CapSet) -> Result<()> {
    for cap in 0..=last_cap() {
        if cap < 64 && keep.0 & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            let err = std::io::Error::last_os_error();
            // A capability number the kernel does not know is not in the bounding set.
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err).with_context(|| format!("dropping capability {cap}"));
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Sets the effective and permitted sets to `set` (for uid 0) or empty (for other users, as
/// docker ≥ 23 does), clears the inheritable and ambient sets. Runs after `setuid`.
/// Capabilities the process itself lacks (a builder run in a confined sandbox) stay out.
pub(crate) fn apply(set: CapSet, uid: u32) -> Result<()> {
    let granted = if uid == 0 { set.0 & permitted()? } else { 0 };
    let data = [
        CapData {
            effective: granted as u32,
            permitted: granted as u32,
            inheritable: 0,
        },
        CapData {
            effective: (granted >> 32) as u32,
            permitted: (granted >> 32) as u32,
            inheritable: 0,
        },
    ];
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads the header and two data structs, which live for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("setting capabilities");
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("clearing ambient capabilities");
    }
    Ok(())
}

/// The calling process's permitted set.
fn permitted() -> Result<u64> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two data structs into the array, which lives for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("reading capabilities");
    }
    Ok(u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_is_a80425fb() {
        assert_eq!(resolve(false, &[], &[]).unwrap(), CapSet(0xa80425fb));
    }

    #[test]
    fn add_and_drop_take_names_with_or_without_prefix_and_all() {
        let set = resolve(false, &["net_admin".into()], &["CAP_CHOWN".into()]).unwrap();
        assert!(set.has("NET_ADMIN") && !set.has("CHOWN") && set.has("KILL"));
        let only = resolve(false, &["CAP_KILL".into()], &["ALL".into()]).unwrap();
        assert_eq!(only, CapSet(1 << 5));
        assert_eq!(resolve(false, &["ALL".into()], &[]).unwrap(), all_caps());
        let err = resolve(false, &["NET_WIZARD".into()], &[]).unwrap_err();
        assert!(err.to_string().contains("--cap-add NET_WIZARD"), "{err}");
        assert_eq!(resolve(true, &[], &["ALL".into()]).unwrap(), all_caps());
    }
}
