//! Merge ops (`COPY --link`): linked layers survive a changed base unchanged.

mod support;

use solver::graph::{FileAction, FileOp};
use solver::{Definition, Op};
use support::*;

/// base: a file op writing /base (content `base`) and /shared; link: a copy of the
/// context's `app` onto scratch; result: merge(base, link).
fn linked(base: &str) -> (Definition, usize) {
    let mut def = Definition::default();
    let scratch = def.add(vertex(Op::Scratch, vec![]));
    let ctx = def.add(vertex(
        Op::Local {
            name: "context".into(),
        },
        vec![],
    ));
    let mkfile = |path: &str, data: &str| FileAction::Mkfile {
        path: path.into(),
        data: data.as_bytes().to_vec(),
        mode: 0o644,
        chown: None,
    };
    let base = def.add(vertex(
        Op::File(FileOp {
            actions: vec![mkfile("/base", base), mkfile("/app/shared", "from base")],
        }),
        vec![scratch],
    ));
    let link = def.add(vertex(
        Op::File(FileOp {
            actions: vec![copy_action(&["app"], "/app/", &Copy::default(), 1)],
        }),
        vec![scratch, ctx],
    ));
    let merged = def.add(vertex(Op::Merge, vec![base, link]));
    def.output = Some(merged);
    (def, link)
}

fn blob_listing(env: &Env, digest: &str) -> String {
    let path = env.solver.content.blob_path(digest);
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn link_layer_is_reused_unchanged_on_a_new_base() {
    let env = Env::new(&[("app/main", "main"), ("app/shared", "from link")]);
    let (v1, _) = linked("one");
    let out1 = env.solve(&v1).await.unwrap();
    let tree = env.export(&out1.output);
    assert_eq!(
        listing(tree.path()),
        ["app/", "app/main", "app/shared", "base"]
    );
    assert_eq!(
        std::fs::read_to_string(tree.path().join("app/shared")).unwrap(),
        "from link",
        "the linked layer is on top"
    );
    let layers1 = env.solver.export_layers(&out1.output).unwrap();
    assert_eq!(layers1.len(), 2);
    // The linked layer's blob holds only what the copy wrote (checked with tar).
    let listed = blob_listing(&env, &layers1[1].descriptor.digest);
    assert!(
        listed.contains("app/main") && !listed.contains("base"),
        "{listed}"
    );

    let (v2, _) = linked("two");
    let out2 = env.solve(&v2).await.unwrap();
    // Rebuilt: the new base and the merge; the link step itself came from the cache.
    assert_eq!(out2.executed, 2, "only base and merge run again");
    let layers2 = env.solver.export_layers(&out2.output).unwrap();
    assert_eq!(layers2.len(), 2);
    assert_ne!(layers1[0].descriptor.digest, layers2[0].descriptor.digest);
    assert_eq!(layers1[1].descriptor.digest, layers2[1].descriptor.digest);
    assert_eq!(layers1[1].diff_id, layers2[1].diff_id);
    let tree = env.export(&out2.output);
    assert_eq!(
        std::fs::read_to_string(tree.path().join("base")).unwrap(),
        "two"
    );
    assert_eq!(
        std::fs::read_to_string(tree.path().join("app/main")).unwrap(),
        "main"
    );

    // Same graph again: everything cached.
    let out3 = env.solve(&v2).await.unwrap();
    assert_eq!(out3.executed, 0);
    assert_eq!(out3.output, out2.output);
}
