//! A driver's kernel, reached through the C callbacks of an [`ExtmemBackend`] table and
//! adapted to the memory manager's [`Backend`] and [`GpuVm`] traits: the driver keeps
//! its own ioctls (`GEM_USERPTR`, PRIME, `VM_BIND`) and extmem keeps the Vulkan rules.
//!
//! Every value a callback hands back is checked here before the manager sees it: a zero
//! object handle, a negative fd or a null mapping is the driver's error, reported as
//! `EINVAL` for the operation, never trusted.

use core::ffi::{c_int, c_void};
use core::num::NonZeroU32;

use extmem::backend::{
    errno, Backend, BackendError, CpuAccess, GemHandle, GpuVm, HostImport, ObjectOrigin, Op,
};
use extmem::os_handle::{BorrowedOsHandle, OwnedOsHandle};
use extmem_hw::{GpuVa, HostVa};
use rustix::fd::{AsRawFd, FromRawFd};

/// The value of `extmem_backend.version` this library understands.
pub const EXTMEM_BACKEND_VERSION: u32 = 1;

/// `extmem_backend.caps`: the device imports and exports opaque fds
/// (`VK_KHR_external_memory_fd`); `import_fd`, `export_fd` and `info` are required.
pub const EXTMEM_CAP_OPAQUE_FD: u32 = 1 << 0;
/// `extmem_backend.caps`: the device imports and exports dma-bufs
/// (`VK_EXT_external_memory_dma_buf`); `import_fd` and `export_fd` are required.
pub const EXTMEM_CAP_DMA_BUF: u32 = 1 << 1;
/// `extmem_backend.caps`: the device imports host allocations
/// (`VK_EXT_external_memory_host`, `HOST_ALLOCATION`); `import_host` is required.
pub const EXTMEM_CAP_HOST_ALLOCATION: u32 = 1 << 2;
/// `extmem_backend.caps`: the device imports CPU mappings of other devices' buffers
/// (`HOST_MAPPED_FOREIGN_MEMORY`); `import_host` is required.
pub const EXTMEM_CAP_HOST_MAPPED_FOREIGN: u32 = 1 << 3;
/// Every capability bit this version knows.
pub const EXTMEM_CAPS_ALL: u32 = EXTMEM_CAP_OPAQUE_FD
    | EXTMEM_CAP_DMA_BUF
    | EXTMEM_CAP_HOST_ALLOCATION
    | EXTMEM_CAP_HOST_MAPPED_FOREIGN;

/// What `info` reports as an object's origin: created by this device (so exportable as
/// an opaque fd of this device).
pub const EXTMEM_ORIGIN_NATIVE: u32 = 0;
/// What `info` reports as an object's origin: pinned user memory.
pub const EXTMEM_ORIGIN_USERPTR: u32 = 1;
/// What `info` reports as an object's origin: imported from another device's dma-buf.
pub const EXTMEM_ORIGIN_IMPORTED: u32 = 2;

/// A driver's kernel as a table of C callbacks, given to `extmem_device_create`, which
/// copies the table (the caller may free it after the call) but not what `user` points
/// to: that must stay valid until `extmem_device_destroy` returns.
///
/// Every callback gets `user` first and returns 0 or an errno value (positive, or the
/// kernel's negative `-errno`, which is read as its absolute value). Callbacks of one
/// device are never called concurrently (libextmem serialises each device), but may be
/// called from any thread that calls libextmem. They must not call back into libextmem
/// for the same device. Object handles are the driver's own names (GEM handles), never 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExtmemBackend {
    /// Must be `EXTMEM_BACKEND_VERSION`.
    pub version: u32,
    /// `EXTMEM_CAP_*` bits: which handle types the device imports and exports.
    pub caps: u32,
    /// `VkPhysicalDeviceMemoryProperties::memoryTypeCount`: 1 to 32.
    pub memory_type_count: u32,
    /// The memory types a host pointer may be imported into (what
    /// `vkGetMemoryHostPointerPropertiesEXT` answers): a bit per type, within
    /// `memory_type_count`.
    pub host_pointer_types: u32,
    /// The memory types a dma-buf may be imported into (what `vkGetMemoryFdPropertiesKHR`
    /// answers): a bit per type, within `memory_type_count`.
    pub dma_buf_types: u32,
    /// `minImportedHostPointerAlignment`: a power of two from 4096 to 65536.
    pub min_import_alignment: u64,
    /// Width of the GPU VA space in bits, 32 to 48; libextmem hands out VAs from 2 MiB
    /// up to `1 << va_bits` when `bind` is set.
    pub va_bits: u32,
    /// The GPU MMU's page and block sizes as a mask of sizes in bytes (`0x1000` for 4 KiB
    /// pages, `| 0x200000` for 2 MiB blocks, ...); 4 KiB must be among them.
    pub page_sizes: u64,
    /// The driver's context, handed to every callback; libextmem never dereferences it.
    pub user: *mut c_void,
    /// Creates device memory of `size` bytes (a multiple of 4096) that can be exported,
    /// storing its handle in `*handle`. NULL: the device allocates no memory of its own.
    pub create:
        Option<unsafe extern "C" fn(user: *mut c_void, size: u64, handle: *mut u32) -> c_int>,
    /// Imports (pins) `[ptr, ptr + size)`, read-only to the GPU if `read_only`. With
    /// `probe`, only checks that it could and creates nothing. On success stores the
    /// handle in `*handle` and whether the range turned out to be a CPU mapping of another
    /// device's buffer (imported as that buffer) in `*foreign`. The application keeps
    /// the memory; the pages must stay pinned until `close`. Required for the host caps.
    pub import_host: Option<
        unsafe extern "C" fn(
            user: *mut c_void,
            ptr: *mut c_void,
            size: u64,
            read_only: bool,
            probe: bool,
            handle: *mut u32,
            foreign: *mut bool,
        ) -> c_int,
    >,
    /// Imports the dma-buf (or opaque fd) `fd` (PRIME import), storing the handle. The fd
    /// stays the caller's: the callback must not close it. Importing the same buffer twice
    /// may return the same handle (libextmem counts references and calls `close` once).
    pub import_fd:
        Option<unsafe extern "C" fn(user: *mut c_void, fd: c_int, handle: *mut u32) -> c_int>,
    /// Exports the object as a new dma-buf fd (PRIME export, read-write) in `*fd`, which
    /// libextmem then owns (it sets close-on-exec if the driver did not).
    pub export_fd:
        Option<unsafe extern "C" fn(user: *mut c_void, handle: u32, fd: *mut c_int) -> c_int>,
    /// The object's size in bytes and its origin (`EXTMEM_ORIGIN_*`): how an opaque fd is
    /// told to be this device's own memory.
    pub info: Option<
        unsafe extern "C" fn(
            user: *mut c_void,
            handle: u32,
            size: *mut u64,
            origin: *mut u32,
        ) -> c_int,
    >,
    /// Drops the handle (`GEM_CLOSE`). Required.
    pub close: Option<unsafe extern "C" fn(user: *mut c_void, handle: u32)>,
    /// Maps the first `size` bytes of the object for the CPU, readable and, if
    /// `writable`, writable, storing the address in `*ptr`. Fails with `EACCES` for a
    /// writable map of a read-only buffer. NULL: memory cannot be mapped.
    pub map: Option<
        unsafe extern "C" fn(
            user: *mut c_void,
            handle: u32,
            size: u64,
            writable: bool,
            ptr: *mut *mut c_void,
        ) -> c_int,
    >,
    /// Undoes `map` (called before the object's `close`).
    pub unmap: Option<unsafe extern "C" fn(user: *mut c_void, ptr: *mut c_void, size: u64)>,
    /// Maps `[offset, offset + size)` of the object at GPU address `va` (`VM_BIND`).
    /// NULL (with `unbind` NULL): the device has no GPU VM and memory is not bound.
    pub bind: Option<
        unsafe extern "C" fn(
            user: *mut c_void,
            handle: u32,
            va: u64,
            offset: u64,
            size: u64,
            read_only: bool,
        ) -> c_int,
    >,
    /// Removes the binding at `va` of `size` bytes. Required with `bind`.
    pub unbind: Option<unsafe extern "C" fn(user: *mut c_void, va: u64, size: u64) -> c_int>,
}

/// A callback's return value as a [`BackendError`] of `op`, or success.
fn check(op: Op, rc: c_int) -> Result<(), BackendError> {
    if rc == 0 {
        return Ok(());
    }
    let errno = rc.checked_abs().unwrap_or(errno::EINVAL);
    Err(BackendError { op, errno })
}

/// The driver broke the callback contract (a zero handle, a negative fd, a null map).
fn contract(op: Op) -> BackendError {
    BackendError {
        op,
        errno: errno::EINVAL,
    }
}

/// A callback the device does not have.
fn missing(op: Op) -> BackendError {
    BackendError {
        op,
        errno: errno::EOPNOTSUPP,
    }
}

fn gem(op: Op, raw: u32) -> Result<GemHandle, BackendError> {
    NonZeroU32::new(raw).map(GemHandle).ok_or(contract(op))
}

/// An [`ExtmemBackend`] as the manager's [`Backend`].
///
/// # Invariants
/// `table` passed `extmem_device_create`'s checks, and its `user` stays valid (the
/// caller's promise) for as long as this value lives.
#[derive(Debug)]
pub struct CBackend {
    table: ExtmemBackend,
}

// SAFETY: the table is plain data and function pointers; `user` is only handed back to
// the driver's callbacks, which the header allows on any thread, one call per device at a
// time (every device sits behind its own mutex).
unsafe impl Send for CBackend {}

impl CBackend {
    /// Wraps a table `extmem_device_create` checked.
    pub fn new(table: ExtmemBackend) -> Self {
        Self { table }
    }
}

impl Backend for CBackend {
    fn create(&mut self, size: u64) -> Result<GemHandle, BackendError> {
        let create = self.table.create.ok_or(missing(Op::Create))?;
        let mut handle = 0u32;
        // SAFETY: the driver's callback with its own `user` and a pointer to a local.
        check(Op::Create, unsafe {
            create(self.table.user, size, &mut handle)
        })?;
        gem(Op::Create, handle)
    }

    fn import_host(
        &mut self,
        ptr: HostVa,
        size: u64,
        read_only: bool,
        probe: bool,
    ) -> Result<Option<(GemHandle, HostImport)>, BackendError> {
        let import = self.table.import_host.ok_or(missing(Op::ImportHost))?;
        let address = usize::try_from(ptr.get()).map_err(|_| contract(Op::ImportHost))?;
        let (mut handle, mut foreign) = (0u32, false);
        // SAFETY: the driver's callback; the pointer is the application's and only passed
        // on (the driver checks it as the kernel does), the outputs are locals.
        check(Op::ImportHost, unsafe {
            import(
                self.table.user,
                address as *mut c_void,
                size,
                read_only,
                probe,
                &mut handle,
                &mut foreign,
            )
        })?;
        if probe {
            return Ok(None);
        }
        let kind = if foreign {
            HostImport::Foreign
        } else {
            HostImport::Pinned
        };
        Ok(Some((gem(Op::ImportHost, handle)?, kind)))
    }

    fn import_shared(&mut self, os: BorrowedOsHandle<'_>) -> Result<GemHandle, BackendError> {
        let import = self.table.import_fd.ok_or(missing(Op::ImportDmaBuf))?;
        let mut handle = 0u32;
        // SAFETY: the driver's callback; the fd is borrowed for the call only.
        check(Op::ImportDmaBuf, unsafe {
            import(self.table.user, os.as_raw_fd(), &mut handle)
        })?;
        gem(Op::ImportDmaBuf, handle)
    }

    fn export_shared(&mut self, handle: GemHandle) -> Result<OwnedOsHandle, BackendError> {
        let export = self.table.export_fd.ok_or(missing(Op::ExportDmaBuf))?;
        let mut fd: c_int = -1;
        // SAFETY: the driver's callback with a pointer to a local.
        check(Op::ExportDmaBuf, unsafe {
            export(self.table.user, handle.0.get(), &mut fd)
        })?;
        if fd < 0 {
            return Err(contract(Op::ExportDmaBuf));
        }
        // SAFETY: the header gives the new fd to libextmem; nothing else closes it.
        let owned = unsafe { OwnedOsHandle::from_raw_fd(fd) };
        // Vulkan's exports are close-on-exec; a driver's PRIME export may not be.
        let flags = rustix::io::fcntl_getfd(&owned).map_err(|e| BackendError {
            op: Op::ExportDmaBuf,
            errno: e.raw_os_error(),
        })?;
        if !flags.contains(rustix::io::FdFlags::CLOEXEC) {
            rustix::io::fcntl_setfd(&owned, flags | rustix::io::FdFlags::CLOEXEC).map_err(|e| {
                BackendError {
                    op: Op::ExportDmaBuf,
                    errno: e.raw_os_error(),
                }
            })?;
        }
        Ok(owned)
    }

    fn info(&mut self, handle: GemHandle) -> Result<(u64, ObjectOrigin), BackendError> {
        let info = self.table.info.ok_or(missing(Op::Info))?;
        let (mut size, mut origin) = (0u64, u32::MAX);
        // SAFETY: the driver's callback with pointers to locals.
        check(Op::Info, unsafe {
            info(self.table.user, handle.0.get(), &mut size, &mut origin)
        })?;
        let origin = match origin {
            EXTMEM_ORIGIN_NATIVE => ObjectOrigin::Native,
            EXTMEM_ORIGIN_USERPTR => ObjectOrigin::Userptr,
            EXTMEM_ORIGIN_IMPORTED => ObjectOrigin::Imported,
            _ => return Err(contract(Op::Info)),
        };
        Ok((size, origin))
    }

    fn close(&mut self, handle: GemHandle) {
        if let Some(close) = self.table.close {
            // SAFETY: the driver's callback; the manager closes each handle once.
            unsafe { close(self.table.user, handle.0.get()) }
        }
    }

    fn map(
        &mut self,
        handle: GemHandle,
        size: u64,
        access: CpuAccess,
    ) -> Result<HostVa, BackendError> {
        let map = self.table.map.ok_or(missing(Op::Map))?;
        let mut ptr: *mut c_void = core::ptr::null_mut();
        let writable = access == CpuAccess::ReadWrite;
        // SAFETY: the driver's callback with a pointer to a local.
        check(Op::Map, unsafe {
            map(self.table.user, handle.0.get(), size, writable, &mut ptr)
        })?;
        if ptr.is_null() {
            return Err(contract(Op::Map));
        }
        Ok(HostVa::new(ptr as usize as u64))
    }

    fn unmap(&mut self, ptr: HostVa, size: u64) {
        let (Some(unmap), Ok(address)) = (self.table.unmap, usize::try_from(ptr.get())) else {
            return;
        };
        // SAFETY: the driver's callback, with an address its own `map` returned.
        unsafe { unmap(self.table.user, address as *mut c_void, size) }
    }

    fn vm(&mut self) -> Option<&mut dyn GpuVm> {
        if self.table.bind.is_some() && self.table.unbind.is_some() {
            Some(self)
        } else {
            None
        }
    }
}

impl GpuVm for CBackend {
    fn bind(
        &mut self,
        handle: GemHandle,
        va: GpuVa,
        offset: u64,
        size: u64,
        read_only: bool,
    ) -> Result<(), BackendError> {
        let bind = self.table.bind.ok_or(missing(Op::Bind))?;
        // SAFETY: the driver's callback with plain values.
        check(Op::Bind, unsafe {
            bind(
                self.table.user,
                handle.0.get(),
                va.get(),
                offset,
                size,
                read_only,
            )
        })
    }

    fn unbind(&mut self, va: GpuVa, size: u64) -> Result<(), BackendError> {
        let unbind = self.table.unbind.ok_or(missing(Op::Unbind))?;
        // SAFETY: the driver's callback with plain values.
        check(Op::Unbind, unsafe {
            unbind(self.table.user, va.get(), size)
        })
    }
}
