//! Dockerfile-level end-to-end tests of the features built in parallel (RUN mounts,
//! secrets, ssh, network modes, heredocs, named contexts, COPY flags, --on-error):
//! each drives `builder build` exactly like a user and checks the exported files,
//! the layers (with `tar`) and which steps ran (rawjson events).

use crate::common::*;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn build_ok(store: &Store, ctx: &Path, extra: &[&str]) -> Output {
    let out = store.build(ctx, extra);
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    out
}

/// Builds with `-o type=local` and returns the exported root filesystem.
fn build_local(store: &Store, ctx: &Path, extra: &[&str]) -> (tempfile::TempDir, Output) {
    let dest = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", dest.path().display());
    let mut args = extra.to_vec();
    args.extend(["-o", &out_arg]);
    let out = build_ok(store, ctx, &args);
    (dest, out)
}

/// uid and gid of `path` in the build's `-o type=tar` rootfs, as GNU tar lists them
/// (`-o type=local` gives every file to the receiving user, as buildx does).
fn tar_owner(store: &Store, ctx: &Path, path: &str) -> (u32, u32) {
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("rootfs.tar");
    build_ok(
        store,
        ctx,
        &["-o", &format!("type=tar,dest={}", tar_path.display())],
    );
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&tar_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", stderr(&out));
    let listing = stdout(&out);
    let line = listing
        .lines()
        .find(|l| l.split_whitespace().nth(5).map(|n| n.trim_end_matches('/')) == Some(path))
        .unwrap_or_else(|| panic!("{path} not in {listing}"));
    let (uid, gid) = line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .split_once('/')
        .unwrap();
    (uid.parse().unwrap(), gid.parse().unwrap())
}

fn read(dir: &Path, path: &str) -> String {
    std::fs::read_to_string(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Names of the steps a build ran (not cached) whose name contains `needle`.
fn started(out: &Output, needle: &str) -> usize {
    events(out)
        .iter()
        .filter(|e| e["event"] == "started")
        .filter(|e| e["name"].as_str().is_some_and(|n| n.contains(needle)))
        .count()
}

/// Steps whose result came from the cache and whose name contains `needle`.
fn cached(out: &Output, needle: &str) -> usize {
    events(out)
        .iter()
        .filter(|e| e["event"] == "cached")
        .filter(|e| e["name"].as_str().is_some_and(|n| n.contains(needle)))
        .count()
}

/// Builds to an OCI archive and returns the names in each layer (base first), as
/// `tar -t` lists them (tar detects the compression itself).
fn oci_layer_names(store: &Store, ctx: &Path, extra: &[&str]) -> Vec<Vec<String>> {
    build_oci_image(store, ctx, extra)
        .layers
        .iter()
        .map(|layer| {
            let out = Command::new("tar").arg("-tf").arg(layer).output().unwrap();
            assert!(out.status.success(), "tar: {}", stderr(&out));
            stdout(&out)
                .lines()
                .map(|n| n.trim_start_matches("./").trim_end_matches('/').to_string())
                .filter(|n| !n.is_empty() && n != ".")
                .collect()
        })
        .collect()
}

fn hex_sha256(data: &[u8]) -> String {
    stdout(&output_with_stdin(&mut Command::new("sha256sum"), data))[..64].to_string()
}

#[test]
fn cache_mount_persists_across_builds_and_stays_out_of_the_image() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nARG N=1\n\
         RUN --mount=type=cache,target=/var/cache/app,uid=1000,gid=1000,mode=0700,sharing=locked \\\n\
         \x20   cat /var/cache/app/log > /seen 2>/dev/null; echo run$N >> /var/cache/app/log; \\\n\
         \x20   stat -c %u:%g:%a /var/cache/app > /owner\n",
    )]);
    let (first, out) = build_local(&store, ctx.path(), &[]);
    assert_eq!(started(&out, "cat /var/cache/app/log"), 1);
    // Progress names the step with its flags, as BuildKit does.
    assert_eq!(
        started(
            &out,
            "] RUN --mount=type=cache,target=/var/cache/app,uid=1000,gid=1000,mode=0700,sharing=locked cat"
        ),
        1,
        "{}",
        stderr(&out)
    );
    assert_eq!(read(first.path(), "seen"), "");
    assert_eq!(read(first.path(), "owner"), "1000:1000:700\n");

    // A new build arg value re-runs the step, which sees the first run's file.
    let (second, out) = build_local(&store, ctx.path(), &["--build-arg", "N=2"]);
    assert_eq!(started(&out, "cat /var/cache/app/log"), 1);
    assert_eq!(read(second.path(), "seen"), "run1\n");
    assert!(!second.path().join("var/cache/app/log").exists());

    // The cache lives under ROOT/cache/mounts/<sha256 of the id>; the id defaults to the target.
    let dir = store
        .root()
        .join("cache/mounts")
        .join(hex_sha256(b"/var/cache/app"));
    assert_eq!(read(&dir, "log"), "run1\nrun2\n");

    // Same arg again: cached, and the cache is not touched.
    let layers = oci_layer_names(&store, ctx.path(), &["--build-arg", "N=2"]);
    assert_eq!(read(&dir, "log"), "run1\nrun2\n");
    let top = layers.last().unwrap();
    assert_eq!(top, &vec!["owner".to_string(), "seen".to_string()]);
    assert!(layers.iter().flatten().all(|n| !n.starts_with("var/cache")));
}

#[test]
fn cache_mount_id_is_shared_between_targets_and_steps() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS writer\n\
         RUN --mount=type=cache,id=shared,target=/a echo from-writer > /a/f\n\
         FROM busybox\nCOPY --from=writer /etc/passwd /dep\n\
         RUN --mount=type=cache,id=shared,target=/b,sharing=shared cat /b/f > /got\n",
    )]);
    let (dest, _) = build_local(&store, ctx.path(), &[]);
    assert_eq!(read(dest.path(), "got"), "from-writer\n");
}

/// The file's bytes, decompressed when it is a gzip or zstd stream.
fn plain_bytes(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap_or_default();
    let tool = if data.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else {
        return data;
    };
    let out = Command::new(tool).args(["-dc"]).arg(path).output().unwrap();
    assert!(out.status.success(), "{tool} -dc {}", path.display());
    out.stdout
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secrets_reach_the_step_and_nowhere_else() {
    let store = Store::with_busybox();
    let file_secret = "file-secret-7f3a9c2e";
    let env_secret = "env-secret-b41d08aa";
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("token");
    std::fs::write(&secret_file, file_secret).unwrap();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=secret,id=x sha256sum /run/secrets/x | cut -c1-64 > /x.sum\n\
         RUN --mount=type=secret,id=y,env=TOKEN printf %s \"$TOKEN\" | sha256sum | cut -c1-64 > /y.sum\n\
         RUN --mount=type=secret,id=x,target=/etc/x,uid=1000,mode=0400 stat -c %u:%a /etc/x > /x.owner\n\
         RUN --mount=type=secret,id=absent ls /run/secrets > /optional 2>&1 || echo none > /optional\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let local = tempfile::tempdir().unwrap();
    let out = store
        .cmd()
        .env("SECRET_Y", env_secret)
        .args(["build", "--progress=rawjson", "-t", "secretive"])
        .arg(format!("--secret=id=x,src={}", secret_file.display()))
        .arg("--secret=id=y,env=SECRET_Y")
        .arg(format!("--output=type=oci,dest={}", archive.display()))
        .arg(format!(
            "--output=type=local,dest={}",
            local.path().display()
        ))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        read(local.path(), "x.sum"),
        format!("{}\n", hex_sha256(file_secret.as_bytes()))
    );
    assert_eq!(
        read(local.path(), "y.sum"),
        format!("{}\n", hex_sha256(env_secret.as_bytes()))
    );
    assert_eq!(read(local.path(), "x.owner"), "1000:400\n");
    assert!(!local.path().join("run/secrets/x").exists());
    assert!(!local.path().join("etc/x").exists());

    for secret in [file_secret, env_secret] {
        assert!(!stderr(&out).contains(secret), "secret in progress output");
        assert!(!stdout(&out).contains(secret), "secret in stdout");
        for f in all_files(store.root())
            .into_iter()
            .chain(all_files(local.path()))
            .chain([archive.clone()])
        {
            assert!(
                !contains(&plain_bytes(&f), secret.as_bytes()),
                "secret found in {}",
                f.display()
            );
        }
    }
    // The OCI archive's blobs, decompressed, hold no secret either.
    let layout = dir.path().join("layout");
    untar_into(&archive, &layout);
    for f in all_files(&layout) {
        let bytes = plain_bytes(&f);
        assert!(!contains(&bytes, file_secret.as_bytes()));
        assert!(!contains(&bytes, env_secret.as_bytes()));
    }

    // A required secret that was not given stops the build with its id and the flag to use.
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=npmrc,required=true cat /run/secrets/npmrc\n",
    )]);
    let out = store.build(ctx.path(), &["-t", "never"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("npmrc"), "{err}");
    assert!(err.contains("--secret"), "{err}");
    let images = store.run(&["images"]);
    assert!(!stdout(&images).contains("never"), "{}", stdout(&images));

    // A mistyped src= path is an error naming the secret and the file, even for an
    // optional secret.
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=cfg cat /run/secrets/cfg\n",
    )]);
    let out = store.build(ctx.path(), &["--secret=id=cfg,src=/nonexistent/cfg.json"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "secret \"cfg\" (--secret id=cfg): secret file /nonexistent/cfg.json does not exist"
        ),
        "{err}"
    );
}

#[test]
fn bind_mounts_from_stage_context_and_image() {
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox AS data\nRUN mkdir /d && echo stage-data > /d/f\n\
             FROM busybox\n\
             RUN --mount=type=bind,from=data,source=/d,target=/m \\\n\
             \x20   cat /m/f > /from-stage; (touch /m/x 2>/dev/null && echo rw || echo ro) > /stage-ro\n\
             RUN --mount=type=bind,source=sub,target=/c,rw \\\n\
             \x20   echo scribble > /c/new; echo more >> /c/a.txt; cat /c/a.txt > /from-ctx\n\
             RUN --mount=target=/ctx ls /ctx/sub > /ctx-list; (touch /ctx/x 2>/dev/null && echo rw || echo ro) > /ctx-ro\n\
             RUN --mount=type=bind,from=busybox,source=/etc,target=/img cat /img/passwd | head -n1 > /from-image\n",
        ),
        ("sub/a.txt", "context-a\n"),
    ]);
    let (dest, _) = build_local(&store, ctx.path(), &[]);
    let d = dest.path();
    assert_eq!(read(d, "from-stage"), "stage-data\n");
    assert_eq!(read(d, "stage-ro"), "ro\n");
    assert_eq!(read(d, "from-ctx"), "context-a\nmore\n");
    // Writes to an rw bind are thrown away: neither the context nor the next step sees them.
    assert_eq!(read(d, "ctx-list"), "a.txt\n");
    assert_eq!(read(&ctx.path().join("sub"), "a.txt"), "context-a\n");
    assert!(!ctx.path().join("sub/new").exists());
    assert_eq!(read(d, "ctx-ro"), "ro\n");
    assert_eq!(read(d, "from-image"), "root:x:0:0:root:/root:/bin/sh\n");
    for gone in ["m", "c", "ctx", "img"] {
        assert!(
            !d.join(gone).exists(),
            "mount point /{gone} left in the image"
        );
    }
}

#[test]
fn tmpfs_mount_leaves_nothing_and_has_its_size() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=tmpfs,target=/scratch,size=2m \\\n\
         \x20   echo x > /scratch/file && grep ' /scratch ' /proc/mounts | cut -d' ' -f3 > /fstype && \\\n\
         \x20   df -k /scratch | tail -n1 | awk '{print $2}' > /size\n",
    )]);
    let layers = oci_layer_names(&store, ctx.path(), &[]);
    assert_eq!(
        layers.last().unwrap(),
        &vec!["fstype".to_string(), "size".to_string()]
    );
    let (dest, out) = build_local(&store, ctx.path(), &[]);
    assert_eq!(cached(&out, "echo x > /scratch/file"), 1);
    assert_eq!(read(dest.path(), "fstype"), "tmpfs\n");
    assert_eq!(read(dest.path(), "size"), "2048\n");
}

#[test]
fn ssh_mount_forwards_the_default_agent() {
    let store = Store::with_busybox();
    let dir = tempfile::tempdir().unwrap();
    let agent = crate::common::ssh::Agent::start(dir.path());
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /sock\n\
         RUN --mount=type=ssh,id=deploy,target=/agent,uid=1000,mode=0600 \\\n\
         \x20   test -S /agent && stat -c %u:%a /agent > /owner; echo \"$SSH_AUTH_SOCK\" > /sock2\n",
    )]);
    let dest = tempfile::tempdir().unwrap();
    let out = store
        .cmd()
        .env("SSH_AUTH_SOCK", &agent.1)
        .args(["build", "--progress=rawjson", "--ssh", "default"])
        .arg(format!("--ssh=deploy={}", agent.1.display()))
        .arg(format!(
            "--output=type=local,dest={}",
            dest.path().display()
        ))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(dest.path(), "sock"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(read(dest.path(), "owner"), "1000:600\n");
    assert_eq!(read(dest.path(), "sock2"), "/agent\n");
    assert!(!dest.path().join("run/buildkit").exists());
    assert!(!dest.path().join("agent").exists());

    // Without --ssh an optional agent is simply absent; a required one stops the build
    // naming the flag.
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=ssh test ! -e /run/buildkit/ssh_agent.0\n",
    )]);
    build_ok(&store, ctx.path(), &[]);
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=ssh,required=true true\n",
    )]);
    let out = store.build(ctx.path(), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ssh"), "{}", stderr(&out));
}

#[test]
fn network_none_sees_only_loopback_and_host_the_hosts_interfaces() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN --network=none tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /ifaces\n\
         RUN --network=host tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort > /host-ifaces\n\
         RUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort > /default-ifaces\n",
    )]);
    let (dest, _) = build_local(&store, ctx.path(), &["--allow", "network.host"]);
    assert_eq!(read(dest.path(), "ifaces"), "lo\n");
    // host (and the default, as here) share the host's network namespace.
    let mut host: Vec<String> = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim().to_string())
        .collect();
    host.sort();
    let host = host.iter().map(|l| format!("{l}\n")).collect::<String>();
    assert_eq!(read(dest.path(), "host-ifaces"), host);
    assert_eq!(read(dest.path(), "default-ifaces"), host);
}

#[test]
fn heredoc_run_with_interpreter_and_copy_heredocs_with_expansion() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nARG NAME=world\nENV PLACE=here\n\
         RUN <<EOF\n#!/bin/awk -f\nBEGIN { print \"awk says hi\" > \"/awk.txt\" }\nEOF\n\
         RUN <<EOF\n#!/bin/sh -e\necho \"sh $NAME $PLACE\" > /sh.txt\nEOF\n\
         RUN <<A cat > /one && <<B cat > /two\nfirst\nA\nsecond $NAME\nB\n\
         COPY <<EOF /dest/expanded\nhello $NAME from ${PLACE:-nowhere} \\$NAME\nEOF\n\
         COPY <<'EOF' /dest/raw\nhello $NAME\nEOF\n",
    )]);
    let (dest, _) = build_local(&store, ctx.path(), &["--build-arg", "NAME=you"]);
    let d = dest.path();
    assert_eq!(read(d, "awk.txt"), "awk says hi\n");
    assert_eq!(read(d, "sh.txt"), "sh you here\n");
    assert_eq!(read(d, "one"), "first\n");
    assert_eq!(read(d, "two"), "second you\n");
    // As in BuildKit, escapes in a heredoc stay as written (raw escapes) but still stop expansion.
    assert_eq!(read(d, "dest/expanded"), "hello you from here \\$NAME\n");
    assert_eq!(read(d, "dest/raw"), "hello $NAME\n");
}

#[test]
fn on_error_shell_sees_the_failed_steps_mounts() {
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             RUN --mount=type=cache,target=/cache echo cached-before > /cache/c\n\
             RUN --mount=type=cache,target=/cache --mount=target=/ctx echo partial > /partial && false\n",
        ),
        ("input.txt", "from-context\n"),
    ]);
    let out = output_with_stdin(
        store
            .cmd()
            .args([
                "build",
                "--progress=plain",
                "--on-error=shell",
                "-t",
                "broken",
            ])
            .arg(ctx.path()),
        b"cat /cache/c /ctx/input.txt /partial; exit\n",
    );
    assert!(!out.status.success(), "the build must still fail");
    assert_eq!(
        stdout(&out),
        "cached-before\nfrom-context\npartial\n",
        "stderr: {}",
        stderr(&out)
    );
    let images = store.run(&["images"]);
    assert!(!stdout(&images).contains("broken"), "{}", stdout(&images));
}

#[test]
fn named_context_feeds_copy_from_and_run_mounts() {
    let store = Store::with_busybox();
    let named = context(&[
        ("lib/one.txt", "one\n"),
        ("lib/two.txt", "two\n"),
        (".dockerignore", "lib/two.txt\n"),
    ]);
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         COPY --from=vendor lib/ /copied/\n\
         RUN --mount=from=vendor,target=/v ls /v/lib > /mounted && cat /v/lib/one.txt >> /mounted\n",
    )]);
    let named_arg = format!("vendor={}", named.path().display());
    let (dest, out) = build_local(&store, ctx.path(), &["--build-context", &named_arg]);
    assert_eq!(
        started(&out, "RUN --mount=from=vendor,target=/v ls /v/lib"),
        1
    );
    let d = dest.path();
    assert_eq!(read(d, "copied/one.txt"), "one\n");
    assert!(!d.join("copied/two.txt").exists());
    assert_eq!(read(d, "mounted"), "one.txt\none\n");
    assert!(!d.join("v").exists());

    // Unchanged named context: everything cached; a changed file re-runs both steps.
    let (_, out) = build_local(&store, ctx.path(), &["--build-context", &named_arg]);
    assert_eq!(started(&out, "RUN"), 0);
    assert_eq!(started(&out, "COPY"), 0);
    std::fs::write(named.path().join("lib/one.txt"), "uno\n").unwrap();
    let (dest, out) = build_local(&store, ctx.path(), &["--build-context", &named_arg]);
    assert_eq!(
        started(&out, "RUN --mount=from=vendor,target=/v ls /v/lib"),
        1
    );
    assert_eq!(read(dest.path(), "mounted"), "one.txt\nuno\n");
    // The ignored file changing does not invalidate anything.
    std::fs::write(named.path().join("lib/two.txt"), "dos\n").unwrap();
    let (_, out) = build_local(&store, ctx.path(), &["--build-context", &named_arg]);
    assert_eq!(started(&out, "RUN"), 0, "{}", stderr(&out));
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn copy_chmod_symbolic_exclude_and_parents() {
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             COPY --chmod=u=rwx,g=rx,o= tool.sh /bin/tool\n\
             COPY --chmod=a+x,go-w src/ /src/\n\
             COPY --exclude=*.log --exclude=tmp src/ /filtered/\n\
             COPY --parents app/*/conf.json /parents/\n\
             COPY --parents ./app/./one/conf.json /pivot/\n\
             COPY --chown=1000:2000 --chmod=640 tool.sh /owned\n",
        ),
        ("src/debug.log", "log\n"),
        ("src/tmp/x", "x\n"),
        ("src/keep/y.log", "y\n"),
        ("app/one/conf.json", "{1}\n"),
        ("app/two/conf.json", "{2}\n"),
        ("app/two/other.json", "{}\n"),
    ]);
    write_fixture(
        ctx.path(),
        &[
            ("tool.sh", "#!/bin/sh\n", 0o666),
            ("src/main.c", "int main;\n", 0o664),
        ],
    );
    let (dest, _) = build_local(&store, ctx.path(), &[]);
    let d = dest.path();
    assert_eq!(mode_of(&d.join("bin/tool")), 0o750);
    assert_eq!(mode_of(&d.join("src/main.c")), 0o755);
    assert_eq!(read(d, "filtered/main.c"), "int main;\n");
    assert!(!d.join("filtered/debug.log").exists());
    assert!(!d.join("filtered/tmp").exists());
    // Like .dockerignore patterns, `*.log` matches at the source root only.
    assert_eq!(read(d, "filtered/keep/y.log"), "y\n");
    assert_eq!(read(d, "parents/app/one/conf.json"), "{1}\n");
    assert_eq!(read(d, "parents/app/two/conf.json"), "{2}\n");
    assert!(!d.join("parents/app/two/other.json").exists());
    assert_eq!(read(d, "pivot/one/conf.json"), "{1}\n");
    assert_eq!(tar_owner(&store, ctx.path(), "owned"), (1000, 2000));
    assert_eq!(mode_of(&d.join("owned")), 0o640);
}

#[test]
fn step_cache_keys_follow_mounted_content_not_secrets() {
    let store = Store::with_busybox();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("s");
    std::fs::write(&secret_file, "one").unwrap();
    let secret_arg = format!("--secret=id=s,src={}", secret_file.display());
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             RUN --mount=type=bind,source=conf/app.conf,target=/app.conf cat /app.conf > /conf-copy\n\
             RUN --mount=type=secret,id=s wc -c < /run/secrets/s > /secret-len\n",
        ),
        ("conf/app.conf", "v1\n"),
        ("unrelated.txt", "a\n"),
    ]);
    let (dest, out) = build_local(&store, ctx.path(), &[&secret_arg]);
    assert_eq!(started(&out, "cat /app.conf"), 1);
    assert_eq!(started(&out, "wc -c"), 1);
    assert_eq!(read(dest.path(), "conf-copy"), "v1\n");
    assert_eq!(read(dest.path(), "secret-len").trim(), "3");

    // Another file of the context and a new secret value keep both steps cached
    // (as in BuildKit, secrets are not part of the cache key).
    std::fs::write(ctx.path().join("unrelated.txt"), "b\n").unwrap();
    std::fs::write(&secret_file, "three").unwrap();
    let (_, out) = build_local(&store, ctx.path(), &[&secret_arg]);
    assert_eq!(cached(&out, "cat /app.conf"), 1, "{}", stderr(&out));
    assert_eq!(cached(&out, "wc -c"), 1);

    // The mounted file changing re-runs its step, and the next one.
    std::fs::write(ctx.path().join("conf/app.conf"), "v2\n").unwrap();
    let (dest, out) = build_local(&store, ctx.path(), &[&secret_arg]);
    assert_eq!(started(&out, "cat /app.conf"), 1);
    assert_eq!(started(&out, "wc -c"), 1);
    assert_eq!(read(dest.path(), "conf-copy"), "v2\n");
    assert_eq!(read(dest.path(), "secret-len").trim(), "5");
}

#[test]
fn named_context_replaces_a_stage_used_by_mounts_and_images_bind() {
    let store = Store::with_busybox();
    let named = context(&[("tool.txt", "from the named context\n")]);
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS tools\nRUN echo built > /tool.txt\n\
         FROM busybox\n\
         RUN --mount=from=tools,target=/t cat /t/tool.txt > /got\n\
         RUN --mount=from=base,source=/bin/busybox,target=/bb test -x /bb && echo ok > /bb-ok\n",
    )]);
    let named_arg = format!("tools={}", named.path().display());
    let (dest, out) = build_local(
        &store,
        ctx.path(),
        &[
            "--build-context",
            &named_arg,
            "--build-context",
            "base=docker-image://busybox:latest",
        ],
    );
    assert_eq!(read(dest.path(), "got"), "from the named context\n");
    assert_eq!(read(dest.path(), "bb-ok"), "ok\n");
    assert_eq!(started(&out, "echo built"), 0, "the replaced stage ran");
}

#[test]
fn bad_mounts_fail_with_clear_errors() {
    let store = Store::with_busybox();
    for (dockerfile, expected) in [
        (
            "FROM busybox\nRUN --mount=type=bind,source=missing.txt,target=/m true\n",
            "missing.txt",
        ),
        (
            "FROM busybox\nRUN --mount=type=bind,source=outside,target=/m cat /m\n",
            "source \"outside\" is a symbolic link to a path that is not in the build context",
        ),
        (
            "FROM busybox\nRUN --mount=type=bind,from=nosuchstage,target=/m true\n",
            "nosuchstage",
        ),
        (
            "FROM busybox\nRUN --mount=type=cache,target=/c,sharing=sometimes true\n",
            "sharing",
        ),
        (
            "FROM busybox\nRUN --mount=type=volume,target=/c true\n",
            "volume",
        ),
    ] {
        let ctx = context(&[("Dockerfile", dockerfile)]);
        std::os::unix::fs::symlink("/etc/shadow", ctx.path().join("outside")).unwrap();
        let out = store.build(ctx.path(), &["-t", "bad"]);
        assert!(!out.status.success(), "{dockerfile} was accepted");
        let err = stderr(&out);
        assert!(err.contains(expected), "{dockerfile}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let images = store.run(&["images"]);
    // (By name: an image id may hold the letters "bad" too.)
    let named_bad = stdout(&images).lines().any(|l| l.starts_with("bad:"));
    assert!(!named_bad, "{}", stdout(&images));
}

#[test]
fn relative_mount_targets_and_heredoc_with_mounts() {
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nWORKDIR /work\n\
             RUN --mount=type=bind,source=in.txt,target=in.txt --mount=type=cache,target=cache <<EOF\n\
             cat /work/in.txt > /work/out.txt\n\
             echo cached > cache/marker\n\
             ls /work | sort > /listing\n\
             EOF\n",
        ),
        ("in.txt", "input\n"),
    ]);
    let (dest, _) = build_local(&store, ctx.path(), &[]);
    assert_eq!(read(dest.path(), "work/out.txt"), "input\n");
    assert_eq!(read(dest.path(), "listing"), "cache\nin.txt\nout.txt\n");
    assert!(!dest.path().join("work/in.txt").exists());
    assert!(!dest.path().join("work/cache").exists());
}

#[test]
fn secret_env_lives_only_in_its_step() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=secret,id=tok,env=TOKEN test -n \"$TOKEN\" && echo set > /in-step\n\
         RUN echo \"[${TOKEN:-unset}]\" > /next-step\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let local = tempfile::tempdir().unwrap();
    let out = store
        .cmd()
        .env("TOK", "s3cr3t-value-91")
        .args(["build", "--progress=rawjson", "--secret", "id=tok,env=TOK"])
        .arg(format!("--output=type=oci,dest={}", archive.display()))
        .arg(format!(
            "--output=type=local,dest={}",
            local.path().display()
        ))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(local.path(), "in-step"), "set\n");
    assert_eq!(read(local.path(), "next-step"), "[unset]\n");
    let config = skopeo_config(&archive);
    let env = config["config"]["Env"].to_string();
    assert!(!env.contains("TOKEN"), "{env}");
    let history = config["history"].to_string();
    assert!(!history.contains("s3cr3t"), "{history}");
}

#[test]
fn cache_mounts_survive_no_cache_builds() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/c echo x >> /c/runs && wc -l < /c/runs > /count\n",
    )]);
    let (dest, _) = build_local(&store, ctx.path(), &[]);
    assert_eq!(read(dest.path(), "count").trim(), "1");
    let (dest, out) = build_local(&store, ctx.path(), &["--no-cache"]);
    assert_eq!(started(&out, "wc -l"), 1);
    assert_eq!(read(dest.path(), "count").trim(), "2");
}

#[test]
fn onbuild_run_with_mounts_runs_in_the_child() {
    let store = Store::with_busybox();
    let parent = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         ONBUILD RUN --mount=type=bind,source=child.txt,target=/m --mount=type=cache,target=/oc \\\n\
         \x20   cat /m > /from-child && echo seen >> /oc/log && cat /oc/log > /oc-log\n",
    )]);
    build_ok(&store, parent.path(), &["-t", "parent:1"]);
    let child = context(&[
        ("Dockerfile", "FROM parent:1\nRUN cat /from-child\n"),
        ("child.txt", "child context\n"),
    ]);
    let (dest, _) = build_local(&store, child.path(), &[]);
    assert_eq!(read(dest.path(), "from-child"), "child context\n");
    assert_eq!(read(dest.path(), "oc-log"), "seen\n");
    assert!(!dest.path().join("m").exists());
    assert!(!dest.path().join("oc").exists());
}

#[test]
fn copy_symbolic_chmod_with_capital_x_and_exclude_with_parents() {
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             COPY --chmod=u=rwX,go=rX tree/ /tree/\n\
             COPY --parents --exclude=**/*.tmp pkgs/*/src /out/\n",
        ),
        ("tree/sub/deep.txt", "d\n"),
        ("pkgs/a/src/lib.rs", "a\n"),
        ("pkgs/a/src/junk.tmp", "j\n"),
        ("pkgs/b/src/main.rs", "b\n"),
        ("pkgs/b/README", "readme\n"),
    ]);
    write_fixture(
        ctx.path(),
        &[
            ("tree/plain.txt", "p\n", 0o600),
            ("tree/run.sh", "r\n", 0o700),
        ],
    );
    let (dest, _) = build_local(&store, ctx.path(), &[]);
    let d = dest.path();
    assert_eq!(mode_of(&d.join("tree/plain.txt")), 0o644);
    assert_eq!(mode_of(&d.join("tree/run.sh")), 0o755);
    assert_eq!(mode_of(&d.join("tree/sub")), 0o755);
    assert_eq!(mode_of(&d.join("tree/sub/deep.txt")), 0o644);
    assert_eq!(read(d, "out/pkgs/a/src/lib.rs"), "a\n");
    assert_eq!(read(d, "out/pkgs/b/src/main.rs"), "b\n");
    assert!(!d.join("out/pkgs/a/src/junk.tmp").exists());
    assert!(!d.join("out/pkgs/b/README").exists());
}

#[test]
fn failed_steps_keep_their_cache_writes_and_defaults_match_buildkit() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/c echo partial > /c/progress && exit 1\n",
    )]);
    let out = store.build(ctx.path(), &[]);
    assert!(!out.status.success());
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=cache,target=/c cat /c/progress > /resumed; stat -c %u:%g:%a /c > /cache-owner\n\
         RUN --mount=type=secret,id=s stat -c %u:%g:%a /run/secrets/s > /secret-owner\n\
         RUN --mount=type=tmpfs,target=/t stat -c %a /t > /tmpfs-mode\n",
    )]);
    let secret = tempfile::NamedTempFile::new().unwrap();
    let secret_arg = format!("--secret=id=s,src={}", secret.path().display());
    let (dest, _) = build_local(&store, ctx.path(), &[&secret_arg]);
    let d = dest.path();
    assert_eq!(read(d, "resumed"), "partial\n");
    assert_eq!(read(d, "cache-owner"), "0:0:755\n");
    assert_eq!(read(d, "secret-owner"), "0:0:400\n");
    assert_eq!(read(d, "tmpfs-mode"), "1777\n");
}

#[test]
fn from_a_named_local_context() {
    let store = Store::with_busybox();
    let rootfs = context(&[
        ("etc/release", "custom\n"),
        ("private.key", "ignored\n"),
        (".dockerignore", "private.key\n"),
    ]);
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS b\nFROM rootfs\nCOPY --from=b /bin/busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"cp\", \"/etc/release\", \"/copied\"]\n",
    )]);
    let named = format!("rootfs={}", rootfs.path().display());
    let (dest, _) = build_local(&store, ctx.path(), &["--build-context", &named]);
    assert_eq!(read(dest.path(), "etc/release"), "custom\n");
    assert_eq!(read(dest.path(), "copied"), "custom\n");
    assert!(dest.path().join("bin/busybox").is_file());
    assert!(!dest.path().join("private.key").exists());

    // Unchanged: cached. A changed file in the named context re-runs the steps on it.
    let (_, out) = build_local(&store, ctx.path(), &["--build-context", &named]);
    assert_eq!(started(&out, "cp"), 0);
    std::fs::write(rootfs.path().join("etc/release"), "v2\n").unwrap();
    let (dest, out) = build_local(&store, ctx.path(), &["--build-context", &named]);
    assert_eq!(started(&out, "cp"), 1);
    assert_eq!(read(dest.path(), "copied"), "v2\n");
}

#[test]
fn mounts_over_existing_paths_leave_them_as_they_were() {
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             RUN mkdir -p /data && echo original > /data/keep && echo base > /etc/motd\n\
             RUN --mount=type=tmpfs,target=/data --mount=type=tmpfs,target=/tmp \\\n\
             \x20   --mount=type=bind,source=motd,target=/etc/motd \\\n\
             \x20   --mount=type=cache,target=/root \\\n\
             \x20   touch /data/new /tmp/new /root/new && cat /etc/motd > /seen-motd && ls /data > /seen-data\n",
        ),
        ("motd", "from context\n"),
    ]);
    let layers = oci_layer_names(&store, ctx.path(), &[]);
    assert_eq!(
        layers.last().unwrap(),
        &vec!["seen-data".to_string(), "seen-motd".to_string()],
        "the mounts' targets changed in the image"
    );
    let (dest, _) = build_local(&store, ctx.path(), &[]);
    let d = dest.path();
    assert_eq!(read(d, "seen-motd"), "from context\n");
    assert_eq!(read(d, "seen-data"), "new\n");
    assert_eq!(read(d, "etc/motd"), "base\n");
    assert_eq!(read(d, "data/keep"), "original\n");
    assert!(!d.join("data/new").exists());
    assert!(!d.join("tmp/new").exists());
    assert!(!d.join("root/new").exists());
    assert_eq!(mode_of(&d.join("tmp")), 0o1777);
}

#[test]
fn on_error_shell_sees_secrets_and_leaves_none_behind() {
    let store = Store::with_busybox();
    let secret_value = "shell-secret-5c1e";
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=s,env=S false\n",
    )]);
    let out = output_with_stdin(
        store
            .cmd()
            .env("S_SRC", secret_value)
            .args([
                "build",
                "--progress=plain",
                "--on-error=shell",
                "--secret=id=s,env=S_SRC",
            ])
            .arg(ctx.path()),
        b"printf %s \"$S\" | wc -c; test -e /run/secrets/s || echo no-file; exit\n",
    );
    assert!(!out.status.success());
    let lens: Vec<String> = stdout(&out)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    // As in BuildKit, env= without target= exposes the secret as a variable only.
    assert_eq!(lens, vec!["17", "no-file"], "stderr: {}", stderr(&out));
    for f in all_files(store.root()) {
        assert!(
            !contains(&plain_bytes(&f), secret_value.as_bytes()),
            "secret found in {}",
            f.display()
        );
    }
}

#[test]
fn mount_options_expand_args_and_cache_can_be_seeded_from_a_stage() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS seed\nRUN mkdir -p /s && echo seeded > /s/start\n\
         FROM busybox\nARG CACHE_ID=pkgs\nENV CACHE_DIR=/var/pkgs\n\
         RUN --mount=type=cache,id=$CACHE_ID,target=$CACHE_DIR,from=seed,source=/s \\\n\
         \x20   cat $CACHE_DIR/start > /got && echo added > $CACHE_DIR/more\n\
         RUN --mount=type=cache,id=${CACHE_ID},target=/other ls /other | sort > /listing\n",
    )]);
    let (dest, _) = build_local(&store, ctx.path(), &[]);
    assert_eq!(read(dest.path(), "got"), "seeded\n");
    assert_eq!(read(dest.path(), "listing"), "more\nstart\n");
    assert!(!dest.path().join("var/pkgs").exists());
    // The seed stage is untouched by writes to the cache.
    let ctx2 = context(&[(
        "Dockerfile",
        "FROM busybox AS seed\nRUN mkdir -p /s && echo seeded > /s/start\n\
         FROM seed\nRUN ls /s > /seed-listing\n",
    )]);
    let (dest, _) = build_local(&store, ctx2.path(), &[]);
    assert_eq!(read(dest.path(), "seed-listing"), "start\n");
}

#[test]
fn heredoc_copy_with_owner_mode_and_tab_stripping() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nARG V=1.2\n\
         COPY --chown=1000:1000 --chmod=u=rwx,go=r <<-EOF /opt/version.sh\n\
         \t#!/bin/sh\n\
         \techo v$V\n\
         \tEOF\n\
         RUN /opt/version.sh > /out && stat -c %u:%g:%a /opt/version.sh >> /out\n",
    )]);
    let (dest, _) = build_local(&store, ctx.path(), &[]);
    assert_eq!(
        read(dest.path(), "opt/version.sh"),
        "#!/bin/sh\necho v1.2\n"
    );
    assert_eq!(read(dest.path(), "out"), "v1.2\n1000:1000:744\n");
}

#[test]
fn two_platform_build_shares_a_locked_cache_and_secrets() {
    let store = Store::with_busybox();
    let dir = tempfile::tempdir().unwrap();
    let arm64 = dir.path().join("busybox-arm64.tar");
    let st = Command::new("bash")
        .arg(repo().join("scripts/make-busybox-rootfs.sh"))
        .arg(&arm64)
        .arg("arm64")
        .status()
        .unwrap();
    assert!(st.success(), "make-busybox-rootfs.sh OUT arm64 failed");
    let imported = store.run(&[
        "import",
        "--platform",
        "linux/arm64",
        arm64.to_str().unwrap(),
        "busybox-arm64",
    ]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(store
        .run(&["tag", "busybox:latest", "busybox-amd64"])
        .status
        .success());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "abc").unwrap();
    let ctx = context(&[(
        "Dockerfile",
        "ARG TARGETARCH\nFROM busybox-$TARGETARCH\n\
         RUN --mount=type=cache,target=/c,sharing=locked --mount=type=secret,id=s \\\n\
         \x20   uname -m >> /c/arches && wc -c < /run/secrets/s > /secret-len && uname -m > /arch\n",
    )]);
    let out_dir = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", out_dir.path().display());
    let secret_arg = format!("--secret=id=s,src={}", secret.display());
    build_ok(
        &store,
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            &secret_arg,
            "-o",
            &out_arg,
        ],
    );
    for (platform, arch) in [("linux_amd64", "x86_64"), ("linux_arm64", "aarch64")] {
        let d = out_dir.path().join(platform);
        assert_eq!(read(&d, "arch"), format!("{arch}\n"));
        assert_eq!(read(&d, "secret-len").trim(), "3");
        assert!(!d.join("c").exists());
    }
    let cache = store.root().join("cache/mounts").join(hex_sha256(b"/c"));
    let mut arches: Vec<String> = read(&cache, "arches").lines().map(String::from).collect();
    arches.sort();
    assert_eq!(arches, vec!["aarch64", "x86_64"]);

    // Named contexts reach every platform's lowering.
    let named = context(&[("n.txt", "named\n")]);
    let named_arg = format!("extra={}", named.path().display());
    let ctx = context(&[(
        "Dockerfile",
        "ARG TARGETARCH\nFROM busybox-$TARGETARCH\nCOPY --from=extra n.txt /n.txt\n",
    )]);
    let out_dir = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", out_dir.path().display());
    let two = ["--platform", "linux/amd64,linux/arm64"];
    let mut args = two.to_vec();
    args.extend(["--build-context", &named_arg, "-o", &out_arg]);
    build_ok(&store, ctx.path(), &args);
    for platform in ["linux_amd64", "linux_arm64"] {
        assert_eq!(read(&out_dir.path().join(platform), "n.txt"), "named\n");
    }
    // Multi-platform builds go through the same flow as single ones: cache export works too.
    let cache_dir = tempfile::tempdir().unwrap();
    let cache_arg = format!("type=local,dest={},mode=max", cache_dir.path().display());
    let mut args = two.to_vec();
    args.extend(["--build-context", &named_arg, "--cache-to", &cache_arg]);
    build_ok(&store, ctx.path(), &args);
    assert!(cache_dir.path().join("index.json").is_file());
}

#[test]
fn ssh_mount_reaches_the_agents_keys() {
    let store = Store::with_busybox();
    let dir = tempfile::tempdir().unwrap();
    let agent = crate::common::ssh::Agent::start(dir.path());
    let key = dir.path().join("id_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e-test-key", "-f"])
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
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM busybox\n\
             RUN --mount=type=ssh --mount=target=/tools \\\n\
             \x20   /tools/{loader} --library-path /tools /tools/ssh-add -l > /keys\n"
        ),
    )
    .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = store
        .cmd()
        .env("SSH_AUTH_SOCK", &agent.1)
        .args(["build", "--progress=rawjson", "--ssh=default"])
        .arg(format!(
            "--output=type=local,dest={}",
            dest.path().display()
        ))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = read(dest.path(), "keys");
    assert!(
        keys.contains("e2e-test-key") && keys.contains("(ED25519)"),
        "{keys}"
    );
}

#[test]
fn exported_build_cache_holds_no_secret_and_pruned_stages_need_none() {
    let store = Store::with_busybox();
    let secret_value = "cache-export-secret-e90b";
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS unused\nRUN --mount=type=secret,id=other,required=true true\n\
         FROM busybox\n\
         RUN --mount=type=secret,id=s,env=S --mount=type=cache,target=/c \\\n\
         \x20   test -n \"$S\" && echo ok > /c/ran && echo ok > /ran\n",
    )]);
    let cache = tempfile::tempdir().unwrap();
    let cache_to = format!(
        "type=local,dest={},mode=max,mounts=true",
        cache.path().display()
    );
    let out = store
        .cmd()
        .env("S_SRC", secret_value)
        .args(["build", "--progress=rawjson", "--secret=id=s,env=S_SRC"])
        .args(["--cache-to", &cache_to])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = all_files(cache.path());
    assert!(exported.len() > 2, "nothing exported: {exported:?}");
    for f in exported.iter().chain(all_files(store.root()).iter()) {
        assert!(
            !contains(&plain_bytes(f), secret_value.as_bytes()),
            "secret found in {}",
            f.display()
        );
    }
    // The exported cache mount carries the step's write to a fresh store.
    let fresh = Store::with_busybox();
    let from = format!("type=local,src={}", cache.path().display());
    let out = fresh.build(
        ctx.path(),
        &["--cache-from", &from, "--secret=id=s,env=S_SRC"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cached(&out, "test -n"), 1, "{}", stderr(&out));
    let restored = fresh.root().join("cache/mounts").join(hex_sha256(b"/c"));
    assert_eq!(read(&restored, "ran"), "ok\n");
}

#[test]
fn a_killed_build_releases_its_locked_cache_and_leaves_no_process() {
    use std::io::BufRead as _;
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/lk,sharing=locked echo > /lk/held && sleep 37\n",
    )]);
    let mut child = store
        .cmd()
        .args(["build", "--progress=rawjson"])
        .arg(ctx.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if line.contains("\"started\"") && line.contains("sleep 37") {
            break;
        }
    }
    // The step is running and holds the lock once its file is in the cache.
    let held = store
        .root()
        .join("cache/mounts")
        .join(hex_sha256(b"/lk"))
        .join("held");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Its content, not just its name: the shell creates the file before echo writes to it.
    while std::fs::read(&held).map_or(true, |content| content.is_empty()) {
        assert!(Instant::now() < deadline, "the step never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/lk,sharing=locked cat /lk/held > /got\n",
    )]);
    let started_at = Instant::now();
    let (dest, _) = build_local(&store, ctx.path(), &[]);
    assert!(
        started_at.elapsed() < Duration::from_secs(20),
        "the second build waited for the killed build's lock"
    );
    assert_eq!(read(dest.path(), "got"), "\n");
    let still_running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .any(|cmdline| cmdline == b"sleep\x0037\x00")
    };
    // The orphaned container is killed as its helper dies; allow for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    while still_running() {
        assert!(
            Instant::now() < deadline,
            "the killed build's step is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A COPY made ahead of its base must give exactly what copying onto the base gives, also
/// where the base has the destination as a private directory or a symlink.
#[test]
fn rebased_copies_match_copies_onto_the_base() {
    use std::os::unix::fs::MetadataExt;
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             RUN mkdir -p /app /real && chmod 700 /app && chown 1000:1000 /app && ln -s /real /link\n\
             COPY f.txt /app/\n\
             COPY f.txt /link/\n\
             COPY f.txt /new/dir/\n\
             COPY --chown=7:8 f.txt /owned/\n",
        ),
        ("f.txt", "payload\n"),
    ]);
    let (dest, out) = build_local(&store, ctx.path(), &[]);
    let meta = |p: &str| std::fs::symlink_metadata(dest.path().join(p)).unwrap();
    // The base's private directory keeps its mode and owner.
    assert_eq!(meta("app").mode() & 0o7777, 0o700);
    assert_eq!(tar_owner(&store, ctx.path(), "app"), (1000, 1000));
    assert_eq!(read(dest.path(), "app/f.txt"), "payload\n");
    // Through the base's symlink, as a copy onto the base does.
    assert!(meta("link").file_type().is_symlink());
    assert_eq!(read(dest.path(), "real/f.txt"), "payload\n");
    // New parents are root-owned 0755.
    assert_eq!(meta("new").mode() & 0o7777, 0o755);
    assert_eq!(read(dest.path(), "new/dir/f.txt"), "payload\n");
    assert_eq!(tar_owner(&store, ctx.path(), "owned/f.txt"), (7, 8));
    // A copy that stacks exactly runs once; one the base decides runs again on the base.
    assert_eq!(started(&out, "COPY f.txt /new/dir/"), 1);
    assert_eq!(started(&out, "COPY f.txt /app/"), 2);

    // A changed base re-stacks the copies without running them again.
    let ctx2 = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             RUN mkdir -p /app /real && chmod 700 /app && chown 1000:1000 /app && ln -s /real /link && echo changed\n\
             COPY f.txt /app/\n\
             COPY f.txt /link/\n\
             COPY f.txt /new/dir/\n\
             COPY --chown=7:8 f.txt /owned/\n",
        ),
        ("f.txt", "payload\n"),
    ]);
    let (dest, out) = build_local(&store, ctx2.path(), &[]);
    assert_eq!(started(&out, "COPY --chown"), 0, "{}", stderr(&out));
    assert_eq!(started(&out, "COPY f.txt /new"), 0);
    // Where the base decides the result, the copy runs again, and shows.
    assert_eq!(started(&out, "COPY f.txt /app/"), 1);
    assert_eq!(started(&out, "COPY f.txt /link/"), 1);
    assert_eq!(read(dest.path(), "real/f.txt"), "payload\n");
    assert_eq!(read(dest.path(), "owned/f.txt"), "payload\n");
}
