//! `builder compose up/down/...` running real stacks: a Redis (Debian's redis-server built
//! into an image by `up --build`) with healthcheck gating, service DNS through getent, a
//! published port and a named volume; a one-shot init job gating scaled replicas; networks
//! that isolate; profiles, `.env` and `env_file`; idempotent `up`; `up --wait` failures;
//! stop_signal on `down`; Ctrl-C on a foreground `up`.

use crate::common::{repo, stderr, stdout, Store};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A compose project directory with the given files.
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("compose-")
        .tempdir()
        .unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// `builder compose -p NAME ARGS` in `dir`.
fn compose(store: &Store, dir: &Path, name: &str, args: &[&str]) -> Output {
    let mut c = store.cmd();
    c.current_dir(dir).args(["compose", "-p", name]).args(args);
    c.output().unwrap()
}

fn ok(store: &Store, dir: &Path, name: &str, args: &[&str]) -> String {
    let out = compose(store, dir, name, args);
    assert!(
        out.status.success(),
        "compose {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `compose ps -a --format json`, by container name.
fn ps(store: &Store, dir: &Path, name: &str) -> Vec<serde_json::Value> {
    let text = ok(store, dir, name, &["ps", "-a", "--format", "json"]);
    let mut rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    rows.sort_by_key(|r| r["Name"].as_str().unwrap().to_string());
    rows
}

fn ids(rows: &[serde_json::Value]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["Name"].as_str().unwrap().into(),
                r["ID"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn inspect(store: &Store, container: &str) -> serde_json::Value {
    let out = store.run(&["inspect", container]);
    assert!(
        out.status.success(),
        "inspect {container}: {}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v[0].clone()
}

/// The container's address on its (one) network.
fn ip_of(store: &Store, container: &str) -> String {
    let v = inspect(store, container);
    let nets = v["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .clone();
    nets.values().next().unwrap()["IPAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// `down` (with `args`), then nothing of the project is left: no container, network, veth
/// or nftables rule of its containers.
fn down_clean(store: &Store, dir: &Path, name: &str, args: &[&str]) {
    let before: Vec<String> = ids(&ps(store, dir, name))
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    ok(store, dir, name, args);
    assert_clean(store, name);
    let rules = Command::new("nft")
        .args(["list", "table", "inet", "builder"])
        .output()
        .unwrap();
    let rules = stdout(&rules);
    for id in before {
        assert!(
            !Path::new(&format!("/sys/class/net/vb{}", &id[..11])).exists(),
            "veth of {id} left"
        );
        assert!(!rules.contains(&id), "nft rules of {id} left: {rules}");
    }
}

/// What a project leaves in the store after `down`: its containers and networks.
fn assert_clean(store: &Store, name: &str) {
    let ps = stdout(&store.run(&["ps", "-a", "--format", "{{.Names}}"]));
    assert!(!ps.contains(&format!("{name}-")), "containers left: {ps}");
    let nets = stdout(&store.run(&["network", "ls"]));
    assert!(!nets.contains(&format!("{name}_")), "networks left: {nets}");
}

fn debian_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/make-debian-rootfs.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make-debian-rootfs.sh: {}",
            stderr(&out)
        );
        PathBuf::from(stdout(&out).trim())
    })
    .clone()
}

/// A build context adding the host's redis-server and redis-cli (and the libraries they need
/// beyond the C library) to the Debian image under /opt/redis: Debian's own packages,
/// without network access from the build.
fn redis_context(dir: &Path) {
    let opt = dir.join("opt");
    std::fs::create_dir_all(opt.join("bin")).unwrap();
    std::fs::create_dir_all(opt.join("lib")).unwrap();
    for bin in ["/usr/bin/redis-server", "/usr/bin/redis-cli"] {
        let ldd = Command::new("ldd").arg(bin).output().unwrap();
        assert!(
            ldd.status.success(),
            "{bin} missing: run scripts/install-deps.sh"
        );
        std::fs::copy(
            bin,
            opt.join("bin").join(Path::new(bin).file_name().unwrap()),
        )
        .unwrap();
        for line in stdout(&ldd).lines() {
            let Some((lib, path)) = line.trim().split_once(" => ") else {
                continue;
            };
            let path = path.split_whitespace().next().unwrap_or_default();
            let base = ["libc.so", "libm.so", "ld-linux", "libpthread", "libdl.so"];
            if path.starts_with('/') && !base.iter().any(|b| lib.starts_with(b)) {
                std::fs::copy(path, opt.join("lib").join(lib)).unwrap();
            }
        }
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM debian:bookworm\nCOPY opt/ /opt/redis/\n\
         ENV PATH=/opt/redis/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
         LD_LIBRARY_PATH=/opt/redis/lib\n",
    )
    .unwrap();
}

/// Seconds of the day of an RFC 3339 time (enough to compare two close times).
fn seconds(rfc3339: &str) -> f64 {
    let time = rfc3339.split('T').nth(1).unwrap().trim_end_matches('Z');
    let parts: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

#[test]
fn redis_stack_gates_on_health_resolves_services_publishes_and_keeps_its_volume() {
    let store = Store::with_busybox();
    let tar = debian_tar();
    assert!(store
        .run(&["import", tar.to_str().unwrap(), "debian:bookworm"])
        .status
        .success());
    let port = free_port();
    let file = format!(
        r#"
services:
  redis:
    build: ./redis
    command: ["sh", "-c", "sleep 2; exec redis-server --dir /data --appendonly yes --protected-mode no"]
    volumes: [data:/data]
    healthcheck: {{test: ["CMD", "redis-cli", "ping"], interval: 300ms, retries: 40}}
  client:
    image: cs1-redis
    command: ["sleep", "1000"]
    depends_on: {{redis: {{condition: service_healthy}}}}
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo web-up > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1:{port}:80"]
    depends_on: {{redis: {{condition: service_healthy}}}}
volumes: {{data: {{}}}}
"#
    );
    let dir = project(&[("compose.yaml", &file)]);
    redis_context(&dir.path().join("redis"));
    let name = "cs1";
    ok(&store, dir.path(), name, &["up", "-d", "--build", "--wait"]);
    // Gated: the dependents started only once redis answered, 2 s after it started.
    let started = |c: &str| {
        inspect(&store, c)["State"]["StartedAt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let gap = seconds(&started("cs1-web-1")) - seconds(&started("cs1-redis-1"));
    assert!(
        gap >= 1.9,
        "web started {gap} s after redis, before it was healthy"
    );
    let health = inspect(&store, "cs1-redis-1")["State"]["Health"]["Status"].clone();
    assert_eq!(health, "healthy");
    assert_eq!(curl(&format!("http://127.0.0.1:{port}/")), "web-up\n");
    // Service DNS through the C library's resolver, and redis reached by name.
    let hosts = ok(
        &store,
        dir.path(),
        name,
        &["exec", "-T", "client", "getent", "hosts", "redis"],
    );
    assert!(hosts.starts_with(&ip_of(&store, "cs1-redis-1")), "{hosts}");
    let set = ok(
        &store,
        dir.path(),
        name,
        &[
            "exec",
            "-T",
            "client",
            "redis-cli",
            "-h",
            "redis",
            "set",
            "k",
            "kept",
        ],
    );
    assert_eq!(set.trim(), "OK");
    down_clean(&store, dir.path(), name, &["down"]);
    ok(&store, dir.path(), name, &["up", "-d", "--wait"]);
    let get = ok(
        &store,
        dir.path(),
        name,
        &[
            "exec",
            "-T",
            "client",
            "redis-cli",
            "-h",
            "redis",
            "get",
            "k",
        ],
    );
    assert_eq!(get.trim(), "kept", "the named volume survives down/up");
    down_clean(&store, dir.path(), name, &["down", "-v"]);
    let volumes = stdout(&store.run(&["volume", "ls"]));
    assert!(
        !volumes.contains("cs1_data"),
        "down -v removes the volume: {volumes}"
    );
}

const INIT_STACK: &str = r#"
services:
  init:
    image: busybox
    command: ["sh", "-c", "sleep 1; echo seeded > /shared/seed"]
    volumes: [shared:/shared]
  worker:
    image: busybox
    command: ["sh", "-c", "cat /shared/seed && exec sleep 1000"]
    volumes: [shared:/shared]
    deploy: {replicas: 2}
    depends_on: {init: {condition: service_completed_successfully}}
  other:
    image: busybox
    command: ["sleep", "1000"]
volumes: {shared: {}}
"#;

#[test]
fn init_job_gates_scaled_replicas_and_up_recreates_only_what_changed() {
    let store = Store::with_busybox();
    let dir = project(&[("compose.yaml", INIT_STACK)]);
    let name = "cs2";
    ok(&store, dir.path(), name, &["up", "-d", "--wait"]);
    let rows = ps(&store, dir.path(), name);
    let names: Vec<String> = ids(&rows).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["cs2-init-1", "cs2-other-1", "cs2-worker-1", "cs2-worker-2"]
    );
    let logs = ok(&store, dir.path(), name, &["logs", "worker"]);
    assert_eq!(
        logs.matches("| seeded").count(),
        2,
        "both replicas saw the init's output: {logs}"
    );
    let labels = &inspect(&store, "cs2-worker-2")["Config"]["Labels"];
    assert_eq!(labels["com.docker.compose.project"], "cs2");
    assert_eq!(labels["com.docker.compose.service"], "worker");
    assert_eq!(labels["com.docker.compose.container-number"], "2");
    let before = ids(&rows);
    // Unchanged: nothing recreated. Scaled: one more worker, the others untouched.
    ok(
        &store,
        dir.path(),
        name,
        &["up", "-d", "--scale", "worker=3"],
    );
    let after = ids(&ps(&store, dir.path(), name));
    for c in &before {
        assert!(after.contains(c), "{c:?} was recreated: {after:?}");
    }
    assert!(after.iter().any(|(n, _)| n == "cs2-worker-3"));
    // A changed service is the only one recreated.
    let changed = INIT_STACK.replace(
        r#"command: ["sleep", "1000"]"#,
        "command: [\"sleep\", \"1001\"]",
    );
    std::fs::write(dir.path().join("compose.yaml"), changed).unwrap();
    ok(
        &store,
        dir.path(),
        name,
        &["up", "-d", "--scale", "worker=3"],
    );
    let again = ids(&ps(&store, dir.path(), name));
    for (n, id) in &after {
        let now = &again.iter().find(|(m, _)| m == n).unwrap().1;
        assert_eq!(now == id, n != "cs2-other-1", "{n}: {id} -> {now}");
    }
    // Peers resolve the recreated service to its new container.
    let hosts = ok(
        &store,
        dir.path(),
        name,
        &["exec", "-T", "worker", "cat", "/etc/hosts"],
    );
    let line = hosts
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == "other"));
    let ip = line.and_then(|l| l.split_whitespace().next());
    assert_eq!(ip, Some(ip_of(&store, "cs2-other-1").as_str()), "{hosts}");
    down_clean(&store, dir.path(), name, &["down", "-v"]);
}

#[test]
fn a_failed_init_job_keeps_its_dependents_from_starting() {
    let store = Store::with_busybox();
    let file = INIT_STACK.replace("echo seeded > /shared/seed", "exit 3");
    let dir = project(&[("compose.yaml", &file)]);
    let out = compose(&store, dir.path(), "cs3", &["up", "-d"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("didn't complete successfully: exit 3"),
        "{}",
        stderr(&out)
    );
    let names: Vec<String> = ids(&ps(&store, dir.path(), "cs3"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(!names.iter().any(|n| n.contains("worker")), "{names:?}");
    down_clean(&store, dir.path(), "cs3", &["down", "-v"]);
}

#[test]
fn networks_isolate_services_that_share_none() {
    let store = Store::with_busybox();
    let file = r#"
services:
  a: {image: busybox, command: ["sleep", "1000"], networks: [front]}
  b: {image: busybox, command: ["sleep", "1000"], networks: [back]}
  c: {image: busybox, command: ["sleep", "1000"], networks: {front: {aliases: [see]}}}
networks: {front: {}, back: {}}
"#;
    let dir = project(&[("compose.yaml", file)]);
    let name = "cs4";
    ok(&store, dir.path(), name, &["up", "-d", "--wait"]);
    let run = |svc: &str, cmd: &str| {
        compose(
            &store,
            dir.path(),
            name,
            &["exec", "-T", svc, "sh", "-c", cmd],
        )
        .status
        .success()
    };
    assert!(run("a", "ping -c1 -W2 c"), "a reaches c by name on front");
    assert!(run("a", "ping -c1 -W2 see"), "and by alias");
    assert!(!run("a", "ping -c1 -W1 b"), "b's name is unknown on front");
    let b_ip = ip_of(&store, "cs4-b-1");
    assert!(
        !run("a", &format!("ping -c1 -W1 {b_ip}")),
        "front cannot route to back"
    );
    assert!(!run(
        "b",
        &format!("ping -c1 -W1 {}", ip_of(&store, "cs4-a-1"))
    ));
    down_clean(&store, dir.path(), name, &["down"]);
}

#[test]
fn profiles_dotenv_interpolation_and_env_file() {
    let store = Store::with_busybox();
    let file = r#"
services:
  app:
    image: busybox
    command: ["sleep", "1000"]
    env_file: app.env
    environment: {GREETING: "${GREETING}", FROM_BOTH: env}
  debug:
    image: busybox
    command: ["sleep", "1000"]
    profiles: [debug]
"#;
    let dir = project(&[
        ("compose.yaml", file),
        (".env", "GREETING=hello-from-dotenv\n"),
        ("app.env", "FROM_FILE=file-value\nFROM_BOTH=file\n"),
    ]);
    let name = "cs5";
    ok(&store, dir.path(), name, &["up", "-d"]);
    let env = ok(
        &store,
        dir.path(),
        name,
        &[
            "exec",
            "-T",
            "app",
            "sh",
            "-c",
            "echo $GREETING $FROM_FILE $FROM_BOTH",
        ],
    );
    assert_eq!(env.trim(), "hello-from-dotenv file-value env");
    let names = || {
        ids(&ps(&store, dir.path(), name))
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(), ["cs5-app-1"]);
    ok(
        &store,
        dir.path(),
        name,
        &["--profile", "debug", "up", "-d"],
    );
    assert_eq!(names(), ["cs5-app-1", "cs5-debug-1"]);
    down_clean(&store, dir.path(), name, &["--profile", "debug", "down"]);
}

#[test]
fn up_wait_fails_when_a_service_turns_unhealthy_or_exits() {
    let store = Store::with_busybox();
    let sick = r#"
services:
  sick:
    image: busybox
    command: ["sleep", "1000"]
    healthcheck: {test: ["CMD", "false"], interval: 200ms, retries: 2}
"#;
    let dir = project(&[("compose.yaml", sick)]);
    let out = compose(&store, dir.path(), "cs6", &["up", "-d", "--wait"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cs6-sick-1 is unhealthy"),
        "{}",
        stderr(&out)
    );
    ok(&store, dir.path(), "cs6", &["down"]);
    // Still starting (its first probe is 30 s away) when it exits.
    let dying = r#"
services:
  dying:
    image: busybox
    command: ["sh", "-c", "sleep 1; exit 4"]
    healthcheck: {test: ["CMD", "true"], interval: 30s}
"#;
    std::fs::write(dir.path().join("compose.yaml"), dying).unwrap();
    let out = compose(&store, dir.path(), "cs6", &["up", "-d", "--wait"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cs6-dying-1 exited (4)"),
        "{}",
        stderr(&out)
    );
    down_clean(&store, dir.path(), "cs6", &["down"]);
}

const TRAPPING: &str = r#"
services:
  trap:
    image: busybox
    command: ["sh", "-c", "trap 'echo got-usr1 > /out/signal; exit 0' USR1; echo hello-fg; while true; do sleep 0.1; done"]
    stop_signal: SIGUSR1
    stop_grace_period: 20s
    volumes: ["./out:/out"]
"#;

#[test]
fn down_sends_the_stop_signal() {
    let store = Store::with_busybox();
    let dir = project(&[("compose.yaml", TRAPPING)]);
    ok(&store, dir.path(), "cs7", &["up", "-d", "--wait"]);
    let started = Instant::now();
    ok(&store, dir.path(), "cs7", &["down"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "down waited for the grace period"
    );
    let got = std::fs::read_to_string(dir.path().join("out/signal")).unwrap();
    assert_eq!(got, "got-usr1\n");
    assert_clean(&store, "cs7");
}

#[test]
fn foreground_up_streams_prefixed_logs_and_stops_on_ctrl_c() {
    let store = Store::with_busybox();
    let dir = project(&[("compose.yaml", TRAPPING)]);
    let child = store
        .cmd()
        .current_dir(dir.path())
        .args(["compose", "-p", "cs8", "up"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Once it logged, the trap is set.
    while !stdout(&store.run(&["logs", "cs8-trap-1"])).contains("hello-fg") {
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("cs8-trap-1 | hello-fg"),
        "{}",
        stdout(&out)
    );
    let got = std::fs::read_to_string(dir.path().join("out/signal")).unwrap();
    assert_eq!(got, "got-usr1\n", "Ctrl-C stopped with the stop signal");
    let state = inspect(&store, "cs8-trap-1")["State"]["Status"].clone();
    assert_eq!(state, "exited");
    down_clean(&store, dir.path(), "cs8", &["down"]);
}

#[test]
fn a_recreated_dependency_restarts_dependents_that_ask_for_it() {
    let store = Store::with_busybox();
    let file = r#"
services:
  db: {image: busybox, stop_grace_period: 1s, command: ["sleep", "1000"]}
  app:
    image: busybox
    command: ["sleep", "1000"]
    stop_grace_period: 1s
    depends_on: {db: {condition: service_started, restart: true}}
  other:
    image: busybox
    command: ["sleep", "1000"]
    depends_on: [db]
"#;
    let dir = project(&[("compose.yaml", file)]);
    let name = "cs9";
    ok(&store, dir.path(), name, &["up", "-d"]);
    let started = |c: &str| {
        inspect(&store, c)["State"]["StartedAt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = ids(&ps(&store, dir.path(), name));
    let (app, other) = (started("cs9-app-1"), started("cs9-other-1"));
    let changed = file.replacen("\"1000\"]}", "\"1001\"]}", 1);
    std::fs::write(dir.path().join("compose.yaml"), changed).unwrap();
    ok(&store, dir.path(), name, &["up", "-d"]);
    let after = ids(&ps(&store, dir.path(), name));
    assert_ne!(before[1], after[1], "db recreated: {after:?}");
    assert_eq!(
        (&before[0], &before[2]),
        (&after[0], &after[2]),
        "dependents kept"
    );
    assert_ne!(started("cs9-app-1"), app, "app (restart: true) restarted");
    assert_eq!(started("cs9-other-1"), other, "other left alone");
    down_clean(&store, dir.path(), name, &["down"]);
}

/// `compose push` sends each built service's image to its registry (in-process, no child
/// `builder push`), and a service without `build:` is left alone.
#[test]
fn compose_push_sends_built_images_to_their_registry() {
    let registry = crate::common::Registry::start();
    let store = Store::with_busybox();
    let yaml = format!(
        "services:\n  app:\n    image: {}/compose/app:1\n    build: ./app\n  \
         other:\n    image: busybox\n",
        registry.addr
    );
    let dir = project(&[
        ("compose.yaml", &yaml),
        (
            "app/Dockerfile",
            "FROM busybox\nRUN echo pushed > /marker\n",
        ),
    ]);
    ok(&store, dir.path(), "cpush", &["build"]);
    let out = ok(&store, dir.path(), "cpush", &["push"]);
    assert!(out.contains("compose/app:1"), "{out}");
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/compose/app:1", registry.addr))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    assert!(
        stdout(&inspect).contains("\"Layers\""),
        "{}",
        stdout(&inspect)
    );
}

/// `up --build` after one service's source changed rebuilds it and recreates only its
/// container; the other built service keeps its container (same ID).
#[test]
fn up_build_after_a_source_change_recreates_only_that_service() {
    let store = Store::with_busybox();
    let dockerfile = "FROM busybox\nCOPY msg /msg\nCMD [\"sleep\", \"300\"]\n";
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  a:\n    build: ./a\n  b:\n    build: ./b\n",
        ),
        ("a/Dockerfile", dockerfile),
        ("a/msg", "a1\n"),
        ("b/Dockerfile", dockerfile),
        ("b/msg", "b1\n"),
    ]);
    ok(&store, dir.path(), "csrc", &["up", "-d", "--build"]);
    let before = ids(&ps(&store, dir.path(), "csrc"));
    assert_eq!(before.len(), 2, "{before:?}");
    std::fs::write(dir.path().join("a/msg"), "a2\n").unwrap();
    ok(&store, dir.path(), "csrc", &["up", "-d", "--build"]);
    let after = ids(&ps(&store, dir.path(), "csrc"));
    assert_eq!(after.len(), 2, "{after:?}");
    assert_ne!(after[0], before[0], "a's source changed: recreated");
    assert_eq!(after[1], before[1], "b unchanged: same container");
    let out = store.run(&["exec", "csrc-a-1", "cat", "/msg"]);
    assert_eq!(stdout(&out), "a2\n", "{}", stderr(&out));
    ok(&store, dir.path(), "csrc", &["down"]);
}
