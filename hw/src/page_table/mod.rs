//! Page-table operations over any [`TableMemory`].
//!
//! The same code runs on a host fake, in the kernel (tables in pages the module allocates)
//! and on Cortex-M (a static [`TablePool`](crate::TablePool)).
//!
//! - [`map`](PageTable::map) and [`map_runs`](PageTable::map_runs) write leaves (`map`,
//!   `runs`); [`unmap`](PageTable::unmap) clears them, splitting the blocks it cuts
//!   (`unmap`); [`translate`](PageTable::translate) and [`mappings`](PageTable::mappings)
//!   read them (`walk`); each fails with its own error enum (`errors`).
//!
//! # Invariants kept between operations
//! - Every table other than the root holds at least one valid descriptor: a table that
//!   becomes empty is freed and its parent entry cleared.
//! - A table page is linked into its parent only after everything below it is written, so a
//!   walker never sees a half-built subtree.
//! - A failed [`PageTable::map`] or [`PageTable::unmap`] leaves the tables as they were.

use crate::addr::{range_end, GpuVa, PhysAddr};
use crate::descriptor::{Access, AttrIndex, Descriptor, Level, PageAttrs, Shareability};
use crate::page_size::{PageSize, PageSizes};
use crate::profile::{GpuProfile, MIN_PAGE};

mod errors;
mod map;
mod runs;
mod unmap;
mod walk;

pub use errors::{MapError, TranslateError, UnmapError};
pub use runs::{MapRunsError, Run};
pub use walk::{LeafTable, Mappings};

use errors::RangeError;
use unmap::{BlockTables, SplitReserve};

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
    /// A 4 KiB-aligned table page whose contents may be anything, for a caller that
    /// writes every one of its entries before it links the table where a walker (or the
    /// GPU) could see it, and frees it unread if it cannot. A map that fills a whole
    /// table this way writes its 4 KiB once instead of zeroing it first. The default is
    /// [`TableMemory::alloc_table`]; memory that zeroes its pages anyway need not change it.
    fn alloc_table_to_fill(&mut self) -> Option<PhysAddr> {
        self.alloc_table()
    }
    /// Gives back a page from [`TableMemory::alloc_table`] or
    /// [`TableMemory::alloc_table_to_fill`].
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

    /// The descriptors of the table at `table`, in place, where the memory can lend them
    /// (a kernel's direct map, a static pool); `None` (the default) for memory reached
    /// only through the calls above. With them, map writes and unmap scans work on the
    /// entries themselves: per descriptor, a store or a load instead of a call that finds
    /// the table again, so the cost of a large map approaches that of writing its
    /// descriptors.
    fn entries(&self, table: PhysAddr) -> Option<&Entries> {
        let _ = table;
        None
    }

    /// [`TableMemory::entries`], writable.
    fn entries_mut(&mut self, table: PhysAddr) -> Option<&mut Entries> {
        let _ = table;
        None
    }
}

/// The 512 raw descriptors of one table, as [`TableMemory::entries`] lends them.
pub type Entries = [u64; ENTRIES as usize];

/// Table memory can be lent: a `PageTable` over `&mut M` leaves `M` with its owner (on
/// a small stack, a pool moved by value is copied).
impl<M: TableMemory> TableMemory for &mut M {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        (**self).alloc_table()
    }

    fn alloc_table_to_fill(&mut self) -> Option<PhysAddr> {
        (**self).alloc_table_to_fill()
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

    fn entries(&self, table: PhysAddr) -> Option<&Entries> {
        (**self).entries(table)
    }

    fn entries_mut(&mut self, table: PhysAddr) -> Option<&mut Entries> {
        (**self).entries_mut(table)
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

    /// The end of `[va, va + size)` once it is checked to be a non-empty, 4 KiB-aligned
    /// range inside the VA space (map and unmap refuse the same ranges).
    fn checked_va_range(&self, va: GpuVa, size: u64) -> Result<u64, RangeError> {
        if size == 0 {
            return Err(RangeError::ZeroSize);
        }
        if !va.is_aligned(MIN_PAGE) {
            return Err(RangeError::MisalignedVa { va });
        }
        if !MIN_PAGE.is_aligned(size) {
            return Err(RangeError::MisalignedSize { size });
        }
        match range_end(va.get(), size) {
            Some(end) if end <= self.va_size() => Ok(end),
            _ => Err(RangeError::VaOutOfRange {
                va,
                size,
                va_bits: self.va_bits,
            }),
        }
    }

    /// Frees `table` (at `level`) and every table below it.
    fn free_subtree(&mut self, table: PhysAddr, level: Level) {
        if let Some(next_level) = level.next() {
            if self.mem.entries(table).is_some() {
                self.free_tables_below(table, level, next_level);
                self.mem.free_table(table);
                self.tables = self.tables.saturating_sub(1);
                return;
            }
            // A chunk per call, not a call per descriptor: most entries are zero (or
            // leaves) and need no more than a look.
            let mut buf = [0u64; CHUNK];
            for first in (0..ENTRIES).step_by(CHUNK) {
                self.mem
                    .read_descriptors(table, TableIndex(first), &mut buf);
                for &raw in buf.iter().filter(|&&raw| raw != 0) {
                    if let Ok(Descriptor::Table { next }) = Descriptor::decode(level, raw) {
                        self.free_subtree(next, next_level);
                    }
                }
            }
        }
        self.mem.free_table(table);
        self.tables = self.tables.saturating_sub(1);
    }
}

impl<M: TableMemory> PageTable<M> {
    /// Frees the subtrees under the table entries of `table` (at `level`, whose entries
    /// the memory lends): finds each next table descriptor in place with a test of its two
    /// type bits (blocks and invalid entries are skipped without a decode), then decodes
    /// that one entry as `free_subtree` does. (`kind` is the type bits of a table
    /// descriptor; level 0 to 2 always encode one.)
    fn free_tables_below(&mut self, table: PhysAddr, level: Level, next_level: Level) {
        let kind = Descriptor::Table {
            next: PhysAddr::ZERO,
        }
        .encode(level)
        .unwrap_or(u64::MAX);
        let mut from = 0;
        while let Some((index, raw)) = self.mem.entries(table).and_then(|entries| {
            let rest = entries.get(from..)?;
            let offset = first_nonzero(rest, |_, raw| u64::from(raw & kind == kind))?;
            Some((from + offset, rest.get(offset).copied()?))
        }) {
            if let Ok(Descriptor::Table { next }) = Descriptor::decode(level, raw) {
                self.free_subtree(next, next_level);
            }
            from = index + 1;
        }
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

/// The index of the first of `entries` for which `miss(index, raw)` is non-zero, or `None`.
///
/// [`CHUNK`] entries at a time, OR-ing their values without a branch or a comparison
/// (it vectorises), and entry by entry only inside the chunk that has one. Table scans
/// are mostly runs of entries that all pass (zeros, or leaves that continue each other):
/// this costs one test per chunk instead of one per entry, and in the fuzz targets'
/// builds, where every comparison is traced, it is most of a walk's time saved.
fn first_nonzero(entries: &[u64], miss: impl Fn(usize, u64) -> u64) -> Option<usize> {
    let mut base = 0;
    for chunk in entries.chunks_exact(CHUNK) {
        let found = (base..)
            .zip(chunk)
            .fold(0, |found, (index, &raw)| found | miss(index, raw));
        if found != 0 {
            break;
        }
        base += CHUNK;
    }
    let offset = (base..)
        .zip(entries.get(base..)?)
        .position(|(index, &raw)| miss(index, raw) != 0)?;
    Some(base + offset)
}

/// The `[start, end)` of the entry at `level` that holds `va`.
fn entry_bounds(level: Level, va: u64) -> (u64, u64) {
    let start = va & !(level.entry_bytes() - 1);
    // VAs are below 2^48, so this cannot overflow.
    (start, start + level.entry_bytes())
}
