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
    /// `-t`: the process gets a terminal of the container's own, relayed to this process's
    /// (output arrives on stdout through the callback); otherwise output is piped to it.
    pub tty: bool,
    /// `-i`: this process's stdin reaches the process (otherwise it is empty); without a
    /// terminal it sees its end of file.
    pub stdin: bool,
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
        stdio: if request.tty {
            executor::Stdio::Terminal
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
    let mut executor = executor::Executor::current_exe()?.with_state_dir(container.dir.clone());
    // Kept until the process is gone: this terminal stays raw meanwhile.
    let _relay = if request.tty {
        let relay = crate::attach::TerminalRelay::start(request.stdin);
        executor = executor.with_terminal(relay.slot.clone());
        Some(relay)
    } else {
        None
    };
    if request.stdin && !request.tty {
        // A caller without stdin (fd 0 closed) gives the process an empty one.
        if let Ok(stdin) = std::os::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned() {
            executor = executor.with_stdin(stdin);
        }
    }
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

/// [`exec`] with the process's output written to this process's stdout and stderr.
pub fn exec_to_stdio(container: &Container, request: &ExecRequest) -> Result<i32> {
    use std::io::Write as _;
    let cancel = executor::CancelToken::new();
    exec(container, request, &cancel, &mut |stream, data| {
        let _ = match stream {
            executor::OutputStream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(data).and_then(|()| out.flush())
            }
            executor::OutputStream::Stderr => std::io::stderr().write_all(data),
        };
    })
}

/// docker compose's `exec`: stdin always passed on, a terminal unless `no_tty` (`-T`) or
/// this process's stdin is not one.
pub fn compose_exec_stdio(no_tty: bool) -> (bool, bool) {
    let on_terminal = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    (!no_tty && on_terminal, true)
}
