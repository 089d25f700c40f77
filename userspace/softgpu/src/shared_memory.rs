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

use core::fmt;
use core::ptr::NonNull;

use extmem_uapi::errno;

use crate::error::OsError;

#[cfg(not(windows))]
pub mod linux;
#[cfg(windows)]
pub mod windows;

#[cfg(not(windows))]
use linux as platform;
#[cfg(windows)]
use windows as platform;

pub use platform::SharedMemory;

/// Why device memory could not be created, imported, exported or mapped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemoryError {
    /// An OS call failed.
    Os(OsError),
    /// The file or handle is not device memory of this driver (not a sealed memfd of
    /// ours; on Windows, a section without our trailer, or not a section).
    NotDeviceMemory,
    /// A size device memory cannot have: zero or not whole pages (of an object, or of a
    /// CPU mapping, which also may not be larger than the memory).
    BadSize {
        /// The size.
        size: u64,
    },
    /// A size larger than this process can address.
    TooLarge {
        /// The size.
        size: u64,
    },
    /// Windows: an object of the name to create exists already.
    NameTaken,
    /// Windows: a global-share token that names no live memory.
    UnknownToken {
        /// The token's value.
        token: isize,
    },
    /// Windows: this process has published every token value.
    TokensExhausted,
}

impl MemoryError {
    /// The errno the memory manager interprets.
    #[must_use]
    pub fn errno(&self) -> i32 {
        match self {
            MemoryError::Os(os) => os.errno,
            MemoryError::NotDeviceMemory | MemoryError::BadSize { .. } => errno::EINVAL,
            MemoryError::TooLarge { .. } => errno::ENOMEM,
            MemoryError::NameTaken => errno::EEXIST,
            MemoryError::UnknownToken { .. } => errno::ENOENT,
            MemoryError::TokensExhausted => errno::ENOSPC,
        }
    }
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::Os(os) => write!(f, "{os}"),
            MemoryError::NotDeviceMemory => write!(f, "not device memory of this driver"),
            MemoryError::BadSize { size } => write!(f, "{size:#x} bytes is not a memory size"),
            MemoryError::TooLarge { size } => write!(f, "{size:#x} bytes do not fit the process"),
            MemoryError::NameTaken => write!(f, "the name is taken"),
            MemoryError::UnknownToken { token } => {
                write!(f, "global-share token {token:#x} names no memory")
            }
            MemoryError::TokensExhausted => write!(f, "no global-share token values left"),
        }
    }
}

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
