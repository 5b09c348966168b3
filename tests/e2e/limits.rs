//! Resource limits through cgroups (v1 hierarchies here, v2 where unified): the values land in
//! the container's cgroup, the container runs in it, an OOM kill gives 137 and OOMKilled.

use crate::common::{stderr, stdout, Store};
use std::path::{Path, PathBuf};

fn ok(store: &Store, args: &[&str]) -> String {
    let out = store.run(args);
    assert!(out.status.success(), "builder {args:?}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// The container's cgroup directory for a controller (v1) or its unified one (v2).
fn cgroup_dir(controller: &str, id: &str) -> PathBuf {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Path::new("/sys/fs/cgroup/builder").join(id);
    }
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("builder")
        .join(id)
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn memory_cpu_and_pids_limits_land_in_the_containers_cgroup() {
    let store = Store::with_busybox();
    let id = ok(
        &store,
        &[
            "run",
            "-d",
            "--name",
            "capped",
            "-m",
            "32m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "20",
            "busybox",
            "sleep",
            "100",
        ],
    );
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        assert_eq!(
            read(cgroup_dir("memory", &id).join("memory.max")),
            "33554432"
        );
        assert_eq!(read(cgroup_dir("cpu", &id).join("cpu.max")), "50000 100000");
    } else {
        assert_eq!(
            read(cgroup_dir("memory", &id).join("memory.limit_in_bytes")),
            "33554432"
        );
        assert_eq!(
            read(cgroup_dir("cpu", &id).join("cpu.cfs_quota_us")),
            "50000"
        );
    }
    assert_eq!(read(cgroup_dir("pids", &id).join("pids.max")), "20");
    let pid = ok(&store, &["inspect", "-f", "{{.State.Pid}}", "capped"]);
    let procs = read(cgroup_dir("memory", &id).join("cgroup.procs"));
    assert!(
        procs.lines().any(|p| p == pid),
        "the container runs in its cgroup: {procs}"
    );
    assert_eq!(
        ok(
            &store,
            &["inspect", "-f", "{{.HostConfig.Memory}}", "capped"]
        ),
        "33554432"
    );
    let stats = ok(&store, &["stats", "--no-stream", "capped"]);
    let row = stats.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with(&id[..12]) && row.contains("/ 32.0MiB") && row.ends_with(" 1"),
        "{stats}"
    );
    // The pids limit bites: 30 more processes cannot all start.
    let out = store.run(&[
        "exec",
        "capped",
        "sh",
        "-c",
        "for i in $(seq 30); do sleep 5 & done; wait",
    ]);
    assert!(
        stderr(&out).contains("fork") || stderr(&out).contains("Resource temporarily unavailable"),
        "pids.max not enforced: {}",
        stderr(&out)
    );
    ok(&store, &["rm", "-f", "capped"]);
    assert!(
        !cgroup_dir("memory", &id).exists(),
        "the cgroup goes with the container"
    );

    let out = store.run(&["run", "-d", "-m", "lots", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("--memory \"lots\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_oom_kill_gives_137_and_oomkilled() {
    let store = Store::with_busybox();
    let out = store.run(&[
        "run",
        "--name",
        "hog",
        "-m",
        "16m",
        "--memory-swap",
        "16m",
        "busybox",
        "sh",
        "-c",
        "x=a; while true; do x=\"$x$x\"; done",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert_eq!(
        ok(
            &store,
            &[
                "inspect",
                "-f",
                "{{.State.OOMKilled}} {{.State.ExitCode}}",
                "hog"
            ]
        ),
        "true 137"
    );
    let id = ok(&store, &["inspect", "-f", "{{.Id}}", "hog"]);
    assert!(!cgroup_dir("memory", &id).exists());
    ok(&store, &["rm", "hog"]);
}
