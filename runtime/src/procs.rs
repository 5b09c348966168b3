//! Processes of a container seen from the host: the monitor, the executor helper it started,
//! and the container's PID 1 (the helper's only child).

use anyhow::{anyhow, Result};
use nix::sys::signal::Signal;
use std::str::FromStr;

use crate::store::State;

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether `pid` has exited but was not reaped yet (a zombie whose parent is slow to wait).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat.get(i + 2..i + 3))
            .is_some_and(|s| s == "Z" || s == "X")
    })
}

/// Whether the monitor recorded in `state` is still that same, living process.
pub fn monitor_alive(state: &State) -> bool {
    state.monitor_pid != 0
        && start_time(state.monitor_pid) == Some(state.monitor_start)
        && !is_zombie(state.monitor_pid)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Host pid of the container's PID 1, if it is running.
pub fn container_pid(state: &State) -> Option<u32> {
    if !monitor_alive(state) {
        return None;
    }
    let helper = *children(state.monitor_pid).first()?;
    // The helper may have another child (rootless mode's slirp4netns); PID 1 is the one in a
    // pid namespace of its own.
    let helper_ns = std::fs::read_link(format!("/proc/{helper}/ns/pid")).ok();
    let kids = children(helper);
    kids.iter()
        .copied()
        .find(|kid| std::fs::read_link(format!("/proc/{kid}/ns/pid")).ok() != helper_ns)
        .or_else(|| kids.first().copied())
}

/// Whether `pid` has exec'd something other than `our_exe` (the helper before its exec).
pub fn has_execed(pid: u32, our_exe: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let path = format!("/proc/{pid}/exe");
    // The executor starts helpers from a read-only bind of this binary (the same inode) or,
    // where it cannot mount, from a sealed memfd copy of it.
    if std::fs::read_link(&path).is_ok_and(|l| l.to_string_lossy().starts_with("/memfd:")) {
        return false;
    }
    match std::fs::metadata(&path) {
        Ok(exe) => (exe.dev(), exe.ino()) != (our_exe.dev(), our_exe.ino()),
        Err(_) => false,
    }
}

/// One process of a container, as `top` shows it (host pids, like docker's).
pub struct ProcessInfo {
    pub uid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub command: String,
}

/// The processes in the container's pid namespace (PID 1's and its descendants').
pub fn container_processes(state: &State) -> Vec<ProcessInfo> {
    let Some(init) = container_pid(state) else {
        return Vec::new();
    };
    let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .ok()
            .as_ref()
            != Some(&ns)
        {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let command = String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .trim()
            .to_string();
        out.push(ProcessInfo {
            uid: field("Uid:"),
            pid,
            ppid: field("PPid:"),
            command,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// CPU time (clock ticks) and resident memory (bytes) of a process.
pub fn usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .unwrap_or("")
        .split(' ')
        .collect();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields after the command: utime is the 12th, stime the 13th, rss (pages) the 22nd.
    (num(11) + num(12), num(21) * 4096)
}

/// Parses `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow!("invalid signal: {s}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| anyhow!("invalid signal: {s}"))
}

pub fn send(pid: u32, signal: Signal) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_docker() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("hup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(start_time(std::process::id()).is_some());
    }
}
