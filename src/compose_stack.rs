//! `builder compose up/down/ps/logs/...`: flags mapped onto the `stack` crate; images are
//! prepared, built and pulled here (through [`CliImages`]), since that is the CLI's pipeline.

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Args, Debug, serde::Serialize)]
pub struct UpArgs {
    /// Run containers in the background.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Build images before starting containers.
    #[arg(long)]
    build: bool,
    /// Don't build images, even when missing.
    #[arg(long = "no-build")]
    no_build: bool,
    /// Wait for services to be running (and healthy); implies -d.
    #[arg(long)]
    wait: bool,
    /// Seconds --wait waits.
    #[arg(long = "wait-timeout")]
    wait_timeout: Option<u64>,
    /// SERVICE=N replicas (repeatable).
    #[arg(long)]
    scale: Vec<String>,
    /// Recreate containers even when their configuration is unchanged.
    #[arg(long = "force-recreate")]
    force_recreate: bool,
    /// Don't start the named services' dependencies.
    #[arg(long = "no-deps")]
    no_deps: bool,
    /// Remove containers of services no longer in the file.
    #[arg(long = "remove-orphans")]
    remove_orphans: bool,
    /// Stop every container when one exits (foreground).
    #[arg(long = "abort-on-container-exit")]
    abort_on_container_exit: bool,
    /// Return this service's exit code (implies --abort-on-container-exit).
    #[arg(long = "exit-code-from")]
    exit_code_from: Option<String>,
    services: Vec<String>,
}

#[derive(Subcommand, Debug, serde::Serialize)]
pub enum StackCommand {
    /// Create and start the project's containers.
    Up(UpArgs),
    /// Stop and remove the project's containers and networks (-v: volumes too).
    Down {
        #[arg(short = 'v', long)]
        volumes: bool,
        /// Remove images: `all` or `local` (built ones).
        #[arg(long)]
        rmi: Option<String>,
        #[arg(long = "remove-orphans")]
        remove_orphans: bool,
        #[arg(short = 't', long)]
        timeout: Option<u32>,
    },
    /// List the project's containers.
    Ps {
        #[arg(short = 'a', long)]
        all: bool,
        #[arg(short = 'q', long)]
        quiet: bool,
        /// table or json.
        #[arg(long, default_value = "table")]
        format: String,
        services: Vec<String>,
    },
    /// Print the services' logs, prefixed by container.
    Logs {
        #[arg(short = 'f', long)]
        follow: bool,
        /// Lines from the end of each log.
        #[arg(long)]
        tail: Option<String>,
        #[arg(short = 't', long)]
        timestamps: bool,
        #[arg(long = "no-log-prefix")]
        no_log_prefix: bool,
        services: Vec<String>,
    },
    /// Run a command in a service's running container.
    Exec {
        /// Don't allocate a terminal (accepted; output is never a terminal here).
        #[arg(short = 'T')]
        no_tty: bool,
        #[arg(long, default_value_t = 1)]
        index: u32,
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        service: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Run a one-off command in a new container of a service.
    Run {
        #[arg(long)]
        rm: bool,
        #[arg(short = 'd', long)]
        detach: bool,
        service: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Start the services' existing containers.
    Start { services: Vec<String> },
    /// Stop the services' containers.
    Stop {
        #[arg(short = 't', long)]
        timeout: Option<u32>,
        services: Vec<String>,
    },
    /// Restart the services' containers.
    Restart {
        #[arg(short = 't', long)]
        timeout: Option<u32>,
        services: Vec<String>,
    },
    /// Send a signal to the services' containers.
    Kill {
        #[arg(short = 's', long, default_value = "SIGKILL")]
        signal: String,
        services: Vec<String>,
    },
    /// Remove stopped containers of the services.
    Rm {
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(short = 's', long)]
        stop: bool,
        #[arg(short = 'v', long)]
        volumes: bool,
        services: Vec<String>,
    },
    /// The processes of the services' containers.
    Top { services: Vec<String> },
    /// The host address of a service's published port.
    Port {
        #[arg(long, default_value_t = 1)]
        index: u32,
        service: String,
        private_port: String,
    },
    /// The images the project's containers use.
    Images,
    /// The projects with containers in the store.
    Ls {
        #[arg(short = 'a', long)]
        all: bool,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Wait for the services' containers to exit; prints their exit codes.
    Wait { services: Vec<String> },
    /// Pull the services' images.
    Pull { services: Vec<String> },
    /// Push the services' images.
    Push { services: Vec<String> },
    /// Build the services that have a `build:` section.
    Build { services: Vec<String> },
}

/// Images through the CLI's pipeline: the image store, `build` and `pull`.
struct CliImages {
    root: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// `builder build`'s flags, parsed as the command line would be.
#[derive(Parser)]
struct BuildCommandLine {
    #[command(flatten)]
    args: crate::build::BuildArgs,
}

impl stack::ImageProvider for CliImages {
    fn exists(&self, image: &str) -> bool {
        crate::cli::open_images(&self.root)
            .and_then(|s| Ok(s.resolve(image)?))
            .is_ok_and(|d| d.is_some())
    }

    fn build(&self, requests: &[stack::BuildRequest]) -> Result<()> {
        if requests.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = requests.iter().map(|r| r.service.as_str()).collect();
        eprintln!(" Building {}", names.join(", "));
        // Inline Dockerfiles live in temporary files until the build ends.
        let mut inline = Vec::new();
        let mut all = Vec::new();
        for r in requests {
            let (args, file) = build_args(r)?;
            all.push(args);
            inline.extend(file);
        }
        // One solve for every service: steps they share run once.
        let code = self.rt.block_on(crate::build::build_all(&self.root, all))?;
        if code != 0 {
            bail!("building {} failed (exit {code})", names.join(", "));
        }
        Ok(())
    }

    fn pull(&self, image: &str) -> Result<()> {
        let store = crate::cli::open_images(&self.root)?;
        match engine::image_command::pull(&store, image, None)? {
            0 => Ok(()),
            code => bail!("pulling {image} failed (exit {code})"),
        }
    }

    fn untag(&self, image: &str) -> Result<bool> {
        Ok(crate::cli::open_images(&self.root)?.untag(image)?)
    }

    fn prepare(&self, image: &str) -> Result<runtime::PreparedImage> {
        let snapshot = self
            .rt
            .block_on(engine::images::prepare(&self.root, image, None))?;
        Ok(crate::run::into_prepared(snapshot, image))
    }
}

/// A compose `build:` section as `builder build` flags (and the temporary file holding a
/// `dockerfile_inline`).
fn build_args(
    r: &stack::BuildRequest,
) -> Result<(crate::build::BuildArgs, Option<tempfile::NamedTempFile>)> {
    let b = &r.build;
    let fail = |what: &str| anyhow!("service {:?}: build.{what}", r.service);
    let mut argv = vec!["build".to_string(), "-t".into(), r.tag.clone()];
    let mut inline = None;
    if let Some(text) = &b.dockerfile_inline {
        let mut file = tempfile::NamedTempFile::new().context("dockerfile_inline")?;
        std::io::Write::write_all(&mut file, text.as_bytes()).context("dockerfile_inline")?;
        argv.extend(["-f".into(), file.path().display().to_string()]);
        inline = Some(file);
    } else if let Some(f) = &b.dockerfile {
        argv.extend([
            "-f".into(),
            Path::new(&b.context).join(f).display().to_string(),
        ]);
    }
    if let Some(t) = &b.target {
        argv.push(format!("--target={t}"));
    }
    for (k, v) in &b.args {
        argv.push("--build-arg".into());
        argv.push(match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        });
    }
    let pairs = |flag: &str, v: &Option<serde_json::Value>| -> Result<Vec<String>> {
        let items = key_values(v.as_ref()).ok_or_else(|| fail(flag))?;
        Ok(items
            .into_iter()
            .flat_map(|kv| [format!("--{flag}"), kv])
            .collect())
    };
    argv.extend(pairs("label", &b.labels)?);
    argv.extend(pairs("build-context", &b.additional_contexts)?);
    let flags = [
        ("tag", &b.tags),
        ("cache-from", &b.cache_from),
        ("cache-to", &b.cache_to),
    ];
    for (flag, values) in flags {
        argv.extend(values.iter().flat_map(|v| [format!("--{flag}"), v.clone()]));
    }
    if !b.platforms.is_empty() {
        argv.push(format!("--platform={}", b.platforms.join(",")));
    }
    if let Some(n) = &b.network {
        argv.push(format!("--network={n}"));
    }
    for ssh in ssh_specs(b.ssh.as_ref()).ok_or_else(|| fail("ssh"))? {
        argv.extend(["--ssh".into(), ssh]);
    }
    if !b.secrets.is_empty() {
        bail!(
            "service {:?}: build.secrets is not supported yet",
            r.service
        );
    }
    argv.push(b.context.clone());
    let args = BuildCommandLine::try_parse_from(&argv)
        .map(|c| c.args)
        .map_err(|e| anyhow!("service {:?}: build: {e}", r.service))?;
    Ok((args, inline))
}

/// A compose map (`{k: v}`) or list (`["k=v"]`) as `k=v` strings; `None` when malformed.
fn key_values(value: Option<&serde_json::Value>) -> Option<Vec<String>> {
    match value {
        None | Some(serde_json::Value::Null) => Some(vec![]),
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Some(format!("{k}={s}")),
                serde_json::Value::Null => Some(k.clone()),
                other => Some(format!("{k}={other}")),
            })
            .collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        Some(_) => None,
    }
}

/// `build.ssh`: `default`, a list of `id[=path]`, or a map of id to path.
fn ssh_specs(value: Option<&serde_json::Value>) -> Option<Vec<String>> {
    match value {
        Some(serde_json::Value::String(s)) => Some(vec![s.clone()]),
        other => key_values(other),
    }
}

pub fn run(opts: &compose::Options, root: PathBuf, command: stack::Command) -> Result<i32> {
    if let stack::Command::Ls { all, quiet } = command {
        return stack::verbs::ls(&root, all, quiet);
    }
    let project = compose::load(opts)?;
    for w in &project.warnings {
        eprintln!("WARN[0000] {w}");
    }
    let _store_lock = solver::gc::StoreLock::shared(&root, || {})?;
    let stack = stack::Stack::new(&root, &project)?;
    let images = CliImages {
        root,
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    stack::verbs::run(&stack, &images, command)
}
