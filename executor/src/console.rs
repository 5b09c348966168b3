//! The pseudo-terminal of a [`crate::Stdio::Terminal`] run, allocated inside the container
//! as runc does with `--console-socket`: the container's process opens the `ptmx` of the
//! container's own devpts instance, makes the slave its controlling terminal and stdio, and
//! sends the master back to the caller over a unix socket (SCM_RIGHTS). So `tty` in the
//! container names a device that exists there, and the host's devpts is never reachable.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::stat::Mode;

/// File descriptor on which the helper and the container find the console socket.
pub(crate) const CONSOLE_FD: RawFd = 5;

/// The terminal of runs with [`crate::Stdio::Terminal`], shared by the executor and its
/// caller: each run's container allocates a new terminal, whose master is here while the
/// run lasts (for input and window size); the size set here applies to every run.
#[derive(Clone, Debug)]
pub struct TerminalSlot {
    inner: Arc<Mutex<SlotState>>,
}

#[derive(Debug)]
struct SlotState {
    size: (u16, u16),
    master: Option<Arc<File>>,
}

impl TerminalSlot {
    /// A slot whose terminals start with `rows` x `cols`.
    pub fn new(rows: u16, cols: u16) -> Self {
        TerminalSlot {
            inner: Arc::new(Mutex::new(SlotState {
                size: (rows, cols),
                master: None,
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The master of the current run's terminal (`None` between runs): write input to it.
    pub fn master(&self) -> Option<Arc<File>> {
        self.state().master.clone()
    }

    /// The window size (rows, columns) terminals get.
    pub fn size(&self) -> (u16, u16) {
        self.state().size
    }

    /// Changes the window size, of the current terminal too (its programs get SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        let mut state = self.state();
        state.size = (rows, cols);
        if let Some(master) = &state.master {
            set_size(master.as_raw_fd(), (rows, cols));
        }
    }

    /// Makes `master` the current terminal, with the slot's size (a resize may have come in
    /// while the container was starting).
    pub(crate) fn install(&self, master: File) -> Arc<File> {
        let mut state = self.state();
        set_size(master.as_raw_fd(), state.size);
        let master = Arc::new(master);
        state.master = Some(master.clone());
        master
    }

    pub(crate) fn clear(&self) {
        self.state().master = None;
    }
}

fn set_size(fd: RawFd, (rows, cols): (u16, u16)) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// Container side: opens a new terminal at `ptmx` (the container's own `/dev/pts/ptmx`),
/// makes its slave the controlling terminal of this process (which must lead its session)
/// and its stdin, stdout and stderr, and sends the master over [`CONSOLE_FD`], which is
/// closed afterwards. Returns the slave's number in that devpts instance.
pub(crate) fn allocate(ptmx: &Path, size: (u16, u16)) -> Result<u32> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::fcntl::open(ptmx, flags, Mode::empty())
        .with_context(|| format!("opening {}", ptmx.display()))?;
    let fd = master.as_raw_fd();
    let unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads one int and TIOCGPTN writes one uint through the pointers,
    // which outlive the calls; TIOCGPTPEER takes open flags and returns a new descriptor.
    let slave = unsafe {
        if libc::ioctl(fd, libc::TIOCSPTLCK, &unlock) < 0
            || libc::ioctl(fd, libc::TIOCGPTN, &mut number) < 0
        {
            return Err(std::io::Error::last_os_error()).context("unlocking the terminal");
        }
        libc::ioctl(fd, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY)
    };
    if slave < 0 {
        return Err(std::io::Error::last_os_error()).context("opening the terminal's slave");
    }
    // SAFETY: the ioctl returned a fresh descriptor that nobody else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_size(fd, size);
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which no Rust object owns here.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error()).context("using the terminal as stdio");
        }
    }
    drop(slave);
    // SAFETY: TIOCSCTTY on fd 0 takes no pointer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("taking the terminal");
    }
    let fds = [fd];
    let rights = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(
        CONSOLE_FD,
        &[std::io::IoSlice::new(b"t")],
        &rights,
        MsgFlags::empty(),
        None,
    );
    // SAFETY: closes the console socket inherited at its fixed number, owned by nobody.
    unsafe { libc::close(CONSOLE_FD) };
    sent.context("sending the terminal to the caller")?;
    Ok(number)
}

/// Closes the console socket in a process that does not allocate the terminal itself.
pub(crate) fn close_socket() {
    // SAFETY: closes the console socket inherited at its fixed number, owned by nobody.
    unsafe { libc::close(CONSOLE_FD) };
}

/// Caller side: the master sent over `socket`, or `None` when every sender closed it first
/// (the run failed before it had a terminal; its status explains why).
pub(crate) fn receive_master(socket: &OwnedFd) -> std::io::Result<Option<File>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    loop {
        let message = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => other?,
        };
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                let mut fds = fds.into_iter();
                // SAFETY: the kernel installed these descriptors for us; nobody else owns them.
                let master = fds.next().map(|fd| unsafe { File::from_raw_fd(fd) });
                for extra in fds {
                    // SAFETY: as above; unexpected extras are closed.
                    drop(unsafe { OwnedFd::from_raw_fd(extra) });
                }
                return Ok(master);
            }
        }
        return Ok(None);
    }
}
