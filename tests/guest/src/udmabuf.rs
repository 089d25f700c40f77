//! `/dev/udmabuf`: turning a sealed memfd into a dma-buf (`include/uapi/linux/udmabuf.h`).

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};

/// Creates a dma-buf over `size` bytes of `memfd` from `offset` (both page aligned), with
/// extmem's own `UDMABUF_CREATE` ([`extmem::udmabuf::create`]). The kernel requires the memfd
/// to carry `F_SEAL_SHRINK` and not `F_SEAL_WRITE`.
pub fn create(
    udmabuf_dev: BorrowedFd<'_>,
    memfd: BorrowedFd<'_>,
    offset: u64,
    size: u64,
) -> io::Result<OwnedFd> {
    Ok(extmem::udmabuf::create(udmabuf_dev, memfd, offset, size)?)
}

/// The step of [`over_sealed_memfd`] that failed, and how.
#[derive(Debug)]
pub struct StepError {
    /// The call that failed (`open(/dev/udmabuf)`, `memfd_create`, ...).
    pub step: &'static str,
    /// Its error.
    pub error: io::Error,
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.error)
    }
}

/// A new memfd called `name` of `size` bytes, sealed against shrinking, and a udmabuf over
/// all of it: `(memfd, dma_buf)`.
pub fn over_sealed_memfd(name: &str, size: u64) -> Result<(OwnedFd, OwnedFd), StepError> {
    let step = |step: &'static str| move |error: io::Error| StepError { step, error };
    let device = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/udmabuf")
        .map_err(step("open(/dev/udmabuf)"))?;
    let memfd = memfd_create(name, MemfdFlags::ALLOW_SEALING | MemfdFlags::CLOEXEC)
        .map_err(|e| step("memfd_create")(e.into()))?;
    ftruncate(&memfd, size).map_err(|e| step("ftruncate")(e.into()))?;
    fcntl_add_seals(&memfd, SealFlags::SHRINK).map_err(|e| step("F_ADD_SEALS")(e.into()))?;
    let dma_buf = create(device.as_fd(), memfd.as_fd(), 0, size).map_err(step("UDMABUF_CREATE"))?;
    Ok((memfd, dma_buf))
}
