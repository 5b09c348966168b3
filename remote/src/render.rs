//! The in-process backend's progress, rendered on the server as a local build renders it to
//! a pipe (BuildKit's plain lines, or rawjson), and streamed to the client as its stderr.

use crate::backend::BuildEvent;
use solver::progress::Event;
use std::io::Write as _;
use tokio::sync::mpsc;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Rawjson,
    Quiet,
}

impl Mode {
    pub fn from_flag(value: Option<&str>) -> Mode {
        match value {
            Some("rawjson") => Mode::Rawjson,
            Some("quiet") => Mode::Quiet,
            _ => Mode::Plain,
        }
    }
}

/// Renders events until the channel closes, sending the text as stderr; returns the
/// check warnings' summary lines for the end of the build.
pub async fn forward(
    mut rx: mpsc::UnboundedReceiver<engine::Event>,
    mode: Mode,
    out: mpsc::Sender<BuildEvent>,
) -> Vec<String> {
    let mut summary = Vec::new();
    let mut plain = engine::render::Plain::default();
    while let Some(ev) = rx.recv().await {
        let mut text = Vec::new();
        let step = match ev {
            engine::Event::Step(step) => step,
            engine::Event::Message(line) => {
                let _ = writeln!(text, "{line}");
                let _ = out.send(BuildEvent::Stderr(text)).await;
                continue;
            }
            engine::Event::CheckWarning { file, warning: w } => match mode {
                Mode::Quiet => continue,
                Mode::Rawjson => Event::Warning {
                    message: format!("{file}:{}:{}: {}: {}", w.line, w.column, w.rule, w.message),
                },
                Mode::Plain => {
                    summary.push(format!("{}: {} (line {})", w.rule, w.message, w.line));
                    let _ = writeln!(text, "{}", w.display());
                    let _ = out.send(BuildEvent::Stderr(text)).await;
                    continue;
                }
            },
        };
        match mode {
            Mode::Quiet => continue,
            Mode::Rawjson => {
                let _ = serde_json::to_writer(&mut text, &step);
                text.push(b'\n');
            }
            Mode::Plain => plain.handle(&mut text, step),
        }
        let _ = out.send(BuildEvent::Stderr(text)).await;
    }
    summary
}

/// The `N warnings found:` block a build ends with.
pub fn summary_text(lines: &[String]) -> Vec<u8> {
    let mut text = Vec::new();
    if !lines.is_empty() {
        let n = lines.len();
        let _ = writeln!(text, "{n} warning{} found:", if n == 1 { "" } else { "s" });
        for line in lines {
            let _ = writeln!(text, " - {line}");
        }
    }
    text
}
