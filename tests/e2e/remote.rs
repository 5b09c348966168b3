//! The remote build farm end to end: real `builder serve` processes on loopback ports (each
//! with its own root), certificates made by `openssl` at test time, and real clients.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EPOCH: &str = "1700000000";

/// A CA, a server certificate for 127.0.0.1, a client certificate, and a client certificate
/// from another CA; `client/` and `rogue/` are BUILDER_CERT_PATH directories.
struct Certs {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

impl Certs {
    fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "rogue-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                ],
            );
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        let sign = |name: &str, ca: &str, ext: &str| {
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN={name}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    ext,
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        };
        sign("server", "ca", "server.ext");
        sign("client", "ca", "client.ext");
        sign("rogue", "rogue-ca", "client.ext");
        for who in ["client", "rogue"] {
            let cert_dir = d.join(who);
            std::fs::create_dir(&cert_dir).unwrap();
            std::fs::copy(d.join("ca.pem"), cert_dir.join("ca.pem")).unwrap();
            std::fs::copy(d.join(format!("{who}.pem")), cert_dir.join("cert.pem")).unwrap();
            std::fs::copy(d.join(format!("{who}.key")), cert_dir.join("key.pem")).unwrap();
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// busybox:latest imported reproducibly, so two stores hold the same base image.
fn store_with_busybox() -> Store {
    let s = Store::new();
    let out = s
        .cmd()
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["import", busybox_tar().to_str().unwrap(), "busybox:latest"])
        .output()
        .unwrap();
    assert!(out.status.success(), "import: {}", stderr(&out));
    s
}

/// A `builder serve` process with mutual TLS on a loopback port.
struct Server {
    child: Option<Child>,
    store: Store,
    port: u16,
    extra: Vec<String>,
}

impl Server {
    fn start(certs: &Certs, extra: &[&str]) -> Self {
        let mut s = Server {
            child: None,
            store: store_with_busybox(),
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn(certs);
        s
    }

    fn spawn(&mut self, certs: &Certs) {
        let child = self
            .store
            .cmd()
            .arg("serve")
            .arg(format!("--addr=tcp://127.0.0.1:{}", self.port))
            .arg("--tlscacert")
            .arg(certs.path("ca.pem"))
            .arg("--tlscert")
            .arg(certs.path("server.pem"))
            .arg("--tlskey")
            .arg(certs.path("server.key"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_listener(&self.addr_port());
    }

    fn addr_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `builder build --builder URL` with the client certificates of `who` ("client", "rogue" or
/// "" for none) and SOURCE_DATE_EPOCH.
fn remote_cmd(certs: &Certs, who: &str, builder: &str, ctx: &Path, extra: &[&str]) -> Command {
    let client_root = std::env::temp_dir().join("builder-remote-client");
    let mut c = Command::new(BIN);
    c.arg("--root")
        .arg(client_root)
        .arg("build")
        .arg("--builder")
        .arg(builder)
        .args(extra)
        .arg(ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("BUILDER_HOST")
        .stdin(Stdio::null());
    if who.is_empty() {
        c.env_remove("BUILDER_CERT_PATH");
    } else {
        c.env("BUILDER_CERT_PATH", certs.path(who));
    }
    c
}

fn remote_build(certs: &Certs, builder: &str, ctx: &Path, extra: &[&str]) -> Output {
    remote_cmd(certs, "client", builder, ctx, extra)
        .output()
        .unwrap()
}

/// The `context_bytes_sent` a rawjson build reported.
fn bytes_sent(out: &Output) -> u64 {
    events(out)
        .iter()
        .find_map(|e| e["context_bytes_sent"].as_u64())
        .unwrap_or_else(|| panic!("no context_bytes_sent in: {}", stderr(out)))
}

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// SOURCE_DATE_EPOCH alone leaves the times COPY and RUN give files; this clamps them too.
const REPRODUCIBLE: &str = "type=image,rewrite-timestamp=true";

const DOCKERFILE: &str = "FROM busybox:latest\nCOPY . /app\nRUN cat /app/a.txt > /copied.txt\n";

#[test]
fn remote_build_matches_local_and_sends_only_changed_files() {
    let certs = Certs::generate();
    let metrics_port = free_port();
    let server = Server::start(
        &certs,
        &["--metrics-addr", &format!("127.0.0.1:{metrics_port}")],
    );
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "Dockerfile", DOCKERFILE.as_bytes());
    write(ctx.path(), "a.txt", b"first\n");
    write(ctx.path(), "big/blob.bin", &vec![7u8; 3 << 20]);
    write(ctx.path(), "ignored/secret.txt", b"not sent");
    write(ctx.path(), ".dockerignore", b"ignored\n");

    let scratch = tempfile::tempdir().unwrap();
    let out = remote_build(&certs, &server.url(), ctx.path(), &["--progress=rawjson"]);
    assert!(out.status.success(), "remote build: {}", stderr(&out));
    let first = bytes_sent(&out);
    assert!(first > 3 << 20, "the first upload sent only {first} bytes");
    assert!(
        first < (3 << 20) + (1 << 20),
        "the ignored directory was sent? {first}"
    );

    // One small file changes: only it (and the manifest) travel; the result comes back.
    write(ctx.path(), "a.txt", b"second\n");
    let dest = scratch.path().join("rootfs");
    let out = remote_build(
        &certs,
        &server.url(),
        ctx.path(),
        &[
            "--progress=rawjson",
            "-o",
            &format!("type=local,dest={}", dest.display()),
        ],
    );
    assert!(out.status.success(), "second build: {}", stderr(&out));
    let second = bytes_sent(&out);
    assert!(second < 1 << 20, "a one-file change sent {second} bytes");
    assert_eq!(
        std::fs::read_to_string(dest.join("copied.txt")).unwrap(),
        "second\n"
    );
    assert!(
        !dest.join("app/ignored").exists(),
        ".dockerignore was not applied"
    );

    let metrics = http_get(&format!("127.0.0.1:{metrics_port}"));
    assert!(metrics.contains("builder_builds_total 2"), "{metrics}");
    assert!(metrics.contains("builder_builds_running 0"), "{metrics}");
}

/// A remote build gives the image a local build gives (SOURCE_DATE_EPOCH, rewrite-timestamp).
#[test]
fn remote_image_digest_equals_local() {
    let certs = Certs::generate();
    let server = Server::start(&certs, &[]);
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "Dockerfile", DOCKERFILE.as_bytes());
    write(ctx.path(), "a.txt", b"first\n");
    write(ctx.path(), "big/blob.bin", &vec![7u8; 3 << 20]);
    write(ctx.path(), "ignored/secret.txt", b"not sent");
    write(ctx.path(), ".dockerignore", b"ignored\n");

    let local = store_with_busybox();
    let local_iid = local.dir.path().join("iid");
    let out = local
        .cmd()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", "--progress=plain", "-o", REPRODUCIBLE, "--iidfile"])
        .arg(&local_iid)
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "local build: {}", stderr(&out));

    let scratch = tempfile::tempdir().unwrap();
    let remote_iid = scratch.path().join("iid");
    let out = remote_build(
        &certs,
        &server.url(),
        ctx.path(),
        &[
            "--progress=rawjson",
            "-o",
            REPRODUCIBLE,
            "--iidfile",
            remote_iid.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "remote build: {}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&remote_iid).unwrap(),
        std::fs::read_to_string(&local_iid).unwrap(),
        "the remote image differs from the local one: {}",
        stderr(&out)
    );
}

fn http_get(addr: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn client_certificates_are_required_and_checked() {
    let certs = Certs::generate();
    let server = Server::start(&certs, &[]);
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\n")]);
    let out = remote_cmd(&certs, "", &server.url(), ctx.path(), &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("requires a client certificate"),
        "no cert: {err}"
    );

    let out = remote_cmd(&certs, "rogue", &server.url(), ctx.path(), &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refused this client's certificate"),
        "rogue cert: {err}"
    );

    // TCP without TLS is refused at start, and --insecure only on loopback.
    let store = Store::new();
    let out = store.run(&["serve", &format!("--addr=tcp://127.0.0.1:{}", free_port())]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs mutual TLS"),
        "{}",
        stderr(&out)
    );
    let out = store.run(&["serve", "--insecure", "--addr=tcp://0.0.0.0:1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only on a loopback"),
        "{}",
        stderr(&out)
    );
}

/// Which node served a build (the plain progress names it).
fn node_of(out: &Output) -> String {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.contains("context_bytes_sent="))
        .unwrap_or_else(|| panic!("no context line: {err}"));
    line.split(" to ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn nodes_are_sticky_and_fail_over() {
    let certs = Certs::generate();
    let mut a = Server::start(&certs, &[]);
    let b = Server::start(&certs, &[]);
    let dead = format!("tcp://127.0.0.1:{}", free_port());
    let list = format!("{},{},{dead}", a.url(), b.url());
    let ctx = context(&[
        ("Dockerfile", "FROM busybox:latest\nCOPY f /f\n"),
        ("f", "x"),
    ]);
    let mut chosen = Vec::new();
    for _ in 0..2 {
        let out = remote_build(&certs, &list, ctx.path(), &["--progress=plain"]);
        assert!(out.status.success(), "{}", stderr(&out));
        chosen.push(node_of(&out));
    }
    assert_eq!(chosen[0], chosen[1], "routing is not sticky");
    assert_ne!(chosen[0], dead);
    // The chosen node goes down: the build moves to a live one.
    let (down, other) = if chosen[0] == a.url() {
        a.kill();
        (a.url(), b.url())
    } else {
        drop(b);
        (chosen[0].clone(), a.url())
    };
    let out = remote_build(&certs, &list, ctx.path(), &["--progress=plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node_of(&out), other, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{down}: ")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn eight_concurrent_clients_all_succeed() {
    let certs = Certs::generate();
    let server = Server::start(&certs, &[]);
    let dirs: Vec<_> = (0..8)
        .map(|i| {
            context(&[
                (
                    "Dockerfile",
                    "FROM busybox:latest\nCOPY f /f\nRUN cat /f > /g\n",
                ),
                ("f", &format!("client {i}\n")),
            ])
        })
        .collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let out = d.path().join("out.tar");
            remote_cmd(
                &certs,
                "client",
                &server.url(),
                d.path(),
                &[
                    "--progress=plain",
                    "-o",
                    &format!("type=tar,dest={}", out.display()),
                ],
            )
            .env("CLIENT", i.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "client {i}: {}", stderr(&out));
        let list = Command::new("tar")
            .arg("-xOf")
            .arg(dirs[i].path().join("out.tar"))
            .arg("g")
            .output()
            .unwrap();
        assert_eq!(stdout(&list), format!("client {i}\n"));
    }
}

/// Files under the server's remote/ area that a dropped session must not leave behind.
fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = all_files(&root.join("remote"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".upload-"))
        .collect();
    if let Ok(builds) = std::fs::read_dir(root.join("remote/builds")) {
        found.extend(builds.map(|e| e.unwrap().path()));
    }
    found
}

#[test]
fn a_client_killed_mid_upload_leaves_the_server_clean() {
    let certs = Certs::generate();
    let server = Server::start(&certs, &[]);
    let ctx = tempfile::tempdir().unwrap();
    // Files are written in place: one cut off mid-write must be sent again, never taken as
    // complete (its size shows it).
    write(
        ctx.path(),
        "Dockerfile",
        b"FROM busybox:latest\nCOPY . /c\n\
          RUN for i in 0 1 2 3; do test $(wc -c < /c/blob$i) -eq 67108864 || exit 1; done\n",
    );
    for i in 0..4 {
        write(ctx.path(), &format!("blob{i}"), &vec![i as u8; 64 << 20]);
    }
    let mut client = remote_cmd(&certs, "client", &server.url(), ctx.path(), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    client.kill().unwrap();
    client.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leftovers(server.store.root()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(leftovers(server.store.root()), Vec::<PathBuf>::new());
    let out = remote_build(&certs, &server.url(), ctx.path(), &["--progress=plain"]);
    assert!(
        out.status.success(),
        "after the killed upload: {}",
        stderr(&out)
    );
}

#[test]
fn a_server_killed_mid_build_gives_a_clear_error_and_restarts() {
    let certs = Certs::generate();
    let mut server = Server::start(&certs, &[]);
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN sleep 30\n")]);
    let client = remote_cmd(
        &certs,
        "client",
        &server.url(),
        ctx.path(),
        &["--progress=plain"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    server.kill();
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("lost the connection to the builder"), "{err}");

    server.spawn(&certs);
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN echo again\n")]);
    let out = remote_build(&certs, &server.url(), ctx.path(), &["--progress=plain"]);
    assert!(out.status.success(), "after the restart: {}", stderr(&out));
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let dir = repo().join("deploy/kubernetes");
    let files = [
        "configmap.yaml",
        "secret.yaml",
        "service.yaml",
        "statefulset.yaml",
    ];
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(files.iter().map(|f| dir.join(f)))
        .output()
        .expect("kubernetes-validate (scripts/install-deps.sh installs it)");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out) + &stderr(&out);
    assert_eq!(text.matches(" passed ").count(), files.len(), "{text}");
    // Strict mode does reject what the schema does not know.
    let bad = tempfile::tempdir().unwrap();
    let set = std::fs::read_to_string(dir.join("statefulset.yaml")).unwrap();
    let set = set.replace(
        "  serviceName: builder",
        "  serviceName: builder\n  replica: 2",
    );
    std::fs::write(bad.path().join("s.yaml"), set).unwrap();
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(bad.path().join("s.yaml"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "strict mode accepted an unknown field"
    );
}

#[test]
fn a_disconnected_client_cancels_its_build() {
    let certs = Certs::generate();
    let metrics_port = free_port();
    let server = Server::start(
        &certs,
        &["--metrics-addr", &format!("127.0.0.1:{metrics_port}")],
    );
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN sleep 60\n")]);
    let mut client = remote_cmd(&certs, "client", &server.url(), ctx.path(), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(&metrics).contains("builder_builds_running 1") {
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    client.kill().unwrap();
    client.wait().unwrap();
    // The build stops (as on Ctrl-C) long before its 60 s sleep would end.
    let deadline = Instant::now() + Duration::from_secs(25);
    while !http_get(&metrics).contains("builder_builds_running 0") {
        assert!(Instant::now() < deadline, "the build was not cancelled");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(http_get(&metrics).contains("builder_builds_failed_total 1"));
}

#[test]
fn sigterm_lets_running_builds_finish_then_exits() {
    let certs = Certs::generate();
    let mut server = Server::start(&certs, &[]);
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN sleep 4\n")]);
    let client = remote_cmd(
        &certs,
        "client",
        &server.url(),
        ctx.path(),
        &["--progress=plain"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut child = server.child.take().unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // No new connections once stopping.
    std::thread::sleep(Duration::from_millis(500));
    let refused = remote_build(&certs, &server.url(), ctx.path(), &[]);
    assert!(!refused.status.success());
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the running build was cut: {}",
        stderr(&out)
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "server exit: {status}");
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

#[test]
fn secrets_reach_the_build_but_not_the_servers_disk() {
    let certs = Certs::generate();
    let server = Server::start(&certs, &[]);
    let value = "s3cr3t-value-7f1c2e";
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:latest\nRUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len\n",
    )]);
    let secret_file = ctx.path().join("tok.txt");
    std::fs::write(&secret_file, value).unwrap();
    std::fs::write(ctx.path().join(".dockerignore"), "tok.txt\n").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = remote_build(
        &certs,
        &server.url(),
        ctx.path(),
        &[
            "--secret",
            &format!("id=tok,src={}", secret_file.display()),
            "-o",
            &format!("type=local,dest={}", dest.path().display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let len = std::fs::read_to_string(dest.path().join("len")).unwrap();
    assert_eq!(len.trim(), value.len().to_string());
    assert_eq!(
        files_containing(server.store.root(), value.as_bytes()),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn the_github_action_builds_on_the_farm_with_its_certificate_inputs() {
    let certs = Certs::generate();
    let server = Server::start(&certs, &[]);
    let ctx = context(&[("Dockerfile", DOCKERFILE), ("a.txt", "from the action\n")]);
    let runner = tempfile::tempdir().unwrap();
    let client = Store::new();
    let out_dir = runner.path().join("out");
    let pem = |name: &str| std::fs::read_to_string(certs.path(name)).unwrap();
    let (ca, cert) = (pem("client/ca.pem"), pem("client/cert.pem"));
    let key_path = certs.path("client/key.pem");
    let url = server.url();
    let output = format!("type=local,dest={}", out_dir.display());
    let inputs = [
        ("context", ctx.path().to_str().unwrap()),
        ("builder", url.as_str()),
        // PEM text for two inputs and a file path for the third: both forms work.
        ("builder-ca", ca.as_str()),
        ("builder-cert", cert.as_str()),
        ("builder-key", key_path.to_str().unwrap()),
        ("outputs", output.as_str()),
    ];
    let out = crate::action::run_action(&client, runner.path(), &inputs, &[]);
    assert!(
        out.status.success(),
        "action: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let copied = std::fs::read_to_string(out_dir.join("copied.txt")).unwrap();
    assert_eq!(copied, "from the action\n");
    let outputs = crate::action::outputs(&runner.path().join("output"));
    assert!(outputs["imageid"].starts_with("sha256:"), "{outputs:?}");
    // The PEMs were written for the build only.
    let left: Vec<_> = std::fs::read_dir(runner.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("builder-action-")
        })
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");

    // Without the certificate inputs the farm refuses the action's build.
    let bare = [inputs[0], inputs[1], inputs[5]];
    let refused = crate::action::run_action(&client, runner.path(), &bare, &[]);
    assert!(
        !refused.status.success(),
        "built without a client certificate"
    );
}

/// Two clients start the same slow RUN at once: the server's shared solver runs it once
/// (its metrics count one RUN executed) and both get the same image, although the step
/// writes a random value.
#[test]
fn identical_steps_of_concurrent_clients_run_once() {
    let certs = Certs::generate();
    let metrics_port = free_port();
    let server = Server::start(
        &certs,
        &["--metrics-addr", &format!("127.0.0.1:{metrics_port}")],
    );
    let metrics = format!("127.0.0.1:{metrics_port}");
    let dockerfile = "FROM busybox:latest\nRUN sleep 3 && cat /proc/sys/kernel/random/uuid > /id\n";
    let dirs = [
        context(&[("Dockerfile", dockerfile)]),
        context(&[("Dockerfile", dockerfile)]),
    ];
    let start = |d: &tempfile::TempDir| {
        let iid = d.path().join("iid");
        remote_cmd(
            &certs,
            "client",
            &server.url(),
            d.path(),
            &["--progress=plain", "--iidfile", iid.to_str().unwrap()],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let first = start(&dirs[0]);
    let second = start(&dirs[1]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(&metrics).contains("builder_builds_running 2") {
        assert!(
            Instant::now() < deadline,
            "the two builds never ran at once"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in [first, second] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let iid = |d: &tempfile::TempDir| std::fs::read_to_string(d.path().join("iid")).unwrap();
    assert_eq!(iid(&dirs[0]), iid(&dirs[1]), "the step ran once per client");
    let m = http_get(&metrics);
    assert!(m.contains("builder_exec_steps_run_total 1\n"), "{m}");
}

/// A docker-registry on a loopback port that wants `user`/`password` (htpasswd).
fn registry_with_password(dir: &Path, user: &str, password: &str) -> (Child, String) {
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .unwrap();
    assert!(htpasswd.status.success(), "{}", stderr(&htpasswd));
    std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: farm\n    path: {}\n",
        dir.join("data").display(),
        dir.join("htpasswd").display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_listener(&addr);
    (child, addr)
}

/// A credential helper speaking docker-credential-helpers' protocol (`get` reads the server
/// URL on stdin and answers JSON; `list` maps server URLs to user names).
fn credential_helper(dir: &Path, registry: &str, user: &str, password: &str) {
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n\
         list) printf '{{\"{registry}\":\"{user}\"}}' ;;\n\
         get) read url; if [ \"$url\" = \"{registry}\" ]; then \
         printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$url\"; \
         else echo 'credentials not found in native keychain'; exit 1; fi ;;\n\
         *) exit 1 ;;\nesac\n"
    );
    let path = dir.join("docker-credential-farmtest");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"credsStore":"farmtest"}"#).unwrap();
}

/// `--push` to a registry with a password the client's credential helper holds: the helper
/// runs on the client, the build pushes with what it answered, and the password never
/// reaches the server's disk.
#[test]
fn credential_helpers_are_resolved_on_the_client_for_a_remote_push() {
    let certs = Certs::generate();
    let server = Server::start(&certs, &[]);
    let work = tempfile::tempdir().unwrap();
    let password = "farm-pw-5d81c3";
    let (mut registry, addr) = registry_with_password(work.path(), "farmer", password);
    let helper_dir = work.path().join("client");
    std::fs::create_dir(&helper_dir).unwrap();
    credential_helper(&helper_dir, &addr, "farmer", password);
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN echo farm > /f\n")]);
    let image = format!("{addr}/farm/app:1");
    let path = format!(
        "{}:{}",
        helper_dir.display(),
        std::env::var("PATH").unwrap()
    );
    let push = |config_dir: &Path| {
        remote_cmd(
            &certs,
            "client",
            &server.url(),
            ctx.path(),
            &["--push", "-t", &image],
        )
        .env("DOCKER_CONFIG", config_dir)
        .env("PATH", &path)
        .output()
        .unwrap()
    };
    let refused = push(work.path());
    assert!(!refused.status.success(), "pushed without credentials");
    let out = push(&helper_dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let inspect = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("farmer:{password}"),
        ])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    assert_eq!(
        files_containing(server.store.root(), password.as_bytes()),
        Vec::<PathBuf>::new()
    );
    let _ = registry.kill();
    let _ = registry.wait();
}

/// `--ssh default` with a remote builder: the client's ssh-agent answers `ssh-add -l` run in
/// a RUN step on the server, relayed over the session; nothing is left on the server.
#[test]
fn ssh_agent_is_relayed_to_a_remote_build() {
    let certs = Certs::generate();
    let server = Server::start(&certs, &[]);
    let dir = tempfile::tempdir().unwrap();
    let agent = crate::common::ssh::Agent::start(dir.path());
    let key = dir.path().join("id_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "farm-relay-key",
            "-f",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let add = Command::new("ssh-add")
        .env("SSH_AUTH_SOCK", &agent.1)
        .arg(&key)
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", stderr(&add));
    let ctx = context(&[]);
    let loader = crate::common::ssh::copy_with_libraries("/usr/bin/ssh-add", ctx.path());
    let dockerfile = format!(
        "FROM busybox:latest\nRUN --mount=type=ssh --mount=target=/tools \\\n\
         \x20   /tools/{loader} --library-path /tools /tools/ssh-add -l > /keys\n"
    );
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = remote_cmd(
        &certs,
        "client",
        &server.url(),
        ctx.path(),
        &[
            "--ssh=default",
            "-o",
            &format!("type=local,dest={}", dest.path().display()),
        ],
    )
    .env("SSH_AUTH_SOCK", &agent.1)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = std::fs::read_to_string(dest.path().join("keys")).unwrap();
    assert!(
        keys.contains("farm-relay-key") && keys.contains("(ED25519)"),
        "{keys}"
    );
    assert_eq!(leftovers(server.store.root()), Vec::<PathBuf>::new());
}

/// The node running a build dies before the build gave anything back: the client builds on
/// the next node, and gets its result from there.
#[test]
fn a_build_moves_to_the_next_node_when_its_node_dies_mid_build() {
    let certs = Certs::generate();
    let ports = [free_port(), free_port()];
    let metrics = |p: u16| format!("127.0.0.1:{p}");
    let mut servers: Vec<Server> = ports
        .iter()
        .map(|p| Server::start(&certs, &["--metrics-addr", &metrics(*p)]))
        .collect();
    let list = format!("{},{}", servers[0].url(), servers[1].url());
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:latest\nRUN sleep 4 && echo done > /f\n",
    )]);
    let out_tar = ctx.path().join("out.tar");
    let client = remote_cmd(
        &certs,
        "client",
        &list,
        ctx.path(),
        &[
            "--progress=plain",
            "-o",
            &format!("type=tar,dest={}", out_tar.display()),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let busy = loop {
        let busy =
            (0..2).find(|&i| http_get(&metrics(ports[i])).contains("builder_builds_running 1"));
        if let Some(i) = busy {
            break i;
        }
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    servers[busy].kill();
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("building on the next node"),
        "{}",
        stderr(&out)
    );
    let f = Command::new("tar")
        .arg("-xOf")
        .arg(&out_tar)
        .arg("f")
        .output()
        .unwrap();
    assert_eq!(stdout(&f), "done\n");
    assert!(http_get(&metrics(ports[1 - busy])).contains("builder_builds_total 1"));
}
