//! Live terminal view: one line per running step with its elapsed time and the newest line
//! of its log; finished steps stay as one line each; a failed step's log tail is printed.

use super::Numbering;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use solver::progress::Event;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Log lines of a failed step shown after the build, as BuildKit's tty mode does.
const ERROR_LOG_TAIL: usize = 20;

struct Step {
    bar: ProgressBar,
    label: String,
    log_tail: VecDeque<String>,
    partial: String,
}

pub struct TtyView {
    multi: MultiProgress,
    numbers: Numbering,
    steps: HashMap<usize, Step>,
    started_at: HashMap<usize, f64>,
    failures: Vec<(String, Vec<String>)>,
    header: ProgressBar,
    finished: usize,
}

impl TtyView {
    pub fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("[+] Building {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        header.enable_steady_tick(Duration::from_millis(100));
        TtyView {
            multi,
            numbers: Numbering::default(),
            steps: HashMap::new(),
            started_at: HashMap::new(),
            failures: Vec::new(),
            header,
            finished: 0,
        }
    }

    /// Clears the display and stops redrawing it while a closure runs.
    pub fn suspender(&self) -> solver::progress::Suspend {
        let multi = self.multi.clone();
        std::sync::Arc::new(move |f: &mut dyn FnMut()| multi.suspend(f))
    }

    fn count(&mut self) {
        self.finished += 1;
        self.header
            .set_message(format!("({}/{})", self.finished, self.numbers.0.len()));
    }

    fn running_style() -> ProgressStyle {
        ProgressStyle::with_template(" {spinner:.cyan} {prefix} {elapsed:>4} {wide_msg:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn done_style() -> ProgressStyle {
        ProgressStyle::with_template(" {prefix} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn finished_line(&self, label: &str, status: &str) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(Self::done_style());
        bar.set_prefix(label.to_string());
        bar.finish_with_message(status.to_string());
    }

    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::Started { vertex, name, time } => {
                let label = format!("#{} {name}", self.numbers.of(vertex));
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(Self::running_style());
                bar.set_prefix(label.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                self.started_at.insert(vertex, time);
                self.steps.insert(
                    vertex,
                    Step {
                        bar,
                        label,
                        log_tail: VecDeque::new(),
                        partial: String::new(),
                    },
                );
            }
            Event::Cached { vertex, name, .. } => {
                let label = format!("#{} {name}", self.numbers.of(vertex));
                self.finished_line(&label, "CACHED");
                self.count();
            }
            Event::Completed {
                vertex,
                time,
                error,
                name,
            } => {
                let took = time - self.started_at.get(&vertex).copied().unwrap_or(time);
                self.count();
                let Some(step) = self.steps.remove(&vertex) else {
                    let label = format!("#{} {name}", self.numbers.of(vertex));
                    self.finished_line(&label, &format!("DONE {took:.1}s"));
                    return;
                };
                step.bar.set_style(Self::done_style());
                match error {
                    None => step.bar.finish_with_message(format!("DONE {took:.1}s")),
                    Some(e) => {
                        step.bar.finish_with_message(format!("ERROR {took:.1}s"));
                        let mut lines: Vec<String> = step.log_tail.into_iter().collect();
                        if !step.partial.is_empty() {
                            lines.push(step.partial);
                        }
                        lines.push(format!("ERROR: {e}"));
                        self.failures.push((step.label, lines));
                    }
                }
            }
            Event::Log { vertex, data, .. } => {
                let Some(step) = self.steps.get_mut(&vertex) else {
                    return;
                };
                step.partial.push_str(&data);
                while let Some(nl) = step.partial.find('\n') {
                    let line: String = step.partial.drain(..=nl).collect();
                    let line = line.trim_end().to_string();
                    step.bar.set_message(line.clone());
                    step.log_tail.push_back(line);
                    if step.log_tail.len() > ERROR_LOG_TAIL {
                        step.log_tail.pop_front();
                    }
                }
            }
            Event::Warning { message } => {
                let _ = self.multi.println(format!("WARNING: {message}"));
            }
        }
    }

    pub fn finish(self) {
        for step in self.steps.values() {
            step.bar.abandon_with_message("CANCELED");
        }
        let status = if self.failures.is_empty() {
            "FINISHED"
        } else {
            "FAILED"
        };
        self.header.finish_with_message(format!(
            "({}/{}) {status}",
            self.finished,
            self.numbers.0.len()
        ));
        let mut err = std::io::stderr().lock();
        use std::io::Write as _;
        for (label, lines) in &self.failures {
            let _ = writeln!(err, "------\n > {label}:");
            for l in lines {
                let _ = writeln!(err, "{l}");
            }
            let _ = writeln!(err, "------");
        }
    }
}
