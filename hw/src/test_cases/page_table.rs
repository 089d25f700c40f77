//! Map, unmap and translate on a [`TablePool`] with no allocator: blocks that are split by
//! an unmap, every refused argument with its value, and running out of table memory.

use crate::addr::{GpuVa, PhysAddr};
use crate::page_size::PageSize;
use core::convert::Infallible;

use crate::page_table::{
    MapError, MapFlags, MapRunsError, PageTable, Run, TableMemory, TranslateError, UnmapError,
};
use crate::profile::{GpuProfile, ADRENO_6XX, MALI_G610};
use crate::table_pool::TablePool;

use super::{host_tests, ok, some};

/// 2 MiB.
pub const M2: u64 = 2 << 20;
/// 1 GiB.
pub const G1: u64 = 1 << 30;

/// Where the pools' made-up physical addresses start.
const POOL_BASE: PhysAddr = PhysAddr::new(0x100_0000);

/// An empty address space of `profile` over `pool` (lent, so it stays where it was built).
#[track_caller]
pub fn table<'a, const N: usize>(
    pool: &'a mut Option<TablePool<N>>,
    profile: &GpuProfile,
) -> PageTable<&'a mut TablePool<N>> {
    let pool = some(pool.as_mut(), "an aligned pool base");
    ok(PageTable::new(pool, profile), "a root table")
}

/// Read-write, the default flags.
pub fn rw() -> MapFlags {
    MapFlags::default()
}

/// (PA, leaf size) that `va` translates to.
#[track_caller]
pub fn page_at<M: TableMemory>(pt: &PageTable<M>, va: u64) -> (u64, PageSize) {
    let t = ok(pt.translate(GpuVa::new(va)), "a mapped VA");
    (t.pa.get(), t.page)
}

pub fn unmapping_half_a_block_splits_it() {
    let mut pool = TablePool::<4>::new(POOL_BASE);
    let mut pt = table(&mut pool, &MALI_G610);
    // Above 4 GiB in both VA and PA.
    let va = 0x1_0020_0000;
    let pa = 0x2_8040_0000;
    ok(
        pt.map(GpuVa::new(va), PhysAddr::new(pa), M2, rw()),
        "map a 2 MiB block",
    );
    // Root, level 1 and level 2: one 2 MiB block, no level-3 table.
    assert_eq!(pt.table_pages(), 3);
    assert_eq!(page_at(&pt, va + 0x1234), (pa + 0x1234, PageSize::Size2M));
    assert_eq!(page_at(&pt, va + M2 - 1), (pa + M2 - 1, PageSize::Size2M));
    assert_eq!(
        pt.translate(GpuVa::new(va + M2)),
        Err(TranslateError::NotMapped {
            va: GpuVa::new(va + M2)
        })
    );
    let t = ok(pt.translate(GpuVa::new(va)), "a mapped VA");
    assert_eq!(t.attrs, rw().attrs());

    // Unmapping the first half splits the block into a level-3 table of pages.
    let inv = ok(pt.unmap(GpuVa::new(va), M2 / 2), "unmap half");
    assert_eq!(
        (inv.va.get(), inv.size),
        (va, M2),
        "the invalidation covers the split block"
    );
    assert_eq!(pt.table_pages(), 4);
    assert_eq!(
        pt.translate(GpuVa::new(va)),
        Err(TranslateError::NotMapped { va: GpuVa::new(va) })
    );
    assert_eq!(
        page_at(&pt, va + M2 / 2 + 0x10),
        (pa + M2 / 2 + 0x10, PageSize::Size4K)
    );
    let mut runs = pt.mappings();
    let run = ok(some(runs.next(), "one run"), "no corruption");
    assert_eq!(
        (run.va.get(), run.pa.get(), run.size),
        (va + M2 / 2, pa + M2 / 2, M2 / 2)
    );
    assert!(runs.next().is_none());

    // Unmapping the rest frees every table but the root.
    let _ = ok(pt.unmap(GpuVa::new(va + M2 / 2), M2 / 2), "unmap the rest");
    assert_eq!(pt.table_pages(), 1);
    assert!(pt.mappings().next().is_none());
    let pool = pt.destroy();
    assert_eq!(pool.live(), 0);
    assert_eq!(pool.peak(), 4);
}

pub fn cutting_a_1g_block_at_a_4k_boundary_splits_twice() {
    let mut pool = TablePool::<4>::new(POOL_BASE);
    let mut pt = table(&mut pool, &ADRENO_6XX);
    ok(
        pt.map(GpuVa::new(G1), PhysAddr::new(G1), G1, rw()),
        "map a 1 GiB block",
    );
    assert_eq!(pt.table_pages(), 2);
    assert_eq!(page_at(&pt, 2 * G1 - 8), (2 * G1 - 8, PageSize::Size1G));
    let inv = ok(
        pt.unmap(GpuVa::new(G1 + M2 + 0x1000), 0x2000),
        "unmap two pages",
    );
    assert_eq!((inv.va.get(), inv.size), (G1, G1));
    // Root, level 1, the 1 GiB block split to 2 MiB, one 2 MiB block split to 4 KiB.
    assert_eq!(pt.table_pages(), 4);
    assert_eq!(page_at(&pt, G1 + M2), (G1 + M2, PageSize::Size4K));
    assert_eq!(
        page_at(&pt, G1 + M2 + 0x3000),
        (G1 + M2 + 0x3000, PageSize::Size4K)
    );
    assert_eq!(page_at(&pt, G1 + 2 * M2), (G1 + 2 * M2, PageSize::Size2M));
    assert!(pt.translate(GpuVa::new(G1 + M2 + 0x1fff)).is_err());
    assert_eq!(pt.destroy().live(), 0);
}

pub fn a_range_whose_ends_cut_two_2m_blocks_splits_both() {
    let mut pool = TablePool::<5>::new(POOL_BASE);
    let mut pt = table(&mut pool, &ADRENO_6XX);
    ok(
        pt.map(GpuVa::new(0), PhysAddr::new(0), G1, rw()),
        "map a 1 GiB block",
    );
    let inv = ok(pt.unmap(GpuVa::new(0x1000), 4 * M2), "unmap across blocks");
    assert_eq!((inv.va.get(), inv.size), (0, G1));
    // Root, level 1, the 1 GiB block split to 2 MiB, and both end blocks split to 4 KiB.
    assert_eq!(pt.table_pages(), 5);
    assert_eq!(page_at(&pt, 0), (0, PageSize::Size4K));
    assert_eq!(
        page_at(&pt, 4 * M2 + 0x1000),
        (4 * M2 + 0x1000, PageSize::Size4K)
    );
    assert_eq!(page_at(&pt, 5 * M2), (5 * M2, PageSize::Size2M));
    assert!(pt.translate(GpuVa::new(M2)).is_err());
    assert_eq!(pt.destroy().live(), 0);
}

pub fn bad_arguments_are_refused_with_the_bad_value() {
    let mut pool = TablePool::<4>::new(POOL_BASE);
    let mut pt = table(&mut pool, &MALI_G610);
    let va = GpuVa::new(0x1000);
    let pa = PhysAddr::new(0x1000);
    assert_eq!(pt.map(va, pa, 0, rw()), Err(MapError::ZeroSize));
    assert_eq!(
        pt.map(GpuVa::new(0x1800), pa, 0x1000, rw()),
        Err(MapError::MisalignedVa {
            va: GpuVa::new(0x1800)
        })
    );
    assert_eq!(
        pt.map(va, PhysAddr::new(0x1_0000_0010), 0x1000, rw()),
        Err(MapError::MisalignedPa {
            pa: PhysAddr::new(0x1_0000_0010)
        })
    );
    assert_eq!(
        pt.map(va, pa, 0x1001, rw()),
        Err(MapError::MisalignedSize { size: 0x1001 })
    );
    // Past the 48-bit VA space, and a size that wraps the 64-bit space.
    let top = GpuVa::new((1 << 48) - 0x1000);
    assert_eq!(
        pt.map(top, pa, 0x2000, rw()),
        Err(MapError::VaOutOfRange {
            va: top,
            size: 0x2000,
            va_bits: 48
        })
    );
    assert_eq!(
        pt.map(va, pa, !0xfff_u64, rw()),
        Err(MapError::VaOutOfRange {
            va,
            size: !0xfff_u64,
            va_bits: 48
        })
    );
    // Past the 40-bit output space.
    let high = PhysAddr::new((1 << 40) - 0x1000);
    assert_eq!(
        pt.map(va, high, 0x2000, rw()),
        Err(MapError::PaOutOfRange {
            pa: high,
            size: 0x2000,
            oa_bits: 40
        })
    );
    // Overlapping an existing mapping.
    ok(pt.map(GpuVa::new(0x3000), pa, 0x1000, rw()), "map a page");
    assert_eq!(
        pt.map(va, pa, 0x4000, rw()),
        Err(MapError::AlreadyMapped {
            va: GpuVa::new(0x3000)
        })
    );
    assert_eq!(pt.unmap(va, 0x1000), Err(UnmapError::NotMapped { va }));
    assert_eq!(
        pt.unmap(GpuVa::new(0x3000), 0x2000),
        Err(UnmapError::NotMapped {
            va: GpuVa::new(0x4000)
        })
    );
    assert_eq!(pt.unmap(va, 0), Err(UnmapError::ZeroSize));
    assert_eq!(
        pt.unmap(GpuVa::new(0x3008), 0x1000),
        Err(UnmapError::MisalignedVa {
            va: GpuVa::new(0x3008)
        })
    );
    assert_eq!(
        pt.unmap(va, 0x10),
        Err(UnmapError::MisalignedSize { size: 0x10 })
    );
    assert_eq!(
        pt.unmap(top, 0x2000),
        Err(UnmapError::VaOutOfRange {
            va: top,
            size: 0x2000,
            va_bits: 48
        })
    );
    assert_eq!(
        pt.translate(GpuVa::new(1 << 48)),
        Err(TranslateError::VaOutOfRange {
            va: GpuVa::new(1 << 48),
            va_bits: 48
        })
    );
    // The failed calls changed nothing.
    assert_eq!(pt.table_pages(), 4);
    assert_eq!(page_at(&pt, 0x3000), (0x1000, PageSize::Size4K));
}

pub fn running_out_of_table_memory_changes_nothing() {
    // Root plus two tables: one 2 MiB block fits, a level-3 table after it does not.
    let mut pool = TablePool::<3>::new(PhysAddr::ZERO);
    let mut pt = table(&mut pool, &MALI_G610);
    ok(
        pt.map(GpuVa::new(0), PhysAddr::new(0), M2, rw()),
        "the block fits",
    );
    // Needs a level-3 table after the block, then tables for a far VA.
    assert_eq!(
        pt.map(GpuVa::new(M2), PhysAddr::new(M2), M2 + 0x1000, rw()),
        Err(MapError::OutOfTableMemory)
    );
    assert_eq!(
        pt.map(GpuVa::new(1 << 40), PhysAddr::new(0), 0x1000, rw()),
        Err(MapError::OutOfTableMemory)
    );
    // Splitting the block needs a table too.
    assert_eq!(
        pt.unmap(GpuVa::new(0x1000), 0x1000),
        Err(UnmapError::OutOfTableMemory)
    );
    assert_eq!(pt.table_pages(), 3);
    assert_eq!(pt.memory().live(), 3);
    assert_eq!(page_at(&pt, 0x1000), (0x1000, PageSize::Size2M));
    // The map that failed part-way had mapped a 2 MiB block: it was rolled back.
    assert!(pt.translate(GpuVa::new(M2)).is_err());
    let mut runs = pt.mappings();
    let run = ok(some(runs.next(), "one run"), "no corruption");
    assert_eq!((run.va.get(), run.size), (0, M2));
    assert!(runs.next().is_none());
}

/// Unmaps `[va, va + size)`, which no block straddles: the invalidation is the range.
#[track_caller]
fn unmap_exactly<M: TableMemory>(pt: &mut PageTable<M>, va: GpuVa, size: u64) {
    let invalidate = ok(pt.unmap(va, size), "unmap");
    assert_eq!((invalidate.va, invalidate.size), (va, size));
}

/// A digest of every mapping of `pt`, to compare two maps without a heap.
fn digest<M: TableMemory>(pt: &PageTable<M>) -> u64 {
    pt.mappings().fold(0u64, |acc, m| {
        let m = ok(m, "no corruption");
        [m.va.get(), m.pa.get(), m.size]
            .into_iter()
            .fold(acc, |acc, x| acc.wrapping_mul(0x100_0000_01b3) ^ x)
    })
}

/// Maps `runs` at `va` with `map_run_slice` and then, after unmapping, with `map_runs` over
/// the same runs as an iterator: both must return the same and map the same, and a failed
/// map must leave nothing. Returns the slice form's result; leaves nothing mapped.
#[track_caller]
fn map_both<const N: usize>(
    pt: &mut PageTable<&mut TablePool<N>>,
    va: u64,
    size: u64,
    runs: &[Run],
) -> Result<(), MapRunsError<Infallible>> {
    let va = GpuVa::new(va);
    let slice = pt.map_run_slice(va, size, runs, rw());
    let mapped = digest(pt);
    if slice.is_ok() {
        unmap_exactly(pt, va, size);
    }
    assert_eq!(pt.table_pages(), 1, "the slice's map left tables");
    let iter = pt.map_runs(va, size, runs.iter().map(|&r| Ok::<_, Infallible>(r)), rw());
    assert_eq!(iter, slice, "the two forms disagree");
    assert_eq!(digest(pt), mapped, "the two forms mapped differently");
    if iter.is_ok() {
        unmap_exactly(pt, va, size);
    }
    slice
}

pub fn a_run_slice_maps_and_refuses_as_the_run_iterator_does() {
    const PAGE: u64 = 0x1000;
    const PAGES: usize = 40;
    let mut pool = TablePool::<4>::new(POOL_BASE);
    let mut pt = table(&mut pool, &MALI_G610);
    let oa_end = 1u64 << MALI_G610.oa_bits;
    // Scattered single pages: more than two chunks of the slice's batched check.
    let mut pages = [Run {
        pa: PhysAddr::ZERO,
        len: PAGE,
    }; PAGES];
    for (i, run) in (0u64..).zip(pages.iter_mut()) {
        run.pa = PhysAddr::new((1 << 32) + (i * 37 % 64) * PAGE);
    }
    let va = G1;
    let all = PAGES as u64 * PAGE;
    ok(map_both(&mut pt, va, all, &pages), "every page");
    // Only the runs the range uses are read: a bad run after them is never seen.
    let mut runs = pages;
    runs[30].len = 0;
    ok(
        map_both(&mut pt, va, 20 * PAGE, &runs),
        "the first 20 pages",
    );
    assert_eq!(
        map_both(&mut pt, va, all, &runs),
        Err(MapRunsError::Map(MapError::ZeroSize))
    );
    // Each refusal names its run, wherever it is.
    let mut runs = pages;
    runs[3].pa = PhysAddr::new(runs[3].pa.get() + 0x10);
    assert_eq!(
        map_both(&mut pt, va, all, &runs),
        Err(MapRunsError::Map(MapError::MisalignedPa { pa: runs[3].pa }))
    );
    let mut runs = pages;
    runs[17].len = PAGE + 8;
    assert_eq!(
        map_both(&mut pt, va, all, &runs),
        Err(MapRunsError::Map(MapError::MisalignedSize {
            size: PAGE + 8
        }))
    );
    let mut runs = pages;
    runs[33] = Run {
        pa: PhysAddr::new(oa_end - PAGE),
        len: 2 * PAGE,
    };
    assert_eq!(
        map_both(&mut pt, va, all, &runs),
        Err(MapRunsError::Map(MapError::PaOutOfRange {
            pa: PhysAddr::new(oa_end - PAGE),
            size: 2 * PAGE,
            oa_bits: MALI_G610.oa_bits,
        }))
    );
    // A single page outside the output space, among single pages written in one batch.
    let mut runs = pages;
    runs[20].pa = PhysAddr::new(oa_end);
    assert_eq!(
        map_both(&mut pt, va, all, &runs),
        Err(MapRunsError::Map(MapError::PaOutOfRange {
            pa: PhysAddr::new(oa_end),
            size: PAGE,
            oa_bits: MALI_G610.oa_bits,
        }))
    );
    // The last run used needs only its used part inside the output space.
    let mut runs = pages;
    runs[19] = Run {
        pa: PhysAddr::new(oa_end - PAGE),
        len: 3 * PAGE,
    };
    ok(
        map_both(&mut pt, va, 20 * PAGE, &runs),
        "the last run in part",
    );
    ok(
        pt.map_run_slice(GpuVa::new(va), 20 * PAGE, &runs, rw()),
        "map it again",
    );
    assert_eq!(
        page_at(&pt, va + 19 * PAGE),
        (oa_end - PAGE, PageSize::Size4K)
    );
    assert_eq!(page_at(&pt, va), (pages[0].pa.get(), PageSize::Size4K));
    unmap_exactly(&mut pt, GpuVa::new(va), 20 * PAGE);
    // Too few runs.
    assert_eq!(
        map_both(&mut pt, va, all + 8 * PAGE, &pages),
        Err(MapRunsError::RunsEnded {
            mapped: all,
            size: all + 8 * PAGE
        })
    );
    // Blocks, scattered: 2 MiB runs over more than a chunk, and one long run at the end.
    let mut blocks = [Run {
        pa: PhysAddr::ZERO,
        len: M2,
    }; 24];
    for (i, run) in (0u64..).zip(blocks.iter_mut()) {
        run.pa = PhysAddr::new((1 << 33) + (i * 7 % 32) * M2);
    }
    blocks[23].len = 4 * M2;
    ok(map_both(&mut pt, va, 26 * M2, &blocks), "2 MiB blocks");
    ok(
        pt.map_run_slice(GpuVa::new(va), 26 * M2, &blocks, rw()),
        "map them again",
    );
    assert_eq!(
        page_at(&pt, va + 5 * M2),
        (blocks[5].pa.get(), PageSize::Size2M)
    );
    assert_eq!(
        page_at(&pt, va + 25 * M2 + PAGE),
        (blocks[23].pa.get() + 2 * M2 + PAGE, PageSize::Size2M)
    );
    assert_eq!(pt.table_pages(), 3, "blocks only below the level-1 table");
    unmap_exactly(&mut pt, GpuVa::new(va), 26 * M2);
    // A block outside the output space, among blocks written in one batch.
    let mut runs = blocks;
    runs[9].pa = PhysAddr::new(oa_end + 4 * M2);
    assert_eq!(
        map_both(&mut pt, va, 26 * M2, &runs),
        Err(MapRunsError::Map(MapError::PaOutOfRange {
            pa: PhysAddr::new(oa_end + 4 * M2),
            size: M2,
            oa_bits: MALI_G610.oa_bits,
        }))
    );
}

host_tests!(
    unmapping_half_a_block_splits_it,
    cutting_a_1g_block_at_a_4k_boundary_splits_twice,
    a_range_whose_ends_cut_two_2m_blocks_splits_both,
    bad_arguments_are_refused_with_the_bad_value,
    running_out_of_table_memory_changes_nothing,
    a_run_slice_maps_and_refuses_as_the_run_iterator_does,
);
