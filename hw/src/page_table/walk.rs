//! Reading the tables as the GPU's MMU does: [`PageTable::translate`] and
//! [`PageTable::translate_run`] for one address, [`PageTable::mappings`] for all of them, and
//! the scans for the first mapped or unmapped address of a range that map and unmap check
//! first.

use core::marker::PhantomData;

use crate::addr::{GpuVa, PhysAddr};
use crate::descriptor::{not_block, not_page, CorruptDescriptor, Descriptor, Level};
use crate::page_table::{
    entry_bounds, first_nonzero, leaf_chunks, BlockTables, Mapping, PageTable, TableIndex,
    TableMemory, TranslateError, Translation, CHUNK, ENTRIES,
};
use crate::profile::MIN_PAGE;

/// A table holding leaves, found by [`PageTable::translate_run`], that a later call may
/// read again without walking from the root. It borrows the page table, which therefore
/// cannot change in between.
#[derive(Clone, Copy, Debug)]
pub struct LeafTable<'t> {
    table: PhysAddr,
    level: Level,
    /// The VA its entry 0 maps.
    base: u64,
    _walked: PhantomData<&'t ()>,
}

impl LeafTable<'_> {
    /// The raw leaf for `va` if it lies in this table's span and the entry is a leaf.
    fn leaf<M: TableMemory>(self, pt: &PageTable<M>, va: u64) -> Option<(Self, u64)> {
        let span = self.level.entry_bytes() * u64::from(ENTRIES);
        if va < self.base || va - self.base >= span {
            return None;
        }
        let raw = pt
            .mem
            .read_descriptor(self.table, TableIndex::of(self.level, va));
        matches!(
            Descriptor::decode(self.level, raw),
            Ok(Descriptor::Leaf { .. })
        )
        .then_some((self, raw))
    }

    /// The translation of `va` by `raw`, the leaf for it in this table.
    fn translation(self, va: GpuVa, raw: u64) -> Result<Translation, TranslateError> {
        let level = self.level;
        let corrupt = TranslateError::Corrupt(CorruptDescriptor { level, raw });
        match Descriptor::decode(level, raw) {
            Ok(Descriptor::Leaf { output, attrs }) => {
                let page = level.leaf_size().ok_or(corrupt)?;
                Ok(Translation {
                    pa: PhysAddr::new(output.get() | (va.get() & (page.bytes() - 1))),
                    page,
                    attrs,
                })
            }
            _ => Err(corrupt),
        }
    }
}

impl<M: TableMemory> PageTable<M> {
    /// The lowest address in `[va, end)` (inside `table`, at `level`) that is mapped, or
    /// with `mapped` false the lowest that is not: map checks a range is vacant, unmap that
    /// it is mapped throughout. The tables below the root that the range covers whole and
    /// that hold blocks only are noted in `blocks_only` (for unmap, which then frees them
    /// without a scan).
    pub(super) fn first_where(
        &self,
        mapped: bool,
        (table, level): (PhysAddr, Level),
        (va, end): (u64, u64),
        blocks_only: &mut BlockTables,
    ) -> Result<Option<u64>, CorruptDescriptor> {
        if !mapped && level.next().is_none() {
            return self.first_hole_in_leaf_table(table, va, end);
        }
        if self.settled_in_place(mapped, table, level, va, end) {
            // All blocks (not `mapped`) over the whole table: no table below it.
            let span = level.entry_bytes() * u64::from(ENTRIES);
            if !mapped && va & (span - 1) == 0 && end - va == span {
                blocks_only.note(table);
            }
            return Ok(None);
        }
        let mut cur = va;
        while cur < end {
            let (_, entry_end) = entry_bounds(level, cur);
            let chunk_end = end.min(entry_end);
            let raw = self.mem.read_descriptor(table, TableIndex::of(level, cur));
            let found = match Descriptor::decode(level, raw)? {
                Descriptor::Invalid => (!mapped).then_some(cur),
                Descriptor::Leaf { .. } => mapped.then_some(cur),
                Descriptor::Table { next } => {
                    let next_level = level.next().ok_or(CorruptDescriptor { level, raw })?;
                    let range = (cur, chunk_end);
                    self.first_where(mapped, (next, next_level), range, blocks_only)?
                }
            };
            if found.is_some() {
                return Ok(found);
            }
            cur = chunk_end;
        }
        Ok(None)
    }

    /// Whether the entries of `table` (at `level`) that `[va, end)` touches show at once,
    /// read in place, that the range holds nothing mapped (`mapped`) or is all blocks
    /// (not `mapped`): one branch-free pass that vectorises. False when the memory lends
    /// no entries or the answer needs the entry-by-entry walk (tables to descend, a hole
    /// or a corrupt descriptor to name).
    fn settled_in_place(
        &self,
        mapped: bool,
        table: PhysAddr,
        level: Level,
        va: u64,
        end: u64,
    ) -> bool {
        let first = TableIndex::of(level, va).get();
        // `end` is past `va` and inside this table's span, so its last byte is too.
        let last = TableIndex::of(level, end - 1).get();
        let Some(entries) = self
            .mem
            .entries(table)
            .and_then(|entries| entries.get(first..=last))
        else {
            return false;
        };
        if mapped {
            first_nonzero(entries, |_, raw| raw).is_none()
        } else {
            first_nonzero(entries, |_, raw| not_block(level, raw)).is_none()
        }
    }

    /// The lowest unmapped address in `[va, end)` inside one level-3 table: in place where
    /// the memory lends the entries, else read in chunks.
    fn first_hole_in_leaf_table(
        &self,
        table: PhysAddr,
        va: u64,
        end: u64,
    ) -> Result<Option<u64>, CorruptDescriptor> {
        let first = TableIndex::of(Level::L3, va).get();
        let pages = usize::try_from((end - va) / MIN_PAGE.get()).unwrap_or(0);
        if let Some(entries) = self
            .mem
            .entries(table)
            .and_then(|entries| entries.get(first..first.saturating_add(pages)))
        {
            return match first_nonzero(entries, |_, raw| not_page(raw)) {
                Some(i) => {
                    let raw = entries.get(i).copied().unwrap_or(0);
                    Descriptor::decode(Level::L3, raw)?;
                    Ok(Some(va + i as u64 * MIN_PAGE.get()))
                }
                None => Ok(None),
            };
        }
        let mut buf = [0u64; CHUNK];
        for (cur, count) in leaf_chunks(va, end) {
            let Some(entries) = buf.get_mut(..count) else {
                break;
            };
            self.mem
                .read_descriptors(table, TableIndex::of(Level::L3, cur), entries);
            if let Some(i) = first_nonzero(entries, |_, raw| not_page(raw)) {
                let raw = entries.get(i).copied().unwrap_or(0);
                // Not a page: a hole, or a corrupt descriptor reported as such.
                Descriptor::decode(Level::L3, raw)?;
                return Ok(Some(cur + i as u64 * MIN_PAGE.get()));
            }
        }
        Ok(None)
    }

    /// Walks the tables for `va`, as the GPU's MMU would.
    pub fn translate(&self, va: GpuVa) -> Result<Translation, TranslateError> {
        let (leaf, raw) = self.walk(va)?;
        leaf.translation(va, raw)
    }

    /// The translation of `va` and how many bytes from `va` on continue it: the following
    /// leaves of the same table are added while they map the next physical bytes with the
    /// same attributes, up to `max` bytes (at least the rest of `va`'s own leaf is
    /// counted). For the copy engine: one walk per run instead of one per page, and
    /// `near`, the table of the previous run, saves the walk altogether when `va`'s leaf
    /// is in that table too.
    pub fn translate_run<'t>(
        &'t self,
        va: GpuVa,
        max: u64,
        near: &mut Option<LeafTable<'t>>,
    ) -> Result<(Translation, u64), TranslateError> {
        let (leaf, raw) = match near.and_then(|t| t.leaf(self, va.get())) {
            Some(found) => found,
            None => {
                let (leaf, raw) = self.walk(va)?;
                *near = Some(leaf);
                (leaf, raw)
            }
        };
        let found = leaf.translation(va, raw)?;
        let LeafTable { table, level, .. } = leaf;
        let page = level.entry_bytes();
        let mut bytes = page - (va.get() & (page - 1));
        // Leaves are aligned to their size, so the leaf's own output is `pa` rounded down.
        let mut expected = (found.pa.get() & !(page - 1)).saturating_add(page);
        let mut next_va = va.get().saturating_add(bytes);
        // Entry by entry: a descriptor read can cost a call into the platform, and most
        // runs end at the first mismatch.
        while bytes < max && next_va < self.va_size() {
            let index = TableIndex::of(level, next_va);
            if index.0 == 0 {
                break;
            }
            match Descriptor::decode(level, self.mem.read_descriptor(table, index)) {
                Ok(Descriptor::Leaf { output, attrs })
                    if output.get() == expected && attrs == found.attrs =>
                {
                    bytes += page;
                    expected += page;
                    next_va += page;
                }
                _ => break,
            }
        }
        Ok((found, bytes))
    }

    /// The walk for `va` down to its leaf: the table holding it and the raw leaf.
    fn walk(&self, va: GpuVa) -> Result<(LeafTable<'_>, u64), TranslateError> {
        if va.get() >= self.va_size() {
            return Err(TranslateError::VaOutOfRange {
                va,
                va_bits: self.va_bits,
            });
        }
        let mut table = self.root;
        let mut level = self.start;
        loop {
            let raw = self
                .mem
                .read_descriptor(table, TableIndex::of(level, va.get()));
            match Descriptor::decode(level, raw).map_err(TranslateError::Corrupt)? {
                Descriptor::Invalid => return Err(TranslateError::NotMapped { va }),
                Descriptor::Table { next } => {
                    let corrupt = TranslateError::Corrupt(CorruptDescriptor { level, raw });
                    level = level.next().ok_or(corrupt)?;
                    table = next;
                }
                Descriptor::Leaf { .. } => {
                    let span = level.entry_bytes() * u64::from(ENTRIES);
                    let leaf = LeafTable {
                        table,
                        level,
                        base: va.get() & !(span - 1),
                        _walked: PhantomData,
                    };
                    return Ok((leaf, raw));
                }
            }
        }
    }

    /// The mapped ranges in VA order, adjacent leaves merged where they are physically
    /// contiguous with equal attributes. A corrupt descriptor ends the walk with an `Err`.
    #[must_use]
    pub fn mappings(&self) -> Mappings<'_, M> {
        let root = Frame {
            table: self.root,
            level: self.start,
            va: 0,
            end: self.va_size(),
        };
        Mappings {
            table: self,
            frames: [root; MAX_DEPTH],
            depth: 1,
            pending: None,
        }
    }

    /// The first non-zero entry of `table` (at `level`) in `[va, end)`, which lies in the
    /// table's span with `va` on an entry boundary: its VA and raw descriptor. Zero is the
    /// invalid descriptor at every level, so a sparse table is skipped without a decode.
    fn next_entry(&self, table: PhysAddr, level: Level, va: u64, end: u64) -> Option<(u64, u64)> {
        let (i, raw) = self.scan(table, level, (va, end), |_, raw| raw)?;
        Some((va + ((i as u64) << level.shift()), raw))
    }

    /// Bytes from `va` on (up to `end`, inside `table` at `level`) whose leaves continue
    /// the leaf `raw` just before `va`: each the one before plus the level's size in its
    /// address field and equal in every other bit, which makes it a leaf that decodes to
    /// the next physical bytes with the same attributes, so it merges without a decode.
    fn run_after(&self, table: PhysAddr, level: Level, va: u64, end: u64, raw: u64) -> u64 {
        // Entry `i` continues the run when it is `raw` plus `i + 1` steps with `raw`'s bits
        // outside the address field: then each entry is its predecessor plus one step.
        let step = level.entry_bytes();
        let others = !level.leaf_oa().mask();
        let breaks = |i: usize, next: u64| {
            let expected = raw.wrapping_add((i as u64 + 1).wrapping_mul(step));
            (next ^ expected) | ((next ^ raw) & others)
        };
        match self.scan(table, level, (va, end), breaks) {
            Some((i, _)) => i as u64 * step,
            None => end.saturating_sub(va),
        }
    }

    /// The first entry of `table` (at `level`) in `[va, end)` (in the table's span, `va`
    /// on an entry boundary) for which `miss(i, raw)` is non-zero, `i` counting from the
    /// entry at `va`: `i` and the raw descriptor. In place where the memory lends the
    /// entries, else [`CHUNK`] per [`TableMemory::read_descriptors`].
    fn scan(
        &self,
        table: PhysAddr,
        level: Level,
        (va, end): (u64, u64),
        miss: impl Fn(usize, u64) -> u64,
    ) -> Option<(usize, u64)> {
        if va >= end {
            return None;
        }
        let first = TableIndex::of(level, va).get();
        let last = TableIndex::of(level, end - 1).get();
        if let Some(entries) = self
            .mem
            .entries(table)
            .and_then(|entries| entries.get(first..=last))
        {
            let i = first_nonzero(entries, miss)?;
            return Some((i, entries.get(i).copied()?));
        }
        let mut buf = [0u64; CHUNK];
        let mut from = first;
        while from <= last {
            let count = (last + 1 - from).min(CHUNK);
            let chunk = buf.get_mut(..count)?;
            self.mem
                .read_descriptors(table, TableIndex::new(u16::try_from(from).ok()?)?, chunk);
            let base = from - first;
            if let Some(i) = first_nonzero(chunk, |i, raw| miss(base + i, raw)) {
                return Some((base + i, chunk.get(i).copied()?));
            }
            from += count;
        }
        None
    }
}

/// Tables one walk can be inside at once: one per level.
const MAX_DEPTH: usize = 4;

/// A table [`Mappings`] is inside: where it is and what of its span is left to read.
#[derive(Clone, Copy, Debug)]
struct Frame {
    table: PhysAddr,
    level: Level,
    /// The VA of the next entry to read (on an entry boundary).
    va: u64,
    /// Where the part of the VA space this table maps ends.
    end: u64,
}

/// Iterator returned by [`PageTable::mappings`]: a depth-first walk that keeps its place
/// in every table on the way down, so each descriptor is read once over the whole walk
/// (a walk from the root per leaf read the upper levels again for every page).
pub struct Mappings<'a, M: TableMemory> {
    table: &'a PageTable<M>,
    /// The tables from the root down to the one being read; `depth` of them are live.
    frames: [Frame; MAX_DEPTH],
    depth: usize,
    pending: Option<Mapping>,
}

impl<M: TableMemory> Mappings<'_, M> {
    /// The next leaf in VA order, as a one-leaf [`Mapping`], or `None` at the end.
    fn next_leaf(&mut self) -> Result<Option<Mapping>, CorruptDescriptor> {
        loop {
            let Some(depth) = self.depth.checked_sub(1) else {
                return Ok(None);
            };
            let Some(frame) = self.frames.get_mut(depth) else {
                return Ok(None);
            };
            let Frame {
                table,
                level,
                va,
                end,
            } = *frame;
            let found = if va < end {
                self.table.next_entry(table, level, va, end)
            } else {
                None
            };
            let Some((entry_va, raw)) = found else {
                self.depth = depth;
                continue;
            };
            let entry_end = entry_va + level.entry_bytes();
            frame.va = entry_end;
            match Descriptor::decode(level, raw)? {
                Descriptor::Invalid => {}
                Descriptor::Leaf { output, attrs } => {
                    let more = self.table.run_after(table, level, entry_end, end, raw);
                    frame.va = entry_end + more;
                    return Ok(Some(Mapping {
                        va: GpuVa::new(entry_va),
                        pa: output,
                        size: level.entry_bytes() + more,
                        attrs,
                    }));
                }
                Descriptor::Table { next } => {
                    let next_level = level.next().ok_or(CorruptDescriptor { level, raw })?;
                    let below = Frame {
                        table: next,
                        level: next_level,
                        va: entry_va,
                        end: entry_end,
                    };
                    // Four levels at most: a table below level 3 decodes as corrupt above.
                    let slot = self
                        .frames
                        .get_mut(self.depth)
                        .ok_or(CorruptDescriptor { level, raw })?;
                    *slot = below;
                    self.depth += 1;
                }
            }
        }
    }
}

impl<M: TableMemory> Iterator for Mappings<'_, M> {
    type Item = Result<Mapping, CorruptDescriptor>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let leaf = match self.next_leaf() {
                Ok(Some(leaf)) => leaf,
                Ok(None) => return self.pending.take().map(Ok),
                Err(corrupt) => {
                    self.depth = 0;
                    self.pending = None;
                    return Some(Err(corrupt));
                }
            };
            match &mut self.pending {
                Some(run)
                    if run.va.get() + run.size == leaf.va.get()
                        && run.pa.get() + run.size == leaf.pa.get()
                        && run.attrs == leaf.attrs =>
                {
                    run.size += leaf.size;
                }
                _ => {
                    if let Some(done) = self.pending.replace(leaf) {
                        return Some(Ok(done));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::Access;
    use crate::page_table::{MapError, MapFlags, UnmapError};
    use crate::profile::VGPU;
    use crate::table_pool::TablePool;
    use crate::test_cases::page_table::{rw, table, M2};

    /// Room for every test here.
    type Pool = TablePool<16>;
    const POOL_BASE: PhysAddr = PhysAddr::new(0x100_0000);

    #[test]
    fn a_corrupt_descriptor_is_reported_not_followed() {
        let mut pool = Pool::new(POOL_BASE);
        let mut pt = table(&mut pool, &VGPU);
        pt.map(GpuVa::new(0), PhysAddr::new(0), 0x1000, rw())
            .expect("map");
        let root = pt.root();
        let index = TableIndex::new(0).expect("index");
        let raw = pt.mem.read_descriptor(root, index);
        // Turn the level-0 table descriptor into a (reserved) level-0 block.
        pt.mem.write_descriptor(root, index, raw & !0b10);
        assert!(matches!(
            pt.translate(GpuVa::new(0)),
            Err(TranslateError::Corrupt(_))
        ));
        assert!(matches!(
            pt.map(GpuVa::new(0x1000), PhysAddr::new(0), 0x1000, rw()),
            Err(MapError::Corrupt(_))
        ));
        assert!(matches!(
            pt.unmap(GpuVa::new(0), 0x1000),
            Err(UnmapError::Corrupt(_))
        ));
        assert!(matches!(pt.mappings().next(), Some(Err(_))));
    }

    #[test]
    fn translate_run_extends_over_contiguous_leaves_of_one_table() {
        let mut pool = Pool::new(POOL_BASE);
        let mut pt = table(&mut pool, &VGPU);
        // Pages 0-2 contiguous, page 3 elsewhere, pages 4-5 contiguous again.
        pt.map(GpuVa::new(0), PhysAddr::new(0x10_0000), 0x3000, rw())
            .expect("map");
        pt.map(GpuVa::new(0x3000), PhysAddr::new(0x50_0000), 0x1000, rw())
            .expect("map");
        pt.map(GpuVa::new(0x4000), PhysAddr::new(0x50_1000), 0x2000, rw())
            .expect("map");
        fn run<M: TableMemory>(pt: &PageTable<M>, va: u64, max: u64) -> (u64, u64) {
            let (t, bytes) = pt
                .translate_run(GpuVa::new(va), max, &mut None)
                .expect("mapped");
            (t.pa.get(), bytes)
        }
        assert_eq!(run(&pt, 0x10, u64::MAX), (0x10_0010, 0x3000 - 0x10));
        assert_eq!(
            run(&pt, 0x1000, 0x1000),
            (0x10_1000, 0x1000),
            "capped at max"
        );
        // Page 3 continues into pages 4-5 physically.
        assert_eq!(run(&pt, 0x3000, u64::MAX), (0x50_0000, 0x3000));
        // A run stops at the end of its table, and at a change of attributes.
        pt.map(
            GpuVa::new(M2 - 0x1000),
            PhysAddr::new(0x60_0000),
            0x2000,
            rw(),
        )
        .expect("map");
        assert_eq!(run(&pt, M2 - 0x1000, u64::MAX), (0x60_0000, 0x1000));
        let ro = MapFlags {
            access: Access::ReadOnly,
            ..rw()
        };
        pt.map(GpuVa::new(0x6000), PhysAddr::new(0x50_3000), 0x1000, ro)
            .expect("map");
        assert_eq!(run(&pt, 0x4000, u64::MAX), (0x50_1000, 0x2000));
        // A 2 MiB block counts whole from its start.
        pt.map(GpuVa::new(2 * M2), PhysAddr::new(4 * M2), M2, rw())
            .expect("map");
        assert_eq!(run(&pt, 2 * M2 + 0x1000, 1), (4 * M2 + 0x1000, M2 - 0x1000));
        assert_eq!(
            pt.translate_run(GpuVa::new(0x7000), 1, &mut None)
                .map(|r| r.1),
            Err(TranslateError::NotMapped {
                va: GpuVa::new(0x7000)
            })
        );
        // The table of an earlier run is re-used without a walk, and gives the same answers.
        let mut near = None;
        let first = pt.translate_run(GpuVa::new(0), u64::MAX, &mut near);
        assert_eq!(first.map(|r| r.1), Ok(0x3000));
        assert!(near.is_some());
        for va in [0x3000, 0x4000, 0x6000, M2 - 0x1000, 2 * M2] {
            assert_eq!(
                pt.translate_run(GpuVa::new(va), u64::MAX, &mut near),
                pt.translate_run(GpuVa::new(va), u64::MAX, &mut None),
                "{va:#x}"
            );
        }
        assert!(pt.translate_run(GpuVa::new(0x7000), 1, &mut near).is_err());
    }
}
