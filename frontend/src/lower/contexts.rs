//! Named build contexts (`--build-context name=VALUE`).

use super::*;

/// What a named build context stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory, served to the solver as the `Local` source `local_name`.
    Local { local_name: String },
    /// `docker-image://REF`.
    Image { reference: String },
    /// `oci-layout://PATH[@digest]`.
    OciLayout { path: String },
}

impl NamedContext {
    /// Parses a `--build-context` value; `local_name` is what a local directory is served as.
    pub fn parse(value: &str, local_name: &str) -> Result<Self, String> {
        if let Some(r) = value.strip_prefix("docker-image://") {
            if r.is_empty() {
                return Err("docker-image:// needs an image reference".into());
            }
            return Ok(NamedContext::Image {
                reference: r.to_string(),
            });
        }
        if let Some(p) = value.strip_prefix("oci-layout://") {
            return Ok(NamedContext::OciLayout {
                path: p.to_string(),
            });
        }
        if value.contains("://") {
            return Err(format!(
                "unsupported context source {value:?}; use a directory, docker-image://REF or oci-layout://PATH"
            ));
        }
        Ok(NamedContext::Local {
            local_name: local_name.to_string(),
        })
    }
}

impl Lowerer<'_> {
    fn named_context(&self, reference: &str) -> Option<&NamedContext> {
        self.opts
            .named_contexts
            .get(reference)
            .or_else(|| self.opts.named_contexts.get(&reference.to_lowercase()))
    }

    /// The root vertex and (for images) config of a named context called `reference`.
    pub(super) fn named_context_base(
        &mut self,
        ins: &Instruction,
        reference: &str,
        platform: &str,
        resolver: &dyn ImageResolver,
    ) -> Result<Option<(usize, Option<ImageConfig>)>, DockerfileError> {
        let Some(ctx) = self.named_context(reference).cloned() else {
            return Ok(None);
        };
        match ctx {
            NamedContext::Local { local_name } => {
                let v = self.add(
                    Vertex {
                        op: Op::Local { name: local_name },
                        inputs: vec![],
                        name: format!("[context {reference}] load build context"),
                        ignore_cache: false,
                    },
                    None,
                );
                Ok(Some((v, None)))
            }
            NamedContext::Image { reference: image } => {
                let (pinned, config) = resolver
                    .resolve(&image, platform)
                    .map_err(|e| self.err(ins, format!("build context {reference:?}: {e:#}")))?;
                let v = self.add(
                    Vertex {
                        op: Op::Image {
                            reference: pinned,
                            platform: platform.to_string(),
                        },
                        inputs: vec![],
                        name: format!("[context {reference}] FROM {image}"),
                        ignore_cache: false,
                    },
                    Some(ins),
                );
                Ok(Some((v, Some(config))))
            }
            NamedContext::OciLayout { path } => Err(self.err(
                ins,
                format!("build context {reference:?}: oci-layout://{path} contexts are not supported yet"),
            )),
        }
    }
}

impl Lowerer<'_> {
    /// The base of a stage `FROM name` where `name` is a named context. A local directory
    /// becomes a root filesystem by copying it onto scratch: the solver serves a `Local`
    /// only as a source of files, never as a snapshot a step can run on.
    pub(super) fn named_context_stage_base(
        &mut self,
        ins: &Instruction,
        reference: &str,
        platform: &str,
        resolver: &dyn ImageResolver,
    ) -> Result<Option<(usize, Option<ImageConfig>)>, DockerfileError> {
        let Some((v, config)) = self.named_context_base(ins, reference, platform, resolver)? else {
            return Ok(None);
        };
        if !matches!(self.def.vertices[v].op, Op::Local { .. }) {
            return Ok(Some((v, config)));
        }
        let scratch = self.or_scratch(None);
        let rootfs = self.add(
            Vertex {
                op: Op::File(FileOp {
                    actions: vec![FileAction::Copy {
                        src_input: 1,
                        sources: vec![".".into()],
                        dest: "/".into(),
                        chown: None,
                        chmod: None,
                        exclude: vec![],
                        parents: false,
                        unpack: false,
                    }],
                }),
                inputs: vec![scratch, v],
                name: format!("[context {reference}] root filesystem"),
                ignore_cache: false,
            },
            Some(ins),
        );
        Ok(Some((rootfs, config)))
    }
}

impl Lowerer<'_> {
    /// The vertex of a named context, for `COPY --from` and `RUN --mount=from`.
    pub(super) fn named_context_vertex(
        &mut self,
        cx: &steps::StageCtx,
        ins: &Instruction,
        reference: &str,
        platform: &str,
    ) -> Result<Option<usize>, DockerfileError> {
        Ok(self
            .named_context_base(ins, reference, platform, cx.resolver)?
            .map(|(v, _)| v))
    }
}
