//! dma-buf file descriptors as every backend uses them: which buffer an fd names, its size,
//! whether it may be written, and CPU mappings of it (or of any mappable file).
//!
//! A dma-buf is one file of the dma-buf filesystem: every fd of one buffer (an export, a
//! re-export, a `dup`) shares its inode and its open-file access mode, fixed when the
//! exporter created it (`O_RDWR` from `DRM_RDWR`, or read-only without).

use core::ptr;

use extmem_hw::HostVa;
use rustix::fd::BorrowedFd;
use rustix::fs::{OFlags, SeekFrom};
use rustix::mm::{MapFlags, ProtFlags};

use crate::backend::{errno, BackendError, CpuAccess, Op};

/// Which buffer an fd refers to: `(st_dev, st_ino)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct BufferId {
    /// `st_dev` of the filesystem.
    pub dev: u64,
    /// `st_ino` of the buffer.
    pub ino: u64,
}

fn failed(op: Op) -> impl Fn(rustix::io::Errno) -> BackendError {
    move |e| BackendError {
        op,
        errno: e.raw_os_error(),
    }
}

/// The identity of the file behind `fd`.
pub fn identity(fd: BorrowedFd<'_>, op: Op) -> Result<BufferId, BackendError> {
    let st = rustix::fs::fstat(fd).map_err(failed(op))?;
    Ok(BufferId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Whether `fd` is a dma-buf (its filesystem is the dma-buf one, `DMA_BUF_MAGIC` of
/// `<linux/magic.h>`).
pub fn is_dma_buf(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstatfs(fd).is_ok_and(|fs| {
        u64::try_from(fs.f_type) == Ok(u64::from(linux_raw_sys::general::DMA_BUF_MAGIC))
    })
}

/// The size of a dma-buf: `lseek(fd, 0, SEEK_END)`, the only size query dma-bufs answer.
/// The file offset is shared by every fd of the buffer, so it is put back to 0.
pub fn size(fd: BorrowedFd<'_>, op: Op) -> Result<u64, BackendError> {
    let size = rustix::fs::seek(fd, SeekFrom::End(0)).map_err(failed(op))?;
    rustix::fs::seek(fd, SeekFrom::Start(0)).map_err(failed(op))?;
    Ok(size)
}

/// Whether the open file behind `fd` allows `access` (`fcntl(F_GETFL)`): a read-write
/// mapping of a read-only file fails in `mmap` with `EACCES`; this says so before trying.
pub fn allows(fd: BorrowedFd<'_>, access: CpuAccess) -> Result<bool, BackendError> {
    let mode = rustix::fs::fcntl_getfl(fd).map_err(failed(Op::Map))? & OFlags::RWMODE;
    Ok(match access {
        CpuAccess::Read => mode != OFlags::WRONLY,
        CpuAccess::ReadWrite => mode == OFlags::RDWR,
    })
}

/// A new shared mapping of `[offset, offset + size)` of `fd` (a dma-buf, or a DRM node at
/// an object's fake offset), refused with `EACCES` when the file does not allow `access`.
pub fn map(
    fd: BorrowedFd<'_>,
    offset: u64,
    size: u64,
    access: CpuAccess,
) -> Result<HostVa, BackendError> {
    let bad = BackendError {
        op: Op::Map,
        errno: errno::EINVAL,
    };
    let len = usize::try_from(size).map_err(|_| bad)?;
    if !allows(fd, access)? {
        return Err(BackendError {
            op: Op::Map,
            errno: errno::EACCES,
        });
    }
    let prot = match access {
        CpuAccess::Read => ProtFlags::READ,
        CpuAccess::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
    };
    // SAFETY: a new shared mapping at an address the kernel chooses (null hint), so it
    // replaces nothing; the caller records it and unmaps it with `unmap` exactly once.
    let ptr = unsafe { rustix::mm::mmap(ptr::null_mut(), len, prot, MapFlags::SHARED, fd, offset) }
        .map_err(failed(Op::Map))?;
    Ok(HostVa::new(ptr as usize as u64))
}

/// Undoes [`map`].
pub fn unmap(ptr: HostVa, size: u64) {
    if let (Ok(addr), Ok(len)) = (usize::try_from(ptr.get()), usize::try_from(size)) {
        // SAFETY: `ptr`/`size` come from our own `map`; the caller drops its only record of
        // the mapping with this call.
        let _ = unsafe { rustix::mm::munmap(addr as *mut core::ffi::c_void, len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    fn memfd(size: u64) -> rustix::fd::OwnedFd {
        let fd = rustix::fs::memfd_create("dma-buf-test", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd");
        rustix::fs::ftruncate(&fd, size).expect("size");
        fd
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "real memfds, lseek and mmap, which Miri does not emulate"
    )]
    fn size_by_seek_leaves_the_offset_at_zero() {
        let _serial = crate::FD_TESTS.lock();
        let fd = memfd(0x3000);
        assert_eq!(size(fd.as_fd(), Op::Info), Ok(0x3000));
        assert_eq!(rustix::fs::seek(&fd, SeekFrom::Current(0)), Ok(0));
        assert!(!is_dma_buf(fd.as_fd()), "a memfd is not a dma-buf");
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "real memfds, lseek and mmap, which Miri does not emulate"
    )]
    fn a_read_only_file_is_mapped_for_reading_only() {
        let _serial = crate::FD_TESTS.lock();
        let fd = memfd(0x1000);
        let path = std::format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(&fd));
        let ro = rustix::fs::open(path.as_str(), OFlags::RDONLY | OFlags::CLOEXEC, 0.into())
            .expect("reopen read-only");
        assert_eq!(
            map(ro.as_fd(), 0, 0x1000, CpuAccess::ReadWrite),
            Err(BackendError {
                op: Op::Map,
                errno: errno::EACCES
            })
        );
        let ptr = map(ro.as_fd(), 0, 0x1000, CpuAccess::Read).expect("read-only map");
        unmap(ptr, 0x1000);
        let ptr = map(fd.as_fd(), 0, 0x1000, CpuAccess::ReadWrite).expect("read-write map");
        unmap(ptr, 0x1000);
        assert_eq!(
            identity(fd.as_fd(), Op::Info),
            identity(ro.as_fd(), Op::Info)
        );
    }
}
