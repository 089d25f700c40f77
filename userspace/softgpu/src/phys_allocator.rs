//! The software device's physical address space: which runs of "physical" addresses are
//! taken by table pages and objects, and which are free.
//!
//! The kernel device gets physical memory from the kernel's page allocator; the software
//! device has none, so it invents an address space and hands out runs of it here. The
//! addresses only have to be distinct, page-aligned and (for block mappings) block-aligned:
//! [`crate::phys_memory`] turns them back into process memory. A software device holds a
//! few hundred objects at most, so free runs are kept in one ordered map and found first
//! fit, lowest address first, which also keeps the addresses a test sees predictable.

use std::collections::BTreeMap;
use std::fmt;

use extmem_hw::profile::MIN_PAGE;
use extmem_hw::{Alignment, PhysAddr};

/// Why an allocation or a free failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PhysAllocError {
    /// The size is not a positive whole number of 4 KiB pages.
    NotWholePages {
        /// The size asked for.
        size: u64,
    },
    /// `pa` is not the start of a live allocation.
    NotAllocated {
        /// The address given.
        pa: PhysAddr,
    },
    /// No free run holds `size` bytes at `alignment`.
    Exhausted {
        /// The size asked for.
        size: u64,
        /// The alignment it needed.
        alignment: Alignment,
        /// Bytes free in all (more than `size`: the space is fragmented).
        free: u64,
    },
}

impl fmt::Display for PhysAllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotWholePages { size } => {
                write!(
                    f,
                    "physical allocation of {size:#x} bytes is not whole pages"
                )
            }
            Self::Exhausted {
                size,
                alignment,
                free,
            } => write!(
                f,
                "no free physical run of {size:#x} bytes at alignment {:#x} ({free:#x} bytes free)",
                alignment.get()
            ),
            Self::NotAllocated { pa } => write!(f, "physical address {pa} is not an allocation"),
        }
    }
}

/// The runs of `[start, end)` that are free and taken.
///
/// # Invariants
/// Every run in `free` (start to exclusive end) and in `taken` (start to size) is non-empty
/// and 4 KiB-aligned; together they tile the space without overlap; no two free runs touch
/// (a freed run is merged with its free neighbours).
#[derive(Clone, Debug, Default)]
pub struct PhysAllocator {
    free: BTreeMap<PhysAddr, PhysAddr>,
    taken: BTreeMap<PhysAddr, u64>,
}

impl PhysAllocator {
    /// An empty space over `[start, end)`, both rounded inwards to 4 KiB.
    #[must_use]
    pub fn new(start: PhysAddr, end: PhysAddr) -> Self {
        let mut space = Self::default();
        if let Some(first) = start.align_up(MIN_PAGE) {
            let last = end.align_down(MIN_PAGE);
            if first < last {
                space.free.insert(first, last);
            }
        }
        space
    }

    /// `size` bytes (whole pages) at a multiple of `alignment` (at least 4 KiB): the
    /// lowest such run that is free.
    pub fn allocate(
        &mut self,
        size: u64,
        alignment: Alignment,
    ) -> Result<PhysAddr, PhysAllocError> {
        if size == 0 || !MIN_PAGE.is_aligned(size) {
            return Err(PhysAllocError::NotWholePages { size });
        }
        let alignment = alignment.max(MIN_PAGE);
        let (run_start, run_end, at) = self
            .free
            .iter()
            .find_map(|(&run_start, &run_end)| {
                let at = run_start.align_up(alignment)?;
                let end = at.checked_add(size)?;
                (end <= run_end).then_some((run_start, run_end, at))
            })
            .ok_or(PhysAllocError::Exhausted {
                size,
                alignment,
                free: self.free_bytes(),
            })?;
        self.free.remove(&run_start);
        if run_start < at {
            self.free.insert(run_start, at);
        }
        // `at + size <= run_end` was checked in the search.
        if let Some(end) = at.checked_add(size).filter(|end| *end < run_end) {
            self.free.insert(end, run_end);
        }
        self.taken.insert(at, size);
        Ok(at)
    }

    /// Frees the allocation that starts at `pa`, merging it with the free runs on either
    /// side; returns its size.
    pub fn free(&mut self, pa: PhysAddr) -> Result<u64, PhysAllocError> {
        let size = self
            .taken
            .remove(&pa)
            .ok_or(PhysAllocError::NotAllocated { pa })?;
        let mut start = pa;
        // An allocation lies inside the space, so its end does not overflow.
        let mut end = pa
            .checked_add(size)
            .ok_or(PhysAllocError::NotAllocated { pa })?;
        let before = self.free.range(..pa).next_back().map(|(s, e)| (*s, *e));
        if let Some((before_start, before_end)) = before {
            if before_end == start {
                self.free.remove(&before_start);
                start = before_start;
            }
        }
        if let Some(after_end) = self.free.remove(&end) {
            end = after_end;
        }
        self.free.insert(start, end);
        Ok(size)
    }

    /// Bytes not allocated.
    #[must_use]
    pub fn free_bytes(&self) -> u64 {
        self.free
            .iter()
            .filter_map(|(start, end)| end.offset_from(*start))
            .sum()
    }

    /// How many separate free runs there are (1 for an empty space: nothing fragments it).
    #[must_use]
    pub fn free_runs(&self) -> usize {
        self.free.len()
    }

    /// Live allocations.
    #[must_use]
    pub fn allocations(&self) -> usize {
        self.taken.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE: u64 = 4096;
    const M2: u64 = 2 << 20;

    fn pa(raw: u64) -> PhysAddr {
        PhysAddr::new(raw)
    }

    fn ok<T>(r: Result<T, PhysAllocError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn allocations_are_lowest_first_and_disjoint() {
        let mut space = PhysAllocator::new(pa(M2), pa(2 * M2));
        assert_eq!(space.free_bytes(), M2);
        assert_eq!(ok(space.allocate(PAGE, MIN_PAGE)), pa(M2));
        assert_eq!(ok(space.allocate(3 * PAGE, MIN_PAGE)), pa(M2 + PAGE));
        assert_eq!(ok(space.allocate(PAGE, MIN_PAGE)), pa(M2 + 4 * PAGE));
        assert_eq!(space.allocations(), 3);
        assert_eq!(space.free_bytes(), M2 - 5 * PAGE);
    }

    #[test]
    fn the_space_is_rounded_inwards_to_pages() {
        let mut space = PhysAllocator::new(pa(PAGE + 1), pa(4 * PAGE - 1));
        assert_eq!(space.free_bytes(), PAGE);
        assert_eq!(ok(space.allocate(PAGE, MIN_PAGE)), pa(2 * PAGE));
        assert_eq!(
            PhysAllocator::new(pa(u64::MAX), pa(u64::MAX)).free_bytes(),
            0
        );
        assert_eq!(PhysAllocator::new(pa(3 * PAGE), pa(PAGE)).free_bytes(), 0);
    }

    #[test]
    fn alignment_is_honoured_and_the_gap_stays_free() {
        let mut space = PhysAllocator::new(pa(PAGE), pa(4 * M2));
        assert_eq!(ok(space.allocate(PAGE, MIN_PAGE)), pa(PAGE));
        let block = ok(space.allocate(M2, Alignment::SIZE_2M));
        assert_eq!(block, pa(M2));
        // The pages between the first allocation and the block are still free.
        assert_eq!(ok(space.allocate(PAGE, MIN_PAGE)), pa(2 * PAGE));
        // An alignment below a page is a page.
        let tiny = Alignment::new(16).unwrap_or(MIN_PAGE);
        assert_eq!(ok(space.allocate(PAGE, tiny)), pa(3 * PAGE));
    }

    #[test]
    fn freeing_coalesces_with_both_neighbours() {
        let mut space = PhysAllocator::new(pa(PAGE), pa(PAGE + 8 * PAGE));
        let a = ok(space.allocate(2 * PAGE, MIN_PAGE));
        let b = ok(space.allocate(2 * PAGE, MIN_PAGE));
        let c = ok(space.allocate(2 * PAGE, MIN_PAGE));
        assert_eq!(space.free_runs(), 1);
        assert_eq!(ok(space.free(a)), 2 * PAGE);
        assert_eq!(ok(space.free(c)), 2 * PAGE);
        // a's run, and c's merged with the tail.
        assert_eq!(space.free_runs(), 2);
        assert_eq!(ok(space.free(b)), 2 * PAGE);
        assert_eq!(space.free_runs(), 1);
        assert_eq!(space.free_bytes(), 8 * PAGE);
        // All of it is one run again: the whole space fits in one allocation.
        assert_eq!(ok(space.allocate(8 * PAGE, MIN_PAGE)), pa(PAGE));
    }

    #[test]
    fn exhaustion_and_bad_requests_say_what_was_wrong() {
        let mut space = PhysAllocator::new(pa(PAGE), pa(5 * PAGE));
        assert_eq!(
            space.allocate(0, MIN_PAGE),
            Err(PhysAllocError::NotWholePages { size: 0 })
        );
        assert_eq!(
            space.allocate(100, MIN_PAGE),
            Err(PhysAllocError::NotWholePages { size: 100 })
        );
        assert_eq!(
            space.allocate(5 * PAGE, MIN_PAGE),
            Err(PhysAllocError::Exhausted {
                size: 5 * PAGE,
                alignment: MIN_PAGE,
                free: 4 * PAGE
            })
        );
        // Four free pages, but none at a 2 MiB boundary.
        assert_eq!(
            space.allocate(PAGE, Alignment::SIZE_2M),
            Err(PhysAllocError::Exhausted {
                size: PAGE,
                alignment: Alignment::SIZE_2M,
                free: 4 * PAGE
            })
        );
        let first = ok(space.allocate(4 * PAGE, MIN_PAGE));
        assert!(matches!(
            space.allocate(PAGE, MIN_PAGE),
            Err(PhysAllocError::Exhausted { .. })
        ));
        assert_eq!(
            space.free(pa(2 * PAGE)),
            Err(PhysAllocError::NotAllocated { pa: pa(2 * PAGE) })
        );
        assert_eq!(ok(space.free(first)), 4 * PAGE);
        assert_eq!(
            space.free(first),
            Err(PhysAllocError::NotAllocated { pa: first })
        );
        // The largest size does not wrap the search.
        let huge = u64::MAX - (PAGE - 1);
        assert!(matches!(
            space.allocate(huge, MIN_PAGE),
            Err(PhysAllocError::Exhausted { .. })
        ));
    }

    /// The model: the live allocations as (start, size); the lowest aligned gap among them
    /// is where the next allocation must go.
    fn lowest_fit(live: &[(u64, u64)], lo: u64, hi: u64, size: u64, align: u64) -> Option<u64> {
        let mut sorted = live.to_vec();
        sorted.sort_unstable();
        let mut gap_start = lo;
        for (start, len) in sorted.iter().copied().chain([(hi, 0)]) {
            let at = gap_start.div_ceil(align) * align;
            if at + size <= start {
                return Some(at);
            }
            gap_start = gap_start.max(start + len);
        }
        None
    }

    proptest! {
        #[test]
        // Each step allocates `pages` pages at 4 KiB, or at 2 MiB if `block`; 0 pages frees
        // the live allocation at `pick` (modulo how many there are).
        fn matches_a_first_fit_model(
            steps in prop::collection::vec((0u64..=600, any::<bool>(), any::<usize>()), 1..80)
        ) {
            // 1 MiB of pages below the first 2 MiB boundary, then 6 MiB more.
            let (lo, hi) = (M2 - 256 * PAGE, 4 * M2);
            let mut space = PhysAllocator::new(pa(lo), pa(hi));
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (pages, block, pick) in steps {
                match pages {
                    1.. => {
                        let size = pages * PAGE;
                        let align = if block { Alignment::SIZE_2M } else { MIN_PAGE };
                        let want = lowest_fit(&live, lo, hi, size, align.get());
                        let got = space.allocate(size, align);
                        match want {
                            Some(at) => {
                                prop_assert_eq!(got, Ok(pa(at)));
                                live.push((at, size));
                            }
                            None => prop_assert_eq!(
                                got,
                                Err(PhysAllocError::Exhausted {
                                    size,
                                    alignment: align,
                                    free: space.free_bytes(),
                                })
                            ),
                        }
                    }
                    0 => {
                        if live.is_empty() {
                            prop_assert!(space.free(pa(lo)).is_err());
                        } else {
                            let (at, size) = live.swap_remove(pick % live.len());
                            prop_assert_eq!(space.free(pa(at)), Ok(size));
                        }
                    }
                }
                let used: u64 = live.iter().map(|(_, size)| size).sum();
                prop_assert_eq!(space.free_bytes(), hi - lo - used);
                prop_assert_eq!(space.allocations(), live.len());
            }
            for (at, _) in live.drain(..) {
                prop_assert!(space.free(pa(at)).is_ok());
            }
            prop_assert_eq!(space.free_runs(), 1);
            prop_assert_eq!(space.free_bytes(), hi - lo);
        }
    }
}
