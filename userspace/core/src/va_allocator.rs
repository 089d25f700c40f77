//! The GPU virtual address space of one device: userspace owns VA allocation (as panthor,
//! Xe and NVK do), the kernel only checks and maps.
//!
//! Free space is kept twice, by start (to coalesce on free) and by (size, start) (to find a
//! fit), so free is O(log n) in the number of holes and so is allocate, whose fit is one of
//! at most [`FIT_PROBES`] best-fit candidates or, failing those, the smallest hole that
//! fits at any alignment. Only when both fail (every large-enough hole is misaligned and
//! none has room to spare) does allocate scan the remaining holes, so that it never
//! reports "out of space" while an aligned fit exists.

use alloc::collections::{BTreeMap, BTreeSet};
use core::fmt;
use core::ops::Bound;

use extmem_hw::{Alignment, GpuVa, PageSize, PageSizes};

/// Best-fit candidates examined before falling back to a hole that fits at any alignment.
pub const FIT_PROBES: usize = 8;

/// Why an allocation or free failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum VaError {
    /// Zero bytes asked for.
    ZeroSize,
    /// The size is not a multiple of 4 KiB, or rounding it up would overflow.
    BadSize {
        /// The size asked for.
        size: u64,
    },
    /// No hole can hold `size` bytes at `alignment`.
    OutOfSpace {
        /// The size asked for.
        size: u64,
        /// The alignment it needed.
        alignment: u64,
    },
    /// `va` is not the start of a live allocation.
    NotAllocated {
        /// The address given.
        va: GpuVa,
    },
}

impl fmt::Display for VaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaError::ZeroSize => write!(f, "zero-sized GPU VA allocation"),
            VaError::BadSize { size } => {
                write!(f, "GPU VA size {size:#x} is not a multiple of 4 KiB")
            }
            VaError::OutOfSpace { size, alignment } => write!(
                f,
                "no free GPU VA range of {size:#x} bytes at alignment {alignment:#x}"
            ),
            VaError::NotAllocated { va } => write!(f, "GPU VA {va} is not an allocation"),
        }
    }
}

/// A GPU VA space `[start, end)`.
///
/// # Invariants
/// `by_start` and `by_size` hold the same holes; holes never touch or overlap each other or
/// a live allocation; everything is 4 KiB-aligned.
#[derive(Clone, Debug)]
pub struct VaAllocator {
    by_start: BTreeMap<u64, u64>,
    by_size: BTreeSet<(u64, u64)>,
    live: BTreeMap<u64, u64>,
    page_sizes: PageSizes,
    free_bytes: u64,
}

impl VaAllocator {
    /// An empty space over `[start, end)` (both rounded inwards to 4 KiB) that aligns
    /// allocations to the blocks in `page_sizes` when their size allows a block.
    #[must_use]
    pub fn new(start: GpuVa, end: GpuVa, page_sizes: PageSizes) -> Self {
        let mut va = Self {
            by_start: BTreeMap::new(),
            by_size: BTreeSet::new(),
            live: BTreeMap::new(),
            page_sizes,
            free_bytes: 0,
        };
        let start = start
            .align_up(Alignment::SIZE_4K)
            .map_or(u64::MAX, GpuVa::get);
        let end = end.align_down(Alignment::SIZE_4K).get();
        if start < end {
            va.insert_hole(start, end - start);
        }
        va
    }

    /// Bytes not allocated.
    #[must_use]
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// Size of the largest hole.
    #[must_use]
    pub fn largest_hole(&self) -> u64 {
        self.by_size.last().map_or(0, |&(size, _)| size)
    }

    /// Live allocations.
    #[must_use]
    pub fn allocations(&self) -> usize {
        self.live.len()
    }

    /// The holes in address order, as (start, size).
    pub fn holes(&self) -> impl Iterator<Item = (GpuVa, u64)> + '_ {
        self.by_start
            .iter()
            .map(|(&start, &size)| (GpuVa::new(start), size))
    }

    /// The alignment an allocation of `size` gets: at least `min`, and the largest block
    /// size of the profile that the allocation could use.
    #[must_use]
    pub fn alignment_for(&self, size: u64, min: Alignment) -> Alignment {
        let block = PageSize::ALL
            .iter()
            .rev()
            .find(|p| self.page_sizes.contains(**p) && size >= p.bytes())
            .map_or(Alignment::SIZE_4K, |p| p.alignment());
        block.max(min).max(Alignment::SIZE_4K)
    }

    /// Allocates `size` bytes (a multiple of 4 KiB) aligned to [`Self::alignment_for`].
    pub fn allocate(&mut self, size: u64, min_alignment: Alignment) -> Result<GpuVa, VaError> {
        if size == 0 {
            return Err(VaError::ZeroSize);
        }
        if !Alignment::SIZE_4K.is_aligned(size) {
            return Err(VaError::BadSize { size });
        }
        let align = self.alignment_for(size, min_alignment);
        let out_of_space = VaError::OutOfSpace {
            size,
            alignment: align.get(),
        };
        let fits = |&(hole_size, hole_start): &(u64, u64)| -> Option<u64> {
            let at = align.align_up(hole_start)?;
            let end = at.checked_add(size)?;
            (end <= hole_start + hole_size).then_some(at)
        };
        // Best fit among the smallest holes that are large enough before alignment ...
        let found = self
            .by_size
            .range((size, 0)..)
            .take(FIT_PROBES)
            .find_map(|h| fits(h).map(|at| (*h, at)))
            // ... else the smallest hole that fits at any alignment.
            .or_else(|| {
                let worst = size.checked_add(align.get() - Alignment::SIZE_4K.get())?;
                let hole = *self.by_size.range((worst, 0)..).next()?;
                fits(&hole).map(|at| (hole, at))
            })
            // ... else any hole at all (rare: fragmented and misaligned).
            .or_else(|| {
                self.by_size
                    .range((size, 0)..)
                    .skip(FIT_PROBES)
                    .find_map(|h| fits(h).map(|at| (*h, at)))
            });
        let ((hole_size, hole_start), at) = found.ok_or(out_of_space)?;
        self.remove_hole(hole_start, hole_size);
        if at > hole_start {
            self.insert_hole(hole_start, at - hole_start);
        }
        let hole_end = hole_start + hole_size;
        let end = at + size;
        if end < hole_end {
            self.insert_hole(end, hole_end - end);
        }
        self.live.insert(at, size);
        Ok(GpuVa::new(at))
    }

    /// Frees the allocation that starts at `va`, merging it with neighbouring holes.
    pub fn free(&mut self, va: GpuVa) -> Result<(), VaError> {
        let size = self
            .live
            .remove(&va.get())
            .ok_or(VaError::NotAllocated { va })?;
        let mut start = va.get();
        let mut end = start + size;
        if let Some((&prev_start, &prev_size)) = self.by_start.range(..start).next_back() {
            if prev_start + prev_size == start {
                self.remove_hole(prev_start, prev_size);
                start = prev_start;
            }
        }
        if let Some(&next_size) = self.by_start.get(&end) {
            self.remove_hole(end, next_size);
            end += next_size;
        }
        self.insert_hole(start, end - start);
        Ok(())
    }

    /// The live allocation containing `va`, as (start, size).
    #[must_use]
    pub fn allocation_at(&self, va: GpuVa) -> Option<(GpuVa, u64)> {
        let (&start, &size) = self
            .live
            .range((Bound::Unbounded, Bound::Included(va.get())))
            .next_back()?;
        (va.get() - start < size).then_some((GpuVa::new(start), size))
    }

    fn insert_hole(&mut self, start: u64, size: u64) {
        self.by_start.insert(start, size);
        self.by_size.insert((size, start));
        self.free_bytes += size;
    }

    fn remove_hole(&mut self, start: u64, size: u64) {
        self.by_start.remove(&start);
        self.by_size.remove(&(size, start));
        self.free_bytes -= size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const M2: u64 = 2 << 20;
    const G1: u64 = 1 << 30;

    fn mali_sizes() -> PageSizes {
        PageSizes::EMPTY
            .with(PageSize::Size4K)
            .with(PageSize::Size2M)
    }

    fn space(size: u64) -> VaAllocator {
        VaAllocator::new(GpuVa::new(M2), GpuVa::new(M2 + size), mali_sizes())
    }

    #[test]
    fn block_sized_allocations_get_block_alignment() {
        let mut va = space(64 * M2);
        let small = va.allocate(0x3000, Alignment::SIZE_4K).expect("fits");
        assert_eq!(small.get(), M2);
        let big = va.allocate(3 * M2, Alignment::SIZE_4K).expect("fits");
        assert!(big.is_aligned(Alignment::SIZE_2M), "{big}");
        // Adreno-style profiles align 1 GiB allocations to 1 GiB.
        let all = mali_sizes().with(PageSize::Size1G);
        let mut va = VaAllocator::new(GpuVa::new(M2), GpuVa::new(4 * G1), all);
        let huge = va.allocate(G1, Alignment::SIZE_4K).expect("fits");
        assert_eq!(huge.get(), G1);
        assert_eq!(va.alignment_for(G1, Alignment::SIZE_4K), Alignment::SIZE_1G);
        assert_eq!(
            va.alignment_for(0x1000, Alignment::SIZE_64K),
            Alignment::SIZE_64K
        );
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let mut va = space(4 * M2);
        assert_eq!(va.allocate(0, Alignment::SIZE_4K), Err(VaError::ZeroSize));
        assert_eq!(
            va.allocate(0x1001, Alignment::SIZE_4K),
            Err(VaError::BadSize { size: 0x1001 })
        );
        assert_eq!(
            va.allocate(8 * M2, Alignment::SIZE_4K),
            Err(VaError::OutOfSpace {
                size: 8 * M2,
                alignment: M2
            })
        );
        assert_eq!(
            va.free(GpuVa::new(M2)),
            Err(VaError::NotAllocated { va: GpuVa::new(M2) })
        );
        let a = va.allocate(0x1000, Alignment::SIZE_4K).expect("fits");
        va.free(a).expect("live");
        assert_eq!(
            va.free(a),
            Err(VaError::NotAllocated { va: a }),
            "double free"
        );
    }

    #[test]
    fn freeing_everything_coalesces_into_one_hole() {
        let mut va = space(16 * M2);
        let total = va.free_bytes();
        let blocks: Vec<_> = (0..40)
            .map(|i| {
                va.allocate((i % 5 + 1) * 0x1000, Alignment::SIZE_4K)
                    .expect("fits")
            })
            .collect();
        for b in blocks
            .iter()
            .step_by(2)
            .chain(blocks.iter().skip(1).step_by(2))
        {
            va.free(*b).expect("live");
        }
        assert_eq!(va.free_bytes(), total);
        assert_eq!(va.largest_hole(), total);
        assert_eq!(va.allocations(), 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc { pages: u64, align_log2: u32 },
        Free { pick: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1u64..=1024, 12u32..=21).prop_map(|(pages, align_log2)| Op::Alloc { pages, align_log2 }),
            2 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        ]
    }

    proptest! {
        // Fewer cases under Miri, which is there for undefined behaviour, not for rare traces.
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { ProptestConfig::default().cases },
            ..ProptestConfig::default()
        })]

        #[test]
        fn allocations_never_overlap_and_fail_only_when_nothing_fits(ops in prop::collection::vec(op(), 1..200)) {
            let lo = M2;
            let hi = M2 + 32 * M2;
            let mut va = VaAllocator::new(GpuVa::new(lo), GpuVa::new(hi), mali_sizes());
            let mut live: Vec<(u64, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc { pages, align_log2 } => {
                        let size = pages * 0x1000;
                        let min = Alignment::new(1 << align_log2).expect("power of two");
                        let align = va.alignment_for(size, min).get();
                        match va.allocate(size, min) {
                            Ok(at) => {
                                let at = at.get();
                                prop_assert!(at % align == 0 && at >= lo && at + size <= hi);
                                prop_assert!(live.iter().all(|&(s, n)| at + size <= s || s + n <= at));
                                live.push((at, size));
                            }
                            Err(VaError::OutOfSpace { .. }) => {
                                // The model: no gap between live ranges holds it aligned.
                                let mut sorted = live.clone();
                                sorted.sort_unstable();
                                let mut cur = lo;
                                for &(s, n) in sorted.iter().chain(core::iter::once(&(hi, 0))) {
                                    let aligned = cur.div_ceil(align) * align;
                                    prop_assert!(aligned + size > s, "a gap [{cur:#x}, {s:#x}) fits {size:#x}");
                                    cur = s + n;
                                }
                            }
                            Err(e) => prop_assert!(false, "unexpected {e:?}"),
                        }
                    }
                    Op::Free { pick } => {
                        if !live.is_empty() {
                            let (at, size) = live.swap_remove(pick % live.len());
                            prop_assert_eq!(va.allocation_at(GpuVa::new(at + size - 1)), Some((GpuVa::new(at), size)));
                            prop_assert_eq!(va.free(GpuVa::new(at)), Ok(()));
                        }
                    }
                }
                let used: u64 = live.iter().map(|&(_, n)| n).sum();
                prop_assert_eq!(va.free_bytes() + used, hi - lo);
            }
        }
    }
}
