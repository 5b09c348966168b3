//! `builder prune` and `builder du` as library calls: the flags (read from the CLI's by
//! field name) become `solver::gc` options; the report is printed as docker does.

use anyhow::{bail, Result};
use serde::Deserialize;
use solver::gc::{self, EntryKind, FilterType, Inventory, PruneOptions, StoreLock};
use std::fmt::Write as _;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PruneFlags {
    /// Also remove images' unpacked layers (the images stay) and cache mounts.
    pub all: bool,
    /// Only some entries: until=DURATION (not used for that long, e.g. 24h),
    /// type=regular|exec.cachemount|source.local. May be repeated.
    pub filters: Vec<String>,
    /// Keep the most recently used build cache up to this size (e.g. 512MB, 10GB).
    pub keep_storage: Option<String>,
    /// Do not ask for confirmation.
    pub force: bool,
    /// List every entry removed.
    pub verbose: bool,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct DuFlags {
    /// List every entry with its size and last use.
    pub verbose: bool,
    /// What `reclaimable` means: the entries a prune with these filters would remove.
    pub filters: Vec<String>,
    /// Output format.
    pub format: DuFormat,
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub enum DuFormat {
    Table,
    Json,
}

fn options(filters: &[String], all: bool, keep_storage: Option<&str>) -> Result<PruneOptions> {
    let mut options = PruneOptions {
        all,
        ..Default::default()
    };
    for filter in filters {
        let Some((key, value)) = filter.split_once('=') else {
            bail!("--filter {filter:?}: want KEY=VALUE, e.g. until=24h or type=exec.cachemount");
        };
        match key {
            "until" => {
                let d = gc::parse_duration(value)
                    .map_err(|e| anyhow::anyhow!("--filter {filter:?}: {e}"))?;
                options.until = Some(d);
            }
            "type" => {
                let t: FilterType = value
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--filter {filter:?}: {e}"))?;
                options.types.push(t);
            }
            _ => bail!("--filter {filter:?}: unknown filter {key:?}; supported: until, type"),
        }
    }
    if let Some(size) = keep_storage {
        let bytes = gc::parse_size(size).map_err(|e| anyhow::anyhow!("--keep-storage: {e}"))?;
        options.keep_storage = Some(bytes);
    }
    Ok(options)
}

pub fn prune(root: &Path, args: PruneFlags) -> Result<i32> {
    let options = options(&args.filters, args.all, args.keep_storage.as_deref())?;
    if !args.force {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to prune without confirmation: standard input is not a terminal; pass --force (-f)");
        }
        let what = if args.all {
            "all build cache, cache mounts and images' unpacked layers"
        } else {
            "all build cache not used by a tagged image"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            // Declining is not a failure (as in docker).
            eprintln!("Nothing removed.");
            return Ok(0);
        }
    }
    let _lock = StoreLock::exclusive(root, || {
        eprintln!(
            "waiting for other builder processes using {} to finish...",
            root.display()
        )
    })?;
    let report = Inventory::scan(root)?.prune(&options)?;
    let mut out = String::new();
    if args.verbose {
        render_entries(&mut out, &report.removed, false);
    }
    for (kind, (count, bytes, _, _)) in &gc::totals(&report.removed) {
        if *kind == EntryKind::Upload {
            continue; // reported below, as abandoned uploads
        }
        let _ = writeln!(
            out,
            "Removed {count} {}: {}",
            kind.title(),
            gc::human_size(*bytes)
        );
    }
    if report.abandoned_uploads > 0 {
        let _ = writeln!(
            out,
            "Removed abandoned uploads: {}",
            gc::human_size(report.abandoned_uploads)
        );
    }
    let _ = writeln!(
        out,
        "Total reclaimed space: {}",
        gc::human_size(report.reclaimed)
    );
    emit(&out)
}

pub fn du(root: &Path, args: DuFlags) -> Result<i32> {
    let options = options(&args.filters, false, None)?;
    let entries = Inventory::scan(root)?.entries(&options);
    let mut out = String::new();
    if let DuFormat::Json = args.format {
        out = serde_json::to_string_pretty(&entries)?;
        out.push('\n');
        return emit(&out);
    }
    if args.verbose {
        render_entries(&mut out, &entries, true);
        out.push('\n');
    }
    let totals = gc::totals(&entries);
    let row = |out: &mut String, cells: [&str; 5]| {
        let [kind, count, size, reclaimable, with_all] = cells;
        let _ = writeln!(
            out,
            "{kind:<26} {count:>8} {size:>10} {reclaimable:>12} {with_all:>12}"
        );
    };
    row(
        &mut out,
        ["TYPE", "ENTRIES", "SIZE", "RECLAIMABLE", "WITH --all"],
    );
    let mut sum = (0u64, 0u64, 0u64);
    for kind in EntryKind::ALL {
        let (count, size, reclaimable, with_all) = totals.get(&kind).copied().unwrap_or_default();
        sum = (sum.0 + size, sum.1 + reclaimable, sum.2 + with_all);
        row(
            &mut out,
            [
                kind.title(),
                &count.to_string(),
                &gc::human_size(size),
                &gc::human_size(reclaimable),
                &gc::human_size(with_all),
            ],
        );
    }
    row(
        &mut out,
        [
            "Total",
            &entries.len().to_string(),
            &gc::human_size(sum.0),
            &gc::human_size(sum.1),
            &gc::human_size(sum.2),
        ],
    );
    emit(&out)
}

/// Writes a command's output; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<i32> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

fn render_entries(out: &mut String, entries: &[gc::Entry], with_reclaimable: bool) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let _ = write!(
        out,
        "{:<24} {:<72} {:>10} {:>14}",
        "TYPE", "ID", "SIZE", "LAST USED"
    );
    if with_reclaimable {
        let _ = write!(out, " {:>11}", "RECLAIMABLE");
    }
    out.push('\n');
    for e in entries {
        let _ = write!(
            out,
            "{:<24} {:<72} {:>10} {:>14}",
            e.kind.title(),
            e.id,
            gc::human_size(e.size),
            ago(now.saturating_sub(e.last_used))
        );
        if with_reclaimable {
            let why = match (e.reclaimable, e.kept_for) {
                (true, _) => "yes".to_string(),
                (false, Some(why)) => format!("no ({why})"),
                (false, None) => "no".to_string(),
            };
            let _ = write!(out, " {why:>11}");
        }
        out.push('\n');
    }
}

/// "12 seconds ago", "3 hours ago", like docker.
fn ago(seconds: u64) -> String {
    let (n, unit) = match seconds {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86400 => (s / 3600, "hour"),
        s => (s / 86400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}
