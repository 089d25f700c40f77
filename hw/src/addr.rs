//! Addresses and alignments.
//!
//! Each address space has its own newtype so that a GPU virtual address can never be
//! passed where a physical one is expected. Arithmetic is `checked_*` only: there is no
//! `Add` impl, because every sum of a user-supplied address and size must be
//! overflow-checked (a wrapping `ptr + size` is the classic ioctl bug).

use core::fmt;
use core::num::NonZeroU64;

/// A power of two, by construction.
///
/// # Invariants
/// The wrapped value has exactly one bit set.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Alignment(NonZeroU64);

impl Alignment {
    /// 4 KiB: the smallest page of the 4 KiB granule and the CPU page size of the hosts we
    /// target (x86_64, arm64 with 4 KiB pages).
    pub const SIZE_4K: Self = Self::of_shift(12);
    /// 64 KiB: the largest `minImportedHostPointerAlignment` the Vulkan CTS accepts.
    pub const SIZE_64K: Self = Self::of_shift(16);
    /// 2 MiB: a level-2 block.
    pub const SIZE_2M: Self = Self::of_shift(21);
    /// 1 GiB: a level-1 block.
    pub const SIZE_1G: Self = Self::of_shift(30);

    /// `value` as an alignment, or `None` if it is not a power of two.
    #[must_use]
    pub const fn new(value: u64) -> Option<Self> {
        match NonZeroU64::new(value) {
            Some(v) if value.is_power_of_two() => Some(Self(v)),
            _ => None,
        }
    }

    /// `1 << shift`. Panics at compile time when used in a `const` with `shift > 63`.
    const fn of_shift(shift: u32) -> Self {
        match Self::new(1u64 << shift) {
            Some(a) => a,
            None => panic!("1 << shift is a power of two"),
        }
    }

    /// The alignment in bytes.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0.get()
    }

    /// log2 of the alignment.
    #[must_use]
    pub const fn log2(self) -> u32 {
        self.0.trailing_zeros()
    }

    /// Whether `value` is a multiple of this alignment.
    #[must_use]
    pub const fn is_aligned(self, value: u64) -> bool {
        value & (self.get() - 1) == 0
    }

    /// `value` rounded down to a multiple of this alignment.
    #[must_use]
    pub const fn align_down(self, value: u64) -> u64 {
        value & !(self.get() - 1)
    }

    /// `value` rounded up to a multiple of this alignment, or `None` on overflow.
    #[must_use]
    pub const fn align_up(self, value: u64) -> Option<u64> {
        match value.checked_add(self.get() - 1) {
            Some(v) => Some(self.align_down(v)),
            None => None,
        }
    }
}

impl fmt::Debug for Alignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Alignment({:#x})", self.get())
    }
}

/// Declares an address newtype with the same checked API for every address space.
macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// The zero address.
            pub const ZERO: Self = Self(0);

            /// Wraps a raw address.
            #[must_use]
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw address.
            #[must_use]
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + bytes`, or `None` on overflow.
            #[must_use]
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self - bytes`, or `None` on underflow.
            #[must_use]
            pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
                match self.0.checked_sub(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// The distance from `base` up to `self`, or `None` if `self < base`.
            #[must_use]
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }

            /// Whether the address is a multiple of `align`.
            #[must_use]
            pub const fn is_aligned(self, align: Alignment) -> bool {
                align.is_aligned(self.0)
            }

            /// The address rounded down to `align`.
            #[must_use]
            pub const fn align_down(self, align: Alignment) -> Self {
                Self(align.align_down(self.0))
            }

            /// The address rounded up to `align`, or `None` on overflow.
            #[must_use]
            pub const fn align_up(self, align: Alignment) -> Option<Self> {
                match align.align_up(self.0) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address_type!(
    /// A GPU virtual address: what the GPU's MMU translates through the page tables.
    GpuVa
);
address_type!(
    /// A physical (bus) address the GPU's page tables point at.
    PhysAddr
);
address_type!(
    /// A CPU virtual address in some process (a host pointer handed to us for import).
    HostVa
);

/// Checks that `[start, start + size)` is non-empty and does not wrap, returning its end.
#[must_use]
pub const fn range_end(start: u64, size: u64) -> Option<u64> {
    if size == 0 {
        return None;
    }
    start.checked_add(size)
}
