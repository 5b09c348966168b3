//! `builder run`: a container from a stored image, through the build executor.

use anyhow::{anyhow, bail, Context as _, Result};
use solver::graph::{Definition, Op, Vertex};
use solver::{Ref, Solver, SolverConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Remove the container's filesystem when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Set an environment variable, KEY=VALUE.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// User to run as (name, uid, uid:gid).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Network: host (default) or none.
    #[arg(long, default_value = "host")]
    pub network: String,
    /// Platform of the image to run, from a multi-platform image (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Run with every capability, no seccomp filter, no masked paths and a writable /sys.
    #[arg(long)]
    pub privileged: bool,
    /// Add a capability (NET_ADMIN, CAP_NET_ADMIN or ALL) to Docker's default set.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a capability (or ALL) from Docker's default set.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// seccomp=FILE|unconfined, no-new-privileges[=true|false].
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Maximum number of tasks in the container (zero or -1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Image name or digest.
    pub image: String,
    /// Command (replaces the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The confinement asked for by `--privileged`, `--cap-add/--cap-drop` and `--security-opt`.
fn security_of(args: &RunArgs) -> Result<executor::Security> {
    let mut security = executor::Security {
        privileged: args.privileged,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        ..Default::default()
    };
    // Checked here so that a typo is a flag error, not a container setup error.
    executor::resolve_caps(false, &security.cap_add, &security.cap_drop)?;
    for opt in &args.security_opt {
        let (key, value) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match (key, value) {
            ("seccomp", "unconfined") => security.seccomp = executor::Seccomp::Unconfined,
            ("seccomp", "") => bail!("--security-opt seccomp needs a file or unconfined"),
            ("seccomp", file) => {
                let json = std::fs::read_to_string(file)
                    .with_context(|| format!("--security-opt seccomp={file}"))?;
                security.seccomp = executor::Seccomp::Profile(json);
            }
            ("no-new-privileges", "" | "true") => security.no_new_privileges = true,
            ("no-new-privileges", "false") => security.no_new_privileges = false,
            _ => bail!(
                "--security-opt {opt:?}: supported are seccomp=FILE, seccomp=unconfined and no-new-privileges"
            ),
        }
    }
    Ok(security)
}

pub async fn run(root: &Path, args: RunArgs) -> Result<i32> {
    let security = security_of(&args)?;
    let network = match args.network.as_str() {
        "host" | "default" => executor::Network::Host,
        "none" => executor::Network::None,
        other => bail!("--network {other:?}: supported values are host and none"),
    };
    let solver = Arc::new(Solver::new(SolverConfig {
        root: root.to_path_buf(),
        executor: executor::Executor::current_exe()?,
        locals: HashMap::new(),
        no_cache: false,
        progress: solver::progress::Progress::discard(),
        exec: Default::default(),
        layer_export: Default::default(),
    })?);
    let target = solver
        .images
        .resolve(&args.image)?
        .ok_or_else(|| anyhow!("no such image: {} (see `builder images`)", args.image))?;
    let platform = crate::platforms::run_platform(args.platform.as_deref())?;
    let (manifest, _, config) = solver.images.load_image(&target, &platform)?;
    crate::platforms::check_image_platform(
        &args.image,
        &config,
        &platform,
        args.platform.is_some(),
    )?;
    let reference = exporter::reference::Reference::parse(&args.image)
        .map(|r| exporter::reference::Reference { digest: None, ..r }.full_name())
        .unwrap_or(args.image.clone());
    let def = Definition {
        vertices: vec![Vertex {
            op: Op::Image {
                reference: format!("{reference}@{}", manifest.digest),
                platform: config.platform().to_string(),
            },
            inputs: vec![],
            name: "image".into(),
            ignore_cache: false,
        }],
        output: Some(0),
    };
    let cancel = executor::CancelToken::new();
    let solved = solver
        .solve(&def, &cancel)
        .await
        .map_err(|e| anyhow!("preparing {}: {e}", args.image))?;
    let parent = match &solved.output {
        Ref::Snapshot(s) => Some(s.clone()),
        _ => None,
    };

    let c = &config.config;
    let mut argv: Vec<String> = match &args.entrypoint {
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.clone()],
        None => c.entrypoint.clone().unwrap_or_default(),
    };
    if args.command.is_empty() {
        if args.entrypoint.is_none() {
            argv.extend(c.cmd.clone().unwrap_or_default());
        }
    } else {
        argv.extend(args.command.clone());
    }
    if argv.is_empty() {
        bail!("no command specified: the image has no ENTRYPOINT or CMD; give one after the image name");
    }
    let mut env = c.env.clone();
    for kv in &args.env {
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), std::env::var(kv).unwrap_or_default()),
        };
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
        env.push(format!("{k}={v}"));
    }

    let key = format!(
        "container-{}-{}",
        std::process::id(),
        solver::progress::now() as u64
    );
    let mounts = solver.snapshots.prepare(&key, parent.as_deref())?;
    let spec = executor::ExecSpec {
        rootfs: solver::solve::rootfs_mounts(&mounts),
        args: argv,
        env,
        cwd: args
            .workdir
            .clone()
            .or_else(|| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: args
            .user
            .clone()
            .or_else(|| c.user.clone())
            .unwrap_or_default(),
        hostname: key.chars().rev().take(12).collect(),
        network,
        stdio: executor::Stdio::Inherit,
        readonly_rootfs: args.read_only,
        security,
        resources: executor::CgroupSpec {
            pids_limit: args.pids_limit,
            ..Default::default()
        },
        ..Default::default()
    };
    let exec = executor::Executor::current_exe()?;
    let run_cancel = cancel.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            run_cancel.cancel();
        }
    });
    let result = tokio::task::spawn_blocking(move || exec.run(&spec, &cancel, &mut |_, _| {}))
        .await
        .context("container task")?;
    ctrl_c.abort();
    // Without a container registry (`builder ps`) there is nothing that could
    // reuse a stopped container yet, so its filesystem is always removed.
    let _ = args.rm;
    solver.snapshots.remove(&key)?;
    match result {
        Ok(code) => Ok(code),
        Err(executor::ExecError::Setup(msg)) => {
            eprintln!("error: {msg}");
            Ok(127)
        }
        Err(e) => Err(anyhow!("{e}")),
    }
}
