//! The typed progress stream of a build: the solver's step events plus the Dockerfile's
//! check warnings, delivered in order to one channel the client renders.

use frontend::checks::CheckWarning;
use solver::progress::{Progress, Terminal};
use tokio::sync::mpsc::UnboundedSender;

/// One thing that happened during a build.
#[derive(Clone, Debug)]
pub enum Event {
    /// A step started, was cached, finished, or printed output (see `solver::progress`).
    Step(solver::progress::Event),
    /// A build check warning about the Dockerfile named `file`.
    CheckWarning { file: String, warning: CheckWarning },
    /// A line for the user that is not about a step, e.g. `warning: importing cache ...`.
    Message(String),
}

/// Where a build's events go, and the terminal a live display shares with an interactive
/// step (`--on-error=shell`). Cheap to clone; `EventSink::discard()` drops everything.
#[derive(Clone, Default)]
pub struct EventSink {
    tx: Option<UnboundedSender<Event>>,
    terminal: Terminal,
}

impl EventSink {
    pub fn new(tx: UnboundedSender<Event>, terminal: Terminal) -> Self {
        Self {
            tx: Some(tx),
            terminal,
        }
    }

    pub fn discard() -> Self {
        Self::default()
    }

    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    /// The solver's progress handle, forwarding its events as [`Event::Step`] until the
    /// returned task ends (when every clone of the handle is dropped).
    pub(crate) fn solver_progress(&self) -> (Progress, tokio::task::JoinHandle<()>) {
        let Some(tx) = self.tx.clone() else {
            return (Progress::discard(), tokio::spawn(async {}));
        };
        let (step_tx, mut step_rx) = tokio::sync::mpsc::unbounded_channel();
        let forward = tokio::spawn(async move {
            while let Some(event) = step_rx.recv().await {
                let _ = tx.send(Event::Step(event));
            }
        });
        let progress = Progress::new(step_tx).with_terminal(self.terminal.clone());
        (progress, forward)
    }
}
