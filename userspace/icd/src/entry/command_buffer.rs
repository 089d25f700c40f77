//! Command pools, command buffers and the transfer commands they record.

use core::ffi::c_void;

use ash::vk;

use super::{guard_result, guard_void, into_out, null, slice};
use crate::objects;

/// `vkCreateCommandPool`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn create_command_pool(
    device: vk::Device,
    info: *const vk::CommandPoolCreateInfo<'_>,
    _allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::CommandPool,
) -> vk::Result {
    guard_result("vkCreateCommandPool", || {
        // SAFETY: per the contract.
        unsafe {
            into_out(info, out, |info| {
                objects::create_pool(device, info.queue_family_index)
            })
        }
    })
}

/// `vkDestroyCommandPool`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn destroy_command_pool(
    device: vk::Device,
    pool: vk::CommandPool,
    _allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard_void("vkDestroyCommandPool", || {
        objects::destroy_pool(device, pool);
        Ok(())
    });
}

/// `vkResetCommandPool`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn reset_command_pool(
    device: vk::Device,
    pool: vk::CommandPool,
    _flags: vk::CommandPoolResetFlags,
) -> vk::Result {
    guard_result("vkResetCommandPool", || {
        objects::reset_pool(device, pool)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkTrimCommandPool`: nothing is cached beyond one staging chunk per command buffer.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn trim_command_pool(
    _device: vk::Device,
    _pool: vk::CommandPool,
    _flags: vk::CommandPoolTrimFlags,
) {
}

/// `vkAllocateCommandBuffers`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn allocate_command_buffers(
    device: vk::Device,
    info: *const vk::CommandBufferAllocateInfo<'_>,
    out: *mut vk::CommandBuffer,
) -> vk::Result {
    guard_result("vkAllocateCommandBuffers", || {
        if out.is_null() {
            return Err(null::<vk::CommandBuffer>());
        }
        // SAFETY: valid per the contract.
        let info = unsafe { super::input(info) }?;
        let handles = objects::allocate_command_buffers(
            device,
            info.command_pool,
            info.command_buffer_count,
        )?;
        for (i, h) in handles.iter().enumerate() {
            // SAFETY: `out` has room for `command_buffer_count` handles per the contract.
            unsafe { out.add(i).write(*h) };
        }
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkFreeCommandBuffers`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn free_command_buffers(
    device: vk::Device,
    pool: vk::CommandPool,
    count: u32,
    buffers: *const vk::CommandBuffer,
) {
    guard_void("vkFreeCommandBuffers", || {
        // SAFETY: `buffers` points to `count` handles per the contract.
        let buffers = unsafe { slice(buffers, count) }.ok_or_else(null::<vk::CommandBuffer>)?;
        objects::free_command_buffers(device, pool, buffers);
        Ok(())
    });
}

/// `vkBeginCommandBuffer`: starts an empty recording.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn begin_command_buffer(
    cb: vk::CommandBuffer,
    _info: *const vk::CommandBufferBeginInfo<'_>,
) -> vk::Result {
    guard_result("vkBeginCommandBuffer", || {
        objects::reset_command_buffer(cb)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkEndCommandBuffer`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn end_command_buffer(cb: vk::CommandBuffer) -> vk::Result {
    guard_result("vkEndCommandBuffer", || {
        objects::end_command_buffer(cb)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkResetCommandBuffer`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn reset_command_buffer(
    cb: vk::CommandBuffer,
    _flags: vk::CommandBufferResetFlags,
) -> vk::Result {
    guard_result("vkResetCommandBuffer", || {
        objects::reset_command_buffer(cb)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkCmdCopyBuffer`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn cmd_copy_buffer(
    cb: vk::CommandBuffer,
    src: vk::Buffer,
    dst: vk::Buffer,
    count: u32,
    regions: *const vk::BufferCopy,
) {
    guard_void("vkCmdCopyBuffer", || {
        // SAFETY: `regions` points to `count` structures per the contract.
        let regions = unsafe { slice(regions, count) };
        objects::cmd_copy(cb, src, dst, regions);
        Ok(())
    });
}

/// `vkCmdFillBuffer`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn cmd_fill_buffer(
    cb: vk::CommandBuffer,
    dst: vk::Buffer,
    offset: vk::DeviceSize,
    size: vk::DeviceSize,
    data: u32,
) {
    guard_void("vkCmdFillBuffer", || {
        objects::cmd_fill(cb, dst, offset, size, data);
        Ok(())
    });
}

/// `vkCmdUpdateBuffer`: the data is copied into driver memory before this returns.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn cmd_update_buffer(
    cb: vk::CommandBuffer,
    dst: vk::Buffer,
    offset: vk::DeviceSize,
    size: vk::DeviceSize,
    data: *const c_void,
) {
    guard_void("vkCmdUpdateBuffer", || {
        // The size is checked before the data is read: never read more than the limit.
        match u32::try_from(size) {
            Ok(len) if size <= crate::commands::MAX_UPDATE_BYTES => {
                // SAFETY: `data` points to `size` bytes per the contract.
                let bytes = unsafe { slice(data.cast::<u8>(), len) };
                objects::cmd_update(cb, dst, offset, bytes);
            }
            _ => objects::record_error(
                cb,
                crate::commands::RecordError::BadSize { size, buffer: 0 },
            ),
        }
        Ok(())
    });
}

/// `vkCmdPipelineBarrier`: the copy engine runs commands in order, synchronously, and
/// every memory type is coherent, so there is nothing to do.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn cmd_pipeline_barrier(
    _cb: vk::CommandBuffer,
    _src_stage: vk::PipelineStageFlags,
    _dst_stage: vk::PipelineStageFlags,
    _dependency: vk::DependencyFlags,
    _memory_barrier_count: u32,
    _memory_barriers: *const vk::MemoryBarrier<'_>,
    _buffer_barrier_count: u32,
    _buffer_barriers: *const vk::BufferMemoryBarrier<'_>,
    _image_barrier_count: u32,
    _image_barriers: *const vk::ImageMemoryBarrier<'_>,
) {
}
