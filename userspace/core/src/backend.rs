//! The kernel side of memory, behind one trait and its optional capabilities.
//!
//! A backend speaks to one kernel driver: extmem-vgpu (the full set, [`crate::vgpu`]), any
//! DRM node over PRIME ([`crate::drm_prime`]: vgem, virtio-gpu), udmabuf or the system
//! dma-heap ([`crate::dma_buf_device`]). Every backend allocates, imports, exports and maps
//! memory objects ([`Backend`]); only a backend with a GPU address space also binds them
//! ([`GpuVm`], reached through [`Backend::vm`]), and only a whole device runs copy-engine
//! work ([`CopyEngine`], through [`Backend::engine`]) and describes itself
//! ([`Backend::device_params`]). The memory manager above holds the Vulkan rules; a
//! backend only does what the kernel does and reports the errno. A front end reaches the
//! device through these alone, never through the kernel's contract.
//!
//! To add a backend (a software device, another kernel driver): implement [`Backend`]; if
//! the device has a GPU VM, implement [`GpuVm`] too and return it from [`Backend::vm`];
//! if it has a copy engine, implement [`CopyEngine`] and return it from
//! [`Backend::engine`].
//! Handles are the backend's own names for objects (GEM handles for DRM drivers, table
//! indices otherwise), non-zero and unique among live objects of one backend.

use alloc::sync::Arc;
use core::fmt;
use core::num::NonZeroU32;

use extmem_hw::{GpuVa, HostVa};

use crate::device_params::{DeviceParams, ParamError};
use crate::error::{Error, HandleError};
use crate::exec::{Command, ExecError};
use crate::os_handle::{BorrowedOsHandle, OwnedOsHandle};
use crate::sync::{SyncPoint, Syncobjs};

/// A GEM handle: non-zero by construction.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct GemHandle(pub NonZeroU32);

/// What a host-range import turned out to be.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum HostImport {
    /// The pages were pinned.
    Pinned,
    /// The range lay in a CPU mapping of a dma-buf, which was imported instead.
    Foreign,
}

/// Where a GEM object came from, as the kernel reports it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ObjectOrigin {
    /// Created by this device (and so exportable as an opaque fd of this device).
    Native,
    /// Pinned user memory.
    Userptr,
    /// Imported from another device's dma-buf.
    Imported,
}

/// The kernel operation that failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Op {
    /// Creating device memory.
    Create,
    /// Pinning (or probing) a host range.
    ImportHost,
    /// PRIME import of a dma-buf.
    ImportDmaBuf,
    /// PRIME export of a dma-buf.
    ExportDmaBuf,
    /// Asking about an object.
    Info,
    /// Mapping into the GPU VM.
    Bind,
    /// Unmapping from the GPU VM.
    Unbind,
    /// Running copy-engine commands.
    Exec,
    /// Mapping memory for the CPU.
    Map,
    /// Creating, waiting for, signalling, resetting, querying or exporting a
    /// synchronisation object.
    Sync,
    /// Importing a synchronisation object or payload from an fd.
    ImportSync,
}

/// How the CPU may touch a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CpuAccess {
    /// Reads only (`PROT_READ`).
    Read,
    /// Reads and writes (`PROT_READ | PROT_WRITE`), what `vkMapMemory` hands out.
    ReadWrite,
}

/// A kernel call failed with `errno`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BackendError {
    /// What was being done.
    pub op: Op,
    /// The positive errno.
    pub errno: i32,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} failed with errno {}", self.op, self.errno)
    }
}

/// The errno values this layer interprets: the kernel contract's ([`extmem_uapi::errno`]),
/// under the name backends and their tests have always used.
pub use extmem_uapi::errno;

impl BackendError {
    /// The Vulkan-level error, per `../shared/SPEC.md`: a platform refusal of a host range
    /// or an fd is `VK_ERROR_INVALID_EXTERNAL_HANDLE`, running out of memory or the pin
    /// limit is `VK_ERROR_OUT_OF_HOST_MEMORY`, a full table is too many objects.
    #[must_use]
    pub fn to_error(self, ptr: HostVa, size: u64) -> Error {
        match (self.op, self.errno) {
            // Device memory over the device's budget (the heap it reports).
            (Op::Create, errno::ENOMEM) => Error::OutOfDeviceMemory,
            (_, errno::ENOMEM) => Error::OutOfHostMemory,
            (_, errno::ENOSPC) => Error::TooManyObjects,
            // A render node refuses dumb buffers (EACCES), a backend without a GPU VM binds
            // nothing (EOPNOTSUPP): the device lacks the feature, memory did not run out.
            (Op::Create | Op::Bind, errno::EOPNOTSUPP | errno::EACCES) => {
                Error::NotSupported { op: self.op }
            }
            (Op::ImportHost, errno) => Error::InvalidHandle(HandleError::HostRangeRefused {
                ptr: ptr.get(),
                size,
                errno,
            }),
            (Op::ImportDmaBuf, errno) => Error::InvalidHandle(HandleError::NotADmaBuf { errno }),
            (Op::ImportSync, errno) => Error::InvalidHandle(HandleError::NotASyncFd { errno }),
            (Op::Create | Op::Bind, _) => Error::OutOfDeviceMemory,
            (Op::Map, errno) => Error::MemoryMapFailed { errno },
            (Op::ExportDmaBuf | Op::Info | Op::Unbind | Op::Exec | Op::Sync, errno) => {
                Error::DeviceLost { errno }
            }
        }
    }
}

/// One kernel driver's memory objects: what every backend can do, with or without a GPU.
pub trait Backend {
    /// Memory of `size` bytes that this backend can export as a dma-buf.
    fn create(&mut self, size: u64) -> Result<GemHandle, BackendError>;
    /// Imports `[ptr, ptr + size)`; with `probe`, only checks it could (returns `None`).
    /// A backend that cannot import host memory fails with [`errno::EOPNOTSUPP`].
    fn import_host(
        &mut self,
        ptr: HostVa,
        size: u64,
        read_only: bool,
        probe: bool,
    ) -> Result<Option<(GemHandle, HostImport)>, BackendError>;
    /// Imports shared memory: a dma-buf (PRIME import) or the software device's memfd on
    /// Linux, a section handle of the software device on Windows. The handle stays the
    /// caller's. Importing the same object twice returns the same handle (the kernel's rule
    /// for PRIME); the caller counts references.
    fn import_shared(&mut self, os: BorrowedOsHandle<'_>) -> Result<GemHandle, BackendError>;
    /// Exports the object: a new close-on-exec, read-write dma-buf (or memfd) fd on Linux,
    /// a new section handle on Windows; the caller owns it.
    fn export_shared(&mut self, handle: GemHandle) -> Result<OwnedOsHandle, BackendError>;
    /// The object's size and origin.
    fn info(&mut self, handle: GemHandle) -> Result<(u64, ObjectOrigin), BackendError>;
    /// Drops the handle.
    fn close(&mut self, handle: GemHandle);
    /// A CPU mapping of the first `size` bytes of the object (for memory that is not a
    /// host import): device memory and imported dma-bufs. Asking for
    /// [`CpuAccess::ReadWrite`] on an object whose dma-buf is read-only fails with
    /// `EACCES` before anything is mapped.
    fn map(
        &mut self,
        handle: GemHandle,
        size: u64,
        access: CpuAccess,
    ) -> Result<HostVa, BackendError>;
    /// Undoes [`Backend::map`].
    fn unmap(&mut self, ptr: HostVa, size: u64);
    /// The GPU address space, if this backend has one. udmabuf, the dma-heap and a plain
    /// PRIME node only allocate and share memory: they answer `None` (the default), and the
    /// memory manager then allocates without binding.
    fn vm(&mut self) -> Option<&mut dyn GpuVm> {
        None
    }

    /// Windows sharing (NT handles, names, global-share tokens), if this backend has it:
    /// the software device on Windows. Every other backend answers `None` (the default).
    fn win32(&mut self) -> Option<&mut dyn Win32Sharing> {
        None
    }

    /// The copy engine, if this backend drives a device with one: extmem-vgpu and the
    /// software device. Memory-only backends answer `None` (the default).
    fn engine(&mut self) -> Option<&mut dyn CopyEngine> {
        None
    }

    /// The device's synchronisation objects, if it has a copy engine to signal them:
    /// extmem-vgpu's DRM syncobjs and the software device's own. Shared (`Arc`) so that a
    /// front end waits on them without holding the backend. Memory-only backends answer
    /// `None` (the default).
    fn syncobjs(&self) -> Option<Arc<dyn Syncobjs>> {
        None
    }

    /// What the device says about itself, checked: extmem-vgpu and the software device.
    /// A backend that describes no device (the default) fails with
    /// [`errno::EOPNOTSUPP`].
    fn device_params(&self) -> Result<DeviceParams, ParamError> {
        Err(ParamError::Kernel(BackendError {
            op: Op::Info,
            errno: errno::EOPNOTSUPP,
        }))
    }
}

/// The copy engine of a [`Backend`]'s device: it runs [`Command`]s on the memory bound in
/// its [`GpuVm`], reaching every byte through the GPU page tables.
pub trait CopyEngine {
    /// Runs `cmds` in order, at most [`crate::exec::MAX_COMMANDS`] of them, and returns
    /// when they have run. On a fault the commands before the faulting one have run and
    /// none after it.
    fn exec(&mut self, cmds: &[Command]) -> Result<(), ExecError>;
    /// Queues `cmds` (1..=[`crate::exec::MAX_COMMANDS`]) to run after every earlier
    /// submission and after `waits` are signalled, and has the job signal `signals` when
    /// it has run; returns once it is queued. Every wait must already have its signal
    /// submitted (a DRM syncobj without a fence is `EINVAL`). A GPU fault is reported
    /// through the signalled objects, not here.
    fn submit(
        &mut self,
        cmds: &[Command],
        waits: &[SyncPoint],
        signals: &[SyncPoint],
    ) -> Result<(), ExecError>;
}

/// A raw Windows `HANDLE` value (`VkImportMemoryWin32HandleInfoKHR::handle`,
/// what `vkGetMemoryWin32HandleKHR` returns). It is only an integer until the OS checks it.
pub type RawWin32Handle = isize;

/// What `VkExportMemoryWin32HandleInfoKHR` asks of the memory's NT handles.
#[derive(Clone, Copy, Debug)]
pub struct Win32ExportInfo<'a> {
    /// `pAttributes->lpSecurityDescriptor` (null: the default descriptor), applied to the
    /// object when it is created.
    pub security_descriptor: *const core::ffi::c_void,
    /// `pAttributes->bInheritHandle`: whether exported NT handles are inheritable.
    pub inherit: bool,
    /// `dwAccess` (0: read and write access to the memory).
    pub access: u32,
    /// `name` without its terminating NUL, if the object is to be named.
    pub name: Option<&'a [u16]>,
}

impl Default for Win32ExportInfo<'_> {
    fn default() -> Self {
        Self {
            security_descriptor: core::ptr::null(),
            inherit: false,
            access: 0,
            name: None,
        }
    }
}

/// Windows sharing of a [`Backend`]'s memory objects (`VK_KHR_external_memory_win32`).
///
/// Raw handle values come from the application and are checked by the OS (a value that
/// is not a handle of this device's memory fails with [`errno::EBADF`] or
/// [`errno::EINVAL`]); imports never take ownership of the application's handle.
pub trait Win32Sharing {
    /// Memory of `size` bytes created as `export` asks (security descriptor, name).
    fn create_exportable(
        &mut self,
        size: u64,
        export: &Win32ExportInfo<'_>,
    ) -> Result<GemHandle, BackendError>;
    /// Imports the object behind an NT handle (OPAQUE_WIN32), leaving the handle open.
    fn import_nt(&mut self, handle: RawWin32Handle) -> Result<GemHandle, BackendError>;
    /// Imports the named object (OPAQUE_WIN32 by name); `name` has no NUL.
    fn import_name(&mut self, name: &[u16]) -> Result<GemHandle, BackendError>;
    /// Imports the object behind a global-share token (OPAQUE_WIN32_KMT).
    fn import_global(&mut self, token: RawWin32Handle) -> Result<GemHandle, BackendError>;
    /// A new NT handle to the object, which the caller owns and closes: with `access`
    /// rights (0: read and write), inheritable if `inherit`.
    fn export_nt(
        &mut self,
        handle: GemHandle,
        access: u32,
        inherit: bool,
    ) -> Result<RawWin32Handle, BackendError>;
    /// The object's global-share token: the same value every call, valid (in any process)
    /// while the object lives, never closed by the application.
    fn export_global(&mut self, handle: GemHandle) -> Result<RawWin32Handle, BackendError>;
}

/// A GPU virtual address space objects of a [`Backend`] can be bound into.
pub trait GpuVm {
    /// Maps `[offset, offset + size)` of the object at `va` in the GPU VM.
    fn bind(
        &mut self,
        handle: GemHandle,
        va: GpuVa,
        offset: u64,
        size: u64,
        read_only: bool,
    ) -> Result<(), BackendError>;
    /// Removes the binding at `va` of `size` bytes.
    fn unbind(&mut self, va: GpuVa, size: u64) -> Result<(), BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ash::vk;

    #[test]
    fn kernel_errors_map_to_the_results_the_spec_names() {
        let e = |op, errno| {
            BackendError { op, errno }
                .to_error(HostVa::new(0x1000), 0x1000)
                .result()
        };
        assert_eq!(
            e(Op::ImportHost, errno::EFAULT),
            vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
        );
        assert_eq!(
            e(Op::ImportHost, errno::ENOMEM),
            vk::Result::ERROR_OUT_OF_HOST_MEMORY
        );
        assert_eq!(
            e(Op::ImportDmaBuf, errno::EINVAL),
            vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
        );
        assert_eq!(
            e(Op::Bind, errno::ENOSPC),
            vk::Result::ERROR_TOO_MANY_OBJECTS
        );
        assert_eq!(
            e(Op::Create, errno::EINVAL),
            vk::Result::ERROR_OUT_OF_DEVICE_MEMORY
        );
        assert_eq!(
            e(Op::Create, errno::ENOMEM),
            vk::Result::ERROR_OUT_OF_DEVICE_MEMORY
        );
        assert_eq!(
            e(Op::Map, errno::EINVAL),
            vk::Result::ERROR_MEMORY_MAP_FAILED
        );
        assert_eq!(e(Op::Exec, errno::EIO), vk::Result::ERROR_DEVICE_LOST);
        assert_eq!(
            e(Op::Create, errno::EACCES),
            vk::Result::ERROR_FEATURE_NOT_PRESENT
        );
        assert_eq!(
            e(Op::ImportHost, errno::EOPNOTSUPP),
            vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
        );
        assert_eq!(
            e(Op::ImportDmaBuf, errno::ENODEV),
            vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
        );
    }
}
