//! `/dev/udmabuf`: turning a sealed memfd into a dma-buf (`include/uapi/linux/udmabuf.h`).

use std::ffi::c_void;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};

use rustix::ioctl::{self, opcode, Ioctl, IoctlOutput, Opcode};

/// `struct udmabuf_create`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;
/// `UDMABUF_CREATE = _IOW('u', 0x42, struct udmabuf_create)`.
const UDMABUF_CREATE: Opcode = opcode::write::<UdmabufCreate>(b'u', 0x42);
const _: () = assert!(UDMABUF_CREATE == 0x4018_7542);

/// `UDMABUF_CREATE` returns the new dma-buf as the ioctl's return value, which rustix's
/// ready-made patterns discard; this spells the request out.
struct CreateRequest(UdmabufCreate);

// SAFETY: the opcode matches the argument type (checked above), the argument is only read by
// the kernel, and a non-negative return value is a new file descriptor this process owns.
unsafe impl Ioctl for CreateRequest {
    type Output = OwnedFd;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        UDMABUF_CREATE
    }

    fn as_ptr(&mut self) -> *mut c_void {
        (&raw mut self.0).cast()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<OwnedFd> {
        if out < 0 {
            return Err(rustix::io::Errno::INVAL);
        }
        // SAFETY: a successful UDMABUF_CREATE returns a freshly installed fd nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(out) })
    }
}

/// Creates a dma-buf over `size` bytes of `memfd` from `offset` (both page aligned). The kernel
/// requires the memfd to carry `F_SEAL_SHRINK` and not `F_SEAL_WRITE`.
pub fn create(
    udmabuf_dev: BorrowedFd<'_>,
    memfd: BorrowedFd<'_>,
    offset: u64,
    size: u64,
) -> io::Result<OwnedFd> {
    let memfd = u32::try_from(memfd.as_raw_fd()).map_err(io::Error::other)?;
    let request = CreateRequest(UdmabufCreate {
        memfd,
        flags: UDMABUF_FLAGS_CLOEXEC,
        offset,
        size,
    });
    // SAFETY: see the `Ioctl` impl of `CreateRequest`.
    Ok(unsafe { ioctl::ioctl(udmabuf_dev, request) }?)
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
