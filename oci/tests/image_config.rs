//! The config JSON uses docker's field names and omits empty fields.

use oci::{HealthConfig, ImageConfig};

#[test]
fn config_round_trips_with_docker_field_names() {
    let docker_json = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {
            "User": "app",
            "ExposedPorts": {"80/tcp": {}},
            "Env": ["PATH=/bin"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo hi"],
            "Volumes": {"/data": {}},
            "WorkingDir": "/srv",
            "Labels": {"a": "b"},
            "StopSignal": "SIGTERM",
            "ArgsEscaped": true,
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000i64, "Retries": 3, "StartInterval": 5},
            "OnBuild": ["RUN true"],
            "Shell": ["/bin/bash", "-c"]
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:00"]},
        "history": [{"created": "2024-01-02T03:04:05Z", "created_by": "x", "empty_layer": true}]
    });
    let config: ImageConfig = serde_json::from_value(docker_json.clone()).unwrap();
    assert_eq!(config.config.user.as_deref(), Some("app"));
    assert_eq!(
        config.config.healthcheck,
        Some(HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval: 30_000_000_000,
            retries: 3,
            start_interval: 5,
            ..Default::default()
        })
    );
    assert!(config.history[0].empty_layer);
    assert_eq!(serde_json::to_value(&config).unwrap(), docker_json);
}

#[test]
fn empty_fields_are_omitted() {
    let json = serde_json::to_value(ImageConfig::default()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}})
    );
}
