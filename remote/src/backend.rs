//! What the server asks of the build engine: run one build described by a [`BuildJob`].
//! [`ProcessBackend`] runs it as `builder --root ROOT build ...` in a child process;
//! [`crate::inprocess::InProcessBackend`] runs it in the server's own process.

use anyhow::{Context as _, Result};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, watch};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One build with every path on the server: flags already checked, contexts uploaded.
#[derive(Clone, Debug, Default)]
pub struct BuildJob {
    /// `--name[=value]` flags that name no server path.
    pub flags: Vec<String>,
    /// `--output` values with the server's dest filled in.
    pub outputs: Vec<String>,
    pub iidfile: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    /// `--secret` values reading environment variables of `env`.
    pub secrets: Vec<String>,
    pub dockerfile: PathBuf,
    pub named_contexts: Vec<(String, PathBuf)>,
    pub context: PathBuf,
    /// Environment of the build: SOURCE_DATE_EPOCH, secrets' values, DOCKER_AUTH_CONFIG.
    pub env: Vec<(String, String)>,
    /// The `--secret` values by id, for a build in this process (held in memory only).
    pub provided_secrets: Vec<(String, Vec<u8>)>,
    /// `--ssh` agents: id and the socket relaying to the client's agent.
    pub ssh: Vec<(String, PathBuf)>,
    /// The contexts' gates while they are still being uploaded (none: already complete).
    pub uploads: Option<std::sync::Arc<crate::upload::Gates>>,
}

impl BuildJob {
    /// The job as `builder build` arguments.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = self.flags.clone();
        for o in &self.outputs {
            args.push(format!("--output={o}"));
        }
        if let Some(p) = &self.iidfile {
            args.push(format!("--iidfile={}", p.display()));
        }
        if let Some(p) = &self.metadata_file {
            args.push(format!("--metadata-file={}", p.display()));
        }
        for s in &self.secrets {
            args.push(format!("--secret={s}"));
        }
        for (id, socket) in &self.ssh {
            args.push(format!("--ssh={id}={}", socket.display()));
        }
        args.push(format!("--file={}", self.dockerfile.display()));
        for (name, dir) in &self.named_contexts {
            args.push(format!("--build-context={name}={}", dir.display()));
        }
        args.push(self.context.display().to_string());
        args
    }
}

pub enum BuildEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

pub trait BuildBackend: Send + Sync + 'static {
    /// Runs the build, sending its output as it comes; stops it when `cancel` turns true.
    /// Returns the exit code (0 for success).
    fn build(
        &self,
        job: BuildJob,
        events: mpsc::Sender<BuildEvent>,
        cancel: watch::Receiver<bool>,
    ) -> BoxFuture<'_, Result<i32>>;

    /// Removes build cache beyond `keep_storage` (e.g. "10GB").
    fn prune(&self, keep_storage: String) -> BoxFuture<'_, Result<()>>;
}

/// Runs `PROGRAM --root ROOT build ...` for each build.
pub struct ProcessBackend {
    pub program: PathBuf,
    pub root: PathBuf,
}

impl BuildBackend for ProcessBackend {
    fn build(
        &self,
        job: BuildJob,
        events: mpsc::Sender<BuildEvent>,
        cancel: watch::Receiver<bool>,
    ) -> BoxFuture<'_, Result<i32>> {
        Box::pin(async move {
            // The child reads the contexts as directories: they must be complete.
            if let Some(gates) = &job.uploads {
                gates.all_opened().await?;
            }
            let mut cmd = tokio::process::Command::new(&self.program);
            cmd.arg("--root")
                .arg(&self.root)
                .arg("build")
                .args(job.cli_args())
                .env_remove("BUILDER_HOST")
                .envs(job.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            // A server killed outright takes its builds with it: they cancel as on Ctrl-C.
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = cmd.spawn().context("starting the build")?;
            let out = pump(child.stdout.take(), events.clone(), BuildEvent::Stdout);
            let err = pump(child.stderr.take(), events, BuildEvent::Stderr);
            let status = wait_or_cancel(&mut child, cancel).await?;
            let _ = tokio::join!(out, err);
            Ok(status.code().unwrap_or(130))
        })
    }

    fn prune(&self, keep_storage: String) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let status = tokio::process::Command::new(&self.program)
                .arg("--root")
                .arg(&self.root)
                .args(["prune", "--force", "--keep-storage", &keep_storage])
                .stdout(Stdio::null())
                .status()
                .await?;
            anyhow::ensure!(status.success(), "prune exited with {status}");
            Ok(())
        })
    }
}

/// Waits for the child; on cancel sends it SIGINT (the build cancels its steps and cleans up,
/// as on Ctrl-C), and SIGKILL if it is still there 20 s later.
async fn wait_or_cancel(
    child: &mut tokio::process::Child,
    mut cancel: watch::Receiver<bool>,
) -> Result<std::process::ExitStatus> {
    tokio::select! {
        status = child.wait() => return Ok(status?),
        _ = cancel.wait_for(|c| *c) => {}
    }
    if let Some(pid) = child.id() {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).expect("pid > 0"),
            rustix::process::Signal::INT,
        );
    }
    match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
        Ok(status) => Ok(status?),
        Err(_) => {
            child.kill().await?;
            Ok(child.wait().await?)
        }
    }
}

fn pump(
    pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>,
    events: mpsc::Sender<BuildEvent>,
    wrap: fn(Vec<u8>) -> BuildEvent,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(mut pipe) = pipe else { return };
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A client gone stops the forwarding, not the reading (the child must not block).
                Ok(n) => {
                    let _ = events.send(wrap(buf[..n].to_vec())).await;
                }
            }
        }
    })
}
