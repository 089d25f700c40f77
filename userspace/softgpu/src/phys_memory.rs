//! The software device's "physical" memory: the [`Platform`] that hosts extmem-kcore.
//!
//! The kernel platform hands kcore real physical addresses. Here there is no physical
//! memory to name, so the device makes up a physical address space of `oa_bits` (the
//! profile's output-address width) and places in it, each at its own 4 KiB-aligned range:
//!
//! - **table pages**: 4 KiB boxes in process memory, which kcore's page tables live in;
//! - **objects**: device memory (a memfd the device has mapped) and host-pointer imports
//!   (the application's own addresses), each one physically contiguous.
//!
//! The copy engine walks the page tables to a physical address, and [`PhysMemory`] turns it
//! back into process memory: device memory is copied directly; imported host memory only
//! through [`host_access`], which fails cleanly on a page the
//! application has unmapped. A physical address that names nothing is a [`MemoryFault`].
//!
//! Ranges are handed out by the same allocator that hands out GPU VA
//! ([`VaAllocator`]): objects of 2 MiB and more get 2 MiB-aligned ranges, so a
//! 2 MiB-aligned binding of one is mapped with blocks, as contiguous memory is on the
//! kernel device.
//!
//! An object lives while a GEM handle or a binding holds it: kcore reports every binding
//! it drops through [`Platform::object_unbound`], as it does to the kernel glue.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use extmem::va_allocator::VaAllocator;
use extmem_hw::{Alignment, GpuProfile, GpuVa, PhysAddr};
use extmem_kcore::{MemoryFault, ObjectId, Platform, Segment, SegmentError};

use crate::host_access;
use crate::shared_memory::{Identity, SharedMemory};

/// 4 KiB: a table page, and the most one copy-engine access touches.
const PAGE: usize = 4096;
/// Descriptors in a table page.
const WORDS: usize = PAGE / 8;
/// Physical addresses start here, so that 0 and small values never name memory.
const PA_START: u64 = 1 << 21;

/// What an object's bytes are.
#[derive(Debug)]
pub enum Backing {
    /// Device memory: a sealed memfd (a section on Windows), created here or imported.
    Device(SharedMemory),
    /// The application's memory at `addr`, imported by host pointer.
    Host {
        /// The application's pointer.
        addr: u64,
        /// Whether the GPU may only read it.
        read_only: bool,
    },
}

/// One object: its place in the physical address space and what holds it.
#[derive(Debug)]
pub struct Object {
    /// First physical address.
    pub pa: u64,
    /// Size in bytes (a multiple of 4 KiB).
    pub size: u64,
    /// Its bytes.
    pub backing: Backing,
    /// GEM handles naming it (0 or 1: an import of the same memory reuses the handle).
    handles: u32,
    /// Bindings in the VM that map it.
    bindings: u32,
}

impl Object {
    /// Whether the GPU may only read it.
    pub fn read_only(&self) -> bool {
        matches!(
            self.backing,
            Backing::Host {
                read_only: true,
                ..
            }
        )
    }
}

#[derive(Debug)]
struct State {
    space: VaAllocator,
    tables: BTreeMap<u64, Box<[u64; WORDS]>>,
    /// First physical address of each object.
    frames: BTreeMap<u64, ObjectId>,
    objects: BTreeMap<ObjectId, Object>,
    next_id: u64,
}

/// Where a physical address leads.
enum Target {
    /// Memory the device mapped itself.
    Direct(*mut u8),
    /// An imported host address.
    Host(u64),
}

impl State {
    fn resolve(&self, pa: PhysAddr) -> Result<Target, MemoryFault> {
        let pa = pa.get();
        let (&start, id) = self.frames.range(..=pa).next_back().ok_or(MemoryFault)?;
        let object = self.objects.get(id).ok_or(MemoryFault)?;
        let offset = pa - start;
        if offset >= object.size {
            return Err(MemoryFault);
        }
        match &object.backing {
            Backing::Device(memory) => {
                let at = usize::try_from(offset).map_err(|_| MemoryFault)?;
                if at >= memory.mapping().len() {
                    return Err(MemoryFault);
                }
                // SAFETY: `at` is inside the device's live mapping (checked just above).
                Ok(Target::Direct(unsafe {
                    memory.mapping().ptr().as_ptr().add(at)
                }))
            }
            Backing::Host { addr, .. } => addr
                .checked_add(offset)
                .map(Target::Host)
                .ok_or(MemoryFault),
        }
    }

    fn table_word(&self, pa: PhysAddr) -> Option<(u64, usize)> {
        let pa = pa.get();
        let page = pa & !(PAGE as u64 - 1);
        let offset = usize::try_from(pa - page).ok()?;
        (offset % 8 == 0).then_some((page, offset / 8))
    }

    fn release_if_unheld(&mut self, id: ObjectId) {
        let unheld = self
            .objects
            .get(&id)
            .is_some_and(|o| o.handles == 0 && o.bindings == 0);
        if unheld {
            if let Some(object) = self.objects.remove(&id) {
                self.frames.remove(&object.pa);
                let _ = self.space.free(GpuVa::new(object.pa));
            }
        }
    }
}

/// The software device's memory; clones share it (the VM holds one for its callbacks).
#[derive(Clone, Debug)]
pub struct PhysMemory {
    state: Arc<Mutex<State>>,
}

impl PhysMemory {
    /// An empty physical address space of `profile.oa_bits`.
    pub fn new(profile: &GpuProfile) -> Self {
        let end = 1u64 << profile.oa_bits;
        let state = State {
            space: VaAllocator::new(GpuVa::new(PA_START), GpuVa::new(end), profile.page_sizes),
            tables: BTreeMap::new(),
            frames: BTreeMap::new(),
            objects: BTreeMap::new(),
            next_id: 1,
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The state; a panic elsewhere cannot leave it half-changed (every change is one
    /// map operation), so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Places a new object of `size` bytes (a non-zero multiple of 4 KiB) held by one
    /// handle. `ENOMEM` when the address space is full.
    pub fn add_object(&self, backing: Backing, size: u64) -> Result<ObjectId, i32> {
        let mut s = self.lock();
        let pa = s
            .space
            .allocate(size, Alignment::SIZE_4K)
            .map_err(|_| extmem::backend::errno::ENOMEM)?
            .get();
        let id = ObjectId(s.next_id);
        s.next_id = s.next_id.saturating_add(1);
        s.frames.insert(pa, id);
        s.objects.insert(
            id,
            Object {
                pa,
                size,
                backing,
                handles: 1,
                bindings: 0,
            },
        );
        Ok(id)
    }

    /// Runs `f` on the object, if it exists.
    pub fn with_object<R>(&self, id: ObjectId, f: impl FnOnce(&Object) -> R) -> Option<R> {
        self.lock().objects.get(&id).map(f)
    }

    /// The object that holds device memory of this identity and has a handle, if any.
    pub fn find_device_memory(&self, identity: Identity) -> Option<ObjectId> {
        self.lock()
            .objects
            .iter()
            .find(|(_, o)| {
                o.handles > 0
                    && matches!(&o.backing, Backing::Device(m) if m.identity() == identity)
            })
            .map(|(id, _)| *id)
    }

    /// A handle to the object is closed; it goes when nothing holds it.
    pub fn close_handle(&self, id: ObjectId) {
        let mut s = self.lock();
        if let Some(o) = s.objects.get_mut(&id) {
            o.handles = o.handles.saturating_sub(1);
        }
        s.release_if_unheld(id);
    }

    /// A binding of the object was made.
    pub fn note_bound(&self, id: ObjectId) {
        if let Some(o) = self.lock().objects.get_mut(&id) {
            o.bindings = o.bindings.saturating_add(1);
        }
    }

    /// Live objects.
    pub fn objects(&self) -> usize {
        self.lock().objects.len()
    }

    /// Live table pages.
    pub fn table_pages(&self) -> usize {
        self.lock().tables.len()
    }
}

impl Platform for PhysMemory {
    fn alloc_table(&self) -> Option<PhysAddr> {
        let mut s = self.lock();
        let pa = s.space.allocate(PAGE as u64, Alignment::SIZE_4K).ok()?;
        s.tables.insert(pa.get(), Box::new([0; WORDS]));
        Some(PhysAddr::new(pa.get()))
    }

    fn free_table(&self, table: PhysAddr) {
        let mut s = self.lock();
        if s.tables.remove(&table.get()).is_some() {
            let _ = s.space.free(GpuVa::new(table.get()));
        }
    }

    fn read_u64(&self, pa: PhysAddr) -> u64 {
        let s = self.lock();
        s.table_word(pa)
            .and_then(|(page, index)| s.tables.get(&page)?.get(index).copied())
            .unwrap_or(0)
    }

    fn write_u64(&self, pa: PhysAddr, value: u64) {
        let mut s = self.lock();
        if let Some((page, index)) = s.table_word(pa) {
            if let Some(word) = s.tables.get_mut(&page).and_then(|t| t.get_mut(index)) {
                *word = value;
            }
        }
    }

    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemoryFault> {
        let n = usize::try_from(len).map_err(|_| MemoryFault)?;
        let mut bounce = [0u8; PAGE];
        let buf = bounce.get_mut(..n).ok_or(MemoryFault)?;
        let s = self.lock();
        match (s.resolve(src)?, s.resolve(dst)?) {
            // SAFETY: kcore's contract keeps both ranges inside one 4 KiB page, which
            // lies inside one object (objects are whole pages at page-aligned addresses),
            // whose mapping stays live while we hold the lock. The ranges may overlap:
            // `copy` is a memmove.
            (Target::Direct(from), Target::Direct(to)) => unsafe {
                core::ptr::copy(from, to, n);
            },
            (Target::Direct(from), Target::Host(to)) => {
                // SAFETY: as above for `from`; `buf` is our own buffer of `n` bytes.
                unsafe { core::ptr::copy_nonoverlapping(from, buf.as_mut_ptr(), n) };
                host_access::write(to, buf).map_err(|_| MemoryFault)?;
            }
            (Target::Host(from), Target::Direct(to)) => {
                host_access::read(from, buf).map_err(|_| MemoryFault)?;
                // SAFETY: as above for `to`.
                unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), to, n) };
            }
            (Target::Host(from), Target::Host(to)) => {
                host_access::read(from, buf).map_err(|_| MemoryFault)?;
                host_access::write(to, buf).map_err(|_| MemoryFault)?;
            }
        }
        Ok(())
    }

    fn fill(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), MemoryFault> {
        let n = usize::try_from(len).map_err(|_| MemoryFault)?;
        let mut pattern = [0u8; PAGE];
        let buf = pattern.get_mut(..n).ok_or(MemoryFault)?;
        for (byte, v) in buf.iter_mut().zip(value.to_le_bytes().iter().cycle()) {
            *byte = *v;
        }
        let s = self.lock();
        match s.resolve(dst)? {
            // SAFETY: as in `copy`: one page of one live object's mapping.
            Target::Direct(to) => unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), to, n) },
            Target::Host(to) => host_access::write(to, buf).map_err(|_| MemoryFault)?,
        }
        Ok(())
    }

    fn object_segment(&self, object: ObjectId, offset: u64) -> Result<Segment, SegmentError> {
        let s = self.lock();
        let o = s.objects.get(&object).ok_or(SegmentError::Failed {
            errno: extmem::backend::errno::ENOENT,
        })?;
        if offset >= o.size {
            return Err(SegmentError::PastEnd);
        }
        Ok(Segment {
            pa: PhysAddr::new(o.pa + offset),
            len: o.size - offset,
        })
    }

    fn object_unbound(&self, object: ObjectId) {
        let mut s = self.lock();
        if let Some(o) = s.objects.get_mut(&object) {
            o.bindings = o.bindings.saturating_sub(1);
        }
        s.release_if_unheld(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> PhysMemory {
        PhysMemory::new(&extmem_hw::profile::VGPU)
    }

    #[test]
    fn table_pages_are_zeroed_words_and_freed() {
        let m = memory();
        let t = m.alloc_table().unwrap_or_else(|| panic!("a table page"));
        assert_eq!(t.get() % 4096, 0);
        assert!(t.get() >= PA_START);
        let word = PhysAddr::new(t.get() + 8 * 5);
        assert_eq!(m.read_u64(word), 0);
        m.write_u64(word, 0xdead_beef);
        assert_eq!(m.read_u64(word), 0xdead_beef);
        // Misaligned words and addresses outside tables read as 0 and are not written.
        assert_eq!(m.read_u64(PhysAddr::new(t.get() + 3)), 0);
        m.write_u64(PhysAddr::new(0x1000), 1);
        assert_eq!(m.read_u64(PhysAddr::new(0x1000)), 0);
        m.free_table(t);
        m.free_table(t);
        assert_eq!(m.table_pages(), 0);
    }

    #[test]
    fn objects_are_contiguous_and_copies_reach_their_bytes() {
        let m = memory();
        let device = SharedMemory::create(2 << 20).unwrap_or_else(|e| panic!("errno {e}"));
        let a = m
            .add_object(Backing::Device(device), 2 << 20)
            .unwrap_or_else(|e| panic!("errno {e}"));
        let mut host = vec![0u8; 8192];
        let host_addr = host.as_mut_ptr() as u64;
        let b = m
            .add_object(
                Backing::Host {
                    addr: host_addr,
                    read_only: false,
                },
                8192,
            )
            .unwrap_or_else(|e| panic!("errno {e}"));
        let seg = |id, off| {
            m.object_segment(id, off)
                .unwrap_or_else(|e| panic!("{e:?}"))
        };
        let pa_a = seg(a, 0).pa;
        assert_eq!(
            pa_a.get() % (2 << 20),
            0,
            "2 MiB objects get block alignment"
        );
        assert_eq!(seg(a, 4096).len, (2 << 20) - 4096);
        assert_eq!(m.object_segment(a, 2 << 20), Err(SegmentError::PastEnd));
        let pa_b = seg(b, 0).pa;
        m.fill(pa_b, 0x0403_0201, 8)
            .unwrap_or_else(|_| panic!("fill"));
        assert_eq!(&host[..8], &[1, 2, 3, 4, 1, 2, 3, 4]);
        let at = |pa: PhysAddr, off| PhysAddr::new(pa.get() + off);
        m.copy(at(pa_a, 4096 + 16), pa_b, 8)
            .unwrap_or_else(|_| panic!("copy"));
        m.copy(at(pa_b, 4096), at(pa_a, 4096 + 12), 12)
            .unwrap_or_else(|_| panic!("copy"));
        assert_eq!(&host[4096..4108], &[0, 0, 0, 0, 1, 2, 3, 4, 1, 2, 3, 4]);
        // Nothing lives at the top of the space, or just past an object.
        assert_eq!(
            m.copy(pa_b, PhysAddr::new((1 << 40) - 4096), 4),
            Err(MemoryFault)
        );
        assert_eq!(m.fill(at(pa_b, 8192), 0, 4), Err(MemoryFault));
        // A bound object outlives its handle.
        m.note_bound(b);
        m.close_handle(b);
        assert_eq!(m.objects(), 2);
        m.object_unbound(b);
        m.close_handle(a);
        assert_eq!(m.objects(), 0);
        drop(host);
    }
}
