//! Batched mapping: one call maps a binding given as its list of physically contiguous
//! runs (what a kernel gets from an sg-table), walking each table once.
//!
//! [`PageTable::map`] per run would walk from the root and check for overlap once per
//! run; for scattered 4 KiB pages that is four levels per page. Here the overlap check
//! covers the whole range once, each upper-level entry is visited once, and the entries
//! of a leaf table are built in a buffer and stored with one
//! [`TableMemory::write_descriptors`].

use core::convert::Infallible;

use crate::addr::{GpuVa, PhysAddr};
use crate::descriptor::{CorruptDescriptor, Descriptor, Level, PageAttrs};
use crate::page_table::{
    entry_bounds, leaf_chunks, MapError, MapFlags, PageTable, SplitReserve, TableIndex,
    TableMemory, CHUNK,
};
use crate::profile::MIN_PAGE;

/// A physically contiguous run of memory handed to [`PageTable::map_runs`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Run {
    /// Where it starts (4 KiB-aligned).
    pub pa: PhysAddr,
    /// Its length in bytes (a non-zero multiple of 4 KiB).
    pub len: u64,
}

/// Why a [`PageTable::map_runs`] failed. The tables are unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MapRunsError<E> {
    /// The range or one of the runs was refused; run errors
    /// ([`MapError::MisalignedPa`], [`MapError::MisalignedSize`], [`MapError::ZeroSize`],
    /// [`MapError::PaOutOfRange`]) name the offending run.
    Map(MapError),
    /// The run source failed.
    Source(E),
    /// The runs ended before covering the range: only `mapped` of `size` bytes had a run.
    RunsEnded {
        /// Bytes the runs covered.
        mapped: u64,
        /// Bytes asked for.
        size: u64,
    },
}

impl<E> From<MapError> for MapRunsError<E> {
    fn from(error: MapError) -> Self {
        Self::Map(error)
    }
}

/// Where a partial batched map stopped: everything it mapped lies in `[va, stopped)`.
struct Stopped<E> {
    stopped: u64,
    error: MapRunsError<E>,
}

/// The run being consumed, and where the next ones come from.
struct Cursor<S> {
    runs: S,
    /// Next physical address of the current run.
    pa: u64,
    /// Bytes left in the current run.
    left: u64,
    /// Bytes taken from all runs so far (the current one included).
    taken: u64,
    size: u64,
    oa_bits: u8,
    /// Where the output space ends: `1 << oa_bits`, capped at 2^48 because OA\[47:12\]
    /// is the widest a descriptor holds, whatever a profile claims.
    oa_size: u64,
}

/// The cursor's current run and count, copied into a fill loop's locals
/// ([`Cursor::hold`]) and stored back when it stops ([`Cursor::put_back`]).
struct Held {
    pa: u64,
    left: u64,
    taken: u64,
}

impl<S> Cursor<S> {
    /// A cursor at the start of `runs`, for a range of `size` bytes into an output space
    /// of `oa_bits`.
    fn new(runs: S, size: u64, oa_bits: u8) -> Self {
        Self {
            runs,
            pa: 0,
            left: 0,
            taken: 0,
            size,
            oa_bits,
            oa_size: 1u64 << oa_bits.min(48),
        }
    }

    fn hold(&self) -> Held {
        Held {
            pa: self.pa,
            left: self.left,
            taken: self.taken,
        }
    }

    fn put_back(&mut self, held: Held) {
        self.pa = held.pa;
        self.left = held.left;
        self.taken = held.taken;
    }
}

impl<S: RunSource> Cursor<S> {
    /// Makes sure the current run has bytes left, fetching the next run if not.
    #[inline(always)]
    fn ensure(&mut self) -> Result<(), MapRunsError<S::Error>> {
        if self.left > 0 {
            Ok(())
        } else {
            self.fetch()
        }
    }

    /// Fetches and checks the next run, and makes it the current one.
    #[inline]
    fn fetch(&mut self) -> Result<(), MapRunsError<S::Error>> {
        let mut taken = self.taken;
        let (pa, used) = self.next_run(&mut taken)?;
        self.taken = taken;
        self.pa = pa;
        self.left = used;
        Ok(())
    }

    /// Makes sure `held` (the current run, in the caller's locals) has bytes left,
    /// fetching the next run into it if not.
    #[inline(always)]
    fn refill(&mut self, held: &mut Held) -> Result<(), MapRunsError<S::Error>> {
        if held.left == 0 {
            (held.pa, held.left) = self.next_run(&mut held.taken)?;
        }
        Ok(())
    }

    /// Fetches and checks the next run and adds it to `taken` (the cursor's count, which
    /// the caller holds): its start and the bytes of it the range uses. The caller makes
    /// it current (the fill loops keep the current run and the count in locals and store
    /// them back when they stop: a load and store of the cursor per run was a chain
    /// through memory).
    #[inline]
    fn next_run(&mut self, taken: &mut u64) -> Result<(u64, u64), MapRunsError<S::Error>> {
        let Some(run) = self.runs.next_run() else {
            return Err(MapRunsError::RunsEnded {
                mapped: *taken,
                size: self.size,
            });
        };
        let Run { pa, len } = run.map_err(MapRunsError::Source)?;
        // The last run may be longer than what is left of the range: only its start is used.
        let used = len.min(self.size - *taken);
        let fits = pa
            .get()
            .checked_add(used)
            .is_some_and(|end| end <= self.oa_size);
        if len == 0 || !MIN_PAGE.is_aligned(pa.get() | len) || !fits {
            return Err(self.bad_run(pa, len, used).into());
        }
        *taken += used;
        Ok((pa.get(), used))
    }

    /// Why the run `[pa, +len)` (of which `used` bytes are needed) was refused.
    #[cold]
    fn bad_run(&self, pa: PhysAddr, len: u64, used: u64) -> MapError {
        if len == 0 {
            MapError::ZeroSize
        } else if !pa.is_aligned(MIN_PAGE) {
            MapError::MisalignedPa { pa }
        } else if !MIN_PAGE.is_aligned(len) {
            MapError::MisalignedSize { size: len }
        } else {
            MapError::PaOutOfRange {
                pa,
                size: used,
                oa_bits: self.oa_bits,
            }
        }
    }

    /// With `batch` set and `held` used up, writes the next runs that fill whole
    /// `bytes`-sized entries into `rest` (entries of a table not yet linked) in one go
    /// ([`RunSource::take_exact`]), moves `rest` past them and returns how many; after a
    /// refusal clears `batch`, so the rest of the table goes run by run.
    #[inline(always)]
    fn take_batch(
        &mut self,
        held: &mut Held,
        batch: &mut bool,
        rest: &mut &mut [u64],
        bytes: u64,
        template: u64,
    ) -> u64 {
        if !*batch || held.left != 0 {
            return 0;
        }
        let taken = self.runs.take_exact(bytes, rest, template);
        *batch = taken.is_some();
        let entries = taken.unwrap_or(0);
        *rest = core::mem::take(rest).get_mut(entries..).unwrap_or_default();
        let entries = entries as u64;
        held.taken += entries * bytes;
        entries
    }

    /// Takes `bytes` (at most `self.left`) from the current run.
    fn advance(&mut self, bytes: u64) {
        self.pa += bytes;
        self.left -= bytes;
    }
}

/// Where a batched map takes its runs from.
trait RunSource {
    /// What a failing source reports.
    type Error;
    /// The next run; `None` when there are no more.
    fn next_run(&mut self) -> Option<Result<Run, Self::Error>>;

    /// For a table no walker can see yet (fresh, unlinked): writes `template | pa` into
    /// `slots`, in order, for each next run that is exactly `bytes` long and aligned to
    /// them, and consumes those runs; returns how many. If one of them lies outside the
    /// output space it writes none (clearing what it wrote), consumes none and returns
    /// `None`: the run-by-run path takes the rest of the table and names that run. The
    /// default takes none.
    #[inline(always)]
    fn take_exact(&mut self, bytes: u64, slots: &mut [u64], template: u64) -> Option<usize> {
        let _ = (bytes, slots, template);
        Some(0)
    }
}

/// The caller's iterator of runs, each checked as it is taken.
struct RunIter<I>(I);

impl<I, E> RunSource for RunIter<I>
where
    I: Iterator<Item = Result<Run, E>>,
{
    type Error = E;

    #[inline(always)]
    fn next_run(&mut self) -> Option<Result<Run, E>> {
        self.0.next()
    }
}

/// The caller's slice of runs ([`PageTable::map_run_slice`]).
struct RunSlice<'r> {
    runs: core::slice::Iter<'r, Run>,
    /// log2 of the output space's size, at most 48.
    oa_shift: u8,
}

impl RunSource for RunSlice<'_> {
    type Error = Infallible;

    #[inline(always)]
    fn next_run(&mut self) -> Option<Result<Run, Infallible>> {
        self.runs.next().copied().map(Ok)
    }

    /// The runs are written while they are checked, with their faults OR-ed and tested
    /// once at the end (the table is not linked, so a refusal only costs the clear):
    /// a run that is exactly `bytes` long and aligned to them, `bytes` being a leaf size
    /// the output space's size is a multiple of, lies inside the space exactly when its
    /// start does, one shift. A run of another shape ends the batch (it may be the last,
    /// used in part, or be refused): the run-by-run path takes it.
    #[inline(always)]
    fn take_exact(&mut self, bytes: u64, slots: &mut [u64], template: u64) -> Option<usize> {
        let runs = self.runs.as_slice();
        let mut taken = 0;
        let mut outside = 0;
        // Whole chunks first, written without a branch per run (it vectorises), their
        // shape tested once; a chunk with a run of another shape is cleared (it is
        // vacant, and a walker of the unlinked table must find nothing there) and
        // taken run by run below, up to that run.
        for (chunk, runs) in slots.chunks_exact_mut(CHUNK).zip(runs.chunks_exact(CHUNK)) {
            let (mut odd, mut beyond) = (0, 0);
            for (slot, run) in chunk.iter_mut().zip(runs) {
                let pa = run.pa.get();
                odd |= (run.len ^ bytes) | (pa & (bytes - 1));
                beyond |= pa >> self.oa_shift;
                *slot = template | pa;
            }
            if odd != 0 {
                chunk.fill(0);
                break;
            }
            outside |= beyond;
            taken += CHUNK;
        }
        let rest = slots.get_mut(taken..).unwrap_or_default();
        for (slot, run) in rest.iter_mut().zip(runs.get(taken..).unwrap_or_default()) {
            let pa = run.pa.get();
            if (run.len ^ bytes) | (pa & (bytes - 1)) != 0 {
                break;
            }
            outside |= pa >> self.oa_shift;
            // Below the output space's size (checked below), so in OA[47:12]: OR-ing it
            // in is its encoding.
            *slot = template | pa;
            taken += 1;
        }
        if outside != 0 {
            slots.iter_mut().take(taken).for_each(|slot| *slot = 0);
            return None;
        }
        self.runs = runs.get(taken..).unwrap_or_default().iter();
        Some(taken)
    }
}

impl<M: TableMemory> PageTable<M> {
    /// Maps `[va, va + size)` to the concatenation of `runs`, in order: the first run at
    /// `va`, the next right after it, and so on until `size` bytes are mapped (the last
    /// run used may be longer; the rest of it and any later runs are not read). Blocks
    /// are used where VA, PA and run length line up, as [`PageTable::map`] does.
    ///
    /// All or nothing: on any error (bad range, bad run, a failing source, too few runs,
    /// no table memory) the tables are left as they were.
    pub fn map_runs<E, I>(
        &mut self,
        va: GpuVa,
        size: u64,
        runs: I,
        flags: MapFlags,
    ) -> Result<(), MapRunsError<E>>
    where
        I: IntoIterator<Item = Result<Run, E>>,
    {
        let end = self.checked_va_range(va, size).map_err(MapError::from)?;
        self.check_vacant(va, end)?;
        let cursor = Cursor::new(RunIter(runs.into_iter()), size, self.oa_bits);
        self.map_from(va, end, cursor, flags)
    }

    /// [`PageTable::map_runs`] over a slice of runs: the same mapping and the same errors.
    /// Where a table is new (not yet linked, so no walker sees it), runs that fill whole
    /// entries of it (single 4 KiB pages, aligned 2 MiB blocks) are written in one tight
    /// loop and checked in the same pass, with one test of their OR-ed faults at the end
    /// instead of a check and a branch per run; for scattered pages, where every page is
    /// a run, that per-run check was most of the time.
    pub fn map_run_slice(
        &mut self,
        va: GpuVa,
        size: u64,
        runs: &[Run],
        flags: MapFlags,
    ) -> Result<(), MapRunsError<Infallible>> {
        let end = self.checked_va_range(va, size).map_err(MapError::from)?;
        self.check_vacant(va, end)?;
        let runs = RunSlice {
            runs: runs.iter(),
            oa_shift: self.oa_bits.min(48),
        };
        self.map_from(va, end, Cursor::new(runs, size, self.oa_bits), flags)
    }

    /// Maps `[va, end)`, checked and vacant, from `cursor`'s runs; undoes what it wrote if
    /// it fails.
    fn map_from<S: RunSource>(
        &mut self,
        va: GpuVa,
        end: u64,
        mut cursor: Cursor<S>,
        flags: MapFlags,
    ) -> Result<(), MapRunsError<S::Error>> {
        let attrs = flags.attrs();
        let result = self.map_runs_in(
            self.root,
            self.start,
            (va.get(), end),
            false,
            &mut cursor,
            attrs,
        );
        result.map_err(|partial| {
            if partial.stopped > va.get() {
                // As in `map`: undo what this call wrote; nothing straddles `stopped`.
                let mut none = SplitReserve::EMPTY;
                let _ = self.unmap_in(self.root, self.start, va.get(), partial.stopped, &mut none);
            }
            partial.error
        })
    }

    /// Maps `[va, end)`, which lies inside `table` (at `level`). A `fresh` table was just
    /// allocated by this call: all its entries are invalid and need not be read.
    fn map_runs_in<S: RunSource>(
        &mut self,
        table: PhysAddr,
        level: Level,
        (va, end): (u64, u64),
        fresh: bool,
        cursor: &mut Cursor<S>,
        attrs: PageAttrs,
    ) -> Result<(), Stopped<S::Error>> {
        let Some(next_level) = level.next() else {
            return self.fill_leaf_table(table, (va, end), fresh, cursor, attrs);
        };
        // The attributes of a block at this level, its output address OR-ed in below (the
        // cursor checked every run lies in OA[47:12]; a block's PA is aligned to it).
        let block_template = Descriptor::Leaf {
            output: PhysAddr::ZERO,
            attrs,
        }
        .encode(level)
        .filter(|_| {
            level
                .leaf_size()
                .is_some_and(|size| self.sizes.contains(size))
        });
        let mut cur = va;
        while cur < end {
            if let Some(template) = block_template {
                cur = self.fill_blocks(table, level, (cur, end), fresh, cursor, template)?;
                if cur >= end {
                    break;
                }
            }
            let index = TableIndex::of(level, cur);
            let (entry_start, entry_end) = entry_bounds(level, cur);
            let chunk_end = end.min(entry_end);
            let stop = |error| Stopped {
                stopped: cur,
                error,
            };
            cursor.ensure().map_err(stop)?;
            let raw = if fresh {
                0
            } else {
                self.mem.read_descriptor(table, index)
            };
            let corrupt = || stop(MapError::Corrupt(CorruptDescriptor { level, raw }).into());
            match Descriptor::decode(level, raw).map_err(|_| corrupt())? {
                // The vacancy check ran over the whole range before anything was written.
                Descriptor::Leaf { .. } => return Err(corrupt()),
                Descriptor::Table { next } => {
                    let range = (cur, chunk_end);
                    self.map_runs_in(next, next_level, range, false, cursor, attrs)?;
                }
                Descriptor::Invalid => {
                    let bytes = level.entry_bytes();
                    let block = block_template.filter(|_| {
                        cur == entry_start
                            && chunk_end == entry_end
                            && cursor.pa & (bytes - 1) == 0
                            && cursor.left >= bytes
                    });
                    if let Some(template) = block {
                        self.mem
                            .write_descriptor(table, index, template | cursor.pa);
                        cursor.advance(bytes);
                    } else {
                        // A table for the whole entry gets every one of its entries
                        // written below before it is linked: it needs no zeroing first.
                        let whole = cur == entry_start && chunk_end == entry_end;
                        let next = if whole {
                            self.mem.alloc_table_to_fill()
                        } else {
                            self.mem.alloc_table()
                        }
                        .ok_or_else(|| stop(MapError::OutOfTableMemory.into()))?;
                        self.tables += 1;
                        let range = (cur, chunk_end);
                        let filled = self.map_runs_in(next, next_level, range, true, cursor, attrs);
                        match (filled, Descriptor::Table { next }.encode(level)) {
                            (Ok(()), Some(raw)) => self.mem.write_descriptor(table, index, raw),
                            (filled, _) => {
                                // Never linked: drop the fresh subtree whole. What a failed
                                // fill did not reach may be anything; clear it so the free
                                // finds only the tables it allocated.
                                if let (true, Err(partial)) = (whole, &filled) {
                                    self.clear_from(next, next_level, partial.stopped);
                                }
                                self.free_subtree(next, next_level);
                                let error = match filled {
                                    Err(partial) => partial.error,
                                    Ok(()) => MapError::OutOfTableMemory.into(),
                                };
                                return Err(stop(error));
                            }
                        }
                    }
                }
            }
            cur = chunk_end;
        }
        Ok(())
    }

    /// Writes blocks at `level` into `table` from `cur` on, in place, for as long as each
    /// next entry of `[cur, end)` is whole, vacant (as every entry of a `fresh` table is,
    /// whatever it holds), and the run at the cursor holds a block there; returns where it
    /// stopped (`cur` itself if the memory lends no entries). What it leaves,
    /// `map_runs_in` maps entry by entry. `template` is a block descriptor at `level` with
    /// a zero output address.
    fn fill_blocks<S: RunSource>(
        &mut self,
        table: PhysAddr,
        level: Level,
        (cur, end): (u64, u64),
        fresh: bool,
        cursor: &mut Cursor<S>,
        template: u64,
    ) -> Result<u64, Stopped<S::Error>> {
        let bytes = level.entry_bytes();
        if cur & (bytes - 1) != 0 {
            return Ok(cur);
        }
        let whole = usize::try_from((end - cur) / bytes).unwrap_or(0);
        let first = TableIndex::of(level, cur).get();
        let Some(slots) = self
            .mem
            .entries_mut(table)
            .and_then(|entries| entries.get_mut(first..))
        else {
            return Ok(cur);
        };
        // The current run in locals for the loop (a store back per block was most of its
        // time), put back in the cursor when it stops.
        let mut run = cursor.hold();
        let mut written = 0u64;
        let mut failed = None;
        let count = whole.min(slots.len());
        let mut rest = slots.get_mut(..count).unwrap_or_default();
        let mut batch = fresh;
        loop {
            // A fresh table is vacant throughout, and unseen: whole block-sized runs from
            // a slice go in one tight loop, the rest one by one below.
            written += cursor.take_batch(&mut run, &mut batch, &mut rest, bytes, template);
            let Some((slot, tail)) = core::mem::take(&mut rest).split_first_mut() else {
                break;
            };
            rest = tail;
            if !fresh && *slot != 0 {
                break;
            }
            if let Err(error) = cursor.refill(&mut run) {
                failed = Some(error);
                break;
            }
            if run.pa & (bytes - 1) != 0 || run.left < bytes {
                break;
            }
            // As in `map_runs_in`: the cursor checked the run lies in OA[47:12], and a
            // block-aligned PA sits in the block's own OA field.
            *slot = template | run.pa;
            run.pa += bytes;
            run.left -= bytes;
            written += 1;
        }
        cursor.put_back(run);
        let cur = cur + written * bytes;
        match failed {
            Some(error) => Err(Stopped {
                stopped: cur,
                error,
            }),
            None => Ok(cur),
        }
    }

    /// Zeroes the entries of `table` (at `level`) from the one holding `va` to its end.
    fn clear_from(&mut self, table: PhysAddr, level: Level, va: u64) {
        let first = TableIndex::of(level, va);
        if let Some(rest) = self
            .mem
            .entries_mut(table)
            .and_then(|entries| entries.get_mut(first.get()..))
        {
            rest.fill(0);
            return;
        }
        let zeros = [0u64; CHUNK];
        let mut index = Some(first);
        while let Some(at) = index {
            self.mem.write_descriptors(table, at, &zeros);
            index = u16::try_from(at.get() + CHUNK)
                .ok()
                .and_then(TableIndex::new);
        }
    }

    /// Writes the 4 KiB pages of `[va, end)`, which lies in the level-3 `table` and is
    /// vacant: in place where the memory lends the table's entries, else [`CHUNK`]
    /// entries per bulk store. A `fresh` table is not linked yet. On error, `stopped` is
    /// the first page not written.
    fn fill_leaf_table<S: RunSource>(
        &mut self,
        table: PhysAddr,
        (va, end): (u64, u64),
        fresh: bool,
        cursor: &mut Cursor<S>,
        attrs: PageAttrs,
    ) -> Result<(), Stopped<S::Error>> {
        let page = MIN_PAGE.get();
        let template = Descriptor::Leaf {
            output: PhysAddr::ZERO,
            attrs,
        }
        .encode(Level::L3)
        .ok_or(Stopped {
            stopped: va,
            error: MapError::MisalignedVa { va: GpuVa::new(va) }.into(),
        })?;
        let first = TableIndex::of(Level::L3, va).get();
        let pages = usize::try_from((end - va) / page).unwrap_or(0);
        if let Some(slots) = self
            .mem
            .entries_mut(table)
            .and_then(|entries| entries.get_mut(first..first.saturating_add(pages)))
        {
            // Page by page as runs start (for scattered pages a run is one page), and the
            // rest of a longer run as plain consecutive stores: its pages are its PA plus
            // 4 KiB steps (the cursor checked the run ends below 2^48, so no sum carries
            // into the template's upper attribute bits).
            // The current run in locals, as in `fill_blocks`.
            let mut run = cursor.hold();
            let mut rest: &mut [u64] = slots;
            let mut batch = fresh;
            let mut done = 0u64;
            let mut failed = None;
            loop {
                // Runs of exactly one page from a slice, into a table not yet linked: in
                // one tight loop.
                done += cursor.take_batch(&mut run, &mut batch, &mut rest, page, template);
                let Some((slot, tail)) = core::mem::take(&mut rest).split_first_mut() else {
                    break;
                };
                rest = tail;
                if let Err(error) = cursor.refill(&mut run) {
                    failed = Some(error);
                    break;
                }
                *slot = template | run.pa;
                run.pa += page;
                run.left -= page;
                done += 1;
                if run.left > 0 {
                    let base = template | run.pa;
                    let more = usize::try_from(run.left / page).unwrap_or(usize::MAX);
                    let rest_len = rest.len();
                    let (same_run, tail) =
                        core::mem::take(&mut rest).split_at_mut(more.min(rest_len));
                    rest = tail;
                    let mut k = 0u64;
                    for slot in same_run {
                        *slot = base + k * page;
                        k += 1;
                    }
                    run.pa += k * page;
                    run.left -= k * page;
                    done += k;
                }
            }
            cursor.put_back(run);
            return match failed {
                Some(error) => Err(Stopped {
                    stopped: va + done * page,
                    error,
                }),
                None => Ok(()),
            };
        }
        let mut buf = [0u64; CHUNK];
        for (cur, count) in leaf_chunks(va, end) {
            let Some(entries) = buf.get_mut(..count) else {
                break;
            };
            for slot in entries.iter_mut() {
                cursor.ensure().map_err(|error| Stopped {
                    stopped: cur,
                    error,
                })?;
                // The cursor checked that the run lies below 2^48, in OA[47:12], so OR-ing
                // it into the template is the encoding of the page.
                *slot = template | cursor.pa;
                cursor.advance(page);
            }
            self.mem
                .write_descriptors(table, TableIndex::of(Level::L3, cur), entries);
        }
        Ok(())
    }
}
