//! `exec`: another process in a running container, through the executor's enter mode.

use anyhow::{anyhow, bail, Result};

use crate::store::{Container, Status};

/// What to run in the container; empty fields take the container's settings.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// Extra `KEY=VALUE` entries, on top of the container's environment.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Inherit this process's stdin/stdout/stderr (`-i`/`-t`); otherwise stdin is empty and
    /// output is delivered to the callback.
    pub inherit_stdio: bool,
}

/// The executor spec for `request` in `container`, whose PID 1 is `pid`.
pub(crate) fn exec_spec(
    container: &Container,
    pid: u32,
    request: &ExecRequest,
) -> executor::ExecSpec {
    let base = &container.config.spec;
    let mut env = base.env.clone();
    for kv in &request.env {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    executor::ExecSpec {
        args: request.args.clone(),
        env,
        cwd: request.workdir.clone().unwrap_or_else(|| base.cwd.clone()),
        user: request.user.clone().unwrap_or_else(|| base.user.clone()),
        stdio: if request.inherit_stdio {
            executor::Stdio::Inherit
        } else {
            executor::Stdio::Piped
        },
        enter_pid: Some(pid),
        cgroup_paths: crate::cgroups::paths(container.id()),
        ..Default::default()
    }
}

/// Runs `request` in the running container; returns the exit code (126/127 when the program
/// cannot be started, as docker).
pub fn exec(
    container: &Container,
    request: &ExecRequest,
    cancel: &executor::CancelToken,
    on_output: &mut dyn FnMut(executor::OutputStream, &[u8]),
) -> Result<i32> {
    if request.args.is_empty() {
        bail!("exec needs a command to run");
    }
    let state = container.live_state()?;
    let pid = crate::procs::container_pid(&state)
        .filter(|_| state.status == Status::Running)
        .ok_or_else(|| anyhow!("container {} is not running", container.config.id))?;
    let spec = exec_spec(container, pid, request);
    let executor = executor::Executor::current_exe()?.with_state_dir(container.dir.clone());
    match executor.run(&spec, cancel, on_output) {
        Ok(code) => Ok(code),
        Err(executor::ExecError::Setup(message)) => Err(crate::ExitError {
            code: crate::monitor::setup_exit_code(&message),
            message,
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}
