//! `builder prune` and `builder du`: flags read into `engine::prune_command`.

use anyhow::Result;
use solver::gc::StoreLock;
use std::path::Path;

#[derive(clap::Args, serde::Serialize)]
pub struct PruneArgs {
    /// Also remove images' unpacked layers (the images stay) and cache mounts.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only some entries: until=DURATION (not used for that long, e.g. 24h),
    /// type=regular|exec.cachemount|source.local. May be repeated.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Keep the most recently used build cache up to this size (e.g. 512MB, 10GB).
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// List every entry removed.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(clap::Args, serde::Serialize)]
pub struct DuArgs {
    /// List every entry with its size and last use.
    #[arg(long)]
    pub verbose: bool,
    /// What `reclaimable` means: the entries a prune with these filters would remove.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: DuFormat,
}

#[derive(Clone, Copy, clap::ValueEnum, serde::Serialize)]
pub enum DuFormat {
    Table,
    Json,
}

/// The store lock a command holds for its whole run: none for prune (it takes the exclusive
/// one itself) and commands that do not touch the store, shared for everything else.
pub fn lock_for(command: &crate::cli::Command, root: &Path) -> Result<Option<StoreLock>> {
    use crate::cli::Command;
    match command {
        Command::Prune(_) | Command::Login(_) | Command::Logout(_) => Ok(None),
        _ => Ok(Some(StoreLock::shared(root, || {
            eprintln!("waiting for a prune of {} to finish...", root.display())
        })?)),
    }
}
