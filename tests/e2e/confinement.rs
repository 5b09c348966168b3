//! RUN steps and `builder run` are confined as Docker confines a container (issue 12): the
//! same escape probe runs in both, the original cgroup release_agent exploit is attempted
//! from a RUN step, and the escape hatches (`--security=insecure` with `--allow
//! security.insecure`, `run --privileged/--cap-add/--cap-drop/--security-opt/--pids-limit`)
//! widen exactly what they say.

use crate::common::{context, stderr, stdout, Store};

/// Prints the capability and seccomp lines, then one `ESCAPE ...` line for every attempt
/// that worked; a confined container prints the status lines and `end` only.
const PROBE: &str = r#"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|Seccomp):' /proc/self/status
mkdir -p /mnt/p /mnt/cg
mount -t proc proc /mnt/p 2>/dev/null && echo ESCAPE mount-proc
mount -t cgroup -o devices cgroup /mnt/cg 2>/dev/null && echo ESCAPE mount-cgroup
unshare -m true 2>/dev/null && echo ESCAPE unshare-m
unshare -U true 2>/dev/null && echo ESCAPE unshare-U
ip addr add 10.254.254.253/32 dev lo 2>/dev/null && echo ESCAPE ip-addr
mknod /tmp/kmsg c 1 11 || echo mknod-refused
(: < /tmp/kmsg) 2>/dev/null && echo ESCAPE kmsg
dmesg >/dev/null 2>&1 && echo ESCAPE dmesg
echo 10 2>/dev/null > /proc/sys/vm/swappiness && echo ESCAPE swappiness
ls /proc/self/fd | xargs echo fds:
echo end
"#;

const CONFINED: &str = "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n\
                        CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n\
                        CapAmb:\t0000000000000000\nSeccomp:\t2\nfds: 0 1 2 3\nend\n";

fn remove_probe_address() {
    let _ = std::process::Command::new("ip")
        .args(["addr", "del", "10.254.254.253/32", "dev", "lo"])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Builds `dockerfile` (with probe.sh in the context) and returns the file `/out` of the
/// result, exported with `type=local`.
fn build_and_read_out(store: &Store, dockerfile: &str, extra: &[&str]) -> Result<String, String> {
    let ctx = context(&[("Dockerfile", dockerfile), ("probe.sh", PROBE)]);
    let dest = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", dest.path().display());
    let mut args = vec!["-o", out_arg.as_str()];
    args.extend_from_slice(extra);
    let out = store.build(ctx.path(), &args);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    Ok(std::fs::read_to_string(dest.path().join("out")).unwrap())
}

#[test]
fn run_step_is_confined_like_a_docker_container() {
    let store = Store::with_busybox();
    let result = build_and_read_out(
        &store,
        "FROM busybox\nCOPY probe.sh /\nRUN sh /probe.sh > /out 2>&1\n",
        &[],
    );
    remove_probe_address();
    assert_eq!(result.unwrap(), CONFINED);
}

#[test]
fn builder_run_is_confined_and_its_flags_widen_it() {
    let store = Store::with_busybox();
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY probe.sh /\n"),
        ("probe.sh", PROBE),
    ]);
    let out = store.build(ctx.path(), &["-t", "probe"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = |flags: &[&str], cmd: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.push("probe");
        args.extend_from_slice(cmd);
        store.run(&args)
    };
    let out = run(&[], &["sh", "/probe.sh"]);
    remove_probe_address();
    assert_eq!(stdout(&out), CONFINED, "{}", stderr(&out));

    let status = [
        "grep",
        "-E",
        "^(CapEff|NoNewPrivs|Seccomp):",
        "/proc/self/status",
    ];
    let own_caps = std::fs::read_to_string("/proc/self/status").unwrap();
    let own_caps = own_caps
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:\t"))
        .unwrap();
    let out = run(&["--privileged"], &status);
    assert_eq!(
        stdout(&out),
        format!("CapEff:\t{own_caps}\nNoNewPrivs:\t0\nSeccomp:\t0\n")
    );
    let out = run(&["--cap-drop", "ALL", "--cap-add", "cap_kill"], &status);
    assert_eq!(
        stdout(&out),
        "CapEff:\t0000000000000020\nNoNewPrivs:\t0\nSeccomp:\t2\n"
    );
    let out = run(
        &[
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "no-new-privileges",
        ],
        &status,
    );
    assert_eq!(
        stdout(&out),
        "CapEff:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t0\n"
    );
    let out = run(
        &["--read-only", "--pids-limit", "7"],
        &[
            "sh",
            "-c",
            "cat /sys/fs/cgroup/pids/pids.max; touch /x || echo ro",
        ],
    );
    assert!(
        stdout(&out).starts_with("7\n") && stdout(&out).ends_with("ro\n"),
        "{}",
        stdout(&out)
    );
    let out = run(&["--cap-add", "NET_WIZARD"], &["true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--cap-add NET_WIZARD"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--security-opt", "apparmor=x"], &["true"]);
    assert!(stderr(&out).contains("--security-opt"), "{}", stderr(&out));
}

#[test]
fn release_agent_exploit_from_a_run_step_does_not_reach_the_host() {
    let store = Store::with_busybox();
    let marker = std::env::temp_dir().join(format!("builder-escaped-{}", std::process::id()));
    // The original exploit: a cgroup v1 hierarchy mounted in the step, its release_agent
    // pointed at a script in the step's overlay upper dir (found in mountinfo).
    let dockerfile = format!(
        r#"FROM busybox
RUN upper=$(sed -n 's/.*upperdir=\([^,]*\).*/\1/p' /proc/self/mountinfo | head -n1); \
    printf '#!/bin/sh\ntouch {marker}\n' > /agent; chmod +x /agent; \
    for c in rdma memory pids devices cpu freezer blkio; do \
      mkdir -p /cg/$c; mount -t cgroup -o $c cgroup /cg/$c 2>/dev/null || continue; \
      mkdir -p /cg/$c/x; echo 1 > /cg/$c/x/notify_on_release; \
      echo "$upper/agent" > /cg/$c/release_agent; \
      sh -c "echo \$\$ > /cg/$c/x/cgroup.procs"; echo armed $c >> /out; \
    done; echo done >> /out
"#,
        marker = marker.display()
    );
    let result = build_and_read_out(&store, &dockerfile, &[]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(result.unwrap(), "done\n", "no hierarchy could be mounted");
    assert!(!marker.exists(), "the release agent ran on the host");
}

#[test]
fn insecure_run_needs_the_entitlement() {
    let store = Store::with_busybox();
    let dockerfile =
        "FROM busybox\nRUN --security=insecure grep -E '^(CapEff|Seccomp):' /proc/self/status > /out\n";
    let err = build_and_read_out(&store, dockerfile, &[]).unwrap_err();
    assert!(
        err.contains("Dockerfile:2:") && err.contains("--allow security.insecure"),
        "{err}"
    );
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:\t"))
        .unwrap();
    let out = build_and_read_out(&store, dockerfile, &["--allow", "security.insecure"]).unwrap();
    assert_eq!(out, format!("CapEff:\t{own}\nSeccomp:\t0\n"));
    let ctx = context(&[("Dockerfile", "FROM busybox\n")]);
    let out = store.build(ctx.path(), &["--allow", "device"]);
    assert!(
        stderr(&out).contains("--allow \"device\""),
        "{}",
        stderr(&out)
    );
}
