//! The one error type of the memory manager, and its mapping to `VkResult`.

use core::fmt;

use ash::vk;

use crate::backend::Op;

/// An OS call that failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OsError {
    /// The call (`"memfd_create"`, `"MapViewOfFile"`).
    pub call: &'static str,
    /// Its error as an errno (on Windows the Win32 error translated to the errno the
    /// Linux device would give).
    pub errno: i32,
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = extmem_uapi::errno::name(self.errno).unwrap_or("errno");
        write!(f, "{} failed with {name} ({})", self.call, self.errno)
    }
}

/// Declares the Valid Usage rules we check once: the enum, the VUID string of each, what
/// it says, and the `VkResult` a violation returns.
macro_rules! valid_usage {
    ($($(#[$doc:meta])* $name:ident = ($vuid:literal, $result:ident, $text:literal),)+) => {
        /// A Valid Usage rule of the Vulkan specification (1.4, `chapters/memory.adoc`).
        /// Each string is checked against the specification's reference pages;
        /// `VUIDS.md` names the tests that cover each rule.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        #[non_exhaustive]
        pub enum Vuid {
            $($(#[$doc])* $name,)+
        }

        impl Vuid {
            /// Every rule, for tests and documentation.
            pub const ALL: &'static [Vuid] = &[$(Vuid::$name),+];

            /// The full VUID string, e.g. `VUID-VkImportMemoryFdInfoKHR-handleType-00669`.
            #[must_use]
            pub const fn id(self) -> &'static str {
                match self {
                    $(Vuid::$name => $vuid,)+
                }
            }

            /// What the rule requires, in short.
            #[must_use]
            pub const fn text(self) -> &'static str {
                match self {
                    $(Vuid::$name => $text,)+
                }
            }

            /// The result a violation returns. Violations concerning an external handle
            /// return `VK_ERROR_INVALID_EXTERNAL_HANDLE` (what the CTS expects where it
            /// tests them); the rest `VK_ERROR_VALIDATION_FAILED`, the code Vulkan 1.4
            /// gives implementations that detect invalid usage.
            pub const fn result(self) -> vk::Result {
                match self {
                    $(Vuid::$name => vk::Result::$result,)+
                }
            }
        }
    };
}

valid_usage! {
    /// Every pNext must be null or a valid structure (a cycle or runaway chain breaks it).
    ChainValid = ("VUID-VkMemoryAllocateInfo-pNext-pNext", ERROR_VALIDATION_FAILED_EXT,
        "each pNext must be NULL or point to a valid structure"),
    /// Each structure type at most once in the chain.
    ChainUnique = ("VUID-VkMemoryAllocateInfo-sType-unique", ERROR_VALIDATION_FAILED_EXT,
        "each structure type may appear at most once in the pNext chain"),
    /// At most one import structure in a `VkMemoryAllocateInfo` chain.
    OneImport = ("VUID-VkMemoryAllocateInfo-None-06657", ERROR_VALIDATION_FAILED_EXT,
        "at most one import operation per allocation"),
    /// `allocationSize` must be non-zero for a plain allocation.
    SizeNonZero = ("VUID-VkMemoryAllocateInfo-allocationSize-07897", ERROR_VALIDATION_FAILED_EXT,
        "allocationSize must be greater than 0 without an import or export"),
    /// `allocationSize` must be non-zero for an export.
    ExportSizeNonZero = ("VUID-VkMemoryAllocateInfo-allocationSize-07899", ERROR_VALIDATION_FAILED_EXT,
        "allocationSize must be greater than 0 for an export"),
    /// The export handle types must be supported and compatible.
    ExportTypesSupported = ("VUID-VkExportMemoryAllocateInfo-handleTypes-09860", ERROR_VALIDATION_FAILED_EXT,
        "export handleTypes must be supported and compatible"),
    /// `memoryTypeIndex` must exist.
    MemoryTypeIndex = ("VUID-vkAllocateMemory-pAllocateInfo-01714", ERROR_VALIDATION_FAILED_EXT,
        "memoryTypeIndex must be less than memoryTypeCount"),
    /// Host pointer import: the handle type must be a host type.
    HostHandleType = ("VUID-VkImportMemoryHostPointerInfoEXT-handleType-01748", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must be HOST_ALLOCATION or HOST_MAPPED_FOREIGN_MEMORY"),
    /// Host pointer import: the handle type must be supported for import.
    HostHandleTypeSupported = ("VUID-VkImportMemoryHostPointerInfoEXT-handleType-01747", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must be supported for import"),
    /// Host pointer import: the pointer must be aligned.
    HostPointerAligned = ("VUID-VkImportMemoryHostPointerInfoEXT-pHostPointer-01749", ERROR_INVALID_EXTERNAL_HANDLE,
        "pHostPointer must be a multiple of minImportedHostPointerAlignment"),
    /// Host pointer import: the size must be aligned.
    HostSizeAligned = ("VUID-VkMemoryAllocateInfo-allocationSize-01745", ERROR_INVALID_EXTERNAL_HANDLE,
        "allocationSize must be a multiple of minImportedHostPointerAlignment"),
    /// Host pointer import: the memory type must be one the pointer supports.
    HostMemoryType = ("VUID-VkMemoryAllocateInfo-memoryTypeIndex-01744", ERROR_INVALID_EXTERNAL_HANDLE,
        "memoryTypeIndex must be one vkGetMemoryHostPointerPropertiesEXT returned"),
    /// Host pointer import: no dedicated allocation.
    HostNotDedicated = ("VUID-VkMemoryAllocateInfo-pNext-02806", ERROR_VALIDATION_FAILED_EXT,
        "a host pointer import cannot be a dedicated allocation"),
    /// Host pointer import: no NV dedicated allocation.
    HostNotDedicatedNv = ("VUID-VkMemoryAllocateInfo-pNext-02805", ERROR_VALIDATION_FAILED_EXT,
        "a host pointer import cannot be an NV dedicated allocation"),
    /// Host pointer import: no opaque capture address.
    HostNoCaptureAddress = ("VUID-VkMemoryAllocateInfo-pNext-03332", ERROR_VALIDATION_FAILED_EXT,
        "a host pointer import cannot request an opaque capture address"),
    /// Any import: no opaque capture address.
    ImportNoCaptureAddress = ("VUID-VkMemoryAllocateInfo-opaqueCaptureAddress-03333", ERROR_VALIDATION_FAILED_EXT,
        "an import cannot request an opaque capture address"),
    /// `vkGetMemoryHostPointerPropertiesEXT`: the handle type must be a host type.
    HostPropsHandleType = ("VUID-vkGetMemoryHostPointerPropertiesEXT-handleType-01752", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must be HOST_ALLOCATION or HOST_MAPPED_FOREIGN_MEMORY"),
    /// `vkGetMemoryHostPointerPropertiesEXT`: the pointer must be aligned.
    HostPropsPointerAligned = ("VUID-vkGetMemoryHostPointerPropertiesEXT-pHostPointer-01753", ERROR_INVALID_EXTERNAL_HANDLE,
        "pHostPointer must be a multiple of minImportedHostPointerAlignment"),
    /// fd import: the handle type must be an fd type.
    FdHandleType = ("VUID-VkImportMemoryFdInfoKHR-handleType-00669", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must be OPAQUE_FD or DMA_BUF"),
    /// fd import: the handle type must be supported for import.
    FdHandleTypeSupported = ("VUID-VkImportMemoryFdInfoKHR-handleType-09862", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must be supported for import"),
    /// fd import: one `VkExternalMemoryHandleTypeFlagBits` value, not a mask (the implicit
    /// rule; an empty `handleType`, which means "no import", is refused here too since
    /// the application chained an import structure).
    FdHandleTypeSingle = ("VUID-VkImportMemoryFdInfoKHR-handleType-parameter", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must be a valid VkExternalMemoryHandleTypeFlagBits value"),
    /// fd import: the fd must be a valid handle of that type.
    FdValid = ("VUID-VkImportMemoryFdInfoKHR-handleType-00670", ERROR_INVALID_EXTERNAL_HANDLE,
        "fd must be a valid handle of handleType"),
    /// fd import: an opaque fd only from the same device (its import must give back one
    /// of our own objects).
    FdSameDevice = ("VUID-VkImportMemoryFdInfoKHR-fd-00668", ERROR_INVALID_EXTERNAL_HANDLE,
        "the memory fd was exported from must have been created on the same physical device"),
    /// fd import: the memory type of a dma-buf import comes from the fd's properties.
    FdMemoryType = ("VUID-VkMemoryAllocateInfo-memoryTypeIndex-00648", ERROR_INVALID_EXTERNAL_HANDLE,
        "memoryTypeIndex must be one vkGetMemoryFdPropertiesKHR returned"),
    /// `vkGetMemoryFdKHR`: the type must have been requested at allocation.
    GetFdExported = ("VUID-VkMemoryGetFdInfoKHR-handleType-00671", ERROR_VALIDATION_FAILED_EXT,
        "handleType must have been in VkExportMemoryAllocateInfo::handleTypes"),
    /// `vkGetMemoryFdKHR`: the type must be an fd type.
    GetFdHandleType = ("VUID-VkMemoryGetFdInfoKHR-handleType-00672", ERROR_VALIDATION_FAILED_EXT,
        "handleType must be OPAQUE_FD or DMA_BUF"),
    /// `vkGetMemoryFdPropertiesKHR`: the fd must be valid.
    FdPropsValid = ("VUID-vkGetMemoryFdPropertiesKHR-fd-00673", ERROR_INVALID_EXTERNAL_HANDLE,
        "fd must be a valid handle of handleType"),
    /// `vkGetMemoryFdPropertiesKHR`: not for opaque fds.
    FdPropsNotOpaque = ("VUID-vkGetMemoryFdPropertiesKHR-handleType-00674", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must not be OPAQUE_FD"),
    /// Win32 import: a handle or a name, never both.
    Win32HandleOrName = ("VUID-VkImportMemoryWin32HandleInfoKHR-handle-01441", ERROR_INVALID_EXTERNAL_HANDLE,
        "handle and name must not both be set"),
    /// Win32 import: a name only for named types.
    Win32NameType = ("VUID-VkImportMemoryWin32HandleInfoKHR-handleType-01439", ERROR_INVALID_EXTERNAL_HANDLE,
        "a name is only valid for OPAQUE_WIN32 and the D3D types"),
    /// Win32 import: the handle type must be an NT or global-share handle type.
    Win32HandleType = ("VUID-VkImportMemoryWin32HandleInfoKHR-handleType-00660", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must be an NT handle or a global share handle type"),
    /// Win32 import: the handle type must be supported for import.
    Win32HandleTypeSupported = ("VUID-VkImportMemoryWin32HandleInfoKHR-handleType-09861", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must be supported for import"),
    /// Win32 export info only with OPAQUE_WIN32 exported.
    Win32ExportInfo = ("VUID-VkExportMemoryWin32HandleInfoKHR-handleTypes-00657", ERROR_VALIDATION_FAILED_EXT,
        "VkExportMemoryWin32HandleInfoKHR needs OPAQUE_WIN32 in the export handleTypes"),
    /// Win32 import: the handle (or name, or token) must be memory of this device.
    Win32SameDevice = ("VUID-VkImportMemoryWin32HandleInfoKHR-handle-00659", ERROR_INVALID_EXTERNAL_HANDLE,
        "the handle must name memory created on the same physical device"),
    /// `vkGetMemoryWin32HandleKHR`: the type must have been requested at allocation.
    GetWin32Exported = ("VUID-VkMemoryGetWin32HandleInfoKHR-handleType-00662", ERROR_VALIDATION_FAILED_EXT,
        "handleType must have been in VkExportMemoryAllocateInfo::handleTypes"),
    /// `vkGetMemoryWin32HandleKHR`: an NT handle at most once per memory and type.
    GetWin32Once = ("VUID-VkMemoryGetWin32HandleInfoKHR-handleType-00663", ERROR_VALIDATION_FAILED_EXT,
        "an NT handle type may be exported at most once per memory"),
    /// `vkGetMemoryWin32HandleKHR`: the type must be an NT or global-share handle type.
    GetWin32HandleType = ("VUID-VkMemoryGetWin32HandleInfoKHR-handleType-00664", ERROR_VALIDATION_FAILED_EXT,
        "handleType must be an NT handle or a global share handle type"),
    /// `vkGetMemoryWin32HandlePropertiesKHR`: not for opaque types.
    Win32PropsNotOpaque = ("VUID-vkGetMemoryWin32HandlePropertiesKHR-handleType-00666", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must not be OPAQUE_WIN32 or OPAQUE_WIN32_KMT"),
    /// `vkGetMemoryWin32HandleNV`: the type must have been requested at allocation.
    NvGetHandleExported = ("VUID-vkGetMemoryWin32HandleNV-handleType-01326", ERROR_VALIDATION_FAILED_EXT,
        "handleType must have been in VkExportMemoryAllocateInfoNV::handleTypes"),
    /// NV Win32 import: exactly one handle type bit.
    NvWin32OneType = ("VUID-VkImportMemoryWin32HandleInfoNV-handleType-01327", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must have at most one bit set"),
    /// `handleType` must have been in VkExportSemaphoreCreateInfo::handleTypes.
    SemaphoreGetFdExported = ("VUID-VkSemaphoreGetFdInfoKHR-handleType-01132", ERROR_VALIDATION_FAILED_EXT,
        "handleType must have been in VkExportSemaphoreCreateInfo::handleTypes"),
    /// `handleType` must be a POSIX file descriptor handle type (OPAQUE_FD or SYNC_FD.
    SemaphoreGetFdHandleType = ("VUID-VkSemaphoreGetFdInfoKHR-handleType-01136", ERROR_VALIDATION_FAILED_EXT,
        "handleType must be a POSIX file descriptor handle type (OPAQUE_FD or SYNC_FD)"),
    /// A SYNC_FD can only be exported from a binary semaphore.
    SemaphoreGetSyncFdBinary = ("VUID-VkSemaphoreGetFdInfoKHR-handleType-03253", ERROR_VALIDATION_FAILED_EXT,
        "a SYNC_FD can only be exported from a binary semaphore"),
    /// A SYNC_FD export needs a semaphore signal operation already submitted.
    SemaphoreGetSyncFdSubmitted = ("VUID-VkSemaphoreGetFdInfoKHR-handleType-03254", ERROR_VALIDATION_FAILED_EXT,
        "a SYNC_FD export needs a semaphore signal operation already submitted"),
    /// `handleType` must be OPAQUE_FD or SYNC_FD.
    SemaphoreImportHandleType = ("VUID-VkImportSemaphoreFdInfoKHR-handleType-01143", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must be OPAQUE_FD or SYNC_FD"),
    /// `fd` must be a syncobj fd (OPAQUE_FD) or a sync_file (SYNC_FD.
    SemaphoreImportFdValid = ("VUID-VkImportSemaphoreFdInfoKHR-fd-01544", ERROR_INVALID_EXTERNAL_HANDLE,
        "fd must be a syncobj fd (OPAQUE_FD) or a sync_file (SYNC_FD)"),
    /// A SYNC_FD import must be temporary.
    SemaphoreImportSyncFdTemporary = ("VUID-VkImportSemaphoreFdInfoKHR-handleType-07307", ERROR_INVALID_EXTERNAL_HANDLE,
        "a SYNC_FD import must be temporary"),
    /// A temporary import cannot go into a timeline semaphore.
    SemaphoreImportTemporaryBinary = ("VUID-VkImportSemaphoreFdInfoKHR-flags-03323", ERROR_INVALID_EXTERNAL_HANDLE,
        "a temporary import cannot go into a timeline semaphore"),
    /// `vkImportSemaphoreFdKHR`: no queue command that has not completed may wait for or
    /// signal the semaphore.
    SemaphoreImportInUse = ("VUID-vkImportSemaphoreFdKHR-semaphore-01142", ERROR_VALIDATION_FAILED_EXT,
        "semaphore must not be associated with a queue command that has not completed"),
    /// `vkImportFenceFdKHR`: no queue command that has not completed may signal the fence.
    FenceImportInUse = ("VUID-vkImportFenceFdKHR-fence-01463", ERROR_VALIDATION_FAILED_EXT,
        "fence must not be associated with a queue command that has not completed"),
    /// `handleType` must have been in VkExportFenceCreateInfo::handleTypes.
    FenceGetFdExported = ("VUID-VkFenceGetFdInfoKHR-handleType-01453", ERROR_VALIDATION_FAILED_EXT,
        "handleType must have been in VkExportFenceCreateInfo::handleTypes"),
    /// A SYNC_FD export needs the fence signalled or its signal operation pending.
    FenceGetSyncFdPending = ("VUID-VkFenceGetFdInfoKHR-handleType-01454", ERROR_VALIDATION_FAILED_EXT,
        "a SYNC_FD export needs the fence signalled or its signal operation pending"),
    /// `handleType` must be a POSIX file descriptor handle type (OPAQUE_FD or SYNC_FD.
    FenceGetFdHandleType = ("VUID-VkFenceGetFdInfoKHR-handleType-01456", ERROR_VALIDATION_FAILED_EXT,
        "handleType must be a POSIX file descriptor handle type (OPAQUE_FD or SYNC_FD)"),
    /// `handleType` must be OPAQUE_FD or SYNC_FD.
    FenceImportHandleType = ("VUID-VkImportFenceFdInfoKHR-handleType-01464", ERROR_INVALID_EXTERNAL_HANDLE,
        "handleType must be OPAQUE_FD or SYNC_FD"),
    /// `fd` must be a syncobj fd (OPAQUE_FD) or a sync_file (SYNC_FD.
    FenceImportFdValid = ("VUID-VkImportFenceFdInfoKHR-fd-01541", ERROR_INVALID_EXTERNAL_HANDLE,
        "fd must be a syncobj fd (OPAQUE_FD) or a sync_file (SYNC_FD)"),
    /// A SYNC_FD import must be temporary.
    FenceImportSyncFdTemporary = ("VUID-VkImportFenceFdInfoKHR-handleType-07306", ERROR_INVALID_EXTERNAL_HANDLE,
        "a SYNC_FD import must be temporary"),
}

/// The longest Win32 object name read, in UTF-16 units without the NUL (the kernel's
/// `UNICODE_STRING` limit).
pub const MAX_WIN32_NAME: usize = 32_767;

/// Something outside the application's control refused (the kernel, a handle, a limit).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum HandleError {
    /// The host range is not mapped, not importable, or the kernel refused to pin it.
    HostRangeRefused {
        /// Start of the range.
        ptr: u64,
        /// Its size.
        size: u64,
        /// The kernel's errno.
        errno: i32,
    },
    /// The fd is not a dma-buf (or not one this device can import).
    NotADmaBuf {
        /// The kernel's errno from the import.
        errno: i32,
    },
    /// The fd is not a syncobj or sync_file this device can import.
    NotASyncFd {
        /// The kernel's errno from the import.
        errno: i32,
    },
    /// The imported memory is smaller than `allocationSize`.
    TooSmall {
        /// Bytes the handle has.
        have: u64,
        /// Bytes asked for.
        want: u64,
    },
    /// The OS refused the Win32 handle, name or global-share token (not one of this
    /// device's memory objects, closed, or without access).
    Win32Refused {
        /// The raw handle type bits.
        handle_type: u32,
        /// The OS error, as an errno.
        errno: i32,
    },
    /// A Win32 name that is empty or has no NUL within [`MAX_WIN32_NAME`] characters.
    Win32Name,
    /// The handle type is not supported by this device at all.
    Unsupported {
        /// The raw handle type bits.
        handle_type: u32,
    },
}

/// Every way a memory-manager call can fail.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Error {
    /// The application broke a Valid Usage rule.
    ValidUsage(Vuid),
    /// An external handle (pointer, fd) could not be used, for a reason outside the
    /// application's Valid Usage.
    InvalidHandle(HandleError),
    /// Host memory (or the pin limit, `RLIMIT_MEMLOCK`) ran out.
    OutOfHostMemory,
    /// Device memory or GPU VA space ran out.
    OutOfDeviceMemory,
    /// A fixed-size table (handles, bindings) is full.
    TooManyObjects,
    /// The memory could not be mapped for the CPU.
    MemoryMapFailed {
        /// The errno.
        errno: i32,
    },
    /// The device cannot do this at all: binding on a backend without a GPU VM, creating
    /// memory on a node that only shares it (a DRM render node refuses dumb buffers).
    NotSupported {
        /// What was asked.
        op: Op,
    },
    /// The kernel failed in a way that means the device is unusable.
    DeviceLost {
        /// The errno.
        errno: i32,
    },
}

impl Error {
    /// The `VkResult` this error returns. Exhaustive, with no catch-all arm, so a new
    /// variant cannot slip through unmapped.
    pub const fn result(self) -> vk::Result {
        match self {
            Error::ValidUsage(vuid) => vuid.result(),
            Error::InvalidHandle(_) => vk::Result::ERROR_INVALID_EXTERNAL_HANDLE,
            Error::OutOfHostMemory => vk::Result::ERROR_OUT_OF_HOST_MEMORY,
            Error::OutOfDeviceMemory => vk::Result::ERROR_OUT_OF_DEVICE_MEMORY,
            Error::TooManyObjects => vk::Result::ERROR_TOO_MANY_OBJECTS,
            Error::MemoryMapFailed { .. } => vk::Result::ERROR_MEMORY_MAP_FAILED,
            Error::NotSupported { .. } => vk::Result::ERROR_FEATURE_NOT_PRESENT,
            Error::DeviceLost { .. } => vk::Result::ERROR_DEVICE_LOST,
        }
    }
}

/// What an error records beyond its `VkResult`: the rule broken, the backend operation
/// that failed and the errno it answered (what a driver's debug output prints).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Cause {
    /// The Valid Usage rule, for a violation.
    pub vuid: Option<Vuid>,
    /// The backend operation, where one failed.
    pub op: Option<Op>,
    /// The errno the kernel (or the OS) answered.
    pub errno: Option<i32>,
}

impl Cause {
    /// Nothing beyond the result.
    pub const NONE: Cause = Cause {
        vuid: None,
        op: None,
        errno: None,
    };
}

impl Error {
    /// The rule, backend operation and errno this error records.
    pub const fn cause(self) -> Cause {
        match self {
            Error::ValidUsage(vuid) => Cause {
                vuid: Some(vuid),
                ..Cause::NONE
            },
            Error::InvalidHandle(HandleError::HostRangeRefused { errno, .. }) => Cause {
                op: Some(Op::ImportHost),
                errno: Some(errno),
                ..Cause::NONE
            },
            Error::InvalidHandle(HandleError::NotADmaBuf { errno }) => Cause {
                op: Some(Op::ImportDmaBuf),
                errno: Some(errno),
                ..Cause::NONE
            },
            Error::InvalidHandle(HandleError::NotASyncFd { errno }) => Cause {
                op: Some(Op::ImportSync),
                errno: Some(errno),
                ..Cause::NONE
            },
            Error::MemoryMapFailed { errno } => Cause {
                op: Some(Op::Map),
                errno: Some(errno),
                ..Cause::NONE
            },
            Error::InvalidHandle(HandleError::Win32Refused { errno, .. })
            | Error::DeviceLost { errno } => Cause {
                errno: Some(errno),
                ..Cause::NONE
            },
            Error::NotSupported { op } => Cause {
                op: Some(op),
                ..Cause::NONE
            },
            Error::InvalidHandle(
                HandleError::TooSmall { .. }
                | HandleError::Win32Name
                | HandleError::Unsupported { .. },
            )
            | Error::OutOfHostMemory
            | Error::OutOfDeviceMemory
            | Error::TooManyObjects => Cause::NONE,
        }
    }
}

impl From<Vuid> for Error {
    fn from(vuid: Vuid) -> Self {
        Error::ValidUsage(vuid)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ValidUsage(vuid) => write!(f, "{}: {}", vuid.id(), vuid.text()),
            Error::InvalidHandle(HandleError::HostRangeRefused { ptr, size, errno }) => write!(
                f,
                "host range [{ptr:#x}, +{size:#x}) cannot be imported (errno {errno})"
            ),
            Error::InvalidHandle(HandleError::NotADmaBuf { errno }) => {
                write!(f, "the fd is not an importable dma-buf (errno {errno})")
            }
            Error::InvalidHandle(HandleError::NotASyncFd { errno }) => {
                write!(
                    f,
                    "the fd is not an importable syncobj or sync_file (errno {errno})"
                )
            }
            Error::InvalidHandle(HandleError::TooSmall { have, want }) => write!(
                f,
                "the handle has {have:#x} bytes, allocationSize asks for {want:#x}"
            ),
            Error::InvalidHandle(HandleError::Win32Refused { handle_type, errno }) => write!(
                f,
                "the Win32 handle of type {handle_type:#x} is not memory of this device \
                 (errno {errno})"
            ),
            Error::InvalidHandle(HandleError::Win32Name) => write!(
                f,
                "the Win32 name is empty or has no NUL within {MAX_WIN32_NAME} characters"
            ),
            Error::InvalidHandle(HandleError::Unsupported { handle_type }) => {
                write!(
                    f,
                    "handle type {handle_type:#x} is not supported by this device"
                )
            }
            Error::OutOfHostMemory => write!(f, "out of host memory (or over RLIMIT_MEMLOCK)"),
            Error::OutOfDeviceMemory => write!(f, "out of device memory or GPU VA space"),
            Error::TooManyObjects => write!(f, "too many objects"),
            Error::MemoryMapFailed {
                errno: crate::backend::errno::EACCES,
            } => write!(
                f,
                "CPU mapping failed: the memory's dma-buf is read-only and vkMapMemory maps \
                 for writing (errno 13)"
            ),
            Error::MemoryMapFailed { errno } => write!(f, "CPU mapping failed (errno {errno})"),
            Error::NotSupported { op: Op::Bind } => {
                write!(
                    f,
                    "this device has no GPU address space to bind memory into"
                )
            }
            Error::NotSupported { op } => write!(f, "this device cannot do {op:?}"),
            Error::DeviceLost { errno } => write!(f, "device lost (errno {errno})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vuid_names_itself_and_maps_to_an_error() {
        for vuid in Vuid::ALL {
            assert!(vuid.id().starts_with("VUID-"), "{vuid:?}");
            assert!(!vuid.text().is_empty());
            assert!(vuid.result().as_raw() < 0, "{vuid:?} must be an error");
            assert_eq!(Error::from(*vuid).result(), vuid.result());
        }
        assert_eq!(
            Error::from(Vuid::FdPropsNotOpaque).result(),
            vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
        );
    }

    #[test]
    fn the_vuid_op_and_errno_are_kept_for_the_driver_to_report() {
        let refused = Error::InvalidHandle(HandleError::HostRangeRefused {
            ptr: 0x1000,
            size: 0x1000,
            errno: crate::backend::errno::EFAULT,
        });
        let cause = Cause {
            vuid: None,
            op: Some(Op::ImportHost),
            errno: Some(14),
        };
        assert_eq!(refused.cause(), cause);
        let rule = Error::from(Vuid::HostPropsPointerAligned).cause();
        assert_eq!(rule.vuid, Some(Vuid::HostPropsPointerAligned));
        assert_eq!((rule.op, rule.errno), (None, None));
        let unsupported = Error::NotSupported { op: Op::Bind }.cause();
        assert_eq!((unsupported.op, unsupported.errno), (Some(Op::Bind), None));
        assert_eq!(Error::TooManyObjects.cause(), Cause::NONE);
    }

    #[test]
    fn display_names_the_vuid() {
        let text = std::format!("{}", Error::from(Vuid::OneImport));
        assert!(
            text.starts_with("VUID-VkMemoryAllocateInfo-None-06657"),
            "{text}"
        );
    }
}
