//! Logs of a project's containers, each line prefixed by its container's name (coloured on a
//! terminal), as `docker compose logs` and foreground `up` print them.

use std::io::Write;
use std::sync::Mutex;

use anyhow::Result;
use runtime::Container;

#[derive(Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail: Option<usize>,
    pub timestamps: bool,
    pub color: bool,
    pub no_prefix: bool,
}

/// Serialises whole lines from many containers onto one stdout.
static OUT: Mutex<()> = Mutex::new(());

const COLORS: [u8; 6] = [36, 33, 32, 35, 34, 31];

/// A writer that prefixes each complete line.
struct Prefixed {
    prefix: String,
    pending: Vec<u8>,
}

impl Write for Prefixed {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(data);
        while let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            let _guard = OUT.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = std::io::stdout().lock();
            out.write_all(self.prefix.as_bytes())?;
            out.write_all(&line)?;
            out.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Prints the containers' logs; with `follow`, until every one of them stops.
pub fn stream_logs(containers: &[Container], opts: &LogOptions) -> Result<()> {
    let width = containers
        .iter()
        .map(|c| c.config.name.len())
        .max()
        .unwrap_or(0);
    let query = runtime::LogsQuery {
        follow: opts.follow,
        tail: opts.tail,
        since: None,
        timestamps: opts.timestamps,
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let prefix = match (opts.no_prefix, opts.color) {
                    (true, _) => String::new(),
                    (false, true) => format!(
                        "\x1b[{}m{:width$} |\x1b[0m ",
                        COLORS[i % COLORS.len()],
                        c.config.name
                    ),
                    (false, false) => format!("{:width$} | ", c.config.name),
                };
                let query = &query;
                s.spawn(move || {
                    let mut out = Prefixed {
                        prefix: prefix.clone(),
                        pending: vec![],
                    };
                    let mut err = Prefixed {
                        prefix,
                        pending: vec![],
                    };
                    runtime::follow_logs(c, query, &mut out, &mut err)
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("log thread"))
    })
}
