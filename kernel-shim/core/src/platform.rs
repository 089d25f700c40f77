//! What the core needs from its host: table pages, physical memory access and the memory
//! of GEM objects.
//!
//! In the kernel these are the `extmem_plat_*` callbacks of `extmem_kcore.h` (see the
//! `ffi` module); host tests use a fake whose "physical memory" is a map of 4 KiB pages.
//! Every method takes `&self`: the kernel platform is an opaque pointer, and the page
//! tables own a copy of it (through [`PlatformTables`]) while the copy engine and the
//! binding code call it too.

use extmem_hw::page_table::ENTRIES;
use extmem_hw::{PhysAddr, TableIndex, TableMemory};

/// A GEM object as the C glue names it: an opaque cookie (the `struct drm_gem_object`
/// pointer) that the core stores and hands back, never dereferences.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[repr(transparent)]
pub struct ObjectId(pub u64);

/// A physically contiguous run of an object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Segment {
    /// Physical address of the byte asked for.
    pub pa: PhysAddr,
    /// Bytes of the object that follow from there in this run (`> 0`, page-aligned).
    pub len: u64,
}

/// Why [`Platform::object_segment`] gave no segment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SegmentError {
    /// The offset is past the end of the object (`-ERANGE` from the platform).
    PastEnd,
    /// Any other failure, with the (positive) errno the platform returned.
    Failed {
        /// The platform's errno.
        errno: i32,
    },
}

/// The platform refused a copy-engine access: a physical address is not RAM the device
/// may touch (`-EFAULT` from the platform).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MemoryFault;

/// The host of the core.
///
/// Implementations must not panic for any argument.
pub trait Platform {
    /// A zeroed, 4 KiB-aligned page for a page table, or `None` when none is left.
    fn alloc_table(&self) -> Option<PhysAddr>;
    /// Gives back a page from [`Platform::alloc_table`].
    fn free_table(&self, table: PhysAddr);
    /// The 64-bit word at `pa`, inside a page from [`Platform::alloc_table`].
    fn read_u64(&self, pa: PhysAddr) -> u64;
    /// Writes the 64-bit word at `pa`, inside a page from [`Platform::alloc_table`].
    fn write_u64(&self, pa: PhysAddr, value: u64);
    /// Reads `out.len()` consecutive words from `pa`, all inside one page from
    /// [`Platform::alloc_table`]: a table scan in one call. The default reads them one by one.
    fn read_u64s(&self, pa: PhysAddr, out: &mut [u64]) {
        for (word, offset) in out.iter_mut().zip((0..).step_by(8)) {
            *word = pa.checked_add(offset).map_or(0, |at| self.read_u64(at));
        }
    }
    /// Writes `values` to consecutive words from `pa`, all inside one page from
    /// [`Platform::alloc_table`]. The default writes them one by one.
    fn write_u64s(&self, pa: PhysAddr, values: &[u64]) {
        for (&value, offset) in values.iter().zip((0..).step_by(8)) {
            if let Some(at) = pa.checked_add(offset) {
                self.write_u64(at, value);
            }
        }
    }
    /// Copies `len` bytes; neither range crosses a 4 KiB page boundary.
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemoryFault>;
    /// Fills `len` bytes (a multiple of 4, `dst` 4-aligned) with the little-endian
    /// `value`; the range does not cross a 4 KiB page boundary.
    fn fill(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), MemoryFault>;
    /// The contiguous run of `object` that holds byte `offset`.
    fn object_segment(&self, object: ObjectId, offset: u64) -> Result<Segment, SegmentError>;
    /// A binding that held `object` is gone.
    fn object_unbound(&self, object: ObjectId);
}

impl<T: Platform + ?Sized> Platform for &T {
    fn alloc_table(&self) -> Option<PhysAddr> {
        (**self).alloc_table()
    }
    fn free_table(&self, table: PhysAddr) {
        (**self).free_table(table);
    }
    fn read_u64(&self, pa: PhysAddr) -> u64 {
        (**self).read_u64(pa)
    }
    fn write_u64(&self, pa: PhysAddr, value: u64) {
        (**self).write_u64(pa, value);
    }
    fn read_u64s(&self, pa: PhysAddr, out: &mut [u64]) {
        (**self).read_u64s(pa, out);
    }
    fn write_u64s(&self, pa: PhysAddr, values: &[u64]) {
        (**self).write_u64s(pa, values);
    }
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemoryFault> {
        (**self).copy(dst, src, len)
    }
    fn fill(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), MemoryFault> {
        (**self).fill(dst, value, len)
    }
    fn object_segment(&self, object: ObjectId, offset: u64) -> Result<Segment, SegmentError> {
        (**self).object_segment(object, offset)
    }
    fn object_unbound(&self, object: ObjectId) {
        (**self).object_unbound(object);
    }
}

/// The platform's table pages as the [`TableMemory`] of an `extmem_hw::PageTable`.
#[derive(Clone, Copy, Debug)]
pub struct PlatformTables<P> {
    platform: P,
}

impl<P: Platform> PlatformTables<P> {
    /// Table memory from `platform`.
    pub const fn new(platform: P) -> Self {
        Self { platform }
    }

    /// The platform, for the calls that are not about tables.
    pub fn platform(&self) -> &P {
        &self.platform
    }
}

impl<P: Platform> TableMemory for PlatformTables<P> {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        self.platform.alloc_table()
    }

    fn free_table(&mut self, table: PhysAddr) {
        self.platform.free_table(table);
    }

    fn read_descriptor(&self, table: PhysAddr, index: TableIndex) -> u64 {
        // A table the platform handed out never sits at the top of the address space; a
        // corrupt one that would wrap reads as invalid, as the trait asks.
        match table.checked_add(index.byte_offset()) {
            Some(pa) => self.platform.read_u64(pa),
            None => 0,
        }
    }

    fn write_descriptor(&mut self, table: PhysAddr, index: TableIndex, raw: u64) {
        if let Some(pa) = table.checked_add(index.byte_offset()) {
            self.platform.write_u64(pa, raw);
        }
    }

    fn read_descriptors(&self, table: PhysAddr, first: TableIndex, out: &mut [u64]) {
        let left = usize::from(ENTRIES).saturating_sub(first.get());
        let len = out.len().min(left);
        if let (Some(pa), Some(out)) = (table.checked_add(first.byte_offset()), out.get_mut(..len))
        {
            self.platform.read_u64s(pa, out);
        }
    }

    fn write_descriptors(&mut self, table: PhysAddr, first: TableIndex, raws: &[u64]) {
        let left = usize::from(ENTRIES).saturating_sub(first.get());
        let len = raws.len().min(left);
        if let (Some(pa), Some(raws)) = (table.checked_add(first.byte_offset()), raws.get(..len)) {
            self.platform.write_u64s(pa, raws);
        }
    }
}
