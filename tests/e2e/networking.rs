//! The default bridge network: published ports reached from the host's loopback, containers
//! reaching each other on the bridge, port conflicts, and what a killed monitor leaves.
//! Traffic goes only to loopback and to addresses on our own bridge.

use crate::common::{stderr, stdout, Store};
use std::process::Command;
use std::time::{Duration, Instant};

fn ok(store: &Store, args: &[&str]) -> String {
    let out = store.run(args);
    assert!(out.status.success(), "builder {args:?}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// curl from the host, retrying while the server starts.
fn curl(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("curl")
            .args(["-sf", "-m", "2", url])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "curl {url} kept failing: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a container's network leaves on the host: its veth, its nft rules, its address lease.
fn traces(id: &str) -> (bool, usize, bool) {
    let veth = std::path::Path::new(&format!("/sys/class/net/vb{}", &id[..11])).exists();
    let rules = Command::new("nft")
        .args(["list", "table", "inet", "builder"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout).matches(id).count();
    let lease = std::fs::read_to_string("/run/builder/builder0-ipam.json")
        .unwrap_or_default()
        .contains(id);
    (veth, rules, lease)
}

fn mounts_under(dir: &std::path::Path) -> usize {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy();
    table
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m.starts_with(dir.as_ref()))
        })
        .count()
}

#[test]
fn httpd_is_reached_through_published_ports_and_containers_reach_each_other() {
    let store = Store::with_busybox();
    let (local_port, any_port) = (free_port(), free_port());
    let web = ok(&store, &["run", "-d", "--name", "web", "-p", &format!("127.0.0.1:{local_port}:80"),
        "-p", &format!("{any_port}:80"), "busybox", "sh", "-c",
        "mkdir /www && echo served-from-container > /www/index.html && exec httpd -f -p 80 -h /www"]);
    assert_eq!(
        curl(&format!("http://127.0.0.1:{local_port}/")),
        "served-from-container\n"
    );
    assert_eq!(
        curl(&format!("http://127.0.0.1:{any_port}/")),
        "served-from-container\n"
    );
    let ip = ok(
        &store,
        &["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"],
    );
    assert!(ip.starts_with("10.88."), "{ip}");
    let ports = ok(&store, &["ps", "--format", "{{.Ports}}"]);
    assert!(
        ports.contains(&format!("127.0.0.1:{local_port}->80/tcp")),
        "{ports}"
    );
    // Another container on the bridge reaches it by address.
    let out = store.run(&[
        "run",
        "--rm",
        "--name",
        "client",
        "busybox",
        "wget",
        "-qO-",
        &format!("http://{ip}/"),
    ]);
    assert_eq!(stdout(&out), "served-from-container\n", "{}", stderr(&out));
    // The container has its own network: eth0 with its address, not the host's interfaces.
    let addrs = ok(&store, &["exec", "web", "ip", "-o", "-4", "addr"]);
    assert!(
        addrs.contains(&format!("eth0    inet {ip}/16")) || addrs.contains(&ip),
        "{addrs}"
    );
    assert!(!addrs.contains("builder0"), "{addrs}");

    // The port is taken: a clear error naming it, and nothing left half-made.
    let out = store.run(&[
        "run",
        "-d",
        "--name",
        "clash",
        "-p",
        &format!("127.0.0.1:{local_port}:80"),
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{local_port}")),
        "{}",
        stderr(&out)
    );
    let clash = ok(&store, &["inspect", "-f", "{{.Id}}", "clash"]);
    assert_eq!(traces(&clash), (false, 0, false));

    ok(&store, &["rm", "-f", "web", "clash"]);
    assert_eq!(
        traces(&web),
        (false, 0, false),
        "rm removes veth, rules and lease"
    );
    assert_eq!(mounts_under(store.root()), 0);
    let refused = Command::new("curl")
        .args(["-sf", "-m", "2", &format!("http://127.0.0.1:{local_port}/")])
        .status()
        .unwrap();
    assert!(!refused.success(), "the port is no longer forwarded");
}

#[test]
fn a_killed_monitor_leaves_nothing_once_the_next_command_runs() {
    let store = Store::with_busybox();
    let port = free_port();
    let id = ok(
        &store,
        &[
            "run",
            "-d",
            "-p",
            &format!("127.0.0.1:{port}:80"),
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
        ],
    );
    assert_eq!(traces(&id), (true, 2, true));
    assert_eq!(mounts_under(store.root()), 1, "the netns bind mount");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.root().join("containers").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    let monitor = state["monitor_pid"].as_u64().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-9", &monitor])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ok(&store, &["ps", "-aq"]), &id[..12]);
    assert_eq!(
        traces(&id),
        (false, 0, false),
        "the next command cleaned up"
    );
    assert_eq!(mounts_under(store.root()), 0);
    assert_eq!(
        ok(
            &store,
            &[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                &id
            ]
        ),
        "exited 137"
    );
    // It can start again on the same port.
    ok(&store, &["start", &id]);
    assert_eq!(traces(&id), (true, 2, true));
    ok(&store, &["rm", "-f", &id]);
    assert_eq!(traces(&id), (false, 0, false));

    let out = store.run(&["run", "-d", "--network", "nowhere", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("network nowhere not found"),
        "{}",
        stderr(&out)
    );
    let out = store.run(&["run", "-d", "-p", "http:80", "busybox", "true"]);
    assert!(stderr(&out).contains("-p \"http:80\""), "{}", stderr(&out));
}

#[test]
fn containers_on_a_user_network_find_each_other_by_name_and_alias() {
    let store = Store::with_busybox();
    let net = format!("net{}", std::process::id());
    let id = ok(&store, &["network", "create", &net]);
    assert_eq!(id.len(), 64);
    let api = ok(
        &store,
        &[
            "run",
            "-d",
            "--name",
            "api",
            "--network",
            &net,
            "--network-alias",
            "backend",
            "busybox",
            "sh",
            "-c",
            "mkdir /w && echo api-here > /w/index.html && exec httpd -f -p 80 -h /w",
        ],
    );
    let out = store.run(&["run", "--rm", "--name", "cli", "--network", &net, "--add-host", "extra.test:10.1.2.3",
        "--dns", "10.9.9.9", "busybox", "sh", "-c",
        "wget -qO- http://api/ && wget -qO- http://backend/ && grep extra.test /etc/hosts && cat /etc/resolv.conf"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "api-here\napi-here\n10.1.2.3\textra.test\nnameserver 10.9.9.9\n"
    );
    assert_eq!(
        ok(&store, &["ps", "-aq", "--filter", "name=cli"]),
        "",
        "foreground --rm removed it"
    );

    // A second running peer is listed in api's hosts file, and gone from it once removed.
    ok(
        &store,
        &[
            "run",
            "-d",
            "--name",
            "worker",
            "--network",
            &net,
            "busybox",
            "sleep",
            "100",
        ],
    );
    assert!(ok(&store, &["exec", "api", "cat", "/etc/hosts"]).contains("worker"));
    let out = store.run(&["exec", "worker", "wget", "-qO-", "http://backend/"]);
    assert_eq!(stdout(&out), "api-here\n", "{}", stderr(&out));
    ok(&store, &["rm", "-f", "worker"]);
    assert!(
        !ok(&store, &["exec", "api", "cat", "/etc/hosts"]).contains("worker"),
        "a removed name never resolves"
    );

    // --network container:NAME shares api's network namespace.
    let out = store.run(&[
        "run",
        "--rm",
        "--name",
        "side",
        "--network",
        "container:api",
        "busybox",
        "wget",
        "-qO-",
        "http://127.0.0.1/",
    ]);
    assert_eq!(stdout(&out), "api-here\n", "{}", stderr(&out));

    let out = store.run(&["network", "rm", &net]);
    assert!(
        stderr(&out).contains("is used by containers api"),
        "{}",
        stderr(&out)
    );
    let out = store.run(&[
        "run",
        "-d",
        "--network",
        "default",
        "--network-alias",
        "x",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("--network-alias"), "{}", stderr(&out));
    ok(&store, &["rm", "-f", &api]);
    let bridge = format!("/sys/class/net/bn-{}", &id[..12]);
    assert!(std::path::Path::new(&bridge).exists());
    assert_eq!(ok(&store, &["network", "prune", "-f"]), net);
    assert!(
        !std::path::Path::new(&bridge).exists(),
        "the bridge goes with the network"
    );
    let out = store.run(&["network", "rm", &net]);
    assert!(
        stderr(&out).contains(&format!("network {net} not found")),
        "{}",
        stderr(&out)
    );
}

/// Docker hosts set iptables' FORWARD policy to DROP; containers must still reach the outside.
/// Everything happens in a private network namespace standing in for the host, with an
/// "outside" namespace behind a veth running a server at 192.0.2.2.
#[test]
fn forwarding_works_under_an_iptables_forward_drop_policy() {
    let store = Store::with_busybox();
    // ping, not wget: Debian's static busybox wget crashes in its resolver in this setup.
    let script = crate::common::OUTSIDE_SETUP.to_string()
        + r#"iptables -P FORWARD DROP
"$BIN" --root "$ROOT" run -d --name probe busybox sleep 60 >/dev/null
"$BIN" --root "$ROOT" exec probe ping -c1 -W2 192.0.2.2 >/dev/null && echo forwarded
echo "policy: $(iptables -S FORWARD | head -1)"
# Without our accept rules the DROP policy wins: the rules are what makes it work.
iptables -D FORWARD -i builder0 -j ACCEPT && iptables -D FORWARD -o builder0 -j ACCEPT
"$BIN" --root "$ROOT" exec probe ping -c1 -W1 192.0.2.2 >/dev/null || echo dropped
"#;
    let outside = format!("builder-outside-{}", std::process::id());
    let out = Command::new("unshare")
        .args(["--net", "bash", "-c", &script])
        .env("OUTSIDE", &outside)
        .env("BIN", env!("CARGO_BIN_EXE_builder"))
        .env("ROOT", store.root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("forwarded"), "{text}");
    assert!(text.contains("dropped"), "{text}");
    assert!(text.contains("policy: -P FORWARD DROP"), "{text}");
}

#[test]
fn port_lists_published_ports_and_a_killed_cli_leaves_a_managed_container() {
    let store = Store::with_busybox();
    let port = free_port();
    ok(
        &store,
        &[
            "run",
            "-d",
            "--name",
            "pub",
            "-p",
            &format!("127.0.0.1:{port}:80"),
            "-p",
            "53/udp",
            "busybox",
            "sleep",
            "100",
        ],
    );
    let all = ok(&store, &["port", "pub"]);
    assert!(
        all.contains(&format!("80/tcp -> 127.0.0.1:{port}")),
        "{all}"
    );
    assert!(all.contains("53/udp -> 0.0.0.0:"), "{all}");
    assert_eq!(
        ok(&store, &["port", "pub", "80"]),
        format!("127.0.0.1:{port}")
    );
    let out = store.run(&["port", "pub", "81"]);
    assert!(
        stderr(&out).contains("No public port '81/tcp'"),
        "{}",
        stderr(&out)
    );

    // kill -9 of a foreground `builder run` mid-run: as with docker's CLI, the container
    // lives on under its monitor, and removing it leaves nothing.
    let mut cli = store
        .cmd()
        .args([
            "run",
            "--name",
            "fg",
            "busybox",
            "sh",
            "-c",
            "echo up; sleep 100",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stdout(&store.run(&["logs", "fg"])) != "up\n" {
        assert!(Instant::now() < deadline, "fg never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    cli.kill().unwrap();
    cli.wait().unwrap();
    assert_eq!(
        ok(&store, &["inspect", "-f", "{{.State.Status}}", "fg"]),
        "running"
    );
    let id = ok(&store, &["inspect", "-f", "{{.Id}}", "fg"]);
    ok(&store, &["rm", "-f", "fg", "pub"]);
    assert_eq!(traces(&id), (false, 0, false));
    assert_eq!(mounts_under(store.root()), 0);
}
