//! A service's `build.secrets`: each references a top-level secret (`file:` or
//! `environment:`) and becomes a `--secret id=...` of the build, read by
//! `RUN --mount=type=secret,id=...` through the engine's secret provider (never stored in
//! the image or its cache).

use anyhow::{anyhow, bail, Result};

use crate::{BuildRequest, Stack};

impl Stack {
    /// The build of `service`, if it has a `build:` section.
    pub fn build_request(&self, service: &str) -> Result<Option<BuildRequest>> {
        let Some(build) = self.model.services[service].build.clone() else {
            return Ok(None);
        };
        let secrets = build
            .secrets
            .iter()
            .map(|r| self.build_secret(r))
            .collect::<Result<_>>()
            .map_err(|e| anyhow!("service {service:?}: build.secrets: {e:#}"))?;
        Ok(Some(BuildRequest {
            service: service.to_string(),
            tag: self.image_of(service),
            build,
            secrets,
        }))
    }

    /// One reference (`NAME`, or `{source, target}`: the build sees it as `target`) as a
    /// `--secret` value.
    fn build_secret(&self, reference: &serde_json::Value) -> Result<String> {
        let text = |key: &str| reference.get(key).and_then(|v| v.as_str());
        let (source, id) = match reference {
            serde_json::Value::String(name) => (name.as_str(), name.as_str()),
            _ => {
                let source = text("source").ok_or_else(|| anyhow!("an entry has no source"))?;
                (source, text("target").unwrap_or(source))
            }
        };
        let object = self
            .model
            .secrets
            .get(source)
            .ok_or_else(|| anyhow!("{source:?} is not defined under the top-level secrets"))?;
        if id.is_empty() || id.contains(',') {
            bail!("{id:?} is not a usable secret id");
        }
        match (&object.file, &object.environment) {
            (Some(file), _) => {
                let path = self.dir.join(file);
                if !path.is_file() {
                    bail!("secret {source:?}: file {} does not exist", path.display());
                }
                Ok(format!("id={id},src={}", path.display()))
            }
            (None, Some(var)) => Ok(format!("id={id},env={var}")),
            (None, None) => bail!(
                "secret {source:?}: only file and environment secrets can be passed to a build"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_and_long_references_name_the_build_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token.txt"), "s3cret").unwrap();
        let yaml = "services:\n  app:\n    build:\n      context: .\n      secrets:\n        - tok\n        - source: envsec\n          target: other\nsecrets:\n  tok:\n    file: ./token.txt\n  envsec:\n    environment: MY_VAR\n";
        std::fs::write(dir.path().join("compose.yaml"), yaml).unwrap();
        let opts = compose::Options {
            working_dir: dir.path().to_path_buf(),
            project_name: Some("secrets".into()),
            ..Default::default()
        };
        let project = compose::load(&opts).unwrap();
        let root = tempfile::tempdir().unwrap();
        let stack = crate::Stack::new(root.path(), &project).unwrap();
        let request = stack.build_request("app").unwrap().unwrap();
        assert_eq!(request.secrets.len(), 2);
        assert!(request.secrets[0].starts_with("id=tok,src=/"));
        assert!(request.secrets[0].ends_with("token.txt"));
        assert_eq!(request.secrets[1], "id=other,env=MY_VAR");
    }
}
