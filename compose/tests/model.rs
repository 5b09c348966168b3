//! The typed model and the dependency order, on the documented example stack.

use compose::model::{parse_duration, ComposeModel};
use std::path::Path;
use std::time::Duration;

fn load(dir: &Path) -> Result<compose::Project, compose::LoadError> {
    compose::load(&compose::Options {
        working_dir: dir.to_path_buf(),
        ..Default::default()
    })
}

#[test]
fn example_stack_is_typed_and_ordered() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/compose");
    let project = load(&dir).unwrap();
    assert_eq!(project.name, "demo");
    let model = ComposeModel::from_project(&project).unwrap();
    let web = &model.services["web"];
    assert_eq!(web.ports[0].target, 8000);
    assert_eq!(web.ports[0].published.as_deref(), Some("8080"));
    assert_eq!(web.depends_on["redis"].condition, "service_healthy");
    assert!(web.depends_on["redis"].required);
    let redis = &model.services["redis"];
    assert_eq!(redis.volumes[0].source.as_deref(), Some("redis-data"));
    assert_eq!(redis.healthcheck.as_ref().unwrap().retries, Some(15));
    assert_eq!(
        model.volumes["redis-data"].name.as_deref(),
        Some("demo_redis-data")
    );
    assert_eq!(model.replicas("web"), 1);
    assert_eq!(
        compose::graph::dependency_order(&project.model).unwrap(),
        ["redis", "web"]
    );
}

#[test]
fn cycles_and_durations() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  a: {image: x, depends_on: [c]}\n  b: {image: x, depends_on: [a]}\n  c: {image: x, depends_on: [b]}\n",
    )
    .unwrap();
    let e = load(dir.path()).unwrap_err().to_string();
    assert_eq!(e, "dependency cycle detected: a -> c -> b -> a");
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("soon"), None);
}

#[test]
fn override_files_reset_and_override_tags() {
    let dir = tempfile::tempdir().unwrap();
    let base = "services:\n  a:\n    image: x\n    ports: ['80:80']\n    environment: {A: '1', B: '2'}\n    command: [one]\n";
    let over = "services:\n  a:\n    ports: !reset []\n    environment: !override {C: '3'}\n    command: two words\n";
    std::fs::write(dir.path().join("compose.yaml"), base).unwrap();
    std::fs::write(dir.path().join("compose.override.yaml"), over).unwrap();
    let project = load(dir.path()).unwrap();
    let model = ComposeModel::from_project(&project).unwrap();
    let a = &model.services["a"];
    assert!(a.ports.is_empty(), "{:?}", a.ports);
    assert_eq!(a.environment.keys().collect::<Vec<_>>(), ["C"]);
    assert_eq!(
        a.command.as_deref(),
        Some(&["two".to_string(), "words".to_string()][..])
    );
}
