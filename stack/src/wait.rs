//! Waiting on services: `depends_on` conditions and `up --wait`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use runtime::{Container, Status};

use crate::Stack;

const POLL: Duration = Duration::from_millis(25);

/// A dependency that will never be satisfied (exited, unhealthy, failed).
#[derive(Debug)]
pub struct DependencyError(pub String);

impl std::fmt::Display for DependencyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DependencyError {}

/// What a service must reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// Started (running, or already exited: `service_started`).
    Started,
    /// Running, and healthy when it has a healthcheck (`up --wait`).
    Ready,
    /// Healthy (`service_healthy`).
    Healthy,
    /// Exited with 0 (`service_completed_successfully`).
    Completed,
}

impl Goal {
    pub fn of_condition(condition: &str) -> Goal {
        match condition {
            "service_healthy" => Goal::Healthy,
            "service_completed_successfully" => Goal::Completed,
            _ => Goal::Started,
        }
    }
}

/// Whether one container reached `goal`: Ok(true) yes, Ok(false) not yet, Err never.
fn reached(c: &Container, goal: Goal) -> Result<bool> {
    let s = c.live_state()?;
    let name = &c.config.name;
    let health = s.health.as_ref().map(|h| h.status.as_str());
    let exited = matches!(s.status, Status::Exited | Status::Dead);
    match goal {
        Goal::Started => Ok(s.status != Status::Created),
        Goal::Completed if exited && s.exit_code == 0 => Ok(true),
        Goal::Completed if exited => fail(format!(
            "service {name} didn't complete successfully: exit {}",
            s.exit_code
        )),
        Goal::Completed => Ok(false),
        _ if health == Some("unhealthy") => fail(format!("container {name} is unhealthy")),
        _ if exited => fail(format!("container {name} exited ({})", s.exit_code)),
        Goal::Healthy if c.config.health.is_none() => fail(format!(
            "container {name} has no healthcheck (condition service_healthy)"
        )),
        Goal::Healthy => Ok(health == Some("healthy")),
        Goal::Ready => {
            Ok(s.status == Status::Running
                && (c.config.health.is_none() || health == Some("healthy")))
        }
    }
}

fn fail(message: String) -> Result<bool> {
    Err(DependencyError(format!("dependency failed to start: {message}")).into())
}

/// Waits until every container of `service` reached `goal`.
pub fn wait_service(
    stack: &Stack,
    service: &str,
    goal: Goal,
    deadline: Option<Instant>,
) -> Result<()> {
    loop {
        let containers = stack.service_containers(service)?;
        let mut all = true;
        for c in &containers {
            all &= reached(c, goal)?;
        }
        if all {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!("timeout waiting for service {service} to be {goal:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// `up --wait`: every service running (healthy if it has a healthcheck); a service others
/// wait on with `service_completed_successfully` must have exited 0 instead.
pub fn wait_ready(stack: &Stack, services: &[String], timeout: Option<Duration>) -> Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    for service in services {
        let one_shot = stack.model.services.values().any(|s| {
            s.depends_on
                .get(service)
                .is_some_and(|d| d.condition == "service_completed_successfully")
        });
        let goal = if one_shot {
            Goal::Completed
        } else {
            Goal::Ready
        };
        wait_service(stack, service, goal, deadline)?;
    }
    Ok(())
}
