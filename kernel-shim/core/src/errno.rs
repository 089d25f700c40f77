//! The one place every error of this crate becomes an errno (the values are the
//! contract's, [`extmem_uapi::errno`], re-exported here for the crate's users).
//!
//! Each mapping is an exhaustive `match` with no `_` arm: a new error variant does not
//! compile until someone decides its errno. The values are positive; the C ABI returns
//! them negated. The uAPI's table of meanings is in `extmem-uapi`'s crate docs.

use extmem_hw::{MapError, UnmapError};

use crate::args::ArgError;
use crate::bindings::BindingError;
use crate::copy_engine::ExecError;
use crate::cpu_page::CpuPageError;
use crate::pin_registry::PinError;
use crate::platform::SegmentError;
use crate::vm::{BindError, InitError, QueryError};

pub use extmem_uapi::errno::{
    EACCES, EBUSY, EEXIST, EFAULT, EINVAL, EIO, ENODEV, ENOENT, ENOMEM, ENOSPC, EOVERFLOW, ERANGE,
};

/// Errno values are below this (Linux `MAX_ERRNO` is 4095).
const MAX_ERRNO: i32 = 4096;

/// An error that has an errno.
pub trait ToErrno {
    /// The (positive) errno.
    fn errno(&self) -> i32;
}

impl ToErrno for CpuPageError {
    fn errno(&self) -> i32 {
        match self {
            Self::Unset | Self::Unsupported { .. } => EINVAL,
        }
    }
}

impl ToErrno for ArgError {
    fn errno(&self) -> i32 {
        match self {
            ArgError::UnknownOp { .. }
            | ArgError::UnknownParam { .. }
            | ArgError::NonZeroPad { .. }
            | ArgError::UnknownFlags { .. }
            | ArgError::UnusedField { .. }
            | ArgError::ZeroSize
            | ArgError::Misaligned { .. }
            | ArgError::BadCount { .. }
            | ArgError::TooManySyncs { .. } => EINVAL,
            ArgError::Wraps { .. } => EOVERFLOW,
            ArgError::OutsideVaSpace { .. } | ArgError::TooLarge { .. } => ERANGE,
        }
    }
}

impl ToErrno for BindingError {
    fn errno(&self) -> i32 {
        match self {
            BindingError::Overlap { .. } => EEXIST,
            BindingError::Full { .. } => ENOSPC,
            BindingError::NotFound { .. } => ENOENT,
        }
    }
}

impl ToErrno for SegmentError {
    fn errno(&self) -> i32 {
        match self {
            SegmentError::PastEnd => ERANGE,
            // Passed through as the platform said it, if it is an errno at all.
            SegmentError::Failed { errno } if (1..MAX_ERRNO).contains(errno) => *errno,
            SegmentError::Failed { .. } => EIO,
        }
    }
}

impl ToErrno for MapError {
    fn errno(&self) -> i32 {
        match self {
            MapError::ZeroSize
            | MapError::MisalignedVa { .. }
            | MapError::MisalignedSize { .. } => EINVAL,
            // The segment checks catch a misaligned segment first (`BadSegment`).
            MapError::MisalignedPa { .. } => EIO,
            // The object's memory lies beyond what the device can address.
            MapError::PaOutOfRange { .. } => EFAULT,
            MapError::VaOutOfRange { .. } => ERANGE,
            // The binding table rules overlap out first; the tables disagreeing with it
            // would be a bug, still reported as the overlap it is.
            MapError::AlreadyMapped { .. } => EEXIST,
            MapError::OutOfTableMemory => ENOMEM,
            MapError::Corrupt(_) => EIO,
        }
    }
}

impl ToErrno for UnmapError {
    fn errno(&self) -> i32 {
        match self {
            UnmapError::ZeroSize
            | UnmapError::MisalignedVa { .. }
            | UnmapError::MisalignedSize { .. } => EINVAL,
            UnmapError::VaOutOfRange { .. } => ERANGE,
            // A binding whose pages are not mapped: the tables disagree with the bindings.
            UnmapError::NotMapped { .. } | UnmapError::Corrupt(_) => EIO,
            UnmapError::OutOfTableMemory => ENOMEM,
        }
    }
}

impl ToErrno for InitError {
    fn errno(&self) -> i32 {
        match self {
            InitError::AlreadyInitialised => EBUSY,
            InitError::NoRootTable => ENOMEM,
        }
    }
}

impl ToErrno for BindError {
    fn errno(&self) -> i32 {
        match self {
            BindError::Uninitialised => ENODEV,
            BindError::Args(e) => e.errno(),
            BindError::ObjectRange { .. } => ERANGE,
            BindError::ReadOnlyObject { .. } => EACCES,
            BindError::Binding(e) => e.errno(),
            BindError::Segment { error, .. } => error.errno(),
            BindError::BadSegment { .. } => EIO,
            BindError::Map(e) => e.errno(),
            BindError::Unmap(e) => e.errno(),
        }
    }
}

impl ToErrno for QueryError {
    fn errno(&self) -> i32 {
        match self {
            QueryError::Uninitialised => ENODEV,
            QueryError::Args(e) => e.errno(),
            QueryError::Corrupt(_) => EIO,
        }
    }
}

impl ToErrno for ExecError {
    fn errno(&self) -> i32 {
        match self {
            ExecError::Uninitialised => ENODEV,
            ExecError::Args(e) => e.errno(),
            // The header promises EINVAL for any malformed command, a wrapping range too.
            ExecError::Malformed { .. } => EINVAL,
            ExecError::Fault { .. } | ExecError::Corrupt { .. } => EIO,
            ExecError::Memory { .. } => EFAULT,
        }
    }
}

impl ToErrno for PinError {
    fn errno(&self) -> i32 {
        match self {
            PinError::ZeroPages | PinError::Misaligned { .. } => EINVAL,
            PinError::Wraps { .. } => EOVERFLOW,
            PinError::Duplicate { .. } => EEXIST,
            PinError::Full { .. } => ENOSPC,
            PinError::NotFound { .. } => ENOENT,
        }
    }
}

/// `-errno` of `result`'s error, or 0.
pub fn to_return<E: ToErrno>(result: Result<(), E>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => e.errno().checked_neg().unwrap_or(-EIO),
    }
}
