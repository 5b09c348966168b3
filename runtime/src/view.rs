//! What `inspect` and `ps` show, shaped as docker's API objects so templates carry over.

use std::time::SystemTime;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::store::{Container, State, Status};

/// Docker's `docker inspect` object for one container.
pub fn inspect_json(container: &Container, state: &State) -> Value {
    let c = &container.config;
    let pid = crate::procs::container_pid(state).unwrap_or(0);
    let running = state.status == Status::Running;
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": c.spec.args.first().cloned().unwrap_or_default(),
        "Args": c.spec.args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": state.status.as_str(),
            "Running": running,
            "Paused": false,
            "Restarting": state.status == Status::Restarting,
            "OOMKilled": state.oom_killed,
            "Dead": state.status == Status::Dead,
            "Pid": if running { pid } else { 0 },
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": or_zero_time(&state.started_at),
            "FinishedAt": or_zero_time(&state.finished_at),
            "Health": state.health.as_ref().filter(|_| running || state.status == Status::Restarting),
        },
        "Image": c.image_id,
        "LogPath": container.log_path(),
        "Name": format!("/{}", c.name),
        "RestartCount": state.restart_count,
        "HostConfig": {
            "RestartPolicy": {
                "Name": c.restart.name(),
                "MaximumRetryCount": match c.restart {
                    crate::RestartPolicy::OnFailure { max_retries } => max_retries,
                    _ => 0,
                },
            },
            "AutoRemove": c.auto_remove,
            "LogConfig": {"Type": "json-file", "Config": log_config(c)},
            "ReadonlyRootfs": c.spec.readonly_rootfs,
            "NetworkMode": c.network_mode,
            "Memory": c.limits.memory.unwrap_or(0),
            "MemorySwap": c.limits.memory_swap.unwrap_or(0),
            "NanoCpus": c.limits.cpus.map_or(0, |n| (n * 1e9) as u64),
            "CpuShares": c.limits.cpu_shares.unwrap_or(0),
            "CpusetCpus": c.limits.cpuset_cpus.clone().unwrap_or_default(),
            "PidsLimit": c.limits.pids_limit,
            "Init": c.init,
        },
        "Config": {
            "Hostname": c.spec.hostname,
            "User": c.spec.user,
            "Env": c.spec.env,
            "Cmd": c.cmd,
            "Entrypoint": c.entrypoint,
            "Image": c.image,
            "WorkingDir": c.spec.cwd,
            "Labels": c.labels,
            "StopSignal": c.stop_signal,
            "StopTimeout": c.stop_timeout,
            "OpenStdin": c.stdin_open,
            "StdinOnce": c.stdin_once,
            "Tty": c.tty,
            "Healthcheck": c.health.as_ref().map(|h| json!({"Test": h.test, "Interval": h.interval,
                "Timeout": h.timeout, "StartPeriod": h.start_period, "Retries": h.retries})),
        },
        "NetworkSettings": network_settings(c, state),
    })
}

fn network_settings(c: &crate::Config, state: &State) -> Value {
    let mut ports = serde_json::Map::new();
    for p in &state.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let host_ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        let entry = json!({"HostIp": host_ip, "HostPort": p.host_port.to_string()});
        if let Some(list) = ports.entry(key).or_insert_with(|| json!([])).as_array_mut() {
            list.push(entry);
        }
    }
    let attached = state.attachments(c);
    let mut networks = serde_json::Map::new();
    for e in c.endpoints() {
        let a = attached.get(&e.network).cloned().unwrap_or_default();
        networks.insert(
            e.network.clone(),
            json!({
                "IPAddress": a.ip,
                "IPPrefixLen": a.prefix,
                "Gateway": a.gateway,
                "Aliases": e.aliases,
                "IPAMConfig": e.ipv4_address.as_ref().map(|ip| json!({"IPv4Address": ip})),
            }),
        );
    }
    // Docker fills the top-level fields from the default bridge only.
    let bridge = attached.get("bridge");
    json!({
        "IPAddress": bridge.map_or("", |a| a.ip.as_str()),
        "Gateway": bridge.map_or("", |a| if a.gateway.is_empty() { "10.88.0.1" } else { a.gateway.as_str() }),
        "Ports": ports,
        "Networks": networks,
    })
}

fn or_zero_time(t: &str) -> &str {
    if t.is_empty() {
        "0001-01-01T00:00:00Z"
    } else {
        t
    }
}

fn log_config(c: &crate::Config) -> Value {
    let mut map = serde_json::Map::new();
    if let Some(size) = c.log.max_size {
        map.insert("max-size".into(), json!(size.to_string()));
        map.insert("max-file".into(), json!(c.log.max_file.to_string()));
    }
    Value::Object(map)
}

/// `ps --filter` terms: all must match (several values of one key: any).
#[derive(Clone, Debug, Default)]
pub struct PsFilter {
    names: Vec<String>,
    statuses: Vec<String>,
    labels: Vec<(String, Option<String>)>,
    ids: Vec<String>,
}

impl PsFilter {
    pub fn parse(filters: &[String]) -> Result<Self> {
        let mut f = PsFilter::default();
        for filter in filters {
            let Some((key, value)) = filter.split_once('=') else {
                bail!("--filter {filter:?}: want KEY=VALUE (name=, status=, label=, id=)");
            };
            match key {
                "name" => f.names.push(value.trim_start_matches('/').into()),
                "id" => f.ids.push(value.into()),
                "status" => {
                    const KNOWN: [&str; 7] = [
                        "created",
                        "restarting",
                        "running",
                        "removing",
                        "paused",
                        "exited",
                        "dead",
                    ];
                    if !KNOWN.contains(&value) {
                        bail!(
                            "--filter {filter:?}: invalid status (want one of {})",
                            KNOWN.join(", ")
                        );
                    }
                    f.statuses.push(value.into())
                }
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.into(), Some(v.into())),
                    None => (value.into(), None),
                }),
                _ => bail!(
                    "--filter {filter:?}: unsupported filter {key:?} (name, status, label, id)"
                ),
            }
        }
        Ok(f)
    }

    /// Whether any status filter was given (it overrides `ps`'s running-only default).
    pub fn has_status(&self) -> bool {
        !self.statuses.is_empty()
    }

    pub fn matches(&self, c: &Container, state: &State) -> bool {
        // Docker's name filter is a substring (regexp) match.
        (self.names.is_empty()
            || self
                .names
                .iter()
                .any(|n| c.config.name.contains(n.as_str())))
            && (self.ids.is_empty() || self.ids.iter().any(|i| c.config.id.starts_with(i.as_str())))
            && (self.statuses.is_empty()
                || self.statuses.iter().any(|s| s == state.status.as_str()))
            && self
                .labels
                .iter()
                .all(|(k, v)| match (c.config.labels.get(k), v) {
                    (Some(have), Some(want)) => have == want,
                    (Some(_), None) => true,
                    (None, _) => false,
                })
    }
}

/// One `ps` row with docker's template field names (`.ID`, `.Image`, `.Command`, `.Status`...).
pub fn ps_rows(containers: &[(Container, State)]) -> Vec<Value> {
    let now = SystemTime::now();
    containers
        .iter()
        .map(|(c, s)| {
            let cfg = &c.config;
            let since = |t: &str| {
                crate::time::parse_rfc3339(t)
                    .and_then(|t| now.duration_since(t).ok())
                    .map(crate::time::human_duration)
                    .unwrap_or_default()
            };
            let status = match s.status {
                Status::Running => match &s.health {
                    Some(h) if h.status == "starting" => {
                        format!("Up {} (health: starting)", since(&s.started_at))
                    }
                    Some(h) => format!("Up {} ({})", since(&s.started_at), h.status),
                    None => format!("Up {}", since(&s.started_at)),
                },
                Status::Restarting => {
                    format!("Restarting ({}) {} ago", s.exit_code, since(&s.finished_at))
                }
                Status::Exited => format!("Exited ({}) {} ago", s.exit_code, since(&s.finished_at)),
                Status::Created => "Created".into(),
                Status::Removing => "Removal In Progress".into(),
                Status::Dead => "Dead".into(),
            };
            let labels: Vec<String> = cfg.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            json!({
                "ID": &cfg.id[..12],
                "Image": cfg.image,
                "Command": format!("\"{}\"", truncate(&cfg.spec.args.join(" "), 20)),
                "CreatedAt": cfg.created,
                "RunningFor": format!("{} ago", since(&cfg.created)),
                "Ports": s.ports.iter().map(|p| format!("{}:{}->{}/{}",
                    if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip }, p.host_port, p.container_port, p.protocol))
                    .collect::<Vec<_>>().join(", "),
                "State": s.status.as_str(),
                "Status": status,
                "Names": cfg.name,
                "Labels": labels.join(","),
            })
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max - 1).collect();
    format!("{cut}…")
}
