//! The host ranges one file has pinned (`GEM_USERPTR`), by object.
//!
//! The C glue pins the pages (`pin_user_pages`, charged to `RLIMIT_MEMLOCK`); this
//! registry is the file's ledger of them, so the count of pinned pages per file is exact
//! and a second record for the same object (a glue bug that would double-count or
//! double-unpin) is refused.
//!
//! Policy: one record per object. Overlapping host ranges are allowed: Vulkan lets an
//! application import the same host pointer more than once, and each import is its own
//! object with its own pin.

use extmem_hw::HostVa;

use crate::cpu_page::CpuPage;
use crate::platform::ObjectId;
use crate::sorted_table::{InsertError, Keyed, SortedTable};

/// Records one file holds at most (`ENOSPC` beyond).
pub const PINS_MAX: usize = 1024;

/// One pinned host range.
///
/// All-zero bytes are a valid (meaningless) `Pin`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Pin {
    /// The object the pages back.
    pub object: ObjectId,
    /// First host address.
    pub start: HostVa,
    /// Pages pinned.
    pub pages: u64,
}

impl Keyed for Pin {
    fn key(&self) -> u64 {
        self.object.0
    }
}

/// Why the registry refused a change.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PinError {
    /// No pages (`EINVAL`).
    ZeroPages,
    /// `start` is not aligned to the CPU page (`EINVAL`).
    Misaligned {
        /// The start.
        start: HostVa,
    },
    /// `start + pages * <CPU page>` wraps (`EOVERFLOW`).
    Wraps {
        /// The start.
        start: HostVa,
        /// The page count.
        pages: u64,
    },
    /// The object has a record already (`EEXIST`).
    Duplicate {
        /// The object.
        object: ObjectId,
    },
    /// The registry is full (`ENOSPC`).
    Full {
        /// Its capacity.
        capacity: usize,
    },
    /// The object has no record (`ENOENT`).
    NotFound {
        /// The object.
        object: ObjectId,
    },
}

/// The pins of one file.
///
/// # Invariants
/// `pinned_pages` is the sum of `pages` over the records. All-zero bytes are a valid,
/// empty registry.
#[derive(Clone, Copy, Debug)]
pub struct PinRegistry<const N: usize> {
    pins: SortedTable<Pin, N>,
    pinned_pages: u64,
}

impl<const N: usize> Default for PinRegistry<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> PinRegistry<N> {
    /// An empty registry.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            pins: SortedTable::new(Pin {
                object: ObjectId(0),
                start: HostVa::ZERO,
                pages: 0,
            }),
            pinned_pages: 0,
        }
    }

    /// Records that `object` pinned `pages` pages of `cpu_page` bytes (the kernel pins
    /// whole CPU pages) from `start`.
    pub fn add(
        &mut self,
        object: ObjectId,
        start: HostVa,
        pages: u64,
        cpu_page: CpuPage,
    ) -> Result<(), PinError> {
        if pages == 0 {
            return Err(PinError::ZeroPages);
        }
        if !start.is_aligned(cpu_page.alignment()) {
            return Err(PinError::Misaligned { start });
        }
        let wraps = PinError::Wraps { start, pages };
        let bytes = pages.checked_mul(cpu_page.bytes()).ok_or(wraps)?;
        start.checked_add(bytes).ok_or(wraps)?;
        let total = self.pinned_pages.checked_add(pages).ok_or(wraps)?;
        match self.pins.insert(Pin {
            object,
            start,
            pages,
        }) {
            Ok(_) => {
                self.pinned_pages = total;
                Ok(())
            }
            Err(InsertError::Duplicate) => Err(PinError::Duplicate { object }),
            Err(InsertError::Full) => Err(PinError::Full { capacity: N }),
        }
    }

    /// Forgets the record of `object`, returning it.
    pub fn remove(&mut self, object: ObjectId) -> Result<Pin, PinError> {
        let not_found = PinError::NotFound { object };
        let (index, _) = self.pins.find(object.0).ok_or(not_found)?;
        let pin = self.pins.remove_at(index).ok_or(not_found)?;
        self.pinned_pages = self.pinned_pages.saturating_sub(pin.pages);
        Ok(pin)
    }

    /// Pages this file has pinned.
    #[must_use]
    pub fn pinned_pages(&self) -> u64 {
        self.pinned_pages
    }

    /// The records, by object.
    #[must_use]
    pub fn pins(&self) -> &[Pin] {
        self.pins.as_slice()
    }

    /// Forgets every record (the file is closing).
    pub fn clear(&mut self) {
        self.pins.clear();
        self.pinned_pages = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(shift: u32) -> CpuPage {
        CpuPage::from_shift(shift).expect("a Linux page size")
    }

    #[test]
    fn counts_pages_and_refuses_bad_records() {
        #[allow(non_snake_case, reason = "reads as the constant it stands for")]
        let PAGE = page(12);
        let mut r = PinRegistry::<2>::new();
        let a = ObjectId(0xa);
        let start = HostVa::new(0x7f00_0000_0000);
        assert_eq!(r.add(a, start, 4, PAGE), Ok(()));
        // The same range again, for another object: allowed.
        assert_eq!(r.add(ObjectId(0xb), start, 2, PAGE), Ok(()));
        assert_eq!(r.pinned_pages(), 6);
        assert_eq!(
            r.add(a, start, 1, PAGE),
            Err(PinError::Duplicate { object: a }),
            "duplicate is reported before full"
        );
        assert_eq!(
            r.add(ObjectId(0xc), start, 1, PAGE),
            Err(PinError::Full { capacity: 2 })
        );
        assert_eq!(
            r.add(ObjectId(0xc), start, 0, PAGE),
            Err(PinError::ZeroPages)
        );
        assert_eq!(
            r.add(ObjectId(0xc), HostVa::new(0x1008), 1, PAGE),
            Err(PinError::Misaligned {
                start: HostVa::new(0x1008)
            })
        );
        let top = HostVa::new(u64::MAX - 0xfff);
        assert_eq!(
            r.add(ObjectId(0xc), top, 2, PAGE),
            Err(PinError::Wraps {
                start: top,
                pages: 2
            })
        );
        assert_eq!(
            r.add(ObjectId(0xc), start, u64::MAX, PAGE),
            Err(PinError::Wraps {
                start,
                pages: u64::MAX
            })
        );
        assert_eq!(r.pinned_pages(), 6, "refusals change nothing");
        assert_eq!(r.remove(a).map(|p| p.pages), Ok(4));
        assert_eq!(r.remove(a), Err(PinError::NotFound { object: a }));
        assert_eq!(r.pinned_pages(), 2);
        assert_eq!(r.pins().len(), 1);
        r.clear();
        assert_eq!((r.pinned_pages(), r.pins().len()), (0, 0));
    }

    #[test]
    fn sixteen_kib_pages_are_counted_and_aligned_as_such() {
        let page_16k = page(14);
        let mut r = PinRegistry::<2>::new();
        let start = HostVa::new(0x7f00_0000_4000);
        assert_eq!(r.add(ObjectId(1), start, 3, page_16k), Ok(()));
        assert_eq!(r.pinned_pages(), 3);
        // 4 KiB-aligned, but inside a 16 KiB page.
        let inside = HostVa::new(0x7f00_0000_5000);
        assert_eq!(
            r.add(ObjectId(2), inside, 1, page_16k),
            Err(PinError::Misaligned { start: inside })
        );
        // The end is computed in 16 KiB pages: four pages from 48 KiB below the top wrap,
        // where four 4 KiB pages would not.
        let near_top = HostVa::new(u64::MAX - 0xbfff);
        assert_eq!(
            r.add(ObjectId(3), near_top, 4, page_16k),
            Err(PinError::Wraps {
                start: near_top,
                pages: 4
            })
        );
        assert_eq!(r.add(ObjectId(3), near_top, 4, page(12)), Ok(()));
        assert_eq!(r.pinned_pages(), 7);
    }
}
