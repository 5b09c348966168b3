//! Multi-platform builds (`builder build --platform linux/amd64,linux/arm64`): the
//! Dockerfile is lowered once per target platform, the graphs are merged so stages that
//! do not depend on the target (`FROM --platform=$BUILDPLATFORM ...`) run once, every
//! platform is solved in one parallel walk, and the images are exported as one OCI index.

use crate::build::{parse_build_args, parse_output, BuildArgs, Output, SolverResolver};
use crate::progress::render;
use anyhow::{anyhow, bail, Context as _, Result};
use exporter::image::{Descriptor, Platform};
use frontend::lower::{BuildOptions, Lowered};
use solver::graph::Definition;
use solver::{Solver, SolverConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Parses a `--platform` list (`linux/amd64,linux/arm64/v8`), normalised and without
/// duplicates; `None` when the flag is absent.
pub fn requested(flag: Option<&str>) -> Result<Option<Vec<Platform>>> {
    let Some(spec) = flag else {
        return Ok(None);
    };
    let mut platforms: Vec<Platform> = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let platform: Platform = part.parse().map_err(|_| {
            anyhow!("--platform {spec:?}: {part:?} is not os/arch[/variant], e.g. linux/arm64")
        })?;
        if !platforms.iter().any(|p| p.matches(&platform)) {
            platforms.push(platform);
        }
    }
    Ok(Some(platforms))
}

/// Names a platform in directory names: `linux/arm/v7` → `linux_arm_v7`, as BuildKit does.
fn dir_name(platform: &Platform) -> String {
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
    use std::fmt::Write as _;
    let digests = def.digests();
    let mut text = String::new();
    for i in solver::multi::reachable_from(def, outputs) {
        let vertex = &def.vertices[i];
        let _ = writeln!(text, "#{i} {}  {}", vertex.name, &digests[i][7..19]);
        let _ = writeln!(text, "    inputs: {:?}", vertex.inputs);
        let op = serde_json::to_string(&vertex.op).unwrap_or_default();
        let _ = writeln!(text, "    op: {op}");
    }
    for (platform, output) in platforms.iter().zip(outputs) {
        let _ = writeln!(text, "output {platform}: #{output}");
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
struct PlatformPlan {
    platform: Platform,
    lowered: Lowered,
    placed: Vec<usize>,
}

pub async fn build(root: &Path, args: BuildArgs, platforms: Vec<Platform>) -> Result<i32> {
    let outputs = args
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<Vec<_>>>()?;
    if outputs.iter().any(|o| matches!(o, Output::Docker(_))) {
        bail!("--output type=docker holds one image and cannot hold a multi-platform build; use type=oci");
    }
    let build_args = parse_build_args(&args.build_args)?;
    crate::platform_flags::refuse_unsupported(&args)?;
    let exec_config =
        crate::secrets::exec_config(&args.secrets, &args.ssh, args.on_error.as_deref())?;
    let no_cache_stages = crate::cache_flags::parse_no_cache_filter(&args.no_cache_filter)?;
    let context = args
        .context
        .canonicalize()
        .with_context(|| format!("build context {}", args.context.display()))?;
    if !context.is_dir() {
        bail!("build context {} is not a directory", context.display());
    }
    let dockerfile_path = args
        .file
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let source = std::fs::read(&dockerfile_path)
        .with_context(|| format!("reading Dockerfile {}", dockerfile_path.display()))?;
    let display_name = dockerfile_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "Dockerfile".into());
    let ast = match frontend::parse(&source) {
        Ok(ast) => ast,
        Err(e) => {
            let err = frontend::lower::DockerfileError {
                file: display_name,
                line: e.line,
                column: e.column,
                message: e.message.clone(),
                source_line: String::from_utf8_lossy(&source)
                    .lines()
                    .nth(e.line.saturating_sub(1))
                    .map(str::to_string),
            };
            eprintln!("error: {err}");
            return Ok(1);
        }
    };

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let renderer = tokio::spawn(render(rx, args.progress));
    let context_dir = frontend::ignore::ContextDir::open(&context, args.file.as_deref())
        .map_err(|e| anyhow!(e))?;
    let mut locals: HashMap<String, Arc<dyn solver::context::LocalSource>> = HashMap::new();
    locals.insert(frontend::lower::CONTEXT_NAME.into(), Arc::new(context_dir));
    let named_contexts =
        crate::build_context::parse_build_contexts(&args.build_contexts, &mut locals)?;
    let solver = Arc::new(Solver::new(SolverConfig {
        root: root.to_path_buf(),
        executor: executor::Executor::current_exe()?,
        locals,
        no_cache: args.no_cache,
        progress: solver::progress::Progress::new(tx),
        exec: exec_config,
    })?);

    // Lower once per platform; base images resolve per platform, BUILDPLATFORM ones once.
    let build_platform = Platform::host().to_string();
    let ast = Arc::new(ast);
    let source = Arc::new(source);
    let mut combined = Definition::default();
    let mut plans: Vec<PlatformPlan> = Vec::new();
    // Lowerings run concurrently: each may pull its platform's base images.
    let lowerings: Vec<_> = platforms
        .iter()
        .map(|platform| {
            let opts = BuildOptions {
                dockerfile_name: display_name.clone(),
                build_args: build_args.clone(),
                target: args.target.clone(),
                platform: platform.to_string(),
                build_platform: build_platform.clone(),
                no_cache_stages: no_cache_stages.clone(),
                named_contexts: named_contexts.clone(),
                ..Default::default()
            };
            let resolver = SolverResolver {
                solver: solver.clone(),
                runtime: tokio::runtime::Handle::current(),
            };
            let (ast, source) = (ast.clone(), source.clone());
            tokio::task::spawn_blocking(move || {
                frontend::lower::lower(&ast, &source, &opts, &resolver)
            })
        })
        .collect();
    for (platform, lowering) in platforms.iter().zip(lowerings) {
        let lowered = match lowering.await? {
            Ok(l) => l,
            Err(e) => {
                drop(solver);
                let _ = renderer.await;
                eprintln!("error: {e} (platform {platform})");
                return Ok(1);
            }
        };
        let built_for = lowered.image.platform();
        if !built_for.architecture.is_empty()
            && !exporter::platform::compatible(&built_for, platform)
        {
            // BuildKit goes on too (its InvalidBaseImagePlatform check only warns).
            eprintln!(
                "warning: the {platform} image is built on a base image for {built_for}; \
                 the base image has no {platform} variant"
            );
        }
        let stage_platforms = vertex_platforms(&lowered.definition, platform);
        let placed = solver::multi::merge_into(&mut combined, &lowered.definition, |i, n| {
            platform_step_name(&stage_platforms[i], n)
        });
        plans.push(PlatformPlan {
            platform: platform.clone(),
            lowered,
            placed,
        });
    }
    let outputs_in_graph: Vec<usize> = plans
        .iter()
        .map(|p| {
            let output = p
                .lowered
                .definition
                .output
                .expect("lowering sets the output");
            p.placed[output]
        })
        .collect();
    if args.print.as_deref() == Some("graph") {
        print!("{}", render_graph(&combined, &outputs_in_graph, &platforms));
        return Ok(0);
    } else if let Some(p) = &args.print {
        bail!("--print {p:?}: unknown; supported: graph");
    }

    let cancel = executor::CancelToken::new();
    let ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        })
    };
    let solved = solver
        .solve_outputs(&combined, &outputs_in_graph, &cancel)
        .await;
    ctrl_c.abort();
    let solved = match solved {
        Ok(s) => s,
        Err(e) => {
            // Map the failing merged vertex back to a Dockerfile line and its platforms.
            let owners: Vec<(&PlatformPlan, usize)> = e
                .vertex
                .map(|v| {
                    plans
                        .iter()
                        .filter_map(|p| Some((p, p.placed.iter().position(|&g| g == v)?)))
                        .collect()
                })
                .unwrap_or_default();
            let location = owners
                .iter()
                .find_map(|(p, local)| p.lowered.locations.get(local));
            let failed_for = owners
                .iter()
                .map(|(p, _)| p.platform.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            drop(solver);
            let _ = renderer.await;
            if cancel.is_cancelled() && e.vertex.is_none() {
                eprintln!("error: build cancelled");
                return Ok(130);
            }
            match location {
                Some(loc) => {
                    let src = String::from_utf8_lossy(&source);
                    eprintln!(
                        "error: [{failed_for}] {display_name}:{}: {}\n {:>4} | {}\nfailed to solve: {e}",
                        loc.line,
                        loc.text,
                        loc.line,
                        src.lines().nth(loc.line - 1).unwrap_or("")
                    );
                }
                None => eprintln!("error: failed to solve: {e}"),
            }
            return Ok(1);
        }
    };

    // Export every platform's image concurrently, then one index over them.
    let created = exporter::now_rfc3339();
    let mut exports = tokio::task::JoinSet::new();
    for (position, (plan, out_ref)) in plans.iter().zip(&solved.outputs).enumerate() {
        let solver = solver.clone();
        let out_ref = out_ref.clone();
        let mut config = plan.lowered.image.clone();
        let platform = plan.platform.clone();
        let created = created.clone();
        exports.spawn_blocking(move || -> Result<(usize, Descriptor)> {
            let layers = solver.export_layers(&out_ref)?;
            config.rootfs.kind = "layers".into();
            config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
            config.created = Some(created.clone());
            for h in config.history.iter_mut().filter(|h| h.created.is_none()) {
                h.created = Some(created.clone());
            }
            let descriptors: Vec<_> = layers.iter().map(|l| l.descriptor.clone()).collect();
            let mut manifest = exporter::write_image(&solver.content, &config, &descriptors)?;
            manifest.platform = Some(platform);
            Ok((position, manifest))
        });
    }
    let mut manifests: Vec<Option<Descriptor>> = vec![None; plans.len()];
    while let Some(joined) = exports.join_next().await {
        let (position, manifest) = joined.context("export task")??;
        manifests[position] = Some(manifest);
    }
    let manifests: Vec<Descriptor> = manifests.into_iter().flatten().collect();
    let index = exporter::write_index(&solver.content, &manifests)?;
    for t in &args.tags {
        solver.images.tag(t, &index)?;
    }
    if args.push {
        crate::push::push_tags(&solver.content, &args.tags, &index).await?;
    }
    for o in &outputs {
        match o {
            Output::Oci(dest) => {
                let f = std::fs::File::create(dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                exporter::export_oci_archive(
                    &solver.content,
                    &index,
                    args.tags.first().map(String::as_str),
                    std::io::BufWriter::new(f),
                )?;
            }
            Output::Local(dest) => {
                for (plan, out_ref) in plans.iter().zip(&solved.outputs) {
                    let s2 = solver.clone();
                    let (r, d) = (out_ref.clone(), dest.join(dir_name(&plan.platform)));
                    tokio::task::spawn_blocking(move || s2.export_local(&r, &d)).await??;
                }
            }
            Output::Docker(_) => unreachable!("rejected above"),
        }
    }
    if let Some(p) = &args.iidfile {
        std::fs::write(p, &index.digest)?;
    }
    drop(solver);
    let _ = renderer.await;
    eprintln!(
        "built {} for {} ({} steps run, {} cached)",
        index.digest,
        platforms
            .iter()
            .map(Platform::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        solved.executed,
        solved.cached
    );
    for t in &args.tags {
        eprintln!("naming to {t}");
    }
    Ok(0)
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
