//! Healthchecks: the monitor probes the running container with `exec` every interval and
//! records `starting` → `healthy`/`unhealthy` and the last five results, as docker does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::store::{Container, Status};

/// Results kept in `State.Health.Log`.
const KEPT_RESULTS: usize = 5;
/// Output kept per result, as docker's 4 KiB.
const MAX_OUTPUT: usize = 4096;

/// Docker's healthcheck settings; durations in nanoseconds, 0 meaning the default.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthConfig {
    /// `["CMD", args...]`, `["CMD-SHELL", command]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub retries: u32,
}

impl HealthConfig {
    /// The probe's argv, or None when the check is disabled.
    pub fn command(&self) -> Option<Vec<String>> {
        match self.test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
            Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
                Some(vec!["/bin/sh".into(), "-c".into(), rest.join(" ")])
            }
            _ => None,
        }
    }

    fn interval(&self) -> Duration {
        nanos_or(self.interval, 30)
    }
    fn timeout(&self) -> Duration {
        nanos_or(self.timeout, 30)
    }
    fn retries(&self) -> u32 {
        if self.retries == 0 {
            3
        } else {
            self.retries
        }
    }
}

fn nanos_or(ns: u64, default_secs: u64) -> Duration {
    if ns == 0 {
        Duration::from_secs(default_secs)
    } else {
        Duration::from_nanos(ns)
    }
}

/// Go-style durations as docker's flags take them: `500ms`, `2s`, `1m30s`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        bail!("invalid duration {s:?}");
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let n: f64 = number
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid duration {s:?}"))?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => bail!("invalid duration {s:?} (e.g. 500ms, 2s, 1m30s)"),
        };
        total += Duration::from_secs_f64(secs);
        rest = next;
    }
    Ok(total)
}

/// `State.Health`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<HealthResult>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// Starts probing in a thread of the monitor until `stop` is set; None without a healthcheck.
pub(crate) fn spawn_prober(
    container: &Container,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let config = container.config.health.clone()?;
    let command = config.command()?;
    let container = container.clone();
    let _ = container.update(|s| {
        s.health = Some(Health {
            status: "starting".into(),
            ..Default::default()
        })
    });
    Some(std::thread::spawn(move || {
        let began = Instant::now();
        while sleep_unless_stopped(config.interval(), &stop) {
            let result = probe(&container, &command, config.timeout());
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let in_start_period = began.elapsed() < Duration::from_nanos(config.start_period);
            let _ = container.update(|s| record(s, result, in_start_period, config.retries()));
        }
    }))
}

fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(duration));
    }
    !stop.load(Ordering::SeqCst)
}

fn probe(container: &Container, command: &[String], timeout: Duration) -> HealthResult {
    let start = crate::time::now_rfc3339();
    let cancel = executor::CancelToken::new();
    let timer_cancel = cancel.clone();
    let done = Arc::new(AtomicBool::new(false));
    let timer_done = done.clone();
    let timer = std::thread::spawn(move || {
        if sleep_unless_stopped(timeout, &timer_done) {
            timer_cancel.cancel();
        }
    });
    let mut output = Vec::new();
    let request = crate::exec::ExecRequest {
        args: command.to_vec(),
        ..Default::default()
    };
    let result = crate::exec::exec(container, &request, &cancel, &mut |_, data| {
        if output.len() < MAX_OUTPUT {
            output.extend_from_slice(&data[..data.len().min(MAX_OUTPUT - output.len())]);
        }
    });
    done.store(true, Ordering::SeqCst);
    let _ = timer.join();
    let (exit_code, text) = match result {
        Ok(code) => (code, String::from_utf8_lossy(&output).into_owned()),
        Err(_) if cancel.is_cancelled() => {
            (-1, format!("Health check exceeded timeout ({timeout:?})"))
        }
        Err(e) => (-1, format!("{e:#}")),
    };
    HealthResult {
        start,
        end: crate::time::now_rfc3339(),
        exit_code,
        output: text,
    }
}

fn record(state: &mut crate::State, result: HealthResult, in_start_period: bool, retries: u32) {
    if state.status != Status::Running {
        return;
    }
    let health = state.health.get_or_insert_with(Health::default);
    if result.exit_code == 0 {
        health.status = "healthy".into();
        health.failing_streak = 0;
    } else if !in_start_period {
        health.failing_streak += 1;
        if health.failing_streak >= retries {
            health.status = "unhealthy".into();
        }
    }
    health.log.push(result);
    let excess = health.log.len().saturating_sub(KEPT_RESULTS);
    health.log.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_commands_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5 parsecs").is_err());
        let shell = HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            ..Default::default()
        };
        assert_eq!(shell.command().unwrap(), vec!["/bin/sh", "-c", "true"]);
        let none = HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        assert!(none.command().is_none());
    }

    #[test]
    fn streaks_turn_unhealthy_and_keep_five_results() {
        let mut state = crate::State {
            status: Status::Running,
            ..Default::default()
        };
        let fail = || HealthResult {
            exit_code: 1,
            ..Default::default()
        };
        record(&mut state, fail(), true, 2);
        assert_eq!(
            state.health.as_ref().unwrap().failing_streak,
            0,
            "start period"
        );
        record(&mut state, fail(), false, 2);
        record(&mut state, fail(), false, 2);
        assert_eq!(state.health.as_ref().unwrap().status, "unhealthy");
        for _ in 0..4 {
            record(&mut state, HealthResult::default(), false, 2);
        }
        let health = state.health.unwrap();
        assert_eq!(health.status, "healthy");
        assert_eq!(health.log.len(), KEPT_RESULTS);
    }
}
