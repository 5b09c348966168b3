//! Layers below an output are compressed in the background while the build goes on; the
//! export then reuses those blobs, whose digests are the ones the export would have made.

mod support;

use solver::context::{LocalSource, PlainDir};
use solver::graph::{FileAction, FileOp};
use solver::progress::Progress;
use solver::{Definition, Op, Ref, Solver, SolverConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use support::*;

fn open(store: &Path, ctx: &Path, background: bool) -> Arc<Solver> {
    let mut locals: HashMap<String, Arc<dyn LocalSource>> = HashMap::new();
    locals.insert("context".into(), Arc::new(PlainDir(ctx.to_path_buf())));
    let solver = Solver::new(SolverConfig {
        root: store.to_path_buf(),
        executor: executor::Executor::new("/bin/false".into(), vec![]),
        locals,
        no_cache: false,
        progress: Progress::discard(),
        exec: Default::default(),
        layer_export: Default::default(),
    })
    .unwrap();
    Arc::new(solver.with_background_layers(background))
}

/// A copy of the context's `app` contents into `/` (the layer below), then a file on top
/// (the output). Returns the graph and the copy's vertex.
fn copy_then_file() -> (Definition, usize) {
    let mut def = copy_from_context(&["app"], "/", &Copy::default());
    let copy = def.output.unwrap();
    let top = def.add(vertex(
        Op::File(FileOp {
            actions: vec![FileAction::Mkfile {
                path: "/top".into(),
                data: b"top".to_vec(),
                mode: 0o644,
                chown: None,
            }],
        }),
        vec![copy],
    ));
    def.output = Some(top);
    (def, copy)
}

fn layer_label(solver: &Solver, r: &Ref) -> Option<String> {
    let Ref::Snapshot(name) = r else {
        panic!("not a snapshot: {r:?}")
    };
    let info = solver.snapshots.stat(name).unwrap();
    info.labels.get("builder.layer.digest").cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn layers_below_the_output_are_compressed_in_the_background_with_the_same_digests() {
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("app/a"), "alpha");
    write(&ctx.path().join("app/sub/b"), &"beta".repeat(50_000));
    let (def, copy) = copy_then_file();
    let cancel = executor::CancelToken::new();

    let store = tempfile::tempdir_in("/var/tmp").unwrap();
    let solver = open(store.path(), ctx.path(), true);
    let out = solver.solve(&def, &cancel).await.unwrap();
    solver.wait_background_layers();
    let below = &out.results[copy].as_ref().unwrap().0;
    let made = layer_label(&solver, below).expect("the layer below was not compressed");
    // The output's own layer is left to the export, which needs it at once.
    assert_eq!(layer_label(&solver, &out.output), None);
    let exported = solver.export_layers(&out.output).unwrap();
    assert_eq!(
        exported[0].descriptor.digest, made,
        "the export reused the blob"
    );

    // Without the background, a fresh store exports the same blob for that layer.
    let plain_store = tempfile::tempdir_in("/var/tmp").unwrap();
    let plain = open(plain_store.path(), ctx.path(), false);
    let plain_out = plain.solve(&def, &cancel).await.unwrap();
    let plain_below = &plain_out.results[copy].as_ref().unwrap().0;
    assert_eq!(layer_label(&plain, plain_below), None);
    let plain_layers = plain.export_layers(&plain_out.output).unwrap();
    assert_eq!(plain_layers[0].descriptor.digest, made);
    assert_eq!(plain_layers[0].diff_id, exported[0].diff_id);
}
