//! `/dev/dma_heap/*`: allocating dma-bufs from a heap (`include/uapi/linux/dma-heap.h`).

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use rustix::ioctl::{self, opcode, Opcode, Updater};

/// `struct dma_heap_allocation_data`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct DmaHeapAllocationData {
    len: u64,
    fd: u32,
    fd_flags: u32,
    heap_flags: u64,
}

/// `DMA_HEAP_IOCTL_ALLOC = _IOWR('H', 0x0, struct dma_heap_allocation_data)`.
const DMA_HEAP_IOCTL_ALLOC: Opcode = opcode::read_write::<DmaHeapAllocationData>(b'H', 0);
const _: () = assert!(DMA_HEAP_IOCTL_ALLOC == 0xc018_4800);

/// `O_RDWR | O_CLOEXEC` for the new dma-buf (the heap accepts only access-mode bits and
/// `O_CLOEXEC`; RDWR so it can be mapped writable).
const FD_FLAGS: u32 = 0o2 | 0o2_000_000;

/// Allocates a `len`-byte dma-buf from the heap opened as `heap`.
pub fn allocate(heap: BorrowedFd<'_>, len: u64) -> io::Result<OwnedFd> {
    let mut data = DmaHeapAllocationData {
        len,
        fd: 0,
        fd_flags: FD_FLAGS,
        heap_flags: 0,
    };
    // SAFETY: DMA_HEAP_IOCTL_ALLOC reads and writes a `struct dma_heap_allocation_data`, which
    // `DmaHeapAllocationData` reproduces (size pinned by the ioctl number above).
    unsafe {
        ioctl::ioctl(
            heap,
            Updater::<DMA_HEAP_IOCTL_ALLOC, DmaHeapAllocationData>::new(&mut data),
        )
    }?;
    let fd = i32::try_from(data.fd).map_err(io::Error::other)?;
    // SAFETY: on success the kernel installed `fd` for this process and hands ownership to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
