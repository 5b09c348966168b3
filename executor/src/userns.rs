//! Rootless mode: a non-root user's builder runs in a user namespace of its own, mapped
//! through `newuidmap`/`newgidmap` with the user's subordinate ranges (as rootless podman and
//! buildah do): container id 0 is the user, ids 1..=N are the user's `/etc/subuid` range.
//!
//! The whole process enters the namespace once, first thing in `main` while it is still
//! single-threaded: everything after (the store, overlay mounts, the executor helper it
//! re-executes) then runs as root of that namespace, and the files it writes carry the ids
//! the containers see.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// One subordinate id range of `/etc/subuid` or `/etc/subgid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// Whether this process is in a user namespace whose ids are not the host's (the builder's
/// own rootless namespace, or any other user namespace it was started in).
pub fn is_rootless() -> bool {
    static ROOTLESS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOTLESS.get_or_init(in_user_namespace)
}

fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| !is_identity_map(&map))
}

/// The initial user namespace maps all 2^32-1 ids onto themselves.
fn is_identity_map(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// For a non-root user: re-enters this process into a new user and mount namespace mapped
/// with the user's subordinate ranges, and becomes root there. Does nothing for root or
/// when already in a user namespace. Must be called before any thread is started.
///
/// A namespace made earlier is joined through its pause process or, if that is gone, through
/// a live process whose first argument is one of `members` (the container monitors).
///
/// On failure prints what to do and exits (status 125), as nothing can work without it.
pub fn enter_rootless_namespace(members: &[&str]) {
    // Not the cached is_rootless(): its answer changes here.
    if rustix::process::geteuid().is_root() || in_user_namespace() {
        return;
    }
    if let Err(e) = enter(members) {
        eprintln!("error: rootless mode: {e:#}");
        std::process::exit(125);
    }
}

fn enter(members: &[&str]) -> Result<()> {
    use crate::userns_pause::Joined;
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let name = user_name(uid);
    let subuid = subordinate_range(Path::new("/etc/subuid"), &name, uid)?;
    let subgid = subordinate_range(Path::new("/etc/subgid"), &name, uid)?;
    match crate::userns_pause::join_existing(uid, members) {
        Joined::Pause => return become_root(),
        Joined::Member => {
            become_root()?;
            crate::userns_pause::start(uid);
            return Ok(());
        }
        Joined::Nothing => {}
    }
    let (go_read, go_write) = nix::unistd::pipe().context("creating a pipe")?;
    let pid = std::process::id();
    // The id maps must be written from outside the new namespace, so a child made before
    // the unshare does it (like unshare(1) --map-users).
    // SAFETY: the process is single-threaded (called first thing in main).
    match unsafe { nix::unistd::fork() }.context("forking the id-mapping helper")? {
        nix::unistd::ForkResult::Child => {
            drop(go_write);
            let code = match write_maps_when_told(go_read, pid, (uid, subuid), (gid, subgid)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: rootless mode: {e:#}");
                    1
                }
            };
            // SAFETY: _exit skips the parent's destructors and buffers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(go_read);
            let unshared = nix::sched::unshare(
                nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS,
            );
            // Tell the child either way; it writes the maps only after a 1.
            let _ = std::fs::File::from(go_write).write_all(&[u8::from(unshared.is_ok())]);
            let status = nix::sys::wait::waitpid(child, None);
            unshared.context("creating a user namespace (unshare CLONE_NEWUSER)")?;
            if !matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) {
                bail!("mapping ids with newuidmap/newgidmap failed (see above)");
            }
            become_root()?;
            crate::userns_pause::start(uid);
            Ok(())
        }
    }
}

/// In the child: waits for the go byte, then runs newuidmap and newgidmap on `pid`.
fn write_maps_when_told(
    go: OwnedFd,
    pid: u32,
    (uid, subuid): (u32, IdRange),
    (gid, subgid): (u32, IdRange),
) -> Result<()> {
    let mut byte = [0u8; 1];
    std::fs::File::from(go)
        .read_exact(&mut byte)
        .context("waiting for the namespace")?;
    if byte[0] != 1 {
        // The parent says why; exit quietly.
        // SAFETY: _exit skips the parent's destructors and buffers.
        unsafe { libc::_exit(1) }
    }
    run_map_tool("newuidmap", pid, uid, subuid)?;
    run_map_tool("newgidmap", pid, gid, subgid)
}

/// `newXidmap PID 0 ID 1 1 START COUNT`: 0 is the user, 1.. the subordinate range.
fn run_map_tool(tool: &str, pid: u32, id: u32, range: IdRange) -> Result<()> {
    let args = map_args(pid, id, range);
    let output = Command::new(tool).args(&args).output().with_context(|| {
        format!("running {tool} (install Debian's uidmap package, which provides it)")
    })?;
    if !output.status.success() {
        bail!(
            "{tool} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn map_args(pid: u32, id: u32, range: IdRange) -> Vec<String> {
    [pid, 0, id, 1, 1, range.start, range.count]
        .iter()
        .map(u32::to_string)
        .collect()
}

/// After the maps are written: root of the namespace, no supplementary groups, and mounts
/// that do not propagate back (they cannot reach the host anyway; this keeps them local).
fn become_root() -> Result<()> {
    use nix::unistd::{Gid, Uid};
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .context("becoming gid 0 in the user namespace")?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .context("becoming uid 0 in the user namespace")?;
    // newgidmap leaves setgroups allowed; an empty list drops the host's supplementary groups.
    nix::unistd::setgroups(&[]).context("clearing supplementary groups")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("making / a slave mount")?;
    std::env::set_var(ROOTLESS_ENV, "1");
    Ok(())
}

/// Set in the environment once the process is in its rootless namespace (for child
/// processes and scripts; detection itself reads `/proc/self/uid_map`).
pub const ROOTLESS_ENV: &str = "BUILDER_ROOTLESS";

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// The first range of `name` (or of the numeric `uid`) in a subuid/subgid file, with at
/// least 65536 ids (as podman requires for images whose files use ids up to 65534).
pub fn subordinate_range(file: &Path, name: &str, uid: u32) -> Result<IdRange> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "reading {} (a non-root user needs subordinate ids: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name})",
            file.display()
        )
    })?;
    parse_ranges(&text, name, uid).with_context(|| {
        format!(
            "{}: no range of at least 65536 ids for user {name} (add one with usermod --add-subuids/--add-subgids)",
            file.display()
        )
    })
}

fn parse_ranges(text: &str, name: &str, uid: u32) -> Option<IdRange> {
    let uid = uid.to_string();
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        if owner != name && owner != uid {
            return None;
        }
        let start = fields.next()?.parse().ok()?;
        let count: u32 = fields.next()?.parse().ok()?;
        (count >= 65536).then_some(IdRange {
            start,
            count: 65536,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_by_name_or_uid_and_need_65536_ids() {
        let text = "alice:100000:65536\nbob:200000:1000\n1002:300000:70000\n";
        assert_eq!(
            parse_ranges(text, "alice", 1000),
            Some(IdRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(parse_ranges(text, "bob", 1001), None);
        assert_eq!(parse_ranges(text, "carol", 1002).unwrap().start, 300000);
        assert_eq!(parse_ranges(text, "dave", 1003), None);
    }

    #[test]
    fn map_args_put_the_user_at_0_and_the_range_from_1() {
        let args = map_args(
            42,
            1000,
            IdRange {
                start: 100000,
                count: 65536,
            },
        );
        assert_eq!(args, ["42", "0", "1000", "1", "1", "100000", "65536"]);
    }

    #[test]
    fn identity_map_is_the_initial_namespace() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0       1000          1\n"));
    }
}
