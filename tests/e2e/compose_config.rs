//! `builder compose config` on a small project that uses .env, profiles,
//! extends, include, anchors/merge keys and a multi-file merge; and its
//! errors, which name file:line:column.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_builder");

fn write(dir: &Path, name: &str, text: &str) {
    crate::common::write_fixture(dir, &[(name, text, 0o644)]);
}

fn compose(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("compose")
        .args(args)
        .current_dir(dir)
        .env_remove("COMPOSE_PROFILES")
        .env_remove("COMPOSE_PROJECT_NAME")
        .env_remove("WEB_PORT")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

const MAIN: &str = r#"
x-logging: &logging
  logging:
    driver: json-file
include:
  - lib/cache.yaml
services:
  base:
    image: busybox
    environment:
      FROM_BASE: "1"
    profiles: [never]
  web:
    <<: *logging
    extends: base
    profiles: []
    build: ./web
    ports: ["${WEB_PORT:-8080}:80"]
    environment:
      - GREETING=${GREETING}
    depends_on: [cache]
    volumes: [data:/data]
  debug:
    image: busybox
    profiles: [debug]
volumes:
  data:
"#;

const OVERRIDE: &str = r#"
services:
  web:
    ports: ["9443:443"]
    environment:
      EXTRA: "yes"
"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("My Project")
        .tempdir()
        .unwrap();
    write(dir.path(), "compose.yaml", MAIN);
    write(dir.path(), "compose.override.yaml", OVERRIDE);
    write(dir.path(), ".env", "GREETING=\"hello $$ world\"\n");
    write(dir.path(), "lib/cache.yaml", "services:\n  cache:\n    image: redis\n    build: ./ctx\n    healthcheck:\n      test: [CMD, redis-cli, ping]\n");
    dir
}

#[test]
fn config_normalises_a_composed_project() {
    let dir = project();
    let out = stdout(&compose(
        dir.path(),
        &[
            "-f",
            "compose.yaml",
            "-f",
            "compose.override.yaml",
            "config",
        ],
    ));
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase()
        .replace(' ', "");
    assert!(out.starts_with(&format!("name: {name}\n")), "{out}");
    // extends + anchors + the override file's environment merged as a map
    for line in [
        "      FROM_BASE: \"1\"",
        "      EXTRA: \"yes\"",
        "      GREETING: hello $ world",
        "      driver: json-file",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    // ports from both files, long form; depends_on long form; include brought `cache`
    assert!(
        out.contains("        target: 80\n        published: \"8080\"\n"),
        "{out}"
    );
    assert!(
        out.contains("        target: 443\n        published: \"9443\"\n"),
        "{out}"
    );
    assert!(
        out.contains("      cache:\n        condition: service_started\n        required: true\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("      context: {}/web\n", dir.path().display())),
        "{out}"
    );
    assert!(out.contains(&format!("    name: {name}_data\n")), "{out}");
    // an included file's relative paths are relative to that file
    assert!(
        out.contains(&format!(
            "      context: {}/lib/ctx\n",
            dir.path().display()
        )),
        "{out}"
    );
    // profiles: `base` (never) and `debug` are off
    assert!(
        !out.contains("  debug:") && !out.contains("  base:"),
        "{out}"
    );
}

#[test]
fn config_flags() {
    let dir = project();
    let services = stdout(&compose(
        dir.path(),
        &["--profile", "debug", "-p", "Demo!", "config", "--services"],
    ));
    assert_eq!(services, "cache\nweb\ndebug\n");
    let profiles = stdout(&compose(dir.path(), &["config", "--profiles"]));
    assert_eq!(profiles, "debug\nnever\n");
    let json = stdout(&compose(
        dir.path(),
        &["-p", "Demo!", "config", "--format", "json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["name"], "demo");
    assert_eq!(v["services"]["web"]["ports"][0]["published"], "8080");
    let with_env = Command::new(BIN)
        .args(["compose", "config", "--volumes"])
        .current_dir(dir.path())
        .env("COMPOSE_PROFILES", "debug")
        .output()
        .unwrap();
    assert_eq!(stdout(&with_env), "data\n");
    assert!(compose(dir.path(), &["config", "-q"]).stdout.is_empty());
}

#[test]
fn config_reads_stdin_and_env_file() {
    let dir = project();
    write(dir.path(), "other.env", "WEB_PORT=7000\n");
    let mut child = Command::new(BIN)
        .args([
            "compose",
            "-f",
            "-",
            "--env-file",
            "other.env",
            "config",
            "--format",
            "json",
        ])
        .current_dir(dir.path())
        .env_remove("WEB_PORT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"services:\n  s:\n    image: x\n    ports: ['${WEB_PORT}:1']\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"]["s"]["ports"][0]["published"], "7000");
}

fn error_of(dir: &Path, text: &str) -> String {
    write(dir, "compose.yaml", text);
    let o = compose(dir, &["config"]);
    assert!(!o.status.success());
    String::from_utf8(o.stderr).unwrap()
}

#[test]
fn errors_name_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let e = error_of(
        p,
        "services:\n  web:\n    image: x\n    ports:\n      - target: 80\n        bogus: 1\n",
    );
    assert!(
        e.contains(
            "compose.yaml:6:9: services.web.ports.0 additional properties 'bogus' not allowed"
        ),
        "{e}"
    );
    let e = error_of(p, "services:\n  web:\n    image: [x]\n");
    assert!(
        e.contains("compose.yaml:3:12: services.web.image must be a string"),
        "{e}"
    );
    let e = error_of(p, "services:\n  web:\n    image: ${IMG:?set IMG}\n");
    assert!(e.contains("compose.yaml:3:12: error while interpolating services.web.image: required variable IMG is missing a value: set IMG"), "{e}");
    let e = error_of(
        p,
        "services:\n  web:\n    image: x\n    ports:\n      - 80\n      - '99999'\n",
    );
    assert!(
        e.contains("compose.yaml:6:9: services.web.ports.1: Invalid containerPort: 99999"),
        "{e}"
    );
    let e = error_of(
        p,
        "services:\n  web:\n    image: x\n    volumes: ['/a::ro']\n",
    );
    assert!(e.contains("compose.yaml:4:15: services.web.volumes.0: invalid spec: /a::ro: empty section between colons"), "{e}");
    let e = error_of(p, "services:\n  web:\n    image: [x\n");
    assert!(e.contains("compose.yaml:4:"), "{e}");
    let e = error_of(p, "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n");
    assert!(e.contains("dependency cycle detected: a -> b -> a"), "{e}");
    let e = error_of(p, "services:\n  a:\n    image: x\n    image: y\n");
    assert!(
        e.contains("compose.yaml:4:5: mapping key \"image\" already defined"),
        "{e}"
    );
}

#[test]
fn discovery_prefers_compose_yaml_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "compose.yaml",
        "services:\n  a:\n    image: x\n",
    );
    write(
        dir.path(),
        "docker-compose.yml",
        "services:\n  b:\n    image: x\n",
    );
    let o = compose(dir.path(), &["config", "--services"]);
    assert_eq!(stdout(&o), "a\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("Found multiple config files"));
}
