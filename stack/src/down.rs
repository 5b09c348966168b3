//! `down`: stop and remove the project's containers (dependents first, each with its
//! stop_signal and grace period), then its networks, and with `-v` its volumes.

use anyhow::Result;

use crate::{labels, Stack};

#[derive(Default)]
pub struct DownOptions {
    pub volumes: bool,
    pub remove_orphans: bool,
    /// Stop timeout overriding each container's grace period.
    pub timeout: Option<u32>,
}

pub fn down(stack: &Stack, opts: &DownOptions) -> Result<()> {
    let mut order = stack.order()?;
    order.reverse();
    let all = stack.containers()?;
    // Dependents first, then one-offs and orphans.
    let mut ranked: Vec<(usize, runtime::Container)> = all
        .into_iter()
        .map(|c| {
            let service = c
                .config
                .labels
                .get(labels::SERVICE)
                .cloned()
                .unwrap_or_default();
            let rank = order.iter().position(|s| *s == service).unwrap_or(0);
            (rank, c)
        })
        .collect();
    ranked.sort_by_key(|(r, _)| *r);
    let mut groups: Vec<Vec<runtime::Container>> = Vec::new();
    for (rank, c) in ranked {
        match groups.last_mut() {
            Some(g) if g.first().map(|f| rank_of(&order, f)) == Some(rank) => g.push(c),
            _ => groups.push(vec![c]),
        }
    }
    for group in groups {
        // One service's replicas stop together.
        std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|c| s.spawn(move || stop_and_remove(stack, c, opts.timeout)))
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("stop thread"))
        })?;
    }
    remove_networks(stack)?;
    if opts.volumes {
        remove_volumes(stack)?;
    }
    Ok(())
}

fn rank_of(order: &[String], c: &runtime::Container) -> usize {
    let service = c
        .config
        .labels
        .get(labels::SERVICE)
        .cloned()
        .unwrap_or_default();
    order.iter().position(|s| *s == service).unwrap_or(0)
}

fn stop_and_remove(stack: &Stack, c: &runtime::Container, timeout: Option<u32>) -> Result<()> {
    eprintln!(" Container {}  Stopping", c.config.name);
    runtime::stop(c, timeout)?;
    runtime::remove(&stack.store, c, false, true)?;
    eprintln!(" Container {}  Removed", c.config.name);
    Ok(())
}

fn remove_networks(stack: &Stack) -> Result<()> {
    let networks = runtime::NetworkStore::open(stack.root())?;
    for n in networks.list()? {
        if n.labels.get(labels::PROJECT) == Some(&stack.name) {
            networks.remove(&stack.store, &n.name)?;
            eprintln!(" Network {}  Removed", n.name);
        }
    }
    Ok(())
}

fn remove_volumes(stack: &Stack) -> Result<()> {
    let volumes = runtime::VolumeStore::open(stack.root())?;
    for v in volumes.list()? {
        if v.labels.get(labels::PROJECT) == Some(&stack.name) {
            volumes.remove(&stack.store, &v.name)?;
            eprintln!(" Volume {}  Removed", v.name);
        }
    }
    Ok(())
}
