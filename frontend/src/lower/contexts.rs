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
