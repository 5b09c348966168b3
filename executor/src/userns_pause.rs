//! One rootless namespace per user, as podman keeps it: the first command that makes the
//! namespace leaves a pause process in it, and later commands join that namespace instead of
//! making their own, so a container started by one command (`run -d`) can be reached by the
//! next (`exec`, `stop`).

use std::path::{Path, PathBuf};

/// The pause process's name (`/proc/PID/comm`), checked before joining a recorded pid.
const PAUSE_NAME: &str = "builder-pause";

/// `$XDG_RUNTIME_DIR/builder/pause.pid`, else `/tmp/builder-UID/pause.pid`.
fn pid_file(uid: u32) -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("builder"),
        _ => std::env::temp_dir().join(format!("builder-{uid}")),
    };
    dir.join("pause.pid")
}

/// How [`join_existing`] found the namespace.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    /// Through the live pause process.
    Pause,
    /// Through a live member process (named by its first argument), the pause being gone:
    /// the caller must leave a new pause in the namespace.
    Member,
    /// There is no namespace to join.
    Nothing,
}

/// Joins the user namespace of `uid`'s live pause process, or, when that is gone (killed, or
/// a pid file left by an earlier user of the same uid), of a live process of `uid`'s whose
/// first argument is one of `members` (a container monitor: its containers must stay
/// reachable from later commands); then makes a mount namespace of our own.
pub(crate) fn join_existing(uid: u32, members: &[&str]) -> Joined {
    let pause = std::fs::read_to_string(pid_file(uid))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    if let Some(pid) = pause {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == PAUSE_NAME && owned_and_live(pid, uid) && join(pid) {
            return Joined::Pause;
        }
    }
    let member = live_pids_of(uid).find(|&pid| is_member(pid, members) && join(pid));
    match member {
        Some(_) => Joined::Member,
        None => Joined::Nothing,
    }
}

fn join(pid: u32) -> bool {
    let Ok(userns) = std::fs::File::open(format!("/proc/{pid}/ns/user")) else {
        return false;
    };
    nix::sched::setns(userns, nix::sched::CloneFlags::CLONE_NEWUSER).is_ok()
        && nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok()
}

/// Whether `pid` is `uid`'s and neither a zombie nor dead: a killed pause that its new
/// parent has not reaped yet still has its name and a namespace that nothing else shares.
fn owned_and_live(pid: u32, uid: u32) -> bool {
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
    owner == Some(uid) && matches!(state, Some(s) if s != "Z" && s != "X")
}

fn live_pids_of(uid: u32) -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&pid| owned_and_live(pid, uid))
}

fn is_member(pid: u32, members: &[&str]) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let first_arg = cmdline.split(|&b| b == 0).nth(1).unwrap_or_default();
    members.iter().any(|m| m.as_bytes() == first_arg)
}

/// In a namespace just made: leaves a pause process in it and records its pid. A failure
/// only means the next command makes a namespace of its own.
pub(crate) fn start(uid: u32) {
    let file = pid_file(uid);
    let Some(dir) = file.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    // SAFETY: still single-threaded; the child only makes raw system calls and never returns.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => pause_forever(),
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            write_atomically(&file, child.to_string().as_bytes());
        }
        Err(_) => {}
    }
}

fn pause_forever() -> ! {
    // SAFETY: plain system calls in a freshly forked single-threaded child.
    unsafe {
        libc::setsid();
        libc::prctl(
            libc::PR_SET_NAME,
            c"builder-pause".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        libc::chdir(c"/".as_ptr());
        loop {
            libc::pause();
        }
    }
}

/// Writes through a temporary name so a reader never sees half a pid.
fn write_atomically(path: &Path, data: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, data).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}
