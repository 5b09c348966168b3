//! One loaded project against one storage root: its names and its containers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use compose::model::ComposeModel;
use runtime::{Container, ContainerStore};

use crate::labels;

pub struct Stack {
    pub name: String,
    pub dir: PathBuf,
    pub model: ComposeModel,
    /// Each service's canonical configuration (hashed into the config-hash label).
    pub service_json: BTreeMap<String, serde_json::Value>,
    pub store: ContainerStore,
    /// The files and positions of the model, for errors naming where a key was written.
    pub project: compose::Project,
}

impl Stack {
    pub fn new(root: &Path, project: &compose::Project) -> Result<Stack> {
        let model = ComposeModel::from_project(project).map_err(|e| anyhow!(e))?;
        let json = project.model.to_json();
        let service_json = json
            .get("services")
            .and_then(|s| s.as_object())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(Stack {
            name: project.name.clone(),
            dir: project.dir.clone(),
            model,
            service_json,
            store: ContainerStore::open(root)?,
            project: compose::Project {
                name: project.name.clone(),
                dir: project.dir.clone(),
                model: project.model.clone(),
                warnings: vec![],
                files: project.files.clone(),
            },
        })
    }

    pub fn root(&self) -> &Path {
        &self.store.root
    }

    pub fn container_name(&self, service: &str, number: u32) -> String {
        format!("{}-{service}-{number}", self.name)
    }

    /// The runtime network of a project network: `name:` if given, else `PROJECT_KEY`.
    pub fn network_name(&self, key: &str) -> String {
        match self.model.networks.get(key).and_then(|n| n.name.clone()) {
            Some(name) => name,
            None => format!("{}_{key}", self.name),
        }
    }

    /// The runtime volume of a project volume: `name:` if given, else `PROJECT_KEY`.
    pub fn volume_name(&self, key: &str) -> String {
        match self.model.volumes.get(key).and_then(|v| v.name.clone()) {
            Some(name) => name,
            None => format!("{}_{key}", self.name),
        }
    }

    /// The image a service runs: `image:`, or `PROJECT-SERVICE` for a built one.
    pub fn image_of(&self, service: &str) -> String {
        self.model.services[service]
            .image
            .clone()
            .unwrap_or_else(|| format!("{}-{service}", self.name))
    }

    /// Every container of the project (one-off `run` containers too), oldest first.
    pub fn containers(&self) -> Result<Vec<Container>> {
        Ok(self
            .store
            .list()?
            .into_iter()
            .filter(|c| c.config.labels.get(labels::PROJECT) == Some(&self.name))
            .collect())
    }

    /// The service's (not one-off) containers, by container number.
    pub fn service_containers(&self, service: &str) -> Result<Vec<Container>> {
        let mut out: Vec<Container> = self
            .containers()?
            .into_iter()
            .filter(|c| {
                c.config.labels.get(labels::SERVICE).map(String::as_str) == Some(service)
                    && c.config.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
            })
            .collect();
        out.sort_by_key(number_of);
        Ok(out)
    }

    /// Services in dependency order (dependencies first).
    pub fn order(&self) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in self.model.services.keys() {
            self.visit(name, &mut seen, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if seen.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            bail!(
                "dependency cycle detected: {} -> {name}",
                stack.join(" -> ")
            );
        }
        stack.push(name.to_string());
        if let Some(service) = self.model.services.get(name) {
            for dep in service.depends_on.keys() {
                if self.model.services.contains_key(dep) {
                    self.visit(dep, seen, stack, order)?;
                }
            }
        }
        stack.pop();
        seen.insert(name.to_string());
        order.push(name.to_string());
        Ok(())
    }

    /// The services named (all when none), plus their dependencies unless `no_deps`; in
    /// dependency order. An unknown name is an error.
    pub fn selected(&self, names: &[String], no_deps: bool) -> Result<Vec<String>> {
        for n in names {
            if !self.model.services.contains_key(n) {
                bail!("no such service: {n}");
            }
        }
        if names.is_empty() {
            return self.order();
        }
        let mut wanted: BTreeSet<String> = names.iter().cloned().collect();
        if !no_deps {
            let mut todo: Vec<String> = names.to_vec();
            while let Some(n) = todo.pop() {
                for dep in self.model.services[&n].depends_on.keys() {
                    if self.model.services.contains_key(dep) && wanted.insert(dep.clone()) {
                        todo.push(dep.clone());
                    }
                }
            }
        }
        Ok(self
            .order()?
            .into_iter()
            .filter(|s| wanted.contains(s))
            .collect())
    }

    /// Finds the container of `service` with `index` (1-based), as `exec --index`.
    pub fn service_container(&self, service: &str, index: u32) -> Result<Container> {
        if !self.model.services.contains_key(service) {
            bail!("no such service: {service}");
        }
        self.service_containers(service)?
            .into_iter()
            .find(|c| number_of(c) == index)
            .ok_or_else(|| anyhow!("service {service:?} has no container #{index}: run `up` first"))
    }
}

pub fn number_of(c: &Container) -> u32 {
    c.config
        .labels
        .get(labels::CONTAINER_NUMBER)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Projects with containers in the store: name → (running, total, working dir).
pub fn list_projects(store: &ContainerStore) -> Result<BTreeMap<String, (usize, usize, String)>> {
    let mut out: BTreeMap<String, (usize, usize, String)> = BTreeMap::new();
    for c in store.list()? {
        let Some(project) = c.config.labels.get(labels::PROJECT) else {
            continue;
        };
        let running = c
            .live_state()
            .map(|s| s.status.is_active())
            .unwrap_or(false);
        let entry = out.entry(project.clone()).or_default();
        entry.0 += running as usize;
        entry.1 += 1;
        if let Some(dir) = c.config.labels.get(labels::WORKING_DIR) {
            entry.2 = dir.clone();
        }
    }
    Ok(out)
}
