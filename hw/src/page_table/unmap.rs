//! Unmapping: [`PageTable::unmap`] splits the blocks a range cuts (with table pages
//! reserved first, so nothing can fail half-way), clears the range and frees the tables it
//! leaves empty.

use crate::addr::{GpuVa, PhysAddr};
use crate::descriptor::{CorruptDescriptor, Descriptor, Level, PageAttrs};
use crate::page_table::{
    entry_bounds, first_nonzero, Invalidate, PageTable, TableIndex, TableMemory, UnmapError, CHUNK,
    ENTRIES, MAX_SPLITS,
};

/// Table pages reserved before an unmap writes anything, so the splits cannot fail, and
/// the tables its check found to hold blocks only.
pub(super) struct SplitReserve {
    tables: [Option<PhysAddr>; MAX_SPLITS],
    blocks_only: BlockTables,
}

impl SplitReserve {
    pub(super) const EMPTY: Self = Self {
        tables: [None; MAX_SPLITS],
        blocks_only: BlockTables::NONE,
    };

    fn take(&mut self) -> Option<PhysAddr> {
        self.tables.iter_mut().find_map(Option::take)
    }
}

/// Tables that an unmap's "mapped throughout" check read whole and found to be all
/// blocks: nothing below them to free, so releasing one needs no scan for tables (for a
/// GiB of 2 MiB blocks, that scan was most of the unmap's time after the check). A few,
/// noted in order; the tables of a range that covers more are scanned as before.
pub(super) struct BlockTables([Option<PhysAddr>; MAX_SPLITS]);

impl BlockTables {
    pub(super) const NONE: Self = Self([None; MAX_SPLITS]);

    /// Notes that `table` holds blocks only, if there is room.
    pub(super) fn note(&mut self, table: PhysAddr) {
        if let Some(slot) = self.0.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(table);
        }
    }

    fn contains(&self, table: PhysAddr) -> bool {
        self.0.contains(&Some(table))
    }
}

impl<M: TableMemory> PageTable<M> {
    /// Unmaps `[va, va + size)`, which must be mapped throughout. Blocks the range cuts are
    /// split first; tables left empty are freed. Returns the range the GPU TLB must
    /// invalidate.
    pub fn unmap(&mut self, va: GpuVa, size: u64) -> Result<Invalidate, UnmapError> {
        let end = self.checked_va_range(va, size)?;
        let mut reserve = SplitReserve::EMPTY;
        if let Some(hole) = self
            .first_where(
                false,
                (self.root, self.start),
                (va.get(), end),
                &mut reserve.blocks_only,
            )
            .map_err(UnmapError::Corrupt)?
        {
            return Err(UnmapError::NotMapped {
                va: GpuVa::new(hole),
            });
        }

        // Find the blocks each end of the range cuts, and reserve a table for each split.
        let mut cuts: [Option<(Level, u64)>; MAX_SPLITS] = [None; MAX_SPLITS];
        let mut count = 0;
        let mut inval_start = va.get();
        let mut inval_end = end;
        for boundary in [va.get(), end] {
            if boundary >= self.va_size() {
                continue;
            }
            let blocks = self.blocks_cut_at(boundary).map_err(UnmapError::Corrupt)?;
            for (level, block_start) in blocks.into_iter().flatten() {
                inval_start = inval_start.min(block_start);
                inval_end = inval_end.max(block_start + level.entry_bytes());
                if !cuts.contains(&Some((level, block_start))) && count < MAX_SPLITS {
                    cuts[count] = Some((level, block_start));
                    count += 1;
                }
            }
        }
        for slot in reserve.tables.iter_mut().take(count) {
            match self.mem.alloc_table() {
                Some(table) => *slot = Some(table),
                None => {
                    for table in reserve.tables.iter_mut().filter_map(Option::take) {
                        self.mem.free_table(table);
                    }
                    return Err(UnmapError::OutOfTableMemory);
                }
            }
        }
        self.tables += count;
        let result = self.unmap_in(self.root, self.start, va.get(), end, &mut reserve);
        // Only reached if a split went unused, which the count above rules out.
        while let Some(table) = reserve.take() {
            self.mem.free_table(table);
            self.tables -= 1;
        }
        result?;
        Ok(Invalidate {
            va: GpuVa::new(inval_start),
            size: inval_end - inval_start,
        })
    }

    /// The blocks (level, start) that must be split for a range to start or end at
    /// `boundary`: at most a 1 GiB block and then a 2 MiB block inside it.
    fn blocks_cut_at(&self, boundary: u64) -> Result<[Option<(Level, u64)>; 2], CorruptDescriptor> {
        let mut cuts = [None; 2];
        let mut table = self.root;
        let mut level = self.start;
        loop {
            let raw = self
                .mem
                .read_descriptor(table, TableIndex::of(level, boundary));
            match Descriptor::decode(level, raw)? {
                Descriptor::Invalid => return Ok(cuts),
                Descriptor::Table { next } => {
                    let Some(next_level) = level.next() else {
                        return Err(CorruptDescriptor { level, raw });
                    };
                    table = next;
                    level = next_level;
                }
                Descriptor::Leaf { .. } => {
                    // The leaf holding `boundary` is cut unless `boundary` is aligned to
                    // it; once split, the next-level leaf holding it may be cut in turn.
                    let mut cut_level = level;
                    let mut i = 0;
                    while boundary & (cut_level.entry_bytes() - 1) != 0 {
                        if let Some(slot) = cuts.get_mut(i) {
                            *slot = Some((cut_level, boundary & !(cut_level.entry_bytes() - 1)));
                        }
                        i += 1;
                        match cut_level.next() {
                            Some(next) => cut_level = next,
                            None => break,
                        }
                    }
                    return Ok(cuts);
                }
            }
        }
    }

    pub(super) fn unmap_in(
        &mut self,
        table: PhysAddr,
        level: Level,
        va: u64,
        end: u64,
        reserve: &mut SplitReserve,
    ) -> Result<(), UnmapError> {
        let mut cur = va;
        while cur < end {
            let index = TableIndex::of(level, cur);
            let (entry_start, entry_end) = entry_bounds(level, cur);
            let chunk_end = end.min(entry_end);
            let whole_entry = cur == entry_start && chunk_end == entry_end;
            let raw = self.mem.read_descriptor(table, index);
            let corrupt = UnmapError::Corrupt(CorruptDescriptor { level, raw });
            match Descriptor::decode(level, raw).map_err(UnmapError::Corrupt)? {
                Descriptor::Invalid => {}
                Descriptor::Leaf { .. } if whole_entry => {
                    self.mem.write_descriptor(table, index, 0)
                }
                Descriptor::Leaf { output, attrs } => {
                    let next_level = level.next().ok_or(corrupt)?;
                    let next = reserve.take().ok_or(UnmapError::OutOfTableMemory)?;
                    self.fill_split(next, next_level, output, attrs);
                    let linked = Descriptor::Table { next }.encode(level).ok_or(corrupt)?;
                    // Replacing a block by an equivalent table keeps every translation; the
                    // returned Invalidate covers the whole block (break-before-make is the
                    // caller's TLB maintenance).
                    self.mem.write_descriptor(table, index, linked);
                    self.unmap_in(next, next_level, cur, chunk_end, reserve)?;
                }
                Descriptor::Table { next } => {
                    let next_level = level.next().ok_or(corrupt)?;
                    if whole_entry {
                        // Everything below goes: unlink the subtree, then free its pages
                        // without clearing their entries one by one.
                        self.mem.write_descriptor(table, index, 0);
                        if reserve.blocks_only.contains(next) {
                            self.mem.free_table(next);
                            self.tables -= 1;
                        } else {
                            self.free_subtree(next, next_level);
                        }
                    } else {
                        self.unmap_in(next, next_level, cur, chunk_end, reserve)?;
                        if self.is_empty(next, TableIndex::of(next_level, cur)) {
                            self.mem.write_descriptor(table, index, 0);
                            self.mem.free_table(next);
                            self.tables -= 1;
                        }
                    }
                }
            }
            cur = chunk_end;
        }
        Ok(())
    }

    /// Fills a fresh table at `level` with the leaves a block at the level above held.
    fn fill_split(&mut self, table: PhysAddr, level: Level, output: PhysAddr, attrs: PageAttrs) {
        let step = level.entry_bytes();
        for i in 0..ENTRIES {
            let pa = PhysAddr::new(output.get() + u64::from(i) * step);
            let leaf = Descriptor::Leaf { output: pa, attrs };
            // The block's output address was aligned to the larger size, so every piece is
            // aligned to `step` and encodes.
            if let (Some(raw), Some(index)) = (leaf.encode(level), TableIndex::new(i)) {
                self.mem.write_descriptor(table, index, raw);
            }
        }
    }

    /// Whether `table` holds no valid descriptor. The scan starts at `first`, the first
    /// entry of the range just unmapped in it, and wraps around: if that range still holds
    /// a table the answer comes at once, and otherwise a still-mapped neighbour usually
    /// follows within a chunk.
    fn is_empty(&self, table: PhysAddr, first: TableIndex) -> bool {
        let start = first.0;
        if let Some(entries) = self.mem.entries(table) {
            let (before, after) = entries.split_at(usize::from(start).min(entries.len()));
            return first_nonzero(after, |_, raw| raw).is_none()
                && first_nonzero(before, |_, raw| raw).is_none();
        }
        let mut buf = [0u64; CHUNK];
        let mut chunks = (start..ENTRIES)
            .step_by(CHUNK)
            .chain((0..start).step_by(CHUNK));
        chunks.all(|first| {
            // A chunk may run past the wrap point: the overlap is read twice, harmlessly.
            let len = usize::from(ENTRIES - first).min(CHUNK);
            let entries = buf.get_mut(..len).unwrap_or_default();
            self.mem.read_descriptors(table, TableIndex(first), entries);
            entries.iter().all(|&raw| raw == 0)
        })
    }
}
