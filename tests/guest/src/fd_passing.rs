//! Handing an fd to a second process of the same guest program: one end of a unix socket
//! pair is the child's stdin, and each message carries a payload and one fd (`SCM_RIGHTS`).
//! The checks that share memory, semaphores or dma-bufs across processes all start this way;
//! what the payload says is theirs to encode.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// Sends `payload` and `fd` over the unix socket `socket` in one message.
pub fn send_with_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>, payload: &[u8]) -> io::Result<()> {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other(
            "the control buffer has no room for one fd",
        ));
    }
    let sent = sendmsg(
        socket,
        &[IoSlice::new(payload)],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent == payload.len() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "sent {sent} of {} bytes",
            payload.len()
        )))
    }
}

/// Receives one message from the unix socket `socket`: exactly `payload.len()` bytes into
/// `payload`, and the fd that came with them (close-on-exec).
pub fn recv_with_fd(socket: BorrowedFd<'_>, payload: &mut [u8]) -> io::Result<OwnedFd> {
    let want = payload.len();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        socket,
        &mut [IoSliceMut::new(payload)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes != want {
        return Err(io::Error::other(format!(
            "received {} of {want} bytes",
            got.bytes
        )));
    }
    control
        .drain()
        .find_map(|message| match message {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
        .ok_or_else(|| io::Error::other("no fd came with the message"))
}

/// This program run again as a child (`<program> <args>`) whose stdin is a unix socket to us.
///
/// The child's stderr is kept for [`FdChild::finish`]'s message. Dropping an `FdChild`
/// without finishing it leaves the child to exit on its own when its stdin closes.
pub struct FdChild {
    child: Child,
    socket: OwnedFd,
}

impl FdChild {
    /// Starts this program as the child; `stdout` is what its standard output goes to.
    pub fn spawn(args: &[&str], stdout: Stdio) -> io::Result<Self> {
        Self::spawn_program(&std::env::current_exe()?, args, stdout)
    }

    /// Starts another program `exe` as the child (a guest program whose child mode another
    /// program's checks use).
    pub fn spawn_program(exe: &Path, args: &[&str], stdout: Stdio) -> io::Result<Self> {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::from(theirs))
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Self {
            child,
            socket: ours,
        })
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Our end of the socket, for [`send_with_fd`] and the wrappers around it.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Closes our end (the child reads end of file after the last message), waits for the
    /// child, and answers whether it exited 0; otherwise how it ended and what it wrote.
    pub fn finish(self) -> Result<(), String> {
        let Self { child, socket } = self;
        drop(socket);
        let output = child
            .wait_with_output()
            .map_err(|e| format!("waiting for the child failed: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        let mut said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let printed = String::from_utf8_lossy(&output.stdout);
        if !printed.trim().is_empty() {
            said = format!("{} {said}", printed.trim());
        }
        Err(format!("{}: {said}", output.status))
    }
}
