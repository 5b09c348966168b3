//! `up`: images, networks and volumes, then each service's containers converged to the
//! model (unchanged ones kept, changed ones recreated), services started as soon as their
//! dependencies' conditions hold, independent ones in parallel.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use runtime::PreparedImage;

use crate::wait::{wait_service, Goal};
use crate::{labels, BuildRequest, ImageProvider, SpecContext, Stack};

#[derive(Default)]
pub struct UpOptions {
    pub services: Vec<String>,
    pub no_deps: bool,
    pub force_recreate: bool,
    pub build: bool,
    pub no_build: bool,
    pub scale: BTreeMap<String, u32>,
    pub remove_orphans: bool,
    pub wait: bool,
    pub wait_timeout: Option<Duration>,
}

/// Brings the selected services up; returns the services it handled.
pub fn up(stack: &Stack, images: &dyn ImageProvider, opts: &UpOptions) -> Result<Vec<String>> {
    let selected = stack.selected(&opts.services, opts.no_deps)?;
    let prepared = ensure_images(stack, images, &selected, opts)?;
    ensure_networks(stack, &selected)?;
    check_static_addresses(stack, &selected, opts)?;
    ensure_volumes(stack)?;
    if opts.remove_orphans {
        remove_orphans(stack)?;
    }
    start_in_order(stack, &selected, &prepared, opts)?;
    if opts.wait {
        crate::wait::wait_ready(stack, &selected, opts.wait_timeout)?;
    }
    Ok(selected)
}

/// Builds what must be built (all in one go), pulls what is missing, then prepares each
/// distinct image once.
fn ensure_images(
    stack: &Stack,
    images: &dyn ImageProvider,
    selected: &[String],
    opts: &UpOptions,
) -> Result<BTreeMap<String, Arc<PreparedImage>>> {
    let mut builds: Vec<BuildRequest> = Vec::new();
    for name in selected {
        let image = stack.image_of(name);
        match &stack.model.services[name].build {
            Some(_) if !opts.no_build && (opts.build || !images.exists(&image)) => {
                builds.extend(stack.build_request(name)?)
            }
            Some(_) if !images.exists(&image) => {
                return Err(anyhow!(
                    "service {name:?}: image {image} is not built (drop --no-build)"
                ))
            }
            _ => {}
        }
    }
    if !builds.is_empty() {
        images.build(&builds)?;
    }
    // Images not built here and missing are pulled (one built for another service is not).
    for name in selected {
        let image = stack.image_of(name);
        if !builds.iter().any(|b| b.tag == image) && !images.exists(&image) {
            images.pull(&image)?;
        }
    }
    let mut prepared: BTreeMap<String, Arc<PreparedImage>> = BTreeMap::new();
    let mut by_image: BTreeMap<String, Arc<PreparedImage>> = BTreeMap::new();
    for name in selected {
        let image = stack.image_of(name);
        let p = match by_image.get(&image) {
            Some(p) => p.clone(),
            None => Arc::new(images.prepare(&image)?),
        };
        by_image.insert(image, p.clone());
        prepared.insert(name.clone(), p);
    }
    Ok(prepared)
}

fn ensure_networks(stack: &Stack, selected: &[String]) -> Result<()> {
    let networks = runtime::NetworkStore::open(stack.root())?;
    let mut keys: Vec<String> = Vec::new();
    for name in selected {
        let s = &stack.model.services[name];
        if s.network_mode.is_some() {
            continue;
        }
        if s.networks.is_empty() {
            keys.push("default".into());
        }
        keys.extend(s.networks.keys().cloned());
    }
    keys.sort();
    keys.dedup();
    for key in keys {
        let external = stack
            .model
            .networks
            .get(&key)
            .and_then(|n| n.external.as_ref())
            .is_some_and(|e| e.as_bool().unwrap_or(true));
        let name = stack.network_name(&key);
        if external || networks.get(&name).is_ok() {
            networks.get(&name)?;
            continue;
        }
        let labels = BTreeMap::from([
            (labels::PROJECT.to_string(), stack.name.clone()),
            (labels::NETWORK.to_string(), key.clone()),
        ]);
        let (subnet, gateway) = ipam_of(stack, &key)?;
        networks
            .create_ipam(&name, subnet.as_deref(), gateway.as_deref(), labels)
            .map_err(|e| anyhow!("{}: {e:#}", stack.project.locate(&["networks", &key])))?;
        eprintln!(" Network {name}  Created");
    }
    Ok(())
}

/// A project network's `ipam.config[0]` subnet and gateway, if given.
fn ipam_of(stack: &Stack, key: &str) -> Result<(Option<String>, Option<String>)> {
    let Some(ipam) = stack.model.networks.get(key).and_then(|n| n.ipam.as_ref()) else {
        return Ok((None, None));
    };
    let configs = ipam["config"].as_array().cloned().unwrap_or_default();
    if configs.len() > 1 {
        bail!(
            "{}: builder networks take one IPv4 subnet; {} are given",
            stack.project.locate(&["networks", key, "ipam", "config"]),
            configs.len()
        );
    }
    let field = |k: &str| {
        configs
            .first()
            .and_then(|c| c[k].as_str())
            .map(String::from)
    };
    Ok((field("subnet"), field("gateway")))
}

/// Static addresses (`ipv4_address`), checked before any container starts: inside their
/// network's subnet, not given to two services or to the replicas of a scaled one.
fn check_static_addresses(stack: &Stack, selected: &[String], opts: &UpOptions) -> Result<()> {
    let networks = runtime::NetworkStore::open(stack.root())?;
    let mut taken: BTreeMap<(String, String), String> = BTreeMap::new();
    for name in selected {
        let replicas = opts
            .scale
            .get(name)
            .copied()
            .unwrap_or_else(|| stack.model.replicas(name));
        for (key, settings) in &stack.model.services[name].networks {
            let Some(ip) = settings.as_ref().and_then(|n| n.ipv4_address.as_ref()) else {
                continue;
            };
            let at = stack
                .project
                .locate(&["services", name, "networks", key, "ipv4_address"]);
            if replicas > 1 {
                bail!("{at}: {ip} cannot be the address of all {replicas} replicas of {name}");
            }
            let net = networks.get(&stack.network_name(key))?;
            runtime::check_static_ip(&net, ip, "address").map_err(|e| anyhow!("{at}: {e:#}"))?;
            if let Some(other) = taken.insert((net.name.clone(), ip.clone()), name.clone()) {
                bail!(
                    "{at}: {ip} is also the address of service {other:?} on {}",
                    net.name
                );
            }
        }
    }
    Ok(())
}

fn ensure_volumes(stack: &Stack) -> Result<()> {
    let volumes = runtime::VolumeStore::open(stack.root())?;
    for (key, v) in &stack.model.volumes {
        let name = stack.volume_name(key);
        if v.external
            .as_ref()
            .is_some_and(|e| e.as_bool().unwrap_or(true))
        {
            volumes.get(&name)?;
            continue;
        }
        if volumes.get(&name).is_err() {
            let labels = BTreeMap::from([
                (labels::PROJECT.to_string(), stack.name.clone()),
                (labels::VOLUME.to_string(), key.clone()),
            ]);
            volumes.create(Some(&name), labels)?;
            eprintln!(" Volume {name}  Created");
        }
    }
    Ok(())
}

fn remove_orphans(stack: &Stack) -> Result<()> {
    for c in stack.containers()? {
        let service = c
            .config
            .labels
            .get(labels::SERVICE)
            .cloned()
            .unwrap_or_default();
        if !stack.model.services.contains_key(&service) {
            runtime::stop(&c, None)?;
            runtime::remove(&stack.store, &c, false, true)?;
            eprintln!(" Container {}  Removed (orphan)", c.config.name);
        }
    }
    Ok(())
}

/// Which services are done converging, and how (Ok(true): a container was recreated).
type Progress = (Mutex<BTreeMap<String, Result<bool, String>>>, Condvar);

/// Every service in its own thread, each waiting for its dependencies' conditions first.
fn start_in_order(
    stack: &Stack,
    selected: &[String],
    prepared: &BTreeMap<String, Arc<PreparedImage>>,
    opts: &UpOptions,
) -> Result<()> {
    let progress: Progress = (Mutex::new(BTreeMap::new()), Condvar::new());
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = selected
            .iter()
            .map(|name| {
                let progress = &progress;
                s.spawn(move || {
                    let result = wait_dependencies(stack, name, selected, progress)
                        .and_then(|restart| converge(stack, name, &prepared[name], opts, restart));
                    let (done, cv) = progress;
                    done.lock().unwrap().insert(
                        name.clone(),
                        result.as_ref().map(|r| *r).map_err(|e| format!("{e:#}")),
                    );
                    cv.notify_all();
                    result.map(|_| ())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("service thread"))
            .collect()
    });
    results.into_iter().collect()
}

fn wait_dependencies(
    stack: &Stack,
    name: &str,
    selected: &[String],
    progress: &Progress,
) -> Result<bool> {
    let service = &stack.model.services[name];
    // A dependency with `restart: true` that was recreated restarts this service.
    let mut restart = false;
    for (dep, dependency) in &service.depends_on {
        if !selected.contains(dep) {
            continue;
        }
        let (done, cv) = progress;
        let mut map = done.lock().unwrap();
        while !map.contains_key(dep) {
            map = cv.wait(map).unwrap();
        }
        match &map[dep] {
            Err(e) => bail!("service {name:?} depends on {dep:?}, which failed: {e}"),
            Ok(recreated) => restart |= *recreated && dependency.restart,
        }
        drop(map);
        let goal = Goal::of_condition(&dependency.condition);
        if let Err(e) = wait_service(stack, dep, goal, None) {
            if dependency.required || goal != Goal::Started {
                return Err(e);
            }
        }
    }
    Ok(restart)
}

/// Makes the service's containers match the model: keeps those whose config hash matches,
/// recreates the others, adds or removes replicas, starts what is not running (and restarts
/// what is, with `restart`). Returns whether a container was recreated.
fn converge(
    stack: &Stack,
    name: &str,
    image: &PreparedImage,
    opts: &UpOptions,
    restart: bool,
) -> Result<bool> {
    let mut recreated = false;
    let hash = crate::config_hash(&stack.service_json[name], &image.image_id);
    let want = opts
        .scale
        .get(name)
        .copied()
        .unwrap_or_else(|| stack.model.replicas(name));
    let mut present = Vec::new();
    for c in stack.service_containers(name)? {
        let number = crate::project::number_of(&c);
        let same = c.config.labels.get(labels::CONFIG_HASH) == Some(&hash);
        if number > want || number == 0 || !same || opts.force_recreate || present.contains(&number)
        {
            eprintln!(" Container {}  Recreate", c.config.name);
            runtime::stop(&c, None)?;
            runtime::remove(&stack.store, &c, false, false)?;
            recreated = true;
            continue;
        }
        present.push(number);
        if !c.live_state()?.status.is_active() {
            runtime::start(&stack.store, &c)?;
            eprintln!(" Container {}  Started", c.config.name);
        } else if restart {
            runtime::restart(&stack.store, &c, None)?;
            eprintln!(" Container {}  Restarted", c.config.name);
        } else {
            eprintln!(" Container {}  Running", c.config.name);
        }
    }
    for number in (1..=want).filter(|n| !present.contains(n)) {
        let cx = SpecContext {
            stack,
            service: name,
            number,
            config_hash: &hash,
            oneoff: false,
        };
        let spec = crate::service_spec(&cx)?;
        let c = stack.store.create(&spec, image)?;
        runtime::start(&stack.store, &c)?;
        eprintln!(" Container {}  Started", c.config.name);
    }
    Ok(recreated)
}
