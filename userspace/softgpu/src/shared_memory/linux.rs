//! Device memory of the software device on Linux: sealed memfds, mapped into the process.
//!
//! A memfd is what the device exports as an opaque fd and what another process (or
//! another device of the same driver) imports: the fd is the memory, so sharing works
//! across processes like a GEM object's does. It is **not** a dma-buf (no other driver can
//! attach it), so the software device never claims `DMA_BUF`.
//!
//! Every memfd the device creates is named [`MEMFD_NAME`] and sealed against growing and
//! shrinking, and the seals themselves are sealed. An import accepts only such a memfd:
//! the name says it came from this driver (`VUID-VkImportMemoryFdInfoKHR-handleType-00648`
//! asks for the same driver), and the seals are what makes mapping it safe, since no
//! process can truncate it under our mapping and turn an access into `SIGBUS`.

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use extmem::os_handle::{BorrowedOsHandle, OwnedOsHandle};
use extmem_hw::profile::MIN_PAGE;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use super::{Identity, Mapping, MemoryError};
use crate::error::OsError;

/// The name of every memfd the device creates (`/proc/self/fd/N` shows
/// `/memfd:extmem-softgpu (deleted)`).
pub const MEMFD_NAME: &str = "extmem-softgpu";

/// The seals every device memfd carries.
fn seals() -> SealFlags {
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
}

/// The failure of the OS call `call`.
fn os(call: &'static str) -> impl Fn(rustix::io::Errno) -> MemoryError {
    move |e| {
        MemoryError::Os(OsError {
            call,
            errno: e.raw_os_error(),
        })
    }
}

/// Maps `len` bytes of `fd` read-write.
fn map_fd(fd: BorrowedFd<'_>, len: usize) -> Result<Mapping, MemoryError> {
    // SAFETY: a new shared mapping at an address the kernel chooses; it aliases no
    // Rust object. The memfd is sealed, so the mapping stays backed.
    let ptr = unsafe {
        rustix::mm::mmap(
            ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(os("mmap"))?;
    // Without MAP_FIXED the kernel never places a mapping at 0.
    let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(os("mmap")(rustix::io::Errno::FAULT))?;
    Ok(Mapping { ptr, len })
}

/// Unmaps `len` bytes at `ptr`.
///
/// # Safety
/// `[ptr, ptr + len)` is a mapping this process made and nothing uses any more.
pub(super) unsafe fn unmap_raw(ptr: NonNull<u8>, len: usize) {
    // SAFETY: per the caller's contract.
    let _ = unsafe { rustix::mm::munmap(ptr.as_ptr().cast::<c_void>(), len) };
}

/// One memfd of device memory and the device's own mapping of it.
#[derive(Debug)]
pub struct SharedMemory {
    fd: OwnedFd,
    mapping: Mapping,
    /// `(st_dev, st_ino)`: the same memory imported twice has the same identity.
    identity: Identity,
}

/// The identity of an fd's file.
fn identity(fd: BorrowedFd<'_>) -> Result<Identity, MemoryError> {
    let stat = rustix::fs::fstat(fd).map_err(os("fstat"))?;
    Ok((stat.st_dev, stat.st_ino))
}

impl SharedMemory {
    /// A new memfd of `size` bytes (a multiple of 4 KiB), zeroed, sealed and mapped.
    pub fn create(size: u64) -> Result<Self, MemoryError> {
        let len = usize::try_from(size).map_err(|_| MemoryError::TooLarge { size })?;
        let fd =
            rustix::fs::memfd_create(MEMFD_NAME, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .map_err(os("memfd_create"))?;
        rustix::fs::ftruncate(&fd, size).map_err(os("ftruncate"))?;
        rustix::fs::fcntl_add_seals(&fd, seals()).map_err(os("fcntl(F_ADD_SEALS)"))?;
        let mapping = map_fd(fd.as_fd(), len)?;
        let identity = identity(fd.as_fd())?;
        Ok(Self {
            fd,
            mapping,
            identity,
        })
    }

    /// Imports a memfd this driver exported: checks its name and seals, then maps it
    /// (through a duplicate, so the caller keeps its fd). [`MemoryError::NotDeviceMemory`]
    /// for a file that is not a memfd, a memfd of someone else or one that could still
    /// change size; [`MemoryError::BadSize`] for a size that is not whole 4 KiB pages.
    pub fn import(fd: BorrowedOsHandle<'_>) -> Result<Self, MemoryError> {
        // Any file but a memfd refuses F_GET_SEALS (EINVAL).
        let sealed = rustix::fs::fcntl_get_seals(fd).map_err(|_| MemoryError::NotDeviceMemory)?;
        if !sealed.contains(seals()) || !is_device_memfd(fd) {
            return Err(MemoryError::NotDeviceMemory);
        }
        let stat = rustix::fs::fstat(fd).map_err(os("fstat"))?;
        let size = u64::try_from(stat.st_size).map_err(|_| MemoryError::NotDeviceMemory)?;
        if size == 0 || !MIN_PAGE.is_aligned(size) {
            return Err(MemoryError::BadSize { size });
        }
        let len = usize::try_from(size).map_err(|_| MemoryError::TooLarge { size })?;
        let own = rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(os("fcntl(F_DUPFD_CLOEXEC)"))?;
        let mapping = map_fd(own.as_fd(), len)?;
        Ok(Self {
            fd: own,
            mapping,
            identity: (stat.st_dev, stat.st_ino),
        })
    }

    /// A new close-on-exec fd of the memory, for `vkGetMemoryFdKHR`.
    pub fn export(&self) -> Result<OwnedOsHandle, MemoryError> {
        rustix::io::fcntl_dupfd_cloexec(&self.fd, 0).map_err(os("fcntl(F_DUPFD_CLOEXEC)"))
    }

    /// A new CPU mapping of the first `size` bytes, for `vkMapMemory`; the caller unmaps
    /// it (the memory manager does, at free).
    pub fn map(&self, size: u64) -> Result<NonNull<u8>, MemoryError> {
        let len = usize::try_from(size).map_err(|_| MemoryError::BadSize { size })?;
        if size == 0 || len > self.mapping.len() {
            return Err(MemoryError::BadSize { size });
        }
        // The caller owns it now.
        Ok(map_fd(self.fd.as_fd(), len)?.leak())
    }

    /// The device's mapping, which the copy engine uses.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        u64::try_from(self.mapping.len()).unwrap_or(u64::MAX)
    }

    /// `(st_dev, st_ino)` of the memfd.
    pub fn identity(&self) -> Identity {
        self.identity
    }
}

/// Whether the fd is a memfd named [`MEMFD_NAME`]: the kernel shows a memfd's link as
/// `/memfd:<name> (deleted)`.
fn is_device_memfd(fd: BorrowedFd<'_>) -> bool {
    let link = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        rustix::fd::AsRawFd::as_raw_fd(&fd)
    ));
    link.is_ok_and(|path| {
        path.to_str()
            .is_some_and(|p| p == format!("/memfd:{MEMFD_NAME} (deleted)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_memory_is_sealed_zeroed_and_imports_as_the_same_file() {
        let memory = SharedMemory::create(8192).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(memory.size(), 8192);
        // SAFETY: the device mapping is 8192 bytes and live.
        let first = unsafe { memory.mapping().ptr().as_ptr().read() };
        assert_eq!(first, 0);
        let exported = memory.export().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rustix::fs::ftruncate(&exported, 4096).map_err(|e| e.raw_os_error()),
            Err(rustix::io::Errno::PERM.raw_os_error()),
            "sealed against shrinking"
        );
        let imported = SharedMemory::import(exported.as_fd()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(imported.identity(), memory.identity());
        assert_eq!(imported.size(), 8192);
    }

    #[test]
    fn foreign_or_unsealed_files_are_refused() {
        let plain = rustix::fs::memfd_create(MEMFD_NAME, MemfdFlags::CLOEXEC)
            .unwrap_or_else(|e| panic!("{e}"));
        rustix::fs::ftruncate(&plain, 4096).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            SharedMemory::import(plain.as_fd()).err(),
            Some(MemoryError::NotDeviceMemory)
        );
        let other = rustix::fs::memfd_create(
            "someone-else",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        rustix::fs::ftruncate(&other, 4096).unwrap_or_else(|e| panic!("{e}"));
        rustix::fs::fcntl_add_seals(&other, seals()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            SharedMemory::import(other.as_fd()).err(),
            Some(MemoryError::NotDeviceMemory)
        );
        let file = std::fs::File::open("/proc/self/exe").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            SharedMemory::import(file.as_fd()).err(),
            Some(MemoryError::NotDeviceMemory)
        );
    }
}
