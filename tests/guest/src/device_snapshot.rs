//! What extmem-vgpu holds, by its own counters and by the kernel's books, and the checks
//! built on it: an ioctl failed with exactly this errno, a state is back to an earlier one.
//!
//! Shared by every program that asserts "nothing leaked": the driver's counters alone could
//! hide a bug in the counters themselves, so a [`Snapshot`] also reads the pins the mm core
//! counts (`/proc/vmstat`) and the attachments the dma-buf core lists (debugfs).

use std::fmt::{self, Display};

use rustix::io::Errno;

use crate::host_memory;
use crate::ktap::{io_op, CheckResult, Failure};
use crate::vgpu::{self, Counters, Vgpu};

/// The symbolic name of the errno values the driver's contract uses (`errno N` otherwise).
pub fn errno_name(errno: Errno) -> String {
    const KNOWN: &[(Errno, &str)] = &[
        (Errno::INVAL, "EINVAL"),
        (Errno::OVERFLOW, "EOVERFLOW"),
        (Errno::RANGE, "ERANGE"),
        (Errno::NOENT, "ENOENT"),
        (Errno::EXIST, "EEXIST"),
        (Errno::FAULT, "EFAULT"),
        (Errno::NOMEM, "ENOMEM"),
        (Errno::NOSPC, "ENOSPC"),
        (Errno::IO, "EIO"),
        (Errno::ACCESS, "EACCES"),
        (Errno::OPNOTSUPP, "EOPNOTSUPP"),
        (Errno::NODEV, "ENODEV"),
        (Errno::PERM, "EPERM"),
        (Errno::PROTO, "EPROTO"),
        (Errno::BADF, "EBADF"),
        (Errno::NOTTY, "ENOTTY"),
        (Errno::INTR, "EINTR"),
        (Errno::NOSYS, "ENOSYS"),
        (Errno::BUSY, "EBUSY"),
        (Errno::TOOBIG, "E2BIG"),
        (Errno::AGAIN, "EAGAIN"),
        (Errno::MFILE, "EMFILE"),
        (Errno::SPIPE, "ESPIPE"),
    ];
    KNOWN.iter().find(|(e, _)| *e == errno).map_or_else(
        || format!("errno {}", errno.raw_os_error()),
        |(_, n)| (*n).to_owned(),
    )
}

/// An ioctl that should have worked.
pub fn op<T>(what: impl Display, result: Result<T, Errno>) -> CheckResult<T> {
    result.map_err(|e| Failure::op(what, errno_name(e)))
}

/// The device-wide counters, as a check.
pub fn counters(gpu: &Vgpu) -> CheckResult<Counters> {
    op("GET_PARAM of the counters", gpu.counters())
}

/// A failure unless the counters are exactly `expected`.
pub fn expect_counters(seen: Counters, expected: Counters) -> CheckResult<()> {
    if seen == expected {
        Ok(())
    } else {
        Err(Failure::new(
            format!("counters {expected}"),
            format!("counters {seen}"),
        ))
    }
}

/// `result` failed with exactly `expected`.
pub fn expect_errno<T: fmt::Debug>(
    what: &str,
    result: Result<T, Errno>,
    expected: Errno,
) -> CheckResult<()> {
    match result {
        Err(errno) if errno == expected => Ok(()),
        Err(errno) => Err(Failure::new(
            format!("{what} fails with {}", errno_name(expected)),
            format!("it failed with {}", errno_name(errno)),
        )),
        Ok(value) => Err(Failure::new(
            format!("{what} fails with {}", errno_name(expected)),
            format!("it succeeded: {value:?}"),
        )),
    }
}

/// What the device holds by its own counters, and by the kernel's books: pages pinned with
/// `FOLL_PIN` system-wide and not unpinned (`/proc/vmstat`), and the dma-buf attachments of
/// the device in the dma-buf core's list (debugfs). Nothing else in the guest pins pages or
/// attaches to dma-bufs while a check runs, so the kernel's numbers move only with the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The driver's counters.
    pub counters: Counters,
    /// `FOLL_PIN` pins outstanding system-wide.
    pub pins: i64,
    /// The device's attachments in the dma-buf core's list.
    pub attachments: usize,
}

impl Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; FOLL_PIN pins outstanding {}; debugfs attachments {}",
            self.counters, self.pins, self.attachments
        )
    }
}

/// The counters and the kernel's books, checking that the driver's attachment counter agrees
/// with the dma-buf core.
pub fn snapshot(gpu: &Vgpu) -> CheckResult<Snapshot> {
    let counters = counters(gpu)?;
    let pins = io_op("reading /proc/vmstat", host_memory::foll_pins_outstanding())?;
    let attachments = io_op(
        format!("reading {}", vgpu::DMA_BUF_BUFINFO),
        vgpu::dma_buf_attachments(extmem_uapi::DRIVER_NAME),
    )?;
    if counters.attachments != attachments as u64 {
        return Err(Failure::new(
            format!("the ATTACHMENTS counter equal to debugfs's count ({attachments})"),
            format!("ATTACHMENTS {}", counters.attachments),
        ));
    }
    Ok(Snapshot {
        counters,
        pins,
        attachments,
    })
}

/// A failure unless `seen` is exactly `expected`.
pub fn expect_snapshot(seen: Snapshot, expected: Snapshot) -> CheckResult<()> {
    if seen == expected {
        Ok(())
    } else {
        Err(Failure::new(expected.to_string(), seen.to_string()))
    }
}
