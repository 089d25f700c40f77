//! Page-table operations over any [`TableMemory`].
//!
//! The same code runs on a host fake, in the kernel (tables in pages the module allocates)
//! and on Cortex-M (a static [`TablePool`](crate::TablePool)).
//!
//! # Invariants kept between operations
//! - Every table other than the root holds at least one valid descriptor: a table that
//!   becomes empty is freed and its parent entry cleared.
//! - A table page is linked into its parent only after everything below it is written, so a
//!   walker never sees a half-built subtree.
//! - A failed [`PageTable::map`] or [`PageTable::unmap`] leaves the tables as they were.

use core::convert::Infallible;
use core::fmt;
use core::marker::PhantomData;

use crate::addr::{range_end, GpuVa, PhysAddr};
use crate::descriptor::{
    is_valid_page, Access, AttrIndex, CorruptDescriptor, Descriptor, Level, PageAttrs, Shareability,
};
use crate::page_size::{PageSize, PageSizes};
use crate::profile::{GpuProfile, MIN_PAGE};

mod runs;

pub use runs::{MapRunsError, Run};

/// Descriptors in one 4 KiB table.
pub const ENTRIES: u16 = 512;

/// The index of a descriptor inside a table, below [`ENTRIES`].
///
/// # Invariants
/// The value is below 512.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TableIndex(u16);

impl TableIndex {
    /// `index` if it is below 512.
    #[must_use]
    pub const fn new(index: u16) -> Option<Self> {
        if index < ENTRIES {
            Some(Self(index))
        } else {
            None
        }
    }

    /// The index.
    #[must_use]
    pub const fn get(self) -> usize {
        self.0 as usize
    }

    /// Byte offset of the descriptor inside its table.
    #[must_use]
    pub const fn byte_offset(self) -> u64 {
        self.0 as u64 * 8
    }

    /// The entry of `va` in a table at `level`.
    #[expect(clippy::cast_possible_truncation, reason = "masked to 9 bits first")]
    const fn of(level: Level, va: u64) -> Self {
        Self(((va >> level.shift()) & (ENTRIES as u64 - 1)) as u16)
    }
}

/// Memory that holds page-table pages.
///
/// Implementations must not panic for any argument: a `table` they did not hand out reads
/// as zero and ignores writes (only a corrupt table could produce one).
pub trait TableMemory {
    /// A zeroed, 4 KiB-aligned table page, or `None` when none is left.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    /// Gives back a page from [`TableMemory::alloc_table`].
    fn free_table(&mut self, table: PhysAddr);
    /// The descriptor at `index` of the table at `table`.
    fn read_descriptor(&self, table: PhysAddr, index: TableIndex) -> u64;
    /// Writes the descriptor at `index` of the table at `table`.
    fn write_descriptor(&mut self, table: PhysAddr, index: TableIndex, raw: u64);

    /// Reads the descriptors from `first` on into `out`; entries past the end of the table
    /// are left alone. Memory that can hand out a table as a slice should override this
    /// (a leaf table is scanned whole when checking a range).
    fn read_descriptors(&self, table: PhysAddr, first: TableIndex, out: &mut [u64]) {
        for (slot, index) in out.iter_mut().zip(first.0..ENTRIES) {
            *slot = self.read_descriptor(table, TableIndex(index));
        }
    }

    /// Writes `raws` to the descriptors from `first` on; values past the end of the table
    /// are dropped. Memory that can hand out a table as a slice should override this (a
    /// batched map fills a leaf table with one call).
    fn write_descriptors(&mut self, table: PhysAddr, first: TableIndex, raws: &[u64]) {
        for (&raw, index) in raws.iter().zip(first.0..ENTRIES) {
            self.write_descriptor(table, TableIndex(index), raw);
        }
    }
}

/// Table memory can be lent: a `PageTable` over `&mut M` leaves `M` with its owner (on
/// a small stack, a pool moved by value is copied).
impl<M: TableMemory> TableMemory for &mut M {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        (**self).alloc_table()
    }

    fn free_table(&mut self, table: PhysAddr) {
        (**self).free_table(table);
    }

    fn read_descriptor(&self, table: PhysAddr, index: TableIndex) -> u64 {
        (**self).read_descriptor(table, index)
    }

    fn write_descriptor(&mut self, table: PhysAddr, index: TableIndex, raw: u64) {
        (**self).write_descriptor(table, index, raw);
    }

    fn read_descriptors(&self, table: PhysAddr, first: TableIndex, out: &mut [u64]) {
        (**self).read_descriptors(table, first, out);
    }

    fn write_descriptors(&mut self, table: PhysAddr, first: TableIndex, raws: &[u64]) {
        (**self).write_descriptors(table, first, raws);
    }
}

/// How to map a range.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MapFlags {
    /// Read-only or read-write.
    pub access: Access,
    /// Allow instruction fetch (clears XN).
    pub executable: bool,
    /// Memory attributes (MAIR / MEMATTR index).
    pub attr_index: AttrIndex,
    /// Shareability.
    pub shareability: Shareability,
    /// Privileged only (clears AP\[1\]); GPU jobs run unprivileged.
    pub privileged: bool,
}

impl MapFlags {
    /// The leaf attributes these flags produce, as io-pgtable-arm builds them: AF and nG
    /// always set.
    #[must_use]
    pub const fn attrs(self) -> PageAttrs {
        PageAttrs {
            access: self.access,
            unprivileged: !self.privileged,
            attr_index: self.attr_index,
            shareability: self.shareability,
            access_flag: true,
            not_global: true,
            execute_never: !self.executable,
        }
    }
}

/// Why a [`PageTable::map`] failed. The tables are unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MapError {
    /// `size` is zero.
    ZeroSize,
    /// The VA is not 4 KiB-aligned.
    MisalignedVa {
        /// The offending address.
        va: GpuVa,
    },
    /// The PA is not 4 KiB-aligned.
    MisalignedPa {
        /// The offending address.
        pa: PhysAddr,
    },
    /// The size is not a multiple of 4 KiB.
    MisalignedSize {
        /// The offending size.
        size: u64,
    },
    /// `[va, va + size)` leaves the GPU's VA space (or wraps).
    VaOutOfRange {
        /// Start of the range.
        va: GpuVa,
        /// Its size.
        size: u64,
        /// The VA width it must fit.
        va_bits: u8,
    },
    /// `[pa, pa + size)` leaves the output-address space (or wraps).
    PaOutOfRange {
        /// Start of the range.
        pa: PhysAddr,
        /// Its size.
        size: u64,
        /// The OA width it must fit.
        oa_bits: u8,
    },
    /// Part of the range is mapped already; `va` is the first such page.
    AlreadyMapped {
        /// First mapped address found.
        va: GpuVa,
    },
    /// No table page could be allocated.
    OutOfTableMemory,
    /// A descriptor in the walk is not one this crate writes.
    Corrupt(CorruptDescriptor),
}

/// Why a [`PageTable::unmap`] failed. The tables are unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum UnmapError {
    /// `size` is zero.
    ZeroSize,
    /// The VA is not 4 KiB-aligned.
    MisalignedVa {
        /// The offending address.
        va: GpuVa,
    },
    /// The size is not a multiple of 4 KiB.
    MisalignedSize {
        /// The offending size.
        size: u64,
    },
    /// `[va, va + size)` leaves the GPU's VA space (or wraps).
    VaOutOfRange {
        /// Start of the range.
        va: GpuVa,
        /// Its size.
        size: u64,
        /// The VA width it must fit.
        va_bits: u8,
    },
    /// Part of the range is not mapped; `va` is the first hole.
    NotMapped {
        /// First unmapped address found.
        va: GpuVa,
    },
    /// A block cut by the range could not be split: no table page left.
    OutOfTableMemory,
    /// A descriptor in the walk is not one this crate writes.
    Corrupt(CorruptDescriptor),
}

/// Why a [`PageTable::translate`] failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TranslateError {
    /// The VA is beyond the VA space.
    VaOutOfRange {
        /// The address.
        va: GpuVa,
        /// The VA width.
        va_bits: u8,
    },
    /// Nothing is mapped there: the GPU would take a translation fault.
    NotMapped {
        /// The address.
        va: GpuVa,
    },
    /// A descriptor in the walk is not one this crate writes.
    Corrupt(CorruptDescriptor),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::ZeroSize => write!(f, "map of zero bytes"),
            MapError::MisalignedVa { va } => write!(f, "GPU VA {va} is not 4 KiB-aligned"),
            MapError::MisalignedPa { pa } => write!(f, "PA {pa} is not 4 KiB-aligned"),
            MapError::MisalignedSize { size } => {
                write!(f, "size {size:#x} is not a multiple of 4 KiB")
            }
            MapError::VaOutOfRange { va, size, va_bits } => {
                write!(
                    f,
                    "[{va}, +{size:#x}) is outside the {va_bits}-bit GPU VA space"
                )
            }
            MapError::PaOutOfRange { pa, size, oa_bits } => {
                write!(
                    f,
                    "[{pa}, +{size:#x}) is outside the {oa_bits}-bit output space"
                )
            }
            MapError::AlreadyMapped { va } => write!(f, "GPU VA {va} is already mapped"),
            MapError::OutOfTableMemory => write!(f, "out of page-table memory"),
            MapError::Corrupt(c) => c.fmt(f),
        }
    }
}

impl fmt::Display for UnmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnmapError::ZeroSize => write!(f, "unmap of zero bytes"),
            UnmapError::MisalignedVa { va } => write!(f, "GPU VA {va} is not 4 KiB-aligned"),
            UnmapError::MisalignedSize { size } => {
                write!(f, "size {size:#x} is not a multiple of 4 KiB")
            }
            UnmapError::VaOutOfRange { va, size, va_bits } => {
                write!(
                    f,
                    "[{va}, +{size:#x}) is outside the {va_bits}-bit GPU VA space"
                )
            }
            UnmapError::NotMapped { va } => write!(f, "GPU VA {va} is not mapped"),
            UnmapError::OutOfTableMemory => write!(f, "out of page-table memory to split a block"),
            UnmapError::Corrupt(c) => c.fmt(f),
        }
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::VaOutOfRange { va, va_bits } => {
                write!(f, "GPU VA {va} is outside the {va_bits}-bit VA space")
            }
            TranslateError::NotMapped { va } => write!(f, "GPU VA {va} is not mapped"),
            TranslateError::Corrupt(c) => c.fmt(f),
        }
    }
}

/// A successful translation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Translation {
    /// The physical address the VA maps to.
    pub pa: PhysAddr,
    /// The size of the leaf that maps it.
    pub page: PageSize,
    /// The leaf's attributes.
    pub attrs: PageAttrs,
}

/// A GPU TLB invalidation that must happen after an unmap, before the freed memory is
/// reused. It covers every block that was split as well as the unmapped range.
#[must_use = "the GPU may still hold stale translations until the range is invalidated"]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Invalidate {
    /// Start of the range to invalidate.
    pub va: GpuVa,
    /// Its size.
    pub size: u64,
}

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

/// A run of mapped VA whose pages are physically contiguous and share attributes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Mapping {
    /// Start of the run.
    pub va: GpuVa,
    /// Where it maps to.
    pub pa: PhysAddr,
    /// Its length in bytes.
    pub size: u64,
    /// The attributes of every leaf in it.
    pub attrs: PageAttrs,
}

/// Returned by [`PageTable::new`] when the root table cannot be allocated: the memory,
/// handed back.
#[derive(Debug)]
pub struct NoRootTable<M>(pub M);

/// Descriptors per bulk read or write of a table (scans, and the leaf entries a batched
/// map builds). 128 bytes on the stack: a larger zeroed buffer becomes a `memset` call the
/// kernel object cannot link (see kernel-shim/core/tests/no_panic.rs), and kernel stacks
/// are small.
const CHUNK: usize = 16;

/// The most blocks one unmap can split: each end of the range may cut a 1 GiB and then a
/// 2 MiB block.
const MAX_SPLITS: usize = 4;

/// A GPU address space: the page tables of one VM.
///
/// Dropping it without [`PageTable::destroy`] leaves its table pages allocated in `M`.
#[derive(Debug)]
pub struct PageTable<M: TableMemory> {
    mem: M,
    root: PhysAddr,
    start: Level,
    va_bits: u8,
    oa_bits: u8,
    sizes: PageSizes,
    tables: usize,
}

/// Table pages reserved before an unmap writes anything, so the splits cannot fail.
struct SplitReserve {
    tables: [Option<PhysAddr>; MAX_SPLITS],
}

impl SplitReserve {
    const EMPTY: Self = Self {
        tables: [None; MAX_SPLITS],
    };

    fn take(&mut self) -> Option<PhysAddr> {
        self.tables.iter_mut().find_map(Option::take)
    }
}

impl<M: TableMemory> PageTable<M> {
    /// An empty address space shaped by `profile`, with its root table allocated from `mem`.
    pub fn new(mut mem: M, profile: &GpuProfile) -> Result<Self, NoRootTable<M>> {
        let Some(root) = mem.alloc_table() else {
            return Err(NoRootTable(mem));
        };
        Ok(Self {
            mem,
            root,
            start: profile.start_level(),
            va_bits: profile.va_bits,
            oa_bits: profile.oa_bits,
            sizes: profile.page_sizes,
            tables: 1,
        })
    }

    /// Physical address of the root table (what goes into the MMU's TRANSTAB register).
    #[must_use]
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Table pages this address space holds, the root included.
    #[must_use]
    pub fn table_pages(&self) -> usize {
        self.tables
    }

    /// The table memory, for reading.
    #[must_use]
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Frees every table page, the root included, and hands the memory back.
    pub fn destroy(mut self) -> M {
        self.free_subtree(self.root, self.start);
        self.mem
    }

    fn va_size(&self) -> u64 {
        1u64 << self.va_bits
    }

    /// Maps `[va, va + size)` to `[pa, pa + size)`, with 1 GiB and 2 MiB blocks wherever
    /// the profile allows them and VA, PA and size line up, 4 KiB pages elsewhere.
    pub fn map(
        &mut self,
        va: GpuVa,
        pa: PhysAddr,
        size: u64,
        flags: MapFlags,
    ) -> Result<(), MapError> {
        // VA first, then PA: the order of errors callers see.
        self.checked_va_range(va, size)?;
        if !pa.is_aligned(MIN_PAGE) {
            return Err(MapError::MisalignedPa { pa });
        }
        match range_end(pa.get(), size) {
            Some(pa_end) if pa_end <= 1u64 << self.oa_bits => {}
            _ => {
                return Err(MapError::PaOutOfRange {
                    pa,
                    size,
                    oa_bits: self.oa_bits,
                })
            }
        }
        // The batched path with a single run: the checks above already ruled out every
        // error that is about the run.
        let run = core::iter::once(Ok::<_, Infallible>(Run { pa, len: size }));
        self.map_runs(va, size, run, flags)
            .map_err(|error| match error {
                MapRunsError::Map(error) => error,
                MapRunsError::Source(never) => match never {},
                // Cannot happen: the one run covers the range.
                MapRunsError::RunsEnded { size, .. } => MapError::MisalignedSize { size },
            })
    }

    /// The end of `[va, va + size)` once it is checked to be a non-empty, 4 KiB-aligned
    /// range inside the VA space.
    fn checked_va_range(&self, va: GpuVa, size: u64) -> Result<u64, MapError> {
        if size == 0 {
            return Err(MapError::ZeroSize);
        }
        if !va.is_aligned(MIN_PAGE) {
            return Err(MapError::MisalignedVa { va });
        }
        if !MIN_PAGE.is_aligned(size) {
            return Err(MapError::MisalignedSize { size });
        }
        match range_end(va.get(), size) {
            Some(end) if end <= self.va_size() => Ok(end),
            _ => Err(MapError::VaOutOfRange {
                va,
                size,
                va_bits: self.va_bits,
            }),
        }
    }

    /// Fails with the first mapped address in `[va, end)`. Runs before anything is
    /// allocated, so the error does not depend on how much table memory is left.
    fn check_vacant(&self, va: GpuVa, end: u64) -> Result<(), MapError> {
        match self
            .first_mapped(self.root, self.start, va.get(), end)
            .map_err(MapError::Corrupt)?
        {
            Some(mapped) => Err(MapError::AlreadyMapped {
                va: GpuVa::new(mapped),
            }),
            None => Ok(()),
        }
    }

    /// Unmaps `[va, va + size)`, which must be mapped throughout. Blocks the range cuts are
    /// split first; tables left empty are freed. Returns the range the GPU TLB must
    /// invalidate.
    pub fn unmap(&mut self, va: GpuVa, size: u64) -> Result<Invalidate, UnmapError> {
        if size == 0 {
            return Err(UnmapError::ZeroSize);
        }
        if !va.is_aligned(MIN_PAGE) {
            return Err(UnmapError::MisalignedVa { va });
        }
        if !MIN_PAGE.is_aligned(size) {
            return Err(UnmapError::MisalignedSize { size });
        }
        let end = match range_end(va.get(), size) {
            Some(end) if end <= self.va_size() => end,
            _ => {
                return Err(UnmapError::VaOutOfRange {
                    va,
                    size,
                    va_bits: self.va_bits,
                })
            }
        };
        if let Some(hole) = self
            .first_hole(self.root, self.start, va.get(), end)
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
        let mut reserve = SplitReserve::EMPTY;
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

    /// The lowest mapped address in `[va, end)`.
    fn first_mapped(
        &self,
        table: PhysAddr,
        level: Level,
        va: u64,
        end: u64,
    ) -> Result<Option<u64>, CorruptDescriptor> {
        let mut cur = va;
        while cur < end {
            let (_, entry_end) = entry_bounds(level, cur);
            let chunk_end = end.min(entry_end);
            let raw = self.mem.read_descriptor(table, TableIndex::of(level, cur));
            match Descriptor::decode(level, raw)? {
                Descriptor::Invalid => {}
                Descriptor::Leaf { .. } => return Ok(Some(cur)),
                Descriptor::Table { next } => {
                    let Some(next_level) = level.next() else {
                        return Err(CorruptDescriptor { level, raw });
                    };
                    if let Some(mapped) = self.first_mapped(next, next_level, cur, chunk_end)? {
                        return Ok(Some(mapped));
                    }
                }
            }
            cur = chunk_end;
        }
        Ok(None)
    }

    /// The lowest unmapped address in `[va, end)`.
    fn first_hole(
        &self,
        table: PhysAddr,
        level: Level,
        va: u64,
        end: u64,
    ) -> Result<Option<u64>, CorruptDescriptor> {
        if level.next().is_none() {
            return self.first_hole_in_leaf_table(table, va, end);
        }
        let mut cur = va;
        while cur < end {
            let (_, entry_end) = entry_bounds(level, cur);
            let chunk_end = end.min(entry_end);
            let raw = self.mem.read_descriptor(table, TableIndex::of(level, cur));
            match Descriptor::decode(level, raw)? {
                Descriptor::Invalid => return Ok(Some(cur)),
                Descriptor::Leaf { .. } => {}
                Descriptor::Table { next } => {
                    let Some(next_level) = level.next() else {
                        return Err(CorruptDescriptor { level, raw });
                    };
                    if let Some(hole) = self.first_hole(next, next_level, cur, chunk_end)? {
                        return Ok(Some(hole));
                    }
                }
            }
            cur = chunk_end;
        }
        Ok(None)
    }

    /// [`Self::first_hole`] for `[va, end)` inside one level-3 table, read in one go.
    fn first_hole_in_leaf_table(
        &self,
        table: PhysAddr,
        va: u64,
        end: u64,
    ) -> Result<Option<u64>, CorruptDescriptor> {
        let mut buf = [0u64; CHUNK];
        for (cur, count) in leaf_chunks(va, end) {
            let Some(entries) = buf.get_mut(..count) else {
                break;
            };
            self.mem
                .read_descriptors(table, TableIndex::of(Level::L3, cur), entries);
            // Branch-free over the chunk (it vectorises); find the culprit only on failure.
            let all_pages = entries
                .iter()
                .fold(true, |all, &raw| all & is_valid_page(raw));
            if all_pages {
                continue;
            }
            if let Some(i) = entries.iter().position(|&raw| !is_valid_page(raw)) {
                let raw = entries.get(i).copied().unwrap_or(0);
                // Not a page: a hole, or a corrupt descriptor reported as such.
                Descriptor::decode(Level::L3, raw)?;
                return Ok(Some(cur + i as u64 * MIN_PAGE.get()));
            }
        }
        Ok(None)
    }

    fn unmap_in(
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
                        self.free_subtree(next, next_level);
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
        let mut buf = [0u64; CHUNK];
        let start = first.0;
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

    /// Frees `table` (at `level`) and every table below it.
    fn free_subtree(&mut self, table: PhysAddr, level: Level) {
        if let Some(next_level) = level.next() {
            for index in (0..ENTRIES).filter_map(TableIndex::new) {
                let raw = self.mem.read_descriptor(table, index);
                if let Ok(Descriptor::Table { next }) = Descriptor::decode(level, raw) {
                    self.free_subtree(next, next_level);
                }
            }
        }
        self.mem.free_table(table);
        self.tables = self.tables.saturating_sub(1);
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
        Mappings {
            table: self,
            next_va: Some(0),
            pending: None,
        }
    }

    /// The first leaf at or after `va` (which is leaf-aligned), as (va, pa, size, attrs).
    fn leaf_from(
        &self,
        table: PhysAddr,
        level: Level,
        va: u64,
    ) -> Result<Option<(u64, PhysAddr, u64, PageAttrs)>, CorruptDescriptor> {
        let level_end = if level == self.start {
            self.va_size()
        } else {
            let span = level.entry_bytes() * u64::from(ENTRIES);
            (va & !(span - 1)) + span
        };
        let mut cur = va;
        while cur < level_end {
            let (entry_start, entry_end) = entry_bounds(level, cur);
            let raw = self.mem.read_descriptor(table, TableIndex::of(level, cur));
            match Descriptor::decode(level, raw)? {
                Descriptor::Invalid => {}
                Descriptor::Leaf { output, attrs } => {
                    return Ok(Some((entry_start, output, entry_end - entry_start, attrs)));
                }
                Descriptor::Table { next } => {
                    let next_level = level.next().ok_or(CorruptDescriptor { level, raw })?;
                    if let Some(found) = self.leaf_from(next, next_level, cur)? {
                        return Ok(Some(found));
                    }
                }
            }
            cur = entry_end;
        }
        Ok(None)
    }
}

/// The 4 KiB pages of `[va, end)` (inside one leaf table) in chunks of up to [`CHUNK`],
/// for bulk reads and writes: each chunk's first VA and its page count.
fn leaf_chunks(va: u64, end: u64) -> impl Iterator<Item = (u64, usize)> {
    let page = MIN_PAGE.get();
    let pages = usize::try_from((end - va) / page).unwrap_or(0);
    (0..pages)
        .step_by(CHUNK)
        .map(move |first| (va + first as u64 * page, (pages - first).min(CHUNK)))
}

/// The `[start, end)` of the entry at `level` that holds `va`.
fn entry_bounds(level: Level, va: u64) -> (u64, u64) {
    let start = va & !(level.entry_bytes() - 1);
    // VAs are below 2^48, so this cannot overflow.
    (start, start + level.entry_bytes())
}

/// Iterator returned by [`PageTable::mappings`].
pub struct Mappings<'a, M: TableMemory> {
    table: &'a PageTable<M>,
    next_va: Option<u64>,
    pending: Option<Mapping>,
}

impl<M: TableMemory> Iterator for Mappings<'_, M> {
    type Item = Result<Mapping, CorruptDescriptor>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(va) = self.next_va else {
                return self.pending.take().map(Ok);
            };
            let found = match self.table.leaf_from(self.table.root, self.table.start, va) {
                Ok(found) => found,
                Err(corrupt) => {
                    self.next_va = None;
                    self.pending = None;
                    return Some(Err(corrupt));
                }
            };
            let Some((leaf_va, pa, size, attrs)) = found else {
                self.next_va = None;
                continue;
            };
            self.next_va = Some(leaf_va + size).filter(|&v| v < self.table.va_size());
            match &mut self.pending {
                Some(run)
                    if run.va.get() + run.size == leaf_va
                        && run.pa.get() + run.size == pa.get()
                        && run.attrs == attrs =>
                {
                    run.size += size;
                }
                _ => {
                    let leaf = Mapping {
                        va: GpuVa::new(leaf_va),
                        pa,
                        size,
                        attrs,
                    };
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
    use crate::profile::{ADRENO_6XX, VGPU};
    use crate::table_pool::TablePool;
    use std::vec::Vec;

    type Pool = TablePool<16>;

    const M2: u64 = 2 << 20;
    const G1: u64 = 1 << 30;

    fn table(profile: &GpuProfile) -> PageTable<Pool> {
        let pool = Pool::new(PhysAddr::new(0x100_0000)).expect("pool");
        PageTable::new(pool, profile).expect("root")
    }

    fn rw() -> MapFlags {
        MapFlags::default()
    }

    fn page_at(pt: &PageTable<Pool>, va: u64) -> (u64, PageSize) {
        let t = pt.translate(GpuVa::new(va)).expect("mapped");
        (t.pa.get(), t.page)
    }

    #[test]
    fn aligned_ranges_use_the_largest_block_the_profile_allows() {
        let mut mali = table(&VGPU);
        mali.map(GpuVa::new(G1), PhysAddr::new(4 * G1), G1, rw())
            .expect("map");
        // Mali has no 1 GiB blocks: 512 2 MiB blocks under one level-2 table.
        assert_eq!(
            page_at(&mali, G1 + 0x1234),
            (4 * G1 + 0x1234, PageSize::Size2M)
        );
        assert_eq!(mali.table_pages(), 3);

        let mut adreno = table(&ADRENO_6XX);
        adreno
            .map(GpuVa::new(G1), PhysAddr::new(4 * G1), G1, rw())
            .expect("map");
        assert_eq!(page_at(&adreno, 2 * G1 - 8), (5 * G1 - 8, PageSize::Size1G));
        assert_eq!(adreno.table_pages(), 2);

        // PA only 4 KiB aligned: pages throughout, even where VA and size allow blocks.
        let mut odd = table(&VGPU);
        odd.map(GpuVa::new(0), PhysAddr::new(0x1000), 2 * M2, rw())
            .expect("map");
        assert_eq!(page_at(&odd, M2), (M2 + 0x1000, PageSize::Size4K));
        assert_eq!(odd.table_pages(), 5);
    }

    #[test]
    fn a_range_mixes_pages_and_blocks_at_its_edges() {
        let mut pt = table(&VGPU);
        let va = M2 - 0x1000;
        pt.map(GpuVa::new(va), PhysAddr::new(va), M2 + 0x2000, rw())
            .expect("map");
        assert_eq!(page_at(&pt, va).1, PageSize::Size4K);
        assert_eq!(page_at(&pt, M2).1, PageSize::Size2M);
        assert_eq!(page_at(&pt, 2 * M2).1, PageSize::Size4K);
        let runs: Vec<_> = pt.mappings().collect::<Result<_, _>>().expect("walk");
        assert_eq!(
            runs.len(),
            1,
            "contiguous leaves merge into one run: {runs:?}"
        );
        assert_eq!((runs[0].va.get(), runs[0].size), (va, M2 + 0x2000));
    }

    #[test]
    fn unmapping_half_a_block_splits_it() {
        let mut pt = table(&VGPU);
        pt.map(GpuVa::new(M2), PhysAddr::new(8 * M2), M2, rw())
            .expect("map");
        let tables = pt.table_pages();
        let inv = pt.unmap(GpuVa::new(M2), M2 / 2).expect("unmap");
        assert_eq!(
            (inv.va.get(), inv.size),
            (M2, M2),
            "invalidate covers the split block"
        );
        assert_eq!(pt.table_pages(), tables + 1);
        assert_eq!(
            pt.translate(GpuVa::new(M2)),
            Err(TranslateError::NotMapped { va: GpuVa::new(M2) })
        );
        assert_eq!(
            page_at(&pt, M2 + M2 / 2 + 0x10),
            (8 * M2 + M2 / 2 + 0x10, PageSize::Size4K)
        );
        // Unmapping the rest frees the split table and the tables above it.
        let _ = pt.unmap(GpuVa::new(M2 + M2 / 2), M2 / 2).expect("unmap");
        assert_eq!(pt.table_pages(), 1);
        assert_eq!(pt.destroy().live(), 0);
    }

    #[test]
    fn cutting_a_1g_block_at_a_4k_boundary_splits_twice_per_end() {
        let mut pt = table(&ADRENO_6XX);
        pt.map(GpuVa::new(G1), PhysAddr::new(G1), G1, rw())
            .expect("map");
        let inv = pt
            .unmap(GpuVa::new(G1 + M2 + 0x1000), 0x2000)
            .expect("unmap");
        assert_eq!((inv.va.get(), inv.size), (G1, G1));
        // root, level 1, one split 1G -> 2M table, one split 2M -> 4K table.
        assert_eq!(pt.table_pages(), 4);
        assert_eq!(page_at(&pt, G1 + M2), (G1 + M2, PageSize::Size4K));
        assert_eq!(
            page_at(&pt, G1 + M2 + 0x3000),
            (G1 + M2 + 0x3000, PageSize::Size4K)
        );
        assert_eq!(page_at(&pt, G1 + 2 * M2), (G1 + 2 * M2, PageSize::Size2M));
        assert!(pt.translate(GpuVa::new(G1 + M2 + 0x1fff)).is_err());
        // A range whose two ends cut two different 2 MiB blocks of one 1 GiB block.
        let mut pt = table(&ADRENO_6XX);
        pt.map(GpuVa::new(0), PhysAddr::new(0), G1, rw())
            .expect("map");
        let _ = pt.unmap(GpuVa::new(0x1000), 4 * M2).expect("unmap");
        assert_eq!(pt.table_pages(), 5);
    }

    #[test]
    fn bad_arguments_name_the_bad_value() {
        let mut pt = table(&VGPU);
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
            pt.map(va, PhysAddr::new(0x10), 0x1000, rw()),
            Err(MapError::MisalignedPa {
                pa: PhysAddr::new(0x10)
            })
        );
        assert_eq!(
            pt.map(va, pa, 0x1001, rw()),
            Err(MapError::MisalignedSize { size: 0x1001 })
        );
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
        let high = PhysAddr::new((1 << 40) - 0x1000);
        assert_eq!(
            pt.map(va, high, 0x2000, rw()),
            Err(MapError::PaOutOfRange {
                pa: high,
                size: 0x2000,
                oa_bits: 40
            })
        );
        pt.map(GpuVa::new(0x3000), pa, 0x1000, rw()).expect("map");
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
            pt.translate(GpuVa::new(1 << 48)),
            Err(TranslateError::VaOutOfRange {
                va: GpuVa::new(1 << 48),
                va_bits: 48
            })
        );
        // Failed calls changed nothing.
        assert_eq!(pt.table_pages(), 4);
        assert_eq!(page_at(&pt, 0x3000), (0x1000, PageSize::Size4K));
    }

    #[test]
    fn running_out_of_table_memory_changes_nothing() {
        // Root plus two tables: enough for one 2 MiB block, not for a 4 KiB page elsewhere.
        let pool = TablePool::<3>::new(PhysAddr::new(0)).expect("pool");
        let mut pt = PageTable::new(pool, &VGPU).expect("root");
        pt.map(GpuVa::new(0), PhysAddr::new(0), M2, rw())
            .expect("block fits");
        // Needs a level-3 table after the block, plus tables for the far VA.
        let before: Vec<_> = pt.mappings().collect();
        assert_eq!(
            pt.map(GpuVa::new(M2), PhysAddr::new(M2), M2 + 0x1000, rw()),
            Err(MapError::OutOfTableMemory)
        );
        assert_eq!(
            pt.map(GpuVa::new(1 << 40), PhysAddr::new(0), 0x1000, rw()),
            Err(MapError::OutOfTableMemory)
        );
        assert_eq!(
            pt.unmap(GpuVa::new(0x1000), 0x1000),
            Err(UnmapError::OutOfTableMemory)
        );
        assert_eq!(pt.mappings().collect::<Vec<_>>(), before);
        assert_eq!(pt.table_pages(), 3);
        assert_eq!(pt.memory().live(), 3);
        // The map that failed part-way had mapped the first 2 MiB block: it was rolled back.
        assert!(pt.translate(GpuVa::new(M2)).is_err());
    }

    #[test]
    fn a_corrupt_descriptor_is_reported_not_followed() {
        let mut pt = table(&VGPU);
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
        let mut pt = table(&VGPU);
        // Pages 0-2 contiguous, page 3 elsewhere, pages 4-5 contiguous again.
        pt.map(GpuVa::new(0), PhysAddr::new(0x10_0000), 0x3000, rw())
            .expect("map");
        pt.map(GpuVa::new(0x3000), PhysAddr::new(0x50_0000), 0x1000, rw())
            .expect("map");
        pt.map(GpuVa::new(0x4000), PhysAddr::new(0x50_1000), 0x2000, rw())
            .expect("map");
        fn run(pt: &PageTable<Pool>, va: u64, max: u64) -> (u64, u64) {
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

    #[test]
    fn flags_reach_the_leaf() {
        let mut pt = table(&VGPU);
        let flags = MapFlags {
            access: Access::ReadOnly,
            executable: true,
            attr_index: AttrIndex::new(2).expect("index"),
            shareability: Shareability::OuterShareable,
            privileged: false,
        };
        pt.map(GpuVa::new(0x5000), PhysAddr::new(0x9000), 0x1000, flags)
            .expect("map");
        let t = pt.translate(GpuVa::new(0x5000)).expect("mapped");
        assert_eq!(t.attrs, flags.attrs());
        assert_eq!(t.attrs.access, Access::ReadOnly);
        assert!(!t.attrs.execute_never && t.attrs.access_flag && t.attrs.unprivileged);
    }
}
