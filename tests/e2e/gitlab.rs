//! The GitLab CI/CD component (templates/builder.yml) and its example: both parse as YAML,
//! the component has a `spec: inputs` document and a job document, and its script, with the
//! inputs interpolated as GitLab does, is valid bash that logs in with CI_REGISTRY*, builds,
//! and pushes the image and its registry cache to a real registry.

use crate::common::*;
use std::path::Path;
use std::process::Command;

/// Loads the template with PyYAML, checks its shape and prints the job script with the
/// `$[[ inputs.NAME ]]` placeholders replaced (given values, else the spec's defaults).
const INTERPOLATE: &str = r#"
import json, re, sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
assert len(docs) == 2, len(docs)
inputs = docs[0]["spec"]["inputs"]
for name in ["context", "dockerfile", "image", "tags", "push", "cache", "platforms"]:
    assert name in inputs, name
jobs = docs[1]
assert list(jobs) == ["builder-build"], list(jobs)
given = json.loads(sys.argv[2])
def value(m):
    name = m.group(1)
    v = given.get(name, inputs[name].get("default"))
    return str(v).lower() if isinstance(v, bool) else str(v)
script = "\n".join(jobs["builder-build"]["script"])
print(re.sub(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]", value, script))
"#;

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn interpolated_script(inputs: &serde_json::Value) -> String {
    let out = Command::new(python())
        .args(["-c", INTERPOLATE])
        .arg(repo().join("templates/builder.yml"))
        .arg(inputs.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "template: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn example_parses_and_includes_the_component() {
    let check = "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); \
                 inc = d['include'][0]; assert inc['component'].endswith('/builder@main'); \
                 assert set(inc['inputs']) <= {'context','dockerfile','image','tags','push','cache','platforms'}";
    let out = Command::new(python())
        .args(["-c", check])
        .arg(repo().join("examples/.gitlab-ci.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn component_script_is_bash_that_logs_in_builds_and_pushes() {
    let registry = Registry::start();
    let store = Store::with_busybox();
    let ctx = context(&[(
        "sub/Containerfile",
        "FROM busybox\nRUN echo gitlab > /from\n",
    )]);
    let image = format!("{}/group/app", registry.addr);
    let inputs = serde_json::json!({
        "context": ctx.path(),
        "dockerfile": "sub/Containerfile",
        "image": image,
        "tags": "t1,t2",
    });
    let script = interpolated_script(&inputs);
    let file = ctx.path().join("job.sh");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}\n{script}",
        stderr(&syntax)
    );

    let docker_config = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let out = Command::new("bash")
        .arg(&file)
        .env(
            "PATH",
            format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("BUILDER_ROOT", store.root())
        .env("DOCKER_CONFIG", docker_config.path())
        .env("CI_REGISTRY", &registry.addr)
        .env("CI_REGISTRY_USER", "gitlab-ci-token")
        .env("CI_REGISTRY_PASSWORD", "job-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "job: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let saved = std::fs::read_to_string(docker_config.path().join("config.json")).unwrap();
    assert!(saved.contains(&registry.addr), "not logged in: {saved}");
    for tag in ["t1", "t2", "buildcache"] {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{image}:{tag}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{tag} not pushed: {}", stderr(&out));
    }
}

/// GitLab's docker executor runs the job in a container without privileges: the component's
/// script, run there with the builder binary, detects it, builds in chroot mode (a RUN that
/// chowns) and pushes the image and its cache.
#[test]
fn component_script_passes_in_an_unprivileged_container() {
    use crate::unprivileged::{debian_image, libseccomp, push_base, run_ok};
    let image = debian_image();
    let registry = Registry::start();
    let base = push_base(&registry);
    let dockerfile = format!("FROM {base}\nRUN echo gitlab > /from && chown 1000:1000 /from\n");
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let target = format!("{}/group/app", registry.addr);
    let inputs = serde_json::json!({ "context": "/ctx", "image": target, "tags": "t1" });
    std::fs::write(ctx.path().join("job.sh"), interpolated_script(&inputs)).unwrap();
    let lib = libseccomp();
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "host"])
        .arg("-v")
        .arg(format!("{BIN}:/usr/local/bin/builder:ro"))
        .arg("-v")
        .arg(format!("{}:{}:ro", lib.display(), lib.display()))
        .arg("-v")
        .arg(format!("{}:/ctx:ro", ctx.path().display()))
        .args([
            "-e",
            "BUILDER_ROOT=/tmp/builder-root",
            "-e",
            "DOCKER_CONFIG=/tmp/docker",
        ])
        .args(["-e", &format!("CI_REGISTRY={}", registry.addr)])
        .args([
            "-e",
            "CI_REGISTRY_USER=gitlab-ci-token",
            "-e",
            "CI_REGISTRY_PASSWORD=t",
        ])
        .arg(&image)
        .args(["bash", "/ctx/job.sh"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "job: {}{err}", stdout(&out));
    assert!(err.contains("using --isolation=chroot"), "{err}");
    for tag in ["t1", "buildcache"] {
        let reference = format!("docker://{target}:{tag}");
        run_ok(
            Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &reference]),
            &format!("{tag} pushed"),
        );
    }
}
