//! `VkMemoryAllocateInfo`: the pNext chain parsed once into one request, then checked
//! against every Valid Usage rule that needs no kernel round trip.
//!
//! Parsing ([`parse`]) is the only unsafe step: it follows the application's pointers.
//! Validation ([`AllocRequest::validate`]) is plain data in, first broken rule out, in a
//! fixed order so the same bad input always gets the same error.

use ash::vk;
use extmem_hw::{Alignment, HostVa};
use extmem_uapi::errno::{EINVAL, EOVERFLOW};

use crate::error::{Error, HandleError, Vuid};
use crate::handle_types::{
    exportable_together, external_memory_properties, is_nt_or_kmt, DeviceCaps, Target,
};

/// The most structures we follow in one chain. A longer chain is a cycle or garbage; it
/// is rejected rather than walked forever.
pub const MAX_CHAIN: usize = 64;

/// The single import operation a chain requests (VUID 06657 allows at most one).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Import {
    /// A plain allocation.
    #[default]
    None,
    /// `VkImportMemoryHostPointerInfoEXT`.
    HostPointer {
        /// HOST_ALLOCATION or HOST_MAPPED_FOREIGN_MEMORY (checked by validation).
        handle_type: vk::ExternalMemoryHandleTypeFlags,
        /// The application's pointer.
        ptr: HostVa,
    },
    /// `VkImportMemoryFdInfoKHR`.
    Fd {
        /// OPAQUE_FD or DMA_BUF (checked by validation).
        handle_type: vk::ExternalMemoryHandleTypeFlags,
        /// The fd, still the application's until the import succeeds.
        fd: i32,
    },
    /// `VkImportMemoryWin32HandleInfoKHR`.
    Win32 {
        /// A Win32 handle type (checked by validation).
        handle_type: vk::ExternalMemoryHandleTypeFlags,
        /// The handle, or 0.
        handle: isize,
        /// The NUL-terminated UTF-16 name, or null: a name is given instead of (or,
        /// invalidly, as well as) a handle. Read only by the import itself.
        name: *const u16,
    },
    /// `VkImportMemoryWin32HandleInfoNV`.
    Win32Nv {
        /// An NV handle type (checked by validation).
        handle_type: vk::ExternalMemoryHandleTypeFlagsNV,
        /// The handle.
        handle: isize,
    },
}

impl Import {
    /// The (KHR) handle type being imported, if any. NV handle types have their own flags
    /// and no `exportFromImportedHandleTypes`.
    #[must_use]
    pub fn handle_type(&self) -> Option<vk::ExternalMemoryHandleTypeFlags> {
        match *self {
            Import::None | Import::Win32Nv { .. } => None,
            Import::HostPointer { handle_type, .. }
            | Import::Fd { handle_type, .. }
            | Import::Win32 { handle_type, .. } => Some(handle_type),
        }
    }
}

/// A dedicated-allocation request (`VkMemoryDedicatedAllocateInfo` or the NV one).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Dedicated {
    /// The image, or null.
    pub image: vk::Image,
    /// The buffer, or null.
    pub buffer: vk::Buffer,
}

impl Dedicated {
    /// Whether it names a resource at all (both null is allowed and means "not dedicated").
    #[must_use]
    pub fn names_a_resource(&self) -> bool {
        self.image != vk::Image::null() || self.buffer != vk::Buffer::null()
    }
}

/// `VkExportMemoryWin32HandleInfoKHR` as the chain gave it. The pointers are the
/// application's and are only followed while `vkAllocateMemory` runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Win32ExportRequest {
    /// The `SECURITY_ATTRIBUTES`, or null.
    pub attributes: *const core::ffi::c_void,
    /// `dwAccess` (a `DWORD`; ash widens it to `c_ulong`, 64 bits on Linux).
    pub access: u64,
    /// The NUL-terminated UTF-16 name, or null.
    pub name: *const u16,
}

impl Win32ExportRequest {
    /// The request of an export structure's fields.
    fn new(attributes: *const core::ffi::c_void, access: vk::DWORD, name: *const u16) -> Self {
        Self {
            attributes,
            // A DWORD is c_ulong in ash: u64 on Linux (where this is no conversion), u32
            // on Windows.
            #[allow(clippy::useless_conversion)]
            access: u64::from(access),
            name,
        }
    }
}

impl Default for Win32ExportRequest {
    fn default() -> Self {
        Self {
            attributes: core::ptr::null(),
            access: 0,
            name: core::ptr::null(),
        }
    }
}

/// Everything a `VkMemoryAllocateInfo` chain asks for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct AllocRequest {
    /// `allocationSize`.
    pub size: u64,
    /// `memoryTypeIndex`.
    pub memory_type_index: u32,
    /// The import, if any.
    pub import: Import,
    /// `VkExportMemoryAllocateInfo::handleTypes`.
    pub export: vk::ExternalMemoryHandleTypeFlags,
    /// `VkExportMemoryAllocateInfoNV::handleTypes`.
    pub export_nv: vk::ExternalMemoryHandleTypeFlagsNV,
    /// `VkExportMemoryWin32HandleInfoKHR`, if present.
    pub export_win32_info: Option<Win32ExportRequest>,
    /// `VkExportMemoryWin32HandleInfoNV`, if present (it has no name).
    pub export_win32_nv: Option<Win32ExportRequest>,
    /// `VkMemoryDedicatedAllocateInfo`.
    pub dedicated: Option<Dedicated>,
    /// `VkDedicatedAllocationMemoryAllocateInfoNV`.
    pub dedicated_nv: Option<Dedicated>,
    /// `VkMemoryOpaqueCaptureAddressAllocateInfo::opaqueCaptureAddress`.
    pub opaque_capture_address: u64,
}

/// What validation needs to know about the device.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DeviceLimits {
    /// Handle types the backend supports.
    pub caps: DeviceCaps,
    /// `VkPhysicalDeviceMemoryProperties::memoryTypeCount`.
    pub memory_type_count: u32,
    /// `minImportedHostPointerAlignment`.
    pub min_import_alignment: Alignment,
    /// The memory types a host pointer may be imported into (host-visible ones).
    pub host_pointer_types: u32,
}

/// Why a chain could not even be parsed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ChainError {
    /// A structure type appears twice (`VUID-VkMemoryAllocateInfo-sType-unique`).
    Duplicate(vk::StructureType),
    /// More than [`MAX_CHAIN`] structures: a cycle or garbage.
    TooLong,
}

/// Parses the chain of `info` in one pass. Structures this driver does not know are
/// skipped, as the specification requires.
///
/// # Safety
/// `info.p_next` must be null or point to a valid chain of Vulkan structures, each
/// starting with `sType`/`pNext` and laid out as its `sType` says (the application's
/// obligation under `VUID-VkMemoryAllocateInfo-pNext-pNext`).
pub unsafe fn parse(info: &vk::MemoryAllocateInfo<'_>) -> Result<AllocRequest, Error> {
    let mut req = AllocRequest {
        size: info.allocation_size,
        memory_type_index: info.memory_type_index,
        ..AllocRequest::default()
    };
    let mut seen = [vk::StructureType::default(); MAX_CHAIN];
    let mut next = info.p_next.cast::<vk::BaseInStructure<'_>>();
    let mut count = 0;
    while !next.is_null() {
        if count == MAX_CHAIN {
            return Err(chain_error(ChainError::TooLong));
        }
        // SAFETY: the caller guarantees every non-null pNext points to a valid structure
        // that starts with sType and pNext, which is what BaseInStructure reads.
        let base = unsafe { &*next };
        let (earlier, rest) = seen.split_at_mut(count);
        if earlier.contains(&base.s_type) {
            return Err(chain_error(ChainError::Duplicate(base.s_type)));
        }
        if let Some(slot) = rest.first_mut() {
            *slot = base.s_type;
        }
        count += 1;
        // SAFETY: as above; `s_type` tells which structure `next` points to.
        unsafe { read_struct(&mut req, next)? };
        next = base.p_next;
    }
    Ok(req)
}

fn chain_error(error: ChainError) -> Error {
    match error {
        ChainError::Duplicate(_) => Error::ValidUsage(Vuid::ChainUnique),
        ChainError::TooLong => Error::ValidUsage(Vuid::ChainValid),
    }
}

/// Records one structure of the chain.
///
/// # Safety
/// `ptr` points to a valid structure of the type its `sType` names.
unsafe fn read_struct(
    req: &mut AllocRequest,
    ptr: *const vk::BaseInStructure<'_>,
) -> Result<(), Error> {
    // SAFETY: the caller guarantees `ptr` points to a structure that starts with sType.
    // For every cast below: we cast only to the structure its sType names.
    let s_type = unsafe { (*ptr).s_type };
    let set_import = |req: &mut AllocRequest, import: Import| {
        if req.import == Import::None {
            req.import = import;
            Ok(())
        } else {
            Err(Error::ValidUsage(Vuid::OneImport))
        }
    };
    match s_type {
        vk::StructureType::IMPORT_MEMORY_HOST_POINTER_INFO_EXT => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::ImportMemoryHostPointerInfoEXT<'_>>() };
            let ptr = HostVa::new(s.p_host_pointer as usize as u64);
            set_import(
                req,
                Import::HostPointer {
                    handle_type: s.handle_type,
                    ptr,
                },
            )
        }
        vk::StructureType::IMPORT_MEMORY_FD_INFO_KHR => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::ImportMemoryFdInfoKHR<'_>>() };
            set_import(
                req,
                Import::Fd {
                    handle_type: s.handle_type,
                    fd: s.fd,
                },
            )
        }
        vk::StructureType::IMPORT_MEMORY_WIN32_HANDLE_INFO_KHR => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::ImportMemoryWin32HandleInfoKHR<'_>>() };
            let import = Import::Win32 {
                handle_type: s.handle_type,
                handle: s.handle,
                name: s.name,
            };
            set_import(req, import)
        }
        vk::StructureType::IMPORT_MEMORY_WIN32_HANDLE_INFO_NV => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::ImportMemoryWin32HandleInfoNV<'_>>() };
            // "If handleType is 0, this structure is ignored."
            if s.handle_type.is_empty() {
                return Ok(());
            }
            set_import(
                req,
                Import::Win32Nv {
                    handle_type: s.handle_type,
                    handle: s.handle,
                },
            )
        }
        vk::StructureType::EXPORT_MEMORY_ALLOCATE_INFO => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::ExportMemoryAllocateInfo<'_>>() };
            req.export = s.handle_types;
            Ok(())
        }
        vk::StructureType::EXPORT_MEMORY_ALLOCATE_INFO_NV => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::ExportMemoryAllocateInfoNV<'_>>() };
            req.export_nv = s.handle_types;
            Ok(())
        }
        vk::StructureType::EXPORT_MEMORY_WIN32_HANDLE_INFO_KHR => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::ExportMemoryWin32HandleInfoKHR<'_>>() };
            req.export_win32_info =
                Some(Win32ExportRequest::new(s.p_attributes, s.dw_access, s.name));
            Ok(())
        }
        vk::StructureType::EXPORT_MEMORY_WIN32_HANDLE_INFO_NV => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::ExportMemoryWin32HandleInfoNV<'_>>() };
            // The NV structure has no name.
            req.export_win32_nv = Some(Win32ExportRequest::new(
                s.p_attributes,
                s.dw_access,
                core::ptr::null(),
            ));
            Ok(())
        }
        vk::StructureType::MEMORY_DEDICATED_ALLOCATE_INFO => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::MemoryDedicatedAllocateInfo<'_>>() };
            req.dedicated = Some(Dedicated {
                image: s.image,
                buffer: s.buffer,
            });
            Ok(())
        }
        vk::StructureType::DEDICATED_ALLOCATION_MEMORY_ALLOCATE_INFO_NV => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::DedicatedAllocationMemoryAllocateInfoNV<'_>>() };
            req.dedicated_nv = Some(Dedicated {
                image: s.image,
                buffer: s.buffer,
            });
            Ok(())
        }
        vk::StructureType::MEMORY_OPAQUE_CAPTURE_ADDRESS_ALLOCATE_INFO => {
            // SAFETY: see above.
            let s = unsafe { &*ptr.cast::<vk::MemoryOpaqueCaptureAddressAllocateInfo<'_>>() };
            req.opaque_capture_address = s.opaque_capture_address;
            Ok(())
        }
        // Unknown (or irrelevant) structures are skipped.
        _ => Ok(()),
    }
}

type Types = vk::ExternalMemoryHandleTypeFlags;

impl AllocRequest {
    /// Checks every Valid Usage rule that needs no kernel round trip, returning the first
    /// one broken. Rules that need the handle itself (a valid fd, its UUIDs, its size, a
    /// mapped host range) are checked by the import.
    pub fn validate(&self, limits: &DeviceLimits) -> Result<(), Error> {
        let caps = &limits.caps;
        if self.memory_type_index >= limits.memory_type_count {
            return Err(Vuid::MemoryTypeIndex.into());
        }
        let importing = self.import != Import::None;
        if importing && self.opaque_capture_address != 0 {
            return Err(if matches!(self.import, Import::HostPointer { .. }) {
                Vuid::HostNoCaptureAddress.into()
            } else {
                Vuid::ImportNoCaptureAddress.into()
            });
        }
        match self.import {
            Import::None => {}
            Import::HostPointer { handle_type, ptr } => {
                self.validate_host_pointer(limits, handle_type, ptr)?
            }
            Import::Fd { handle_type, .. } => {
                if !handle_type.as_raw().is_power_of_two() {
                    return Err(Vuid::FdHandleTypeSingle.into());
                }
                if handle_type != Types::OPAQUE_FD && handle_type != Types::DMA_BUF_EXT {
                    return Err(Vuid::FdHandleType.into());
                }
                if !importable(caps, handle_type) {
                    return Err(Vuid::FdHandleTypeSupported.into());
                }
            }
            Import::Win32 {
                handle_type,
                handle,
                name,
            } => {
                let named = !name.is_null();
                if !is_nt_or_kmt(handle_type) {
                    return Err(Vuid::Win32HandleType.into());
                }
                let opaque =
                    handle_type == Types::OPAQUE_WIN32 || handle_type == Types::OPAQUE_WIN32_KMT;
                if !opaque || !importable(caps, handle_type) {
                    return Err(Vuid::Win32HandleTypeSupported.into());
                }
                if handle != 0 && named {
                    return Err(Vuid::Win32HandleOrName.into());
                }
                if named && handle_type != Types::OPAQUE_WIN32 {
                    return Err(Vuid::Win32NameType.into());
                }
            }
            Import::Win32Nv { handle_type, .. } => {
                if handle_type.as_raw().count_ones() > 1 {
                    return Err(Vuid::NvWin32OneType.into());
                }
                let supported = crate::handle_types::nv_external_image_format_properties(
                    caps,
                    handle_type,
                    true,
                    vk::ImageFormatProperties::default(),
                );
                if !supported.compatible_handle_types.contains(handle_type)
                    || handle_type.is_empty()
                {
                    return Err(Error::InvalidHandle(HandleError::Unsupported {
                        handle_type: handle_type.as_raw(),
                    }));
                }
            }
        }
        let exporting = !self.export.is_empty() || !self.export_nv.is_empty();
        if !self.export.is_empty()
            && exportable_together(caps, self.export, Target::Buffer).is_none()
        {
            return Err(Vuid::ExportTypesSupported.into());
        }
        // Memory imported from a handle can be exported only as the types that handle type
        // reports in exportFromImportedHandleTypes (none for host pointers).
        if let Some(imported) = self.import.handle_type() {
            let props = external_memory_properties(caps, imported, Target::Buffer);
            if !props
                .export_from_imported_handle_types
                .contains(self.export)
            {
                return Err(Vuid::ExportTypesSupported.into());
            }
        }
        if self.export_win32_info.is_some() && !self.export.contains(Types::OPAQUE_WIN32) {
            return Err(Vuid::Win32ExportInfo.into());
        }
        if self.size == 0 && !importing {
            return Err(if exporting {
                Vuid::ExportSizeNonZero.into()
            } else {
                Vuid::SizeNonZero.into()
            });
        }
        Ok(())
    }

    fn validate_host_pointer(
        &self,
        limits: &DeviceLimits,
        handle_type: Types,
        ptr: HostVa,
    ) -> Result<(), Error> {
        if handle_type != Types::HOST_ALLOCATION_EXT
            && handle_type != Types::HOST_MAPPED_FOREIGN_MEMORY_EXT
        {
            return Err(Vuid::HostHandleType.into());
        }
        if !importable(&limits.caps, handle_type) {
            return Err(Vuid::HostHandleTypeSupported.into());
        }
        if !ptr.is_aligned(limits.min_import_alignment) {
            return Err(Vuid::HostPointerAligned.into());
        }
        if !limits.min_import_alignment.is_aligned(self.size) {
            return Err(Vuid::HostSizeAligned.into());
        }
        if self.size == 0 || ptr.checked_add(self.size).is_none() {
            return Err(Error::InvalidHandle(HandleError::HostRangeRefused {
                ptr: ptr.get(),
                size: self.size,
                errno: if self.size == 0 { EINVAL } else { EOVERFLOW },
            }));
        }
        let type_bit = 1u32.checked_shl(self.memory_type_index).unwrap_or(0);
        if limits.host_pointer_types & type_bit == 0 {
            return Err(Vuid::HostMemoryType.into());
        }
        if self.dedicated.is_some_and(|d| d.names_a_resource()) {
            return Err(Vuid::HostNotDedicated.into());
        }
        if self.dedicated_nv.is_some_and(|d| d.names_a_resource()) {
            return Err(Vuid::HostNotDedicatedNv.into());
        }
        Ok(())
    }
}

fn importable(caps: &DeviceCaps, handle_type: Types) -> bool {
    external_memory_properties(caps, handle_type, Target::Buffer)
        .external_memory_features
        .contains(vk::ExternalMemoryFeatureFlags::IMPORTABLE)
}

#[cfg(test)]
pub(crate) mod tests;
