//! A service mapped to a container spec: names, labels, ports, environment, mounts, secrets,
//! health and stop settings; dependency order and selection. No containers are started.

use std::collections::BTreeMap;

fn stack(files: &[(&str, &str)]) -> (tempfile::TempDir, stack::Stack) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let opts = compose::Options {
        files: vec![],
        stdin: None,
        project_name: Some("demo".into()),
        profiles: vec![],
        env_files: vec![],
        working_dir: dir.path().to_path_buf(),
        environ: Default::default(),
    };
    let project = compose::load(&opts).unwrap();
    let stack = stack::Stack::new(&dir.path().join("root"), &project).unwrap();
    (dir, stack)
}

const FILE: &str = r#"
services:
  web:
    image: busybox
    ports: ["127.0.0.1:8080:80", "53/udp"]
    env_file: app.env
    environment: {A: from-environment}
    volumes: [data:/data, "./site:/site:ro", {type: tmpfs, target: /cache}]
    secrets: [token]
    stop_grace_period: 1m30s
    stop_signal: SIGQUIT
    healthcheck: {test: "wget -q localhost", interval: 2s, retries: 5}
    depends_on: {db: {condition: service_healthy}}
    networks: {back: {aliases: [www]}}
  db:
    image: busybox
  lone:
    image: busybox
    network_mode: service:db
networks: {back: {}}
volumes: {data: {}}
secrets: {token: {file: ./token.txt}}
"#;

#[test]
fn a_service_becomes_a_container_spec() {
    let (_dir, stack) = stack(&[
        ("compose.yaml", FILE),
        ("app.env", "A=from-file\nB=file-only\n"),
    ]);
    let cx = stack::SpecContext {
        stack: &stack,
        service: "web",
        number: 2,
        config_hash: "h",
        oneoff: false,
    };
    let spec = stack::service_spec(&cx).unwrap();
    assert_eq!(spec.name.as_deref(), Some("demo-web-2"));
    assert_eq!(spec.network_mode, "demo_back");
    assert_eq!(spec.network_aliases, ["web", "www"]);
    let ports: Vec<(String, u16, u16, String)> = spec
        .ports
        .iter()
        .map(|p| {
            (
                p.host_ip.clone(),
                p.host_port,
                p.container_port,
                p.protocol.clone(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("127.0.0.1".into(), 8080, 80, "tcp".into()),
            ("".into(), 0, 53, "udp".into())
        ]
    );
    // environment wins over env_file, which comes first.
    let env: BTreeMap<_, _> = spec.env.iter().cloned().collect();
    assert_eq!(env["A"], "from-environment");
    assert_eq!(env["B"], "file-only");
    let mounts: Vec<(&str, &str, &str, bool)> = spec
        .mounts
        .iter()
        .map(|m| {
            (
                m.kind.as_str(),
                m.source.as_str(),
                m.target.as_str(),
                m.readonly,
            )
        })
        .collect();
    assert_eq!(mounts[0], ("volume", "demo_data", "/data", false));
    assert_eq!(
        (mounts[1].0, mounts[1].2, mounts[1].3),
        ("bind", "/site", true)
    );
    assert_eq!((mounts[2].0, mounts[2].2), ("tmpfs", "/cache"));
    assert_eq!(
        (mounts[3].0, mounts[3].2, mounts[3].3),
        ("bind", "/run/secrets/token", true)
    );
    assert_eq!(spec.stop_timeout, 90);
    assert_eq!(spec.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(
        spec.health.test.as_deref(),
        Some(&["CMD-SHELL".to_string(), "wget -q localhost".into()][..])
    );
    assert_eq!(spec.health.interval, Some(2_000_000_000));
    assert_eq!(spec.health.retries, Some(5));
    assert_eq!(spec.labels["com.docker.compose.project"], "demo");
    assert_eq!(spec.labels["com.docker.compose.service"], "web");
    assert_eq!(spec.labels["com.docker.compose.container-number"], "2");
    assert_eq!(spec.labels["com.docker.compose.config-hash"], "h");
    let lone = stack::SpecContext {
        service: "lone",
        number: 1,
        ..cx
    };
    assert_eq!(
        stack::service_spec(&lone).unwrap().network_mode,
        "container:demo-db-1"
    );
}

#[test]
fn dependencies_come_first_and_selection_pulls_them_in() {
    let (_dir, stack) = stack(&[("compose.yaml", FILE), ("app.env", "")]);
    let order = stack.order().unwrap();
    let pos = |s: &str| order.iter().position(|o| o == s).unwrap();
    assert!(pos("db") < pos("web"));
    assert_eq!(
        stack.selected(&["web".into()], false).unwrap(),
        ["db", "web"]
    );
    assert_eq!(stack.selected(&["web".into()], true).unwrap(), ["web"]);
    assert!(stack.selected(&["nope".into()], false).is_err());
}

#[test]
fn the_config_hash_follows_the_configuration_and_the_image() {
    let (_dir, stack) = stack(&[("compose.yaml", FILE), ("app.env", "")]);
    let web = &stack.service_json["web"];
    let db = &stack.service_json["db"];
    assert_eq!(
        stack::config_hash(web, "sha256:a"),
        stack::config_hash(web, "sha256:a")
    );
    assert_ne!(
        stack::config_hash(web, "sha256:a"),
        stack::config_hash(web, "sha256:b")
    );
    assert_ne!(
        stack::config_hash(web, "sha256:a"),
        stack::config_hash(db, "sha256:a")
    );
}

#[test]
fn a_service_on_several_networks_gets_one_endpoint_each_primary_first() {
    let file = r#"
services:
  api:
    image: busybox
    ports: [{target: 80, published: "8000-8002"}, "9000-9001:9000-9001/udp"]
    networks:
      back: {aliases: [db-client]}
      front: {aliases: [www], ipv4_address: 10.89.77.10, priority: 10}
networks: {back: {}, front: {ipam: {config: [{subnet: 10.89.77.0/24}]}}}
"#;
    let (_dir, stack) = stack(&[("compose.yaml", file)]);
    let cx = stack::SpecContext {
        stack: &stack,
        service: "api",
        number: 1,
        config_hash: "h",
        oneoff: false,
    };
    let spec = stack::service_spec(&cx).unwrap();
    // The highest priority is the primary network.
    assert_eq!(spec.network_mode, "demo_front");
    assert_eq!(spec.network_aliases, ["api", "www"]);
    assert_eq!(spec.ipv4_address.as_deref(), Some("10.89.77.10"));
    assert_eq!(spec.extra_networks.len(), 1);
    assert_eq!(spec.extra_networks[0].network, "demo_back");
    assert_eq!(spec.extra_networks[0].aliases, ["api", "db-client"]);
    let ports: Vec<(u16, u16, u16, &str)> = spec
        .ports
        .iter()
        .map(|p| {
            (
                p.host_port,
                p.host_port_end,
                p.container_port,
                p.protocol.as_str(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            (8000, 8002, 80, "tcp"),
            (9000, 0, 9000, "udp"),
            (9001, 0, 9001, "udp")
        ]
    );
    // A one-off `run` container takes neither the aliases nor the static address.
    let oneoff = stack::SpecContext { oneoff: true, ..cx };
    let spec = stack::service_spec(&oneoff).unwrap();
    assert_eq!(spec.ipv4_address, None);
    assert!(spec.network_aliases.is_empty());
    assert_eq!(
        stack
            .project
            .locate(&["services", "api", "networks", "front", "ipv4_address"]),
        "compose.yaml:8:31: services.api.networks.front.ipv4_address"
    );
}
