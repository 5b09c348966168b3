//! Renders solver progress events for people (tty, plain) or tools (rawjson).

use serde::Deserialize;
use solver::progress::Event;
use std::collections::HashMap;
use std::io::{IsTerminal as _, Write};

mod tty;

/// `--progress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProgressMode {
    #[default]
    Auto,
    Tty,
    Plain,
    Rawjson,
    Quiet,
}

impl ProgressMode {
    /// `auto` becomes `tty` on a terminal (unless TERM=dumb) and `plain` elsewhere, like buildx.
    fn resolve(self) -> ProgressMode {
        if self != ProgressMode::Auto {
            return self;
        }
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if std::io::stderr().is_terminal() && !dumb {
            ProgressMode::Tty
        } else {
            ProgressMode::Plain
        }
    }
}

/// Prints events to stderr until the channel closes; returns the check warnings' summary
/// lines (`Rule: message (line N)`) for the end of the build.
pub async fn render(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<crate::Event>,
    mode: ProgressMode,
    terminal: solver::progress::Terminal,
) -> Vec<String> {
    let mode = mode.resolve();
    let mut summary = Vec::new();
    let mut view = (mode == ProgressMode::Tty).then(tty::TtyView::new);
    if let Some(view) = &view {
        terminal.set_suspend(view.suspender());
    }
    let mut plain = Plain::default();
    while let Some(ev) = rx.recv().await {
        let step = match ev {
            crate::Event::Step(step) => step,
            crate::Event::Message(line) => {
                eprintln!("{line}");
                continue;
            }
            crate::Event::CheckWarning { file, warning: w } => match mode {
                ProgressMode::Quiet => continue,
                ProgressMode::Rawjson => Event::Warning {
                    message: format!("{file}:{}:{}: {}: {}", w.line, w.column, w.rule, w.message),
                },
                _ => {
                    summary.push(format!("{}: {} (line {})", w.rule, w.message, w.line));
                    eprintln!("{}", w.display());
                    continue;
                }
            },
        };
        match (&mut view, mode) {
            (Some(view), _) => view.handle(step),
            (None, ProgressMode::Quiet) => {}
            (None, ProgressMode::Rawjson) => {
                let mut out = std::io::stderr().lock();
                let _ = serde_json::to_writer(&mut out, &step);
                let _ = writeln!(out);
            }
            (None, _) => plain.handle(&mut std::io::stderr().lock(), step),
        }
    }
    if let Some(view) = view {
        view.finish();
    }
    summary
}

/// Step numbers in order of first appearance, as BuildKit numbers them.
#[derive(Default)]
struct Numbering(HashMap<usize, usize>);

impl Numbering {
    fn of(&mut self, vertex: usize) -> usize {
        let next = self.0.len() + 1;
        *self.0.entry(vertex).or_insert(next)
    }
}

/// BuildKit-style plain output: numbered step lines and every log line, never clipped.
/// The build server renders its builds' progress with it too.
#[derive(Default)]
pub struct Plain {
    numbers: Numbering,
    started: HashMap<usize, f64>,
    /// The vertex whose lines were printed last: BuildKit sets each run of lines about one
    /// vertex apart with a blank line.
    current: Option<usize>,
}

impl Plain {
    fn switch_to(&mut self, out: &mut impl Write, vertex: usize) {
        if self.current.is_some_and(|c| c != vertex) {
            let _ = writeln!(out);
        }
        self.current = Some(vertex);
    }

    /// Writes one progress event's lines to `out`.
    pub fn handle(&mut self, out: &mut impl Write, ev: Event) {
        match ev {
            Event::Started { vertex, name, time } => {
                self.switch_to(out, vertex);
                let n = self.numbers.of(vertex);
                self.started.insert(vertex, time);
                let _ = writeln!(out, "#{n} {name}");
            }
            Event::Cached { vertex, name, .. } => {
                self.switch_to(out, vertex);
                let n = self.numbers.of(vertex);
                let _ = writeln!(out, "#{n} {name}\n#{n} CACHED");
            }
            Event::Completed {
                vertex,
                time,
                error,
                ..
            } => {
                self.switch_to(out, vertex);
                let n = self.numbers.of(vertex);
                let took = time - self.started.get(&vertex).copied().unwrap_or(time);
                let _ = match error {
                    None => writeln!(out, "#{n} DONE {took:.1}s"),
                    Some(e) => writeln!(out, "#{n} ERROR: {e}"),
                };
            }
            Event::Log { vertex, data, .. } => {
                self.switch_to(out, vertex);
                let n = self.numbers.of(vertex);
                // Seconds since the step started, as BuildKit stamps log lines.
                let now = solver::progress::now();
                let at = now - self.started.get(&vertex).copied().unwrap_or(now);
                for line in data.lines() {
                    let _ = writeln!(out, "#{n} {at:.3} {line}");
                }
            }
            Event::Warning { message } => {
                let _ = writeln!(out, "WARNING: {message}");
            }
        }
    }
}
