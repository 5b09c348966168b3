//! Solving several outputs of one graph at once: a multi-platform build lowers the
//! Dockerfile once per platform, merges the graphs (identical vertices, such as
//! `FROM --platform=$BUILDPLATFORM` stages, collapse into one) and solves every
//! platform's output in a single walk.

use crate::graph::{Definition, Vertex};
use crate::solve::Ref;

/// What a multi-output solve produced.
#[derive(Debug)]
pub struct MultiSolveOutput {
    /// One result per requested output, in the order asked.
    pub outputs: Vec<Ref>,
    /// Vertices that really ran.
    pub executed: usize,
    /// Vertices answered from the cache.
    pub cached: usize,
    /// Each vertex's result and cache key (None for vertices no output needs).
    pub results: Vec<Option<(Ref, String)>>,
}

/// Adds every vertex of `part` to `combined` (reusing identical ones) and returns where
/// each of `part`'s vertices ended up. `rename(index, name)` may relabel vertices (e.g.
/// with their platform); a reused vertex keeps the name it was first added with.
pub fn merge_into(
    combined: &mut Definition,
    part: &Definition,
    rename: impl Fn(usize, &str) -> String,
) -> Vec<usize> {
    let mut placed: Vec<usize> = Vec::with_capacity(part.vertices.len());
    for (index, vertex) in part.vertices.iter().enumerate() {
        let inputs = vertex.inputs.iter().map(|&i| placed[i]).collect();
        placed.push(combined.add(Vertex {
            op: vertex.op.clone(),
            inputs,
            name: rename(index, &vertex.name),
            ignore_cache: vertex.ignore_cache,
        }));
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Op;

    fn image(reference: &str, platform: &str) -> Vertex {
        Vertex {
            op: Op::Image {
                reference: reference.into(),
                platform: platform.into(),
            },
            inputs: vec![],
            name: format!("FROM {reference}"),
            ignore_cache: false,
        }
    }

    #[test]
    fn merging_shares_identical_vertices_and_keeps_distinct_ones() {
        let mut amd64 = Definition::default();
        let shared = amd64.add(image("busybox@sha256:aa", "linux/amd64"));
        amd64.output = Some(shared);
        let mut arm64 = Definition::default();
        arm64.add(image("busybox@sha256:bb", "linux/arm64"));
        let shared_again = arm64.add(image("busybox@sha256:aa", "linux/amd64"));
        arm64.output = Some(shared_again);

        let mut combined = Definition::default();
        let a = merge_into(&mut combined, &amd64, |_, n| format!("[amd64] {n}"));
        let b = merge_into(&mut combined, &arm64, |_, n| format!("[arm64] {n}"));
        assert_eq!(combined.vertices.len(), 2);
        assert_eq!(a[shared], b[shared_again]);
        assert_eq!(
            combined.vertices[a[shared]].name,
            "[amd64] FROM busybox@sha256:aa"
        );
        assert_eq!(combined.reachable_from(&[b[0]]), vec![b[0]]);
        assert_eq!(combined.reachable_from(&[a[0], b[0]]).len(), 2);
    }
}
