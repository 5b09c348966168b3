//! Command-line definitions and dispatch.

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[cfg(test)]
mod tests;

#[derive(Parser)]
#[command(
    name = "builder",
    version,
    about = "Build and run container images from Dockerfiles, without a daemon"
)]
pub struct Cli {
    /// Storage root for images, layers and cache.
    #[arg(long, global = true, env = "BUILDER_ROOT")]
    pub root: Option<PathBuf>,
    /// How `build` isolates RUN steps: `oci` (namespaces and mounts) or `chroot` (for
    /// unprivileged containers). Default: `oci`, or `chroot` where namespaces are unavailable.
    #[arg(long, global = true, env = "BUILDER_ISOLATION", value_enum)]
    pub isolation: Option<crate::isolation::IsolationFlag>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<crate::build::BuildArgs>),
    /// List images in the local store.
    Images,
    /// Make an image from a root filesystem tarball.
    Import {
        /// Tarball of a root filesystem (plain or gzip).
        tarball: PathBuf,
        /// Name of the new image, e.g. busybox:latest.
        name: String,
        /// Platform the filesystem is for.
        #[arg(long)]
        platform: Option<String>,
    },
    /// Add a name to an image.
    Tag { source: String, target: String },
    /// Remove image names.
    Rmi { names: Vec<String> },
    /// Push an image to its registry.
    Push { name: String },
    /// Run a command in a new container from an image.
    Run(Box<crate::run::RunArgs>),
    #[command(flatten)]
    Image(crate::image_cmds::ImageCommand),
    /// Log in to a registry (checks the credentials, stores them in docker's config.json).
    Login(crate::login::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(crate::login::LogoutArgs),
    /// Remove build cache (and with --all, images' unpacked layers and cache mounts).
    Prune(crate::prune::PruneArgs),
    /// Show the disk usage of the store: layers, build cache, cache mounts, blobs.
    Du(crate::prune::DuArgs),
    #[command(flatten)]
    Containers(crate::containers::ContainerCommand),
    /// Compose projects: `up`, `down`, `ps`, `logs`, ... and `config`.
    Compose(crate::compose_cmd::ComposeArgs),
    /// Serve builds to remote clients (gRPC; mutual TLS on TCP).
    Serve(crate::remote_cmd::ServeArgs),
    /// Named remote builders: create, ls, rm.
    #[command(subcommand)]
    Builder(crate::remote_cmd::BuilderCommand),
}

/// The storage root: `--root`, `BUILDER_ROOT`, or the default for the user.
pub fn storage_root(flag: Option<PathBuf>) -> PathBuf {
    if let Some(r) = flag {
        return r;
    }
    // In rootless mode the process is root of its own user namespace, but the store is the user's.
    if rustix::process::geteuid().is_root() && !executor::userns::is_rootless() {
        return PathBuf::from("/var/lib/builder");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    data.unwrap_or_else(|| PathBuf::from(".")).join("builder")
}

/// The storage root, created and made absolute.
pub fn prepared_root(flag: Option<PathBuf>) -> Result<PathBuf> {
    let root = storage_root(flag);
    std::fs::create_dir_all(&root)
        .with_context(|| format!("creating storage root {}", root.display()))?;
    // Container monitors outlive this process and its working directory.
    std::fs::canonicalize(&root)
        .with_context(|| format!("resolving storage root {}", root.display()))
}

pub fn dispatch(cli: Cli) -> Result<i32> {
    let cli = match cli.command {
        Command::Compose(args) => return crate::compose_cmd::run(args, cli.root),
        Command::Builder(command) => return crate::remote_cmd::builder_command(command),
        Command::Build(args) if args.builder.is_some() => {
            let builder = args.builder.clone().unwrap_or_default();
            return crate::remote_cmd::remote_build(&builder, *args);
        }
        command => Cli { command, ..cli },
    };
    // Containers always need namespaces; everything else may read a chroot-mode store.
    if !matches!(cli.command, Command::Run(_) | Command::Containers(_)) {
        // Before the runtime's threads: the probe forks.
        engine::isolation::apply(
            typed(cli.isolation)?,
            matches!(cli.command, Command::Build(_)),
        )?;
    }
    let root = prepared_root(cli.root)?;
    executor::set_seccomp_cache_dir(Some(executor::seccomp_cache_in_store(&root)));
    snapshotter::choose_views(&root, executor::userns::is_rootless())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Command::Serve(args) = cli.command {
        // Each build takes the store lock itself: a server holds none (its GC must run).
        return crate::remote_cmd::serve(&root, args);
    }
    let _store_lock = crate::prune::lock_for(&cli.command, &root)?;
    match cli.command {
        Command::Build(args) => rt.block_on(crate::build::build(&root, *args)),
        Command::Run(args) => crate::run::run(&root, &rt, *args),
        Command::Image(command) => {
            engine::image_command::run(&open_images(&root)?, typed(command)?)
        }
        Command::Login(args) => rt.block_on(distribution::login::login(typed(args)?)),
        Command::Logout(args) => distribution::login::logout(typed(args)?),
        Command::Prune(args) => engine::prune_command::prune(&root, typed(args)?),
        Command::Du(args) => engine::prune_command::du(&root, typed(args)?),
        Command::Containers(command) => Ok(crate::containers::dispatch(&root, &rt, command)),
        Command::Compose(_) | Command::Builder(_) | Command::Serve(_) => {
            unreachable!("handled above")
        }
        Command::Images => engine::image_command::list(&open_images(&root)?),
        Command::Import {
            tarball,
            name,
            platform,
        } => engine::image_command::import(&open_images(&root)?, &tarball, &name, platform),
        Command::Push { name } => {
            rt.block_on(engine::image_command::push(&open_images(&root)?, &name))
        }
        Command::Tag { source, target } => {
            engine::image_command::tag(&open_images(&root)?, &source, &target)
        }
        Command::Rmi { names } => engine::image_command::rmi(&open_images(&root)?, &names),
    }
}

/// Flags (a clap struct) read into a crate's typed options by field name. Both sides deny
/// unknown fields, so a flag added on one side only fails on first use instead of vanishing.
pub fn typed<T: serde::de::DeserializeOwned>(flags: impl serde::Serialize) -> Result<T> {
    let value = serde_json::to_value(flags).context("reading the flags")?;
    serde_json::from_value(value).context("internal error: flags and options differ")
}

pub fn open_images(root: &std::path::Path) -> Result<exporter::ImageStore> {
    engine::image_command::open_store(root)
}
