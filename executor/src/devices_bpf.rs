//! The device allow-list on cgroup v2, which has no `devices` controller: a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the run's cgroup, assembled here from
//! the same rules as the v1 list (as runc's `devicefilter` does), loaded through bpf(2).
//!
//! The kernel runs the program on every device open and mknod by a task in the cgroup (or
//! below) with `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`, where
//! `access_type` is `type | access << 16`; a return of 1 allows, 0 refuses (EPERM).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// One allow rule: `None` is the `*` wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeviceRule {
    /// `BPF_DEVCG_DEV_BLOCK` (1) or `BPF_DEVCG_DEV_CHAR` (2); `None` for `a` (both).
    pub kind: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `BPF_DEVCG_ACC_MKNOD` (1) | `READ` (2) | `WRITE` (4).
    pub access: u32,
}

const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
const ACC_ALL: u32 = 1 | 2 | 4;

/// Parses a v1 `devices.allow` line (`c 1:3 rwm`, `b *:* m`).
pub(crate) fn parse_rule(line: &str) -> Result<DeviceRule> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [kind, numbers, access] = fields[..] else {
        bail!("device rule {line:?}: expected TYPE MAJOR:MINOR ACCESS");
    };
    let kind = match kind {
        "a" => None,
        "b" => Some(DEV_BLOCK),
        "c" => Some(DEV_CHAR),
        other => bail!("device rule {line:?}: unknown type {other}"),
    };
    let (major, minor) = numbers
        .split_once(':')
        .with_context(|| format!("device rule {line:?}: expected MAJOR:MINOR"))?;
    let number = |n: &str| -> Result<Option<u32>> {
        if n == "*" {
            return Ok(None);
        }
        Ok(Some(n.parse().with_context(|| {
            format!("device rule {line:?}: bad number {n}")
        })?))
    };
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            other => bail!("device rule {line:?}: unknown access {other}"),
        };
    }
    Ok(DeviceRule {
        kind,
        major: number(major)?,
        minor: number(minor)?,
        access: bits,
    })
}

/// One `struct bpf_insn`: opcode, registers (dst low nibble, src high), offset, immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes (BPF_CLASS | BPF_OP | BPF_SRC), as in linux/bpf.h.
const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_K: u8 = 0xb4;
const ALU32_MOV_X: u8 = 0xbc;
const JMP_JNE_K: u8 = 0x55;
const JMP_JNE_X: u8 = 0x5d;
const JMP_EXIT: u8 = 0x95;

/// The program: R2 = type, R3 = access, R4 = major, R5 = minor; each rule either allows
/// (return 1) or falls through to the next; nothing matched refuses (return 0).
pub(crate) fn assemble(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut program = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules {
        program.extend(rule_block(rule));
    }
    program.push(insn(ALU32_MOV_K, 0, 0, 0, 0));
    program.push(insn(JMP_EXIT, 0, 0, 0, 0));
    program
}

/// The checks of one rule, each jumping past the block's end when it fails.
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    // Each check is (instructions before its jump, the jump without its offset).
    let mut checks: Vec<Vec<Insn>> = Vec::new();
    if let Some(kind) = rule.kind {
        checks.push(vec![insn(JMP_JNE_K, 2, 0, 0, kind as i32)]);
    }
    if rule.access & ACC_ALL != ACC_ALL {
        // Every requested access bit must be allowed: (access & allowed) == access.
        checks.push(vec![
            insn(ALU32_MOV_X, 1, 3, 0, 0),
            insn(ALU32_AND_K, 1, 0, 0, rule.access as i32),
            insn(JMP_JNE_X, 1, 3, 0, 0),
        ]);
    }
    if let Some(major) = rule.major {
        checks.push(vec![insn(JMP_JNE_K, 4, 0, 0, major as i32)]);
    }
    if let Some(minor) = rule.minor {
        checks.push(vec![insn(JMP_JNE_K, 5, 0, 0, minor as i32)]);
    }
    let mut block: Vec<Insn> = checks.into_iter().flatten().collect();
    block.push(insn(ALU32_MOV_K, 0, 0, 0, 1));
    block.push(insn(JMP_EXIT, 0, 0, 0, 0));
    let len = block.len();
    for (at, i) in block.iter_mut().enumerate() {
        if i.code == JMP_JNE_K || i.code == JMP_JNE_X {
            // Relative to the next instruction: land on the first one after the block.
            i.off = (len - at - 1) as i16;
        }
    }
    block
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Programs of parent cgroups keep running too; all must allow.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, padded to a size every kernel accepts.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a live, initialised bpf_attr prefix of the given size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// Loads the program; on refusal the verifier's log is part of the error.
fn load(program: &[Insn]) -> Result<OwnedFd> {
    let license = c"Apache";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..6].copy_from_slice(b"devcgr");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: BPF_PROG_LOAD returned a new descriptor we own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(first) => {
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let text = String::from_utf8_lossy(&log);
            bail!(
                "loading the cgroup v2 device filter: {first}; verifier: {}",
                text.trim_end_matches('\0').trim()
            )
        }
    }
}

/// Attaches a program allowing only `rules` to the cgroup v2 directory `cgroup`.
pub(crate) fn attach(cgroup: &Path, rules: &[DeviceRule]) -> Result<()> {
    let program = load(&assemble(rules))?;
    let dir = std::fs::File::open(cgroup)
        .with_context(|| format!("opening cgroup {}", cgroup.display()))?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // The attachment holds the program; our descriptors may close.
    bpf(BPF_PROG_ATTACH, &mut attr)
        .with_context(|| format!("attaching the device filter to {}", cgroup.display()))?;
    Ok(())
}

const BPF_PROG_QUERY: libc::c_long = 16;

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

/// How many device programs are attached to the cgroup v2 directory `cgroup` itself.
pub(crate) fn attached_count(cgroup: &Path) -> Result<u32> {
    let dir = std::fs::File::open(cgroup)
        .with_context(|| format!("opening cgroup {}", cgroup.display()))?;
    let mut attr = ProgQueryAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)
        .with_context(|| format!("querying the device programs of {}", cgroup.display()))?;
    Ok(attr.prog_cnt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_as_the_v1_list_spells_them() {
        assert_eq!(
            parse_rule("c 136:* rwm").unwrap(),
            DeviceRule {
                kind: Some(DEV_CHAR),
                major: Some(136),
                minor: None,
                access: 7
            }
        );
        assert_eq!(parse_rule("b *:* m").unwrap().access, 1);
        for bad in ["c 1:3", "x 1:3 r", "c 1-3 r", "c 1:y r", "c 1:3 q"] {
            let err = parse_rule(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn jumps_land_after_their_rule_block() {
        let rule = parse_rule("c 1:3 rw").unwrap();
        let block = rule_block(&rule);
        // type, access (3), major, minor, mov, exit.
        assert_eq!(block.len(), 8);
        for (at, i) in block.iter().enumerate() {
            if i.code == JMP_JNE_K || i.code == JMP_JNE_X {
                assert_eq!(at + 1 + i.off as usize, block.len());
            }
        }
        let wildcard = rule_block(&parse_rule("a *:* rwm").unwrap());
        assert_eq!(
            wildcard.len(),
            2,
            "a rule matching everything allows at once"
        );
    }
}
