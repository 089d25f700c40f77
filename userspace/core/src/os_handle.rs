//! The OS object that carries memory between devices and processes: a file descriptor on
//! Linux (a dma-buf, or the software device's memfd), a `HANDLE` on Windows (a section
//! object). [`Backend`](crate::backend::Backend) speaks in these two types so that one
//! trait serves both systems; the Linux-only backends use the fd names directly.

#[cfg(not(windows))]
pub use rustix::fd::{
    AsFd as AsOsHandle, BorrowedFd as BorrowedOsHandle, OwnedFd as OwnedOsHandle,
};
#[cfg(windows)]
pub use std::os::windows::io::{
    AsHandle as AsOsHandle, BorrowedHandle as BorrowedOsHandle, OwnedHandle as OwnedOsHandle,
};
