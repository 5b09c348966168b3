//! The commands of `builder compose` (besides `config`) as typed requests: the CLI's flags
//! are read into these by field name, so a flag added there must be added here too.

use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct UpArgs {
    /// Run containers in the background.
    pub detach: bool,
    /// Build images before starting containers.
    pub build: bool,
    /// Don't build images, even when missing.
    pub no_build: bool,
    /// Wait for services to be running (and healthy); implies -d.
    pub wait: bool,
    /// Seconds --wait waits.
    pub wait_timeout: Option<u64>,
    /// SERVICE=N replicas (repeatable).
    pub scale: Vec<String>,
    /// Recreate containers even when their configuration is unchanged.
    pub force_recreate: bool,
    /// Don't start the named services' dependencies.
    pub no_deps: bool,
    /// Remove containers of services no longer in the file.
    pub remove_orphans: bool,
    /// Stop every container when one exits (foreground).
    pub abort_on_container_exit: bool,
    /// Return this service's exit code (implies --abort-on-container-exit).
    pub exit_code_from: Option<String>,
    pub services: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub enum Command {
    /// Create and start the project's containers.
    Up(UpArgs),
    /// Stop and remove the project's containers and networks (-v: volumes too).
    Down {
        volumes: bool,
        /// Remove images: `all` or `local` (built ones).
        rmi: Option<String>,
        remove_orphans: bool,
        timeout: Option<u32>,
    },
    /// List the project's containers.
    Ps {
        all: bool,
        quiet: bool,
        /// table or json.
        format: String,
        services: Vec<String>,
    },
    /// Print the services' logs, prefixed by container.
    Logs {
        follow: bool,
        /// Lines from the end of each log.
        tail: Option<String>,
        timestamps: bool,
        no_log_prefix: bool,
        services: Vec<String>,
    },
    /// Run a command in a service's running container.
    Exec {
        /// Don't allocate a terminal (accepted; output is never a terminal here).
        no_tty: bool,
        index: u32,
        env: Vec<String>,
        user: Option<String>,
        workdir: Option<String>,
        service: String,
        command: Vec<String>,
    },
    /// Run a one-off command in a new container of a service.
    Run {
        rm: bool,
        detach: bool,
        /// Don't give the container a terminal (by default it gets one when stdin is one).
        no_tty: bool,
        service: String,
        command: Vec<String>,
    },
    /// Start the services' existing containers.
    Start { services: Vec<String> },
    /// Stop the services' containers.
    Stop {
        timeout: Option<u32>,
        services: Vec<String>,
    },
    /// Restart the services' containers.
    Restart {
        timeout: Option<u32>,
        services: Vec<String>,
    },
    /// Send a signal to the services' containers.
    Kill {
        signal: String,
        services: Vec<String>,
    },
    /// Remove stopped containers of the services.
    Rm {
        force: bool,
        stop: bool,
        volumes: bool,
        services: Vec<String>,
    },
    /// The processes of the services' containers.
    Top { services: Vec<String> },
    /// The host address of a service's published port.
    Port {
        index: u32,
        service: String,
        private_port: String,
    },
    /// The images the project's containers use.
    Images,
    /// The projects with containers in the store.
    Ls { all: bool, quiet: bool },
    /// Wait for the services' containers to exit; prints their exit codes.
    Wait { services: Vec<String> },
    /// Pull the services' images.
    Pull { services: Vec<String> },
    /// Push the services' images.
    Push { services: Vec<String> },
    /// Build the services that have a `build:` section.
    Build { services: Vec<String> },
}

/// `builder compose COMMAND`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub enum ComposeCommand {
    Config(crate::config::ConfigQuery),
    Stack(Command),
}
