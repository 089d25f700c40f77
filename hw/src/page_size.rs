//! The page and block sizes of the AArch64 4 KiB translation granule.

use crate::addr::Alignment;
use crate::descriptor::Level;

/// A size one descriptor can map: a 4 KiB page (level 3), a 2 MiB block (level 2) or a
/// 1 GiB block (level 1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum PageSize {
    /// 4 KiB page, level 3.
    Size4K,
    /// 2 MiB block, level 2.
    Size2M,
    /// 1 GiB block, level 1.
    Size1G,
}

impl PageSize {
    /// All sizes, smallest first.
    pub const ALL: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

    /// The size as an alignment (every page is naturally aligned).
    #[must_use]
    pub const fn alignment(self) -> Alignment {
        match self {
            PageSize::Size4K => Alignment::SIZE_4K,
            PageSize::Size2M => Alignment::SIZE_2M,
            PageSize::Size1G => Alignment::SIZE_1G,
        }
    }

    /// The size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        self.alignment().get()
    }

    /// The table level whose leaf descriptor maps this size.
    #[must_use]
    pub const fn level(self) -> Level {
        match self {
            PageSize::Size4K => Level::L3,
            PageSize::Size2M => Level::L2,
            PageSize::Size1G => Level::L1,
        }
    }

    const fn bit(self) -> u8 {
        match self {
            PageSize::Size4K => 0b001,
            PageSize::Size2M => 0b010,
            PageSize::Size1G => 0b100,
        }
    }
}

/// A set of [`PageSize`]s: what a GPU's MMU (or its kernel driver) lets us use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PageSizes(u8);

impl PageSizes {
    /// The empty set.
    pub const EMPTY: Self = Self(0);

    /// The set with `size` added.
    #[must_use]
    pub const fn with(self, size: PageSize) -> Self {
        Self(self.0 | size.bit())
    }

    /// Whether `size` is in the set.
    #[must_use]
    pub const fn contains(self, size: PageSize) -> bool {
        self.0 & size.bit() != 0
    }

    /// The largest size in the set that starts exactly at `va` and `pa` (both aligned to it)
    /// and fits in `len` bytes; `None` when not even a 4 KiB page fits.
    #[must_use]
    pub fn largest_fitting(self, va: u64, pa: u64, len: u64) -> Option<PageSize> {
        PageSize::ALL.iter().rev().copied().find(|&size| {
            self.contains(size) && size.alignment().is_aligned(va | pa) && len >= size.bytes()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_levels() {
        assert_eq!(PageSize::Size4K.bytes(), 4096);
        assert_eq!(PageSize::Size2M.bytes(), 2 << 20);
        assert_eq!(PageSize::Size1G.bytes(), 1 << 30);
        assert_eq!(PageSize::Size1G.level(), Level::L1);
        assert_eq!(PageSize::Size4K.level(), Level::L3);
    }

    #[test]
    fn largest_fitting_respects_set_alignment_and_length() {
        let all = PageSizes::EMPTY
            .with(PageSize::Size4K)
            .with(PageSize::Size2M)
            .with(PageSize::Size1G);
        let no_1g = PageSizes::EMPTY
            .with(PageSize::Size4K)
            .with(PageSize::Size2M);
        assert_eq!(all.largest_fitting(0, 0, 1 << 30), Some(PageSize::Size1G));
        assert_eq!(no_1g.largest_fitting(0, 0, 1 << 30), Some(PageSize::Size2M));
        // PA only 2 MiB aligned: no 1 GiB block even though VA and size allow it.
        assert_eq!(
            all.largest_fitting(0, 2 << 20, 1 << 30),
            Some(PageSize::Size2M)
        );
        assert_eq!(
            all.largest_fitting(0x1000, 0, 1 << 30),
            Some(PageSize::Size4K)
        );
        assert_eq!(all.largest_fitting(0, 0, 0xfff), None);
        assert_eq!(PageSizes::EMPTY.largest_fitting(0, 0, 1 << 30), None);
    }
}
