//! A backend whose objects are dma-bufs and nothing else: memory that can be allocated,
//! shared and mapped without a GPU. [`crate::udmabuf`] and [`crate::dma_heap`] are its
//! exporters.
//!
//! There is no kernel object table behind these devices, so this one keeps it: each handle
//! owns one dma-buf fd. The kernel's PRIME rule holds here too: importing a buffer this
//! device already holds (same inode of the dma-buf filesystem) gives back the same handle,
//! so the memory manager's reference counts work unchanged. There is no GPU VM.

use alloc::collections::BTreeMap;
use core::num::NonZeroU32;

use extmem_hw::HostVa;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::backend::{
    errno, Backend, BackendError, CpuAccess, GemHandle, HostImport, ObjectOrigin, Op,
};
use crate::dma_buf::{self, BufferId};

/// Where the dma-bufs of a [`DmaBufDevice`] come from.
pub trait Exporter {
    /// A new read-write dma-buf of at least `size` bytes.
    fn allocate(&mut self, size: u64) -> Result<OwnedFd, BackendError>;

    /// A dma-buf over the host range `[ptr, ptr + size)`; by default none can be made
    /// ([`errno::EOPNOTSUPP`], which the memory manager reports as
    /// `VK_ERROR_INVALID_EXTERNAL_HANDLE`).
    fn import_host(
        &mut self,
        _ptr: HostVa,
        _size: u64,
        _read_only: bool,
    ) -> Result<OwnedFd, BackendError> {
        Err(BackendError {
            op: Op::ImportHost,
            errno: errno::EOPNOTSUPP,
        })
    }

    /// Whether `fd` may be imported: a dma-buf.
    fn accepts(&self, fd: BorrowedFd<'_>) -> bool {
        dma_buf::is_dma_buf(fd)
    }
}

#[derive(Debug)]
struct Object {
    buf: OwnedFd,
    id: BufferId,
    size: u64,
    origin: ObjectOrigin,
}

/// Objects that are dma-bufs, from one [`Exporter`].
///
/// # Invariants
/// No two objects have the same [`BufferId`]; handles are never 0.
#[derive(Debug)]
pub struct DmaBufDevice<E> {
    exporter: E,
    objects: BTreeMap<GemHandle, Object>,
    last: u32,
}

impl<E: Exporter> DmaBufDevice<E> {
    /// A device with no objects yet.
    pub fn new(exporter: E) -> Self {
        Self {
            exporter,
            objects: BTreeMap::new(),
            last: 0,
        }
    }

    /// The exporter.
    pub fn exporter(&self) -> &E {
        &self.exporter
    }

    /// Takes `buf` as a new object.
    fn insert(
        &mut self,
        buf: OwnedFd,
        origin: ObjectOrigin,
        op: Op,
    ) -> Result<GemHandle, BackendError> {
        let id = dma_buf::identity(buf.as_fd(), op)?;
        let size = dma_buf::size(buf.as_fd(), op)?;
        let handle = self.free_handle().ok_or(BackendError {
            op,
            errno: errno::ENOSPC,
        })?;
        self.objects.insert(
            handle,
            Object {
                buf,
                id,
                size,
                origin,
            },
        );
        Ok(handle)
    }

    /// The next unused handle after the last one given, wrapping past `u32::MAX`.
    fn free_handle(&mut self) -> Option<GemHandle> {
        let mut raw = self.last;
        for _ in 0..=self.objects.len() {
            raw = raw.checked_add(1).unwrap_or(1);
            let handle = GemHandle(NonZeroU32::new(raw)?);
            if !self.objects.contains_key(&handle) {
                self.last = raw;
                return Some(handle);
            }
        }
        None
    }

    fn object(&self, handle: GemHandle, op: Op) -> Result<&Object, BackendError> {
        self.objects.get(&handle).ok_or(BackendError {
            op,
            errno: errno::ENOENT,
        })
    }
}

impl<E: Exporter> Backend for DmaBufDevice<E> {
    fn create(&mut self, size: u64) -> Result<GemHandle, BackendError> {
        let buf = self.exporter.allocate(size)?;
        self.insert(buf, ObjectOrigin::Native, Op::Create)
    }

    fn import_host(
        &mut self,
        ptr: HostVa,
        size: u64,
        read_only: bool,
        probe: bool,
    ) -> Result<Option<(GemHandle, HostImport)>, BackendError> {
        let buf = self.exporter.import_host(ptr, size, read_only)?;
        if probe {
            return Ok(None);
        }
        let handle = self.insert(buf, ObjectOrigin::Userptr, Op::ImportHost)?;
        Ok(Some((handle, HostImport::Pinned)))
    }

    fn import_shared(&mut self, fd: BorrowedFd<'_>) -> Result<GemHandle, BackendError> {
        let op = Op::ImportDmaBuf;
        if !self.exporter.accepts(fd) {
            return Err(BackendError {
                op,
                errno: errno::EINVAL,
            });
        }
        let id = dma_buf::identity(fd, op)?;
        if let Some((&handle, _)) = self.objects.iter().find(|(_, o)| o.id == id) {
            return Ok(handle);
        }
        let own = rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| BackendError {
            op,
            errno: e.raw_os_error(),
        })?;
        self.insert(own, ObjectOrigin::Imported, op)
    }

    /// A new close-on-exec fd of the same buffer; its access mode is the buffer's (read-
    /// write for what this device allocated, whatever the exporter chose for imports).
    fn export_shared(&mut self, handle: GemHandle) -> Result<OwnedFd, BackendError> {
        let op = Op::ExportDmaBuf;
        let obj = self.object(handle, op)?;
        rustix::io::fcntl_dupfd_cloexec(&obj.buf, 0).map_err(|e| BackendError {
            op,
            errno: e.raw_os_error(),
        })
    }

    fn info(&mut self, handle: GemHandle) -> Result<(u64, ObjectOrigin), BackendError> {
        let obj = self.object(handle, Op::Info)?;
        Ok((obj.size, obj.origin))
    }

    fn close(&mut self, handle: GemHandle) {
        self.objects.remove(&handle);
    }

    fn map(
        &mut self,
        handle: GemHandle,
        size: u64,
        access: CpuAccess,
    ) -> Result<HostVa, BackendError> {
        let obj = self.object(handle, Op::Map)?;
        if size > obj.size {
            return Err(BackendError {
                op: Op::Map,
                errno: errno::EINVAL,
            });
        }
        dma_buf::map(obj.buf.as_fd(), 0, size, access)
    }

    fn unmap(&mut self, ptr: HostVa, size: u64) {
        dma_buf::unmap(ptr, size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// memfds stand in for dma-bufs: same fd semantics (dup, seek, mmap, inode identity).
    struct Memfds {
        host_ok: bool,
    }

    fn memfd(size: u64) -> Result<OwnedFd, BackendError> {
        let err = |e: rustix::io::Errno| BackendError {
            op: Op::Create,
            errno: e.raw_os_error(),
        };
        let fd = rustix::fs::memfd_create("fake-dma-buf", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(err)?;
        rustix::fs::ftruncate(&fd, size).map_err(err)?;
        Ok(fd)
    }

    impl Exporter for Memfds {
        fn allocate(&mut self, size: u64) -> Result<OwnedFd, BackendError> {
            memfd(size)
        }

        fn import_host(
            &mut self,
            _ptr: HostVa,
            size: u64,
            _read_only: bool,
        ) -> Result<OwnedFd, BackendError> {
            if self.host_ok {
                memfd(size)
            } else {
                Err(BackendError {
                    op: Op::ImportHost,
                    errno: errno::EOPNOTSUPP,
                })
            }
        }

        fn accepts(&self, fd: BorrowedFd<'_>) -> bool {
            rustix::fs::fstat(fd).is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
            })
        }
    }

    fn device() -> DmaBufDevice<Memfds> {
        DmaBufDevice::new(Memfds { host_ok: false })
    }

    #[test]
    #[cfg_attr(miri, ignore = "real memfds, which Miri does not emulate")]
    fn allocate_export_import_round_trip_gives_back_the_same_handle() {
        let _serial = crate::FD_TESTS.lock();
        let mut dev = device();
        let a = dev.create(0x3000).expect("create");
        assert_eq!(dev.info(a), Ok((0x3000, ObjectOrigin::Native)));
        let fd1 = dev.export_shared(a).expect("export");
        let fd2 = dev.export_shared(a).expect("export again");
        assert_ne!(
            rustix::fd::AsRawFd::as_raw_fd(&fd1),
            rustix::fd::AsRawFd::as_raw_fd(&fd2),
            "every export is a new fd"
        );
        assert!(rustix::io::fcntl_getfd(&fd1)
            .expect("flags")
            .contains(rustix::io::FdFlags::CLOEXEC));
        assert_eq!(dev.import_shared(fd1.as_fd()), Ok(a));
        let foreign = memfd(0x2000).expect("memfd");
        let b = dev.import_shared(foreign.as_fd()).expect("import");
        assert_ne!(a, b);
        assert_eq!(dev.info(b), Ok((0x2000, ObjectOrigin::Imported)));
        assert_eq!(
            dev.import_shared(foreign.as_fd()),
            Ok(b),
            "same buffer, same handle"
        );
        dev.close(a);
        dev.close(b);
        assert!(dev.objects.is_empty());
        assert_eq!(
            dev.info(a),
            Err(BackendError {
                op: Op::Info,
                errno: errno::ENOENT
            })
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "real memfds, which Miri does not emulate")]
    fn only_accepted_fds_import_and_host_ranges_need_the_exporter() {
        let _serial = crate::FD_TESTS.lock();
        let mut dev = device();
        let (pipe, _w) = rustix::pipe::pipe().expect("pipe");
        assert_eq!(
            dev.import_shared(pipe.as_fd()),
            Err(BackendError {
                op: Op::ImportDmaBuf,
                errno: errno::EINVAL
            })
        );
        assert_eq!(
            dev.import_host(HostVa::new(0x1000), 0x1000, false, false),
            Err(BackendError {
                op: Op::ImportHost,
                errno: errno::EOPNOTSUPP
            })
        );
        dev.exporter.host_ok = true;
        assert_eq!(
            dev.import_host(HostVa::new(0x1000), 0x1000, false, true),
            Ok(None),
            "a probe keeps nothing"
        );
        assert!(dev.objects.is_empty());
        let (h, kind) = dev
            .import_host(HostVa::new(0x1000), 0x1000, false, false)
            .expect("import")
            .expect("not a probe");
        assert_eq!(kind, HostImport::Pinned);
        assert_eq!(dev.info(h), Ok((0x1000, ObjectOrigin::Userptr)));
        assert!(dev.vm().is_none(), "no GPU VM");
    }

    #[test]
    #[cfg_attr(miri, ignore = "real memfds, which Miri does not emulate")]
    fn handles_wrap_past_the_top_and_skip_live_ones() {
        let _serial = crate::FD_TESTS.lock();
        let mut dev = device();
        let a = dev.create(0x1000).expect("create");
        assert_eq!(a.0.get(), 1);
        dev.last = u32::MAX - 1;
        let top = dev.create(0x1000).expect("create");
        assert_eq!(top.0.get(), u32::MAX);
        let wrapped = dev.create(0x1000).expect("create");
        assert_eq!(wrapped.0.get(), 2, "1 is still live");
    }

    #[test]
    #[cfg_attr(miri, ignore = "real memfds, which Miri does not emulate")]
    fn mapping_is_bounded_by_the_buffer() {
        let _serial = crate::FD_TESTS.lock();
        let mut dev = device();
        let a = dev.create(0x2000).expect("create");
        assert_eq!(
            dev.map(a, 0x3000, CpuAccess::ReadWrite),
            Err(BackendError {
                op: Op::Map,
                errno: errno::EINVAL
            })
        );
        let ptr = dev.map(a, 0x2000, CpuAccess::ReadWrite).expect("map");
        dev.unmap(ptr, 0x2000);
        dev.close(a);
    }
}
