//! `/dev/dma_heap/*`: allocating dma-bufs from a heap, through extmem's own
//! `DMA_HEAP_IOCTL_ALLOC` ([`extmem::dma_heap::allocate`]).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::OFlags;

/// Allocates a `len`-byte dma-buf from the heap opened as `heap`, read-write (so it can be
/// mapped writable) and close-on-exec.
pub fn allocate(heap: BorrowedFd<'_>, len: u64) -> io::Result<OwnedFd> {
    Ok(extmem::dma_heap::allocate(
        heap,
        len,
        OFlags::RDWR | OFlags::CLOEXEC,
    )?)
}
