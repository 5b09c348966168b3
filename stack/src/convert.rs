//! A Compose service as a runtime [`ContainerSpec`].

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use compose::model::{Service, ServiceNetwork, ServiceVolume};
use runtime::{ContainerSpec, MountSpec};

use crate::{labels, Stack};

/// What varies between the containers of one service.
pub struct SpecContext<'a> {
    pub stack: &'a Stack,
    pub service: &'a str,
    pub number: u32,
    pub config_hash: &'a str,
    /// A one-off `run` container (its own name, no aliases).
    pub oneoff: bool,
}

/// docker compose `run`: stdin attached in the foreground (its end closes the container's)
/// and a terminal when this process's stdin is one, unless `-T`.
pub fn one_off_stdio(
    base: runtime::StdioConfig,
    detach: bool,
    no_tty: bool,
) -> runtime::StdioConfig {
    use std::io::IsTerminal;
    runtime::StdioConfig {
        stdin_open: base.stdin_open || !detach,
        stdin_once: !detach,
        tty: !no_tty && (base.tty || (!detach && std::io::stdin().is_terminal())),
        init: base.init,
    }
}

/// The container spec of one replica of a service.
pub fn service_spec(cx: &SpecContext) -> Result<ContainerSpec> {
    let s = &cx.stack.model.services[cx.service];
    let at = |what: &str| format!("service {:?}: {what}", cx.service);
    let mut endpoints = networks_of(cx, s);
    let primary = endpoints.remove(0);
    let (memory, memory_swap) = runtime::memory_limits(limit_memory(s).as_deref(), None)
        .with_context(|| at("deploy.resources.limits.memory"))?;
    let mut security = executor::Security {
        cap_add: s.cap_add.clone(),
        cap_drop: s.cap_drop.clone(),
        ..Default::default()
    };
    runtime::apply_security_opts(&mut security, &s.security_opt)
        .with_context(|| at("security_opt"))?;
    let limits = s.deploy.as_ref().and_then(|d| d.resources.limits.as_ref());
    Ok(ContainerSpec {
        name: Some(if cx.oneoff {
            format!("{}-{}-run-{}", cx.stack.name, cx.service, &runtime_suffix())
        } else {
            cx.stack.container_name(cx.service, cx.number)
        }),
        entrypoint: s.entrypoint.clone(),
        command: s.command.clone(),
        env: environment(cx.stack, s).with_context(|| at("env_file"))?,
        user: s.user.clone(),
        workdir: s.working_dir.clone(),
        hostname: s.hostname.clone(),
        network_mode: primary.network,
        network_aliases: primary.aliases,
        ipv4_address: primary.ipv4_address,
        extra_networks: endpoints,
        extra_hosts: extra_hosts(s).with_context(|| at("extra_hosts"))?,
        dns: vec![],
        ports: if cx.oneoff {
            vec![]
        } else {
            ports(s).with_context(|| at("ports"))?
        },
        publish_all: false,
        mounts: mounts(cx.stack, s).with_context(|| at("volumes"))?,
        limits: runtime::Limits {
            memory,
            memory_swap,
            cpus: limits.and_then(|l| l.cpus.as_ref()).and_then(number),
            pids_limit: limits.and_then(|l| l.pids),
            ..Default::default()
        },
        rlimits: ulimits(s).with_context(|| at("ulimits"))?,
        restart: runtime::RestartPolicy::parse(s.restart.as_deref().unwrap_or("no"))
            .with_context(|| at("restart"))?,
        auto_remove: false,
        labels: container_labels(cx, s),
        stop_signal: s.stop_signal.clone(),
        stop_timeout: stop_timeout(s).with_context(|| at("stop_grace_period"))?,
        log: log_options(s).with_context(|| at("logging"))?,
        health: health(s).with_context(|| at("healthcheck"))?,
        read_only: s.read_only.unwrap_or(false),
        security,
        stdio: runtime::StdioConfig {
            init: s.init == Some(true),
            tty: s.tty == Some(true),
            stdin_open: s.stdin_open == Some(true),
            stdin_once: false,
        },
    })
}

fn runtime_suffix() -> String {
    format!(
        "{:x}",
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0))
    )
}

fn limit_memory(s: &Service) -> Option<String> {
    s.deploy
        .as_ref()
        .and_then(|d| d.resources.limits.as_ref())
        .and_then(|l| l.memory.clone())
}

fn number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn container_labels(cx: &SpecContext, s: &Service) -> BTreeMap<String, String> {
    let mut l = s.labels.clone();
    l.insert(labels::PROJECT.into(), cx.stack.name.clone());
    l.insert(labels::SERVICE.into(), cx.service.into());
    l.insert(labels::CONTAINER_NUMBER.into(), cx.number.to_string());
    l.insert(labels::CONFIG_HASH.into(), cx.config_hash.into());
    l.insert(
        labels::ONEOFF.into(),
        if cx.oneoff { "True" } else { "False" }.into(),
    );
    l.insert(
        labels::WORKING_DIR.into(),
        cx.stack.dir.display().to_string(),
    );
    l
}

/// The networks of a container, primary first (a `network_mode` as the only entry, with
/// `service:S` as `container:PROJECT-S-1`). The primary network is the one of highest
/// `priority`, then by name, as docker compose orders them. A one-off `run` container gets
/// no aliases and no static address.
pub(crate) fn networks_of(cx: &SpecContext, s: &Service) -> Vec<runtime::Endpoint> {
    if let Some(mode) = &s.network_mode {
        let network = match mode.split_once(':') {
            Some(("service", other)) => format!("container:{}", cx.stack.container_name(other, 1)),
            _ => mode.clone(),
        };
        return vec![runtime::Endpoint {
            network,
            ..Default::default()
        }];
    }
    let mut entries: Vec<(String, ServiceNetwork)> = s
        .networks
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect();
    if entries.is_empty() {
        entries.push(("default".into(), ServiceNetwork::default()));
    }
    entries.sort_by_key(|(key, n)| (std::cmp::Reverse(n.priority.unwrap_or(0)), key.clone()));
    entries
        .into_iter()
        .map(|(key, n)| {
            let mut aliases = Vec::new();
            if !cx.oneoff {
                aliases.push(cx.service.to_string());
                aliases.extend(n.aliases);
            }
            runtime::Endpoint {
                network: cx.stack.network_name(&key),
                aliases,
                ipv4_address: n.ipv4_address.filter(|_| !cx.oneoff),
            }
        })
        .collect()
}

/// `env_file` entries (in order, relative to the project), then `environment`.
fn environment(stack: &Stack, s: &Service) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for file in &s.env_file {
        let path = stack.dir.join(&file.path);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(_) if !file.required => continue,
            Err(e) => return Err(anyhow!("{}: {e}", path.display())),
        };
        let vars = compose::dotenv::parse(&text, &|k| std::env::var(k).ok())
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        env.extend(vars);
    }
    for (k, v) in &s.environment {
        match v {
            Some(v) => env.push((k.clone(), v.clone())),
            None => {
                if let Ok(v) = std::env::var(k) {
                    env.push((k.clone(), v));
                }
            }
        }
    }
    Ok(env)
}

fn extra_hosts(s: &Service) -> Result<Vec<(String, String)>> {
    let entries: Vec<String> = match &s.extra_hosts {
        None => vec![],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(|s| s.replacen('=', ":", 1)))
            .collect(),
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
            .collect(),
        Some(other) => bail!("unexpected {other}"),
    };
    runtime::parse_extra_hosts(&entries)
}

fn ports(s: &Service) -> Result<Vec<runtime::PortMapping>> {
    s.ports
        .iter()
        .map(|p| {
            let published = p.published.clone().unwrap_or_default();
            let ip = p.host_ip.clone().unwrap_or_default();
            let spec = match (ip.as_str(), published.as_str()) {
                ("", "") => format!("{}", p.target),
                ("", hp) => format!("{hp}:{}", p.target),
                (ip, hp) => format!("{ip}:{hp}:{}", p.target),
            };
            let proto = if p.protocol.is_empty() {
                "tcp"
            } else {
                &p.protocol
            };
            runtime::PortMapping::parse_range(&format!("{spec}/{proto}"))
        })
        .collect::<Result<Vec<_>>>()
        .map(|lists| lists.concat())
}

fn mounts(stack: &Stack, s: &Service) -> Result<Vec<MountSpec>> {
    let mut out: Vec<MountSpec> = s
        .volumes
        .iter()
        .map(|v| volume_mount(stack, v))
        .collect::<Result<_>>()?;
    if let Some(tmpfs) = &s.tmpfs {
        let list: Vec<String> = match tmpfs {
            serde_json::Value::String(t) => vec![t.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            other => bail!("tmpfs: unexpected {other}"),
        };
        for t in list {
            out.push(MountSpec::parse_tmpfs_flag(&t)?);
        }
    }
    for (kind, refs, default_dir) in [
        ("secrets", &s.secrets, "/run/secrets/"),
        ("configs", &s.configs, "/"),
    ] {
        for r in refs {
            out.push(file_object_mount(stack, kind, r, default_dir)?);
        }
    }
    Ok(out)
}

fn volume_mount(stack: &Stack, v: &ServiceVolume) -> Result<MountSpec> {
    let source = v.source.clone().unwrap_or_default();
    let (kind, source, options) = match v.kind.as_str() {
        "volume" if source.is_empty() => ("volume", String::new(), vec![]),
        "volume" => ("volume", stack.volume_name(&source), vec![]),
        "bind" => {
            let path = stack.dir.join(&source);
            if !path.exists() && v.bind.as_ref().is_none_or(|b| b.create_host_path) {
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
            }
            ("bind", path.display().to_string(), vec![])
        }
        "tmpfs" => {
            let mut opts = vec![];
            if let Some(t) = &v.tmpfs {
                if let Some(size) = t.size {
                    opts.push(format!("size={size}"));
                }
                if let Some(mode) = t.mode {
                    opts.push(format!("mode={mode:o}"));
                }
            }
            ("tmpfs", String::new(), opts)
        }
        other => bail!("volume type {other:?} is not supported"),
    };
    Ok(MountSpec {
        kind: kind.into(),
        source,
        target: v.target.clone(),
        readonly: v.read_only,
        options,
    })
}

/// A secret (at `/run/secrets/NAME`) or config (at `/NAME`) from a file, bound read-only.
fn file_object_mount(
    stack: &Stack,
    kind: &str,
    reference: &serde_json::Value,
    default_dir: &str,
) -> Result<MountSpec> {
    let (source, target) = match reference {
        serde_json::Value::String(s) => (s.clone(), None),
        v => (
            v.get("source")
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_string(),
            v.get("target").and_then(|s| s.as_str()).map(String::from),
        ),
    };
    let objects = if kind == "secrets" {
        &stack.model.secrets
    } else {
        &stack.model.configs
    };
    let object = objects
        .get(&source)
        .ok_or_else(|| anyhow!("{kind}: {source:?} is not defined at the top level"))?;
    let file = object
        .file
        .as_ref()
        .ok_or_else(|| anyhow!("{kind}: {source:?}: only file-based {kind} are supported"))?;
    let target = match target {
        Some(t) if t.starts_with('/') => t,
        Some(t) => format!("{default_dir}{t}"),
        None => format!("{default_dir}{source}"),
    };
    Ok(MountSpec {
        kind: "bind".into(),
        source: stack.dir.join(file).display().to_string(),
        target,
        readonly: true,
        options: vec![],
    })
}

fn ulimits(s: &Service) -> Result<Vec<executor::Rlimit>> {
    s.ulimits
        .iter()
        .map(|(name, v)| {
            let (soft, hard) = match v {
                serde_json::Value::Object(m) => (
                    m.get("soft").and_then(|x| x.as_i64()),
                    m.get("hard").and_then(|x| x.as_i64()),
                ),
                v => (v.as_i64(), v.as_i64()),
            };
            let (Some(soft), Some(hard)) = (soft, hard) else {
                bail!("{name}: want a number or {{soft, hard}}");
            };
            Ok(executor::Rlimit {
                name: name.clone(),
                soft,
                hard,
            })
        })
        .collect()
}

fn stop_timeout(s: &Service) -> Result<u32> {
    match &s.stop_grace_period {
        None => Ok(10),
        Some(text) => compose::model::parse_duration(text)
            .map(|d| d.as_secs_f64().ceil() as u32)
            .ok_or_else(|| anyhow!("{text:?} is not a duration")),
    }
}

fn log_options(s: &Service) -> Result<runtime::LogOptions> {
    let Some(logging) = &s.logging else {
        return Ok(Default::default());
    };
    if let Some(d) = logging.driver.as_deref().filter(|d| *d != "json-file") {
        bail!("log driver {d:?}: only json-file is supported");
    }
    let opts: Vec<String> = logging
        .options
        .iter()
        .map(|(k, v)| format!("{k}={}", v.clone().unwrap_or_default()))
        .collect();
    runtime::LogOptions::parse(&opts)
}

fn health(s: &Service) -> Result<runtime::HealthOverride> {
    let Some(h) = &s.healthcheck else {
        return Ok(Default::default());
    };
    let nanos = |t: &Option<String>| -> Result<Option<u64>> {
        t.as_ref()
            .map(|t| {
                compose::model::parse_duration(t)
                    .map(|d| d.as_nanos() as u64)
                    .ok_or_else(|| anyhow!("{t:?} is not a duration"))
            })
            .transpose()
    };
    let test = match &h.test {
        None => None,
        Some(serde_json::Value::String(cmd)) => Some(vec!["CMD-SHELL".into(), cmd.clone()]),
        Some(serde_json::Value::Array(a)) => Some(
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| anyhow!("test: want strings"))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(other) => bail!("test: unexpected {other}"),
    };
    let disable = h.disable
        || test
            .as_ref()
            .is_some_and(|t| t.first().is_some_and(|k| k == "NONE"));
    Ok(runtime::HealthOverride {
        disable,
        test: if disable { None } else { test },
        interval: nanos(&h.interval)?,
        timeout: nanos(&h.timeout)?,
        start_period: nanos(&h.start_period)?,
        retries: h.retries.map(|r| r as u32),
    })
}
