//! Container commands (`create`, `start`, `stop`, `ps`, `logs`, ...): flags read into
//! `runtime::command`'s typed commands; images prepared by the build engine.

use anyhow::Result;
use std::path::Path;

use crate::run::RunArgs;

#[derive(clap::Subcommand, serde::Serialize)]
pub enum ContainerCommand {
    /// Create a container without starting it.
    Create(Box<RunArgs>),
    /// Start stopped containers.
    Start {
        /// Attach to the container's output and wait for it.
        #[arg(short = 'a', long)]
        attach: bool,
        /// Attach stdin too (a container created with -i).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Keys that detach from a -i -t container and leave it running (ctrl-p,ctrl-q).
        #[arg(long)]
        detach_keys: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop running containers (stop signal, then SIGKILL after the timeout).
    Stop {
        /// Seconds to wait before killing.
        #[arg(short = 't', long = "time")]
        time: Option<u32>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop and start containers.
    Restart {
        #[arg(short = 't', long = "time")]
        time: Option<u32>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        #[arg(short = 's', long = "signal", default_value = "SIGKILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short = 'f', long)]
        force: bool,
        /// Also remove the containers' anonymous volumes.
        #[arg(short = 'v', long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Wait for containers to exit and print their exit codes.
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps(PsArgs),
    /// Print a container's logs.
    Logs {
        #[arg(short = 'f', long)]
        follow: bool,
        /// Number of lines from the end (or "all").
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Only lines since this time (RFC 3339, Unix seconds or e.g. 10m).
        #[arg(long)]
        since: Option<String>,
        /// Prefix each line with its time.
        #[arg(short = 't', long)]
        timestamps: bool,
        container: String,
    },
    /// Show containers' details as JSON (or through a Go template); for an image name, the
    /// image's manifest and config.
    Inspect {
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container.
    Exec {
        /// Keep stdin open (the terminal is passed through).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Use the caller's terminal.
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        container: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Attach this terminal's stdin and output to a running container (made with -i/-t).
    Attach {
        /// Do not attach stdin.
        #[arg(long = "no-stdin")]
        no_stdin: bool,
        /// Keys that detach from a -i -t container and leave it running (ctrl-p,ctrl-q).
        #[arg(long)]
        detach_keys: Option<String>,
        container: String,
    },
    /// Copy files between a running container and the host: NAME:PATH HOSTPATH or back.
    Cp { source: String, dest: String },
    /// Show running containers' CPU, memory and process count (one sample, as --no-stream).
    Stats {
        /// Accepted for docker compatibility: builder always prints one sample.
        #[arg(long = "no-stream")]
        no_stream: bool,
        containers: Vec<String>,
    },
    /// Show a container's processes (host pids).
    Top { container: String },
    /// List a container's published ports (or the host address of one).
    Port {
        container: String,
        /// PORT or PORT/PROTO.
        private_port: Option<String>,
    },
    /// Volumes: create, ls, inspect, rm, prune.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Networks: create, ls, inspect, rm, prune.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Container management.
    #[command(subcommand)]
    Container(ContainerSubcommand),
}

#[derive(clap::Subcommand, serde::Serialize)]
pub enum VolumeCommand {
    /// Create a named volume (a random name without one).
    Create {
        #[arg(long = "label")]
        label: Vec<String>,
        name: Option<String>,
    },
    /// List volumes.
    Ls {
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes no container uses.
    Rm {
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused anonymous volumes (with -a, unused named ones too).
    Prune {
        #[arg(short = 'a', long)]
        all: bool,
        #[arg(short = 'f', long)]
        force: bool,
    },
}

#[derive(clap::Subcommand, serde::Serialize)]
pub enum NetworkCommand {
    /// Create a user-defined bridge network (containers on it resolve each other by name).
    Create {
        /// Subnet in CIDR form (default: a free /24 in 10.89.0.0/16).
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long = "label")]
        label: Vec<String>,
        /// Only the bridge driver exists.
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        name: String,
    },
    /// List networks.
    Ls {
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Show networks as JSON.
    Inspect {
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks.
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks no container uses.
    Prune {
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Connect a container to a network (a running one at once).
    Connect {
        /// Extra name of the container on the network.
        #[arg(long = "alias")]
        alias: Vec<String>,
        /// Static IPv4 address in the network's subnet.
        #[arg(long)]
        ip: Option<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// Do not fail when the container is not connected; release what it holds there.
        #[arg(short = 'f', long)]
        force: bool,
        network: String,
        container: String,
    },
}

#[derive(clap::Args, serde::Serialize)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only ids.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// name=, status=, label=KEY[=VALUE], id=
    #[arg(long)]
    filter: Vec<String>,
    /// Go template, e.g. '{{.Names}} {{.Status}}' or 'table {{.ID}}\t{{.Names}}'.
    #[arg(long)]
    format: Option<String>,
}

#[derive(clap::Subcommand, serde::Serialize)]
pub enum ContainerSubcommand {
    /// Remove all stopped containers.
    Prune {
        /// Do not ask for confirmation (there is no prompt; accepted for docker compatibility).
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// List containers (as `ps`).
    Ls(PsArgs),
    /// Start the containers whose restart policy is `always` or `unless-stopped` (after a reboot).
    StartRestartable,
}

/// Images from the engine's store, for the runtime.
struct CliImages<'a> {
    root: &'a Path,
    rt: &'a tokio::runtime::Runtime,
}

impl runtime::command::ImageSource for CliImages<'_> {
    fn prepare(&self, image: &str, platform: Option<&str>) -> Result<runtime::PreparedImage> {
        let prepared = self
            .rt
            .block_on(engine::images::prepare(self.root, image, platform))?;
        Ok(crate::run::into_prepared(prepared, image))
    }

    fn inspect_image(&self, name: &str) -> Result<i32> {
        engine::image_command::inspect(&crate::cli::open_images(self.root)?, name)
    }
}

/// Runs a container command; errors print docker-style and give docker's exit codes.
pub fn dispatch(root: &Path, rt: &tokio::runtime::Runtime, command: ContainerCommand) -> i32 {
    match crate::cli::typed(command) {
        Ok(command) => runtime::command::dispatch(root, command, &CliImages { root, rt }),
        Err(e) => runtime::command::report(e),
    }
}

/// `run` of a managed container (see `runtime::command::run_managed`).
pub fn run_managed(root: &Path, rt: &tokio::runtime::Runtime, args: RunArgs) -> Result<i32> {
    runtime::command::run_managed(root, crate::cli::typed(args)?, &CliImages { root, rt })
}
