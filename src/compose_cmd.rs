//! `builder compose`: the CLI side of the `compose` crate.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::io::Read as _;
use std::path::PathBuf;

#[derive(Args, Debug, serde::Serialize)]
pub struct ComposeArgs {
    /// Compose file (repeatable; `-` for standard input).
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    /// Project name.
    #[arg(short = 'p', long = "project-name")]
    project_name: Option<String>,
    /// Profile to enable (repeatable).
    #[arg(long = "profile")]
    profiles: Vec<String>,
    /// Environment file instead of the project's `.env` (repeatable).
    #[arg(long = "env-file")]
    env_files: Vec<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: ComposeCommand,
}

#[derive(Subcommand, Debug, serde::Serialize)]
pub(crate) enum ComposeCommand {
    /// Print the normalised model (as `docker compose config`).
    Config {
        /// Output format: yaml or json.
        #[arg(long, default_value = "yaml")]
        format: String,
        /// Print the service names, one a line.
        #[arg(long)]
        services: bool,
        /// Print the volume names, one a line.
        #[arg(long)]
        volumes: bool,
        /// Print the profile names, one a line.
        #[arg(long)]
        profiles: bool,
        /// Only validate; print nothing.
        #[arg(short, long)]
        quiet: bool,
    },
    #[command(flatten)]
    Stack(crate::compose_stack::StackCommand),
}

pub fn run(args: ComposeArgs, root: Option<PathBuf>) -> Result<i32> {
    let stdin = if args.files.iter().any(|f| f.as_os_str() == "-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Some(s)
    } else {
        None
    };
    let opts = compose::Options {
        files: args.files,
        stdin,
        project_name: args.project_name,
        profiles: args.profiles,
        env_files: args.env_files,
        working_dir: std::env::current_dir()?,
        environ: std::env::vars().collect(),
    };
    match crate::cli::typed(&args.command)? {
        stack::ComposeCommand::Config(query) => stack::config::print(&opts, &query),
        stack::ComposeCommand::Stack(command) => {
            crate::compose_stack::run(&opts, crate::cli::prepared_root(root)?, command)
        }
    }
}
