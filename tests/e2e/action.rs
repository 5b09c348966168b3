//! The GitHub Action (action.yml, action/index.js) run under `node` the way the runner runs
//! it: inputs as INPUT_* variables, outputs read back from $GITHUB_OUTPUT, the job summary
//! from $GITHUB_STEP_SUMMARY; it builds, pushes to a real registry and exports a type=gha
//! cache to the test cache service with the runner's ACTIONS_* variables.

use crate::common::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

/// `node action/index.js` with the given inputs, the runner's files, and builder on PATH.
pub(crate) fn run_action(
    store: &Store,
    runner: &Path,
    inputs: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Output {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("action/index.js"))
        .env("PATH", path)
        .env("BUILDER_ROOT", store.root())
        .env("GITHUB_OUTPUT", runner.join("output"))
        .env("GITHUB_STEP_SUMMARY", runner.join("summary"))
        .env("RUNNER_TEMP", runner)
        .envs(env.iter().copied());
    for (name, value) in inputs {
        cmd.env(format!("INPUT_{}", name.to_uppercase()), value);
    }
    cmd.output().unwrap()
}

/// Parses `name<<DELIM\nvalue\nDELIM` blocks of $GITHUB_OUTPUT.
pub(crate) fn outputs(file: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = HashMap::new();
    let mut lines = text.lines();
    while let Some(head) = lines.next() {
        let (name, delim) = head.split_once("<<").expect("name<<DELIM");
        let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delim).collect();
        out.insert(name.to_string(), value.join("\n"));
    }
    out
}

/// The registry's digest for a tag (what a pull by tag resolves to).
fn registry_digest(registry: &Registry, repo_tag: &str) -> String {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let url = format!("http://{}/v2/{repo}/manifests/{tag}", registry.addr);
    let accept = "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";
    let out = Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-D", "-", "-H", accept, &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", stderr(&out));
    stdout(&out)
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("docker-content-digest:")
                .map(|v| v.trim().to_string())
        })
        .expect("Docker-Content-Digest header")
}

#[test]
fn action_builds_pushes_caches_and_writes_outputs_and_summary() {
    let registry = Registry::start();
    let cache = crate::common::gha_server::GhaServer::start();
    let store = Store::with_busybox();
    let runner = tempfile::tempdir().unwrap();
    let ctx = context(&[("Dockerfile", "FROM busybox\nARG A\nRUN echo $A > /a\n")]);
    let tags = format!("{0}/act/app:1\n{0}/act/app:2", registry.addr);
    let out = run_action(
        &store,
        runner.path(),
        &[
            ("context", ctx.path().to_str().unwrap()),
            ("tags", &tags),
            ("push", "true"),
            ("build-args", "A=from-action"),
            ("cache-to", "type=gha,mode=max"),
            ("sbom", "true"),
        ],
        &[
            ("ACTIONS_RESULTS_URL", &cache.url),
            ("ACTIONS_RUNTIME_TOKEN", &cache.token),
        ],
    );
    assert!(
        out.status.success(),
        "action: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let log = stdout(&out);
    assert!(log.contains("[command]builder build"), "{log}");
    assert!(log.contains("RUN echo $A > /a"), "{log}");

    let outputs = outputs(&runner.path().join("output"));
    let digest = &outputs["digest"];
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{outputs:?}"
    );
    assert_eq!(registry_digest(&registry, "act/app:1"), *digest);
    assert_eq!(registry_digest(&registry, "act/app:2"), *digest);
    let metadata: serde_json::Value = serde_json::from_str(&outputs["metadata"]).unwrap();
    assert_eq!(metadata["containerimage.digest"], digest.as_str());
    assert!(outputs["imageid"].starts_with("sha256:"));

    let summary = std::fs::read_to_string(runner.path().join("summary")).unwrap();
    assert!(summary.contains("builder build succeeded"), "{summary}");
    assert!(
        summary.contains("| Step | Status | Duration |"),
        "{summary}"
    );
    assert!(summary.contains("RUN echo $A > /a | done |"), "{summary}");
    // The runner's cache variables reached builder: the scope is the first image's name.
    let scope = format!("builder-index-1-{}/act/app#", registry.addr);
    assert!(
        cache.keys().iter().any(|k| k.starts_with(&scope)),
        "{:?}",
        cache.keys()
    );
    // The action's temporary files are gone.
    let left: Vec<_> = std::fs::read_dir(runner.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn bad_input_fails_the_step_with_an_error_annotation() {
    let store = Store::new();
    let runner = tempfile::tempdir().unwrap();
    let out = run_action(&store, runner.path(), &[("push", "maybe")], &[]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("::error::input push: \"maybe\" is not true or false"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn version_input_installs_the_release_binary_into_the_tool_cache() {
    let store = Store::with_busybox();
    let runner = tempfile::tempdir().unwrap();
    let releases = tempfile::tempdir().unwrap();
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    std::fs::create_dir_all(releases.path().join("v9.9.9")).unwrap();
    std::os::unix::fs::symlink(
        BIN,
        releases.path().join(format!("v9.9.9/builder-linux-{arch}")),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(releases.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_listener(&format!("127.0.0.1:{port}"));
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN true\n")]);
    let tool_cache = runner.path().join("tools");
    let out = run_action(
        &store,
        runner.path(),
        &[
            ("context", ctx.path().to_str().unwrap()),
            ("version", "v9.9.9"),
        ],
        &[
            ("PATH", "/usr/bin:/bin"),
            ("BUILDER_RELEASE_URL", &format!("http://127.0.0.1:{port}")),
            ("RUNNER_TOOL_CACHE", tool_cache.to_str().unwrap()),
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "action: {}", stdout(&out));
    let installed = tool_cache.join("builder/9.9.9/builder");
    assert!(stdout(&out).contains(&format!("[command]{} build", installed.display())));
    assert_eq!(
        std::fs::metadata(&installed).unwrap().len(),
        std::fs::metadata(BIN).unwrap().len()
    );
}

#[test]
fn load_input_puts_the_image_into_docker() {
    let store = Store::with_busybox();
    let runner = tempfile::tempdir().unwrap();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo loaded > /l\n")]);
    let st = Command::new("bash")
        .arg(repo().join("scripts/start-dockerd.sh"))
        .status()
        .unwrap();
    assert!(st.success(), "start-dockerd.sh failed");
    let tag = format!("builder-action-load:{}", std::process::id());
    let out = run_action(
        &store,
        runner.path(),
        &[
            ("context", ctx.path().to_str().unwrap()),
            ("tags", &tag),
            ("load", "true"),
        ],
        &[],
    );
    assert!(out.status.success(), "action: {}", stdout(&out));
    let run = Command::new("docker")
        .args(["run", "--rm", "--network", "host", &tag, "cat", "/l"])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    assert_eq!(stdout(&run), "loaded\n", "{}", stderr(&run));
}
