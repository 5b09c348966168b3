//! Containers on several networks: `network connect`/`disconnect` of running and created
//! containers (names updated on both sides, nerdctl#1149: a disconnected name never
//! resolves), `run --network` repeated, static addresses, port ranges (TCP and UDP), compose
//! services on several networks with `aliases`, `ipv4_address` and `ipam` subnets, and what
//! `disconnect`, `rm -f` and `kill -9` of a monitor leave (veths, nft rules, IPAM leases).

use crate::common::{stderr, stdout, Store};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn ok(store: &Store, args: &[&str]) -> String {
    let out = store.run(args);
    assert!(out.status.success(), "builder {args:?}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn fails(store: &Store, args: &[&str], wanted: &str) {
    let out = store.run(args);
    assert!(!out.status.success(), "builder {args:?} succeeded");
    assert!(stderr(&out).contains(wanted), "{args:?}: {}", stderr(&out));
}

/// A loopback port with `n - 1` free ports after it.
fn free_ports(n: u16) -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let free = |p: u16| {
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        };
        if first < u16::MAX - n && (first..first + n).all(free) {
            return first;
        }
    }
}

fn curl(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("curl")
            .args(["-sf", "-m", "2", url])
            .output()
            .unwrap();
        if out.status.success() {
            return stdout(&out);
        }
        assert!(Instant::now() < deadline, "curl {url} kept failing");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a container's networks leave on the host: its veths, nft rules and address leases.
fn traces(id: &str) -> (usize, usize, usize) {
    let links = stdout(&Command::new("ip").args(["-o", "link"]).output().unwrap());
    let veths = links.matches(&format!(": vb{}", &id[..11])).count();
    let rules = stdout(
        &Command::new("nft")
            .args(["list", "table", "inet", "builder"])
            .output()
            .unwrap(),
    )
    .matches(id)
    .count();
    let leases = std::fs::read_dir("/run/builder")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(id)))
        .count();
    (veths, rules, leases)
}

fn inspect(store: &Store, name: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&ok(store, &["inspect", name])).unwrap()[0].clone()
}

/// The subnet of a network and an address inside it (`.N`).
fn subnet_host(store: &Store, net: &str, n: u8) -> (String, String) {
    let v: serde_json::Value =
        serde_json::from_str(&ok(store, &["network", "inspect", net])).unwrap();
    let subnet = v[0]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    let base = subnet.split('/').next().unwrap();
    let prefix = base.rsplit_once('.').unwrap().0;
    (subnet.clone(), format!("{prefix}.{n}"))
}

fn kill_monitor(store: &Store, id: &str) {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.root().join("containers").join(id).join("state.json")).unwrap(),
    )
    .unwrap();
    let pid = state["monitor_pid"].as_u64().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(200));
}

fn import_debian(store: &Store) {
    let out = Command::new("bash")
        .arg(crate::common::repo().join("scripts/make-debian-rootfs.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    ok(store, &["import", stdout(&out).trim(), "debian:bookworm"]);
}

const HTTPD: &str =
    "mkdir -p /w && echo page-of-$HOSTNAME > /w/index.html && exec httpd -f -p 80 -h /w";

#[test]
fn connect_and_disconnect_update_names_on_both_sides_and_leave_nothing() {
    let store = Store::with_busybox();
    import_debian(&store);
    let (a, b) = (
        format!("mna{}", std::process::id()),
        format!("mnb{}", std::process::id()),
    );
    let a_id = ok(&store, &["network", "create", &a]);
    ok(&store, &["network", "create", &b]);
    let web = ok(
        &store,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--hostname",
            "web",
            "--network",
            &a,
            "busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    let cli = ok(
        &store,
        &[
            "run",
            "-d",
            "--name",
            "cli",
            "--network",
            &b,
            "debian:bookworm",
            "sleep",
            "1000",
        ],
    );
    let getent = |name: &str| store.run(&["exec", "cli", "getent", "hosts", name]);
    assert_eq!(
        getent("web").status.code(),
        Some(2),
        "not on a network with web yet"
    );

    let (subnet, fixed) = subnet_host(&store, &a, 50);
    ok(
        &store,
        &[
            "network", "connect", "--alias", "front", "--ip", &fixed, &a, "cli",
        ],
    );
    let web_ip = inspect(&store, "web")["NetworkSettings"]["Networks"][&a]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        stdout(&getent("web")).starts_with(&format!("{web_ip} ")),
        "{}",
        stdout(&getent("web"))
    );
    assert!(
        stdout(&getent("front")).starts_with(&format!("{fixed} ")),
        "its own alias"
    );
    let hosts = ok(&store, &["exec", "web", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{fixed}\tcli front")), "{hosts}");
    // Real traffic over the new interface, by name (bash's /dev/tcp resolves through libc).
    let page = ok(
        &store,
        &[
            "exec",
            "cli",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/web/80; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
        ],
    );
    assert!(page.ends_with("page-of-web"), "{page}");
    let nets = inspect(&store, "cli")["NetworkSettings"]["Networks"].clone();
    assert_eq!(nets[&a]["IPAddress"], fixed.as_str());
    assert_eq!(nets[&a]["Aliases"], serde_json::json!(["front"]));
    assert!(
        nets[&b]["IPAddress"].as_str().unwrap().contains('.'),
        "{nets}"
    );
    assert_eq!(traces(&cli).0, 2, "one veth per network");
    let members = ok(&store, &["network", "inspect", &a]);
    let prefix = subnet.split('/').nth(1).unwrap();
    assert!(
        members.contains(&format!("\"{fixed}/{prefix}\"")),
        "{members}"
    );

    let c2 = connect_errors(&store, &a, &b, &fixed);

    disconnect_forgets_the_name(&store, &a, &a_id, &cli);
    fails(&store, &["network", "rm", &b], "is used by containers");

    let udp = udp_range_echoes(&store);
    ok(&store, &["rm", "-f", "cli", "web", "udp", "c2"]);
    for id in [&cli, &web, &udp, &c2] {
        assert_eq!(traces(id), (0, 0, 0), "rm -f leaves nothing of {id}");
    }
    ok(&store, &["network", "rm", &a, &b]);
    assert!(!Path::new(&format!("/sys/class/net/bn-{}", &a_id[..12])).exists());
}

/// After `network disconnect`, neither side resolves the other's name on that network, and
/// the interface and its lease are gone.
fn disconnect_forgets_the_name(store: &Store, a: &str, a_id: &str, cli: &str) {
    let getent = |name: &str| store.run(&["exec", "cli", "getent", "hosts", name]);
    ok(store, &["network", "disconnect", a, "cli"]);
    assert_eq!(getent("web").status.code(), Some(2), "web is unknown again");
    let hosts = ok(store, &["exec", "web", "cat", "/etc/hosts"]);
    assert!(
        !hosts.contains("cli"),
        "a disconnected name never resolves: {hosts}"
    );
    assert_eq!(traces(cli).0, 1);
    let lease_file = format!("/run/builder/bn-{}-ipam.json", &a_id[..12]);
    assert!(
        !std::fs::read_to_string(&lease_file).unwrap().contains(cli),
        "the lease went"
    );
    fails(
        store,
        &["network", "disconnect", a, "cli"],
        "is not connected to network",
    );
    ok(store, &["network", "disconnect", "-f", a, "cli"]);
}

/// Connecting twice, outside the subnet, or to an address another container holds: clear
/// errors, and a start that fails on a taken address leaves nothing. Returns that container.
fn connect_errors(store: &Store, a: &str, b: &str, fixed: &str) -> String {
    fails(
        store,
        &["network", "connect", a, "cli"],
        "already exists in network",
    );
    fails(
        store,
        &["network", "connect", "--ip", "10.1.2.3", b, "web"],
        &format!("outside network {b}'s subnet"),
    );
    fails(
        store,
        &["network", "connect", "--ip", fixed, a, "web"],
        "already exists",
    );
    let c2 = ok(
        store,
        &["create", "--name", "c2", "--network", b, "busybox", "true"],
    );
    ok(store, &["network", "connect", "--ip", fixed, a, "c2"]);
    fails(
        store,
        &["start", "c2"],
        &format!("address {fixed} on network {a} is already in use by container cli"),
    );
    assert_eq!(traces(&c2), (0, 0, 0), "the failed start left nothing");
    c2
}

/// A UDP port range from the host to a Debian perl echo server; returns its id.
fn udp_range_echoes(store: &Store) -> String {
    // UDP port range from the host to a Debian perl echo server.
    let port = free_ports(2);
    let spec = format!("127.0.0.1:{port}-{}:9000-9001/udp", port + 1);
    let udp = ok(store, &["run", "-d", "--name", "udp", "-p", &spec, "debian:bookworm", "perl",
        "-MIO::Socket::INET", "-e",
        "my @s = map { IO::Socket::INET->new(LocalPort => $_, Proto => 'udp') or die } 9000, 9001; \
         while (1) { for my $s (@s) { my $m; $s->send(\"echo:$m\") if $s->recv($m, 99, 0x40) } \
         select(undef, undef, undef, 0.01) }"]);
    for p in [port, port + 1] {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 64];
        let n = loop {
            // A fresh source port each try: a conntrack entry made by an early datagram
            // cannot pin the later ones.
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            sock.send_to(format!("to{p}").as_bytes(), ("127.0.0.1", p))
                .unwrap();
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                break n;
            }
            assert!(Instant::now() < deadline, "no UDP echo on {p}");
        };
        assert_eq!(&buf[..n], format!("echo:to{p}").as_bytes());
    }
    udp
}

#[test]
fn a_container_on_three_networks_and_kill_9_of_its_monitor_leave_nothing() {
    let store = Store::with_busybox();
    let nets: Vec<String> = ["x", "y", "z"]
        .iter()
        .map(|n| format!("mn{n}{}", std::process::id()))
        .collect();
    for n in &nets {
        ok(&store, &["network", "create", n]);
    }
    let multi = ok(
        &store,
        &[
            "create",
            "--name",
            "multi",
            "--hostname",
            "multi",
            "--network",
            &nets[0],
            "--network",
            &nets[1],
            "busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    // Connected while only created: it joins at start.
    ok(
        &store,
        &["network", "connect", "--alias", "late", &nets[2], "multi"],
    );
    ok(&store, &["start", "multi"]);
    let addrs = ok(&store, &["exec", "multi", "ip", "-o", "-4", "addr"]);
    for eth in ["eth0", "eth1", "eth2"] {
        assert!(addrs.contains(eth), "{addrs}");
    }
    for (i, (net, name)) in [(&nets[0], "multi"), (&nets[1], "multi"), (&nets[2], "late")]
        .into_iter()
        .enumerate()
    {
        let client = format!("client{i}");
        let out = store.run(&[
            "run",
            "--rm",
            "--name",
            &client,
            "--network",
            net,
            "busybox",
            "wget",
            "-qO-",
            &format!("http://{name}/"),
        ]);
        assert_eq!(
            stdout(&out),
            "page-of-multi\n",
            "via {net}: {}",
            stderr(&out)
        );
    }
    let peer = ok(
        &store,
        &[
            "run",
            "-d",
            "--name",
            "peer",
            "--network",
            &nets[2],
            "busybox",
            "sleep",
            "100",
        ],
    );
    assert!(ok(&store, &["exec", "peer", "cat", "/etc/hosts"]).contains("multi late"));
    assert_eq!(traces(&multi).0, 3);

    kill_monitor(&store, &multi);
    ok(&store, &["ps", "-a"]);
    assert_eq!(
        traces(&multi),
        (0, 0, 0),
        "the next command cleaned up every interface"
    );
    assert!(
        !ok(&store, &["exec", "peer", "cat", "/etc/hosts"]).contains("multi"),
        "peers no longer resolve it"
    );
    // It starts again on all three networks.
    ok(&store, &["start", "multi"]);
    assert_eq!(inspect(&store, "multi")["State"]["Status"], "running");
    assert_eq!(traces(&multi).0, 3);
    fails(
        &store,
        &[
            "run",
            "-d",
            "--network",
            "host",
            "--network",
            &nets[0],
            "busybox",
            "true",
        ],
        "cannot be combined",
    );
    fails(
        &store,
        &["network", "connect", &nets[2], "peer"],
        "already exists",
    );
    ok(&store, &["rm", "-f", "multi", "peer"]);
    assert_eq!(traces(&multi), (0, 0, 0));
    assert_eq!(traces(&peer), (0, 0, 0));
    for n in &nets {
        ok(&store, &["network", "rm", n]);
    }
}

#[test]
fn port_ranges_publish_every_port_and_a_range_partly_in_use_fails_cleanly() {
    let store = Store::with_busybox();
    let port = free_ports(3);
    let spec = format!("127.0.0.1:{port}-{}:80-82", port + 2);
    let id = ok(&store, &["run", "-d", "--name", "pr", "-p", &spec, "busybox", "sh", "-c",
        "for p in 80 81 82; do mkdir /w$p; echo port$p > /w$p/index.html; httpd -p $p -h /w$p; done; exec sleep 1000"]);
    for (i, p) in (port..port + 3).enumerate() {
        assert_eq!(
            curl(&format!("http://127.0.0.1:{p}/")),
            format!("port{}\n", 80 + i)
        );
    }
    let listed = ok(&store, &["port", "pr"]);
    assert!(
        listed.contains(&format!("82/tcp -> 127.0.0.1:{}", port + 2)),
        "{listed}"
    );
    assert_eq!(
        traces(&id).1,
        6,
        "a DNAT rule per port in prerouting and output"
    );

    // The middle port of another range is taken: a clear error naming it, nothing made.
    let other = free_ports(3);
    let _busy = std::net::TcpListener::bind(("127.0.0.1", other + 1)).unwrap();
    let out = store.run(&[
        "run",
        "-d",
        "--name",
        "clash",
        "-p",
        &format!("127.0.0.1:{other}-{}:80-82", other + 2),
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{}/tcp", other + 1)),
        "{}",
        stderr(&out)
    );
    let clash = ok(&store, &["inspect", "-f", "{{.Id}}", "clash"]);
    assert_eq!(traces(&clash), (0, 0, 0));
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", other)).is_ok(),
        "the first port is free again"
    );

    // One container port on a host range takes the first free host port of it.
    let id2 = ok(
        &store,
        &[
            "run",
            "-d",
            "--name",
            "hr",
            "-p",
            &format!("127.0.0.1:{}-{}:80", other + 1, other + 2),
            "busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    assert_eq!(
        ok(&store, &["port", "hr", "80"]),
        format!("127.0.0.1:{}", other + 2)
    );
    fails(
        &store,
        &["run", "-d", "-p", "8000-8001:80-82", "busybox", "true"],
        "differ in length",
    );

    // Disconnected from the network its ports pointed at, the container keeps serving them
    // through the next interface, which also takes the default route.
    let extra = format!("mnp{}", std::process::id());
    ok(&store, &["network", "create", &extra]);
    ok(&store, &["network", "connect", &extra, "pr"]);
    ok(&store, &["network", "disconnect", "bridge", "pr"]);
    assert_eq!(curl(&format!("http://127.0.0.1:{}/", port + 1)), "port81\n");
    let (_, gateway) = subnet_host(&store, &extra, 1);
    let routes = ok(&store, &["exec", "pr", "ip", "route"]);
    assert!(
        routes.contains(&format!("default via {gateway}")),
        "{routes}"
    );
    assert_eq!(traces(&id), (1, 6, 1));

    ok(&store, &["rm", "-f", "pr", "clash", "hr"]);
    ok(&store, &["network", "rm", &extra]);
    assert_eq!(traces(&id), (0, 0, 0));
    assert_eq!(traces(&id2), (0, 0, 0));
    assert!(
        Command::new("curl")
            .args(["-sf", "-m", "2", &format!("http://127.0.0.1:{port}/")])
            .status()
            .unwrap()
            .code()
            != Some(0),
        "no longer forwarded"
    );
}

fn compose(store: &Store, dir: &Path, args: &[&str]) -> Output {
    let mut c = store.cmd();
    c.current_dir(dir).args(["compose", "-p", "mn"]).args(args);
    c.output().unwrap()
}

/// A /24 in 172.30.0.0/16 that no host interface uses.
fn unused_subnet() -> String {
    let addrs = stdout(
        &Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .unwrap(),
    );
    let n = (100..250u32)
        .map(|n| (n + std::process::id()) % 250)
        .find(|n| !addrs.contains(&format!("inet 172.30.{n}.")))
        .unwrap();
    format!("172.30.{n}")
}

#[test]
fn a_compose_service_on_two_networks_with_aliases_and_a_static_address() {
    let store = Store::with_busybox();
    let net = unused_subnet();
    let port = free_ports(2);
    let file = format!(
        r#"
services:
  api:
    image: busybox
    hostname: api
    command: ["sh", "-c", "{httpd}"]
    ports: [{{target: 80, host_ip: 127.0.0.1, published: "{port}-{end}"}}]
    networks:
      front: {{aliases: [www], ipv4_address: {net}.10}}
      back: {{aliases: [api-internal]}}
  web: {{image: busybox, command: ["sleep", "1000"], networks: [front]}}
  db: {{image: busybox, command: ["sleep", "1000"], networks: [back]}}
networks:
  front: {{ipam: {{config: [{{subnet: {net}.0/24}}]}}}}
  back: {{}}
"#,
        end = port + 1,
        httpd = HTTPD.replace('$', "$$"),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compose.yaml"), &file).unwrap();
    let out = compose(&store, dir.path(), &["up", "-d", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exec = |svc: &str, cmd: &str| {
        let out = compose(&store, dir.path(), &["exec", "-T", svc, "sh", "-c", cmd]);
        (out.status.success(), stdout(&out))
    };
    assert_eq!(
        exec("web", "wget -qO- http://www/"),
        (true, "page-of-api\n".into())
    );
    assert_eq!(
        exec("db", "wget -qO- http://api-internal/"),
        (true, "page-of-api\n".into())
    );
    assert!(!exec("web", "ping -c1 -W1 db").0, "db is not on front");
    assert!(
        !exec("web", "grep api-internal /etc/hosts").0,
        "back's aliases stay on back"
    );
    let nets = inspect(&store, "mn-api-1")["NetworkSettings"]["Networks"].clone();
    assert_eq!(nets["mn_front"]["IPAddress"], format!("{net}.10").as_str());
    assert!(
        nets["mn_back"]["IPAddress"].as_str().unwrap().contains('.'),
        "{nets}"
    );
    assert_eq!(curl(&format!("http://127.0.0.1:{port}/")), "page-of-api\n");
    let api = ok(&store, &["inspect", "-f", "{{.Id}}", "mn-api-1"]);
    assert_eq!(traces(&api).0, 2);

    // Bad static addresses name the file, line and key.
    let bad = file.replace(&format!("ipv4_address: {net}.10"), "ipv4_address: 10.1.2.3");
    std::fs::write(dir.path().join("compose.yaml"), &bad).unwrap();
    let out = compose(&store, dir.path(), &["up", "-d"]);
    assert!(
        stderr(&out).contains("compose.yaml:9:")
            && stderr(&out).contains("services.api.networks.front.ipv4_address: address 10.1.2.3 is outside network mn_front's subnet"),
        "{}",
        stderr(&out)
    );
    let twice = file.replace(
        "networks: [front]",
        &format!("networks: {{front: {{ipv4_address: {net}.10}}}}"),
    );
    std::fs::write(dir.path().join("compose.yaml"), &twice).unwrap();
    let out = compose(&store, dir.path(), &["up", "-d"]);
    assert!(
        stderr(&out).contains(&format!("{net}.10 is also the address of service")),
        "{}",
        stderr(&out)
    );

    let out = compose(&store, dir.path(), &["down"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(traces(&api), (0, 0, 0));
    assert!(!stdout(&store.run(&["network", "ls"])).contains("mn_"));
}

/// A network with its own subnet (outside builder's 10.88.0.0/15) still reaches the outside:
/// traffic from our bridges is masqueraded whatever its source range. Runs in a private
/// network namespace with an "outside" namespace at 192.0.2.2 behind a veth, which has no
/// route back to the container's subnet.
#[test]
fn a_network_with_its_own_subnet_reaches_the_outside_through_nat() {
    let store = Store::with_busybox();
    let script = crate::common::OUTSIDE_SETUP.to_string()
        + r#""$BIN" --root "$ROOT" network create --subnet 172.30.250.0/24 own >/dev/null
"$BIN" --root "$ROOT" run -d --name probe --network own busybox sleep 60 >/dev/null
"$BIN" --root "$ROOT" exec probe ip -o -4 addr show eth0
"$BIN" --root "$ROOT" exec probe ping -c1 -W2 192.0.2.2 >/dev/null && echo reached
# Without the bridge-wide masquerade rule the reply has no way back: that rule is what works.
handle=$(nft -a list chain inet builder postrouting | grep 'iifname' | sed 's/.*# handle //')
nft delete rule inet builder postrouting handle "$handle"
"$BIN" --root "$ROOT" exec probe ping -c1 -W1 192.0.2.2 >/dev/null || echo dropped
"#;
    let out = Command::new("unshare")
        .args(["--net", "bash", "-c", &script])
        .env("OUTSIDE", format!("builder-own-{}", std::process::id()))
        .env("BIN", env!("CARGO_BIN_EXE_builder"))
        .env("ROOT", store.root())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("inet 172.30.250."), "{text}");
    assert!(text.contains("reached"), "{text}");
    assert!(text.contains("dropped"), "{text}");
}
