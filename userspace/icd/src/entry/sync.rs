//! Queue submission and fences. Work is synchronous (see [`crate::objects`]): a
//! submission has run when `vkQueueSubmit` returns.

use ash::vk;

use super::{guard_result, guard_void, into_out, null, slice};
use crate::objects;

/// `vkQueueSubmit`. Semaphores cannot exist (none can be created), so only command
/// buffers and the fence matter.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn queue_submit(
    queue: vk::Queue,
    count: u32,
    submits: *const vk::SubmitInfo<'_>,
    fence: vk::Fence,
) -> vk::Result {
    guard_result("vkQueueSubmit", || {
        // SAFETY: `submits` points to `count` structures per the contract.
        let submits = unsafe { slice(submits, count) }.ok_or_else(null::<vk::SubmitInfo<'_>>)?;
        let mut buffers = Vec::new();
        for submit in submits {
            // SAFETY: each points to its `command_buffer_count` handles per the contract.
            let cbs = unsafe { slice(submit.p_command_buffers, submit.command_buffer_count) }
                .ok_or_else(null::<vk::CommandBuffer>)?;
            buffers.extend_from_slice(cbs);
        }
        let fence = (fence != vk::Fence::null()).then_some(fence);
        objects::submit(queue, &buffers, fence)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkQueueWaitIdle`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn queue_wait_idle(queue: vk::Queue) -> vk::Result {
    guard_result("vkQueueWaitIdle", || {
        objects::wait_idle_queue(queue)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkCreateFence`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn create_fence(
    device: vk::Device,
    info: *const vk::FenceCreateInfo<'_>,
    _allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Fence,
) -> vk::Result {
    guard_result("vkCreateFence", || {
        // SAFETY: per the contract.
        unsafe {
            into_out(info, out, |info| {
                let signaled = info.flags.contains(vk::FenceCreateFlags::SIGNALED);
                objects::create_fence(device, signaled)
            })
        }
    })
}

/// `vkDestroyFence`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn destroy_fence(
    device: vk::Device,
    fence: vk::Fence,
    _allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard_void("vkDestroyFence", || {
        objects::destroy_fence(device, fence);
        Ok(())
    });
}

/// `vkResetFences`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn reset_fences(
    device: vk::Device,
    count: u32,
    fences: *const vk::Fence,
) -> vk::Result {
    guard_result("vkResetFences", || {
        // SAFETY: `fences` points to `count` handles per the contract.
        let fences = unsafe { slice(fences, count) }.ok_or_else(null::<vk::Fence>)?;
        objects::reset_fences(device, fences)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkGetFenceStatus`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_fence_status(device: vk::Device, fence: vk::Fence) -> vk::Result {
    guard_result("vkGetFenceStatus", || {
        Ok(if objects::fence_status(device, fence)? {
            vk::Result::SUCCESS
        } else {
            vk::Result::NOT_READY
        })
    })
}

/// `vkWaitForFences`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn wait_for_fences(
    device: vk::Device,
    count: u32,
    fences: *const vk::Fence,
    wait_all: vk::Bool32,
    _timeout: u64,
) -> vk::Result {
    guard_result("vkWaitForFences", || {
        // SAFETY: `fences` points to `count` handles per the contract.
        let fences = unsafe { slice(fences, count) }.ok_or_else(null::<vk::Fence>)?;
        Ok(
            if objects::wait_for_fences(device, fences, wait_all != vk::FALSE)? {
                vk::Result::SUCCESS
            } else {
                vk::Result::TIMEOUT
            },
        )
    })
}
