//! Why an operation failed: one enum per operation, each naming the offending values.

use core::fmt;

use crate::addr::{GpuVa, PhysAddr};
use crate::descriptor::CorruptDescriptor;

/// Why a [`PageTable::map`](crate::PageTable::map) failed. The tables are unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MapError {
    /// `size` is zero.
    ZeroSize,
    /// The VA is not 4 KiB-aligned.
    MisalignedVa {
        /// The offending address.
        va: GpuVa,
    },
    /// The PA is not 4 KiB-aligned.
    MisalignedPa {
        /// The offending address.
        pa: PhysAddr,
    },
    /// The size is not a multiple of 4 KiB.
    MisalignedSize {
        /// The offending size.
        size: u64,
    },
    /// `[va, va + size)` leaves the GPU's VA space (or wraps).
    VaOutOfRange {
        /// Start of the range.
        va: GpuVa,
        /// Its size.
        size: u64,
        /// The VA width it must fit.
        va_bits: u8,
    },
    /// `[pa, pa + size)` leaves the output-address space (or wraps).
    PaOutOfRange {
        /// Start of the range.
        pa: PhysAddr,
        /// Its size.
        size: u64,
        /// The OA width it must fit.
        oa_bits: u8,
    },
    /// Part of the range is mapped already; `va` is the first such page.
    AlreadyMapped {
        /// First mapped address found.
        va: GpuVa,
    },
    /// No table page could be allocated.
    OutOfTableMemory,
    /// A descriptor in the walk is not one this crate writes.
    Corrupt(CorruptDescriptor),
}

/// Why a [`PageTable::unmap`](crate::PageTable::unmap) failed. The tables are unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum UnmapError {
    /// `size` is zero.
    ZeroSize,
    /// The VA is not 4 KiB-aligned.
    MisalignedVa {
        /// The offending address.
        va: GpuVa,
    },
    /// The size is not a multiple of 4 KiB.
    MisalignedSize {
        /// The offending size.
        size: u64,
    },
    /// `[va, va + size)` leaves the GPU's VA space (or wraps).
    VaOutOfRange {
        /// Start of the range.
        va: GpuVa,
        /// Its size.
        size: u64,
        /// The VA width it must fit.
        va_bits: u8,
    },
    /// Part of the range is not mapped; `va` is the first hole.
    NotMapped {
        /// First unmapped address found.
        va: GpuVa,
    },
    /// A block cut by the range could not be split: no table page left.
    OutOfTableMemory,
    /// A descriptor in the walk is not one this crate writes.
    Corrupt(CorruptDescriptor),
}

/// Why a [`PageTable::translate`](crate::PageTable::translate) failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TranslateError {
    /// The VA is beyond the VA space.
    VaOutOfRange {
        /// The address.
        va: GpuVa,
        /// The VA width.
        va_bits: u8,
    },
    /// Nothing is mapped there: the GPU would take a translation fault.
    NotMapped {
        /// The address.
        va: GpuVa,
    },
    /// A descriptor in the walk is not one this crate writes.
    Corrupt(CorruptDescriptor),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::ZeroSize => write!(f, "map of zero bytes"),
            MapError::MisalignedVa { va } => RangeError::MisalignedVa { va }.fmt(f),
            MapError::MisalignedPa { pa } => write!(f, "PA {pa} is not 4 KiB-aligned"),
            MapError::MisalignedSize { size } => RangeError::MisalignedSize { size }.fmt(f),
            MapError::VaOutOfRange { va, size, va_bits } => {
                RangeError::VaOutOfRange { va, size, va_bits }.fmt(f)
            }
            MapError::PaOutOfRange { pa, size, oa_bits } => {
                write!(
                    f,
                    "[{pa}, +{size:#x}) is outside the {oa_bits}-bit output space"
                )
            }
            MapError::AlreadyMapped { va } => write!(f, "GPU VA {va} is already mapped"),
            MapError::OutOfTableMemory => write!(f, "out of page-table memory"),
            MapError::Corrupt(c) => c.fmt(f),
        }
    }
}

impl fmt::Display for UnmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            UnmapError::ZeroSize => write!(f, "unmap of zero bytes"),
            UnmapError::MisalignedVa { va } => RangeError::MisalignedVa { va }.fmt(f),
            UnmapError::MisalignedSize { size } => RangeError::MisalignedSize { size }.fmt(f),
            UnmapError::VaOutOfRange { va, size, va_bits } => {
                RangeError::VaOutOfRange { va, size, va_bits }.fmt(f)
            }
            UnmapError::NotMapped { va } => write!(f, "GPU VA {va} is not mapped"),
            UnmapError::OutOfTableMemory => write!(f, "out of page-table memory to split a block"),
            UnmapError::Corrupt(c) => c.fmt(f),
        }
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::VaOutOfRange { va, va_bits } => {
                write!(f, "GPU VA {va} is outside the {va_bits}-bit VA space")
            }
            TranslateError::NotMapped { va } => write!(f, "GPU VA {va} is not mapped"),
            TranslateError::Corrupt(c) => c.fmt(f),
        }
    }
}

/// Why a VA range was refused before the tables were looked at: map and unmap check a range
/// the same way, and each reports it as its own error's variant of the same name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum RangeError {
    ZeroSize,
    MisalignedVa { va: GpuVa },
    MisalignedSize { size: u64 },
    VaOutOfRange { va: GpuVa, size: u64, va_bits: u8 },
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::ZeroSize => write!(f, "a range of zero bytes"),
            RangeError::MisalignedVa { va } => write!(f, "GPU VA {va} is not 4 KiB-aligned"),
            RangeError::MisalignedSize { size } => {
                write!(f, "size {size:#x} is not a multiple of 4 KiB")
            }
            RangeError::VaOutOfRange { va, size, va_bits } => {
                write!(
                    f,
                    "[{va}, +{size:#x}) is outside the {va_bits}-bit GPU VA space"
                )
            }
        }
    }
}

/// `From<RangeError>` for each listed error enum, into its variants of the same names.
macro_rules! from_range_error {
    ($($error:ident),*) => {$(
        impl From<RangeError> for $error {
            fn from(error: RangeError) -> Self {
                match error {
                    RangeError::ZeroSize => $error::ZeroSize,
                    RangeError::MisalignedVa { va } => $error::MisalignedVa { va },
                    RangeError::MisalignedSize { size } => $error::MisalignedSize { size },
                    RangeError::VaOutOfRange { va, size, va_bits } => {
                        $error::VaOutOfRange { va, size, va_bits }
                    }
                }
            }
        }
    )*};
}

from_range_error!(MapError, UnmapError);
