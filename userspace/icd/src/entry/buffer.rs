//! Buffers: create, destroy, memory requirements, bind.

use ash::vk;

use super::{each_info, guard_result, guard_void, into_out, write, write_requirements2};
use crate::error::IcdResult;
use crate::objects;

/// `vkCreateBuffer`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn create_buffer(
    device: vk::Device,
    info: *const vk::BufferCreateInfo<'_>,
    _allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Buffer,
) -> vk::Result {
    guard_result("vkCreateBuffer", || {
        // SAFETY: per the contract.
        unsafe {
            into_out(info, out, |info| {
                objects::create_buffer(device, info.size, info.flags)
            })
        }
    })
}

/// `vkDestroyBuffer`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn destroy_buffer(
    device: vk::Device,
    buffer: vk::Buffer,
    _allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard_void("vkDestroyBuffer", || {
        objects::destroy_buffer(device, buffer);
        Ok(())
    });
}

/// The memory requirements of a live buffer of `device`.
fn requirements(device: vk::Device, buffer: vk::Buffer) -> IcdResult<vk::MemoryRequirements> {
    let size = objects::buffer_size(device, buffer)?;
    Ok(objects::buffer_requirements(size))
}

/// `vkGetBufferMemoryRequirements`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_buffer_memory_requirements(
    device: vk::Device,
    buffer: vk::Buffer,
    out: *mut vk::MemoryRequirements,
) {
    guard_void("vkGetBufferMemoryRequirements", || {
        let reqs = requirements(device, buffer)?;
        // SAFETY: valid for a write per the contract.
        unsafe { write(out, reqs) }
    });
}

/// `vkGetBufferMemoryRequirements2`: dedicated allocation is neither required nor
/// preferred.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_buffer_memory_requirements2(
    device: vk::Device,
    info: *const vk::BufferMemoryRequirementsInfo2<'_>,
    out: *mut vk::MemoryRequirements2<'_>,
) {
    guard_void("vkGetBufferMemoryRequirements2", || {
        // SAFETY: valid per the contract.
        let info = unsafe { super::input(info) }?;
        let reqs = requirements(device, info.buffer)?;
        // SAFETY: a valid structure with a valid chain per the contract.
        unsafe { write_requirements2(out, reqs) }
    });
}

/// `vkBindBufferMemory`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn bind_buffer_memory(
    device: vk::Device,
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    offset: vk::DeviceSize,
) -> vk::Result {
    guard_result("vkBindBufferMemory", || {
        objects::bind_buffer(device, buffer, memory, offset)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkBindBufferMemory2`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn bind_buffer_memory2(
    device: vk::Device,
    count: u32,
    infos: *const vk::BindBufferMemoryInfo<'_>,
) -> vk::Result {
    guard_result("vkBindBufferMemory2", || {
        // SAFETY: `infos` points to `count` structures per the contract.
        unsafe {
            each_info(infos, count, |info| {
                objects::bind_buffer(device, info.buffer, info.memory, info.memory_offset)
            })
        }
    })
}
