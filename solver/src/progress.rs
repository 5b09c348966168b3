//! Progress events emitted while solving, rendered by the CLI.

use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A vertex began executing.
    Started {
        vertex: usize,
        name: String,
        time: f64,
    },
    /// A vertex's result came from the cache; nothing ran.
    Cached {
        vertex: usize,
        name: String,
        time: f64,
    },
    /// A vertex finished (successfully if `error` is None).
    Completed {
        vertex: usize,
        name: String,
        time: f64,
        error: Option<String>,
    },
    /// Output of a running process.
    Log {
        vertex: usize,
        stream: u8,
        data: String,
    },
    /// A non-fatal message.
    Warning { message: String },
}

/// Seconds since the Unix epoch, with sub-second precision.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs a closure while a live display is off the terminal (cleared, not redrawing).
pub type Suspend = Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

/// Who draws on the terminal: a live display registers how to get out of the way, so an
/// interactive step (`--on-error=shell`) can have the terminal to itself.
#[derive(Clone, Default)]
pub struct Terminal(Arc<Mutex<Option<Suspend>>>);

impl Terminal {
    /// Called by a display that redraws the terminal on its own.
    pub fn set_suspend(&self, suspend: Suspend) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(suspend);
    }

    /// Runs `f` with the terminal to itself.
    pub fn hand_over<T>(&self, f: impl FnOnce() -> T) -> T {
        let suspend = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(suspend) = suspend else {
            return f();
        };
        let mut f = Some(f);
        let mut out = None;
        suspend(&mut || out = f.take().map(|f| f()));
        match out {
            Some(out) => out,
            // The display did not run it (it must): run it anyway.
            None => f.take().map(|f| f()).expect("closure runs once"),
        }
    }
}

/// Where events go; cheap to clone.
#[derive(Clone)]
pub struct Progress {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
    terminal: Terminal,
}

impl Progress {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<Event>) -> Self {
        Self {
            tx: Some(tx),
            terminal: Terminal::default(),
        }
    }
    /// Shares the terminal with the display drawing these events.
    pub fn with_terminal(mut self, terminal: Terminal) -> Self {
        self.terminal = terminal;
        self
    }
    /// Discards all events.
    pub fn discard() -> Self {
        Self {
            tx: None,
            terminal: Terminal::default(),
        }
    }
    pub fn terminal(&self) -> &Terminal {
        &self.terminal
    }
    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }
}
