//! The GPU VA allocator (`extmem::va_allocator::VaAllocator`) on a synthetic but realistic
//! trace, against a first-fit free list written here as the baseline.
//!
//! The trace: sizes from 4 KiB to 64 MiB (60% up to 64 KiB, 30% up to 2 MiB, 10% up to
//! 64 MiB), minimum alignments 4 KiB / 64 KiB / 2 MiB, a working set of live ranges of
//! which a tenth are long-lived (never freed), and random frees among the rest.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use extmem::va_allocator::VaAllocator;
use extmem_hw::profile::VGPU;
use extmem_hw::{Alignment, GpuVa};

use crate::report::{median_ns, per_unit, Row};

const PAGE: u64 = 4096;
/// The VA space starts here (as the driver's does, clear of zero).
const SPACE_START: u64 = 2 << 20;
/// VA bytes per live range of the working set: about four times the mean size, so the
/// space can fill up and fragmentation shows.
const SPACE_PER_RANGE: u64 = 16 << 20;

/// A small deterministic generator (xorshift64*), so both allocators see the same trace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        usize::try_from(self.next() % n64).unwrap_or(0)
    }
}

/// One step of a trace; allocations are named by their index in the trace's id space.
#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc {
        id: usize,
        size: u64,
        align: Alignment,
    },
    Free {
        id: usize,
    },
}

/// A trace: `prefill` steps that build the working set, then the measured `ops`.
struct Trace {
    prefill: Vec<Op>,
    ops: Vec<Op>,
    ids: usize,
}

fn random_alloc(rng: &mut Rng, id: usize) -> Op {
    let class = rng.next() % 10;
    let pages = match class {
        0..=5 => rng.between(1, 16),
        6..=8 => rng.between(16, 512),
        _ => rng.between(512, 16384),
    };
    let align = match rng.next() % 10 {
        0..=5 => Alignment::SIZE_4K,
        6..=8 => Alignment::SIZE_64K,
        _ => Alignment::SIZE_2M,
    };
    Op::Alloc {
        id,
        size: pages * PAGE,
        align,
    }
}

/// Builds a trace around a working set of `live` ranges: the prefill allocates `live`
/// ranges then frees a quarter of the short-lived ones at random (so holes exist), and
/// refills; then `ops` steps of free-one / allocate-one keep the set at its size.
fn trace(live: usize, ops: usize, seed: u64) -> Trace {
    let mut rng = Rng(seed | 1);
    let mut ids = 0;
    let mut prefill = Vec::new();
    let mut short_lived = Vec::new();
    let mut alloc = |rng: &mut Rng, out: &mut Vec<Op>, short: &mut Vec<usize>, first: bool| {
        let id = ids;
        ids += 1;
        out.push(random_alloc(rng, id));
        // A tenth of the first working set lives for the whole trace.
        if !first || rng.next() % 10 != 0 {
            short.push(id);
        }
    };
    for _ in 0..live {
        alloc(&mut rng, &mut prefill, &mut short_lived, true);
    }
    let churn = short_lived.len() / 4;
    for _ in 0..churn {
        let id = short_lived.swap_remove(rng.below(short_lived.len()));
        prefill.push(Op::Free { id });
    }
    for _ in 0..churn {
        alloc(&mut rng, &mut prefill, &mut short_lived, false);
    }
    let mut steps = Vec::with_capacity(ops);
    while steps.len() < ops {
        if short_lived.is_empty() {
            break;
        }
        let id = short_lived.swap_remove(rng.below(short_lived.len()));
        steps.push(Op::Free { id });
        alloc(&mut rng, &mut steps, &mut short_lived, false);
    }
    Trace {
        prefill,
        ops: steps,
        ids,
    }
}

/// What the bench needs of an allocator.
trait Allocator {
    fn allocate(&mut self, size: u64, align: Alignment) -> Option<u64>;
    fn free(&mut self, va: u64);
    /// (largest hole, free bytes).
    fn holes(&self) -> (u64, u64);
}

impl Allocator for VaAllocator {
    fn allocate(&mut self, size: u64, align: Alignment) -> Option<u64> {
        VaAllocator::allocate(self, size, align)
            .ok()
            .map(GpuVa::get)
    }

    fn free(&mut self, va: u64) {
        black_box(VaAllocator::free(self, GpuVa::new(va)).is_ok());
    }

    fn holes(&self) -> (u64, u64) {
        (self.largest_hole(), self.free_bytes())
    }
}

/// The baseline: holes in a vector sorted by start, allocation takes the first hole that
/// fits at the alignment, free coalesces with its neighbours.
struct FirstFit {
    holes: Vec<(u64, u64)>,
    live: HashMap<u64, u64>,
}

impl FirstFit {
    fn new(start: u64, end: u64) -> Self {
        Self {
            holes: vec![(start, end - start)],
            live: HashMap::new(),
        }
    }
}

impl Allocator for FirstFit {
    fn allocate(&mut self, size: u64, align: Alignment) -> Option<u64> {
        let (index, at) = self
            .holes
            .iter()
            .enumerate()
            .find_map(|(i, &(start, len))| {
                let at = align.align_up(start)?;
                (at.checked_add(size)? <= start + len).then_some((i, at))
            })?;
        let (start, len) = self.holes[index];
        let end = start + len;
        let mut pieces = Vec::with_capacity(2);
        if at > start {
            pieces.push((start, at - start));
        }
        if at + size < end {
            pieces.push((at + size, end - at - size));
        }
        self.holes.splice(index..=index, pieces);
        self.live.insert(at, size);
        Some(at)
    }

    fn free(&mut self, va: u64) {
        let Some(size) = self.live.remove(&va) else {
            return;
        };
        let index = self.holes.partition_point(|&(start, _)| start < va);
        let mut start = va;
        let mut end = va + size;
        let merge_prev = index > 0 && {
            let (s, l) = self.holes[index - 1];
            s + l == va
        };
        let merge_next = self.holes.get(index).is_some_and(|&(s, _)| s == end);
        if merge_next {
            end += self.holes[index].1;
        }
        match (merge_prev, merge_next) {
            (true, true) => {
                start = self.holes[index - 1].0;
                self.holes[index - 1] = (start, end - start);
                self.holes.remove(index);
            }
            (true, false) => {
                start = self.holes[index - 1].0;
                self.holes[index - 1] = (start, end - start);
            }
            (false, true) => self.holes[index] = (start, end - start),
            (false, false) => self.holes.insert(index, (start, end - start)),
        }
    }

    fn holes(&self) -> (u64, u64) {
        let largest = self.holes.iter().map(|&(_, l)| l).max().unwrap_or(0);
        (largest, self.holes.iter().map(|&(_, l)| l).sum())
    }
}

/// The outcome of replaying a trace.
struct Replay {
    /// Time of the measured ops alone.
    elapsed: Duration,
    /// Measured ops that ran (a time budget may stop the replay early).
    ran: usize,
    /// Allocations that found no room.
    failed: usize,
    /// Largest hole over free bytes, at the end.
    largest_over_free: f64,
}

fn apply(allocator: &mut impl Allocator, op: Op, at: &mut [Option<u64>], failed: &mut usize) {
    match op {
        Op::Alloc { id, size, align } => {
            let va = allocator.allocate(size, align);
            if va.is_none() {
                *failed += 1;
            }
            if let Some(slot) = at.get_mut(id) {
                *slot = va;
            }
        }
        Op::Free { id } => {
            if let Some(va) = at.get_mut(id).and_then(Option::take) {
                allocator.free(va);
            }
        }
    }
}

/// Replays `trace` on `allocator`; the measured part stops early after `budget`.
fn replay(mut allocator: impl Allocator, trace: &Trace, budget: Duration) -> Replay {
    let mut at = vec![None; trace.ids];
    let mut failed = 0;
    for &op in &trace.prefill {
        apply(&mut allocator, op, &mut at, &mut failed);
    }
    let started = Instant::now();
    let mut ran = 0;
    for chunk in trace.ops.chunks(1024) {
        for &op in chunk {
            apply(&mut allocator, op, &mut at, &mut failed);
        }
        ran += chunk.len();
        if started.elapsed() > budget {
            break;
        }
    }
    let elapsed = started.elapsed();
    let (largest, free) = allocator.holes();
    Replay {
        elapsed,
        ran,
        failed,
        largest_over_free: if free == 0 {
            0.0
        } else {
            // Both fit f64's 53-bit mantissa well enough for a ratio.
            largest as f64 / free as f64
        },
    }
}

/// The cost shape of one ordered map of `live` random keys: each step removes a random key
/// and inserts a fresh one, in nanoseconds per step. The allocator keeps three such maps;
/// if its time per op grows with `live` as this does, the growth is the memory hierarchy
/// under an O(log n) structure, not the algorithm.
fn btree_churn(live: usize, steps: usize, seed: u64) -> f64 {
    let mut rng = Rng(seed | 1);
    let mut keys: Vec<u64> = (0..live).map(|_| rng.next()).collect();
    let mut map: BTreeMap<u64, u64> = keys.iter().map(|&k| (k, k)).collect();
    let started = Instant::now();
    for _ in 0..steps {
        let slot = rng.below(keys.len());
        black_box(map.remove(&keys[slot]));
        let key = rng.next();
        map.insert(key, key);
        keys[slot] = key;
    }
    per_unit(started.elapsed(), steps)
}

fn ours(live: usize) -> VaAllocator {
    let end = SPACE_START + SPACE_PER_RANGE * u64::try_from(live).unwrap_or(u64::MAX >> 30);
    VaAllocator::new(GpuVa::new(SPACE_START), GpuVa::new(end), VGPU.page_sizes)
}

fn first_fit(live: usize) -> FirstFit {
    let end = SPACE_START + SPACE_PER_RANGE * u64::try_from(live).unwrap_or(u64::MAX >> 30);
    FirstFit::new(SPACE_START, end)
}

/// The alignment both allocators get: what the driver's allocator would pick (2 MiB for
/// ranges of 2 MiB and more, so they can use blocks), so the baseline does the same work.
fn driver_alignments(trace: &mut Trace, live: usize) {
    let reference = ours(live);
    for op in trace.prefill.iter_mut().chain(trace.ops.iter_mut()) {
        if let Op::Alloc { size, align, .. } = op {
            *align = reference.alignment_for(*size, *align);
        }
    }
}

fn note(ours: &Replay, base: Option<&Replay>) -> String {
    let mut text = format!("largest hole/free: ours {:.3}", ours.largest_over_free);
    if let Some(base) = base {
        text.push_str(&format!(
            ", first-fit {:.3}; first-fit ran {} ops",
            base.largest_over_free, base.ran
        ));
    }
    if ours.failed > 0 || base.is_some_and(|b| b.failed > 0) {
        text.push_str(&format!(
            "; failed allocations: ours {}, first-fit {}",
            ours.failed,
            base.map_or(0, |b| b.failed)
        ));
    }
    text
}

/// Runs the allocator cases and returns their rows.
pub fn run(reps: usize) -> Vec<Row> {
    let mut rows = Vec::new();

    // The 1M-operation trace over a working set of 10,000 live ranges.
    const TRACE_LIVE: usize = 10_000;
    const TRACE_OPS: usize = 1_000_000;
    let mut full = trace(TRACE_LIVE, TRACE_OPS, 0x5EED);
    driver_alignments(&mut full, TRACE_LIVE);
    let mut ours_t = Vec::new();
    let mut base_t = Vec::new();
    let mut last = None;
    for _ in 0..reps {
        let a = replay(ours(TRACE_LIVE), &full, Duration::MAX);
        let b = replay(first_fit(TRACE_LIVE), &full, Duration::from_secs(20));
        ours_t.push(per_unit(a.elapsed, a.ran));
        base_t.push(per_unit(b.elapsed, b.ran));
        last = Some((a, b));
    }
    let ops_per_s = |ns: f64| 1e9 / ns.max(1e-3);
    let (ours_op, base_op) = (median_ns(ours_t), median_ns(base_t));
    if let Some((a, b)) = &last {
        rows.push(Row {
            group: "va-allocator",
            case: format!(
                "trace 1M ops, {TRACE_LIVE} live ({:.2} Mops/s vs {:.2})",
                ops_per_s(ours_op) / 1e6,
                ops_per_s(base_op) / 1e6
            ),
            size: format!("{} ops", full.ops.len()),
            unit: "op",
            ours: ours_op,
            reference: Some(base_op),
            reference_name: "first-fit list",
            note: note(a, Some(b)),
        });
    }

    // Growth: time per op in steady state at 1K … 1M live ranges. The first-fit list gets a
    // time budget; its prefill at 1M (250K frees into a sorted vector) alone takes minutes,
    // so it is left out there.
    let mut at_1k = None;
    let mut btree_at_1k = None;
    for live in [1_000, 10_000, 100_000, 1_000_000] {
        const STEADY_OPS: usize = 200_000;
        let mut t = trace(live, STEADY_OPS, 0xC0FFEE ^ live as u64);
        driver_alignments(&mut t, live);
        let mut ours_t = Vec::new();
        let mut base_t = Vec::new();
        let mut last = None;
        let reps = if live >= 1_000_000 { reps.min(3) } else { reps };
        for _ in 0..reps {
            let a = replay(ours(live), &t, Duration::MAX);
            ours_t.push(per_unit(a.elapsed, a.ran));
            let b = (live <= 100_000).then(|| {
                let b = replay(first_fit(live), &t, Duration::from_secs(3));
                base_t.push(per_unit(b.elapsed, b.ran));
                b
            });
            last = Some((a, b));
        }
        let ours_op = median_ns(ours_t);
        let base_op = (!base_t.is_empty()).then(|| median_ns(base_t));
        let first = *at_1k.get_or_insert(ours_op);
        let btree = median_ns(
            (0..reps)
                .map(|_| btree_churn(live, STEADY_OPS, 0xB7EE ^ live as u64))
                .collect(),
        );
        let btree_first = *btree_at_1k.get_or_insert(btree);
        if let Some((a, b)) = &last {
            rows.push(Row {
                group: "va-allocator",
                case: format!("steady state, {live} live"),
                size: format!("{live} live"),
                unit: "op",
                ours: ours_op,
                reference: base_op,
                reference_name: if base_op.is_some() {
                    "first-fit list"
                } else {
                    "first-fit list (too slow to run)"
                },
                note: note(a, b.as_ref()),
            });
        }
        rows.push(Row {
            group: "va-allocator",
            case: format!("growth, {live} live vs 1000 live"),
            size: format!("{live} live"),
            unit: "op",
            ours: ours_op,
            reference: Some(first),
            reference_name: "ours at 1000 live",
            note: format!(
                "a BTreeMap's remove+insert grows {:.2}x over the same range ({} ns/op)",
                btree / btree_first,
                crate::report::nanos(btree)
            ),
        });
    }
    rows
}
