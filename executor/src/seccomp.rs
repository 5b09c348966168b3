//! Docker-format seccomp profiles (Docker's default is vendored), evaluated against the
//! container's capabilities, architecture and kernel, compiled and loaded through libseccomp.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Context, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::Deserialize;

use crate::caps::CapSet;

/// Docker's default profile (moby 20.10.24, see `executor/seccomp/SOURCES`).
pub const DOCKER_DEFAULT_PROFILE: &str = include_str!("../seccomp/default.json");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<i32>,
    #[serde(default)]
    arch_map: Vec<ArchEntry>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchEntry {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<i32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// What a rule's conditions are checked against.
pub(crate) struct Target {
    pub caps: CapSet,
    /// Go's name of the architecture (`amd64`, `arm64`, ...), as profiles spell it.
    pub arch: &'static str,
    /// Kernel (major, minor).
    pub kernel: (u32, u32),
}

impl Target {
    pub(crate) fn native(caps: CapSet) -> Target {
        Target {
            caps,
            arch: go_arch(),
            kernel: kernel_version(),
        }
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
}

fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_version(&release).unwrap_or((0, 0))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl Filter {
    /// Whether every condition holds (includes) / any holds (excludes), as moby evaluates them.
    fn all_hold(&self, t: &Target) -> bool {
        self.caps.iter().all(|c| t.caps.has(c))
            && (self.arches.is_empty() || self.arches.iter().any(|a| a == t.arch))
            && self
                .min_kernel
                .as_deref()
                .is_none_or(|k| kernel_at_least(t, k))
    }

    fn any_holds(&self, t: &Target) -> bool {
        self.caps.iter().any(|c| t.caps.has(c))
            || self.arches.iter().any(|a| a == t.arch)
            || self
                .min_kernel
                .as_deref()
                .is_some_and(|k| kernel_at_least(t, k))
    }
}

fn kernel_at_least(t: &Target, version: &str) -> bool {
    parse_version(version).is_some_and(|v| t.kernel >= v)
}

fn action_of(name: &str, errno: Option<i32>) -> Result<ScmpAction> {
    let errno = if name == "SCMP_ACT_ERRNO" {
        Some(errno.unwrap_or(libc::EPERM))
    } else {
        errno
    };
    ScmpAction::from_str(name, errno).map_err(|e| anyhow!("seccomp action {name}: {e}"))
}

fn compare_of(arg: &Arg) -> Result<ScmpArgCompare> {
    let op = match arg.op.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        // Docker's `value` is the mask and `valueTwo` the value to compare with.
        "SCMP_CMP_MASKED_EQ" => {
            return Ok(ScmpArgCompare::new(
                arg.index,
                ScmpCompareOp::MaskedEqual(arg.value),
                arg.value_two,
            ))
        }
        other => bail!("seccomp: unknown comparison {other}"),
    };
    Ok(ScmpArgCompare::new(arg.index, op, arg.value))
}

/// Compiles a Docker-format profile for `target` into a filter ready to load.
pub(crate) fn compile(profile_json: &str, target: &Target) -> Result<ScmpFilterContext> {
    let profile: Profile =
        serde_json::from_str(profile_json).context("parsing the seccomp profile")?;
    let default = action_of(&profile.default_action, profile.default_errno_ret)?;
    let mut filter = ScmpFilterContext::new(default).context("creating a seccomp filter")?;
    // Without no_new_privs the filter loads thanks to CAP_SYS_ADMIN, which the caller holds.
    filter
        .set_ctl_nnp(false)
        .context("seccomp: keeping no_new_privs unset")?;
    add_arches(&mut filter, &profile)?;
    for rule in &profile.syscalls {
        if !rule.includes.all_hold(target) || rule.excludes.any_holds(target) {
            continue;
        }
        let action = action_of(&rule.action, rule.errno_ret)?;
        if action == default {
            continue;
        }
        let args = rule.args.as_deref().unwrap_or_default();
        let compares: Vec<ScmpArgCompare> = args.iter().map(compare_of).collect::<Result<_>>()?;
        let distinct = args.iter().map(|a| a.index).collect::<HashSet<_>>().len() == args.len();
        let names = rule.names.iter().chain(rule.name.iter());
        for name in names {
            // Names this libseccomp does not know exist on no architecture we filter.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            add_rule(&mut filter, action, syscall, &compares, distinct)
                .with_context(|| format!("seccomp rule for {name}"))?;
        }
    }
    Ok(filter)
}

/// One rule with all comparisons, or (when two compare the same argument, which libseccomp
/// cannot express in one rule) one rule per comparison, as moby does.
fn add_rule(
    filter: &mut ScmpFilterContext,
    action: ScmpAction,
    syscall: ScmpSyscall,
    compares: &[ScmpArgCompare],
    distinct_args: bool,
) -> Result<()> {
    if compares.is_empty() {
        filter.add_rule(action, syscall)?;
        return Ok(());
    }
    if distinct_args {
        filter.add_rule_conditional(action, syscall, compares)?;
    } else {
        for compare in compares {
            filter.add_rule_conditional(action, syscall, std::slice::from_ref(compare))?;
        }
    }
    Ok(())
}

/// The native architecture and its sub-architectures from `archMap` (or `architectures`).
fn add_arches(filter: &mut ScmpFilterContext, profile: &Profile) -> Result<()> {
    let native = ScmpArch::native();
    let mut arches: Vec<String> = profile.architectures.clone();
    for entry in &profile.arch_map {
        if arch_named(&entry.architecture) == Some(native) {
            arches.push(entry.architecture.clone());
            // x32 is left out: it makes libseccomp's filter generation ~4x slower (16 of
            // 22 ms per run here), Debian kernels run no x32 code unless booted with
            // syscall.x32=y, and an architecture outside the filter is killed (fail-closed).
            arches.extend(
                entry
                    .sub_architectures
                    .iter()
                    .filter(|a| a.as_str() != "SCMP_ARCH_X32")
                    .cloned(),
            );
        }
    }
    for name in arches {
        let Some(arch) = arch_named(&name) else {
            continue;
        };
        // Architectures this kernel cannot run are refused by libseccomp; skip them.
        let _ = filter.add_arch(arch);
    }
    Ok(())
}

fn arch_named(name: &str) -> Option<ScmpArch> {
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(caps: u64) -> Target {
        Target {
            caps: CapSet(caps),
            arch: "amd64",
            kernel: (6, 1),
        }
    }

    #[test]
    fn default_profile_compiles_for_default_and_full_caps() {
        compile(DOCKER_DEFAULT_PROFILE, &target(0xa80425fb)).unwrap();
        compile(DOCKER_DEFAULT_PROFILE, &target(u64::MAX >> 23)).unwrap();
    }

    #[test]
    fn includes_and_excludes_follow_caps_arch_and_kernel() {
        let rule = Filter {
            caps: vec!["CAP_SYS_ADMIN".into()],
            arches: vec!["amd64".into(), "x32".into()],
            min_kernel: Some("4.8".into()),
        };
        assert!(!rule.all_hold(&target(0xa80425fb)));
        assert!(rule.all_hold(&target(1 << 21)));
        assert!(rule.any_holds(&target(0)), "amd64 matches");
        let old = Target {
            kernel: (4, 4),
            ..target(1 << 21)
        };
        assert!(!rule.all_hold(&old));
        assert_eq!(parse_version("6.18.44-fc-v1147"), Some((6, 18)));
    }

    #[test]
    fn bad_profiles_are_clear_errors() {
        let err = compile("{", &target(0)).unwrap_err();
        assert!(
            format!("{err:#}").contains("parsing the seccomp profile"),
            "{err:#}"
        );
        let err = compile(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#, &target(0)).unwrap_err();
        assert!(format!("{err:#}").contains("SCMP_ACT_NOPE"), "{err:#}");
    }
}
