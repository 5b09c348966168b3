//! The build API called as a library: several requests in one solve share their common
//! steps, a caller's own exporter receives the image, and errors come back typed.

use engine::output::{BoxFuture, ExportContext, Exported, Exporter, ImageFormat, LocalDir};
use engine::{BuildError, BuildRequest, Dockerfile, Event, EventSink, Outcome};
use exporter::image::Descriptor;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Records the image it is given and checks its manifest is in the content store.
#[derive(Debug, Default)]
struct Capture(Mutex<Option<Descriptor>>);

impl Exporter for Capture {
    fn image_format(&self, _epoch: Option<u64>) -> anyhow::Result<Option<ImageFormat>> {
        Ok(Some(ImageFormat::default()))
    }
    fn export<'a>(
        &'a self,
        cx: &'a ExportContext,
        image: Option<Descriptor>,
    ) -> BoxFuture<'a, anyhow::Result<Exported>> {
        Box::pin(async move {
            let image = image.expect("an image output gets an image");
            cx.solver.content.read_blob(&image.digest)?;
            *self.0.lock().unwrap() = Some(image);
            Ok(Exported::default())
        })
    }
}

fn request(dockerfile: &str, context: &Arc<dyn solver::context::LocalSource>) -> BuildRequest {
    let source = Dockerfile::Bytes {
        name: "api.Dockerfile".into(),
        source: dockerfile.as_bytes().to_vec(),
    };
    BuildRequest::new(source, context.clone())
}

fn drain(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    events
}

fn started(events: &[Event], step: &str) -> usize {
    let is_step = |e: &&Event| matches!(e, Event::Step(solver::progress::Event::Started { name, .. }) if name.contains(step));
    events.iter().filter(is_step).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_of_one_build_share_steps_and_exporters_get_the_image() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a.txt"), "A").unwrap();
    std::fs::write(ctx.path().join("b.txt"), "B").unwrap();
    let out = tempfile::tempdir().unwrap();
    let context = engine::context::local_dir(ctx.path(), None).unwrap();
    let capture = Arc::new(Capture::default());
    let mut first = request("FROM scratch\nCOPY a.txt /a.txt\n", &context);
    first.outputs = vec![
        Arc::new(LocalDir {
            dest: out.path().join("one"),
        }),
        capture.clone(),
    ];
    let mut second = request(
        "FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\n",
        &context,
    );
    second.outputs = vec![Arc::new(LocalDir {
        dest: out.path().join("two"),
    })];
    // Without the cache, only merging the requests' graphs can make the step run once.
    (first.no_cache, second.no_cache) = (true, true);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = EventSink::new(tx, Default::default());
    let cancel = executor::CancelToken::new();
    let outcomes = engine::build_many(root.path(), vec![first, second], sink, &cancel)
        .await
        .unwrap();
    let events = drain(rx);
    assert_eq!(
        started(&events, "COPY a.txt"),
        1,
        "the shared step ran once"
    );
    assert_eq!(started(&events, "COPY b.txt"), 1);
    let read = |p: &Path| std::fs::read_to_string(out.path().join(p)).ok();
    assert_eq!(read(Path::new("one/a.txt")).as_deref(), Some("A"));
    assert_eq!(read(Path::new("one/b.txt")), None);
    assert_eq!(read(Path::new("two/b.txt")).as_deref(), Some("B"));
    let [Outcome::Built(one), Outcome::Built(two)] = &outcomes[..] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(one.executed, 2, "two COPY steps in all");
    assert_ne!(one.image.digest, two.image.digest);
    let captured = capture.0.lock().unwrap().clone();
    assert_eq!(captured.as_ref(), Some(&one.image));
    assert_eq!(one.platforms[0].manifest.as_ref(), Some(&one.image));
    assert_eq!(one.platforms[0].config_digest.as_ref(), Some(&one.image_id));
    assert_eq!(one.metadata["containerimage.digest"], one.image.digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dockerfile_error_names_file_line_and_column() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let context = engine::context::local_dir(ctx.path(), None).unwrap();
    let bad = request("FROM scratch\nCOPY --bogus=1 a /a\n", &context);
    let cancel = executor::CancelToken::new();
    let err = engine::build(root.path(), bad, EventSink::discard(), &cancel)
        .await
        .unwrap_err();
    let BuildError::Dockerfile { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(message.starts_with("api.Dockerfile:2:"), "{message}");
    let empty = request("", &context);
    let err = engine::build(root.path(), empty, EventSink::discard(), &cancel)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot be empty"), "{err}");
}
