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

/// Joins the user namespace of `uid`'s live pause process (and makes a mount namespace of
/// our own in it); false when there is none to join.
pub(crate) fn join_existing(uid: u32) -> bool {
    let Some(pid) = std::fs::read_to_string(pid_file(uid))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok();
    if comm.trim() != PAUSE_NAME || owner != Some(uid) {
        return false;
    }
    let Ok(userns) = std::fs::File::open(format!("/proc/{pid}/ns/user")) else {
        return false;
    };
    nix::sched::setns(userns, nix::sched::CloneFlags::CLONE_NEWUSER).is_ok()
        && nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok()
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
