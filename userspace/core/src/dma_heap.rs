//! `/dev/dma_heap/system`: dma-bufs from the kernel's system heap, as an [`Exporter`].
//!
//! linux-raw-sys does not carry `<linux/dma-heap.h>`, so its one struct and ioctl are
//! declared here; `tests/uapi_headers.rs` compiles their layout against the system header.
//! The heap only allocates: a host range cannot be imported into it.

use rustix::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{opcode, Opcode, Updater};

use crate::backend::{BackendError, Op};
use crate::dma_buf_device::{DmaBufDevice, Exporter};

/// `struct dma_heap_allocation_data` of `<linux/dma-heap.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaHeapAllocationData {
    /// Bytes to allocate.
    pub len: u64,
    /// The new dma-buf (out).
    pub fd: u32,
    /// Its open flags: an access mode and `O_CLOEXEC`, nothing else.
    pub fd_flags: u32,
    /// Heap-specific flags; none are defined.
    pub heap_flags: u64,
}

/// `DMA_HEAP_IOCTL_ALLOC = _IOWR('H', 0x0, struct dma_heap_allocation_data)`.
pub const DMA_HEAP_IOCTL_ALLOC: Opcode = opcode::read_write::<DmaHeapAllocationData>(b'H', 0);

/// The heap every kernel with `CONFIG_DMABUF_HEAPS_SYSTEM` has.
pub const SYSTEM_HEAP: &str = "/dev/dma_heap/system";

/// An open dma-heap.
#[derive(Debug)]
pub struct DmaHeap {
    heap: OwnedFd,
    fd_flags: OFlags,
}

/// A backend of dma-heap buffers.
pub type DmaHeapDevice = DmaBufDevice<DmaHeap>;

impl DmaHeap {
    /// Opens the heap at `path` (e.g. [`SYSTEM_HEAP`]); its buffers are read-write.
    pub fn open(path: &str) -> Result<Self, BackendError> {
        let heap = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| BackendError {
                op: Op::Info,
                errno: e.raw_os_error(),
            })?;
        Ok(Self {
            heap,
            fd_flags: OFlags::RDWR | OFlags::CLOEXEC,
        })
    }

    /// The same heap, handing out read-only buffers (what an exporter that shares memory
    /// for reading does).
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.fd_flags = OFlags::RDONLY | OFlags::CLOEXEC;
        self
    }
}

impl Exporter for DmaHeap {
    fn allocate(&mut self, size: u64) -> Result<OwnedFd, BackendError> {
        allocate(self.heap.as_fd(), size, self.fd_flags).map_err(|e| BackendError {
            op: Op::Create,
            errno: e.raw_os_error(),
        })
    }
}

/// `DMA_HEAP_IOCTL_ALLOC`: a `len`-byte dma-buf from the heap opened as `heap`, opened
/// with `fd_flags` (an access mode and `O_CLOEXEC`; the heap refuses anything else).
pub fn allocate(heap: BorrowedFd<'_>, len: u64, fd_flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let mut data = DmaHeapAllocationData {
        len,
        fd_flags: fd_flags.bits(),
        ..Default::default()
    };
    // SAFETY: DMA_HEAP_IOCTL_ALLOC reads and writes a `struct dma_heap_allocation_data`,
    // which `DmaHeapAllocationData` reproduces (checked against the C header).
    unsafe {
        rustix::ioctl::ioctl(
            heap,
            Updater::<DMA_HEAP_IOCTL_ALLOC, DmaHeapAllocationData>::new(&mut data),
        )
    }?;
    let fd = i32::try_from(data.fd).map_err(|_| rustix::io::Errno::BADF)?;
    // SAFETY: on success the kernel installed `fd` for this process and hands it to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_matches_dma_heap_h() {
        assert_eq!(DMA_HEAP_IOCTL_ALLOC, 0xc018_4800);
    }
}
