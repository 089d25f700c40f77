//! Page tables: mapping and unmapping 1 GiB with `extmem_hw::PageTable`, against the
//! physical floor, writing the same number of 8-byte descriptors into a plain buffer.

use std::hint::black_box;
use std::time::Duration;

use extmem_hw::profile::VGPU;
use std::convert::Infallible;

use extmem_hw::{Entries, GpuVa, MapFlags, PageTable, PhysAddr, Run, TableIndex, TableMemory};

use crate::plots::{Plot, Point, Series};
use crate::report::{median, median_ns, per_unit, Row, Stopwatch};

const PAGE: u64 = 4096;
const BLOCK_2M: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// Where the mapped GiB starts in GPU VA (2 MiB-aligned, clear of zero).
const VA: u64 = 1 << 32;
/// Where the mapped physical memory starts.
const PA: u64 = 1 << 36;
/// Where table pages live in "physical" memory (a window of its own).
const TABLE_BASE: u64 = 1 << 38;
const ENTRIES: usize = 512;
/// GiBs of 2 MiB blocks mapped (one batched call each) per timed block sample.
const BLOCK_GIBS: u64 = 64;

/// Table pages in one heap arena, addressed as `TABLE_BASE + index * 4 KiB`: what a kernel
/// does through its direct map, without a hash lookup per descriptor.
struct ArenaTables {
    pages: Vec<[u64; ENTRIES]>,
    free: Vec<usize>,
}

impl ArenaTables {
    fn new() -> Self {
        Self {
            pages: Vec::new(),
            free: Vec::new(),
        }
    }

    fn slot(table: PhysAddr) -> Option<usize> {
        let offset = table.get().checked_sub(TABLE_BASE)?;
        usize::try_from(offset / PAGE).ok()
    }
}

impl TableMemory for ArenaTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let table = self.alloc_table_to_fill()?;
        self.entries_mut(table)?.fill(0);
        Some(table)
    }

    // A reused page as it was left: `map_runs` writes every entry of these.
    fn alloc_table_to_fill(&mut self) -> Option<PhysAddr> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.pages.push([0; ENTRIES]);
                self.pages.len() - 1
            }
        };
        let offset = u64::try_from(index).ok()?.checked_mul(PAGE)?;
        Some(PhysAddr::new(TABLE_BASE.checked_add(offset)?))
    }

    fn free_table(&mut self, table: PhysAddr) {
        if let Some(index) = Self::slot(table) {
            self.free.push(index);
        }
    }

    fn read_descriptor(&self, table: PhysAddr, index: TableIndex) -> u64 {
        Self::slot(table)
            .and_then(|s| self.pages.get(s))
            .and_then(|page| page.get(index.get()))
            .copied()
            .unwrap_or(0)
    }

    fn write_descriptor(&mut self, table: PhysAddr, index: TableIndex, raw: u64) {
        if let Some(entry) = Self::slot(table)
            .and_then(|s| self.pages.get_mut(s))
            .and_then(|page| page.get_mut(index.get()))
        {
            *entry = raw;
        }
    }

    fn read_descriptors(&self, table: PhysAddr, first: TableIndex, out: &mut [u64]) {
        if let Some(entries) = Self::slot(table)
            .and_then(|s| self.pages.get(s))
            .and_then(|page| page.get(first.get()..))
        {
            let n = entries.len().min(out.len());
            out[..n].copy_from_slice(&entries[..n]);
        }
    }

    fn write_descriptors(&mut self, table: PhysAddr, first: TableIndex, raws: &[u64]) {
        if let Some(entries) = Self::slot(table)
            .and_then(|s| self.pages.get_mut(s))
            .and_then(|page| page.get_mut(first.get()..))
        {
            let n = entries.len().min(raws.len());
            entries[..n].copy_from_slice(&raws[..n]);
        }
    }

    fn entries(&self, table: PhysAddr) -> Option<&Entries> {
        self.pages.get(Self::slot(table)?)
    }

    fn entries_mut(&mut self, table: PhysAddr) -> Option<&mut Entries> {
        self.pages.get_mut(Self::slot(table)?)
    }
}

/// The physical page behind the `i`-th 4 KiB page of the GiB: a permutation of the 2^18
/// pages of a 1 GiB window (an odd multiplier is a bijection mod 2^18), so neighbours in
/// VA are never neighbours in PA and every page needs a call of its own.
fn scattered_pa(i: u64) -> u64 {
    const PAGES: u64 = GIB / PAGE;
    PA + ((i.wrapping_mul(0x9E37_79B1) & (PAGES - 1)) * PAGE)
}

/// Map and unmap timings of one run.
struct Timings {
    map: Duration,
    unmap: Duration,
}

/// Maps the GiB in `chunk`-byte calls (PA from `pa_of(call index)`), then unmaps it in
/// `unmap_chunk`-byte calls.
fn map_unmap(
    mem: &mut ArenaTables,
    chunk: u64,
    unmap_chunk: u64,
    pa_of: impl Fn(u64) -> u64,
) -> Result<Timings, String> {
    let mut table = PageTable::new(mem, &VGPU).map_err(|_| "no root table".to_owned())?;
    let flags = MapFlags::default();
    let calls = GIB / chunk;
    let started = Stopwatch::start();
    for i in 0..calls {
        table
            .map(
                GpuVa::new(VA + i * chunk),
                PhysAddr::new(pa_of(i)),
                chunk,
                flags,
            )
            .map_err(|e| format!("map: {e:?}"))?;
    }
    let map = started.elapsed();
    let started = Stopwatch::start();
    for i in 0..GIB / unmap_chunk {
        let invalidate = table
            .unmap(GpuVa::new(VA + i * unmap_chunk), unmap_chunk)
            .map_err(|e| format!("unmap: {e:?}"))?;
        // The bench has no TLB to invalidate; keep the result alive so nothing is elided.
        let _ = black_box(invalidate);
    }
    let unmap = started.elapsed();
    destroy_empty(table)?;
    Ok(Timings { map, unmap })
}

/// Frees the tables, which unmapping everything must have left with the root alone.
fn destroy_empty(table: PageTable<&mut ArenaTables>) -> Result<(), String> {
    if table.table_pages() != 1 {
        return Err(format!(
            "{} table pages left after unmapping everything",
            table.table_pages()
        ));
    }
    table.destroy();
    Ok(())
}

/// How a batched map is handed its runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RunsForm {
    /// `map_run_slice`: a slice, checked whole before anything is written.
    Slice,
    /// `map_runs`: an iterator, each run checked as it is taken.
    Iterator,
}

/// One batched map of `runs` at `va`, in `form`.
fn map_batched(
    table: &mut PageTable<&mut ArenaTables>,
    va: u64,
    size: u64,
    runs: &[Run],
    form: RunsForm,
) -> Result<(), String> {
    let va = GpuVa::new(va);
    let flags = MapFlags::default();
    match form {
        RunsForm::Slice => table
            .map_run_slice(va, size, runs, flags)
            .map_err(|e| format!("map_run_slice: {e:?}")),
        RunsForm::Iterator => table
            .map_runs(
                va,
                size,
                runs.iter().map(|&run| Ok::<_, Infallible>(run)),
                flags,
            )
            .map_err(|e| format!("map_runs: {e:?}")),
    }
}

/// Maps `size` bytes with one batched call over `runs`, then unmaps them in one call;
/// `count` times over consecutive ranges, each phase timed as a whole (a 1 GiB map of
/// blocks is too short to time alone on a clock that costs a system call).
fn map_runs_unmap(
    mem: &mut ArenaTables,
    runs: &[Run],
    size: u64,
    count: u64,
    form: RunsForm,
) -> Result<Timings, String> {
    let mut table = PageTable::new(mem, &VGPU).map_err(|_| "no root table".to_owned())?;
    let started = Stopwatch::start();
    for k in 0..count {
        map_batched(&mut table, VA + k * size, size, runs, form)?;
    }
    let map = started.elapsed();
    let started = Stopwatch::start();
    for k in 0..count {
        let invalidate = table
            .unmap(GpuVa::new(VA + k * size), size)
            .map_err(|e| format!("unmap: {e:?}"))?;
        let _ = black_box(invalidate);
    }
    let unmap = started.elapsed();
    destroy_empty(table)?;
    Ok(Timings { map, unmap })
}

/// How `map_run_slice` cost per PTE grows with the size of one call (2 MiB to 1 GiB of 4 KiB
/// pages, scattered and contiguous), beside the descriptor-write floor: each sample maps a
/// whole GiB in calls of that size, timed together.
fn growth(mem: &mut ArenaTables, reps: usize, scattered: &[u64]) -> Result<Plot, String> {
    let names = [
        "map_run_slice, 4 KiB pages, scattered PA",
        "map_run_slice, 4 KiB pages, one contiguous run",
        "floor: writing the descriptors",
    ];
    let runs: Vec<Run> = scattered
        .iter()
        .map(|&pa| Run {
            pa: PhysAddr::new(pa),
            len: PAGE,
        })
        .collect();
    let mut out = vec![0u64; scattered.len()];
    let mut series: Vec<Series> = names
        .iter()
        .map(|name| Series {
            name: (*name).to_owned(),
            points: Vec::new(),
        })
        .collect();
    for size in [BLOCK_2M, 16 * BLOCK_2M, 64 * BLOCK_2M, GIB] {
        let pages = usize::try_from(size / PAGE).map_err(|e| e.to_string())?;
        let mut samples: [Vec<f64>; 3] = Default::default();
        for _ in 0..reps {
            let scattered_calls = runs.chunks(pages).map(|chunk| chunk.to_vec());
            samples[0].push(per_unit(
                map_in_calls(mem, size, scattered_calls)?,
                runs.len(),
            ));
            let contiguous_calls = (0..GIB / size).map(|k| {
                vec![Run {
                    pa: PhysAddr::new(PA + PAGE + k * size),
                    len: size,
                }]
            });
            samples[1].push(per_unit(
                map_in_calls(mem, size, contiguous_calls)?,
                runs.len(),
            ));
            samples[2].push(per_unit(floor_write(scattered, &mut out, 4), runs.len()));
        }
        for (line, times) in series.iter_mut().zip(samples) {
            let min = times.iter().copied().fold(f64::INFINITY, f64::min);
            let max = times.iter().copied().fold(0.0, f64::max);
            line.points.push(Point {
                // Sizes are exact in f64.
                x: size as f64,
                median: median_ns(times),
                min,
                max,
            });
        }
    }
    Ok(Plot {
        file: "page-tables.svg",
        title: "Page tables: map_run_slice time per PTE by size of the call".to_owned(),
        x_desc: "bytes mapped per map_run_slice call (1 GiB in all)",
        y_desc: "ns per PTE (median; bars: min-max)",
        series,
    })
}

/// Maps the GiB at `VA` in `size`-byte `map_run_slice` calls, each over its own runs, and
/// returns the time of the maps alone (the runs are built beforehand).
fn map_in_calls(
    mem: &mut ArenaTables,
    size: u64,
    calls: impl Iterator<Item = Vec<Run>>,
) -> Result<Duration, String> {
    let calls: Vec<Vec<Run>> = calls.collect();
    let mut table = PageTable::new(mem, &VGPU).map_err(|_| "no root table".to_owned())?;
    let started = Stopwatch::start();
    for (k, runs) in (0u64..).zip(&calls) {
        map_batched(&mut table, VA + k * size, size, runs, RunsForm::Slice)?;
    }
    let map = started.elapsed();
    let invalidate = table
        .unmap(GpuVa::new(VA), GIB)
        .map_err(|e| format!("unmap: {e:?}"))?;
    let _ = black_box(invalidate);
    destroy_empty(table)?;
    Ok(map)
}

/// The floor for writing `descriptors`: each computed from its output address and stored
/// into a buffer of the same size (8 bytes each), repeated until the total is measurable.
fn floor_write(descriptors: &[u64], out: &mut [u64], repeat: u32) -> Duration {
    const ATTRS: u64 = 0x0060_0000_0000_0743;
    let started = Stopwatch::start();
    for _ in 0..repeat {
        for (o, pa) in out.iter_mut().zip(descriptors) {
            *o = pa | ATTRS;
        }
        black_box(&mut *out);
    }
    started.elapsed() / repeat.max(1)
}

/// The floor for clearing them: a memset of the same buffer.
fn floor_clear(out: &mut [u64], repeat: u32) -> Duration {
    let started = Stopwatch::start();
    for _ in 0..repeat {
        out.fill(0);
        black_box(&mut *out);
    }
    started.elapsed() / repeat.max(1)
}

/// Runs the page-table cases, `reps` times each, and returns their rows and the growth
/// plot.
pub fn run(reps: usize) -> Result<(Vec<Row>, Vec<Plot>), String> {
    let mut mem = ArenaTables::new();
    let pages = usize::try_from(GIB / PAGE).map_err(|e| e.to_string())?;
    let blocks = usize::try_from(GIB / BLOCK_2M).map_err(|e| e.to_string())?;
    let scattered: Vec<u64> = (0..GIB / PAGE).map(scattered_pa).collect();
    let block_pas: Vec<u64> = (0..GIB / BLOCK_2M).map(|i| PA + i * BLOCK_2M).collect();
    let mut out_pages = vec![0u64; pages];
    let mut out_blocks = vec![0u64; blocks];

    let page_runs: Vec<Run> = scattered
        .iter()
        .map(|&pa| Run {
            pa: PhysAddr::new(pa),
            len: PAGE,
        })
        .collect();
    let one_run = [Run {
        pa: PhysAddr::new(PA + PAGE),
        len: GIB,
    }];
    // 2 MiB runs in a scattered order (an odd multiplier permutes the 512 blocks).
    let block_runs: Vec<Run> = (0..GIB / BLOCK_2M)
        .map(|i| Run {
            pa: PhysAddr::new(PA + (i.wrapping_mul(0x9E37_79B1) & 511) * BLOCK_2M),
            len: BLOCK_2M,
        })
        .collect();

    let mut samples: [Vec<Duration>; 18] = Default::default();
    for _ in 0..reps {
        // 4 KiB pages, scattered PA: one map call per page; unmap in one call and per page.
        let t = map_unmap(&mut mem, PAGE, GIB, scattered_pa)?;
        samples[0].push(t.map);
        samples[1].push(t.unmap);
        let t = map_unmap(&mut mem, PAGE, PAGE, scattered_pa)?;
        samples[2].push(t.unmap);
        // 4 KiB pages from one contiguous run that is not 2 MiB-aligned in PA (no blocks
        // possible): one call writes all 262,144 PTEs, so per-call cost drops out.
        let t = map_unmap(&mut mem, GIB, GIB, |_| PA + PAGE)?;
        samples[3].push(t.map);
        samples[4].push(t.unmap);
        // 2 MiB blocks, one call per block, unmapped in one call.
        let t = map_unmap(&mut mem, BLOCK_2M, GIB, |i| PA + i * BLOCK_2M)?;
        samples[5].push(t.map);
        samples[6].push(t.unmap);
        samples[7].push(floor_write(&scattered, &mut out_pages, 4));
        samples[8].push(floor_clear(&mut out_pages, 4));
        samples[9].push(floor_write(&block_pas, &mut out_blocks, 2000));
        // The batched API: the whole GiB in one `map_run_slice` call.
        let t = map_runs_unmap(&mut mem, &page_runs, GIB, 1, RunsForm::Slice)?;
        samples[10].push(t.map);
        samples[11].push(t.unmap);
        let t = map_runs_unmap(&mut mem, &one_run, GIB, 1, RunsForm::Slice)?;
        samples[12].push(t.map);
        samples[13].push(t.unmap);
        let t = map_runs_unmap(&mut mem, &block_runs, GIB, BLOCK_GIBS, RunsForm::Slice)?;
        samples[14].push(t.map);
        samples[15].push(t.unmap);
        // The same maps with the runs as an iterator (`map_runs`, checked run by run).
        let t = map_runs_unmap(&mut mem, &page_runs, GIB, 1, RunsForm::Iterator)?;
        samples[16].push(t.map);
        let t = map_runs_unmap(&mut mem, &block_runs, GIB, BLOCK_GIBS, RunsForm::Iterator)?;
        samples[17].push(t.map);
    }
    let [map4k, unmap4k_one, unmap4k_each, map4k_run, unmap4k_run, map2m, unmap2m, floor_pages, clear_pages, floor_blocks, runs4k, runs4k_unmap, run1, run1_unmap, runs2m, runs2m_unmap, iter4k, iter2m] =
        samples.map(median);
    // The block samples map and unmap BLOCK_GIBS GiBs: per GiB, as the other rows.
    let per_gib = u32::try_from(BLOCK_GIBS).unwrap_or(1);
    let (runs2m, runs2m_unmap, iter2m) =
        (runs2m / per_gib, runs2m_unmap / per_gib, iter2m / per_gib);
    // Clearing 512 block descriptors costs what writing them does.
    let clear_blocks = floor_blocks;
    let floor = "write descriptors";
    let memset = "memset descriptors";
    let row = |case: &str, n: usize, ours: Duration, reference: Duration, name| Row {
        group: "page-table",
        case: case.to_owned(),
        size: format!("1 GiB = {n} PTEs"),
        unit: "PTE",
        ours: per_unit(ours, n),
        reference: Some(per_unit(reference, n)),
        reference_name: name,
        note: String::new(),
    };
    let plot = growth(&mut mem, reps, &scattered)?;
    let rows = vec![
        row(
            "map_run_slice 4K scattered, 1 call/GiB",
            pages,
            runs4k,
            floor_pages,
            floor,
        ),
        row(
            "map_run_slice 4K contiguous, 1 call/GiB",
            pages,
            run1,
            floor_pages,
            floor,
        ),
        row(
            "map_run_slice 2M blocks scattered, 1 call/GiB",
            blocks,
            runs2m,
            floor_blocks,
            floor,
        ),
        row(
            "map_runs (iterator) 4K scattered, 1 call/GiB",
            pages,
            iter4k,
            floor_pages,
            floor,
        ),
        row(
            "map_runs (iterator) 2M blocks scattered, 1 call/GiB",
            blocks,
            iter2m,
            floor_blocks,
            floor,
        ),
        row(
            "unmap map_run_slice 4K scattered, 1 call/GiB",
            pages,
            runs4k_unmap,
            clear_pages,
            memset,
        ),
        row(
            "unmap map_run_slice 4K contiguous, 1 call/GiB",
            pages,
            run1_unmap,
            clear_pages,
            memset,
        ),
        row(
            "unmap map_run_slice 2M blocks, 1 call/GiB",
            blocks,
            runs2m_unmap,
            clear_blocks,
            memset,
        ),
        row(
            "map 4K scattered, 1 call/page",
            pages,
            map4k,
            floor_pages,
            floor,
        ),
        row(
            "unmap 4K, 1 call/GiB",
            pages,
            unmap4k_one,
            clear_pages,
            memset,
        ),
        row(
            "unmap 4K, 1 call/page",
            pages,
            unmap4k_each,
            clear_pages,
            memset,
        ),
        row(
            "map 4K contiguous, 1 call/GiB",
            pages,
            map4k_run,
            floor_pages,
            floor,
        ),
        row(
            "unmap 4K contiguous, 1 call/GiB",
            pages,
            unmap4k_run,
            clear_pages,
            memset,
        ),
        row(
            "map 2M blocks, 1 call/block",
            blocks,
            map2m,
            floor_blocks,
            floor,
        ),
        row(
            "unmap 2M blocks, 1 call/GiB",
            blocks,
            unmap2m,
            clear_blocks,
            memset,
        ),
    ];
    Ok((rows, vec![plot]))
}
