//! `builder compose`: the CLI side of the `compose` crate.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::io::Read as _;
use std::path::PathBuf;

#[derive(Args, Debug)]
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
    command: ComposeCommand,
}

#[derive(Subcommand, Debug)]
enum ComposeCommand {
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
    let (format, services, volumes, profiles, quiet) = match args.command {
        ComposeCommand::Config {
            format,
            services,
            volumes,
            profiles,
            quiet,
        } => (format, services, volumes, profiles, quiet),
        ComposeCommand::Stack(command) => {
            return crate::compose_stack::run(&opts, crate::cli::prepared_root(root)?, command)
        }
    };
    if profiles {
        // Profiles are listed over every service, enabled or not.
        let mut all = opts.clone();
        all.profiles = vec!["*".into()];
        let project = compose::load(&all)?;
        return print_lines(compose::project_profiles(&project.model));
    }
    let project = compose::load(&opts)?;
    for w in &project.warnings {
        eprintln!("WARN[0000] {w}");
    }
    let keys = |kind: &str| {
        project
            .model
            .get(kind)
            .and_then(|m| m.as_map())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    match () {
        _ if quiet => Ok(0),
        _ if services => print_lines(
            compose::graph::dependency_order(&project.model).map_err(anyhow::Error::msg)?,
        ),
        _ if volumes => print_lines(keys("volumes")),
        _ if format == "json" => {
            println!(
                "{}",
                serde_json::to_string_pretty(&project.model.to_json())?
            );
            Ok(0)
        }
        _ if format == "yaml" => {
            print!("{}", compose::emit::to_yaml(&project.model));
            Ok(0)
        }
        _ => anyhow::bail!("--format: unsupported format {format:?} (yaml or json)"),
    }
}

fn print_lines(lines: Vec<String>) -> Result<i32> {
    for l in lines {
        println!("{l}");
    }
    Ok(0)
}
