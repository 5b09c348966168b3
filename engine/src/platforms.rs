//! Target platforms (`builder build --platform linux/amd64,linux/arm64`): the Dockerfile
//! is lowered once per target platform and the graphs are merged, so stages that do not
//! depend on the target (`FROM --platform=$BUILDPLATFORM ...`) run once; every platform
//! is solved in one parallel walk and exported as one OCI index (see `output`).

use anyhow::{anyhow, bail, Result};
use exporter::image::Platform;
use frontend::lower::{Location, Lowered};
use solver::graph::Definition;

/// Parses a `--platform` list (`linux/amd64,linux/arm64/v8`), normalised and without
/// duplicates; `None` when the flag is absent.
pub fn requested(flag: Option<&str>) -> Result<Option<Vec<Platform>>> {
    let Some(spec) = flag else {
        return Ok(None);
    };
    let mut platforms: Vec<Platform> = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let part = frontend::platform_spec::check(part, &Platform::host().architecture)
            .map_err(|e| anyhow!("--platform: {e}"))?;
        let platform: Platform = part.parse().map_err(|_| {
            anyhow!("--platform {spec:?}: {part:?} is not os/arch[/variant], e.g. linux/arm64")
        })?;
        frontend::platform_spec::check_target(&platform.os, &platform.architecture)
            .map_err(|e| anyhow!("--platform {spec:?}: {e}"))?;
        if !platforms.iter().any(|p| p.matches(&platform)) {
            platforms.push(platform);
        }
    }
    Ok(Some(platforms))
}

/// Names a platform in directory names: `linux/arm/v7` → `linux_arm_v7`, as BuildKit does.
pub fn dir_name(platform: &Platform) -> String {
    platform.to_string().replace('/', "_")
}

/// Adds the platform to a step name: `[build 2/3] RUN x` → `[linux/arm64 build 2/3] RUN x`.
fn platform_step_name(platform: &str, name: &str) -> String {
    match name.strip_prefix('[') {
        Some(rest) => format!("[{platform} {rest}"),
        None => format!("[{platform}] {name}"),
    }
}

/// `--print graph` for a merged graph: every vertex any platform needs, then the outputs.
fn render_graph(def: &Definition, outputs: &[usize], platforms: &[Platform]) -> String {
    let mut text = def.render_vertices(outputs);
    for (platform, output) in platforms.iter().zip(outputs) {
        text.push_str(&format!("output {platform}: #{output}\n"));
    }
    text
}

/// The platform each vertex of a target's graph runs for: its stage's base image's (so a
/// `FROM --platform=$BUILDPLATFORM` stage is labelled with the build platform), or the target's.
fn vertex_platforms(def: &Definition, target: &Platform) -> Vec<String> {
    let mut platforms: Vec<String> = Vec::with_capacity(def.vertices.len());
    for vertex in &def.vertices {
        let platform = match &vertex.op {
            solver::Op::Image { platform, .. } => platform
                .parse::<Platform>()
                .map(|p| p.to_string())
                .unwrap_or_else(|_| platform.clone()),
            _ => match vertex.inputs.first() {
                Some(&first) => platforms[first].clone(),
                None => target.to_string(),
            },
        };
        platforms.push(platform);
    }
    platforms
}

/// One platform's lowered build and where its vertices landed in the merged graph.
pub struct Target {
    pub platform: Platform,
    pub lowered: Lowered,
    placed: Vec<usize>,
}

/// The build graph of every target platform merged into one, so vertices they share
/// (`FROM --platform=$BUILDPLATFORM` stages, the context) are solved once.
pub struct Plan {
    pub graph: Definition,
    /// Each target's output vertex in `graph`.
    pub outputs: Vec<usize>,
    pub targets: Vec<Target>,
}

impl Plan {
    /// Merges the lowerings (one per platform, in the same order). With one platform the
    /// graph is the lowered one, step names unchanged.
    pub fn new(platforms: &[Platform], lowered: Vec<Lowered>) -> Plan {
        let multi = platforms.len() > 1;
        let mut graph = Definition::default();
        let mut targets = Vec::new();
        for (platform, lowered) in platforms.iter().zip(lowered) {
            let stage_platforms = vertex_platforms(&lowered.definition, platform);
            let placed = solver::multi::merge_into(&mut graph, &lowered.definition, |i, n| {
                if multi {
                    platform_step_name(&stage_platforms[i], n)
                } else {
                    n.to_string()
                }
            });
            targets.push(Target {
                platform: platform.clone(),
                lowered,
                placed,
            });
        }
        let outputs: Vec<usize> = targets
            .iter()
            .filter_map(|t| Some(t.placed[t.lowered.definition.output?]))
            .collect();
        graph.output = outputs.first().copied();
        Plan {
            graph,
            outputs,
            targets,
        }
    }

    /// `--print graph`: every vertex any platform needs, then each platform's output.
    pub fn render_graph(&self) -> String {
        if self.targets.len() == 1 {
            return self.graph.render();
        }
        let platforms: Vec<Platform> = self.targets.iter().map(|t| t.platform.clone()).collect();
        render_graph(&self.graph, &self.outputs, &platforms)
    }

    /// The Dockerfile location of a merged vertex, and the platforms it was built for.
    pub fn locate(&self, vertex: Option<usize>) -> (Option<&Location>, String) {
        let owners: Vec<(&Target, usize)> = vertex
            .map(|v| {
                self.targets
                    .iter()
                    .filter_map(|t| Some((t, t.placed.iter().position(|&g| g == v)?)))
                    .collect()
            })
            .unwrap_or_default();
        let location = owners
            .iter()
            .find_map(|(t, local)| t.lowered.locations.get(local));
        let platforms: Vec<String> = owners.iter().map(|(t, _)| t.platform.to_string()).collect();
        (location, platforms.join(", "))
    }
}

/// The platform `builder run --platform` asks for (default: this machine's).
pub fn run_platform(flag: Option<&str>) -> Result<Platform> {
    match flag {
        None => Ok(Platform::host()),
        Some(spec) => spec.parse().map_err(|_| {
            anyhow!("--platform {spec:?}: expected os/arch[/variant], e.g. linux/arm64")
        }),
    }
}

/// A single-platform image asked for with another `--platform` is an error (as with
/// docker); without the flag it runs anyway, emulated when binfmt_misc allows.
pub fn check_image_platform(
    image: &str,
    config: &exporter::ImageConfig,
    wanted: &Platform,
    explicit: bool,
) -> Result<()> {
    let have = config.platform();
    if explicit && !have.architecture.is_empty() && !exporter::platform::compatible(&have, wanted) {
        bail!("image {image} is for {have}, which does not match the requested platform {wanted}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_lists_parse_normalise_and_dedupe() {
        let got = requested(Some("linux/amd64, linux/aarch64,linux/arm64/v8,linux/arm"))
            .unwrap()
            .unwrap();
        let names: Vec<String> = got.iter().map(Platform::to_string).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
        assert!(requested(None).unwrap().is_none());
        let err = requested(Some("linux/amd64,")).unwrap_err().to_string();
        assert!(err.contains("--platform"), "{err}");
    }

    #[test]
    fn step_names_carry_the_platform() {
        assert_eq!(
            platform_step_name("linux/arm64", "[build 2/3] RUN make"),
            "[linux/arm64 build 2/3] RUN make"
        );
        assert_eq!(
            platform_step_name("linux/arm64", "context"),
            "[linux/arm64] context"
        );
        assert_eq!(dir_name(&"linux/arm/v7".parse().unwrap()), "linux_arm_v7");
    }
}
