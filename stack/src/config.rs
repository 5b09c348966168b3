//! `builder compose config`: the normalised model, or lists drawn from it.

use anyhow::Result;
use serde::Deserialize;

/// What `compose config` prints.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ConfigQuery {
    /// Output format: yaml or json.
    pub format: String,
    /// The service names, one a line.
    pub services: bool,
    /// The volume names, one a line.
    pub volumes: bool,
    /// The profile names, one a line.
    pub profiles: bool,
    /// Only validate; print nothing.
    pub quiet: bool,
}

/// Prints what the query asks for; 0, or the model's error.
pub fn print(opts: &compose::Options, query: &ConfigQuery) -> Result<i32> {
    let ConfigQuery {
        format,
        services,
        volumes,
        profiles,
        quiet,
    } = query;
    if *profiles {
        // Profiles are listed over every service, enabled or not.
        let mut all = opts.clone();
        all.profiles = vec!["*".into()];
        let project = compose::load(&all)?;
        return print_lines(compose::project_profiles(&project.model));
    }
    let project = compose::load(opts)?;
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
        _ if *quiet => Ok(0),
        _ if *services => print_lines(
            compose::graph::dependency_order(&project.model).map_err(anyhow::Error::msg)?,
        ),
        _ if *volumes => print_lines(keys("volumes")),
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
