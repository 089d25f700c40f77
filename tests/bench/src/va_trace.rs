//! The GPU VA allocator (`extmem::va_allocator::VaAllocator`) on a synthetic but realistic
//! trace, against Mesa's `util_vma_heap` in both of its modes (when the bench is built with
//! it; see `build.rs`) and a first-fit free list written here, all in the same process,
//! alternating.
//!
//! The trace: sizes from 4 KiB to 64 MiB (60% up to 64 KiB, 30% up to 2 MiB, 10% up to
//! 64 MiB), minimum alignments 4 KiB / 64 KiB / 2 MiB, a working set of live ranges of
//! which a tenth are long-lived (never freed), and random frees among the rest.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::Duration;

use extmem::va_allocator::VaAllocator;
use extmem_hw::profile::VGPU;
use extmem_hw::{Alignment, GpuVa};

use crate::plots::{Plot, Point, Series};
use crate::report::{median_ns, nanos, per_unit, Row, Stopwatch};
#[cfg(util_vma_heap)]
use crate::util_vma_heap::UtilVmaHeap;

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
    /// Frees what `allocate` returned; util_vma_heap, like most C allocators, is told the
    /// size back, which the others ignore.
    fn free(&mut self, va: u64, size: u64);
    /// (largest hole, free bytes).
    fn holes(&self) -> (u64, u64);
    /// Whether some hole holds `size` bytes at `align` (asked only after a failure).
    fn fit_exists(&self, size: u64, align: Alignment) -> bool;
    /// Metadata held outside Rust's heap (which the bench counts itself), in bytes.
    fn foreign_metadata(&self) -> usize {
        0
    }
}

impl Allocator for VaAllocator {
    fn allocate(&mut self, size: u64, align: Alignment) -> Option<u64> {
        VaAllocator::allocate(self, size, align)
            .ok()
            .map(GpuVa::get)
    }

    fn free(&mut self, va: u64, _size: u64) {
        black_box(VaAllocator::free(self, GpuVa::new(va)).is_ok());
    }

    fn holes(&self) -> (u64, u64) {
        (self.largest_hole(), self.free_bytes())
    }

    fn fit_exists(&self, size: u64, align: Alignment) -> bool {
        self.holes()
            .any(|(start, len)| fits_in(start.get(), len, size, align))
    }
}

/// Whether `[start, start + len)` holds `size` bytes at `align`.
fn fits_in(start: u64, len: u64, size: u64, align: Alignment) -> bool {
    align
        .align_up(start)
        .and_then(|at| at.checked_add(size))
        .is_some_and(|end| end <= start + len)
}

#[cfg(util_vma_heap)]
impl Allocator for UtilVmaHeap {
    fn allocate(&mut self, size: u64, align: Alignment) -> Option<u64> {
        self.alloc(size, align.get())
    }

    fn free(&mut self, va: u64, size: u64) {
        UtilVmaHeap::free(self, va, size);
    }

    fn holes(&self) -> (u64, u64) {
        let (largest, free, _) = UtilVmaHeap::holes(self, 0, 1);
        (largest, free)
    }

    fn fit_exists(&self, size: u64, align: Alignment) -> bool {
        UtilVmaHeap::holes(self, size, align.get()).2
    }

    fn foreign_metadata(&self) -> usize {
        UtilVmaHeap::metadata_bytes()
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

    fn free(&mut self, va: u64, _size: u64) {
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

    fn fit_exists(&self, size: u64, align: Alignment) -> bool {
        self.holes
            .iter()
            .any(|&(start, len)| fits_in(start, len, size, align))
    }
}

/// Where each trace id was allocated, and its size.
type Placed = Vec<Option<(u64, u64)>>;

/// Runs one step; true if it was an allocation that failed.
fn apply(allocator: &mut impl Allocator, op: Op, at: &mut Placed) -> bool {
    match op {
        Op::Alloc { id, size, align } => {
            let va = allocator.allocate(size, align);
            if let Some(slot) = at.get_mut(id) {
                *slot = va.map(|va| (va, size));
            }
            va.is_none()
        }
        Op::Free { id } => {
            if let Some((va, size)) = at.get_mut(id).and_then(Option::take) {
                allocator.free(va, size);
            }
            false
        }
    }
}

/// Times the measured ops of `trace` on `allocator` after its prefill; stops early after
/// `budget`. Returns the time per op that ran, in nanoseconds, and how many ran.
fn timed(mut allocator: impl Allocator, trace: &Trace, budget: Duration) -> (f64, usize) {
    let mut at = vec![None; trace.ids];
    for &op in &trace.prefill {
        apply(&mut allocator, op, &mut at);
    }
    let started = Stopwatch::start();
    let mut ran = 0;
    for chunk in trace.ops.chunks(1024) {
        let mut failed = 0;
        for &op in chunk {
            failed += usize::from(apply(&mut allocator, op, &mut at));
        }
        black_box(failed);
        ran += chunk.len();
        if started.elapsed() > budget {
            break;
        }
    }
    (per_unit(started.elapsed(), ran), ran)
}

/// What an untimed replay of a whole trace shows about an allocator.
#[derive(Clone, Copy, Debug, Default)]
struct Audit {
    /// Allocations that found no room.
    failed: usize,
    /// Of those, the ones where some hole would have held the range at its alignment.
    failed_with_fit: usize,
    /// Largest hole over free bytes, at the end.
    largest_over_free: f64,
    /// The largest hole at the end, in bytes.
    largest: u64,
    /// Allocator metadata after the prefill, in bytes per live range.
    metadata_per_live: f64,
    /// Measured ops the audit replayed.
    audited: usize,
}

/// CPU time an audit replay may take.
const AUDIT_BUDGET: Duration = Duration::from_secs(10);

/// Replays the whole of `trace` on the allocator `make` builds, counting failures (and
/// failures while a fit existed) and the allocator's heap bytes once the working set is
/// built. Untimed: the checks after a failure walk every hole.
fn audit<A: Allocator>(make: impl FnOnce() -> A, trace: &Trace) -> Audit {
    let mut at = vec![None; trace.ids];
    let before = crate::heap_bytes();
    let mut allocator = make();
    let mut result = Audit::default();
    let step = |allocator: &mut A, op: Op, at: &mut Placed, result: &mut Audit| {
        if apply(allocator, op, at) {
            result.failed += 1;
            if let Op::Alloc { size, align, .. } = op {
                result.failed_with_fit += usize::from(allocator.fit_exists(size, align));
            }
        }
    };
    for &op in &trace.prefill {
        step(&mut allocator, op, &mut at, &mut result);
    }
    let live = at.iter().filter(|slot| slot.is_some()).count();
    let bytes = crate::heap_bytes().saturating_sub(before) + allocator.foreign_metadata();
    // Counts of this size are exact in f64.
    result.metadata_per_live = bytes as f64 / live.max(1) as f64;
    // The linear references take seconds per thousand ops at 100K live ranges: the audit
    // stops after AUDIT_BUDGET and says how far it got.
    let started = Stopwatch::start();
    for chunk in trace.ops.chunks(1024) {
        for &op in chunk {
            step(&mut allocator, op, &mut at, &mut result);
        }
        result.audited += chunk.len();
        if started.elapsed() > AUDIT_BUDGET {
            break;
        }
    }
    let (largest, free) = allocator.holes();
    result.largest = largest;
    result.largest_over_free = if free == 0 {
        0.0
    } else {
        // Both fit f64's 53-bit mantissa well enough for a ratio.
        largest as f64 / free as f64
    };
    result
}

/// The cost shape of one ordered map of `live` random keys: each step removes a random key
/// and inserts a fresh one, in nanoseconds per step. The allocator keeps two such maps;
/// if its time per op grows with `live` as this does, the growth is the memory hierarchy
/// under an O(log n) structure, not the algorithm.
fn btree_churn(live: usize, steps: usize, seed: u64) -> f64 {
    let mut rng = Rng(seed | 1);
    let mut keys: Vec<u64> = (0..live).map(|_| rng.next()).collect();
    let mut map: BTreeMap<u64, u64> = keys.iter().map(|&k| (k, k)).collect();
    let started = Stopwatch::start();
    for _ in 0..steps {
        let slot = rng.below(keys.len());
        black_box(map.remove(&keys[slot]));
        let key = rng.next();
        map.insert(key, key);
        keys[slot] = key;
    }
    per_unit(started.elapsed(), steps)
}

/// The end of the VA space for a working set of `live` ranges.
fn space_end(live: usize) -> u64 {
    SPACE_START + SPACE_PER_RANGE * u64::try_from(live).unwrap_or(u64::MAX >> 30)
}

fn ours(live: usize) -> VaAllocator {
    VaAllocator::new(
        GpuVa::new(SPACE_START),
        GpuVa::new(space_end(live)),
        VGPU.page_sizes,
    )
}

/// The alignment every allocator gets: what the driver's allocator would pick (2 MiB for
/// ranges of 2 MiB and more, so they can use blocks), so the references do the same work.
fn driver_alignments(trace: &mut Trace, live: usize) {
    let reference = ours(live);
    for op in trace.prefill.iter_mut().chain(trace.ops.iter_mut()) {
        if let Op::Alloc { size, align, .. } = op {
            *align = reference.alignment_for(*size, *align);
        }
    }
}

/// An allocator the traces run through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    /// `extmem::va_allocator::VaAllocator`.
    Ours,
    /// Mesa's `util_vma_heap`, `alloc_high` (its default): the first hole from the top.
    MesaTopDown,
    /// Mesa's `util_vma_heap` with `alloc_high` false: the first hole from the bottom.
    MesaBottomUp,
    /// The first-fit list above.
    FirstFit,
}

impl Contender {
    /// Every contender, in the order each repetition runs them.
    const ALL: [Contender; 4] = [
        Contender::Ours,
        Contender::MesaTopDown,
        Contender::MesaBottomUp,
        Contender::FirstFit,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Ours => "extmem",
            Contender::MesaTopDown => "util_vma_heap top-down",
            Contender::MesaBottomUp => "util_vma_heap bottom-up",
            Contender::FirstFit => "first-fit list",
        }
    }

    /// Whether it runs at `live` ranges: the linear references' prefill at 1M live ranges
    /// (250K frees, each a walk or a shift of a list of 100K+ holes) alone takes minutes.
    fn runs_at(self, live: usize) -> bool {
        self == Contender::Ours || live <= 100_000
    }

    /// Times one replay; `None` if this contender is not built in.
    fn time(self, live: usize, trace: &Trace, budget: Duration) -> Option<(f64, usize)> {
        match self {
            Contender::Ours => Some(timed(ours(live), trace, Duration::MAX)),
            Contender::FirstFit => Some(timed(
                FirstFit::new(SPACE_START, space_end(live)),
                trace,
                budget,
            )),
            Contender::MesaTopDown | Contender::MesaBottomUp => {
                #[cfg(util_vma_heap)]
                {
                    let high = self == Contender::MesaTopDown;
                    let heap = UtilVmaHeap::new(SPACE_START, space_end(live), high)?;
                    Some(timed(heap, trace, budget))
                }
                #[cfg(not(util_vma_heap))]
                {
                    let _ = (live, trace, budget);
                    None
                }
            }
        }
    }

    /// Audits one whole replay; `None` if this contender is not built in.
    fn audit(self, live: usize, trace: &Trace) -> Option<Audit> {
        match self {
            Contender::Ours => Some(audit(|| ours(live), trace)),
            Contender::FirstFit => {
                Some(audit(|| FirstFit::new(SPACE_START, space_end(live)), trace))
            }
            Contender::MesaTopDown | Contender::MesaBottomUp => {
                #[cfg(util_vma_heap)]
                {
                    let high = self == Contender::MesaTopDown;
                    let heap = UtilVmaHeap::new(SPACE_START, space_end(live), high)?;
                    Some(audit(move || heap, trace))
                }
                #[cfg(not(util_vma_heap))]
                {
                    let _ = (live, trace);
                    None
                }
            }
        }
    }
}

/// One contender's figures on one trace.
#[derive(Clone, Copy, Debug)]
struct Measured {
    /// Median ns per op over the repetitions.
    ns_per_op: f64,
    /// Fewest, most ns per op over the repetitions.
    spread: (f64, f64),
    /// Ops the last timed replay ran (a budget may stop a slow reference early).
    ran: usize,
    audit: Audit,
}

/// Runs `trace` through every contender that runs at `live`, alternating them in each of
/// `reps` repetitions so that they share the machine's load, then audits each once.
fn measure(
    live: usize,
    trace: &Trace,
    reps: usize,
    budget: Duration,
) -> Vec<(Contender, Measured)> {
    let contenders: Vec<Contender> = Contender::ALL
        .into_iter()
        .filter(|c| c.runs_at(live))
        .collect();
    let mut samples: Vec<(Vec<f64>, usize)> = vec![(Vec::new(), 0); contenders.len()];
    for _ in 0..reps {
        for (c, (times, ran)) in contenders.iter().zip(samples.iter_mut()) {
            if let Some((ns, n)) = c.time(live, trace, budget) {
                times.push(ns);
                *ran = n;
            }
        }
    }
    contenders
        .iter()
        .zip(samples)
        .filter_map(|(&c, (times, ran))| {
            let lo = times.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = times.iter().copied().fold(0.0, f64::max);
            let audit = c.audit(live, trace)?;
            Some((
                c,
                Measured {
                    ns_per_op: median_ns(times),
                    spread: (lo, hi),
                    ran,
                    audit,
                },
            ))
        })
        .collect()
}

/// Fragmentation and metadata of us and a reference, side by side.
fn note(ours: &Measured, reference: Contender, theirs: &Measured, ops: usize) -> String {
    let (a, b) = (ours.audit, theirs.audit);
    let mut text = format!(
        "failed (while a fit existed): ours {} ({}), ref {} ({}); largest hole/free: ours {:.3} ({} MiB), ref {:.3} ({} MiB); metadata B/live range: ours {:.0}, ref {:.0}; spread ns/op: ours {}-{}, ref {}-{}",
        a.failed,
        a.failed_with_fit,
        b.failed,
        b.failed_with_fit,
        a.largest_over_free,
        a.largest >> 20,
        b.largest_over_free,
        b.largest >> 20,
        a.metadata_per_live,
        b.metadata_per_live,
        nanos(ours.spread.0),
        nanos(ours.spread.1),
        nanos(theirs.spread.0),
        nanos(theirs.spread.1),
    );
    if theirs.ran < ops || b.audited < ops {
        text.push_str(&format!(
            "; {} ran {} of {ops} ops timed, {} audited",
            reference.name(),
            theirs.ran,
            b.audited
        ));
    }
    text
}

/// The rows of one trace: ours against each reference that ran.
fn rows_for(case: &str, size: &str, ops: usize, measured: &[(Contender, Measured)]) -> Vec<Row> {
    let Some((_, ours)) = measured.iter().find(|(c, _)| *c == Contender::Ours) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for reference in [
        Contender::MesaTopDown,
        Contender::MesaBottomUp,
        Contender::FirstFit,
    ] {
        let theirs = measured.iter().find(|(c, _)| *c == reference);
        rows.push(Row {
            group: "va-allocator",
            case: format!("{case} vs {}", reference.name()),
            size: size.to_owned(),
            unit: "op",
            ours: ours.ns_per_op,
            reference: theirs.map(|(_, m)| m.ns_per_op),
            reference_name: match (theirs, reference) {
                (Some(_), r) => r.name(),
                (None, Contender::FirstFit) => "first-fit list (too slow to run)",
                (None, _) if cfg!(util_vma_heap) => "util_vma_heap (too slow to run)",
                (None, _) => "util_vma_heap (not built: run cargo bench-host)",
            },
            note: theirs.map_or_else(String::new, |(_, m)| note(ours, reference, m, ops)),
        });
    }
    rows
}

/// Runs the allocator cases; returns their rows and the plot of ns/op by live ranges.
pub fn run(reps: usize) -> (Vec<Row>, Vec<Plot>) {
    let mut rows = Vec::new();
    let mut series: Vec<Series> = Vec::new();

    // EXTMEM_BENCH_VA_LIVE=1000,10000 runs only the steady states at those working-set
    // sizes (to try a change at one size in seconds, not the whole group in minutes).
    let only: Option<Vec<usize>> = std::env::var("EXTMEM_BENCH_VA_LIVE").ok().map(|list| {
        list.split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect()
    });

    // The 1M-operation trace over a working set of 10,000 live ranges.
    const TRACE_LIVE: usize = 10_000;
    const TRACE_OPS: usize = 1_000_000;
    if only.is_none() {
        let mut full = trace(TRACE_LIVE, TRACE_OPS, 0x5EED);
        driver_alignments(&mut full, TRACE_LIVE);
        let measured = measure(TRACE_LIVE, &full, reps, Duration::from_secs(2));
        let ops = full.ops.len();
        rows.extend(rows_for(
            &format!("trace 1M ops, {TRACE_LIVE} live"),
            &format!("{ops} ops"),
            ops,
            &measured,
        ));
    }

    // Growth: time per op in steady state at 1K … 1M live ranges.
    let mut at_1k = None;
    let mut btree_at_1k = None;
    let sizes = only.unwrap_or_else(|| vec![1_000, 10_000, 100_000, 1_000_000]);
    for live in sizes {
        const STEADY_OPS: usize = 200_000;
        let mut t = trace(live, STEADY_OPS, 0xC0FFEE ^ live as u64);
        driver_alignments(&mut t, live);
        let reps = if live >= 1_000_000 { reps.min(3) } else { reps };
        let measured = measure(live, &t, reps, Duration::from_secs(3));
        let ops = t.ops.len();
        rows.extend(rows_for(
            &format!("steady state, {live} live"),
            &format!("{live} live"),
            ops,
            &measured,
        ));
        for (c, m) in &measured {
            let point = Point {
                // Live-range counts are exact in f64.
                x: live as f64,
                median: m.ns_per_op,
                min: m.spread.0,
                max: m.spread.1,
            };
            match series.iter_mut().find(|s| s.name == c.name()) {
                Some(s) => s.points.push(point),
                None => series.push(Series {
                    name: c.name().to_owned(),
                    points: vec![point],
                }),
            }
        }
        let Some(ours_op) = measured
            .iter()
            .find(|(c, _)| *c == Contender::Ours)
            .map(|(_, m)| m.ns_per_op)
        else {
            continue;
        };
        let first = *at_1k.get_or_insert(ours_op);
        let btree = median_ns(
            (0..reps)
                .map(|_| btree_churn(live, STEADY_OPS, 0xB7EE ^ live as u64))
                .collect(),
        );
        let btree_first = *btree_at_1k.get_or_insert(btree);
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
                nanos(btree)
            ),
        });
    }
    let plot = Plot {
        file: "va-allocator.svg",
        title: "GPU VA allocator: time per op by working-set size".to_owned(),
        x_desc: "live ranges",
        y_desc: "ns per op (median; bars: min-max)",
        series,
    };
    (rows, vec![plot])
}
