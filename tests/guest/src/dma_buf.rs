//! dma-buf file descriptors: size and CPU-access bracketing (`include/uapi/linux/dma-buf.h`).
//!
//! linux-raw-sys does not carry the dma-buf uAPI, so the one struct used here is declared below
//! and its ioctl number is pinned to the value the C header gives.

use std::io;
use std::os::fd::BorrowedFd;

use extmem::backend::Op;
use rustix::ioctl::{self, opcode, Opcode, Setter};

/// `struct dma_buf_sync`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct DmaBufSync {
    flags: u64,
}

const DMA_BUF_SYNC_RW: u64 = 3;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 4;
/// `DMA_BUF_IOCTL_SYNC = _IOW('b', 0, struct dma_buf_sync)`.
const DMA_BUF_IOCTL_SYNC: Opcode = opcode::write::<DmaBufSync>(b'b', 0);
const _: () = assert!(DMA_BUF_IOCTL_SYNC == 0x4008_6200);

fn io_error(e: extmem::backend::BackendError) -> io::Error {
    io::Error::from_raw_os_error(e.errno)
}

/// The size of a dma-buf as the kernel reports it: `lseek(fd, 0, SEEK_END)`, the file
/// position put back to 0 ([`extmem::dma_buf::size`]).
pub fn size_by_seek(dma_buf: BorrowedFd<'_>) -> io::Result<u64> {
    extmem::dma_buf::size(dma_buf, Op::Info).map_err(io_error)
}

/// Which dma-buf a descriptor refers to: every dma-buf is one inode of the dma-buf filesystem,
/// so two descriptors (say an export and a re-export) name the same buffer when these match.
pub type DmaBufId = extmem::dma_buf::BufferId;

/// The identity of the dma-buf behind `dma_buf` (`fstat`).
pub fn identity(dma_buf: BorrowedFd<'_>) -> io::Result<DmaBufId> {
    extmem::dma_buf::identity(dma_buf, Op::Info).map_err(io_error)
}

/// Runs `access` between `DMA_BUF_SYNC_START` and `DMA_BUF_SYNC_END` (read and write), as the
/// dma-buf documentation requires around CPU access through an `mmap` of the dma-buf.
pub fn with_cpu_access<T>(dma_buf: BorrowedFd<'_>, access: impl FnOnce() -> T) -> io::Result<T> {
    sync(dma_buf, DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW)?;
    let value = access();
    sync(dma_buf, DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW)?;
    Ok(value)
}

fn sync(dma_buf: BorrowedFd<'_>, flags: u64) -> io::Result<()> {
    // SAFETY: DMA_BUF_IOCTL_SYNC takes a `struct dma_buf_sync` by pointer, which `DmaBufSync`
    // reproduces (one u64, checked against the header's ioctl number above).
    unsafe {
        ioctl::ioctl(
            dma_buf,
            Setter::<DMA_BUF_IOCTL_SYNC, DmaBufSync>::new(DmaBufSync { flags }),
        )
    }?;
    Ok(())
}
