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
