//! A managed container's stdin (`run -i`, `attach`, `start -a -i`) and terminal (`-t`).
//!
//! The monitor keeps the container's stdin (a pipe, or the master of a pseudo-terminal with
//! `-t`) for its whole life, restarts included, and listens on `attach.sock` in the
//! container's directory. A client connects and sends one byte saying what follows: `S`,
//! then its stdin until it shuts down its side (with `StdinOnce`, as `run -i` without `-d`,
//! that end of file closes the container's stdin, as docker's); or `R`, then the terminal's
//! rows and columns as two little-endian u16s. Output goes through the json-file log, which
//! clients follow.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::detach_keys::DetachWatch;
use crate::store::Container;

/// The socket's name in the container's directory.
const SOCKET: &str = "attach.sock";
/// What a client sends first: its stdin follows, or a window size.
const STDIN_STREAM: u8 = b'S';
const RESIZE: u8 = b'R';

/// `path` in `dir` through `/proc/self/fd`, since a socket's path is limited to 107 bytes
/// and a storage root can be deep. The directory must stay open while the path is used.
fn socket_path(dir: &File) -> String {
    format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd())
}

/// Monitor side: when the container has an open stdin or a terminal, makes them, starts the
/// relay thread and returns `executor` set up to give them to every run.
pub(crate) fn prepare(
    container: &Container,
    executor: executor::Executor,
) -> Result<executor::Executor> {
    let config = &container.config;
    if !config.stdin_open && !config.tty {
        return Ok(executor);
    }
    let dir = File::open(&container.dir).context("opening the container's directory")?;
    let _ = std::fs::remove_file(container.dir.join(SOCKET));
    let listener = UnixListener::bind(socket_path(&dir)).context("creating attach.sock")?;
    let (input, terminal, executor) = if config.tty {
        let (rows, cols) = config.console_size.unwrap_or((24, 80));
        // Each run's container makes its own terminal; its master shows up in the slot.
        let slot = executor::TerminalSlot::new(rows, cols);
        (None, Some(slot.clone()), executor.with_terminal(slot))
    } else {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        (Some(File::from(write)), None, executor.with_stdin(read))
    };
    let relay = Relay {
        input: input.filter(|_| config.stdin_open),
        terminal,
        typed_ahead: Vec::new(),
        stdin_open: config.stdin_open,
        stdin_once: config.stdin_once,
    };
    std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || relay.serve(listener))
        .context("starting the stdin relay")?;
    Ok(executor)
}

/// Removes the socket once the container has stopped for good.
pub(crate) fn cleanup(container: &Container) {
    let _ = std::fs::remove_file(container.dir.join(SOCKET));
}

struct Relay {
    /// The container's stdin pipe's write end (without `-t`); `None` once closed.
    input: Option<File>,
    /// The terminal of the current run (`-t`), for input and window sizes.
    terminal: Option<executor::TerminalSlot>,
    /// Input for a terminal that the container has not made yet (it is starting).
    typed_ahead: Vec<u8>,
    /// `-i`: input reaches the container (without it, a terminal takes none).
    stdin_open: bool,
    stdin_once: bool,
}

/// At most this much input waits for a starting container's terminal.
const TYPE_AHEAD_LIMIT: usize = 64 * 1024;

/// One connected client and what it said it sends (`None` until its first byte).
struct Client {
    stream: UnixStream,
    kind: Option<u8>,
    pending: Vec<u8>,
}

impl Relay {
    fn serve(mut self, listener: UnixListener) {
        let mut clients: Vec<Client> = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            fds.extend(
                clients
                    .iter()
                    .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)),
            );
            // Typed-ahead input goes in as soon as the terminal exists.
            let timeout = if self.typed_ahead.is_empty() {
                PollTimeout::NONE
            } else {
                PollTimeout::from(50u8)
            };
            self.flush_typed_ahead();
            if poll(&mut fds, timeout).is_err() {
                continue;
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let mut index = clients.len();
            while index > 0 {
                index -= 1;
                if ready[index + 1] && !self.read_from(&mut clients[index], &mut buf) {
                    clients.swap_remove(index);
                }
            }
            if ready[0] {
                if let Ok((stream, _)) = listener.accept() {
                    clients.push(Client {
                        stream,
                        kind: None,
                        pending: Vec::new(),
                    });
                }
            }
        }
    }

    /// Handles what one client sent; false when it is done.
    fn read_from(&mut self, client: &mut Client, buf: &mut [u8]) -> bool {
        let n = match client.stream.read(buf) {
            Ok(0) | Err(_) => {
                if client.kind == Some(STDIN_STREAM) && self.stdin_once && self.terminal.is_none() {
                    self.input = None; // end of file for the container
                }
                return false;
            }
            Ok(n) => n,
        };
        let mut data = &buf[..n];
        if client.kind.is_none() {
            client.kind = Some(data[0]);
            data = &data[1..];
        }
        match client.kind {
            Some(STDIN_STREAM) => {
                if self.terminal.is_some() && self.stdin_open {
                    self.typed_ahead.extend_from_slice(data);
                    self.typed_ahead.truncate(TYPE_AHEAD_LIMIT);
                    self.flush_typed_ahead();
                } else if let Some(input) = &mut self.input {
                    if input.write_all(data).is_err() {
                        self.input = None;
                    }
                }
                true
            }
            Some(RESIZE) => {
                client.pending.extend_from_slice(data);
                if client.pending.len() >= 4 {
                    self.resize(&client.pending[..4]);
                    return false;
                }
                true
            }
            _ => false,
        }
    }

    /// Writes the input waiting for the terminal to it, if the container has one by now.
    fn flush_typed_ahead(&mut self) {
        if self.typed_ahead.is_empty() {
            return;
        }
        if let Some(master) = self.terminal.as_ref().and_then(|slot| slot.master()) {
            // A run that ended meanwhile takes no more input; what it missed is dropped.
            let _ = (&*master).write_all(&self.typed_ahead);
            self.typed_ahead.clear();
        }
    }

    fn resize(&self, size: &[u8]) {
        if let Some(slot) = &self.terminal {
            let rows = u16::from_le_bytes([size[0], size[1]]);
            let cols = u16::from_le_bytes([size[2], size[3]]);
            slot.resize(rows, cols);
        }
    }
}

/// What `attach` connects to besides the container's output.
#[derive(Clone, Debug, Default)]
pub struct AttachOptions {
    /// Relay this process's stdin to the container (`-i`).
    pub stdin: bool,
    /// Lines of earlier output to print first (`None`: all, as a foreground `run`).
    pub tail: Option<usize>,
    /// `--detach-keys` (`None` or empty: the docker CLI's configured ones, or Ctrl-P Ctrl-Q);
    /// they work with a `-t` container whose stdin is relayed.
    pub detach_keys: Option<String>,
}

/// Client side (`run` in the foreground, `attach`, `start -a`): relays stdin if asked,
/// prints the container's output until it stops and returns its exit code (0 when the user
/// detached). On a terminal with a `-t` container, this terminal is raw meanwhile and its
/// size is passed on.
pub fn attach(container: &Container, options: &AttachOptions) -> Result<i32> {
    Ok(attach_until_detached(container, options)?.unwrap_or(0))
}

/// As [`attach`]; `None` when the user typed the detach keys (the container runs on).
pub fn attach_until_detached(
    container: &Container,
    options: &AttachOptions,
) -> Result<Option<i32>> {
    let keys = crate::detach_keys::resolve(options.detach_keys.as_deref())?;
    // "Only new output" (tail 0) means output written from now on: the container may answer
    // the input sent below before the output thread has opened the log.
    let (tail, since) = match options.tail {
        Some(0) => (None, Some(std::time::SystemTime::now())),
        tail => (tail, None),
    };
    if container.config.tty && nix::unistd::isatty(std::io::stdout().as_fd()).unwrap_or(false) {
        let watched = container.clone();
        std::thread::spawn(move || follow_size(&watched));
    }
    // The output's end or the detach keys, whichever comes first.
    let (ended, end) = std::sync::mpsc::channel::<Option<Result<i32>>>();
    let watch = container.config.tty.then(|| DetachWatch::new(keys));
    let _raw = if options.stdin {
        match send_stdin(container, watch, ended.clone()) {
            Ok(raw) => raw,
            // A container that already stopped takes no input; its output still shows.
            Err(_) if !container.live_state()?.status.is_active() => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let watched = container.clone();
    std::thread::spawn(move || {
        let _ = ended.send(Some(print_until_exit(&watched, tail, since)));
    });
    match end.recv() {
        Ok(Some(result)) => result.map(Some),
        Ok(None) => Ok(None),
        Err(_) => anyhow::bail!("lost the container's output"),
    }
}

/// Prints the container's output until it stops; its exit code.
fn print_until_exit(
    container: &Container,
    tail: Option<usize>,
    since: Option<std::time::SystemTime>,
) -> Result<i32> {
    let query = crate::LogsQuery {
        follow: true,
        tail,
        since,
        ..Default::default()
    };
    crate::follow_logs(
        container,
        &query,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )?;
    crate::wait_exit(container)
}

/// `attach`: as [`attach`], for a running container only (docker's error otherwise).
pub fn attach_running(container: &Container, options: &AttachOptions) -> Result<i32> {
    crate::detach_keys::resolve(options.detach_keys.as_deref())?;
    if !container.live_state()?.status.is_active() {
        anyhow::bail!("You cannot attach to a stopped container, start it first");
    }
    let code = attach_until_detached(container, options)?;
    if code.is_none() {
        // docker attach's words on detaching (run -it and start -ai say nothing).
        eprintln!("read escape sequence");
    }
    Ok(code.unwrap_or(0))
}

fn connect(container: &Container, kind: u8) -> Result<UnixStream> {
    let dir = File::open(&container.dir).context("opening the container's directory")?;
    let mut stream = UnixStream::connect(socket_path(&dir)).with_context(|| {
        format!(
            "container {} was not started with -i or -t: its stdin cannot be attached",
            container.config.name
        )
    })?;
    stream.write_all(&[kind])?;
    Ok(stream)
}

/// Starts a thread copying stdin to the container, which sends `None` on `detached` when
/// `watch` sees the detach keys; on a terminal with a `-t` container, returns the guard that
/// keeps the terminal raw.
fn send_stdin(
    container: &Container,
    watch: Option<DetachWatch>,
    detached: std::sync::mpsc::Sender<Option<Result<i32>>>,
) -> Result<Option<RawMode>> {
    let mut stream = connect(container, STDIN_STREAM)?;
    let on_terminal = nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
    let raw = if container.config.tty && on_terminal {
        RawMode::enter()
    } else {
        None
    };
    std::thread::spawn(move || {
        if copy_until_detached(&mut stream, watch) {
            let _ = detached.send(None);
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
    });
    Ok(raw)
}

/// Copies stdin to `stream` until its end (false) or the detach keys (true).
fn copy_until_detached(stream: &mut UnixStream, mut watch: Option<DetachWatch>) -> bool {
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::with_capacity(buf.len());
    loop {
        let n = match std::io::stdin().lock().read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        out.clear();
        let detach = match &mut watch {
            Some(watch) => watch.feed(&buf[..n], &mut out),
            None => {
                out.extend_from_slice(&buf[..n]);
                false
            }
        };
        if stream.write_all(&out).is_err() || detach {
            return detach;
        }
    }
}

/// This process's terminal's size (rows, columns), if its stdout is a terminal.
pub(crate) fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer, which outlives the call.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row != 0).then_some((ws.ws_row, ws.ws_col))
}

/// Passes this terminal's size on, then every change of it (looked at 4 times a second:
/// cheaper to get right than a SIGWINCH handler in a multi-threaded process).
fn follow_size(container: &Container) {
    let mut sent = container.config.console_size;
    loop {
        let size = terminal_size();
        if let Some((rows, cols)) = size.filter(|s| Some(*s) != sent) {
            let Ok(mut stream) = connect(container, RESIZE) else {
                return; // the container is gone
            };
            let mut msg = rows.to_le_bytes().to_vec();
            msg.extend_from_slice(&cols.to_le_bytes());
            let _ = stream.write_all(&msg);
            sent = size;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// This process's terminal in raw mode (keys go to the container as typed); restored on drop.
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

/// A plain foreground `run` passes the caller's terminal through; without `-i` the container
/// gets an empty stdin instead of the caller's, as docker's (`echo x | run IMAGE cat` prints
/// nothing).
pub fn foreground_stdin(
    executor: executor::Executor,
    interactive: bool,
) -> Result<executor::Executor> {
    if interactive {
        return Ok(executor);
    }
    let null = File::open("/dev/null").context("opening /dev/null")?;
    Ok(executor.with_stdin(null.into()))
}

/// The caller's side of a terminal run by this process itself (`exec -t`): this terminal is
/// raw while it lasts (with `-i`), typed input goes to the run's terminal and its size
/// follows this one's.
pub(crate) struct TerminalRelay {
    pub slot: executor::TerminalSlot,
    _raw: Option<RawMode>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TerminalRelay {
    pub(crate) fn start(stdin: bool) -> TerminalRelay {
        let (rows, cols) = terminal_size().unwrap_or((24, 80));
        let slot = executor::TerminalSlot::new(rows, cols);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let on_terminal = nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
        let raw = if stdin && on_terminal {
            RawMode::enter()
        } else {
            None
        };
        if stdin {
            let slot = slot.clone();
            std::thread::spawn(move || copy_to_terminal(&slot));
        }
        let (watched, stop) = (slot.clone(), done.clone());
        std::thread::spawn(move || {
            let mut sent = Some((rows, cols));
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let size = terminal_size();
                if let Some((rows, cols)) = size.filter(|s| Some(*s) != sent) {
                    watched.resize(rows, cols);
                    sent = size;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        });
        TerminalRelay {
            slot,
            _raw: raw,
            done,
        }
    }
}

impl Drop for TerminalRelay {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies this process's stdin to the run's terminal, waiting for the container to make it.
fn copy_to_terminal(slot: &executor::TerminalSlot) {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match std::io::stdin().lock().read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let master = loop {
            match slot.master() {
                Some(master) => break master,
                None if std::time::Instant::now() > deadline => return,
                None => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        if (&*master).write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
