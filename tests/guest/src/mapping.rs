//! `MAP_SHARED` mappings of buffers that other mappings (or devices) also see.
//!
//! The same pages are mapped more than once on purpose (a vgem mapping and a dma-buf mapping of
//! one buffer), so no Rust reference into a mapping is ever handed out: a `&mut [u8]` would
//! promise the compiler that nothing else changes those bytes. Reads and writes copy through raw
//! pointers instead.

use std::ffi::c_void;
use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::{self, NonNull};

use rustix::mm::{self, MapFlags, ProtFlags};

/// A readable and writable shared mapping of `len` bytes of a file.
///
/// # Invariants
///
/// `base` is the start of a live mapping of exactly `len` bytes, unmapped only by `Drop`.
#[derive(Debug)]
pub struct SharedMapping {
    base: NonNull<c_void>,
    len: usize,
}

/// A byte range that does not lie inside a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// Start of the requested range.
    pub offset: usize,
    /// Length of the requested range.
    pub len: usize,
    /// Length of the mapping.
    pub mapping_len: usize,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "range {}+{} is outside the {}-byte mapping",
            self.offset, self.len, self.mapping_len
        )
    }
}

impl std::error::Error for OutOfRange {}

impl SharedMapping {
    /// Maps `len` bytes of `fd` at byte `offset`, readable and writable, `MAP_SHARED`.
    pub fn new(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel picks (null hint) cannot overlap any
        // memory Rust already uses; the pointer is only dereferenced within `len` bytes below.
        let base = unsafe {
            mm::mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                offset,
            )
        }?;
        let base = NonNull::new(base).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, len })
    }

    /// The mapping's start address (what a `GEM_USERPTR` of it passes as `ptr`).
    pub fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true: `mmap` refuses a zero length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `bytes` into the mapping at `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), OutOfRange> {
        self.check_range(offset, bytes.len())?;
        // SAFETY: `check_range` proved `offset + bytes.len() <= self.len`, so the destination lies
        // inside the live mapping (type invariant); a mapping never overlaps the Rust slice.
        unsafe {
            ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().cast::<u8>().add(offset),
                bytes.len(),
            );
        }
        Ok(())
    }

    /// Copies `len` bytes starting at `offset` out of the mapping.
    pub fn read(&self, offset: usize, len: usize) -> Result<Vec<u8>, OutOfRange> {
        self.check_range(offset, len)?;
        let mut bytes = vec![0_u8; len];
        // SAFETY: `check_range` proved the source range lies inside the live mapping; the
        // destination is a fresh vector of exactly `len` bytes.
        unsafe {
            ptr::copy_nonoverlapping(
                self.base.as_ptr().cast::<u8>().add(offset),
                bytes.as_mut_ptr(),
                len,
            );
        }
        Ok(bytes)
    }

    /// Copies the whole mapping out.
    pub fn read_all(&self) -> Vec<u8> {
        let mut bytes = vec![0_u8; self.len];
        // SAFETY: the whole mapping is live (type invariant) and `bytes` has the same length.
        unsafe {
            ptr::copy_nonoverlapping(
                self.base.as_ptr().cast::<u8>(),
                bytes.as_mut_ptr(),
                self.len,
            );
        }
        bytes
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<(), OutOfRange> {
        let error = OutOfRange {
            offset,
            len,
            mapping_len: self.len,
        };
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(error),
        }
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe a mapping this value owns (type invariant) and no
        // reference into it exists, since the API only ever copies.
        if let Err(err) = unsafe { mm::munmap(self.base.as_ptr(), self.len) } {
            eprintln!("munmap of {} bytes failed: {err}", self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
    use std::os::fd::AsFd;

    #[test]
    fn two_mappings_of_one_file_see_each_others_writes() -> io::Result<()> {
        let memfd = memfd_create("mapping-test", MemfdFlags::CLOEXEC)?;
        ftruncate(&memfd, 8192)?;
        let first = SharedMapping::new(memfd.as_fd(), 0, 8192)?;
        let second = SharedMapping::new(memfd.as_fd(), 4096, 4096)?;
        first.write(4096 + 10, b"hello").map_err(io::Error::other)?;
        assert_eq!(second.read(10, 5).map_err(io::Error::other)?, b"hello");
        second.write(0, b"x").map_err(io::Error::other)?;
        assert_eq!(first.read_all()[4096], b'x');
        Ok(())
    }

    #[test]
    fn out_of_range_access_is_refused() -> io::Result<()> {
        let memfd = memfd_create("mapping-test", MemfdFlags::CLOEXEC)?;
        ftruncate(&memfd, 4096)?;
        let mapping = SharedMapping::new(memfd.as_fd(), 0, 4096)?;
        assert_eq!(
            mapping.write(4095, b"ab"),
            Err(OutOfRange {
                offset: 4095,
                len: 2,
                mapping_len: 4096
            })
        );
        assert!(mapping.read(usize::MAX, 2).is_err());
        Ok(())
    }
}
