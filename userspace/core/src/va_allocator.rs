//! The GPU virtual address space of one device: userspace owns VA allocation (as panthor,
//! Xe and NVK do), the kernel only checks and maps.
//!
//! The space is kept as one ordered map of spans, holes and live ranges together, keyed by
//! their first address; a span runs to the next key, so it needs no stored size and a free
//! finds its neighbours in the same map it looks the range up in. Beside it, the holes are
//! indexed by (size, start) to find a fit. An allocation is then one removal and one or two
//! insertions in the size index and one or two in the span map, and so is a free.
//!
//! Both maps take one of two forms. While the space has few spans (most applications'
//! heaps: up to [`SMALL_MAX_SPANS`]) they are sorted vectors: a lookup is a binary search
//! over a few kilobytes that stay in the L1 cache, and an insertion or removal one `memmove`
//! of part of them, which costs less there than a B-tree's walk and node shifts. Above that
//! they are B-trees (O(log n) in the number of spans), and below [`SMALL_BACK_SPANS`] they
//! become vectors again; the gap between the two limits keeps a space that hovers around
//! one of them from converting back and forth. The form changes where ranges go in no way.
//!
//! The fit is one of at most [`FIT_PROBES`] best-fit candidates or, failing those, the
//! smallest hole that fits at any alignment. Only when both fail (every large-enough hole is
//! misaligned and none has room to spare) does allocate scan the remaining holes, so that it
//! never reports "out of space" while an aligned fit exists.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;

use extmem_hw::{Alignment, GpuVa, PageSize, PageSizes};

/// Best-fit candidates examined before falling back to a hole that fits at any alignment.
pub const FIT_PROBES: usize = 8;

/// Spans (holes and live ranges) above which the space leaves sorted vectors for B-trees.
/// An insertion into a vector moves half of it: at 2,048 8-byte spans that is 8 KiB, about
/// what a B-tree's search and node shift cost, and the vectors still fit in the L1 cache.
pub const SMALL_MAX_SPANS: usize = 2048;

/// Spans below which a space in B-trees goes back to sorted vectors: half of
/// [`SMALL_MAX_SPANS`], so each conversion (linear in the spans) is paid for by at least
/// that many operations in between.
pub const SMALL_BACK_SPANS: usize = SMALL_MAX_SPANS / 2;

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

mod forms;

use forms::{Freed, HoleIndex, Span, SpanMap, SpanVec};

/// The space's maps in their current form (see the module's documentation).
#[derive(Clone, Debug)]
enum Form {
    /// Sorted vectors, while the space has few spans.
    Small {
        spans: SpanVec,
        by_size: Vec<(u64, u64)>,
    },
    /// B-trees.
    Large {
        spans: BTreeMap<u64, Span>,
        by_size: BTreeSet<(u64, u64)>,
    },
}

/// When the form changes: above `grow_above` spans to B-trees, below `shrink_below` back.
#[derive(Clone, Copy, Debug)]
struct FormLimits {
    grow_above: usize,
    shrink_below: usize,
}

impl FormLimits {
    const DEFAULT: Self = Self {
        grow_above: SMALL_MAX_SPANS,
        shrink_below: SMALL_BACK_SPANS,
    };
}

/// Takes `size` bytes at `align` from the best hole of `by_size` and records it in
/// `spans`; returns where the range starts.
fn allocate_in(
    spans: &mut impl SpanMap,
    by_size: &mut impl HoleIndex,
    size: u64,
    align: Alignment,
) -> Option<u64> {
    let fits = |(hole_size, hole_start): (u64, u64)| -> Option<u64> {
        let at = align.align_up(hole_start)?;
        let end = at.checked_add(size)?;
        (end <= hole_start + hole_size).then_some(at)
    };
    // Best fit among the smallest holes that are large enough before alignment ...
    let ((hole_size, hole_start), at) = by_size
        .from((size, 0))
        .take(FIT_PROBES)
        .find_map(|h| fits(h).map(|at| (h, at)))
        // ... else the smallest hole that fits at any alignment.
        .or_else(|| {
            let worst = size.checked_add(align.get() - Alignment::SIZE_4K.get())?;
            let hole = by_size.from((worst, 0)).next()?;
            fits(hole).map(|at| (hole, at))
        })
        // ... else any hole at all (rare: fragmented and misaligned).
        .or_else(|| {
            by_size
                .from((size, 0))
                .skip(FIT_PROBES)
                .find_map(|h| fits(h).map(|at| (h, at)))
        })?;
    let hole_end = hole_start + hole_size;
    let end = at + size;
    // The hole keeps its start and shrinks to the part before the range, and a new one
    // follows the range, each if not empty.
    let before = (at > hole_start).then(|| (at - hole_start, hole_start));
    let after = (end < hole_end).then(|| (hole_end - end, end));
    let hole = (hole_size, hole_start);
    match (before, after) {
        (Some(before), Some(after)) => {
            by_size.replace(hole, before);
            by_size.insert(after);
        }
        (Some(piece), None) | (None, Some(piece)) => by_size.replace(hole, piece),
        (None, None) => by_size.remove(hole),
    }
    spans.carve(hole_start, at, end, after.is_some());
    Some(at)
}

/// Frees the live range at `start` in `spans` and brings `by_size` up to date; returns
/// its size, or `None` if no live range starts there.
fn free_in(
    spans: &mut impl SpanMap,
    by_size: &mut impl HoleIndex,
    start: u64,
    space_end: u64,
) -> Option<u64> {
    let Freed {
        prev_hole,
        end,
        next_hole,
    } = spans.free_span(start, space_end)?;
    let merged_start = prev_hole.unwrap_or(start);
    let merged_end = next_hole.map_or(end, |(_, next_end)| next_end);
    let merged = (merged_end - merged_start, merged_start);
    // The merged hole takes the place of one it absorbed.
    match (prev_hole, next_hole) {
        (Some(prev), next) => {
            by_size.replace((start - prev, prev), merged);
            if let Some((next, next_end)) = next {
                by_size.remove((next_end - next, next));
            }
        }
        (None, Some((next, next_end))) => by_size.replace((next_end - next, next), merged),
        (None, None) => by_size.insert(merged),
    }
    Some(end - start)
}

/// A GPU VA space `[start, end)`.
///
/// # Invariants
/// The keys of the span map cut `[first key, end)` into spans, each running to the next
/// key (the last to `end`); two holes never follow each other; the hole index holds
/// exactly the holes of the span map, as (size, start); everything is 4 KiB-aligned. The
/// maps are vectors when the form was last chosen with at most `limits.grow_above` spans.
#[derive(Clone, Debug)]
pub struct VaAllocator {
    form: Form,
    end: u64,
    live: usize,
    page_sizes: PageSizes,
    free_bytes: u64,
    limits: FormLimits,
}

impl VaAllocator {
    /// An empty space over `[start, end)` (both rounded inwards to 4 KiB) that aligns
    /// allocations to the blocks in `page_sizes` when their size allows a block.
    #[must_use]
    pub fn new(start: GpuVa, end: GpuVa, page_sizes: PageSizes) -> Self {
        Self::with_limits(start, end, page_sizes, FormLimits::DEFAULT)
    }

    fn with_limits(start: GpuVa, end: GpuVa, page_sizes: PageSizes, limits: FormLimits) -> Self {
        let start = start
            .align_up(Alignment::SIZE_4K)
            .map_or(u64::MAX, GpuVa::get);
        let end = end.align_down(Alignment::SIZE_4K).get();
        let mut spans = SpanVec::default();
        let mut by_size = Vec::new();
        let mut free_bytes = 0;
        if start < end {
            spans = SpanVec::from_spans(core::iter::once((start, Span::Hole)), 1);
            by_size.push((end - start, start));
            free_bytes = end - start;
        }
        Self {
            form: Form::Small { spans, by_size },
            end,
            live: 0,
            page_sizes,
            free_bytes,
            limits,
        }
    }

    /// Bytes not allocated.
    #[must_use]
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// Size of the largest hole.
    #[must_use]
    pub fn largest_hole(&self) -> u64 {
        let largest = match &self.form {
            Form::Small { by_size, .. } => by_size.largest(),
            Form::Large { by_size, .. } => by_size.largest(),
        };
        largest.map_or(0, |(size, _)| size)
    }

    /// Live allocations.
    #[must_use]
    pub fn allocations(&self) -> usize {
        self.live
    }

    /// The holes in address order, as (start, size).
    pub fn holes(&self) -> impl Iterator<Item = (GpuVa, u64)> + '_ {
        // One of the two is empty: a chain of both is one iterator type for either form.
        let (small, large) = match &self.form {
            Form::Small { spans, .. } => (Some(spans.spans()), None),
            Form::Large { spans, .. } => (None, Some(spans.spans())),
        };
        let spans = small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten());
        let ends = spans
            .clone()
            .skip(1)
            .map(|(start, _)| start)
            .chain(core::iter::once(self.end));
        spans
            .zip(ends)
            .filter(|((_, span), _)| *span == Span::Hole)
            .map(|((start, _), end)| (GpuVa::new(start), end - start))
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
        let found = match &mut self.form {
            Form::Small { spans, by_size } => allocate_in(spans, by_size, size, align),
            Form::Large { spans, by_size } => allocate_in(spans, by_size, size, align),
        };
        let at = found.ok_or(VaError::OutOfSpace {
            size,
            alignment: align.get(),
        })?;
        self.free_bytes -= size;
        self.live += 1;
        self.reform();
        Ok(GpuVa::new(at))
    }

    /// Frees the allocation that starts at `va`, merging it with neighbouring holes.
    pub fn free(&mut self, va: GpuVa) -> Result<(), VaError> {
        let freed = match &mut self.form {
            Form::Small { spans, by_size } => free_in(spans, by_size, va.get(), self.end),
            Form::Large { spans, by_size } => free_in(spans, by_size, va.get(), self.end),
        };
        let size = freed.ok_or(VaError::NotAllocated { va })?;
        self.free_bytes += size;
        self.live -= 1;
        self.reform();
        Ok(())
    }

    /// The live allocation containing `va`, as (start, size).
    #[must_use]
    pub fn allocation_at(&self, va: GpuVa) -> Option<(GpuVa, u64)> {
        let (start, end, span) = match &self.form {
            Form::Small { spans, .. } => spans.span_at(va.get(), self.end),
            Form::Large { spans, .. } => spans.span_at(va.get(), self.end),
        }?;
        (span == Span::Live && va.get() < end).then_some((GpuVa::new(start), end - start))
    }

    /// Moves the maps to the other form when the span count has crossed its limit.
    fn reform(&mut self) {
        let FormLimits {
            grow_above,
            shrink_below,
        } = self.limits;
        let form = match &mut self.form {
            Form::Small { spans, by_size } if spans.len() > grow_above => Form::Large {
                spans: spans.spans().collect(),
                by_size: core::mem::take(by_size).into_iter().collect(),
            },
            Form::Large { spans, by_size } if spans.len() < shrink_below => {
                // Room to grow to the limit without reallocating.
                let capacity = grow_above.saturating_add(2);
                Form::Small {
                    spans: SpanVec::from_spans(spans.spans(), capacity),
                    by_size: core::mem::take(by_size).into_iter().collect(),
                }
            }
            _ => return,
        };
        self.form = form;
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

    /// The form limits a property test runs with: the default (so the vectors alone), or
    /// limits a few spans apart so that the trace crosses them both ways many times.
    fn limits() -> impl Strategy<Value = FormLimits> {
        prop_oneof![
            1 => Just(FormLimits::DEFAULT),
            3 => (2usize..12, 1usize..8).prop_map(|(shrink_below, gap)| FormLimits {
                grow_above: shrink_below + gap,
                shrink_below,
            }),
        ]
    }

    impl VaAllocator {
        /// Whether the maps are in their vector form.
        fn is_small(&self) -> bool {
            matches!(self.form, Form::Small { .. })
        }

        /// The hole index, smallest first.
        fn hole_index(&self) -> Vec<(u64, u64)> {
            match &self.form {
                Form::Small { by_size, .. } => by_size.clone(),
                Form::Large { by_size, .. } => by_size.iter().copied().collect(),
            }
        }
    }

    #[test]
    fn the_form_follows_the_span_count_with_hysteresis() {
        let limits = FormLimits {
            grow_above: 8,
            shrink_below: 4,
        };
        let mut va = VaAllocator::with_limits(
            GpuVa::new(M2),
            GpuVa::new(M2 + 16 * M2),
            mali_sizes(),
            limits,
        );
        let ranges: Vec<_> = (0..8)
            .map(|_| va.allocate(0x1000, Alignment::SIZE_4K).expect("fits"))
            .collect();
        // Eight live ranges and the hole after them: nine spans, past the limit.
        assert!(!va.is_small(), "nine spans stay in vectors");
        va.free(ranges[0]).expect("live");
        va.free(ranges[2]).expect("live");
        for &r in ranges.iter().skip(4) {
            va.free(r).expect("live");
        }
        // hole, 1, hole, 3, hole: five spans, not below the lower limit.
        assert!(!va.is_small(), "five spans go back to vectors");
        va.free(ranges[1]).expect("live");
        assert!(va.is_small(), "three spans stay in trees");
        assert_eq!(
            va.holes().collect::<Vec<_>>(),
            [
                (GpuVa::new(M2), 0x3000),
                (GpuVa::new(M2 + 0x4000), 16 * M2 - 0x4000)
            ]
        );
        assert_eq!(va.allocation_at(ranges[3]), Some((ranges[3], 0x1000)));
        va.free(ranges[3]).expect("live");
        assert_eq!(va.allocations(), 0);
        assert_eq!(va.largest_hole(), 16 * M2);
        assert_eq!(va.allocate(0x2000, Alignment::SIZE_4K), Ok(GpuVa::new(M2)));
    }

    proptest! {
        // Fewer cases under Miri, which is there for undefined behaviour, not for rare traces.
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { ProptestConfig::default().cases },
            ..ProptestConfig::default()
        })]

        #[test]
        fn allocations_never_overlap_and_fail_only_when_nothing_fits(
            ops in prop::collection::vec(op(), 1..200),
            limits in limits(),
        ) {
            let lo = M2;
            let hi = M2 + 32 * M2;
            let mut va = VaAllocator::with_limits(GpuVa::new(lo), GpuVa::new(hi), mali_sizes(), limits);
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
                    // The size index holds exactly those holes, in its order.
                    let mut by_size: Vec<(u64, u64)> = holes.iter().map(|&(s, n)| (n, s)).collect();
                    by_size.sort_unstable();
                    prop_assert_eq!(va.hole_index(), by_size);
                }
            }
        }
    }
}
