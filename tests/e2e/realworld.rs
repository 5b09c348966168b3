//! Real-world Dockerfiles on a real Debian bookworm base (debootstrap minbase, made once by
//! scripts/make-debian-rootfs.sh): apt with cache mounts, system users, merged /usr,
//! entrypoint scripts, multi-stage builds and deep trees with setuid files and hardlinks.
//! Results are checked in a local export, in the image's layer tars (with tar) and by
//! running the image.

use crate::common::*;
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The Debian minbase root filesystem tarball, made (or found cached) once per test binary.
fn debian_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/make-debian-rootfs.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make-debian-rootfs.sh failed: {}",
            stderr(&out)
        );
        PathBuf::from(stdout(&out).trim())
    })
    .clone()
}

/// A fresh store with `debian:bookworm` imported.
fn debian_store() -> Store {
    let store = Store::new();
    ok(&store.run(&["import", debian_tar().to_str().unwrap(), "debian:bookworm"]));
    store
}

/// Whether Debian's package archive (the image's sources.list) answers, checked once.
fn archive_reachable() -> bool {
    static REACHABLE: OnceLock<bool> = OnceLock::new();
    *REACHABLE.get_or_init(|| {
        use std::net::ToSocketAddrs;
        let Ok(mut addrs) = "deb.debian.org:80".to_socket_addrs() else {
            return false;
        };
        addrs.any(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(3)).is_ok()
        })
    })
}

fn ok(out: &Output) -> &Output {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        stdout(out),
        stderr(out)
    );
    out
}

/// Builds `ctx` with `flags`, exporting the result's root filesystem to a new directory.
fn build_local(store: &Store, ctx: &Path, flags: &[&str]) -> tempfile::TempDir {
    let dest = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", dest.path().display());
    let mut args = vec!["-o", out_arg.as_str()];
    args.extend_from_slice(flags);
    ok(&store.build(ctx, &args));
    dest
}

/// Builds `ctx` with `flags` and unpacks the result's `-o type=tar` rootfs as root, so the
/// tree keeps the image's owners (a local export gives every file to the receiving user,
/// as buildx's does).
fn build_rootfs(store: &Store, ctx: &Path, flags: &[&str]) -> tempfile::TempDir {
    let dest = tempfile::tempdir().unwrap();
    let archive = dest.path().join("rootfs.tar");
    let out_arg = format!("type=tar,dest={}", archive.display());
    let mut args = vec!["-o", out_arg.as_str()];
    args.extend_from_slice(flags);
    ok(&store.build(ctx, &args));
    let tree = dest.path().join("rootfs");
    std::fs::create_dir(&tree).unwrap();
    let out = Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(&tree)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", stderr(&out));
    std::fs::remove_file(&archive).unwrap();
    // The tree becomes the directory's only content.
    for entry in std::fs::read_dir(&tree).unwrap() {
        let entry = entry.unwrap();
        std::fs::rename(entry.path(), dest.path().join(entry.file_name())).unwrap();
    }
    std::fs::remove_dir(&tree).unwrap();
    dest
}

/// The image config (`config` inside it) of a stored image.
fn image_config(store: &Store, image: &str) -> Value {
    let inspect = ok(&store.run(&["inspect", image])).stdout.clone();
    let info: Value = serde_json::from_slice(&inspect).unwrap();
    info["Config"].clone()
}

/// The layers of a stored image, each as the `tar -tv` listing of its blob, base first.
fn layer_listings(store: &Store, image: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    ok(&store.run(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        image,
    ]));
    let unpacked = dir.path().join("oci");
    std::fs::create_dir(&unpacked).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(st.success());
    let index: Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| unpacked.join("blobs/sha256").join(&digest[7..]);
    let mut manifest: Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    if manifest.get("layers").is_none() {
        // An index: take its first manifest.
        manifest = serde_json::from_slice(
            &std::fs::read(blob(manifest["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
    }
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let out = Command::new("tar")
                .arg("--numeric-owner")
                .arg("-tvf")
                .arg(blob(layer["digest"].as_str().unwrap()))
                .output()
                .unwrap();
            assert!(out.status.success(), "tar: {}", stderr(&out));
            stdout(&out)
        })
        .collect()
}

/// `builder run --rm` with `args`, returning stdout.
fn run_image(store: &Store, args: &[&str]) -> String {
    let mut full = vec!["run", "--rm"];
    full.extend_from_slice(args);
    stdout(ok(&store.run(&full)))
}

#[test]
fn apt_install_with_locked_cache_mounts_and_list_cleanup() {
    if !archive_reachable() {
        eprintln!("skipped: deb.debian.org:80 is unreachable, apt-get cannot run in a build");
        return;
    }
    let store = debian_store();
    // As Docker's docs show: keep downloaded packages in a cache mount shared by builds.
    let ctx = context(&[(
        "Dockerfile",
        r#"FROM debian:bookworm
ARG DEBIAN_FRONTEND=noninteractive
ARG PACKAGES="netbase"
RUN rm -f /etc/apt/apt.conf.d/docker-clean; echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > /etc/apt/apt.conf.d/keep-cache
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt,sharing=locked \
    apt-get update && apt-get install -y --no-install-recommends $PACKAGES
RUN apt-get update
RUN rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked ls /var/cache/apt/archives > /cached-debs.txt
"#,
    )]);
    let started = std::time::Instant::now();
    let dest = build_local(&store, ctx.path(), &["-t", "apt"]);
    eprintln!("apt build took {:?}", started.elapsed());
    let root = dest.path();
    assert!(
        std::fs::read_to_string(root.join("etc/services"))
            .unwrap()
            .contains("http"),
        "netbase installed /etc/services"
    );
    let cached = std::fs::read_to_string(root.join("cached-debs.txt")).unwrap();
    assert!(cached.contains("netbase_"), "{cached}");
    // The downloaded .deb stayed in the cache mount, not in the image (debootstrap's own
    // .debs are in the base).
    assert!(std::fs::read_dir(root.join("var/cache/apt/archives"))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with("netbase_")));
    assert_eq!(
        std::fs::read_dir(root.join("var/lib/apt/lists"))
            .unwrap()
            .count(),
        0,
        "rm -rf /var/lib/apt/lists/* leaves the directory empty"
    );
    assert!(run_image(&store, &["apt", "dpkg-query", "-W", "netbase"]).starts_with("netbase\t"));

    // The `rm -rf` layer deletes what the `apt-get update` layer below it made: one
    // whiteout per list file, and nothing else of them.
    let layers = layer_listings(&store, "apt");
    let update = &layers[layers.len() - 3];
    let cleanup = &layers[layers.len() - 2];
    // What `apt-get update` wrote there (the base's unchanged Packages list is not in it).
    let mut lists: Vec<&str> = update
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter_map(|p| p.strip_prefix("var/lib/apt/lists/"))
        .map(|p| p.trim_end_matches('/'))
        .filter(|name| !name.is_empty() && !name.contains('/') && !name.starts_with(".wh."))
        .collect();
    assert!(lists.len() >= 3, "{update}");
    lists.push("deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages");
    for name in &lists {
        assert!(
            cleanup.contains(&format!(" var/lib/apt/lists/.wh.{name}\n")),
            "no whiteout for {name} in:\n{cleanup}"
        );
    }
    assert!(!cleanup.contains(".wh..wh..opq"), "{cleanup}");
    assert!(!cleanup.contains(" dev/"), "{cleanup}");
}

#[test]
fn system_user_owns_workdir_copies_and_files_it_makes() {
    let store = debian_store();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM debian:bookworm
RUN groupadd -r app && useradd -r -g app -d /home/app -m -s /bin/bash app
COPY --chown=app:app config.txt /home/app/config/
USER app
WORKDIR /home/app/src
RUN touch made-by-app && id -un > whoami.txt
RUN --mount=type=cache,target=/home/app/.cache,uid=999,gid=999 touch /home/app/.cache/ok && echo cache-writable > cache.txt
",
        ),
        ("config.txt", "key=value\n"),
    ]);
    let dest = build_rootfs(&store, ctx.path(), &["-t", "users"]);
    let root = dest.path();
    let owner = |p: &str| {
        let md = std::fs::symlink_metadata(root.join(p)).unwrap();
        (md.uid(), md.gid(), md.mode() & 0o7777)
    };
    // useradd -r takes the first free system id counting down from 999; -m makes the home
    // with login.defs' UMASK 022.
    assert_eq!(owner("home/app"), (999, 999, 0o755));
    assert_eq!(owner("home/app/config/config.txt"), (999, 999, 0o644));
    // --chown names only the file; the directory COPY creates for it is also the user's.
    assert_eq!(owner("home/app/config"), (999, 999, 0o755));
    // WORKDIR after USER creates the directory as that user (as BuildKit).
    assert_eq!(owner("home/app/src"), (999, 999, 0o755));
    assert_eq!(owner("home/app/src/made-by-app"), (999, 999, 0o644));
    assert_eq!(
        std::fs::read_to_string(root.join("home/app/src/whoami.txt")).unwrap(),
        "app\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("home/app/src/cache.txt")).unwrap(),
        "cache-writable\n"
    );
    assert!(!root.join("home/app/.cache/ok").exists());
    let config = image_config(&store, "users");
    assert_eq!(config["config"]["User"], "app");
    assert_eq!(config["config"]["WorkingDir"], "/home/app/src");
    assert_eq!(
        run_image(&store, &["users", "sh", "-c", "id -un; pwd"]),
        "app\n/home/app/src\n"
    );
    assert_eq!(
        run_image(&store, &["-u", "root", "users", "id", "-u"]),
        "0\n"
    );
}

#[test]
fn merged_usr_copies_land_through_the_symlinks() {
    let store = debian_store();
    let tar_src = fixture(&[("tool/bin/run", "#!/bin/sh\necho tool\n", 0o755)]);
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM debian:bookworm
COPY hello.sh /bin/
COPY --chmod=755 helper.sh /sbin/helper
COPY --link --chmod=755 linked.sh /usr/local/bin/linked
ADD tool.tar /opt/
RUN hello.sh > /hello.out && helper > /helper.out && linked > /linked.out && /opt/tool/bin/run > /tool.out
",
        ),
        ("helper.sh", "#!/bin/sh\necho helper\n"),
        ("linked.sh", "#!/bin/sh\necho linked\n"),
    ]);
    write_fixture(
        ctx.path(),
        &[("hello.sh", "#!/bin/sh\necho hello\n", 0o755)],
    );
    let st = Command::new("tar")
        .arg("-cf")
        .arg(ctx.path().join("tool.tar"))
        .arg("-C")
        .arg(tar_src.path())
        .arg("tool")
        .status()
        .unwrap();
    assert!(st.success());
    let dest = build_local(&store, ctx.path(), &["-t", "merged"]);
    let root = dest.path();
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        let md = std::fs::symlink_metadata(root.join(link)).unwrap();
        assert!(md.file_type().is_symlink(), "/{link} is still a symlink");
        assert_eq!(
            std::fs::read_link(root.join(link)).unwrap(),
            Path::new(target)
        );
    }
    assert!(root.join("usr/bin/hello.sh").is_file());
    assert!(root.join("usr/sbin/helper").is_file());
    assert!(root.join("usr/local/bin/linked").is_file());
    assert!(root.join("opt/tool/bin/run").is_file());
    for (file, text) in [
        ("hello.out", "hello\n"),
        ("helper.out", "helper\n"),
        ("linked.out", "linked\n"),
        ("tool.out", "tool\n"),
    ] {
        assert_eq!(std::fs::read_to_string(root.join(file)).unwrap(), text);
    }
    // The COPY layers hold the files under usr/, and no directory replacing /bin.
    let layers = layer_listings(&store, "merged");
    let copy_bin = &layers[1];
    assert!(copy_bin.contains(" usr/bin/hello.sh"), "{copy_bin}");
    assert!(
        !copy_bin.lines().any(|l| l.ends_with(" bin/")),
        "{copy_bin}"
    );
    assert!(layers[2].contains(" usr/sbin/helper"), "{}", layers[2]);
}

#[test]
fn copying_a_rootfs_dir_onto_merged_usr_fails_like_buildkit() {
    let store = debian_store();
    // moby/moby#47367: BuildKit refuses to replace the /bin symlink with a directory.
    let ctx = context(&[
        ("Dockerfile", "FROM debian:bookworm\nCOPY rootfs/ /\n"),
        ("rootfs/bin/tool", "#!/bin/sh\n"),
    ]);
    let out = store.build(ctx.path(), &["-t", "broken"]);
    assert!(!out.status.success(), "the COPY must fail");
    let err = stderr(&out);
    assert!(err.contains("cannot copy to non-directory"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(!store.run(&["inspect", "broken"]).status.success());
    // Into the real directory it works, and /bin stays a link.
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM debian:bookworm\nCOPY rootfs/usr/ /usr/\nRUN test -f /bin/tool\n",
        ),
        ("rootfs/usr/bin/tool", "#!/bin/sh\n"),
    ]);
    let dest = build_local(&store, ctx.path(), &[]);
    assert!(std::fs::symlink_metadata(dest.path().join("bin"))
        .unwrap()
        .is_symlink());
}

#[test]
fn entrypoint_script_with_exec_args_env_workdir_and_bash_shell() {
    let store = debian_store();
    let ctx = context(&[
        (
            "Dockerfile",
            r#"FROM debian:bookworm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG VERSION=1.2.3
ENV APP_VERSION=${VERSION} GREETING=hello
RUN set -eux; echo "$APP_VERSION" | tr . - > /version.txt
RUN ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime && echo Etc/UTC > /etc/timezone
RUN <<EOF
set -eux
mkdir -p /app
echo "heredoc ${APP_VERSION} $0" > /app/heredoc.txt
EOF
COPY --chmod=755 docker-entrypoint.sh /usr/local/bin/
WORKDIR /app
HEALTHCHECK --interval=30s --timeout=3s CMD test -f /app/heredoc.txt || exit 1
LABEL org.opencontainers.image.title="demo" \
      org.opencontainers.image.version="${VERSION}"
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["echo", "default"]
"#,
        ),
        (
            "docker-entrypoint.sh",
            "#!/bin/sh\nset -e\necho \"entry $GREETING $(pwd) $(id -u)\"\nexec \"$@\"\n",
        ),
    ]);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let dest = build_local(&store, ctx.path(), &["-t", "entry"]);
    // The RUN changed /etc itself: the executor's /etc/hosts and resolv.conf stubs, removed
    // after it, must not roll the directory's mtime back to the base's.
    let etc = std::fs::metadata(dest.path().join("etc")).unwrap();
    assert!(
        etc.mtime() >= started - 1,
        "/etc mtime {} < {started}",
        etc.mtime()
    );
    assert!(std::fs::symlink_metadata(dest.path().join("etc/localtime"))
        .unwrap()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(dest.path().join("version.txt")).unwrap(),
        "1-2-3\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("app/heredoc.txt")).unwrap(),
        "heredoc 1.2.3 /bin/bash\n"
    );
    let config = image_config(&store, "entry");
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], json!(["docker-entrypoint.sh"]));
    assert_eq!(c["Cmd"], json!(["echo", "default"]));
    assert_eq!(c["Shell"], json!(["/bin/bash", "-o", "pipefail", "-c"]));
    assert_eq!(
        c["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "test -f /app/heredoc.txt || exit 1"],
               "Interval": 30_000_000_000i64, "Timeout": 3_000_000_000i64})
    );
    assert_eq!(c["Labels"]["org.opencontainers.image.title"], "demo");
    assert_eq!(c["Labels"]["org.opencontainers.image.version"], "1.2.3");
    assert_eq!(
        run_image(&store, &["entry"]),
        "entry hello /app 0\ndefault\n"
    );
    assert_eq!(
        run_image(
            &store,
            &[
                "-e",
                "GREETING=hi",
                "-w",
                "/tmp",
                "-u",
                "nobody",
                "entry",
                "sh",
                "-c",
                "echo $APP_VERSION"
            ]
        ),
        "entry hi /tmp 65534\n1.2.3\n"
    );

    // pipefail from SHELL: a failing first command of a pipe fails the step.
    let failing = context(&[(
        "Dockerfile",
        "FROM debian:bookworm\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nRUN false | true\n",
    )]);
    let out = store.build(failing.path(), &[]);
    assert!(!out.status.success(), "pipefail must fail the RUN");
}

#[test]
fn multi_stage_shared_base_copy_from_and_target() {
    let store = debian_store();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM debian:bookworm AS base
RUN echo base > /etc/base-marker
FROM base AS build
WORKDIR /src
COPY gen.sh .
RUN mkdir -p /out && sh gen.sh > /out/app && chmod 755 /out/app
FROM base AS test
RUN exit 1
FROM base AS final
COPY --from=build /out/app /usr/local/bin/app
CMD [\"app\"]
",
        ),
        // A shell \"compiler\": emits the program it builds.
        ("gen.sh", "printf '#!/bin/sh\\necho built app\\n'\n"),
    ]);
    let dest = build_local(&store, ctx.path(), &["--target", "final", "-t", "final"]);
    let root = dest.path();
    assert!(!root.join("src").exists(), "build stage files stay out");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/base-marker")).unwrap(),
        "base\n"
    );
    assert_eq!(
        std::fs::metadata(root.join("usr/local/bin/app"))
            .unwrap()
            .mode()
            & 0o7777,
        0o755
    );
    assert_eq!(run_image(&store, &["final"]), "built app\n");
    // The build stage alone, by --target; the failing test stage is never built.
    let build = build_local(&store, ctx.path(), &["--target", "build"]);
    assert!(build.path().join("src/gen.sh").is_file());
    assert!(build.path().join("out/app").is_file());
    let failing = store.build(ctx.path(), &["--target", "test"]);
    assert!(!failing.status.success());
}

#[test]
fn deep_tree_copy_keeps_setuid_owners_and_hardlinks_and_no_devices() {
    let store = debian_store();
    let ctx = context(&[(
        "Dockerfile",
        "FROM debian:bookworm AS base
RUN ln /usr/bin/gpasswd /usr/bin/gpasswd-link
FROM debian:bookworm
COPY --from=base /usr /usr2
RUN ls -l /dev/null > /dev-null.txt && test -c /dev/null
",
    )]);
    let started = std::time::Instant::now();
    let dest = build_rootfs(&store, ctx.path(), &["-t", "deep"]);
    eprintln!("deep copy build took {:?}", started.elapsed());
    let root = dest.path();
    let md = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
    for usr in ["usr", "usr2"] {
        let passwd = md(&format!("{usr}/bin/passwd"));
        assert_eq!(
            (passwd.mode() & 0o7777, passwd.uid()),
            (0o4755, 0),
            "{usr}/bin/passwd"
        );
        // chage is setgid shadow (gid 42).
        let chage = md(&format!("{usr}/bin/chage"));
        assert_eq!(
            (chage.mode() & 0o7777, chage.gid()),
            (0o2755, 42),
            "{usr}/bin/chage"
        );
    }
    // The hardlink made in the base stage is still one inode after COPY --from.
    assert_eq!(
        md("usr2/bin/gpasswd").ino(),
        md("usr2/bin/gpasswd-link").ino()
    );
    assert!(md("usr2/lib/x86_64-linux-gnu").is_dir() || md("usr2/lib64").is_dir());
    let layers = layer_listings(&store, "deep");
    let copy_layer = &layers[layers.len() - 2];
    assert!(
        copy_layer.lines().any(
            |l| l.contains("usr2/bin/gpasswd-link link to usr2/bin/gpasswd")
                || l.contains("usr2/bin/gpasswd link to usr2/bin/gpasswd-link")
        ),
        "the copy layer holds a hardlink"
    );
    let run_layer = layers.last().unwrap();
    assert!(run_layer.contains(" dev-null.txt"), "{run_layer}");
    assert!(
        !run_layer.lines().any(|l| l.contains(" dev/")),
        "a RUN layer holds no device nodes:\n{run_layer}"
    );
}

/// Every entry below `root` as "type mode uid:gid size mtime-seconds link-target", by path.
fn tree_listing(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut listing = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let md = entry.path().symlink_metadata().unwrap();
            let ft = md.file_type();
            let (kind, size, target) = if ft.is_dir() {
                stack.push(entry.path());
                ('d', 0, String::new())
            } else if ft.is_symlink() {
                let target = std::fs::read_link(entry.path()).unwrap();
                ('l', 0, target.display().to_string())
            } else {
                ('f', md.size(), String::new())
            };
            let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
            listing.insert(
                rel,
                // Without mtimes: layer tars keep whole seconds and the rootfs tar rounds them.
                format!(
                    "{kind} {:o} {}:{} {size} {target}",
                    md.mode() & 0o7777,
                    md.uid(),
                    md.gid(),
                ),
            );
        }
    }
    listing
}

#[test]
fn apt_purge_image_unpacked_by_umoci_equals_the_rootfs_export() {
    if !archive_reachable() {
        eprintln!("skipped: deb.debian.org:80 is unreachable, apt-get cannot run in a build");
        return;
    }
    let store = debian_store();
    // A layer that removes what the one below installed: files, directories and the
    // symlink farm in /etc/ssl/certs go away as whiteouts.
    let ctx = context(&[(
        "Dockerfile",
        "FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates
RUN apt-get purge -y --auto-remove curl && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
",
    )]);
    let dest = build_rootfs(&store, ctx.path(), &["-t", "purged"]);
    assert!(!dest.path().join("usr/bin/curl").exists());
    assert!(!dest.path().join("usr/share/doc/curl").exists());
    assert!(dest
        .path()
        .join("etc/ssl/certs/ca-certificates.crt")
        .is_file());

    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("image.tar");
    ok(&store.run(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "purged",
    ]));
    let layout = work.path().join("oci");
    untar_into(&archive, &layout);
    let rootfs = umoci_unpack(&layout, &work.path().join("bundle"));
    let exported = tree_listing(dest.path());
    let unpacked = tree_listing(&rootfs);
    let differences: Vec<String> = exported
        .iter()
        .filter(|(path, entry)| unpacked.get(*path) != Some(entry))
        .map(|(path, entry)| format!("{}: {entry} vs {:?}", path.display(), unpacked.get(path)))
        .chain(
            unpacked
                .keys()
                .filter(|path| !exported.contains_key(*path))
                .map(|path| format!("{}: only in the image", path.display())),
        )
        .collect();
    assert!(
        differences.is_empty(),
        "{} differences, first: {:#?}",
        differences.len(),
        &differences[..differences.len().min(10)]
    );
}

#[test]
fn gcc_static_build_stage_into_scratch_final_stage() {
    if !archive_reachable() {
        eprintln!("skipped: deb.debian.org:80 is unreachable, apt-get cannot run in a build");
        return;
    }
    let store = debian_store();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM debian:bookworm AS build
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\
    rm -f /etc/apt/apt.conf.d/docker-clean && apt-get update \\
    && apt-get install -y --no-install-recommends gcc libc6-dev
WORKDIR /src
COPY hello.c .
RUN gcc -static -O2 -o /hello hello.c
FROM scratch
COPY --from=build /hello /hello
ENTRYPOINT [\"/hello\"]
",
        ),
        (
            "hello.c",
            "#include <stdio.h>\nint main(int argc, char **argv) {\n  printf(\"hi %s\\n\", argc > 1 ? argv[1] : \"world\");\n  return 0;\n}\n",
        ),
    ]);
    let started = std::time::Instant::now();
    let dest = build_local(&store, ctx.path(), &["-t", "hello"]);
    eprintln!("gcc build took {:?}", started.elapsed());
    let names: Vec<_> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["hello"], "the final stage holds only the binary");
    assert_eq!(run_image(&store, &["hello"]), "hi world\n");
    assert_eq!(run_image(&store, &["hello", "there"]), "hi there\n");
    let layers = layer_listings(&store, "hello");
    assert_eq!(layers.len(), 1);
    assert!(layers[0].contains(" hello\n"), "{}", layers[0]);
}

#[test]
fn copy_onto_a_symlinked_file_writes_through_the_link_like_a_plain_copy() {
    let store = debian_store();
    // debootstrap's /etc/localtime links to /usr/share/zoneinfo/Etc/UTC. BuildKit resolves
    // the destination through the link, so the copy made on an empty tree must not be
    // stacked over the base (which would replace the link with a file).
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM debian:bookworm\nCOPY zone /etc/localtime\n",
        ),
        ("zone", "my zone\n"),
    ]);
    let dest = build_local(&store, ctx.path(), &[]);
    let link = dest.path().join("etc/localtime");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(
        std::fs::read_to_string(dest.path().join("usr/share/zoneinfo/Etc/UTC")).unwrap(),
        "my zone\n"
    );
}
