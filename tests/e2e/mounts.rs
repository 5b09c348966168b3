//! RUN mounts end to end: build graphs as a Dockerfile's `RUN --mount=...` lowers them
//! (image → exec with mounts), solved by the real solver in a real store, with containers
//! run by the builder binary as executor helper. Layers are checked with `tar`.

use crate::common::*;
use solver::context::{LocalSource, PlainDir};
use solver::graph::{
    CacheSharing, Definition, ExecMount, ExecOp, FileAction, FileOp, MountKind, MountOwner,
    NetworkMode, Op, Vertex,
};
use solver::progress::Progress;
use solver::{ExecConfig, Ref, SecretSource, Solver, SolverConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROOT_OWNER: MountOwner = MountOwner {
    uid: 0,
    gid: 0,
    mode: 0o755,
};

/// What one solve produced.
struct Solved {
    result: Result<Ref, String>,
    executed: usize,
    /// Every progress event, as JSON.
    events: String,
    /// Paths of the result's layer tars (in the content store), base first.
    layers: Vec<PathBuf>,
}

impl Solved {
    fn ok(&self) -> &Ref {
        match &self.result {
            Ok(r) => r,
            Err(e) => panic!("solve failed: {e}\nevents: {}", self.events),
        }
    }

    /// Names in the top layer, as `tar -t` lists them.
    fn top_layer_names(&self) -> Vec<String> {
        self.ok();
        let top = self.layers.last().expect("a layer");
        let out = Command::new("tar").arg("-tf").arg(top).output().unwrap();
        assert!(out.status.success(), "tar failed: {}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
            .filter(|l| !l.is_empty() && l != ".")
            .collect()
    }

    /// Contents of a file in the top layer (via `tar -xO`).
    fn file(&self, path: &str) -> String {
        let top = self.layers.last().expect("a layer");
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(top)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path} not in layer: {}",
            stderr(&out)
        );
        stdout(&out)
    }
}

/// Solves `def` in `store` with the given client config and build context (named "context").
fn solve(store: &Store, def: &Definition, exec: ExecConfig, context: Option<&Path>) -> Solved {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut locals: HashMap<String, Arc<dyn LocalSource>> = HashMap::new();
    if let Some(dir) = context {
        locals.insert("context".into(), Arc::new(PlainDir(dir.to_path_buf())));
    }
    let (result, executed, layers) = rt.block_on(async {
        let solver = Arc::new(
            Solver::new(SolverConfig {
                root: store.root().to_path_buf(),
                executor: executor::Executor::new(
                    BIN.into(),
                    vec![executor::HELPER_ARG.to_string()],
                ),
                locals,
                no_cache: false,
                progress: Progress::new(tx),
                exec,
                layer_export: Default::default(),
            })
            .unwrap(),
        );
        let cancel = executor::CancelToken::new();
        match solver.solve(def, &cancel).await {
            Ok(out) => {
                let layers = solver
                    .export_layers(&out.output)
                    .unwrap()
                    .iter()
                    .map(|l| solver.content.blob_path(&l.descriptor.digest))
                    .collect();
                (Ok(out.output), out.executed, layers)
            }
            Err(e) => (Err(e.to_string()), 0, Vec::new()),
        }
    });
    let mut events = String::new();
    while let Ok(e) = rx.try_recv() {
        events.push_str(&serde_json::to_string(&e).unwrap());
        events.push('\n');
    }
    Solved {
        result,
        executed,
        events,
        layers,
    }
}

fn image() -> Vertex {
    Vertex {
        op: Op::Image {
            reference: "busybox:latest".into(),
            platform: "linux/amd64".into(),
        },
        inputs: vec![],
        name: "[internal] busybox".into(),
        ignore_cache: false,
    }
}

fn run(script: &str, inputs: Vec<usize>, mounts: Vec<ExecMount>) -> Vertex {
    Vertex {
        op: Op::Exec(ExecOp {
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Host,
            mounts,
            ..Default::default()
        }),
        inputs,
        name: format!("RUN {script}"),
        ignore_cache: false,
    }
}

/// A definition: busybox (vertex 0), then `vertices` in order; the last one is the output.
fn graph(vertices: Vec<Vertex>) -> Definition {
    let mut def = Definition::default();
    def.vertices.push(image());
    def.vertices.extend(vertices);
    def.output = Some(def.vertices.len() - 1);
    def
}

fn mount(target: &str, kind: MountKind) -> ExecMount {
    ExecMount {
        target: target.into(),
        kind,
    }
}

fn cache(id: &str, sharing: CacheSharing) -> MountKind {
    MountKind::Cache {
        id: id.into(),
        sharing,
        readonly: false,
        base: None,
        owner: ROOT_OWNER,
    }
}

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf %s \"$1\" | sha256sum | cut -d' ' -f1")
        .arg("sh")
        .arg(s)
        .output()
        .unwrap();
    stdout(&out).trim().to_string()
}

#[test]
fn cache_mount_persists_across_builds_and_stays_out_of_the_layer() {
    let store = Store::with_busybox();
    let owned = MountKind::Cache {
        id: "pkgs".into(),
        sharing: CacheSharing::Shared,
        readonly: false,
        base: None,
        owner: MountOwner {
            uid: 1000,
            gid: 1000,
            mode: 0o700,
        },
    };
    let first = solve(
        &store,
        &graph(vec![run(
            "stat -c %u:%g:%a /var/cache/pkgs > /perm; echo one >> /var/cache/pkgs/log; echo done > /built",
            vec![0],
            vec![mount("/var/cache/pkgs", owned.clone())],
        )]),
        ExecConfig::default(),
        None,
    );
    assert_eq!(first.file("perm"), "1000:1000:700\n");
    let names = first.top_layer_names();
    assert!(names.contains(&"built".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("pkgs")),
        "cache mount leaked into the layer: {names:?}"
    );
    let dir = store.root().join("cache/mounts").join(sha256_hex("pkgs"));
    assert_eq!(std::fs::read_to_string(dir.join("log")).unwrap(), "one\n");

    let second = solve(
        &store,
        &graph(vec![run(
            "cat /var/cache/pkgs/log > /seen",
            vec![0],
            vec![mount("/var/cache/pkgs", owned)],
        )]),
        ExecConfig::default(),
        None,
    );
    assert_eq!(second.file("seen"), "one\n");
}

#[test]
fn locked_cache_serialises_runs_and_binds_read_stages() {
    let store = Store::with_busybox();
    let step = |name: &str| {
        run(
            &format!("echo start {name} >> /c/log; sleep 1; echo end {name} >> /c/log; echo {name} > /who"),
            vec![0],
            vec![mount("/c", cache("serial", CacheSharing::Locked))],
        )
    };
    // Vertices 1 and 2 run concurrently; 3 reads both through bind mounts.
    let def = graph(vec![
        step("a"),
        step("b"),
        run(
            "cat /x/who /y/who > /both",
            vec![0, 1, 2],
            vec![
                mount(
                    "/x",
                    MountKind::Bind {
                        input: 1,
                        source: "/".into(),
                        readonly: true,
                    },
                ),
                mount(
                    "/y",
                    MountKind::Bind {
                        input: 2,
                        source: "/".into(),
                        readonly: true,
                    },
                ),
            ],
        ),
    ]);
    let started = Instant::now();
    let solved = solve(&store, &def, ExecConfig::default(), None);
    assert_eq!(solved.file("both"), "a\nb\n");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let log = std::fs::read_to_string(
        store
            .root()
            .join("cache/mounts")
            .join(sha256_hex("serial"))
            .join("log"),
    )
    .unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    for pair in lines.chunks(2) {
        let who = pair[0].strip_prefix("start ").expect("a start line");
        assert_eq!(pair[1], format!("end {who}"), "runs overlapped:\n{log}");
    }
}

#[test]
fn bind_from_a_stage_is_read_only_or_a_throwaway_copy() {
    let store = Store::with_busybox();
    let stage_bind = |readonly| MountKind::Bind {
        input: 1,
        source: "/data".into(),
        readonly,
    };
    let def = graph(vec![
        // 1: the stage.
        run("mkdir /data && echo original > /data/file", vec![0], vec![]),
        // 2: read-only bind: reads work, writes fail.
        run(
            "cat /mnt/file > /ro-read; if touch /mnt/new 2>/dev/null; then echo writable; else echo refused; fi > /ro-write",
            vec![0, 1],
            vec![mount("/mnt", stage_bind(true))],
        ),
        // 3: writable bind on top of 2: writes work but are thrown away.
        run(
            "echo changed > /mnt/file && cat /mnt/file > /rw-read",
            vec![2, 1],
            vec![mount("/mnt", stage_bind(false))],
        ),
        // 4: the stage is unchanged.
        run(
            "cat /again/file > /after",
            vec![3, 1],
            vec![mount("/again", stage_bind(true))],
        ),
    ]);
    let solved = solve(&store, &def, ExecConfig::default(), None);
    assert_eq!(solved.file("after"), "original\n");
    let layers = &solved.layers;
    let read = |layer: &PathBuf, path: &str| {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(layer)
            .arg(path)
            .output()
            .unwrap();
        stdout(&out)
    };
    let n = layers.len();
    assert_eq!(read(&layers[n - 3], "ro-read"), "original\n");
    assert_eq!(read(&layers[n - 3], "ro-write"), "refused\n");
    assert_eq!(read(&layers[n - 2], "rw-read"), "changed\n");
    for layer in &layers[n - 3..] {
        let out = Command::new("tar").arg("-tf").arg(layer).output().unwrap();
        assert!(
            !stdout(&out).contains("mnt") && !stdout(&out).contains("again"),
            "mount target in layer: {}",
            stdout(&out)
        );
    }
}

#[test]
fn bind_from_context_keys_on_that_subtree_only() {
    let store = Store::with_busybox();
    let ctx = context(&[("src/a.txt", "version 1\n"), ("other.txt", "unrelated\n")]);
    let def = || {
        let mut def = graph(vec![]);
        def.vertices.push(Vertex {
            op: Op::Local {
                name: "context".into(),
            },
            inputs: vec![],
            name: "[internal] context".into(),
            ignore_cache: false,
        });
        def.vertices.push(run(
            "cat /src/a.txt > /copied; if touch /src/x 2>/dev/null; then echo writable; fi >> /copied",
            vec![0, 1],
            vec![mount(
                "/src",
                MountKind::Bind {
                    input: 1,
                    source: "src".into(),
                    readonly: true,
                },
            )],
        ));
        def.output = Some(2);
        def
    };
    let first = solve(&store, &def(), ExecConfig::default(), Some(ctx.path()));
    assert_eq!(first.file("copied"), "version 1\n");

    std::fs::write(ctx.path().join("other.txt"), "changed elsewhere\n").unwrap();
    let unrelated = solve(&store, &def(), ExecConfig::default(), Some(ctx.path()));
    unrelated.ok();
    assert_eq!(
        unrelated.executed, 0,
        "a change outside src/ re-ran the step"
    );

    std::fs::write(ctx.path().join("src/a.txt"), "version 2\n").unwrap();
    let related = solve(&store, &def(), ExecConfig::default(), Some(ctx.path()));
    assert_eq!(
        related.executed, 1,
        "a change in src/ did not re-run the step"
    );
    assert_eq!(related.file("copied"), "version 2\n");
}

#[test]
fn tmpfs_mount_has_its_size_and_leaves_nothing() {
    let store = Store::with_busybox();
    let solved = solve(
        &store,
        &graph(vec![run(
            "grep ' /scratch ' /proc/mounts > /m; echo x > /scratch/f",
            vec![0],
            vec![mount(
                "/scratch",
                MountKind::Tmpfs {
                    size: Some(1 << 20),
                },
            )],
        )]),
        ExecConfig::default(),
        None,
    );
    let m = solved.file("m");
    assert!(m.contains("tmpfs") && m.contains("size=1024k"), "{m}");
    let names = solved.top_layer_names();
    assert!(!names.iter().any(|n| n.contains("scratch")), "{names:?}");
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secrets_reach_the_step_and_nothing_else() {
    let store = Store::with_busybox();
    let file_value = "file-secret-6f1d2c9a";
    let env_value = "env-secret-83b0e4d7";
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("tok");
    std::fs::write(&secret_file, file_value).unwrap();
    std::env::set_var("BUILDER_MOUNTS_TEST_SECRET", env_value);
    let mut secrets = HashMap::new();
    secrets.insert("tok".to_string(), SecretSource::File(secret_file));
    secrets.insert(
        "envtok".to_string(),
        SecretSource::Env("BUILDER_MOUNTS_TEST_SECRET".into()),
    );
    let config = ExecConfig {
        secrets,
        ..Default::default()
    };
    let secret = |id: &str, required, env: Option<&str>| MountKind::Secret {
        id: id.into(),
        required,
        env: env.map(String::from),
        owner: MountOwner {
            uid: 1,
            gid: 1,
            mode: 0o440,
        },
    };
    let def = graph(vec![run(
        "md5sum < /run/secrets/tok > /filesum; printf %s \"$TOKEN\" | md5sum > /envsum; \
         stat -c %a:%u:%g /run/secrets/tok > /perm; test ! -e /run/secrets/none && echo absent > /optional",
        vec![0],
        vec![
            mount("/run/secrets/tok", secret("tok", true, None)),
            mount("", secret("envtok", true, Some("TOKEN"))),
            mount("/run/secrets/none", secret("none", false, None)),
        ],
    )]);
    let solved = solve(&store, &def, config.clone(), None);
    let md5 = |s: &str| {
        stdout(&output_with_stdin(
            &mut Command::new("md5sum"),
            s.as_bytes(),
        ))
    };
    assert_eq!(solved.file("filesum"), md5(file_value));
    assert_eq!(solved.file("envsum"), md5(env_value));
    assert_eq!(solved.file("perm"), "440:1:1\n");
    assert_eq!(solved.file("optional"), "absent\n");
    let names = solved.top_layer_names();
    assert!(
        !names.iter().any(|n| n.starts_with("run")),
        "secret mount targets in the layer: {names:?}"
    );

    // A required secret that was not provided is a clear error, without any value in it.
    let missing = solve(
        &store,
        &graph(vec![run(
            "true",
            vec![0],
            vec![mount("/run/secrets/gone", secret("gone", true, None))],
        )]),
        config,
        None,
    );
    let err = missing.result.unwrap_err();
    assert!(err.contains("secret \"gone\" not found"), "{err}");

    for value in [file_value, env_value] {
        for f in all_files(store.root()) {
            let data = std::fs::read(&f).unwrap();
            assert!(
                !contains_bytes(&data, value.as_bytes()),
                "secret found in {}",
                f.display()
            );
            if let Ok(gz) = Command::new("zcat").arg(&f).output() {
                assert!(!contains_bytes(&gz.stdout, value.as_bytes()), "{f:?}");
            }
        }
        assert!(!solved.events.contains(value), "secret in progress output");
        assert!(!err.contains(value));
    }
    let shm_leftovers = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("builder-secret-{}-", std::process::id()))
        })
        .count();
    assert_eq!(shm_leftovers, 0, "secret files left in /dev/shm");
}

#[test]
fn ssh_agent_socket_is_mounted_with_ssh_auth_sock() {
    let store = Store::with_busybox();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client) is installed");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut ssh = HashMap::new();
    ssh.insert("default".to_string(), socket.clone());
    let ssh_mount = |id: &str, required| MountKind::Ssh {
        id: id.into(),
        required,
        owner: MountOwner {
            uid: 1000,
            gid: 1000,
            mode: 0o600,
        },
    };
    let solved = solve(
        &store,
        &graph(vec![run(
            "test -S /run/buildkit/ssh_agent.0 && echo \"$SSH_AUTH_SOCK\" > /sock; \
             stat -c %u:%a /run/buildkit/ssh_agent.0 > /owner",
            vec![0],
            vec![
                mount("/run/buildkit/ssh_agent.0", ssh_mount("default", true)),
                mount("/run/buildkit/ssh_agent.1", ssh_mount("optional", false)),
            ],
        )]),
        ExecConfig {
            ssh: ssh.clone(),
            ..Default::default()
        },
        None,
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(solved.file("sock"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(solved.file("owner"), "1000:600\n");
    assert!(!solved
        .top_layer_names()
        .iter()
        .any(|n| n.starts_with("run")));

    let missing = solve(
        &store,
        &graph(vec![run(
            "true",
            vec![0],
            vec![mount(
                "/run/buildkit/ssh_agent.0",
                ssh_mount("github", true),
            )],
        )]),
        ExecConfig {
            ssh,
            ..Default::default()
        },
        None,
    );
    let err = missing.result.unwrap_err();
    assert!(err.contains("--ssh github=SOCKET"), "{err}");
}

#[test]
fn executor_stubs_stay_out_of_a_plain_run_layer() {
    let store = Store::with_busybox();
    // A base with /bin and /etc/passwd only: no /etc/hosts, /etc/resolv.conf, /proc, ...
    let copy = |source: &str, dest: &str| FileAction::Copy {
        src_input: 1,
        sources: vec![source.into()],
        dest: dest.into(),
        chown: None,
        chmod: None,
        exclude: vec![],
        parents: false,
        unpack: false,
    };
    let mut def = graph(vec![
        Vertex {
            op: Op::Scratch,
            inputs: vec![],
            name: "scratch".into(),
            ignore_cache: false,
        },
        Vertex {
            op: Op::File(FileOp {
                actions: vec![copy("/bin", "/bin"), copy("/etc/passwd", "/etc/passwd")],
            }),
            inputs: vec![1, 0],
            name: "base".into(),
            ignore_cache: false,
        },
    ]);
    let mut plain = run(
        "mkdir /tmp && echo hi > /tmp/out",
        vec![2],
        vec![mount("/etc/cache/deep", MountKind::Tmpfs { size: None })],
    );
    if let Op::Exec(e) = &mut plain.op {
        e.cwd = "/made/by/executor".into();
    }
    def.vertices.push(plain);
    def.output = Some(3);
    let solved = solve(&store, &def, ExecConfig::default(), None);
    let names = solved.top_layer_names();
    assert_eq!(names, vec!["tmp", "tmp/out"], "unexpected layer contents");
}

#[test]
fn on_error_shell_opens_a_shell_in_the_failed_step() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nENV GREETING=hello\nWORKDIR /w\nRUN echo marker-from-failed-step > /marker && exit 3\n",
    )]);
    let out = output_with_stdin(
        store
            .cmd()
            .args(["build", "--progress=plain", "--on-error=shell"])
            .arg(ctx.path()),
        b"cat /marker; echo \"$GREETING in $(pwd)\"; exit\n",
    );
    assert!(!out.status.success(), "the build must still fail");
    let shell_output = stdout(&out);
    assert!(
        shell_output.contains("marker-from-failed-step"),
        "stdout: {shell_output}\nstderr: {}",
        stderr(&out)
    );
    assert!(shell_output.contains("hello in /w"), "{shell_output}");
    assert!(stderr(&out).contains("exit code: 3"), "{}", stderr(&out));
}

#[test]
fn cache_mount_base_readonly_and_private_sharing() {
    let store = Store::with_busybox();
    let seeded = |readonly| MountKind::Cache {
        id: "seeded".into(),
        sharing: CacheSharing::Shared,
        readonly,
        base: Some((1, "/data".into())),
        owner: ROOT_OWNER,
    };
    let private = |name: &str| {
        run(
            &format!("ls /p > /list; touch /p/{name}; sleep 2; echo {name} > /who"),
            vec![0],
            vec![mount("/p", cache("private", CacheSharing::Private))],
        )
    };
    let def = graph(vec![
        // 1: the stage the cache is seeded from.
        run("mkdir /data && echo seed > /data/s", vec![0], vec![]),
        // 2: a new cache starts as a copy of the base.
        run(
            "cat /c/s > /seeded",
            vec![0, 1],
            vec![mount("/c", seeded(false))],
        ),
        // 3: read-only.
        run(
            "if touch /c/x 2>/dev/null; then echo writable; else echo refused; fi > /ro",
            vec![2, 1],
            vec![mount("/c", seeded(true))],
        ),
        // 4 and 5 run concurrently; one of them finds the private cache busy.
        private("a"),
        private("b"),
        run(
            "cat /x/who /y/who > /both",
            vec![3, 4, 5],
            vec![
                mount(
                    "/x",
                    MountKind::Bind {
                        input: 1,
                        source: "/".into(),
                        readonly: true,
                    },
                ),
                mount(
                    "/y",
                    MountKind::Bind {
                        input: 2,
                        source: "/".into(),
                        readonly: true,
                    },
                ),
            ],
        ),
    ]);
    let solved = solve(&store, &def, ExecConfig::default(), None);
    assert_eq!(solved.file("both"), "a\nb\n");
    let n = solved.layers.len();
    let read = |layer: &PathBuf, path: &str| {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(layer)
            .arg(path)
            .output()
            .unwrap();
        stdout(&out)
    };
    assert_eq!(read(&solved.layers[n - 3], "seeded"), "seed\n");
    assert_eq!(read(&solved.layers[n - 2], "ro"), "refused\n");
    let dir = store
        .root()
        .join("cache/mounts")
        .join(sha256_hex("private"));
    let mut kept: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert!(
        kept == ["a"] || kept == ["b"],
        "both private runs shared one cache: {kept:?}"
    );
    let seeded_dir = store.root().join("cache/mounts").join(sha256_hex("seeded"));
    assert!(!seeded_dir.join("x").exists());
    // Nothing temporary is left in the store.
    let tmp_left: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(tmp_left.is_empty(), "left behind: {tmp_left:?}");
}

/// A build context that hides one file, as `.dockerignore` would.
struct IgnoringDir(PathBuf);

impl LocalSource for IgnoringDir {
    fn root(&self) -> &Path {
        &self.0
    }
    fn is_excluded(&self, rel: &str) -> bool {
        rel == "src/ignored.txt"
    }
    fn may_reinclude_under(&self, _rel_dir: &str) -> bool {
        false
    }
}

#[test]
fn context_binds_respect_dockerignore_and_discard_writes() {
    let store = Store::with_busybox();
    let ctx = context(&[
        ("src/a.txt", "kept\n"),
        ("src/ignored.txt", "hidden\n"),
        ("other/o.txt", "o\n"),
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut def = graph(vec![Vertex {
        op: Op::Local {
            name: "context".into(),
        },
        inputs: vec![],
        name: "[internal] context".into(),
        ignore_cache: false,
    }]);
    let ctx_bind = |readonly| MountKind::Bind {
        input: 1,
        source: "/src".into(),
        readonly,
    };
    def.vertices.push(run(
        "ls /ro > /ro-list; echo new > /rw/a.txt; touch /rw/made; ls /rw > /rw-list; cat /rw/a.txt > /rw-read; \
         echo changed > /ov/o.txt && cat /ov/o.txt > /ov-read",
        vec![0, 1],
        vec![
            mount("/ro", ctx_bind(true)),
            mount("/rw", ctx_bind(false)),
            // Nothing ignored below other/: an overlay on the context directory itself.
            mount(
                "/ov",
                MountKind::Bind {
                    input: 1,
                    source: "other".into(),
                    readonly: false,
                },
            ),
        ],
    ));
    def.output = Some(2);
    let result = rt.block_on(async {
        let mut locals: HashMap<String, Arc<dyn LocalSource>> = HashMap::new();
        locals.insert(
            "context".into(),
            Arc::new(IgnoringDir(ctx.path().to_path_buf())),
        );
        let solver = Solver::new(SolverConfig {
            root: store.root().to_path_buf(),
            executor: executor::Executor::new(BIN.into(), vec![executor::HELPER_ARG.to_string()]),
            locals,
            no_cache: false,
            progress: Progress::discard(),
            exec: ExecConfig::default(),
            layer_export: Default::default(),
        })
        .unwrap();
        let solver = Arc::new(solver);
        let out = solver
            .solve(&def, &executor::CancelToken::new())
            .await
            .map_err(|e| e.to_string())
            .unwrap();
        let dest = tempfile::tempdir().unwrap();
        solver.export_local(&out.output, dest.path()).unwrap();
        dest
    });
    let read = |p: &str| std::fs::read_to_string(result.path().join(p)).unwrap();
    assert_eq!(read("ro-list"), "a.txt\n");
    assert_eq!(read("rw-list"), "a.txt\nmade\n");
    assert_eq!(read("rw-read"), "new\n");
    // The writable mount changed nothing in the context.
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("src/a.txt")).unwrap(),
        "kept\n"
    );
    assert!(!ctx.path().join("src/made").exists());
    assert_eq!(read("ov-read"), "changed\n");
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("other/o.txt")).unwrap(),
        "o\n"
    );
}

#[test]
fn bad_secret_ssh_and_on_error_flags_are_named() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN true\n")]);
    for (flag, expected) in [
        (
            "--secret=id=a,color=red",
            "--secret \"id=a,color=red\": unexpected key \"color\"",
        ),
        (
            "--secret=type=env",
            "--secret \"type=env\": id= is required",
        ),
        ("--ssh=gh=", "--ssh \"gh=\": the socket path is empty"),
        (
            "--on-error=retry",
            "--on-error \"retry\": expected fail or shell",
        ),
    ] {
        let out = store.build(ctx.path(), &[flag]);
        assert!(!out.status.success(), "{flag} was accepted");
        assert!(stderr(&out).contains(expected), "{flag}: {}", stderr(&out));
    }
    // Valid flags for secrets and agents no step uses are fine.
    let out = store.build(
        ctx.path(),
        &[
            "--secret=id=unused,src=/nonexistent",
            "--ssh=gh=/nonexistent.sock",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn locked_cache_makes_a_second_build_wait() {
    let store = Arc::new(Store::with_busybox());
    let builds: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|name| {
            let store = store.clone();
            std::thread::spawn(move || {
                let def = graph(vec![run(
                    &format!("echo start {name} >> /c/log; sleep 1; echo end {name} >> /c/log"),
                    vec![0],
                    vec![mount("/c", cache("cross-build", CacheSharing::Locked))],
                )]);
                solve(&store, &def, ExecConfig::default(), None)
                    .ok()
                    .clone()
            })
        })
        .collect();
    for b in builds {
        b.join().expect("build thread");
    }
    let log = std::fs::read_to_string(
        store
            .root()
            .join("cache/mounts")
            .join(sha256_hex("cross-build"))
            .join("log"),
    )
    .unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    for pair in lines.chunks(2) {
        let who = pair[0].strip_prefix("start ").expect("a start line");
        assert_eq!(pair[1], format!("end {who}"), "builds overlapped:\n{log}");
    }
}

#[test]
fn one_locked_cache_mounted_twice_in_a_step_does_not_wait_for_itself() {
    let store = Store::with_busybox();
    let mut step = run(
        "echo same > /a/f; cat /work/b/f > /twice",
        vec![0],
        vec![
            mount("/a", cache("twice", CacheSharing::Locked)),
            // Relative targets are below the working directory.
            mount("b", cache("twice", CacheSharing::Locked)),
        ],
    );
    if let Op::Exec(e) = &mut step.op {
        e.cwd = "/work".into();
    }
    let solved = solve(&store, &graph(vec![step]), ExecConfig::default(), None);
    assert_eq!(solved.file("twice"), "same\n");
}
