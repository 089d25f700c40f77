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
//! Ranges come from the device's own [`PhysAllocator`]: an object as large as a block the
//! profile maps (2 MiB, 1 GiB) gets a range aligned to that block, so a block-aligned
//! binding of it is mapped with blocks, as contiguous memory is on the kernel device.
//!
//! An object lives while a GEM handle or a binding holds it: kcore reports every binding
//! it drops through [`Platform::object_unbound`], as it does to the kernel glue.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use extmem_hw::profile::MIN_PAGE;
use extmem_hw::{Alignment, GpuProfile, HostVa, PageSize, PageSizes, PhysAddr};
use extmem_kcore::platform::page_chunks;
use extmem_kcore::{MemoryFault, ObjectId, Platform, RunFault, Segment, SegmentError};

use crate::host_access;
use crate::phys_allocator::{PhysAllocError, PhysAllocator};
use crate::shared_memory::{Identity, SharedMemory};

/// A table page in bytes, and the most one copy-engine access touches: the profile's
/// smallest page.
const PAGE_LEN: usize = 1 << MIN_PAGE.log2();
/// Descriptors in a table page.
const WORDS: usize = PAGE_LEN / core::mem::size_of::<u64>();
/// Physical addresses start here, so that 0 and small values never name memory.
const PA_START: PhysAddr = PhysAddr::new(Alignment::SIZE_2M.get());

/// What an object's bytes are.
#[derive(Debug)]
pub enum Backing {
    /// Device memory: a sealed memfd (a section on Windows), created here or imported.
    Device(SharedMemory),
    /// The application's memory at `addr`, imported by host pointer.
    Host {
        /// The application's pointer.
        addr: HostVa,
        /// Whether the GPU may only read it.
        read_only: bool,
    },
}

/// One object: its place in the physical address space and what holds it.
#[derive(Debug)]
pub struct Object {
    /// First physical address.
    pub pa: PhysAddr,
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
    space: PhysAllocator,
    /// The blocks the profile maps, which objects are aligned to.
    page_sizes: PageSizes,
    tables: BTreeMap<PhysAddr, Box<[u64; WORDS]>>,
    /// First physical address of each object.
    frames: BTreeMap<PhysAddr, ObjectId>,
    objects: BTreeMap<ObjectId, Object>,
    next_id: u64,
}

/// Where a physical address leads.
enum Target {
    /// Memory the device mapped itself.
    Direct(*mut u8),
    /// An imported host address.
    Host(HostVa),
}

impl State {
    /// Where `pa` leads, and how many bytes of the same object follow from there.
    fn resolve(&self, pa: PhysAddr) -> Result<(Target, u64), MemoryFault> {
        let (&start, id) = self.frames.range(..=pa).next_back().ok_or(MemoryFault)?;
        let object = self.objects.get(id).ok_or(MemoryFault)?;
        let offset = pa.offset_from(start).ok_or(MemoryFault)?;
        let left = object
            .size
            .checked_sub(offset)
            .filter(|left| *left > 0)
            .ok_or(MemoryFault)?;
        match &object.backing {
            Backing::Device(memory) => {
                let at = usize::try_from(offset).map_err(|_| MemoryFault)?;
                let mapped = memory.mapping().len();
                let in_mapping = u64::try_from(mapped.saturating_sub(at)).unwrap_or(0);
                if in_mapping == 0 {
                    return Err(MemoryFault);
                }
                // SAFETY: `at` is inside the device's live mapping (checked just above).
                let ptr = unsafe { memory.mapping().ptr().as_ptr().add(at) };
                Ok((Target::Direct(ptr), left.min(in_mapping)))
            }
            Backing::Host { addr, .. } => addr
                .checked_add(offset)
                .map(|at| (Target::Host(at), left))
                .ok_or(MemoryFault),
        }
    }

    /// [`Platform::copy`] under the lock.
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemoryFault> {
        let n = usize::try_from(len).map_err(|_| MemoryFault)?;
        let mut bounce = [0u8; PAGE_LEN];
        let buf = bounce.get_mut(..n).ok_or(MemoryFault)?;
        let ((from, from_left), (to, to_left)) = (self.resolve(src)?, self.resolve(dst)?);
        if from_left < len || to_left < len {
            return Err(MemoryFault);
        }
        match (from, to) {
            // SAFETY: both ranges lie inside their object's live mapping (checked just
            // above), which stays mapped while we hold the lock. The ranges may overlap:
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

    /// Moves `len` bytes between device memory at `device` and the imported host address
    /// `host` in one batched system call, into the device when `to_device`. Both lie
    /// inside their objects (the caller resolved them for `len` bytes). On a fault, the
    /// bytes moved before it.
    fn move_host_run(device: *mut u8, host: HostVa, len: u64, to_device: bool) -> Result<(), u64> {
        let n = usize::try_from(len).map_err(|_| 0u64)?;
        let moved = if to_device {
            // SAFETY: `device` is valid for `n` bytes of a live mapping held under the
            // lock; the kernel writes it as copy_to_user would.
            unsafe { host_access::read_raw(host, device, n) }
        } else {
            // SAFETY: as above, read instead of written.
            unsafe { host_access::write_raw(host, device, n) }
        };
        moved.map_err(|fault| fault.addr.get().saturating_sub(host.get()))
    }

    /// The table page `pa` lies in and the index of the descriptor it names, if it is
    /// descriptor-aligned.
    fn table_word(&self, pa: PhysAddr) -> Option<(PhysAddr, usize)> {
        let page = pa.align_down(MIN_PAGE);
        let offset = usize::try_from(pa.offset_from(page)?).ok()?;
        let word = core::mem::size_of::<u64>();
        (offset % word == 0).then_some((page, offset / word))
    }

    fn release_if_unheld(&mut self, id: ObjectId) {
        let unheld = self
            .objects
            .get(&id)
            .is_some_and(|o| o.handles == 0 && o.bindings == 0);
        if unheld {
            if let Some(object) = self.objects.remove(&id) {
                self.frames.remove(&object.pa);
                // The object's range was allocated when it was added; nothing else frees it.
                let _ = self.space.free(object.pa);
            }
        }
    }
}

/// The alignment of an object of `size` bytes: the largest block of `page_sizes` it can
/// hold, so that a block-aligned binding of it maps with blocks; 4 KiB otherwise.
fn block_alignment(page_sizes: PageSizes, size: u64) -> Alignment {
    PageSize::ALL
        .into_iter()
        .filter(|block| page_sizes.contains(*block) && block.bytes() <= size)
        .map(PageSize::alignment)
        .fold(MIN_PAGE, Alignment::max)
}

/// The software device's memory; clones share it (the VM holds one for its callbacks).
#[derive(Clone, Debug)]
pub struct PhysMemory {
    state: Arc<Mutex<State>>,
}

impl PhysMemory {
    /// An empty physical address space of `profile.oa_bits`.
    pub fn new(profile: &GpuProfile) -> Self {
        let end = 1u64.checked_shl(profile.oa_bits.into()).unwrap_or(u64::MAX);
        let state = State {
            space: PhysAllocator::new(PA_START, PhysAddr::new(end)),
            page_sizes: profile.page_sizes,
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
    /// handle, aligned to the largest block it could be mapped with.
    pub fn add_object(&self, backing: Backing, size: u64) -> Result<ObjectId, PhysAllocError> {
        let mut s = self.lock();
        let alignment = block_alignment(s.page_sizes, size);
        let pa = s.space.allocate(size, alignment)?;
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
        let pa = s.space.allocate(MIN_PAGE.get(), MIN_PAGE).ok()?;
        s.tables.insert(pa, Box::new([0; WORDS]));
        Some(pa)
    }

    fn free_table(&self, table: PhysAddr) {
        let mut s = self.lock();
        if s.tables.remove(&table).is_some() {
            // Allocated by `alloc_table`, freed only here.
            let _ = s.space.free(table);
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
        self.lock().copy(dst, src, len)
    }

    /// Between device memory and imported host memory, each stretch inside one object on
    /// both sides in one batched `process_vm_readv`/`writev` (`Read`/`WriteProcessMemory`)
    /// straight between the device's mapping and the application's pages; anything else
    /// page chunk by page chunk, as the default does.
    fn copy_run(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), RunFault> {
        let s = self.lock();
        let mut done = 0u64;
        while done < len {
            let stopped = RunFault { done };
            let (Some(from), Some(to)) = (src.checked_add(done), dst.checked_add(done)) else {
                return Err(stopped);
            };
            let ((source, source_left), (target, target_left)) = s
                .resolve(from)
                .and_then(|a| Ok((a, s.resolve(to)?)))
                .map_err(|MemoryFault| stopped)?;
            let n = (len - done).min(source_left).min(target_left);
            let moved = match (source, target) {
                (Target::Host(host), Target::Direct(device)) => {
                    State::move_host_run(device, host, n, true)
                }
                (Target::Direct(device), Target::Host(host)) => {
                    State::move_host_run(device, host, n, false)
                }
                // Device to device is a memmove a page chunk at a time, as on the kernel
                // device (overlapping copies come out the same); host to host is rare.
                _ => {
                    let mut moved = Ok(());
                    for (offset, chunk) in page_chunks(to, from, n) {
                        let (Some(d), Some(f)) = (to.checked_add(offset), from.checked_add(offset))
                        else {
                            moved = Err(offset);
                            break;
                        };
                        if s.copy(d, f, chunk).is_err() {
                            moved = Err(offset);
                            break;
                        }
                    }
                    moved
                }
            };
            moved.map_err(|before| RunFault {
                done: done.saturating_add(before),
            })?;
            done += n;
        }
        Ok(())
    }

    fn fill(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), MemoryFault> {
        let n = usize::try_from(len).map_err(|_| MemoryFault)?;
        let mut pattern = [0u8; PAGE_LEN];
        let buf = pattern.get_mut(..n).ok_or(MemoryFault)?;
        for (byte, v) in buf.iter_mut().zip(value.to_le_bytes().iter().cycle()) {
            *byte = *v;
        }
        let s = self.lock();
        let (target, left) = s.resolve(dst)?;
        if left < len {
            return Err(MemoryFault);
        }
        match target {
            // SAFETY: as in `copy`: one page of one live object's mapping.
            Target::Direct(to) => unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), to, n) },
            Target::Host(to) => host_access::write(to, buf).map_err(|_| MemoryFault)?,
        }
        Ok(())
    }

    fn object_segment(&self, object: ObjectId, offset: u64) -> Result<Segment, SegmentError> {
        let s = self.lock();
        let o = s.objects.get(&object).ok_or(SegmentError::Failed {
            errno: extmem_uapi::errno::ENOENT,
        })?;
        let len = o
            .size
            .checked_sub(offset)
            .filter(|len| *len > 0)
            .ok_or(SegmentError::PastEnd)?;
        // The object's range was allocated inside the space, so this does not overflow.
        let pa = o.pa.checked_add(offset).ok_or(SegmentError::PastEnd)?;
        Ok(Segment { pa, len })
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
        assert!(t >= PA_START);
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
    fn a_full_physical_space_refuses_objects_until_one_goes() {
        // 22 address bits: 2 MiB of space above `PA_START`.
        let small = GpuProfile {
            oa_bits: 22,
            ..extmem_hw::profile::VGPU
        };
        let m = PhysMemory::new(&small);
        let host = |addr| Backing::Host {
            addr: HostVa::new(addr),
            read_only: true,
        };
        let whole = m
            .add_object(host(0x10_0000), 2 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m.add_object(host(0x40_0000), 4096).err(),
            Some(PhysAllocError::Exhausted {
                size: 4096,
                alignment: MIN_PAGE,
                free: 0
            })
        );
        // Nor is there room for a table page.
        assert_eq!(m.alloc_table(), None);
        m.close_handle(whole);
        assert_eq!(m.objects(), 0);
        assert!(m.add_object(host(0x40_0000), 4096).is_ok());
    }

    #[test]
    fn objects_are_contiguous_and_copies_reach_their_bytes() {
        let m = memory();
        let device = SharedMemory::create(2 << 20).unwrap_or_else(|e| panic!("{e:?}"));
        let a = m
            .add_object(Backing::Device(device), 2 << 20)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let mut host = vec![0u8; 8192];
        let host_addr = HostVa::new(host.as_mut_ptr() as u64);
        let b = m
            .add_object(
                Backing::Host {
                    addr: host_addr,
                    read_only: false,
                },
                8192,
            )
            .unwrap_or_else(|e| panic!("{e:?}"));
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
