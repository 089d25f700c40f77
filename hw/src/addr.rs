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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_is_a_power_of_two_by_construction() {
        assert_eq!(Alignment::new(0), None);
        assert_eq!(Alignment::new(3), None);
        assert_eq!(Alignment::new(4096).map(Alignment::get), Some(4096));
        assert_eq!(Alignment::new(1 << 63).map(Alignment::log2), Some(63));
        assert_eq!(Alignment::SIZE_2M.get(), 2 * 1024 * 1024);
        assert_eq!(Alignment::SIZE_1G.log2(), 30);
    }

    #[test]
    fn alignment_rounding_is_checked() {
        let a = Alignment::SIZE_4K;
        assert!(a.is_aligned(0x2000));
        assert!(!a.is_aligned(0x2001));
        assert_eq!(a.align_down(0x2fff), 0x2000);
        assert_eq!(a.align_up(0x2001), Some(0x3000));
        assert_eq!(a.align_up(0x3000), Some(0x3000));
        assert_eq!(a.align_up(u64::MAX), None);
    }

    #[test]
    fn address_arithmetic_is_checked() {
        let va = GpuVa::new(u64::MAX - 0xfff);
        assert_eq!(va.checked_add(0xfff), Some(GpuVa::new(u64::MAX)));
        assert_eq!(va.checked_add(0x1000), None);
        assert_eq!(GpuVa::ZERO.checked_sub(1), None);
        assert_eq!(
            PhysAddr::new(0x5000).offset_from(PhysAddr::new(0x1000)),
            Some(0x4000)
        );
        assert_eq!(
            PhysAddr::new(0x1000).offset_from(PhysAddr::new(0x5000)),
            None
        );
        assert_eq!(
            HostVa::new(0x1234).align_down(Alignment::SIZE_4K),
            HostVa::new(0x1000)
        );
        assert_eq!(
            HostVa::new(0x1234).align_up(Alignment::SIZE_4K),
            Some(HostVa::new(0x2000))
        );
    }

    #[test]
    fn range_end_rejects_empty_and_wrapping_ranges() {
        assert_eq!(range_end(0x1000, 0), None);
        assert_eq!(range_end(u64::MAX, 1), None);
        assert_eq!(range_end(0x1000, 0x1000), Some(0x2000));
    }
}
