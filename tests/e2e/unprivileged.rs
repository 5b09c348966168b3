//! Unprivileged CI mode: `builder build` inside a docker container run without privileges
//! (default capabilities, Docker's default seccomp profile), as GitLab's docker executor runs
//! jobs. The container is Debian (scripts/make-debian-rootfs.sh, `docker import`ed) with the
//! test's builder binary and libseccomp bound in; the base image and the result live in a
//! real docker-registry on a loopback port.

use crate::common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DOCKERFILE_BODY: &str = "\
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd \\
 && echo 'app:x:1000:' >> /etc/group \\
 && mkdir -p /home/app && echo owned > /home/app/data \\
 && chown -R app:app /home/app && rm /bin/vi
COPY note.txt /note.txt
USER app
RUN id -un > /home/app/whoami
";

pub(crate) fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// A Debian image in docker, imported once from the cached debootstrap tarball.
pub(crate) fn debian_image() -> String {
    run_ok(
        Command::new("bash").arg(repo().join("scripts/start-dockerd.sh")),
        "start-dockerd.sh",
    );
    let image = "builder-test-unpriv-debian:bookworm".to_string();
    let present = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .unwrap();
    if !present.status.success() {
        let made = run_ok(
            Command::new("bash").arg(repo().join("scripts/make-debian-rootfs.sh")),
            "make-debian-rootfs.sh",
        );
        let tarball = stdout(&made).trim().to_string();
        run_ok(
            Command::new("docker").args(["import", &tarball, &image]),
            "docker import",
        );
    }
    image
}

/// The host's libseccomp, which the builder binary links.
pub(crate) fn libseccomp() -> PathBuf {
    let ldd = run_ok(Command::new("ldd").arg(BIN), "ldd");
    let line = stdout(&ldd)
        .lines()
        .find(|l| l.contains("libseccomp"))
        .map(str::to_string)
        .expect("builder links libseccomp");
    let path = line.split("=>").nth(1).unwrap().split_whitespace().next();
    PathBuf::from(path.unwrap())
}

/// Runs `builder ARGS...` in an unprivileged container with `ctx` at /ctx.
fn builder_in_container(image: &str, ctx: &Path, args: &[&str]) -> Output {
    let lib = libseccomp();
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--network", "host"])
        .arg("-v")
        .arg(format!("{BIN}:/usr/local/bin/builder:ro"))
        .arg("-v")
        .arg(format!("{}:{}:ro", lib.display(), lib.display()))
        .arg("-v")
        .arg(format!("{}:/ctx:ro", ctx.display()))
        .arg(image)
        .arg("builder")
        .args(args);
    cmd.output().unwrap()
}

/// Pushes busybox to the registry as the build's base image; returns its reference.
pub(crate) fn push_base(registry: &Registry) -> String {
    let store = Store::with_busybox();
    let base = format!("{}/base/busybox:1", registry.addr);
    let tagged = store.run(&["tag", "busybox:latest", &base]);
    assert!(tagged.status.success(), "tag: {}", stderr(&tagged));
    let pushed = store.run(&["push", &base]);
    assert!(pushed.status.success(), "push: {}", stderr(&pushed));
    base
}

#[test]
fn build_in_an_unprivileged_container_chroots_and_pushes() {
    let image = debian_image();
    let registry = Registry::start();
    let base = push_base(&registry);
    let dockerfile = format!("FROM {base}\n{DOCKERFILE_BODY}");
    let ctx = context(&[("Dockerfile", &dockerfile), ("note.txt", "a note\n")]);
    let target = format!("{}/out/app:1", registry.addr);

    // No flag: the container's lack of namespaces is detected.
    let out = builder_in_container(
        &image,
        ctx.path(),
        &["build", "--progress=plain", "--push", "-t", &target, "/ctx"],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "build in container: {err}");
    assert!(err.contains("using --isolation=chroot"), "{err}");
    assert_eq!(
        err.matches("RUN steps are not isolated").count(),
        1,
        "warned once: {err}"
    );

    // From the host, with other tools: the pushed image has the step's owner and files.
    let layout = tempfile::tempdir().unwrap();
    let oci = layout.path().join("oci");
    run_ok(
        Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{target}"),
            &format!("oci:{}:latest", oci.display()),
        ]),
        "skopeo copy",
    );
    let rootfs = umoci_unpack(&oci, &layout.path().join("bundle"));
    let data = rootfs.join("home/app/data");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "owned\n");
    let md = std::fs::metadata(&data).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("home/app/whoami")).unwrap(),
        "app\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("note.txt")).unwrap(),
        "a note\n"
    );
    assert!(
        !rootfs.join("bin/vi").exists(),
        "the deletion reached the image"
    );
    assert!(rootfs.join("bin/sh").exists());
    // What the executor provided without mounts stays out of the layers.
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/hosts")).unwrap(),
        ""
    );
    assert!(!rootfs.join("dev/null").exists());

    // The pushed image as a base, pulled in another such container: its whiteout holds.
    let child =
        format!("FROM {target}\nRUN test ! -e /bin/vi && test -e /bin/sh && cat /home/app/data\n");
    let ctx = context(&[("Dockerfile", &child)]);
    let out = builder_in_container(&image, ctx.path(), &["build", "--progress=plain", "/ctx"]);
    assert!(
        out.status.success(),
        "build on the pushed image: {}",
        stderr(&out)
    );
}

#[test]
fn oci_isolation_in_an_unprivileged_container_fails_clearly() {
    let image = debian_image();
    let registry = Registry::start();
    let base = push_base(&registry);
    let dockerfile = format!("FROM {base}\n{DOCKERFILE_BODY}");
    let ctx = context(&[("Dockerfile", &dockerfile), ("note.txt", "a note\n")]);
    let out = builder_in_container(
        &image,
        ctx.path(),
        &["build", "--isolation=oci", "--progress=plain", "/ctx"],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(err.contains("build with --isolation=chroot"), "{err}");
    assert!(!err.contains("not isolated"), "{err}");
}

/// `--isolation=chroot` forced on a host where namespaces work: the same layers come out,
/// and a step cannot chroot again (the classic way out of a chroot needs CAP_SYS_CHROOT).
#[test]
fn forced_chroot_isolation_drops_sys_chroot_and_keeps_provided_files_out() {
    let store = Store::with_busybox();
    let dest = tempfile::tempdir().unwrap();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             RUN rm /bin/vi && echo kept > /kept && cat /etc/hosts > /hosts-seen \\\n\
              && if chroot / /bin/true 2>/dev/null; then echo yes; else echo no; fi > /chroot\n\
             COPY note /note\n",
        ),
        ("note", "copied\n"),
    ]);
    let out = store.build(
        ctx.path(),
        &[
            "--isolation=chroot",
            "-o",
            &format!("type=local,dest={}", dest.path().display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("RUN steps are not isolated"));
    let read = |p: &str| std::fs::read_to_string(dest.path().join(p)).unwrap();
    assert_eq!(read("chroot"), "no\n", "a step could chroot again");
    assert_eq!(read("kept"), "kept\n");
    assert!(read("hosts-seen").contains("localhost"));
    assert_eq!(read("etc/hosts"), "", "the provided /etc/hosts stays out");
    assert!(!dest.path().join("bin/vi").exists());
    assert!(!dest.path().join("dev/null").exists());
    assert_eq!(read("note"), "copied\n");
    // Views are copies; whatever was really mounted (a staging tmpfs) is gone again.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = store.root().to_string_lossy().to_string();
    assert!(!mounts.contains(&root), "{mounts}");
}

#[test]
fn chroot_isolation_refuses_mounts_and_network_namespaces_clearly() {
    let store = Store::with_busybox();
    for (step, expected) in [
        (
            "RUN --mount=type=tmpfs,target=/t true",
            "RUN --mount is not supported with --isolation=chroot",
        ),
        (
            "RUN --network=none true",
            "RUN --network=none) needs namespaces",
        ),
    ] {
        let ctx = context(&[("Dockerfile", &format!("FROM busybox\n{step}\n"))]);
        let out = store.build(ctx.path(), &["--isolation=chroot"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{step}: {err}");
        assert!(err.contains(expected), "{step}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// After a step, chroot isolation puts back `/etc/hosts` and removes its `/dev` nodes; a step
/// that turned `/etc` and `/dev` into links to a host directory must not make that cleanup
/// write or delete there.
#[test]
fn chroot_cleanup_never_follows_links_a_step_planted() {
    let store = Store::with_busybox();
    let host = tempfile::tempdir().unwrap();
    let h = host.path().display().to_string();
    std::fs::write(host.path().join("hosts"), "host file\n").unwrap();
    let mknod = Command::new("mknod")
        .arg(host.path().join("null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(mknod.success());
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM busybox\nRUN mv /etc /etc.moved && ln -s {h} /etc && rm -rf /dev && ln -s {h} /dev\n"
        ),
    )]);
    let out = store.build(ctx.path(), &["--isolation=chroot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(host.path().join("hosts")).unwrap(),
        "host file\n"
    );
    assert!(host.path().join("null").exists(), "a host node was removed");
}

/// The layers of one build are byte for byte the same under both isolations (times clamped to
/// SOURCE_DATE_EPOCH): the walked diff writes what overlay's upper dir holds, deletions and
/// owner changes included, and the same tar writer makes the layer.
#[test]
fn chroot_and_oci_isolation_give_the_same_layer_digests() {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\n\
             RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && mkdir -p /home/app \\\n\
              && echo d > /home/app/d && chown -R 1000:1000 /home/app && rm /bin/vi && touch /etc\n\
             COPY note /note\n",
        ),
        ("note", "n\n"),
    ]);
    let layers = |isolation: &str| -> Vec<serde_json::Value> {
        let store = Store::with_busybox();
        let out_dir = tempfile::tempdir().unwrap();
        let archive = out_dir.path().join("image.tar");
        let out = store
            .cmd()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress=quiet", "--isolation", isolation, "-o"])
            .arg(format!(
                "type=oci,dest={},rewrite-timestamp=true",
                archive.display()
            ))
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{isolation}: {}", stderr(&out));
        let layout = out_dir.path().join("layout");
        untar_into(&archive, &layout);
        let blob = |digest: &str| {
            let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(path).unwrap()).unwrap()
        };
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
        manifest["layers"].as_array().unwrap().clone()
    };
    let oci = layers("oci");
    assert_eq!(oci.len(), 3);
    assert_eq!(layers("chroot"), oci);
}

/// A storage root whose snapshots were made mountless (whiteouts as files) is refused by an
/// oci-isolated build, which would mount them with overlay and show the whiteouts as files.
#[test]
fn a_chroot_storage_root_is_refused_by_oci_isolation() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN rm /bin/vi\n")]);
    let chroot = store.build(ctx.path(), &["--isolation=chroot"]);
    assert!(chroot.status.success(), "{}", stderr(&chroot));
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN rm /bin/vi\nRUN true\n")]);
    let oci = store.build(ctx.path(), &["--isolation=oci"]);
    assert!(!oci.status.success());
    assert!(
        stderr(&oci).contains("use --isolation=chroot with this storage root"),
        "{}",
        stderr(&oci)
    );
}
