//! The GPU virtual address space of one device: userspace owns VA allocation (as panthor,
//! Xe and NVK do), the kernel only checks and maps.
//!
//! The space is kept as one ordered map of spans, holes and live ranges together, keyed by
//! their first address; a span runs to the next key, so it needs no stored size and a free
//! finds its neighbours in the same map it looks the range up in. Beside it, the holes are
//! indexed by (size, start) to find a fit. An allocation is then one removal and one or two
//! insertions in the size index and one or two in the span map, and so is a free: O(log n)
//! in the number of spans, with one small map entry per live range.
//!
//! The fit is one of at most [`FIT_PROBES`] best-fit candidates or, failing those, the
//! smallest hole that fits at any alignment. Only when both fail (every large-enough hole is
//! misaligned and none has room to spare) does allocate scan the remaining holes, so that it
//! never reports "out of space" while an aligned fit exists.

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

/// What a span of the space is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Span {
    /// Free.
    Hole,
    /// A live allocation.
    Live,
}

/// A GPU VA space `[start, end)`.
///
/// # Invariants
/// The keys of `spans` cut `[first key, end)` into spans, each running to the next key (the
/// last to `end`); two holes never follow each other; `by_size` holds exactly the holes of
/// `spans`, as (size, start); everything is 4 KiB-aligned.
#[derive(Clone, Debug)]
pub struct VaAllocator {
    spans: BTreeMap<u64, Span>,
    by_size: BTreeSet<(u64, u64)>,
    end: u64,
    live: usize,
    page_sizes: PageSizes,
    free_bytes: u64,
}

impl VaAllocator {
    /// An empty space over `[start, end)` (both rounded inwards to 4 KiB) that aligns
    /// allocations to the blocks in `page_sizes` when their size allows a block.
    #[must_use]
    pub fn new(start: GpuVa, end: GpuVa, page_sizes: PageSizes) -> Self {
        let start = start
            .align_up(Alignment::SIZE_4K)
            .map_or(u64::MAX, GpuVa::get);
        let end = end.align_down(Alignment::SIZE_4K).get();
        let mut va = Self {
            spans: BTreeMap::new(),
            by_size: BTreeSet::new(),
            end,
            live: 0,
            page_sizes,
            free_bytes: 0,
        };
        if start < end {
            va.spans.insert(start, Span::Hole);
            va.by_size.insert((end - start, start));
            va.free_bytes = end - start;
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
        self.live
    }

    /// The holes in address order, as (start, size).
    pub fn holes(&self) -> impl Iterator<Item = (GpuVa, u64)> + '_ {
        let ends = self.spans.keys().skip(1).chain(core::iter::once(&self.end));
        self.spans
            .iter()
            .zip(ends)
            .filter(|((_, &span), _)| span == Span::Hole)
            .map(|((&start, _), &end)| (GpuVa::new(start), end - start))
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
        self.by_size.remove(&(hole_size, hole_start));
        if at > hole_start {
            // The hole keeps its start and shrinks to the part before the range.
            self.by_size.insert((at - hole_start, hole_start));
        }
        // Replaces the hole's entry when the range starts where the hole did.
        self.spans.insert(at, Span::Live);
        let hole_end = hole_start + hole_size;
        let end = at + size;
        if end < hole_end {
            self.spans.insert(end, Span::Hole);
            self.by_size.insert((hole_end - end, end));
        }
        self.free_bytes -= size;
        self.live += 1;
        Ok(GpuVa::new(at))
    }

    /// Frees the allocation that starts at `va`, merging it with neighbouring holes.
    pub fn free(&mut self, va: GpuVa) -> Result<(), VaError> {
        let start = va.get();
        // The range and the span before it, in one walk down the map.
        let mut before = self.spans.range_mut(..=start).rev();
        let range = match before.next() {
            Some((&at, span)) if at == start && *span == Span::Live => span,
            _ => return Err(VaError::NotAllocated { va }),
        };
        let prev_hole = before
            .next()
            .filter(|(_, span)| **span == Span::Hole)
            .map(|(&prev, _)| prev);
        if prev_hole.is_none() {
            // The range becomes a hole in place; else it joins the hole before it, below.
            *range = Span::Hole;
        }
        // The span after it, and where that one ends.
        let mut after = self
            .spans
            .range((Bound::Excluded(start), Bound::Unbounded))
            .map(|(&at, &span)| (at, span));
        let next = after.next();
        let end = next.map_or(self.end, |(at, _)| at);
        let next_hole = match next {
            Some((next, Span::Hole)) => Some((next, after.next().map_or(self.end, |(at, _)| at))),
            _ => None,
        };
        let mut merged_start = start;
        let mut merged_end = end;
        if let Some(prev) = prev_hole {
            self.by_size.remove(&(start - prev, prev));
            self.spans.remove(&start);
            merged_start = prev;
        }
        if let Some((next, next_end)) = next_hole {
            self.by_size.remove(&(next_end - next, next));
            self.spans.remove(&next);
            merged_end = next_end;
        }
        self.by_size
            .insert((merged_end - merged_start, merged_start));
        self.free_bytes += end - start;
        self.live -= 1;
        Ok(())
    }

    /// The live allocation containing `va`, as (start, size).
    #[must_use]
    pub fn allocation_at(&self, va: GpuVa) -> Option<(GpuVa, u64)> {
        let (&start, &span) = self.spans.range(..=va.get()).next_back()?;
        let end = self
            .spans
            .range((Bound::Excluded(start), Bound::Unbounded))
            .next()
            .map_or(self.end, |(&at, _)| at);
        (span == Span::Live && va.get() < end).then_some((GpuVa::new(start), end - start))
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

    #[test]
    fn lookups_name_live_ranges_only() {
        let mut va = space(4 * M2);
        let a = va.allocate(0x3000, Alignment::SIZE_4K).expect("fits");
        let b = va.allocate(0x1000, Alignment::SIZE_4K).expect("fits");
        assert_eq!(
            va.allocation_at(GpuVa::new(a.get() + 0x2fff)),
            Some((a, 0x3000))
        );
        assert_eq!(va.allocation_at(b), Some((b, 0x1000)));
        // The hole after them, before the space, and past its end.
        assert_eq!(va.allocation_at(GpuVa::new(b.get() + 0x1000)), None);
        assert_eq!(va.allocation_at(GpuVa::new(M2 - 1)), None);
        assert_eq!(va.allocation_at(GpuVa::new(5 * M2)), None);
        // Freeing a hole, or the middle of a range, is refused and changes nothing.
        let hole = GpuVa::new(b.get() + 0x1000);
        assert_eq!(va.free(hole), Err(VaError::NotAllocated { va: hole }));
        let inside = GpuVa::new(a.get() + 0x1000);
        assert_eq!(va.free(inside), Err(VaError::NotAllocated { va: inside }));
        assert_eq!(va.allocations(), 2);
        // Freeing the first leaves a hole before the second, which the next fit takes.
        va.free(a).expect("live");
        assert_eq!(
            va.holes().collect::<Vec<_>>(),
            [(a, 0x3000), (GpuVa::new(b.get() + 0x1000), 4 * M2 - 0x4000)]
        );
        assert_eq!(va.allocate(0x2000, Alignment::SIZE_4K), Ok(a));
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
                prop_assert_eq!(va.allocations(), live.len());
                // The holes: coalesced, in order, and with the live ranges tiling the space
                // exactly. Natively only: a walk of every span at every step would slow the
                // test down under Miri, which is there for undefined behaviour.
                if !cfg!(miri) {
                    let holes: Vec<(u64, u64)> = va.holes().map(|(s, n)| (s.get(), n)).collect();
                    prop_assert!(holes.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0), "{holes:x?}");
                    let mut tiles: Vec<(u64, u64)> = holes.iter().chain(live.iter()).copied().collect();
                    tiles.sort_unstable();
                    let mut cur = lo;
                    for &(s, n) in &tiles {
                        prop_assert_eq!(s, cur, "a gap or an overlap at {:#x}", cur);
                        cur = s + n;
                    }
                    prop_assert_eq!(cur, hi);
                    prop_assert_eq!(holes.iter().map(|&(_, n)| n).max().unwrap_or(0), va.largest_hole());
                }
            }
        }
    }
}
