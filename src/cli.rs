//! Command-line definitions and dispatch.

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    /// Compose projects: `config` prints the normalised model.
    Compose(crate::compose_cmd::ComposeArgs),
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

pub fn dispatch(cli: Cli) -> Result<i32> {
    if let Command::Compose(args) = cli.command {
        return crate::compose_cmd::run(args);
    }
    let root = storage_root(cli.root);
    std::fs::create_dir_all(&root)
        .with_context(|| format!("creating storage root {}", root.display()))?;
    // Container monitors outlive this process and its working directory.
    let root = std::fs::canonicalize(&root)
        .with_context(|| format!("resolving storage root {}", root.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _store_lock = crate::prune::lock_for(&cli.command, &root)?;
    match cli.command {
        Command::Build(args) => rt.block_on(crate::build::build(&root, *args)),
        Command::Run(args) => rt.block_on(crate::run::run(&root, *args)),
        Command::Image(command) => crate::image_cmds::run(&open_images(&root)?, command),
        Command::Login(args) => rt.block_on(crate::login::login(args)),
        Command::Logout(args) => crate::login::logout(args),
        Command::Prune(args) => crate::prune::prune(&root, args),
        Command::Du(args) => crate::prune::du(&root, args),
        Command::Containers(command) => Ok(crate::containers::dispatch(&root, &rt, command)),
        Command::Compose(args) => crate::compose_cmd::run(args),
        Command::Images => {
            let store = open_images(&root)?;
            println!("{:<50} {:<20} {:>10}", "REPOSITORY:TAG", "IMAGE ID", "SIZE");
            for (name, desc) in store.list()? {
                let short = desc
                    .digest
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect::<String>();
                let familiar = exporter::reference::Reference::parse(&name)
                    .map(|r| r.familiar_name())
                    .unwrap_or(name);
                println!(
                    "{familiar:<50} {short:<20} {:>10}",
                    image_size(&store, &desc)
                );
            }
            Ok(0)
        }
        Command::Import {
            tarball,
            name,
            platform,
        } => {
            let store = open_images(&root)?;
            let platform: exporter::image::Platform = match platform {
                Some(p) => p
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--platform {p:?}: {e:?}"))?,
                None => exporter::image::Platform::host(),
            };
            let file = std::fs::File::open(&tarball)
                .with_context(|| format!("opening {}", tarball.display()))?;
            // SOURCE_DATE_EPOCH makes imports reproducible too.
            let created = crate::output::source_date_epoch(&Default::default())?
                .map(|epoch| exporter::format_rfc3339(epoch as i64));
            let desc = exporter::import_rootfs_tar(
                store.content(),
                std::io::BufReader::new(file),
                &platform,
                created.as_deref(),
            )?;
            store.tag(&name, &desc)?;
            println!("{}", desc.digest);
            Ok(0)
        }
        Command::Push { name } => {
            let store = open_images(&root)?;
            let desc = store
                .resolve(&name)?
                .with_context(|| format!("no such image: {name}"))?;
            let reference = exporter::Reference::parse(&name)?;
            let report = rt.block_on(exporter::RegistryClient::new().push_reporting(
                &reference,
                &desc,
                store.content(),
            ))?;
            println!(
                "pushed {} {} ({report})",
                reference.full_name(),
                desc.digest
            );
            Ok(0)
        }
        Command::Tag { source, target } => {
            let store = open_images(&root)?;
            let desc = store
                .resolve(&source)?
                .with_context(|| format!("no such image: {source}"))?;
            store.tag(&target, &desc)?;
            Ok(0)
        }
        Command::Rmi { names } => {
            let store = open_images(&root)?;
            let mut code = 0;
            for n in names {
                if store.untag(&n)? {
                    println!("Untagged: {n}");
                } else {
                    eprintln!("error: no such image: {n}");
                    code = 1;
                }
            }
            Ok(code)
        }
    }
}

pub fn open_images(root: &std::path::Path) -> Result<exporter::ImageStore> {
    let content = snapshotter::ContentStore::open(root)?;
    Ok(exporter::ImageStore::open(root, content)?)
}

fn image_size(store: &exporter::ImageStore, desc: &exporter::image::Descriptor) -> String {
    let size: u64 = store
        .load_image(desc, &exporter::image::Platform::host())
        .map(|(_, m, _)| m.layers.iter().map(|l| l.size).sum())
        .unwrap_or(0);
    if size > 1 << 20 {
        format!("{:.1}MB", size as f64 / 1e6)
    } else {
        format!("{:.1}kB", size as f64 / 1e3)
    }
}
