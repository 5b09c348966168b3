//! `down`: stop and remove the project's containers (dependents first, each with its
//! stop_signal and grace period), then its networks, and with `-v` its volumes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex};

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
    let mut by_service: BTreeMap<String, Vec<runtime::Container>> = BTreeMap::new();
    for c in stack.containers()? {
        let service = c
            .config
            .labels
            .get(labels::SERVICE)
            .cloned()
            .unwrap_or_default();
        by_service.entry(service).or_default().push(c);
    }
    let stopped: (Mutex<BTreeSet<String>>, Condvar) = Default::default();
    // Every service in its own thread, waiting until the services that depend on it stopped.
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = by_service
            .iter()
            .map(|(service, containers)| {
                let (stopped, by_service) = (&stopped, &by_service);
                s.spawn(move || {
                    wait_dependents(stack, service, by_service, stopped);
                    let result = containers
                        .iter()
                        .try_for_each(|c| stop_and_remove(stack, c, opts.timeout));
                    stopped.0.lock().unwrap().insert(service.clone());
                    stopped.1.notify_all();
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("stop thread"))
            .collect()
    });
    results.into_iter().collect::<Result<()>>()?;
    remove_networks(stack)?;
    if opts.volumes {
        remove_volumes(stack)?;
    }
    Ok(())
}

fn wait_dependents(
    stack: &Stack,
    service: &str,
    running: &BTreeMap<String, Vec<runtime::Container>>,
    stopped: &(Mutex<BTreeSet<String>>, Condvar),
) {
    let dependents: Vec<&String> = stack
        .model
        .services
        .iter()
        .filter(|(name, s)| s.depends_on.contains_key(service) && running.contains_key(*name))
        .map(|(name, _)| name)
        .collect();
    let mut done = stopped.0.lock().unwrap();
    while !dependents.iter().all(|d| done.contains(*d)) {
        done = stopped.1.wait(done).unwrap();
    }
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
