//! The manager's rules against a fake backend whose "dma-bufs" are real memfds, so fd
//! ownership and leaks are checked on real descriptors.

use super::*;
use crate::alloc_info::DeviceLimits;
use crate::backend::{GpuVm, Op};
use crate::handle_types::DeviceCaps;
use core::num::NonZeroU32;
use rustix::fd::{AsFd, AsRawFd, IntoRawFd};
use std::vec::Vec;

use crate::FD_TESTS;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("procfs").count()
}

#[derive(Debug)]
struct FakeObject {
    size: u64,
    origin: ObjectOrigin,
    /// (st_dev, st_ino) of the memfd standing in for its dma-buf, once it has one.
    file: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Fake {
    objects: std::collections::BTreeMap<u32, FakeObject>,
    next: u32,
    bindings: Vec<(u64, u64, u32)>,
    fail_bind: bool,
    refuse_host: bool,
    exports: Vec<OwnedFd>,
    /// Behave as a backend without a GPU VM (udmabuf, dma-heap, a PRIME node).
    no_vm: bool,
    /// Objects whose dma-buf is read-only.
    read_only: Vec<u32>,
}

impl Fake {
    fn add(&mut self, size: u64, origin: ObjectOrigin, file: Option<(u64, u64)>) -> GemHandle {
        self.next += 1;
        self.objects
            .insert(self.next, FakeObject { size, origin, file });
        GemHandle(NonZeroU32::new(self.next).expect("non-zero"))
    }

    fn err(op: Op, errno: i32) -> BackendError {
        BackendError { op, errno }
    }
}

fn identity(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let st = rustix::fs::fstat(fd).ok()?;
    Some((st.st_dev, st.st_ino))
}

impl Backend for Fake {
    fn create(&mut self, size: u64) -> Result<GemHandle, BackendError> {
        Ok(self.add(size, ObjectOrigin::Native, None))
    }

    fn import_host(
        &mut self,
        ptr: HostVa,
        size: u64,
        _ro: bool,
        probe: bool,
    ) -> Result<Option<(GemHandle, HostImport)>, BackendError> {
        if self.refuse_host || ptr.get() == 0 {
            return Err(Self::err(Op::ImportHost, errno::EFAULT));
        }
        if probe {
            return Ok(None);
        }
        Ok(Some((
            self.add(size, ObjectOrigin::Userptr, None),
            HostImport::Pinned,
        )))
    }

    fn import_shared(&mut self, fd: BorrowedFd<'_>) -> Result<GemHandle, BackendError> {
        let st =
            rustix::fs::fstat(fd).map_err(|e| Self::err(Op::ImportDmaBuf, e.raw_os_error()))?;
        // Only memfds stand in for dma-bufs.
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(Self::err(Op::ImportDmaBuf, errno::EINVAL));
        }
        let id = (st.st_dev, st.st_ino);
        if let Some((&h, _)) = self.objects.iter().find(|(_, o)| o.file == Some(id)) {
            return Ok(GemHandle(NonZeroU32::new(h).expect("non-zero")));
        }
        Ok(self.add(st.st_size as u64, ObjectOrigin::Imported, Some(id)))
    }

    fn export_shared(&mut self, handle: GemHandle) -> Result<OwnedFd, BackendError> {
        let obj = self
            .objects
            .get_mut(&handle.0.get())
            .ok_or(Self::err(Op::ExportDmaBuf, errno::ENOENT))?;
        let fd = match obj.file {
            // Re-export of the same object: a new fd for the same file.
            Some(_) => {
                let keep = self
                    .exports
                    .last()
                    .ok_or(Self::err(Op::ExportDmaBuf, errno::EINVAL))?;
                rustix::io::fcntl_dupfd_cloexec(keep, 0)
                    .map_err(|e| Self::err(Op::ExportDmaBuf, e.raw_os_error()))?
            }
            None => {
                let fd = rustix::fs::memfd_create("fake-dmabuf", rustix::fs::MemfdFlags::CLOEXEC)
                    .map_err(|e| Self::err(Op::ExportDmaBuf, e.raw_os_error()))?;
                rustix::fs::ftruncate(&fd, obj.size)
                    .map_err(|e| Self::err(Op::ExportDmaBuf, e.raw_os_error()))?;
                obj.file = identity(fd.as_fd());
                let dup = rustix::io::fcntl_dupfd_cloexec(&fd, 0)
                    .map_err(|e| Self::err(Op::ExportDmaBuf, e.raw_os_error()))?;
                self.exports.push(fd);
                dup
            }
        };
        Ok(fd)
    }

    fn info(&mut self, handle: GemHandle) -> Result<(u64, ObjectOrigin), BackendError> {
        let obj = self
            .objects
            .get(&handle.0.get())
            .ok_or(Self::err(Op::Info, errno::ENOENT))?;
        Ok((obj.size, obj.origin))
    }

    fn close(&mut self, handle: GemHandle) {
        assert!(
            self.objects.remove(&handle.0.get()).is_some(),
            "double close of {handle:?}"
        );
    }

    fn map(
        &mut self,
        handle: GemHandle,
        _size: u64,
        access: CpuAccess,
    ) -> Result<HostVa, BackendError> {
        if access == CpuAccess::ReadWrite && self.read_only.contains(&handle.0.get()) {
            return Err(Self::err(Op::Map, errno::EACCES));
        }
        Ok(HostVa::new(
            0x7000_0000_0000 + u64::from(handle.0.get()) * 0x1_0000_0000,
        ))
    }

    fn unmap(&mut self, _ptr: HostVa, _size: u64) {}

    fn vm(&mut self) -> Option<&mut dyn GpuVm> {
        if self.no_vm {
            None
        } else {
            Some(self)
        }
    }
}

impl GpuVm for Fake {
    fn bind(
        &mut self,
        handle: GemHandle,
        va: GpuVa,
        offset: u64,
        size: u64,
        _ro: bool,
    ) -> Result<(), BackendError> {
        assert_eq!(offset, 0);
        if self.fail_bind {
            return Err(Self::err(Op::Bind, errno::ENOMEM));
        }
        let obj = self
            .objects
            .get(&handle.0.get())
            .ok_or(Self::err(Op::Bind, errno::ENOENT))?;
        assert!(size <= obj.size.max(size), "bind inside the object");
        assert!(
            self.bindings
                .iter()
                .all(|&(v, s, _)| va.get() + size <= v || v + s <= va.get()),
            "overlap"
        );
        self.bindings.push((va.get(), size, handle.0.get()));
        Ok(())
    }

    fn unbind(&mut self, va: GpuVa, size: u64) -> Result<(), BackendError> {
        let i = self
            .bindings
            .iter()
            .position(|&(v, s, _)| v == va.get() && s == size)
            .ok_or(Self::err(Op::Unbind, errno::ENOENT))?;
        self.bindings.swap_remove(i);
        Ok(())
    }
}

const LIMITS: DeviceLimits = DeviceLimits {
    caps: DeviceCaps::LINUX_FULL,
    memory_type_count: 2,
    min_import_alignment: Alignment::SIZE_4K,
    host_pointer_types: 0b10,
};

fn manager() -> MemoryManager<Fake> {
    let va = VaAllocator::new(
        GpuVa::new(2 << 20),
        GpuVa::new(1 << 40),
        extmem_hw::profile::VGPU.page_sizes,
    );
    MemoryManager::new(Fake::default(), LIMITS, va, 0b11)
}

fn plain(size: u64, export: Types) -> AllocRequest {
    AllocRequest {
        size,
        export,
        ..AllocRequest::default()
    }
}

fn fd_import(handle_type: Types, fd: i32, size: u64) -> AllocRequest {
    AllocRequest {
        size,
        import: Import::Fd { handle_type, fd },
        ..AllocRequest::default()
    }
}

fn memfd(size: u64) -> OwnedFd {
    let fd = rustix::fs::memfd_create("foreign", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
    rustix::fs::ftruncate(&fd, size).expect("size");
    fd
}

fn is_open(fd: i32) -> bool {
    // SAFETY: only used for an fcntl that fails with EBADF on a closed number.
    rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) }).is_ok()
}

#[test]
fn allocate_and_free_leave_nothing_behind() {
    let mut m = manager();
    let a = m.allocate(&plain(5000, Types::empty())).expect("allocate");
    assert_eq!(a.size(), 5000);
    assert_eq!(
        m.backend.bindings,
        [(a.gpu_va().expect("bound").get(), 8192, a.handle().0.get())]
    );
    m.free(a);
    assert!(m.backend.objects.is_empty() && m.backend.bindings.is_empty());
    assert_eq!(m.live_handles(), 0);
}

#[test]
fn on_16_kib_cpu_pages_a_plain_allocation_is_whole_cpu_pages() {
    // A 16 KiB-page kernel reports minImportedHostPointerAlignment 16384 and refuses
    // objects that are not whole CPU pages; a 4 KiB request must not reach it as 4 KiB.
    let limits = DeviceLimits {
        min_import_alignment: Alignment::new(16 << 10).expect("a power of two"),
        ..LIMITS
    };
    let va = VaAllocator::new(
        GpuVa::new(2 << 20),
        GpuVa::new(1 << 40),
        extmem_hw::profile::VGPU.page_sizes,
    );
    let mut m = MemoryManager::new(Fake::default(), limits, va, 0b11);
    let a = m.allocate(&plain(4096, Types::empty())).expect("allocate");
    assert_eq!(a.size(), 4096);
    let object = m.backend.objects.get(&a.handle().0.get()).expect("created");
    assert_eq!(object.size, 16 << 10);
    assert_eq!(
        m.backend.bindings,
        [(
            a.gpu_va().expect("bound").get(),
            16 << 10,
            a.handle().0.get()
        )]
    );
    m.free(a);
    assert!(m.backend.objects.is_empty() && m.backend.bindings.is_empty());
}

#[test]
fn host_pointer_maps_back_to_the_original_pointer() {
    let mut m = manager();
    let req = AllocRequest {
        size: 0x4000,
        memory_type_index: 1,
        import: Import::HostPointer {
            handle_type: Types::HOST_ALLOCATION_EXT,
            ptr: HostVa::new(0x5555_0000_0000),
        },
        ..AllocRequest::default()
    };
    let mut a = m.allocate(&req).expect("import");
    assert_eq!(m.map(&mut a), Ok(HostVa::new(0x5555_0000_0000)));
    assert_eq!(
        a.origin(),
        Origin::Host {
            ptr: HostVa::new(0x5555_0000_0000),
            kind: HostImport::Pinned
        }
    );
    m.free(a);
    // Memory type 0 is not host-pointer capable (01744), and exports are refused (09860).
    let bad_type = AllocRequest {
        memory_type_index: 0,
        ..req
    };
    assert_eq!(
        m.allocate(&bad_type).map(|_| ()),
        Err(Vuid::HostMemoryType.into())
    );
    m.backend.refuse_host = true;
    assert!(matches!(
        m.allocate(&req),
        Err(Error::InvalidHandle(HandleError::HostRangeRefused {
            errno: errno::EFAULT,
            ..
        }))
    ));
    assert!(m.backend.objects.is_empty());
}

#[test]
#[cfg_attr(
    miri,
    ignore = "real memfds and /proc/self/fd, which Miri does not emulate"
)]
fn a_successful_fd_import_takes_the_fd_a_failed_one_does_not() {
    let _serial = FD_TESTS.lock();
    let before = open_fds();
    let mut m = manager();
    let fd = memfd(0x3000).into_raw_fd();
    // Too small: refused, and the fd is still the application's.
    let err = m
        .allocate(&fd_import(Types::DMA_BUF_EXT, fd, 0x4000))
        .expect_err("too small");
    assert_eq!(
        err,
        Error::InvalidHandle(HandleError::TooSmall {
            have: 0x3000,
            want: 0x4000
        })
    );
    assert!(is_open(fd));
    // Bind fails: still the application's, and the handle was dropped.
    m.backend.fail_bind = true;
    assert_eq!(
        m.allocate(&fd_import(Types::DMA_BUF_EXT, fd, 0x3000))
            .map(|_| ()),
        Err(Error::OutOfHostMemory)
    );
    assert!(is_open(fd));
    assert!(m.backend.objects.is_empty());
    m.backend.fail_bind = false;
    // Success: the fd is ours and closed.
    let a = m
        .allocate(&fd_import(Types::DMA_BUF_EXT, fd, 0x3000))
        .expect("import");
    assert!(!is_open(fd));
    m.free(a);
    assert_eq!(open_fds(), before, "fd leak");
    // A closed or negative fd is 00670.
    assert_eq!(
        m.allocate(&fd_import(Types::DMA_BUF_EXT, fd, 0x1000))
            .map(|_| ()),
        Err(Vuid::FdValid.into())
    );
    assert_eq!(
        m.allocate(&fd_import(Types::DMA_BUF_EXT, -1, 0x1000))
            .map(|_| ()),
        Err(Vuid::FdValid.into())
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "real memfds and /proc/self/fd, which Miri does not emulate"
)]
fn one_dma_buf_imported_twice_shares_a_refcounted_handle() {
    let _serial = FD_TESTS.lock();
    let before = open_fds();
    let mut m = manager();
    let owner = memfd(0x2000);
    let dup1 = rustix::io::fcntl_dupfd_cloexec(&owner, 0)
        .expect("dup")
        .into_raw_fd();
    let dup2 = rustix::io::fcntl_dupfd_cloexec(&owner, 0)
        .expect("dup")
        .into_raw_fd();
    let a = m
        .allocate(&fd_import(Types::DMA_BUF_EXT, dup1, 0x2000))
        .expect("first");
    let b = m
        .allocate(&fd_import(Types::DMA_BUF_EXT, dup2, 0x1000))
        .expect("second");
    assert_eq!(a.handle(), b.handle(), "the kernel hands back one handle");
    assert_ne!(
        a.gpu_va().expect("bound"),
        b.gpu_va().expect("bound"),
        "each import is its own VkDeviceMemory"
    );
    m.free(a);
    assert_eq!(
        m.backend.objects.len(),
        1,
        "still used by the second import"
    );
    m.free(b);
    assert!(m.backend.objects.is_empty());
    drop(owner);
    assert_eq!(open_fds(), before, "fd leak");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "real memfds and /proc/self/fd, which Miri does not emulate"
)]
fn opaque_fds_only_from_this_device() {
    let _serial = FD_TESTS.lock();
    let before = open_fds();
    let mut m = manager();
    let foreign = memfd(0x1000).into_raw_fd();
    assert_eq!(
        m.allocate(&fd_import(Types::OPAQUE_FD, foreign, 0x1000))
            .map(|_| ()),
        Err(Vuid::FdSameDevice.into())
    );
    assert!(is_open(foreign) && m.backend.objects.is_empty());
    // SAFETY: `foreign` is ours again after the failed import.
    drop(unsafe { OwnedFd::from_raw_fd(foreign) });

    let exported = m
        .allocate(&plain(0x1000, Types::OPAQUE_FD))
        .expect("exportable");
    let fd = m
        .get_fd(&exported, Types::OPAQUE_FD)
        .expect("export")
        .into_raw_fd();
    let imported = m
        .allocate(&fd_import(Types::OPAQUE_FD, fd, 0x1000))
        .expect("same device");
    assert_eq!(imported.handle(), exported.handle());
    m.free(imported);
    m.free(exported);
    m.backend.exports.clear();
    assert_eq!(open_fds(), before, "fd leak");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "real memfds and /proc/self/fd, which Miri does not emulate"
)]
fn every_export_is_a_new_cloexec_fd_and_only_of_exported_types() {
    let _serial = FD_TESTS.lock();
    let before = open_fds();
    let mut m = manager();
    let a = m
        .allocate(&plain(0x1000, Types::DMA_BUF_EXT))
        .expect("allocate");
    let f1 = m.get_fd(&a, Types::DMA_BUF_EXT).expect("export");
    let f2 = m.get_fd(&a, Types::DMA_BUF_EXT).expect("export");
    assert_ne!(f1.as_raw_fd(), f2.as_raw_fd());
    assert_eq!(identity(f1.as_fd()), identity(f2.as_fd()), "same buffer");
    assert!(rustix::io::fcntl_getfd(&f1)
        .expect("flags")
        .contains(rustix::io::FdFlags::CLOEXEC));
    assert_eq!(
        m.get_fd(&a, Types::OPAQUE_FD).map(|_| ()),
        Err(Vuid::GetFdExported.into())
    );
    assert_eq!(
        m.get_fd(&a, Types::HOST_ALLOCATION_EXT).map(|_| ()),
        Err(Vuid::GetFdHandleType.into())
    );
    drop((f1, f2));
    m.free(a);
    m.backend.exports.clear();
    assert_eq!(open_fds(), before, "fd leak");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "real memfds and /proc/self/fd, which Miri does not emulate"
)]
fn fd_properties_rules() {
    let _serial = FD_TESTS.lock();
    let mut m = manager();
    let buf = memfd(0x1000);
    assert_eq!(m.fd_properties(Types::DMA_BUF_EXT, buf.as_fd()), Ok(0b11));
    assert!(
        m.backend.objects.is_empty(),
        "the probe import was released"
    );
    assert_eq!(
        m.fd_properties(Types::OPAQUE_FD, buf.as_fd()),
        Err(Vuid::FdPropsNotOpaque.into())
    );
    let (r, _w) = rustix::pipe::pipe().expect("pipe");
    assert_eq!(
        m.fd_properties(Types::DMA_BUF_EXT, r.as_fd()),
        Err(Vuid::FdPropsValid.into())
    );
    // A probe of a dma-buf we hold must not close the live handle.
    let dup = rustix::io::fcntl_dupfd_cloexec(&buf, 0)
        .expect("dup")
        .into_raw_fd();
    let a = m
        .allocate(&fd_import(Types::DMA_BUF_EXT, dup, 0x1000))
        .expect("import");
    assert_eq!(m.fd_properties(Types::DMA_BUF_EXT, buf.as_fd()), Ok(0b11));
    assert_eq!(m.backend.objects.len(), 1);
    // 00648: a dma-buf import into a type fd_properties did not return.
    let narrow = MemoryManager::new(
        Fake::default(),
        LIMITS,
        VaAllocator::new(
            GpuVa::new(1 << 21),
            GpuVa::new(1 << 30),
            extmem_hw::profile::VGPU.page_sizes,
        ),
        0b01,
    );
    let mut narrow = narrow;
    let req = AllocRequest {
        memory_type_index: 1,
        ..fd_import(Types::DMA_BUF_EXT, buf.as_raw_fd(), 0x1000)
    };
    assert_eq!(
        narrow.allocate(&req).map(|_| ()),
        Err(Vuid::FdMemoryType.into())
    );
    m.free(a);
    // A device without dma-bufs says DMA_BUF is unsupported, without importing.
    let mut no_dma_buf = MemoryManager::new(
        Fake::default(),
        DeviceLimits {
            caps: DeviceCaps {
                dma_buf: false,
                ..LIMITS.caps
            },
            ..LIMITS
        },
        VaAllocator::new(
            GpuVa::new(1 << 21),
            GpuVa::new(1 << 30),
            extmem_hw::profile::VGPU.page_sizes,
        ),
        0b11,
    );
    assert_eq!(
        no_dma_buf.fd_properties(Types::DMA_BUF_EXT, buf.as_fd()),
        Err(Error::InvalidHandle(HandleError::Unsupported {
            handle_type: Types::DMA_BUF_EXT.as_raw()
        }))
    );
    assert_eq!(no_dma_buf.backend.next, 0, "nothing was imported");
}

#[test]
fn host_pointer_properties_of_an_unsupported_host_type_are_refused() {
    let limits = DeviceLimits {
        caps: DeviceCaps {
            host_mapped_foreign: false,
            ..LIMITS.caps
        },
        ..LIMITS
    };
    let va = VaAllocator::new(
        GpuVa::new(1 << 21),
        GpuVa::new(1 << 30),
        extmem_hw::profile::VGPU.page_sizes,
    );
    let mut m = MemoryManager::new(Fake::default(), limits, va, 0b11);
    let p = HostVa::new(0x10_0000);
    assert_eq!(
        m.host_pointer_properties(Types::HOST_MAPPED_FOREIGN_MEMORY_EXT, p),
        Err(Error::InvalidHandle(HandleError::Unsupported {
            handle_type: Types::HOST_MAPPED_FOREIGN_MEMORY_EXT.as_raw()
        }))
    );
    assert_eq!(
        m.host_pointer_properties(Types::HOST_ALLOCATION_EXT, p),
        Ok(0b10)
    );
}

#[test]
fn host_pointer_properties_rules() {
    let mut m = manager();
    let p = HostVa::new(0x10_0000);
    assert_eq!(
        m.host_pointer_properties(Types::HOST_ALLOCATION_EXT, p),
        Ok(0b10)
    );
    assert_eq!(
        m.host_pointer_properties(Types::DMA_BUF_EXT, p),
        Err(Vuid::HostPropsHandleType.into())
    );
    assert_eq!(
        m.host_pointer_properties(Types::HOST_ALLOCATION_EXT, HostVa::new(0x10_0010)),
        Err(Vuid::HostPropsPointerAligned.into())
    );
    assert!(matches!(
        m.host_pointer_properties(Types::HOST_MAPPED_FOREIGN_MEMORY_EXT, HostVa::ZERO),
        Err(Error::InvalidHandle(HandleError::HostRangeRefused { .. }))
    ));
    assert!(m.backend.objects.is_empty(), "a probe pins nothing");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "real memfds and /proc/self/fd, which Miri does not emulate"
)]
fn without_a_gpu_vm_memory_is_allocated_exported_and_mapped_but_never_bound() {
    let _serial = FD_TESTS.lock();
    let before = open_fds();
    let mut m = manager();
    m.backend.no_vm = true;
    let mut a = m
        .allocate(&plain(0x3000, Types::DMA_BUF_EXT))
        .expect("allocate without a VM");
    assert!(m.backend.bindings.is_empty(), "nothing to bind into");
    assert_eq!(a.gpu_va(), Err(Error::NotSupported { op: Op::Bind }));
    assert_eq!(
        a.gpu_va().map_err(Error::result),
        Err(vk::Result::ERROR_FEATURE_NOT_PRESENT)
    );
    assert!(m.map(&mut a).is_ok());
    let fd = m.get_fd(&a, Types::DMA_BUF_EXT).expect("export");
    let b = m
        .allocate(&fd_import(Types::DMA_BUF_EXT, fd.into_raw_fd(), 0x3000))
        .expect("import our own export");
    assert_eq!(a.handle(), b.handle());
    m.free(a);
    m.free(b);
    assert!(m.backend.objects.is_empty() && m.backend.bindings.is_empty());
    assert_eq!(m.live_handles(), 0);
    drop(m);
    assert_eq!(open_fds(), before, "fd leak");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "real memfds and /proc/self/fd, which Miri does not emulate"
)]
fn a_read_only_dma_buf_imports_but_is_not_mapped_for_writing() {
    let _serial = FD_TESTS.lock();
    let mut m = manager();
    let buf = memfd(0x2000);
    let dup = rustix::io::fcntl_dupfd_cloexec(&buf, 0).expect("dup");
    let mut a = m
        .allocate(&fd_import(Types::DMA_BUF_EXT, dup.into_raw_fd(), 0x2000))
        .expect("import");
    m.backend.read_only.push(a.handle().0.get());
    let err = m.map(&mut a).expect_err("read-only");
    assert_eq!(
        err,
        Error::MemoryMapFailed {
            errno: errno::EACCES
        }
    );
    assert_eq!(err.result(), vk::Result::ERROR_MEMORY_MAP_FAILED);
    assert!(std::format!("{err}").contains("read-only"), "{err}");
    // Nothing was mapped, so a later free has nothing to unmap; the import is intact.
    assert_eq!(m.live_handles(), 1);
    m.free(a);
    assert!(m.backend.objects.is_empty());
}

#[test]
fn a_backend_that_describes_no_device_has_no_copy_engine_and_no_parameters() {
    let mut fake = Fake::default();
    assert!(fake.engine().is_none());
    assert_eq!(
        fake.device_params(),
        Err(crate::device_params::ParamError::Kernel(Fake::err(
            Op::Info,
            crate::backend::errno::EOPNOTSUPP
        )))
    );
}
