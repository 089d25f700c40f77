//! Batched mapping: one call maps a binding given as its list of physically contiguous
//! runs (what a kernel gets from an sg-table), walking each table once.
//!
//! [`PageTable::map`] per run would walk from the root and check for overlap once per
//! run; for scattered 4 KiB pages that is four levels per page. Here the overlap check
//! covers the whole range once, each upper-level entry is visited once, and the entries
//! of a leaf table are built in a buffer and stored with one
//! [`TableMemory::write_descriptors`].

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
struct Cursor<I> {
    runs: I,
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

impl<I> Cursor<I> {
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

impl<I, E> Cursor<I>
where
    I: Iterator<Item = Result<Run, E>>,
{
    /// Makes sure the current run has bytes left, fetching the next run if not.
    #[inline(always)]
    fn ensure(&mut self) -> Result<(), MapRunsError<E>> {
        if self.left > 0 {
            Ok(())
        } else {
            self.fetch()
        }
    }

    /// Fetches and checks the next run, and makes it the current one.
    #[inline]
    fn fetch(&mut self) -> Result<(), MapRunsError<E>> {
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
    fn refill(&mut self, held: &mut Held) -> Result<(), MapRunsError<E>> {
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
    fn next_run(&mut self, taken: &mut u64) -> Result<(u64, u64), MapRunsError<E>> {
        let Some(run) = self.runs.next() else {
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

    /// Takes `bytes` (at most `self.left`) from the current run.
    fn advance(&mut self, bytes: u64) {
        self.pa += bytes;
        self.left -= bytes;
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
        let attrs = flags.attrs();
        let mut cursor = Cursor {
            runs: runs.into_iter(),
            pa: 0,
            left: 0,
            taken: 0,
            size,
            oa_bits: self.oa_bits,
            oa_size: 1u64 << self.oa_bits.min(48),
        };
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
    fn map_runs_in<E, I>(
        &mut self,
        table: PhysAddr,
        level: Level,
        (va, end): (u64, u64),
        fresh: bool,
        cursor: &mut Cursor<I>,
        attrs: PageAttrs,
    ) -> Result<(), Stopped<E>>
    where
        I: Iterator<Item = Result<Run, E>>,
    {
        let Some(next_level) = level.next() else {
            return self.fill_leaf_table(table, va, end, cursor, attrs);
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
    fn fill_blocks<E, I>(
        &mut self,
        table: PhysAddr,
        level: Level,
        (cur, end): (u64, u64),
        fresh: bool,
        cursor: &mut Cursor<I>,
        template: u64,
    ) -> Result<u64, Stopped<E>>
    where
        I: Iterator<Item = Result<Run, E>>,
    {
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
        for slot in slots.iter_mut().take(whole) {
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
    /// entries per bulk store. On error, `stopped` is the first page not written.
    fn fill_leaf_table<E, I>(
        &mut self,
        table: PhysAddr,
        va: u64,
        end: u64,
        cursor: &mut Cursor<I>,
        attrs: PageAttrs,
    ) -> Result<(), Stopped<E>>
    where
        I: Iterator<Item = Result<Run, E>>,
    {
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
            let mut slots = slots.iter_mut();
            let mut done = 0u64;
            let mut failed = None;
            while let Some(slot) = slots.next() {
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
                    let mut k = 0u64;
                    for slot in slots.by_ref().take(more) {
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
