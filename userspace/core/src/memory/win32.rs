//! `VK_KHR_external_memory_win32` over a backend's [`Win32Sharing`]: creating memory as
//! `VkExportMemoryWin32HandleInfoKHR` asks, importing by NT handle, name or global-share
//! (KMT) token, and exporting NT handles (the application's, at most one per memory) and
//! KMT tokens (the memory's, never closed).
//!
//! The rules that need no OS object are checked in [`crate::alloc_info`]; here are the ones
//! that need the memory or the handle.

use alloc::vec::Vec;
use core::ffi::c_void;

use ash::vk;

use super::{DeviceMemory, MemoryManager, Types};
use crate::alloc_info::{AllocRequest, Win32ExportRequest};
use crate::backend::{
    errno, Backend, BackendError, GemHandle, ObjectOrigin, RawWin32Handle, Win32ExportInfo,
    Win32Sharing,
};
use crate::error::{Error, HandleError, Vuid, MAX_WIN32_NAME};
use crate::handle_types::is_nt_or_kmt;

/// `SECURITY_ATTRIBUTES` (minwinbase.h), as `VkExportMemoryWin32HandleInfoKHR` points at it.
#[repr(C)]
struct SecurityAttributes {
    length: u32,
    security_descriptor: *mut c_void,
    inherit_handle: i32,
}

/// How the memory's NT handles are exported, from `VkExportMemoryWin32HandleInfoKHR`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct NtExport {
    /// `dwAccess` (0: read and write).
    pub access: u32,
    /// `bInheritHandle`.
    pub inherit: bool,
    /// Whether an NT handle was handed out already (VUID 00663).
    pub exported: bool,
}

/// Reads the application's NUL-terminated UTF-16 name at `ptr`; a null `ptr` is no name.
///
/// # Safety
/// `ptr` is null or a pointer the application passed as an `LPCWSTR`: readable up to and
/// including its NUL (a Vulkan valid-usage requirement on the application).
unsafe fn read_name(ptr: *const u16) -> Result<Option<Vec<u16>>, Error> {
    if ptr.is_null() {
        return Ok(None);
    }
    let mut name = Vec::new();
    loop {
        // SAFETY: the caller's contract; reading stops at the NUL or the limit.
        let unit = unsafe { ptr.add(name.len()).read_unaligned() };
        if unit == 0 {
            break;
        }
        if name.len() == MAX_WIN32_NAME {
            return Err(Error::InvalidHandle(HandleError::Win32Name));
        }
        name.push(unit);
    }
    if name.is_empty() {
        return Err(Error::InvalidHandle(HandleError::Win32Name));
    }
    Ok(Some(name))
}

fn refused(handle_type: Types) -> impl Fn(BackendError) -> Error {
    move |e| match e.errno {
        errno::ENOMEM => Error::OutOfHostMemory,
        errno::ENOSPC => Error::TooManyObjects,
        errno => Error::InvalidHandle(HandleError::Win32Refused {
            handle_type: handle_type.as_raw(),
            errno,
        }),
    }
}

fn unsupported(handle_type: Types) -> Error {
    Error::InvalidHandle(HandleError::Unsupported {
        handle_type: handle_type.as_raw(),
    })
}

impl<B: Backend> MemoryManager<B> {
    fn win32(&mut self, handle_type: Types) -> Result<&mut dyn Win32Sharing, Error> {
        self.backend.win32().ok_or(unsupported(handle_type))
    }

    /// Creates `bound` bytes as `VkExportMemoryWin32HandleInfoKHR` asks (validation made
    /// sure OPAQUE_WIN32 is exported) and returns how its NT handles are to be exported.
    pub(super) fn create_win32(
        &mut self,
        bound: u64,
        request: &Win32ExportRequest,
    ) -> Result<(GemHandle, NtExport), Error> {
        let access = u32::try_from(request.access).map_err(|_| unsupported(Types::OPAQUE_WIN32))?;
        // SAFETY: the application's `pAttributes`, valid while vkAllocateMemory runs.
        let attributes = (!request.attributes.is_null()).then(|| unsafe {
            request
                .attributes
                .cast::<SecurityAttributes>()
                .read_unaligned()
        });
        // SAFETY: the application's `name`, null or an LPCWSTR valid during the call.
        let name = unsafe { read_name(request.name) }?;
        let info = Win32ExportInfo {
            security_descriptor: attributes
                .as_ref()
                .map_or(core::ptr::null(), |a| a.security_descriptor.cast_const()),
            inherit: attributes.as_ref().is_some_and(|a| a.inherit_handle != 0),
            access,
            name: name.as_deref(),
        };
        let handle = self
            .win32(Types::OPAQUE_WIN32)?
            .create_exportable(bound, &info)
            .map_err(|e| match e.errno {
                // The name is taken (ERROR_ALREADY_EXISTS) or refused.
                errno::EEXIST | errno::EACCES | errno::EINVAL => {
                    Error::InvalidHandle(HandleError::Win32Refused {
                        handle_type: Types::OPAQUE_WIN32.as_raw(),
                        errno: e.errno,
                    })
                }
                _ => e.to_error(extmem_hw::HostVa::ZERO, bound),
            })?;
        let export = NtExport {
            access,
            inherit: info.inherit,
            exported: false,
        };
        Ok((handle, export))
    }

    /// Imports what `VkImportMemoryWin32HandleInfoKHR` names, without taking the
    /// application's handle, and checks it is memory of this device, large enough.
    pub(super) fn import_win32(
        &mut self,
        handle_type: Types,
        handle: RawWin32Handle,
        name: *const u16,
        req: &AllocRequest,
    ) -> Result<GemHandle, Error> {
        // SAFETY: the application's `name`, null or an LPCWSTR valid during the call.
        let name = unsafe { read_name(name) }?;
        let sharing = self.win32(handle_type)?;
        let imported = if handle_type == Types::OPAQUE_WIN32_KMT {
            sharing.import_global(handle)
        } else if let Some(name) = &name {
            sharing.import_name(name)
        } else {
            sharing.import_nt(handle)
        };
        let gem = imported.map_err(refused(handle_type))?;
        let checked = match self.backend.info(gem) {
            Ok((_, origin)) if origin != ObjectOrigin::Native => Err(Vuid::Win32SameDevice.into()),
            Ok((have, _)) if have < req.size => Err(Error::InvalidHandle(HandleError::TooSmall {
                have,
                want: req.size,
            })),
            Ok(_) => Ok(gem),
            Err(e) => Err(refused(handle_type)(e)),
        };
        if checked.is_err() {
            self.release_if_unused(gem);
        }
        checked
    }

    /// `vkGetMemoryWin32HandleKHR`: a new NT handle the caller owns and closes (once per
    /// memory), or the memory's global-share token (the same every call, never closed).
    pub fn get_win32_handle(
        &mut self,
        memory: &mut DeviceMemory,
        handle_type: Types,
    ) -> Result<RawWin32Handle, Error> {
        if !is_nt_or_kmt(handle_type) {
            return Err(Vuid::GetWin32HandleType.into());
        }
        if !memory.export.contains(handle_type) {
            return Err(Vuid::GetWin32Exported.into());
        }
        if handle_type == Types::OPAQUE_WIN32 {
            if memory.nt_export.exported {
                return Err(Vuid::GetWin32Once.into());
            }
            let handle = self.export_win32(memory, handle_type)?;
            memory.nt_export.exported = true;
            return Ok(handle);
        }
        self.export_win32(memory, handle_type)
    }

    /// `vkGetMemoryWin32HandleNV`: as [`Self::get_win32_handle`] for the NV bits, which
    /// must have been in `VkExportMemoryAllocateInfoNV` (01326). NV NT handles are the
    /// application's too; the NV extension has no once-only rule.
    pub fn get_win32_handle_nv(
        &mut self,
        memory: &DeviceMemory,
        handle_type: vk::ExternalMemoryHandleTypeFlagsNV,
    ) -> Result<RawWin32Handle, Error> {
        if handle_type.is_empty() || !memory.export_nv.contains(handle_type) {
            return Err(Vuid::NvGetHandleExported.into());
        }
        match khr_type_of_nv(handle_type) {
            Some(khr) => self.export_win32(memory, khr),
            None => Err(Error::InvalidHandle(HandleError::Unsupported {
                handle_type: handle_type.as_raw(),
            })),
        }
    }

    /// The export itself, rules checked: a new NT handle with the memory's access and
    /// inheritance, or its global-share token; any other type is unsupported.
    fn export_win32(
        &mut self,
        memory: &DeviceMemory,
        handle_type: Types,
    ) -> Result<RawWin32Handle, Error> {
        let gem = memory.handle;
        if handle_type == Types::OPAQUE_WIN32_KMT {
            return self
                .win32(handle_type)?
                .export_global(gem)
                .map_err(refused(handle_type));
        }
        if handle_type != Types::OPAQUE_WIN32 {
            return Err(unsupported(handle_type));
        }
        let NtExport {
            access, inherit, ..
        } = memory.nt_export;
        self.win32(handle_type)?
            .export_nt(gem, access, inherit)
            .map_err(|e| e.to_error(extmem_hw::HostVa::ZERO, memory.size))
    }

    /// `vkGetMemoryWin32HandlePropertiesKHR`: only for the D3D handle types, which this
    /// device does not import; opaque types are invalid here (VUID 00666).
    pub fn win32_handle_properties(&mut self, handle_type: Types) -> Result<u32, Error> {
        if handle_type == Types::OPAQUE_WIN32 || handle_type == Types::OPAQUE_WIN32_KMT {
            return Err(Vuid::Win32PropsNotOpaque.into());
        }
        Err(unsupported(handle_type))
    }
}

/// The NV handle type an `OPAQUE_WIN32*_NV` bit stands for.
#[must_use]
pub fn khr_type_of_nv(nv: vk::ExternalMemoryHandleTypeFlagsNV) -> Option<Types> {
    type Nv = vk::ExternalMemoryHandleTypeFlagsNV;
    match nv {
        Nv::OPAQUE_WIN32 => Some(Types::OPAQUE_WIN32),
        Nv::OPAQUE_WIN32_KMT => Some(Types::OPAQUE_WIN32_KMT),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
