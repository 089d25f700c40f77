//! Device memory of the software device: shareable OS objects, mapped into the process.
//!
//! One interface, one implementation per OS:
//! - Linux (`linux`): sealed memfds, exported and imported as opaque fds;
//! - Windows (`windows`): pagefile-backed section objects (`CreateFileMappingW`),
//!   exported and imported as NT handles, by name and by global-share (KMT) token.
//!
//! Either way the OS object *is* the memory: sharing works across processes as a GEM
//! object's does. Both implementations give a [`SharedMemory`] with the same methods:
//! `create(size)`, `import(BorrowedOsHandle)` (the caller keeps its handle; anything not
//! made by this driver is `EINVAL`), `export() -> OwnedOsHandle`, `map(size)` (a CPU mapping
//! the caller undoes with [`unmap`]), `mapping()` (the device's own [`Mapping`], which the
//! copy engine uses), `size()` and `identity()` (an [`Identity`]: the same memory imported
//! twice has the same one).

use core::ptr::NonNull;

#[cfg(not(windows))]
pub mod linux;
#[cfg(windows)]
pub mod windows;

#[cfg(not(windows))]
use linux as platform;
#[cfg(windows)]
use windows as platform;

pub use platform::SharedMemory;

/// What names one memory object across imports and processes: `(st_dev, st_ino)` of a
/// memfd on Linux, the random 128-bit object id in a section's trailer on Windows.
pub type Identity = (u64, u64);

/// A shared, read-write mapping of device memory.
///
/// # Invariants
/// `ptr` is the start of a live shared mapping of at least `len` bytes (a memfd `mmap` of
/// `len` bytes, or a section view) that this value owns and unmaps on drop; the object
/// behind it cannot shrink (a sealed memfd, a section).
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is process-wide memory, usable from any thread; the value only
// owns the right to unmap it.
unsafe impl Send for Mapping {}

impl Mapping {
    /// The first byte.
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: objects are at least a page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hands the mapping to the caller, who undoes it with [`unmap`].
    fn leak(self) -> NonNull<u8> {
        let ptr = self.ptr;
        core::mem::forget(self);
        ptr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: per the invariant we own this mapping; nothing uses it after drop.
        unsafe { platform::unmap_raw(self.ptr, self.len) };
    }
}

/// Undoes [`SharedMemory::map`].
pub fn unmap(ptr: extmem_hw::HostVa, size: u64) {
    let (Ok(addr), Ok(len)) = (usize::try_from(ptr.get()), usize::try_from(size)) else {
        return;
    };
    if let Some(ptr) = NonNull::new(addr as *mut u8) {
        // SAFETY: `ptr`/`size` come from `SharedMemory::map`; the memory manager drops
        // its only record of the mapping with this call.
        unsafe { platform::unmap_raw(ptr, len) };
    }
}
