//! `builder compose up/down/ps/logs/...`: flags read into `stack::Command`; images come
//! through the build engine (`stack::images::EngineImages`).

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

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
        /// Don't give the command this terminal (by default it gets it when stdin is one).
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
        /// Don't give the container a terminal (by default it gets one when stdin is one).
        #[arg(short = 'T')]
        no_tty: bool,
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
    let images = stack::images::EngineImages::new(root)?;
    stack::verbs::run(&stack, &images, command)
}
