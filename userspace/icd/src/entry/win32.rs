//! The entry points of `VK_KHR_external_memory_win32` and `VK_NV_external_memory_win32`.
//! Thin wrappers, as the rest of [`crate::entry`]; the rules are the memory manager's
//! (`extmem::memory`'s Win32 half). On Linux no memory can be exported with a Windows
//! handle type (the device reports none), so these answer the export rules' errors.

use ash::vk;

use super::memory::answer_memory_type_bits;
use super::{guard_result, null, write};
use crate::objects;

/// `vkGetMemoryWin32HandleKHR`: an NT handle the application owns (once per memory), or
/// the memory's global-share token.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_memory_win32_handle(
    device: vk::Device,
    info: *const vk::MemoryGetWin32HandleInfoKHR<'_>,
    out: *mut vk::HANDLE,
) -> vk::Result {
    guard_result("vkGetMemoryWin32HandleKHR", || {
        if info.is_null() {
            return Err(null::<vk::MemoryGetWin32HandleInfoKHR<'_>>());
        }
        // SAFETY: non-null, valid per the contract.
        let info = unsafe { &*info };
        let handle = objects::memory_win32_handle(device, info.memory, info.handle_type)?;
        // SAFETY: valid for a write per the contract; `write` checks null.
        unsafe { write(out, handle as vk::HANDLE) }?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkGetMemoryWin32HandlePropertiesKHR`: only the D3D handle types have properties, and
/// this device imports none of them.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_memory_win32_handle_properties(
    device: vk::Device,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
    _handle: vk::HANDLE,
    out: *mut vk::MemoryWin32HandlePropertiesKHR<'_>,
) -> vk::Result {
    guard_result("vkGetMemoryWin32HandlePropertiesKHR", || {
        // SAFETY: a valid structure per the contract.
        unsafe {
            answer_memory_type_bits(
                out,
                |o| &mut o.memory_type_bits,
                || objects::win32_handle_properties(device, handle_type),
            )
        }
    })
}

/// `vkGetMemoryWin32HandleNV`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_memory_win32_handle_nv(
    device: vk::Device,
    memory: vk::DeviceMemory,
    handle_type: vk::ExternalMemoryHandleTypeFlagsNV,
    out: *mut vk::HANDLE,
) -> vk::Result {
    guard_result("vkGetMemoryWin32HandleNV", || {
        let handle = objects::memory_win32_handle_nv(device, memory, handle_type)?;
        // SAFETY: valid for a write per the contract; `write` checks null.
        unsafe { write(out, handle as vk::HANDLE) }?;
        Ok(vk::Result::SUCCESS)
    })
}
