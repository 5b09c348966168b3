//! `builder serve`, `builder builder create|ls|rm` and `build --builder`: flags read into
//! `remote::command`'s typed options.

use anyhow::Result;
use std::path::{Path, PathBuf};

#[derive(clap::Args, serde::Serialize)]
pub struct ServeArgs {
    /// Where to listen: tcp://HOST:PORT or unix:///PATH.
    #[arg(long)]
    pub addr: String,
    /// CA certificate that client certificates must be signed by (mutual TLS).
    #[arg(long)]
    pub tlscacert: Option<PathBuf>,
    /// The server's certificate.
    #[arg(long)]
    pub tlscert: Option<PathBuf>,
    /// The server's private key.
    #[arg(long)]
    pub tlskey: Option<PathBuf>,
    /// Accept plain connections (only on a loopback address; a unix socket needs no flag).
    #[arg(long)]
    pub insecure: bool,
    /// Serve Prometheus metrics over HTTP on HOST:PORT.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Server config (TOML): keep_storage, allow_entitlements, shutdown_timeout, cache_from, cache_to.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Subcommand, serde::Serialize)]
pub enum BuilderCommand {
    /// Name a remote builder (one or more `builder serve` nodes) with this client's certificates.
    Create {
        name: String,
        /// Node address, tcp://HOST:PORT or unix:///PATH; may be repeated or comma-separated.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        #[arg(long)]
        tlscacert: Option<PathBuf>,
        #[arg(long)]
        tlscert: Option<PathBuf>,
        #[arg(long)]
        tlskey: Option<PathBuf>,
    },
    /// List the named builders.
    Ls,
    /// Remove a named builder.
    Rm { name: String },
}

pub fn serve(root: &Path, args: ServeArgs) -> Result<i32> {
    remote::command::serve(root, crate::cli::typed(args)?)
}

pub fn builder_command(command: BuilderCommand) -> Result<i32> {
    remote::command::builder_command(crate::cli::typed(command)?)
}

pub fn remote_build(builder: &str, args: crate::build::BuildArgs) -> Result<i32> {
    remote::command::remote_build(builder, crate::cli::typed(args)?)
}
