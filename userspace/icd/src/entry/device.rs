//! The device and its queue: create, destroy, get the queue, wait.

use ash::vk;

use super::instance::check_extensions;
use super::{guard_result, guard_void, into_out, null, physical, slice, write};
use crate::error::{IcdError, IcdResult, Rule};
use crate::objects;
use crate::physical_device;

/// `vkCreateDevice`: one queue of family 0, no features, our extensions only.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn create_device(
    pd: vk::PhysicalDevice,
    info: *const vk::DeviceCreateInfo<'_>,
    _allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Device,
) -> vk::Result {
    guard_result("vkCreateDevice", || {
        let extensions = physical(pd)?.device_extensions();
        let make = |info: &vk::DeviceCreateInfo<'_>| {
            // SAFETY: the structure's arrays are valid per the contract.
            unsafe { check_device_create_info(info, &extensions) }?;
            objects::create_device(pd)
        };
        // SAFETY: per the contract.
        unsafe { into_out(info, out, make) }
    })
}

/// What `vkCreateDevice` accepts: extensions we offer, one queue of our family, no
/// feature.
///
/// # Safety
/// `info`'s arrays are valid per the Vulkan contract.
unsafe fn check_device_create_info(
    info: &vk::DeviceCreateInfo<'_>,
    extensions: &[(&core::ffi::CStr, u32)],
) -> IcdResult<()> {
    // SAFETY: per the caller.
    unsafe {
        check_extensions(
            info.pp_enabled_extension_names,
            info.enabled_extension_count,
            extensions,
        )
    }?;
    // SAFETY: as above.
    let queues = unsafe { slice(info.p_queue_create_infos, info.queue_create_info_count) }
        .ok_or_else(null::<vk::DeviceQueueCreateInfo<'_>>)?;
    for queue in queues {
        if queue.queue_family_index != physical_device::QUEUE_FAMILY {
            let family = u64::from(queue.queue_family_index);
            return Err(IcdError::rule(Rule::QueueFamily, family));
        }
        if queue.queue_count != 1 {
            return Err(IcdError::rule(
                Rule::QueueCount,
                u64::from(queue.queue_count),
            ));
        }
    }
    if !info.p_enabled_features.is_null() {
        const WORDS: usize =
            core::mem::size_of::<vk::PhysicalDeviceFeatures>() / core::mem::size_of::<vk::Bool32>();
        // SAFETY: non-null and valid per the contract; VkPhysicalDeviceFeatures is a
        // repr(C) struct of VkBool32 only, so it reads as WORDS VkBool32s.
        let wanted = unsafe {
            core::slice::from_raw_parts(info.p_enabled_features.cast::<vk::Bool32>(), WORDS)
        };
        if let Some(member) = wanted.iter().position(|w| *w != vk::FALSE) {
            return Err(IcdError::FeatureNotPresent { member });
        }
    }
    Ok(())
}

/// `vkDestroyDevice`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn destroy_device(
    device: vk::Device,
    _allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard_void("vkDestroyDevice", || {
        objects::destroy_device(device);
        Ok(())
    });
}

/// Writes the device's queue to `out` if `(family, index, flags)` names it, else a null
/// handle.
///
/// # Safety
/// `out` is null or valid for a write.
unsafe fn write_queue(
    device: vk::Device,
    family: u32,
    index: u32,
    flags: vk::DeviceQueueCreateFlags,
    out: *mut vk::Queue,
) -> IcdResult<()> {
    let queue = objects::device_queue(device)
        .filter(|_| family == physical_device::QUEUE_FAMILY && index == 0 && flags.is_empty())
        .unwrap_or_default();
    // SAFETY: per the caller.
    unsafe { write(out, queue) }
}

/// `vkGetDeviceQueue`: family 0, index 0; anything else gets a null handle.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_device_queue(
    device: vk::Device,
    family: u32,
    index: u32,
    out: *mut vk::Queue,
) {
    guard_void("vkGetDeviceQueue", || {
        // SAFETY: valid for a write per the contract.
        unsafe {
            write_queue(
                device,
                family,
                index,
                vk::DeviceQueueCreateFlags::empty(),
                out,
            )
        }
    });
}

/// `vkGetDeviceQueue2`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_device_queue2(
    device: vk::Device,
    info: *const vk::DeviceQueueInfo2<'_>,
    out: *mut vk::Queue,
) {
    guard_void("vkGetDeviceQueue2", || {
        // SAFETY: valid per the contract.
        let info = unsafe { super::input(info) }?;
        // SAFETY: valid for a write per the contract.
        unsafe {
            write_queue(
                device,
                info.queue_family_index,
                info.queue_index,
                info.flags,
                out,
            )
        }
    });
}

/// `vkDeviceWaitIdle`: submissions finish before they return.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn device_wait_idle(device: vk::Device) -> vk::Result {
    guard_result("vkDeviceWaitIdle", || {
        crate::queue::wait_idle_device(device)?;
        Ok(vk::Result::SUCCESS)
    })
}
