//! Registry client end to end, against real `docker-registry` processes: TLS with a CA made
//! here by openssl, htpasswd basic auth, login/logout, mirrors, blob reuse, cross-repository
//! mounts, and retries. Each test sets BUILDER_CONFIG and DOCKER_CONFIG so the machine's own
//! files never leak in.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::{context, output_with_stdin, stderr, stdout, wait_for_listener, Store};

/// A docker-registry with its own config; its log (stdout+stderr) is kept for assertions.
struct TestRegistry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

#[derive(Default)]
struct RegistryOptions<'a> {
    tls: Option<&'a TestCa>,
    htpasswd: Option<&'a Path>,
    token: Option<&'a TokenServer>,
    /// Storage root instead of a fresh directory (e.g. an unusable path).
    storage: Option<&'a str>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl TestRegistry {
    fn plain() -> Self {
        Self::start_on(free_port(), RegistryOptions::default())
    }

    fn start_on(port: u16, options: RegistryOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            options
                .storage
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.path().join("data"))
                .display()
        );
        if let Some(ca) = options.tls {
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                ca.server_cert.display(),
                ca.server_key.display()
            );
        }
        if let Some(htpasswd) = options.htpasswd {
            config += &format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                htpasswd.display()
            );
        }
        if let Some(tokens) = options.token {
            config += &format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                tokens.addr,
                tokens.cert.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        wait_for_listener(&addr);
        TestRegistry { child, addr, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Access-log lines for `method` requests whose path contains `path_part`.
    fn requests(&self, method: &str, path_part: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains(&format!("\"{method} ")) && line.contains(path_part))
            .count()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
struct TestCa {
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

fn make_ca(dir: &Path) -> TestCa {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca_args = vec!["req", "-x509"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=builder test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca_args);
    let mut csr_args = vec!["req"];
    csr_args.extend(ec);
    csr_args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr_args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    TestCa {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    }
}

/// BUILDER_CONFIG and DOCKER_CONFIG for one test.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(builder_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("builder.toml"), builder_toml).unwrap();
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        Env { dir }
    }

    fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker/config.json")
    }

    fn command(&self, store: &Store, args: &[&str]) -> Command {
        let mut command = store.cmd();
        command
            .env("BUILDER_CONFIG", self.dir.path().join("builder.toml"))
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .args(args);
        command
    }

    fn run(&self, store: &Store, args: &[&str]) -> Output {
        self.command(store, args).output().unwrap()
    }

    fn run_with_stdin(&self, store: &Store, args: &[&str], input: &str) -> Output {
        output_with_stdin(&mut self.command(store, args), input.as_bytes())
    }
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

/// The digest printed by `builder push` ("pushed NAME DIGEST (…)").
fn pushed_digest(out: &Output) -> String {
    stdout(out)
        .split_whitespace()
        .find(|word| word.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in push output {:?}", stdout(out)))
        .to_string()
}

fn tag(store: &Store, target: &str) {
    let out = store.run(&["tag", "busybox:latest", target]);
    assert_ok(&out, "tag");
}

#[test]
fn tls_registry_with_htpasswd_login_push_pull_logout() {
    let work = tempfile::tempdir().unwrap();
    let ca = make_ca(work.path());
    let htpasswd = work.path().join("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbc", htpasswd.to_str().unwrap(), "alice", "s3cret-pw"])
        .output()
        .unwrap();
    assert_ok(&out, "htpasswd");
    let registry = TestRegistry::start_on(
        free_port(),
        RegistryOptions {
            tls: Some(&ca),
            htpasswd: Some(&htpasswd),
            ..Default::default()
        },
    );
    let addr = registry.addr.clone();
    let env = Env::new("");
    std::fs::write(
        env.dir.path().join("builder.toml"),
        format!("certs_dir = {:?}\n", env.certs_dir().display().to_string()),
    )
    .unwrap();
    let host_certs = env.certs_dir().join(&addr);
    std::fs::create_dir_all(&host_certs).unwrap();
    std::fs::copy(&ca.ca_cert, host_certs.join("ca.crt")).unwrap();

    let pusher = Store::with_busybox();
    let remote = format!("{addr}/team/app:v1");
    tag(&pusher, &remote);

    // Not logged in: a clear refusal, and nothing stored.
    let denied = env.run(&pusher, &["push", &remote]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains(&format!("builder login {addr}")),
        "{}",
        stderr(&denied)
    );

    // A wrong password is refused by the registry and not saved.
    let wrong = env.run_with_stdin(
        &pusher,
        &["login", &addr, "-u", "alice", "--password-stdin"],
        "nope\n",
    );
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("credentials rejected"),
        "{}",
        stderr(&wrong)
    );
    assert!(!env.docker_config().exists());

    let login = env.run_with_stdin(
        &pusher,
        &["login", &addr, "-u", "alice", "--password-stdin"],
        "s3cret-pw\n",
    );
    assert_ok(&login, "login");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.docker_config()).unwrap()).unwrap();
    // base64("alice:s3cret-pw")
    assert_eq!(saved["auths"][&addr]["auth"], "YWxpY2U6czNjcmV0LXB3");

    let pushed = env.run(&pusher, &["push", &remote]);
    assert_ok(&pushed, "push after login");
    let digest = pushed_digest(&pushed);

    // A second tool, with its own TLS and credentials, sees the image.
    let inspect = Command::new("skopeo")
        .args([
            "inspect",
            "--cert-dir",
            host_certs.to_str().unwrap(),
            "--creds",
            "alice:s3cret-pw",
            &format!("docker://{remote}"),
        ])
        .output()
        .unwrap();
    assert_ok(&inspect, "skopeo inspect");
    let inspected: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());

    // A fresh store pulls it (TLS + stored credentials) as a build base.
    let fresh = Store::new();
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {remote}\nRUN test -x /bin/busybox && echo pulled > /pulled\n"),
    )]);
    let mut build = env.command(&fresh, &["build", "--progress=plain", "-t", "out:1"]);
    let built = build.arg(ctx.path()).output().unwrap();
    assert_ok(&built, "build FROM the TLS registry");
    let images = fresh.run(&["images"]);
    assert!(
        stdout(&images).contains(&digest["sha256:".len()..][..12]),
        "{}",
        stdout(&images)
    );
    assert!(stdout(&images).contains(&format!("{addr}/team/app:v1")));

    let logout = env.run(&pusher, &["logout", &addr]);
    assert_ok(&logout, "logout");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.docker_config()).unwrap()).unwrap();
    assert!(saved["auths"].get(&addr).is_none(), "{saved}");
    let after_logout = env.run(&pusher, &["push", &remote]);
    assert!(!after_logout.status.success());
    assert!(
        stderr(&after_logout).contains("builder login"),
        "{}",
        stderr(&after_logout)
    );
}

#[test]
fn tls_registry_without_its_ca_is_refused_clearly() {
    let work = tempfile::tempdir().unwrap();
    let ca = make_ca(work.path());
    let registry = TestRegistry::start_on(
        free_port(),
        RegistryOptions {
            tls: Some(&ca),
            ..Default::default()
        },
    );
    let pusher = Store::with_busybox();
    let remote = format!("{}/app:v1", registry.addr);
    tag(&pusher, &remote);
    // Nothing configured: loopback means plain HTTP, which the TLS registry refuses.
    let unconfigured = Env::new("").run(&pusher, &["push", &remote]);
    assert!(!unconfigured.status.success());
    assert!(
        stderr(&unconfigured).contains("the registry speaks HTTPS"),
        "{}",
        stderr(&unconfigured)
    );
    // Marked TLS (insecure=false, but a CA that did not sign it): certificate error.
    let other_ca_dir = tempfile::tempdir().unwrap();
    let other_ca = make_ca(other_ca_dir.path());
    let env = Env::new(&format!(
        "[registry.\"{}\"]\nca = [{:?}]\n",
        registry.addr,
        other_ca.ca_cert.display().to_string()
    ));
    let refused = env.run(&pusher, &["push", &remote]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).to_lowercase().contains("certificate"),
        "{}",
        stderr(&refused)
    );
    // insecure = true: HTTPS without verification works.
    let env = Env::new(&format!(
        "[registry.\"{}\"]\ninsecure = true\n",
        registry.addr
    ));
    assert_ok(&env.run(&pusher, &["push", &remote]), "insecure push");
}

#[test]
fn from_busybox_resolves_through_a_mirror() {
    let mirror = TestRegistry::plain();
    let seeder = Store::with_busybox();
    let mirrored = format!("{}/library/busybox:latest", mirror.addr);
    tag(&seeder, &mirrored);
    let seed = Env::new("");
    let pushed = seed.run(&seeder, &["push", &mirrored]);
    assert_ok(&pushed, "seed the mirror");
    let digest = pushed_digest(&pushed);

    // First mirror is down (tried, then skipped), second holds library/busybox.
    let dead = format!("127.0.0.1:{}", free_port());
    let env = Env::new(&format!(
        "[registry.\"docker.io\"]\nmirrors = [\"{dead}\", \"{}\"]\n",
        mirror.addr
    ));
    let fresh = Store::new();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo via-mirror > /m\n")]);
    let built = env
        .command(&fresh, &["build", "--progress=plain", "-t", "m:1"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_ok(&built, "build FROM busybox via mirror");
    assert!(mirror.requests("GET", "/v2/library/busybox/manifests/latest") >= 1);
    let images = stdout(&fresh.run(&["images"]));
    assert!(images.contains("busybox:latest"), "{images}");
    assert!(
        images.contains(&digest["sha256:".len()..][..12]),
        "{images}"
    );
}

#[test]
fn mirror_failure_falls_back_to_the_registry_itself() {
    let upstream = TestRegistry::plain();
    let seeder = Store::with_busybox();
    let remote = format!("{}/tools/busybox:1", upstream.addr);
    tag(&seeder, &remote);
    assert_ok(
        &Env::new("").run(&seeder, &["push", &remote]),
        "push upstream",
    );
    // The mirror runs but lacks the image: 404 there, then upstream.
    let empty_mirror = TestRegistry::plain();
    let env = Env::new(&format!(
        "[registry.\"{}\"]\nmirrors = [\"{}\"]\n",
        upstream.addr, empty_mirror.addr
    ));
    let fresh = Store::new();
    let ctx = context(&[("Dockerfile", &format!("FROM {remote}\nRUN true\n"))]);
    let built = env
        .command(&fresh, &["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_ok(&built, "build with fallback");
    assert_eq!(
        empty_mirror.requests("GET", "/v2/tools/busybox/manifests/1"),
        1
    );
    assert!(upstream.requests("GET", "/v2/tools/busybox/manifests/1") >= 1);
}

#[test]
fn second_push_sends_no_layer_and_other_repo_mounts() {
    let registry = TestRegistry::plain();
    let env = Env::new("");
    let store = Store::with_busybox();
    let first = format!("{}/one/app:v1", registry.addr);
    tag(&store, &first);
    let pushed = env.run(&store, &["push", &first]);
    assert_ok(&pushed, "first push");
    assert!(
        stdout(&pushed).contains("2 blobs uploaded, 0 already present, 0 mounted"),
        "{}",
        stdout(&pushed)
    );
    let uploads = registry.requests("PUT", "/blobs/uploads/");
    assert_eq!(uploads, 2, "{}", registry.log());

    let again = env.run(&store, &["push", &first]);
    assert_ok(&again, "second push");
    assert!(
        stdout(&again).contains("0 blobs uploaded, 2 already present, 0 mounted"),
        "{}",
        stdout(&again)
    );
    assert_eq!(registry.requests("PUT", "/blobs/uploads/"), uploads);

    // Same registry, another repository: blobs are mounted, not sent.
    let second = format!("{}/two/app:v1", registry.addr);
    tag(&store, &second);
    let mounted = env.run(&store, &["push", &second]);
    assert_ok(&mounted, "push to a sibling repository");
    assert!(
        stdout(&mounted).contains("0 blobs uploaded, 0 already present, 2 mounted"),
        "{}",
        stdout(&mounted)
    );
    assert_eq!(registry.requests("PUT", "/blobs/uploads/"), uploads);
    assert_eq!(
        registry.requests("POST", "from=one%2Fapp"),
        2,
        "{}",
        registry.log()
    );

    // The mounted repository is complete for another client.
    let oci = tempfile::tempdir().unwrap();
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{second}"),
            &format!("oci:{}:v1", oci.path().display()),
        ])
        .output()
        .unwrap();
    assert_ok(&copy, "skopeo copy of the mounted image");
}

#[test]
fn push_retries_until_the_registry_is_up() {
    let port = free_port();
    let store = Store::with_busybox();
    let remote = format!("127.0.0.1:{port}/late/app:v1");
    tag(&store, &remote);
    let env = Env::new("");
    let starter = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        TestRegistry::start_on(port, RegistryOptions::default())
    });
    let pushed = env.run(&store, &["push", &remote]);
    let registry = starter.join().unwrap();
    assert_ok(&pushed, "push to a registry that comes up late");
    assert!(registry.requests("PUT", "/manifests/v1") == 1);
}

#[test]
fn server_errors_are_retried_then_reported() {
    // Storage under /dev/null: every blob request fails with 500.
    let registry = TestRegistry::start_on(
        free_port(),
        RegistryOptions {
            storage: Some("/dev/null/registry"),
            ..Default::default()
        },
    );
    let store = Store::with_busybox();
    let remote = format!("{}/broken/app:v1", registry.addr);
    tag(&store, &remote);
    let started = std::time::Instant::now();
    let out = Env::new("").run(&store, &["push", &remote]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("500"), "{}", stderr(&out));
    // 4 tries each for the existence check and the upload start, with backoff between.
    assert_eq!(
        registry.requests("HEAD", "/blobs/sha256:"),
        4,
        "{}",
        registry.log()
    );
    assert_eq!(
        registry.requests("POST", "/blobs/uploads/"),
        4,
        "{}",
        registry.log()
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(2 * 1400));
}

#[test]
fn bad_builder_config_is_reported_with_file_and_line() {
    let env = Env::new("[registry.\"docker.io\"]\nmirors = [\"127.0.0.1:1\"]\n");
    let store = Store::with_busybox();
    tag(&store, "127.0.0.1:1/x:y");
    let out = env.run(&store, &["push", "127.0.0.1:1/x:y"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("builder.toml") && err.contains("line 2") && err.contains("mirors"),
        "{err}"
    );
}

/// Standard or URL-safe unpadded base64 (test-only, to build JWTs).
fn base64(data: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if !url_safe {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

/// A token issuer for the registry's `auth: token` mode: RS256 JWTs signed by openssl with a
/// self-signed certificate the registry trusts (`rootcertbundle`), carried in `x5c`.
/// Grants the requested actions to alice:pw (basic) or refresh token "refresh-abc"; nothing
/// to anonymous callers. Records each request line.
struct TokenServer {
    addr: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

const TOKEN_SERVICE: &str = "test-registry";
const TOKEN_ISSUER: &str = "test-issuer";

impl TokenServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "token.key",
                "-out",
                "token.crt",
                "-days",
                "2",
                "-subj",
                "/CN=token-signer",
            ],
        );
        openssl(
            dir.path(),
            &[
                "x509",
                "-in",
                "token.crt",
                "-outform",
                "DER",
                "-out",
                "token.der",
            ],
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (log, key_dir) = (requests.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (log, key_dir) = (log.clone(), key_dir.clone());
                std::thread::spawn(move || serve_token(stream, &log, &key_dir));
            }
        });
        TokenServer {
            addr,
            requests,
            cert: dir.path().join("token.crt"),
            _dir: dir,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_token(
    mut stream: std::net::TcpStream,
    log: &std::sync::Mutex<Vec<String>>,
    key_dir: &Path,
) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let (mut authorization, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => authorization = value.trim().to_string(),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let params_text = if request_line.starts_with("POST") {
        String::from_utf8_lossy(&body).to_string()
    } else {
        target
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default()
    };
    let params: Vec<(String, String)> = params_text
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    log.lock().unwrap().push(format!(
        "{} {}",
        request_line.split_whitespace().next().unwrap_or(""),
        params_text
    ));
    let param = |key: &'static str| {
        params
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let trusted = authorization == format!("Basic {}", base64(b"alice:pw", false))
        || param("refresh_token").any(|token| token == "refresh-abc");
    let access: Vec<serde_json::Value> = if trusted {
        param("scope")
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect()
    } else {
        Vec::new()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({
        "alg": "RS256", "typ": "JWT",
        "x5c": [base64(&std::fs::read(key_dir.join("token.der")).unwrap(), false)],
    });
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "alice", "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{now}{}", log.lock().unwrap().len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64(header.to_string().as_bytes(), true),
        base64(claims.to_string().as_bytes(), true)
    );
    let mut signer = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(key_dir.join("token.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    signer
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let signature = signer.wait_with_output().unwrap().stdout;
    let token = format!("{signing_input}.{}", base64(&signature, true));
    let answer =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn token_registry(tokens: &TokenServer) -> TestRegistry {
    TestRegistry::start_on(
        free_port(),
        RegistryOptions {
            token: Some(tokens),
            ..Default::default()
        },
    )
}

#[test]
fn bearer_token_flow_with_password_and_identity_token() {
    let tokens = TokenServer::start();
    let registry = token_registry(&tokens);
    let addr = registry.addr.clone();
    let store = Store::with_busybox();
    let remote = format!("{addr}/team/app:v1");
    tag(&store, &remote);

    // Anonymous: the token grants nothing, so the push is refused clearly.
    let env = Env::new("");
    let denied = env.run(&store, &["push", &remote]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("unauthorized"),
        "{}",
        stderr(&denied)
    );

    // Password: login checks it at the token endpoint, then push works.
    let login = env.run(&store, &["login", &addr, "-u", "alice", "-p", "pw"]);
    assert_ok(&login, "login with bearer");
    let before_push = tokens.requests().len();
    let pushed = env.run(&store, &["push", &remote]);
    assert_ok(&pushed, "push with bearer token");
    // Tokens are cached per scope: one fetch serves every request of the push.
    let push_token_fetches = tokens.requests()[before_push..].to_vec();
    assert_eq!(push_token_fetches.len(), 1, "{push_token_fetches:?}");
    assert!(
        push_token_fetches[0].contains("scope=repository%3Ateam%2Fapp%3Apull%2Cpush"),
        "{push_token_fetches:?}"
    );
    assert!(registry.requests("PUT", "/blobs/uploads/") >= 2);

    // Identity token (OAuth2 refresh token) from config.json: POST grant, then pull works.
    let identity = Env::new("");
    std::fs::write(
        identity.docker_config(),
        format!(r#"{{"auths":{{"{addr}":{{"identitytoken":"refresh-abc"}}}}}}"#),
    )
    .unwrap();
    let fresh = Store::new();
    let ctx = context(&[("Dockerfile", &format!("FROM {remote}\nRUN true\n"))]);
    let built = identity
        .command(&fresh, &["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_ok(&built, "pull with identity token");
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| r.starts_with("POST") && r.contains("grant_type=refresh_token")),
        "{:?}",
        tokens.requests()
    );
}
