//! Docker's json-file log driver: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"RFC3339Nano"}`, rotated at `max-size` into
//! `ID-json.log.1` .. `ID-json.log.(max-file - 1)`.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::store::Container;

/// Docker flushes a line without a newline once it reaches this size.
const MAX_PARTIAL: usize = 16 * 1024;

/// `--log-opt` settings of the json-file driver.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogOptions {
    /// Rotate once the file reaches this many bytes (None: never).
    pub max_size: Option<u64>,
    /// Files kept, the current one included (at least 1).
    pub max_file: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_size: None,
            max_file: 1,
        }
    }
}

impl LogOptions {
    /// Parses `max-size=10m`, `max-file=3` options.
    pub fn parse(opts: &[String]) -> Result<Self> {
        let mut out = LogOptions::default();
        for opt in opts {
            let Some((key, value)) = opt.split_once('=') else {
                bail!("--log-opt {opt:?}: want KEY=VALUE (max-size=10m, max-file=3)");
            };
            match key {
                "max-size" => out.max_size = Some(parse_size(value).with_context(|| format!("--log-opt {opt:?}"))?),
                "max-file" => match value.parse::<u32>() {
                    Ok(n) if n >= 1 => out.max_file = n,
                    _ => bail!("--log-opt {opt:?}: max-file must be a number of at least 1"),
                },
                _ => bail!("--log-opt {opt:?}: unknown log opt {key:?} for the json-file driver (max-size, max-file)"),
            }
        }
        if out.max_file > 1 && out.max_size.is_none() {
            bail!("--log-opt max-file needs max-size");
        }
        Ok(out)
    }
}

/// `100`, `10k`, `10m`, `1g` (docker's units are powers of 1024).
fn parse_size(s: &str) -> Result<u64> {
    let lower = s.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('b');
    let (digits, mult) = match trimmed.chars().last() {
        Some('k') => (&trimmed[..trimmed.len() - 1], 1u64 << 10),
        Some('m') => (&trimmed[..trimmed.len() - 1], 1 << 20),
        Some('g') => (&trimmed[..trimmed.len() - 1], 1 << 30),
        _ => (trimmed, 1),
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * mult),
        _ => bail!("invalid size {s:?} (e.g. 10k, 5m, 1g)"),
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    log: String,
    stream: String,
    time: String,
}

/// Appends container output to the log, line by line.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    options: LogOptions,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: &Path, options: LogOptions) -> Result<LogWriter> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log {}", path.display()))?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            options,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Records a chunk from stream 0 (stdout) or 1 (stderr); complete lines are written now.
    pub fn write(&mut self, stream: usize, mut data: &[u8]) {
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            self.partial[stream].extend_from_slice(&data[..=pos]);
            data = &data[pos + 1..];
            self.flush_stream(stream);
        }
        self.partial[stream].extend_from_slice(data);
        if self.partial[stream].len() >= MAX_PARTIAL {
            self.flush_stream(stream);
        }
    }

    /// Writes whatever is left of unterminated lines (at exit).
    pub fn flush(&mut self) {
        self.flush_stream(0);
        self.flush_stream(1);
    }

    fn flush_stream(&mut self, stream: usize) {
        if self.partial[stream].is_empty() {
            return;
        }
        let entry = Entry {
            log: String::from_utf8_lossy(&self.partial[stream]).into_owned(),
            stream: if stream == 0 { "stdout" } else { "stderr" }.into(),
            time: crate::time::now_rfc3339(),
        };
        self.partial[stream].clear();
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        // Logging must never stop the container; a full disk loses lines, not the process.
        if self.file.write_all(&line).is_ok() {
            self.size += line.len() as u64;
        }
        if self.options.max_size.is_some_and(|max| self.size >= max) {
            let _ = self.rotate();
        }
    }

    fn rotate(&mut self) -> Result<()> {
        let keep = self.options.max_file;
        if keep > 1 {
            for n in (1..keep - 1).rev() {
                let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = File::options()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.file.seek(SeekFrom::End(0))?;
        self.size = 0;
        Ok(())
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// What `logs` prints.
#[derive(Clone, Debug, Default)]
pub struct LogsQuery {
    pub follow: bool,
    pub tail: Option<usize>,
    pub since: Option<SystemTime>,
    pub timestamps: bool,
}

impl LogsQuery {
    /// Parses `--since` (RFC 3339, Unix seconds or a duration like `10m`).
    pub fn parse_since(s: &str) -> Result<SystemTime> {
        crate::time::parse_since(s).with_context(|| {
            format!("--since {s:?}: want a time (RFC 3339), Unix seconds or a duration like 10m")
        })
    }
}

fn print_entry(
    line: &str,
    query: &LogsQuery,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let Ok(entry) = serde_json::from_str::<Entry>(line) else {
        return Ok(());
    };
    if let Some(since) = query.since {
        if crate::time::parse_rfc3339(&entry.time).is_some_and(|t| t < since) {
            return Ok(());
        }
    }
    let target: &mut dyn Write = if entry.stream == "stderr" { err } else { out };
    if query.timestamps {
        write!(target, "{} ", entry.time)?;
    }
    target.write_all(entry.log.as_bytes())?;
    target.flush()?;
    Ok(())
}

/// Prints the container's log; with `follow`, keeps printing new lines until the container
/// is no longer running.
pub fn follow_logs(
    container: &Container,
    query: &LogsQuery,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let path = container.log_path();
    let mut lines = Vec::new();
    for n in (1..container.config.log.max_file).rev() {
        if let Ok(f) = File::open(rotated(&path, n)) {
            lines.extend(BufReader::new(f).lines().map_while(|l| l.ok()));
        }
    }
    let mut offset = 0u64;
    if let Ok(f) = File::open(&path) {
        let mut reader = BufReader::new(f);
        offset = read_complete_lines(&mut reader, &mut lines)?;
    }
    let skip = query.tail.map_or(0, |n| lines.len().saturating_sub(n));
    for line in &lines[skip..] {
        print_entry(line, query, out, err)?;
    }
    if !query.follow {
        return Ok(());
    }
    loop {
        let done = match container.live_state() {
            Ok(state) => !state.status.is_active(),
            // Removed meanwhile (--rm): nothing more will be written.
            Err(_) if !container.dir.exists() => true,
            Err(e) => return Err(e),
        };
        let Ok(mut f) = File::open(&path) else {
            return Ok(());
        };
        if f.metadata()?.len() < offset {
            offset = 0; // rotated
        }
        f.seek(SeekFrom::Start(offset))?;
        let mut reader = BufReader::new(f);
        let mut new = Vec::new();
        offset += read_complete_lines(&mut reader, &mut new)?;
        for line in &new {
            print_entry(line, query, out, err)?;
        }
        // A prompt without a newline must show before the user answers it.
        out.flush()?;
        err.flush()?;
        if done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads whole lines (a line still being written is left for later); returns bytes consumed.
fn read_complete_lines(reader: &mut impl BufRead, lines: &mut Vec<String>) -> Result<u64> {
    let mut consumed = 0u64;
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf)?;
        if n == 0 || !buf.ends_with('\n') {
            return Ok(consumed);
        }
        consumed += n as u64;
        lines.push(buf.trim_end_matches('\n').to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_options_parse() {
        assert_eq!(parse_size("10k").unwrap(), 10240);
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert!(parse_size("x").is_err());
        let o = LogOptions::parse(&["max-size=1k".into(), "max-file=3".into()]).unwrap();
        assert_eq!(o.max_size, Some(1024));
        assert_eq!(o.max_file, 3);
        assert!(LogOptions::parse(&["max-file=3".into()]).is_err());
        assert!(LogOptions::parse(&["mode=fast".into()]).is_err());
    }

    #[test]
    fn writer_splits_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let opts = LogOptions {
            max_size: Some(1000),
            max_file: 2,
        };
        let mut w = LogWriter::open(&path, opts).unwrap();
        w.write(0, b"hello\nwor");
        w.write(1, b"oops\n");
        w.write(0, b"ld\n");
        let text = std::fs::read_to_string(&path).unwrap();
        let logs: Vec<Entry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(logs[0].log, "hello\n");
        assert_eq!(logs[1].stream, "stderr");
        assert_eq!(logs[2].log, "world\n");
        for _ in 0..20 {
            w.write(0, b"0123456789012345678901234567890123456789\n");
        }
        assert!(rotated(&path, 1).exists());
        assert!(!rotated(&path, 2).exists());
        assert!(std::fs::metadata(&path).unwrap().len() < 1000);
    }
}
