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

/// A [`Platform::copy_run`] or [`Platform::fill_run`] stopped at a fault after moving
/// `done` bytes, the run's [`page_chunks`] before the one that faulted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RunFault {
    /// Bytes copied before the fault, from the start of the run.
    pub done: u64,
}

/// The pieces of a copy of `len` bytes from `src` to `dst` that cross no 4 KiB page on
/// either side, front to back, as `(offset, len)`: the pieces [`Platform::copy`] takes.
pub fn page_chunks(dst: PhysAddr, src: PhysAddr, len: u64) -> impl Iterator<Item = (u64, u64)> {
    const PAGE: u64 = extmem_hw::profile::MIN_PAGE.get();
    let mut offset = 0u64;
    core::iter::from_fn(move || {
        let left = len.checked_sub(offset).filter(|left| *left > 0)?;
        let (s, d) = (
            src.get().wrapping_add(offset),
            dst.get().wrapping_add(offset),
        );
        let chunk = left.min(PAGE - s % PAGE).min(PAGE - d % PAGE);
        let at = offset;
        offset = offset.saturating_add(chunk);
        Some((at, chunk))
    })
}

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
    /// Copies `len` bytes between two physically contiguous ranges that may cross pages,
    /// with the effect of [`Platform::copy`] on each of their [`page_chunks`] in turn.
    /// The copy engine calls it once for each stretch where both sides stay contiguous,
    /// so that a platform whose every access has a fixed cost (the software device's
    /// system call on imported host memory) can move the stretch at once. The default
    /// copies chunk by chunk; the kernel glue moves the stretch through its linear map.
    fn copy_run(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), RunFault> {
        for (offset, chunk) in page_chunks(dst, src, len) {
            let (Some(to), Some(from)) = (dst.checked_add(offset), src.checked_add(offset)) else {
                return Err(RunFault { done: offset });
            };
            self.copy(to, from, chunk)
                .map_err(|MemoryFault| RunFault { done: offset })?;
        }
        Ok(())
    }
    /// Fills `len` bytes (a multiple of 4, `dst` 4-aligned) with the little-endian
    /// `value`; the range does not cross a 4 KiB page boundary.
    fn fill(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), MemoryFault>;
    /// Fills `len` bytes of one physically contiguous range that may cross pages (`len` a
    /// multiple of 4, `dst` 4-aligned), with the effect of [`Platform::fill`] on each of its
    /// 4 KiB pieces in turn; a fault reports the bytes filled before the piece that
    /// faulted. The copy engine calls it once per contiguous stretch, as it does
    /// [`Platform::copy_run`]. The default fills piece by piece.
    fn fill_run(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), RunFault> {
        for (offset, chunk) in page_chunks(dst, dst, len) {
            let Some(to) = dst.checked_add(offset) else {
                return Err(RunFault { done: offset });
            };
            self.fill(to, value, chunk)
                .map_err(|MemoryFault| RunFault { done: offset })?;
        }
        Ok(())
    }
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
    fn copy_run(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), RunFault> {
        (**self).copy_run(dst, src, len)
    }
    fn fill(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), MemoryFault> {
        (**self).fill(dst, value, len)
    }
    fn fill_run(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), RunFault> {
        (**self).fill_run(dst, value, len)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn page_chunks_stop_at_every_page_boundary_of_either_side() {
        let chunks =
            |dst, src, len| page_chunks(PhysAddr::new(dst), PhysAddr::new(src), len).collect();
        let got: Vec<(u64, u64)> = chunks(0x2ffe, 0x1ff3, 0x1010);
        // Boundaries: destination after 2 bytes, source after 0xd, destination after
        // 0x1002, source after 0x100d.
        assert_eq!(
            got,
            [(0, 2), (2, 0xb), (0xd, 0xff5), (0x1002, 0xb), (0x100d, 3)]
        );
        let aligned: Vec<(u64, u64)> = chunks(0x4000, 0x8000, 0x2000);
        assert_eq!(aligned, [(0, 0x1000), (0x1000, 0x1000)]);
        assert_eq!(chunks(0x4000, 0x8000, 0), Vec::<(u64, u64)>::new());
    }
}
