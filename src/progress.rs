//! Renders solver progress events for people (plain) or tools (rawjson).

use solver::progress::Event;
use std::collections::HashMap;
use std::io::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Rawjson,
    Quiet,
}

/// Prints events to stderr until the channel closes.
pub async fn render(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>, mode: ProgressMode) {
    let start = solver::progress::now();
    let mut numbers: HashMap<usize, usize> = HashMap::new();
    let mut started: HashMap<usize, f64> = HashMap::new();
    let stderr = std::io::stderr();
    while let Some(ev) = rx.recv().await {
        let mut out = stderr.lock();
        match mode {
            ProgressMode::Quiet => {}
            ProgressMode::Rawjson => {
                let _ = serde_json::to_writer(&mut out, &ev);
                let _ = writeln!(out);
            }
            ProgressMode::Auto | ProgressMode::Tty | ProgressMode::Plain => {
                let next = numbers.len() + 1;
                match ev {
                    Event::Started { vertex, name, time } => {
                        let n = *numbers.entry(vertex).or_insert(next);
                        started.insert(vertex, time);
                        let _ = writeln!(out, "#{n} {name}");
                    }
                    Event::Cached { vertex, name, .. } => {
                        let n = *numbers.entry(vertex).or_insert(next);
                        let _ = writeln!(out, "#{n} {name}\n#{n} CACHED");
                    }
                    Event::Completed {
                        vertex,
                        time,
                        error,
                        ..
                    } => {
                        let n = *numbers.entry(vertex).or_insert(next);
                        let took = time - started.get(&vertex).copied().unwrap_or(time);
                        match error {
                            None => {
                                let _ = writeln!(out, "#{n} DONE {took:.1}s");
                            }
                            Some(e) => {
                                let _ = writeln!(out, "#{n} ERROR: {e}");
                            }
                        }
                    }
                    Event::Log { vertex, data, .. } => {
                        let n = *numbers.entry(vertex).or_insert(next);
                        let at = solver::progress::now() - start;
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
    }
}
