//! `VkDeviceMemory` over a [`Backend`]: allocate, import, export, map, free — with the
//! ownership rules of the external-memory extensions.
//!
//! - A successful fd import takes the fd (closes it); a failed one leaves it with the
//!   application: the fd is closed only after the last step that can fail.
//! - Importing one dma-buf twice gives the same GEM handle from the kernel, so handles are
//!   reference-counted here and closed when the last `DeviceMemory` using them is freed.
//! - An opaque fd is accepted only if it came from this device: importing it must give
//!   back a native object of ours (a foreign dma-buf is refused with VUID 00668).
//! - Every export is a new close-on-exec fd owned by the caller.
//! - A host-pointer import maps back to the original pointer.
//! - Memory is bound into the GPU VM when the backend has one ([`Backend::vm`]); over a
//!   backend without (udmabuf, the dma-heap, a plain PRIME node) it is allocated, imported,
//!   exported and mapped all the same, and asking for its GPU address is an error.
//! - `vkMapMemory` maps for writing; memory whose dma-buf is read-only (imported from an
//!   `O_RDONLY` export) is refused with `VK_ERROR_MEMORY_MAP_FAILED` rather than handed out
//!   as a pointer whose first write kills the application: Vulkan has no read-only map, and
//!   a failed map is an error the application can handle.

use alloc::collections::BTreeMap;

use ash::vk;
use extmem_hw::{Alignment, GpuVa, HostVa};
#[cfg(not(windows))]
use rustix::fd::{BorrowedFd, FromRawFd, OwnedFd};
#[cfg(not(windows))]
use rustix::fs::SeekFrom;

use crate::alloc_info::{AllocRequest, DeviceLimits, Import};
#[cfg(not(windows))]
use crate::backend::ObjectOrigin;
use crate::backend::{errno, Backend, BackendError, CpuAccess, GemHandle, HostImport, Op};
use crate::error::{Error, HandleError, Vuid};
use crate::va_allocator::VaAllocator;

mod win32;

pub use win32::{khr_type_of_nv, NtExport};

type Types = vk::ExternalMemoryHandleTypeFlags;

/// Where a `DeviceMemory`'s pages came from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Origin {
    /// Allocated by this device.
    Allocated,
    /// A host pointer import.
    Host {
        /// The application's pointer.
        ptr: HostVa,
        /// Pinned, or a foreign dma-buf behind a CPU mapping.
        kind: HostImport,
    },
    /// An fd import of this handle type.
    Fd(Types),
    /// A Win32 import (NT handle, name or global-share token) of this handle type.
    Win32(Types),
}

/// One `VkDeviceMemory`.
#[derive(Debug)]
pub struct DeviceMemory {
    handle: GemHandle,
    size: u64,
    bound: u64,
    va: Option<GpuVa>,
    origin: Origin,
    export: Types,
    export_nv: vk::ExternalMemoryHandleTypeFlagsNV,
    memory_type_index: u32,
    cpu_map: Option<HostVa>,
    nt_export: NtExport,
}

impl DeviceMemory {
    /// `allocationSize`.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the GPU sees it; [`Error::NotSupported`] over a backend without a GPU VM.
    pub fn gpu_va(&self) -> Result<GpuVa, Error> {
        self.va.ok_or(Error::NotSupported { op: Op::Bind })
    }

    /// Where its pages came from.
    #[must_use]
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The memory type it was allocated from.
    #[must_use]
    pub fn memory_type_index(&self) -> u32 {
        self.memory_type_index
    }

    /// The GEM handle (shared by every import of the same dma-buf).
    #[must_use]
    pub fn handle(&self) -> GemHandle {
        self.handle
    }
}

/// The memory of one device.
#[derive(Debug)]
pub struct MemoryManager<B: Backend> {
    backend: B,
    limits: DeviceLimits,
    // Windows has no dma-bufs: only the fd paths read it.
    #[cfg_attr(windows, allow(dead_code))]
    dma_buf_types: u32,
    va: VaAllocator,
    refs: BTreeMap<GemHandle, u32>,
}

impl<B: Backend> MemoryManager<B> {
    /// A manager over `backend`. `va` is the GPU VA space userspace hands out;
    /// `dma_buf_types` the memory types a dma-buf can be imported into.
    pub fn new(backend: B, limits: DeviceLimits, va: VaAllocator, dma_buf_types: u32) -> Self {
        Self {
            backend,
            limits,
            dma_buf_types,
            va,
            refs: BTreeMap::new(),
        }
    }

    /// The backend, for commands that are not about memory (exec).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// GEM handles held, for leak checks.
    #[must_use]
    pub fn live_handles(&self) -> usize {
        self.refs.len()
    }

    /// `vkAllocateMemory`: validates the request, creates or imports the pages and binds
    /// them into the GPU VM if the backend has one. On failure nothing is left behind and
    /// an imported fd is still the application's.
    pub fn allocate(&mut self, req: &AllocRequest) -> Result<DeviceMemory, Error> {
        req.validate(&self.limits)?;
        let page = Alignment::SIZE_4K;
        let mut nt_export = NtExport::default();
        // The fd a successful fd import takes from the application.
        let (handle, origin, bound, fd_to_take): (_, _, _, Option<i32>) = match req.import {
            Import::None => {
                // The kernel makes objects of whole CPU pages (16 KiB on some arm64 kernels),
                // and minImportedHostPointerAlignment is never finer than the CPU page.
                let object_page = self.limits.min_import_alignment.max(page);
                let bound = object_page
                    .align_up(req.size)
                    .ok_or(Error::OutOfDeviceMemory)?;
                let nv_nt = req
                    .export_nv
                    .contains(vk::ExternalMemoryHandleTypeFlagsNV::OPAQUE_WIN32);
                let handle = if req.export.contains(Types::OPAQUE_WIN32) || nv_nt {
                    // The object's name and security descriptor are set at creation.
                    let request = req
                        .export_win32_info
                        .or(req.export_win32_nv)
                        .unwrap_or_default();
                    let (handle, export) = self.create_win32(bound, &request)?;
                    nt_export = export;
                    handle
                } else {
                    self.backend
                        .create(bound)
                        .map_err(|e| e.to_error(HostVa::ZERO, bound))?
                };
                (handle, Origin::Allocated, bound, None)
            }
            Import::HostPointer { ptr, .. } => {
                // Validation checked alignment, so the size is page-aligned already.
                let imported = self
                    .backend
                    .import_host(ptr, req.size, false, false)
                    .map_err(|e| e.to_error(ptr, req.size))?;
                let (handle, kind) =
                    imported.ok_or(Error::InvalidHandle(HandleError::HostRangeRefused {
                        ptr: ptr.get(),
                        size: req.size,
                        errno: errno::EINVAL,
                    }))?;
                (handle, Origin::Host { ptr, kind }, req.size, None)
            }
            #[cfg(not(windows))]
            Import::Fd { handle_type, fd } => {
                let handle = self.import_fd(handle_type, fd, req)?;
                let bound = page.align_up(req.size).ok_or(Error::OutOfDeviceMemory)?;
                (handle, Origin::Fd(handle_type), bound, Some(fd))
            }
            #[cfg(windows)]
            Import::Fd { handle_type, .. } => {
                return Err(Error::InvalidHandle(HandleError::Unsupported {
                    handle_type: handle_type.as_raw(),
                }))
            }
            Import::Win32 {
                handle_type,
                handle,
                name,
            } => {
                let gem = self.import_win32(handle_type, handle, name, req)?;
                let bound = page.align_up(req.size).ok_or(Error::OutOfDeviceMemory)?;
                (gem, Origin::Win32(handle_type), bound, None)
            }
            Import::Win32Nv {
                handle_type,
                handle,
            } => {
                let khr = khr_type_of_nv(handle_type).ok_or(Error::InvalidHandle(
                    HandleError::Unsupported {
                        handle_type: handle_type.as_raw(),
                    },
                ))?;
                let gem = self.import_win32(khr, handle, core::ptr::null(), req)?;
                let bound = page.align_up(req.size).ok_or(Error::OutOfDeviceMemory)?;
                (gem, Origin::Win32(khr), bound, None)
            }
        };
        *self.refs.entry(handle).or_insert(0) += 1;
        let va = match self.bind(handle, bound) {
            Ok(va) => va,
            Err(e) => {
                self.unref(handle);
                return Err(e);
            }
        };
        #[cfg(windows)]
        debug_assert!(fd_to_take.is_none());
        #[cfg(not(windows))]
        if let Some(fd) = fd_to_take {
            // SAFETY: the import succeeded, so Vulkan transfers ownership of `fd` to us
            // (VkImportMemoryFdInfoKHR); nothing else in this process closes it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Ok(DeviceMemory {
            handle,
            size: req.size,
            bound,
            va,
            origin,
            export: req.export,
            export_nv: req.export_nv,
            memory_type_index: req.memory_type_index,
            cpu_map: None,
            nt_export,
        })
    }

    /// Binds the whole object at a new VA when the backend has a GPU VM.
    fn bind(&mut self, handle: GemHandle, bound: u64) -> Result<Option<GpuVa>, Error> {
        let Some(vm) = self.backend.vm() else {
            return Ok(None);
        };
        let page = Alignment::SIZE_4K;
        let va = self
            .va
            .allocate(bound, page)
            .map_err(|_| Error::OutOfDeviceMemory)?;
        if let Err(e) = vm.bind(handle, va, 0, bound, false) {
            let _ = self.va.free(va);
            return Err(e.to_error(HostVa::ZERO, bound));
        }
        Ok(Some(va))
    }

    #[cfg(not(windows))]
    /// Imports an fd without taking it. Checks the fd, its size and (for opaque fds) that
    /// it came from this device.
    fn import_fd(
        &mut self,
        handle_type: Types,
        fd: i32,
        req: &AllocRequest,
    ) -> Result<GemHandle, Error> {
        if fd < 0 {
            return Err(Vuid::FdValid.into());
        }
        // SAFETY: the fd number is only used for syscalls below, which fail with EBADF if
        // it is not open; the application keeps ownership until we succeed.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let have =
            rustix::fs::seek(borrowed, SeekFrom::End(0)).map_err(|_| Error::from(Vuid::FdValid))?;
        if have < req.size {
            return Err(Error::InvalidHandle(HandleError::TooSmall {
                have,
                want: req.size,
            }));
        }
        if handle_type == Types::DMA_BUF_EXT
            && (self.dma_buf_types >> req.memory_type_index) & 1 == 0
        {
            return Err(Vuid::FdMemoryType.into());
        }
        let handle = self
            .backend
            .import_shared(borrowed)
            .map_err(|e| match e.errno {
                errno::ENOMEM => Error::OutOfHostMemory,
                errno::ENOSPC => Error::TooManyObjects,
                _ => Error::from(Vuid::FdValid),
            })?;
        if handle_type == Types::OPAQUE_FD {
            let origin = self.backend.info(handle).map(|(_, origin)| origin);
            if origin != Ok(ObjectOrigin::Native) {
                self.release_if_unused(handle);
                return Err(Vuid::FdSameDevice.into());
            }
        }
        Ok(handle)
    }

    /// `vkFreeMemory`.
    pub fn free(&mut self, memory: DeviceMemory) {
        if let Some(ptr) = memory.cpu_map {
            self.backend.unmap(ptr, memory.bound);
        }
        if let (Some(va), Some(vm)) = (memory.va, self.backend.vm()) {
            // An unbind failure can only mean the VM is already gone with the device.
            let _ = vm.unbind(va, memory.bound);
            let _ = self.va.free(va);
        }
        self.unref(memory.handle);
    }

    #[cfg(not(windows))]
    /// `vkGetMemoryFdKHR`: a new close-on-exec fd the caller owns.
    pub fn get_fd(&mut self, memory: &DeviceMemory, handle_type: Types) -> Result<OwnedFd, Error> {
        if handle_type != Types::OPAQUE_FD && handle_type != Types::DMA_BUF_EXT {
            return Err(Vuid::GetFdHandleType.into());
        }
        if !memory.export.contains(handle_type) {
            return Err(Vuid::GetFdExported.into());
        }
        self.backend
            .export_shared(memory.handle)
            .map_err(|e| e.to_error(HostVa::ZERO, memory.size))
    }

    #[cfg(not(windows))]
    /// `vkGetMemoryFdPropertiesKHR`: the memory types a dma-buf can be imported into.
    pub fn fd_properties(&mut self, handle_type: Types, fd: BorrowedFd<'_>) -> Result<u32, Error> {
        if handle_type == Types::OPAQUE_FD {
            return Err(Vuid::FdPropsNotOpaque.into());
        }
        // A device without dma-bufs (the software device's memfds are not) answers no
        // fd as one, rather than probing it with an import that would accept its own.
        if handle_type != Types::DMA_BUF_EXT || !self.limits.caps.dma_buf {
            return Err(Error::InvalidHandle(HandleError::Unsupported {
                handle_type: handle_type.as_raw(),
            }));
        }
        // The only reliable test of "a dma-buf this device can import" is the import.
        let handle = self
            .backend
            .import_shared(fd)
            .map_err(|_| Error::from(Vuid::FdPropsValid))?;
        self.release_if_unused(handle);
        Ok(self.dma_buf_types)
    }

    /// `vkGetMemoryHostPointerPropertiesEXT`: checks (without pinning) that the aligned
    /// range of one import unit at `ptr` is importable and returns the host-visible types.
    pub fn host_pointer_properties(
        &mut self,
        handle_type: Types,
        ptr: HostVa,
    ) -> Result<u32, Error> {
        if handle_type != Types::HOST_ALLOCATION_EXT
            && handle_type != Types::HOST_MAPPED_FOREIGN_MEMORY_EXT
        {
            return Err(Vuid::HostPropsHandleType.into());
        }
        // A host type this device cannot import (the software device has no foreign
        // memory) is no handle it can describe.
        let caps = self.limits.caps;
        let supported = if handle_type == Types::HOST_ALLOCATION_EXT {
            caps.host_allocation
        } else {
            caps.host_mapped_foreign
        };
        if !supported {
            return Err(Error::InvalidHandle(HandleError::Unsupported {
                handle_type: handle_type.as_raw(),
            }));
        }
        let align = self.limits.min_import_alignment;
        if !ptr.is_aligned(align) {
            return Err(Vuid::HostPropsPointerAligned.into());
        }
        self.backend
            .import_host(ptr, align.get(), false, true)
            .map_err(|e| e.to_error(ptr, align.get()))?;
        Ok(self.limits.host_pointer_types)
    }

    /// `vkMapMemory`: the CPU address of byte 0, readable and writable. A host-pointer
    /// import returns the application's own pointer; other memory is mapped once and the
    /// mapping reused. Memory whose dma-buf is read-only fails with
    /// `VK_ERROR_MEMORY_MAP_FAILED` (errno `EACCES`), see the module documentation.
    pub fn map(&mut self, memory: &mut DeviceMemory) -> Result<HostVa, Error> {
        if let Origin::Host { ptr, .. } = memory.origin {
            return Ok(ptr);
        }
        if let Some(ptr) = memory.cpu_map {
            return Ok(ptr);
        }
        let ptr = self
            .backend
            .map(memory.handle, memory.bound, CpuAccess::ReadWrite)
            .map_err(|e: BackendError| e.to_error(HostVa::ZERO, memory.bound))?;
        memory.cpu_map = Some(ptr);
        Ok(ptr)
    }

    fn unref(&mut self, handle: GemHandle) {
        match self.refs.get_mut(&handle) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                self.refs.remove(&handle);
                self.backend.close(handle);
            }
            None => self.backend.close(handle),
        }
    }

    /// Closes `handle` unless a live `DeviceMemory` uses it (a probe import of a dma-buf
    /// we already hold returns that same handle).
    fn release_if_unused(&mut self, handle: GemHandle) {
        if !self.refs.contains_key(&handle) {
            self.backend.close(handle);
        }
    }
}

// The fake backend's dma-bufs are memfds.
#[cfg(test)]
#[cfg(not(windows))]
mod tests;
