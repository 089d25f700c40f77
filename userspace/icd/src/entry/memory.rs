//! Device memory: allocate (and import), free, map, and the external-memory queries and
//! exports of the fd and host-pointer families (the Win32 ones are in [`super::win32`]).

use core::ffi::c_void;

use ash::vk;
use extmem_hw::HostVa;
#[cfg(not(windows))]
use rustix::fd::{BorrowedFd, IntoRawFd};

use super::{guard_result, guard_void, into_out, null, output, slice};
use crate::error::{IcdError, IcdResult};
use crate::objects;

/// `vkAllocateMemory`: the chain is parsed once by `extmem::alloc_info::parse` and
/// validated and carried out by the memory manager.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn allocate_memory(
    device: vk::Device,
    info: *const vk::MemoryAllocateInfo<'_>,
    _allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::DeviceMemory,
) -> vk::Result {
    guard_result("vkAllocateMemory", || {
        let make = |info: &vk::MemoryAllocateInfo<'_>| {
            // SAFETY: the structure and its chain are valid per the contract.
            let req = unsafe { extmem::alloc_info::parse(info) }?;
            objects::allocate_memory(device, &req)
        };
        // SAFETY: per the contract.
        unsafe { into_out(info, out, make) }
    })
}

/// `vkFreeMemory`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn free_memory(
    device: vk::Device,
    memory: vk::DeviceMemory,
    _allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard_void("vkFreeMemory", || {
        objects::free_memory(device, memory);
        Ok(())
    });
}

/// `vkMapMemory`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn map_memory(
    device: vk::Device,
    memory: vk::DeviceMemory,
    offset: vk::DeviceSize,
    size: vk::DeviceSize,
    _flags: vk::MemoryMapFlags,
    out: *mut *mut c_void,
) -> vk::Result {
    guard_result("vkMapMemory", || {
        if out.is_null() {
            return Err(IcdError::NullPointer { what: "ppData" });
        }
        let ptr = objects::map_memory(device, memory, offset, size)?;
        let addr =
            usize::try_from(ptr.get()).map_err(|_| IcdError::MapAddress { addr: ptr.get() })?;
        // SAFETY: non-null, valid for a write per the contract.
        unsafe { out.write(addr as *mut c_void) };
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkUnmapMemory`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn unmap_memory(device: vk::Device, memory: vk::DeviceMemory) {
    guard_void("vkUnmapMemory", || {
        objects::unmap_memory(device, memory);
        Ok(())
    });
}

/// `vkFlushMappedMemoryRanges` and `vkInvalidateMappedMemoryRanges`: coherent memory.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn flush_mapped_memory_ranges(
    device: vk::Device,
    count: u32,
    ranges: *const vk::MappedMemoryRange<'_>,
) -> vk::Result {
    guard_result("vkFlushMappedMemoryRanges", || {
        // SAFETY: `ranges` points to `count` structures per the contract.
        let ranges =
            unsafe { slice(ranges, count) }.ok_or_else(null::<vk::MappedMemoryRange<'_>>)?;
        objects::check_ranges(device, ranges.iter().map(|r| r.memory))?;
        Ok(vk::Result::SUCCESS)
    })
}

/// Sets the `memoryTypeBits` an external-handle properties query answers, in the output
/// structure `out` (`VkMemoryFdPropertiesKHR` and its host-pointer and Win32 siblings),
/// once `query` has answered.
///
/// # Safety
/// `out` is null or a valid structure.
pub(super) unsafe fn answer_memory_type_bits<T>(
    out: *mut T,
    field: impl FnOnce(&mut T) -> &mut u32,
    query: impl FnOnce() -> IcdResult<u32>,
) -> IcdResult<vk::Result> {
    // SAFETY: per the caller.
    let out = unsafe { output(out) }?;
    *field(out) = query()?;
    Ok(vk::Result::SUCCESS)
}

#[cfg(not(windows))]
/// `vkGetMemoryFdKHR`: a new fd the application owns.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_memory_fd(
    device: vk::Device,
    info: *const vk::MemoryGetFdInfoKHR<'_>,
    out: *mut i32,
) -> vk::Result {
    guard_result("vkGetMemoryFdKHR", || {
        // SAFETY: per the contract.
        unsafe {
            into_out(info, out, |info| {
                let fd = objects::memory_fd(device, info.memory, info.handle_type)?;
                // Ownership of the fd passes to the application.
                Ok(fd.into_raw_fd())
            })
        }
    })
}

#[cfg(not(windows))]
/// `vkGetMemoryFdPropertiesKHR`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_memory_fd_properties(
    device: vk::Device,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
    fd: i32,
    out: *mut vk::MemoryFdPropertiesKHR<'_>,
) -> vk::Result {
    guard_result("vkGetMemoryFdPropertiesKHR", || {
        let query = || {
            if fd < 0 {
                return Err(extmem::Error::from(extmem::Vuid::FdPropsValid).into());
            }
            // SAFETY: the fd is only passed to syscalls, which fail with EBADF if it is not
            // open; the application keeps it.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            objects::memory_fd_properties(device, handle_type, borrowed)
        };
        // SAFETY: a valid structure per the contract.
        unsafe { answer_memory_type_bits(out, |o| &mut o.memory_type_bits, query) }
    })
}

/// `vkGetMemoryHostPointerPropertiesEXT`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_memory_host_pointer_properties(
    device: vk::Device,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
    ptr: *const c_void,
    out: *mut vk::MemoryHostPointerPropertiesEXT<'_>,
) -> vk::Result {
    guard_result("vkGetMemoryHostPointerPropertiesEXT", || {
        let ptr = HostVa::new(ptr as usize as u64);
        // SAFETY: a valid structure per the contract.
        unsafe {
            answer_memory_type_bits(
                out,
                |o| &mut o.memory_type_bits,
                || objects::host_pointer_properties(device, handle_type, ptr),
            )
        }
    })
}
