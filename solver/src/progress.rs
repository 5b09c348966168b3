//! Progress events emitted while solving, rendered by the CLI.

use serde::Serialize;
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

/// Where events go; cheap to clone.
#[derive(Clone)]
pub struct Progress {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
}

impl Progress {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<Event>) -> Self {
        Self { tx: Some(tx) }
    }
    /// Discards all events.
    pub fn discard() -> Self {
        Self { tx: None }
    }
    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }
}
