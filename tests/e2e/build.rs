//! End-to-end builds through the real binary: namespaces, overlay mounts, a
//! real registry, and archives checked by skopeo, umoci and tar.

use crate::common::*;
use std::process::Command;

/// Names of the RUN and COPY steps a build really ran (not cached), sorted.
fn steps_started(out: &std::process::Output) -> Vec<String> {
    let mut names: Vec<String> = events(out)
        .iter()
        .filter(|e| e["event"] == "started")
        .filter_map(|e| e["name"].as_str())
        .filter(|n| n.contains("RUN") || n.contains("COPY"))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn span(ev: &[serde_json::Value], needle: &str) -> (f64, f64) {
    let find = |kind: &str| {
        ev.iter()
            .find(|e| e["event"] == kind && e["name"].as_str().is_some_and(|n| n.contains(needle)))
            .and_then(|e| e["time"].as_f64())
            .unwrap_or_else(|| panic!("no {kind} event for {needle}"))
    };
    (find("started"), find("completed"))
}

#[test]
fn example_from_registry_builds_stages_concurrently_and_runs() {
    let reg = Registry::start();
    let pusher = Store::with_busybox();
    let remote = format!("{}/busybox:latest", reg.addr);
    assert!(pusher
        .run(&["tag", "busybox:latest", &remote])
        .status
        .success());
    let pushed = pusher.run(&["push", &remote]);
    assert!(pushed.status.success(), "push: {}", stderr(&pushed));

    let store = Store::new();
    let out_dir = tempfile::tempdir().unwrap();
    let oci = out_dir.path().join("hello-oci.tar");
    let docker = out_dir.path().join("hello-docker.tar");
    let base_arg = format!("BASE={}/busybox", reg.addr);
    let oci_out = format!("type=oci,dest={}", oci.display());
    let docker_out = format!("type=docker,dest={}", docker.display());
    let out = store.build(
        &repo().join("examples/hello"),
        &[
            "--build-arg",
            &base_arg,
            "-t",
            "hello",
            "-o",
            &oci_out,
            "-o",
            &docker_out,
        ],
    );
    assert!(out.status.success(), "build failed: {}", stderr(&out));

    // The two independent RUN steps overlapped in time.
    let ev = events(&out);
    let (a0, a1) = span(&ev, "echo \"Hello\"");
    let (b0, b1) = span(&ev, "echo \"builder\"");
    assert!(
        a0 < b1 && b0 < a1,
        "RUN steps did not overlap: {a0}-{a1} vs {b0}-{b1}"
    );

    let run = store.run(&["run", "--rm", "hello"]);
    assert_eq!(
        stdout(&run),
        "Hello, builder!\n",
        "stderr: {}",
        stderr(&run)
    );
    assert!(run.status.success());

    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", oci.display()))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "skopeo inspect: {}",
        stderr(&inspect)
    );
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 5, "{info}");

    let layout = out_dir.path().join("layout");
    untar_into(&oci, &layout);
    let rootfs = umoci_unpack(&layout, &out_dir.path().join("bundle"));
    let msg = std::fs::read_to_string(rootfs.join("msg/greeting.txt")).unwrap();
    assert_eq!(msg, "Hello\n");
    assert!(rootfs.join("usr/local/bin/message").exists());

    let copied = out_dir.path().join("copied");
    let copy = Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", docker.display()))
        .arg(format!("oci:{}:t", copied.display()))
        .output()
        .unwrap();
    assert!(copy.status.success(), "skopeo copy: {}", stderr(&copy));
}

const CACHE_DOCKERFILE: &str = "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy.txt\nCOPY b.txt /b.txt\nRUN echo done > /done\n";

#[test]
fn rebuilds_reuse_cache_by_content_not_mtime() {
    let store = Store::with_busybox();
    let ctx = context(&[
        ("Dockerfile", CACHE_DOCKERFILE),
        ("a.txt", "alpha\n"),
        ("b.txt", "beta\n"),
    ]);
    let first = store.build(ctx.path(), &["-t", "cached"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(steps_started(&first).len(), 4);

    let second = store.build(ctx.path(), &["-t", "cached"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let started = steps_started(&second);
    assert!(started.is_empty(), "second build ran {started:?}");
    assert!(
        stderr(&second).contains("(0 steps run"),
        "{}",
        stderr(&second)
    );

    // A new mtime with the same content keeps everything cached.
    assert!(Command::new("touch")
        .arg("-d")
        .arg("2001-01-01")
        .arg(ctx.path().join("a.txt"))
        .status()
        .unwrap()
        .success());
    let third = store.build(ctx.path(), &[]);
    assert!(third.status.success());
    assert!(
        stderr(&third).contains("(0 steps run"),
        "{}",
        stderr(&third)
    );

    // Changing b.txt re-runs exactly the steps after COPY b.txt.
    std::fs::write(ctx.path().join("b.txt"), "gamma\n").unwrap();
    let fourth = store.build(ctx.path(), &["-t", "cached"]);
    assert!(fourth.status.success(), "{}", stderr(&fourth));
    let started = steps_started(&fourth);
    assert_eq!(
        started,
        vec![
            "[4/5] COPY b.txt /b.txt".to_string(),
            "[5/5] RUN echo done > /done".to_string()
        ]
    );
    let run = store.run(&["run", "--rm", "cached", "cat", "/b.txt", "/copy.txt"]);
    assert_eq!(stdout(&run), "gamma\nalpha\n");
}

/// Builds a Dockerfile that must fail, checks the message, then checks that the
/// store still builds and that no image was tagged.
fn assert_fails(store: &Store, dockerfile: &str, files: &[(&str, &str)], expected: &[&str]) {
    let mut all = vec![("Dockerfile", dockerfile)];
    all.extend_from_slice(files);
    let ctx = context(&all);
    let out = store.build(ctx.path(), &["-t", "broken"]);
    assert!(!out.status.success(), "build of {dockerfile:?} should fail");
    let err = stderr(&out);
    for e in expected {
        assert!(err.contains(e), "expected {e:?} in error output:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let images = stdout(&store.run(&["images"]));
    assert!(
        !images.contains("broken"),
        "a failed build tagged an image:\n{images}"
    );
    let good = context(&[("Dockerfile", "FROM busybox\nRUN echo ok > /ok\n")]);
    let again = store.build(good.path(), &[]);
    assert!(
        again.status.success(),
        "store unusable after failure: {}",
        stderr(&again)
    );
}

#[test]
fn bad_input_gives_clear_errors_and_leaves_store_usable() {
    let store = Store::with_busybox();
    assert_fails(
        &store,
        "FROM busybox\nRUNN echo hi\n",
        &[],
        &[
            "Dockerfile:2:1",
            "unknown instruction: RUNN",
            "did you mean RUN",
        ],
    );
    assert_fails(&store, "RUN echo hi\n", &[], &["Dockerfile:1:1", "FROM"]);
    assert_fails(&store, "ARG X=1\n", &[], &["no FROM"]);
    assert_fails(
        &store,
        "FROM busybox AS builder\nRUN true\nFROM busybox\nCOPY --from=bulder /x /x\n",
        &[],
        &["Dockerfile:4", "bulder", "did you mean \"builder\""],
    );
    assert_fails(
        &store,
        "FROM busybox\nCOPY nothere.txt /\n",
        &[],
        &["Dockerfile:2", "nothere.txt", "not found"],
    );
    assert_fails(
        &store,
        "FROM 127.0.0.1:9/nothing:1\n",
        &[],
        &["Dockerfile:1", "127.0.0.1:9/nothing"],
    );
    assert_fails(
        &store,
        "FROM busybox\nRUN echo start\nRUN exit 3\n",
        &[],
        &["Dockerfile:3", "RUN exit 3", "exit code: 3"],
    );
    assert_fails(
        &store,
        "FROM busybox\nCMD [\"a\", [\"b\"]]\n",
        &[],
        &["Dockerfile:2"],
    );
}

#[test]
fn local_output_and_print_graph() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox AS unused\nRUN exit 1\nFROM busybox\nWORKDIR /app\nCOPY . .\nRUN echo built > out.txt\n"), ("src/main.c", "int main(){}\n")]);
    let graph = store.run(&["build", "--print=graph", ctx.path().to_str().unwrap()]);
    assert!(graph.status.success(), "{}", stderr(&graph));
    let g = stdout(&graph);
    assert!(
        g.contains("RUN echo built > out.txt") && !g.contains("exit 1"),
        "{g}"
    );

    let dest = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", dest.path().display());
    let out = store.build(ctx.path(), &["-o", &out_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dest.path().join("app/out.txt")).unwrap(),
        "built\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("app/src/main.c")).unwrap(),
        "int main(){}\n"
    );
    assert!(dest.path().join("bin/busybox").exists());
}

#[test]
fn killed_build_leaves_store_usable() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN sleep 30\n")]);
    let mut child = store
        .cmd()
        .arg("build")
        .arg("--progress=quiet")
        .arg(ctx.path())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(Command::new("kill")
        .arg("-9")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success());
    let _ = child.wait();

    let good = context(&[("Dockerfile", "FROM busybox\nRUN echo ok > /ok\n")]);
    let out = store.build(good.path(), &["-t", "after-kill"]);
    assert!(
        out.status.success(),
        "store unusable after kill -9: {}",
        stderr(&out)
    );
    let run = store.run(&["run", "--rm", "after-kill", "cat", "/ok"]);
    assert_eq!(stdout(&run), "ok\n");
    // The killed build's temporary snapshot was swept: only committed ones remain.
    let meta = std::fs::read_to_string(store.root().join("snapshots/metadata.json")).unwrap();
    assert!(
        !meta.contains("\"Active\""),
        "leftover active snapshot: {meta}"
    );
}

#[test]
fn dockerfile_outside_context_and_its_own_dockerignore() {
    let store = Store::with_busybox();
    let ctx = context(&[
        ("keep.md", "k\n"),
        ("docs/nested.md", "n\n"),
        ("secret.key", "s\n"),
        ("node_modules/a.js", "a\n"),
        ("node_modules/keep.js", "kj\n"),
    ]);
    let elsewhere = context(&[
        ("build.Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
        (
            "build.Dockerfile.dockerignore",
            "*.md\n!keep.md\nsecret.key\nnode_modules\n!node_modules/keep.js\n",
        ),
    ]);
    let dest = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", dest.path().display());
    let df = elsewhere.path().join("build.Dockerfile");
    let out = store.build(ctx.path(), &["-f", df.to_str().unwrap(), "-o", &out_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = dest.path().join("ctx");
    assert!(c.join("keep.md").exists());
    assert!(
        c.join("docs/nested.md").exists(),
        "*.md must only match at the root"
    );
    assert!(!c.join("secret.key").exists());
    assert!(!c.join("node_modules/a.js").exists());
    assert!(
        c.join("node_modules/keep.js").exists(),
        "a re-included child of an excluded dir must be copied"
    );
}

#[test]
fn a_rebuild_from_cache_gives_the_same_image_digest() {
    let store = Store::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\nENV K=v\nCMD [\"cat\", \"/b.txt\"]\n",
        ),
        ("a.txt", "one\n"),
    ]);
    let digest = |store: &Store| {
        let iid = tempfile::NamedTempFile::new().unwrap();
        let out = store.build(
            ctx.path(),
            &["-t", "app", "--iidfile", iid.path().to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read_to_string(iid.path()).unwrap()
    };
    let first = digest(&store);
    // Times in the config come from when each layer was made, so a cached rebuild (a second
    // later) reproduces the config and the manifest exactly, as with BuildKit.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(digest(&store), first);
    let inspect = store.run(&["inspect", "app"]);
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let history = config["Config"]["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["empty_layer"], true, "{history:?}");
    assert_eq!(config["Config"]["created"], last["created"]);

    std::fs::write(ctx.path().join("a.txt"), "two\n").unwrap();
    assert_ne!(digest(&store), first, "a changed step makes a new image");
}
