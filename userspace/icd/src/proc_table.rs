//! Name → entry point, with the level each command belongs to (which `GetProcAddr` may
//! return it). Anything not listed answers NULL.

use ash::vk;

use crate::entry::{
    buffer, command_buffer as cmd, device, image, instance, memory, physical_device as pd, sync,
    win32,
};
use crate::entry::{get_device_proc_addr, get_instance_proc_addr};

/// Which dispatchable object a command is called on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Level {
    /// No object: `vkCreateInstance` and the instance-less queries.
    Global,
    /// A `VkInstance`.
    Instance,
    /// A `VkPhysicalDevice`.
    PhysicalDevice,
    /// A `VkDevice`, `VkQueue` or `VkCommandBuffer`.
    Device,
}

/// Declares the table once: each row is a name, its level, the function and the `PFN`
/// type it must match (checked by the compiler); a row may carry a `cfg` (the fd entry
/// points exist only where there are fds).
macro_rules! proc_table {
    ($($(#[$attr:meta])* $name:literal => $level:ident, $f:path, $pfn:ty;)+) => {
        /// Every name the ICD answers, for tests.
        pub const NAMES: &[&str] = &[$($(#[$attr])* $name),+];

        /// The entry point called `name`, and its level.
        pub fn lookup(name: &[u8]) -> Option<(Level, unsafe extern "system" fn())> {
            match name {
                $($(#[$attr])* n if n == $name.as_bytes() => {
                    let f: $pfn = $f;
                    // SAFETY: only the type is erased, as `PFN_vkVoidFunction` requires;
                    // callers cast it back to the `PFN` of this name, `$pfn`, which the
                    // binding above checks `$f` against.
                    Some((Level::$level, unsafe {
                        core::mem::transmute::<$pfn, unsafe extern "system" fn()>(f)
                    }))
                })+
                _ => None,
            }
        }
    };
}

proc_table! {
    "vkCreateInstance" => Global, instance::create_instance, vk::PFN_vkCreateInstance;
    "vkEnumerateInstanceExtensionProperties" => Global, instance::enumerate_instance_extension_properties, vk::PFN_vkEnumerateInstanceExtensionProperties;
    "vkEnumerateInstanceVersion" => Global, instance::enumerate_instance_version, vk::PFN_vkEnumerateInstanceVersion;
    "vkGetInstanceProcAddr" => Global, get_instance_proc_addr, vk::PFN_vkGetInstanceProcAddr;

    "vkDestroyInstance" => Instance, instance::destroy_instance, vk::PFN_vkDestroyInstance;
    "vkEnumeratePhysicalDevices" => Instance, instance::enumerate_physical_devices, vk::PFN_vkEnumeratePhysicalDevices;
    "vkEnumeratePhysicalDeviceGroups" => Instance, instance::enumerate_physical_device_groups, vk::PFN_vkEnumeratePhysicalDeviceGroups;

    "vkGetPhysicalDeviceFeatures" => PhysicalDevice, pd::get_physical_device_features, vk::PFN_vkGetPhysicalDeviceFeatures;
    "vkGetPhysicalDeviceFeatures2" => PhysicalDevice, pd::get_physical_device_features2, vk::PFN_vkGetPhysicalDeviceFeatures2;
    "vkGetPhysicalDeviceFeatures2KHR" => PhysicalDevice, pd::get_physical_device_features2, vk::PFN_vkGetPhysicalDeviceFeatures2;
    "vkGetPhysicalDeviceProperties" => PhysicalDevice, pd::get_physical_device_properties, vk::PFN_vkGetPhysicalDeviceProperties;
    "vkGetPhysicalDeviceProperties2" => PhysicalDevice, pd::get_physical_device_properties2, vk::PFN_vkGetPhysicalDeviceProperties2;
    "vkGetPhysicalDeviceProperties2KHR" => PhysicalDevice, pd::get_physical_device_properties2, vk::PFN_vkGetPhysicalDeviceProperties2;
    "vkGetPhysicalDeviceQueueFamilyProperties" => PhysicalDevice, pd::get_physical_device_queue_family_properties, vk::PFN_vkGetPhysicalDeviceQueueFamilyProperties;
    "vkGetPhysicalDeviceQueueFamilyProperties2" => PhysicalDevice, pd::get_physical_device_queue_family_properties2, vk::PFN_vkGetPhysicalDeviceQueueFamilyProperties2;
    "vkGetPhysicalDeviceQueueFamilyProperties2KHR" => PhysicalDevice, pd::get_physical_device_queue_family_properties2, vk::PFN_vkGetPhysicalDeviceQueueFamilyProperties2;
    "vkGetPhysicalDeviceMemoryProperties" => PhysicalDevice, pd::get_physical_device_memory_properties, vk::PFN_vkGetPhysicalDeviceMemoryProperties;
    "vkGetPhysicalDeviceMemoryProperties2" => PhysicalDevice, pd::get_physical_device_memory_properties2, vk::PFN_vkGetPhysicalDeviceMemoryProperties2;
    "vkGetPhysicalDeviceMemoryProperties2KHR" => PhysicalDevice, pd::get_physical_device_memory_properties2, vk::PFN_vkGetPhysicalDeviceMemoryProperties2;
    "vkGetPhysicalDeviceFormatProperties" => PhysicalDevice, pd::get_physical_device_format_properties, vk::PFN_vkGetPhysicalDeviceFormatProperties;
    "vkGetPhysicalDeviceFormatProperties2" => PhysicalDevice, pd::get_physical_device_format_properties2, vk::PFN_vkGetPhysicalDeviceFormatProperties2;
    "vkGetPhysicalDeviceFormatProperties2KHR" => PhysicalDevice, pd::get_physical_device_format_properties2, vk::PFN_vkGetPhysicalDeviceFormatProperties2;
    "vkGetPhysicalDeviceImageFormatProperties" => PhysicalDevice, pd::get_physical_device_image_format_properties, vk::PFN_vkGetPhysicalDeviceImageFormatProperties;
    "vkGetPhysicalDeviceImageFormatProperties2" => PhysicalDevice, pd::get_physical_device_image_format_properties2, vk::PFN_vkGetPhysicalDeviceImageFormatProperties2;
    "vkGetPhysicalDeviceImageFormatProperties2KHR" => PhysicalDevice, pd::get_physical_device_image_format_properties2, vk::PFN_vkGetPhysicalDeviceImageFormatProperties2;
    "vkGetPhysicalDeviceSparseImageFormatProperties" => PhysicalDevice, pd::get_physical_device_sparse_image_format_properties, vk::PFN_vkGetPhysicalDeviceSparseImageFormatProperties;
    "vkGetPhysicalDeviceSparseImageFormatProperties2" => PhysicalDevice, pd::get_physical_device_sparse_image_format_properties2, vk::PFN_vkGetPhysicalDeviceSparseImageFormatProperties2;
    "vkGetPhysicalDeviceSparseImageFormatProperties2KHR" => PhysicalDevice, pd::get_physical_device_sparse_image_format_properties2, vk::PFN_vkGetPhysicalDeviceSparseImageFormatProperties2;
    "vkEnumerateDeviceExtensionProperties" => PhysicalDevice, pd::enumerate_device_extension_properties, vk::PFN_vkEnumerateDeviceExtensionProperties;
    "vkEnumerateDeviceLayerProperties" => PhysicalDevice, pd::enumerate_device_layer_properties, vk::PFN_vkEnumerateDeviceLayerProperties;
    "vkGetPhysicalDeviceExternalBufferProperties" => PhysicalDevice, pd::get_physical_device_external_buffer_properties, vk::PFN_vkGetPhysicalDeviceExternalBufferProperties;
    "vkGetPhysicalDeviceExternalBufferPropertiesKHR" => PhysicalDevice, pd::get_physical_device_external_buffer_properties, vk::PFN_vkGetPhysicalDeviceExternalBufferProperties;
    "vkGetPhysicalDeviceExternalSemaphoreProperties" => PhysicalDevice, pd::get_physical_device_external_semaphore_properties, vk::PFN_vkGetPhysicalDeviceExternalSemaphoreProperties;
    "vkGetPhysicalDeviceExternalFenceProperties" => PhysicalDevice, pd::get_physical_device_external_fence_properties, vk::PFN_vkGetPhysicalDeviceExternalFenceProperties;
    "vkGetPhysicalDeviceExternalSemaphorePropertiesKHR" => PhysicalDevice, pd::get_physical_device_external_semaphore_properties, vk::PFN_vkGetPhysicalDeviceExternalSemaphoreProperties;
    "vkGetPhysicalDeviceExternalFencePropertiesKHR" => PhysicalDevice, pd::get_physical_device_external_fence_properties, vk::PFN_vkGetPhysicalDeviceExternalFenceProperties;
    "vkGetPhysicalDeviceExternalImageFormatPropertiesNV" => PhysicalDevice, pd::get_physical_device_external_image_format_properties_nv, vk::PFN_vkGetPhysicalDeviceExternalImageFormatPropertiesNV;
    "vkCreateDevice" => PhysicalDevice, device::create_device, vk::PFN_vkCreateDevice;

    "vkDestroyDevice" => Device, device::destroy_device, vk::PFN_vkDestroyDevice;
    "vkGetDeviceProcAddr" => Device, get_device_proc_addr, vk::PFN_vkGetDeviceProcAddr;
    "vkGetDeviceQueue" => Device, device::get_device_queue, vk::PFN_vkGetDeviceQueue;
    "vkGetDeviceQueue2" => Device, device::get_device_queue2, vk::PFN_vkGetDeviceQueue2;
    "vkDeviceWaitIdle" => Device, device::device_wait_idle, vk::PFN_vkDeviceWaitIdle;
    "vkAllocateMemory" => Device, memory::allocate_memory, vk::PFN_vkAllocateMemory;
    "vkFreeMemory" => Device, memory::free_memory, vk::PFN_vkFreeMemory;
    "vkMapMemory" => Device, memory::map_memory, vk::PFN_vkMapMemory;
    "vkUnmapMemory" => Device, memory::unmap_memory, vk::PFN_vkUnmapMemory;
    "vkFlushMappedMemoryRanges" => Device, memory::flush_mapped_memory_ranges, vk::PFN_vkFlushMappedMemoryRanges;
    "vkInvalidateMappedMemoryRanges" => Device, memory::flush_mapped_memory_ranges, vk::PFN_vkInvalidateMappedMemoryRanges;
    #[cfg(not(windows))]
    "vkGetMemoryFdKHR" => Device, memory::get_memory_fd, vk::PFN_vkGetMemoryFdKHR;
    #[cfg(not(windows))]
    "vkGetMemoryFdPropertiesKHR" => Device, memory::get_memory_fd_properties, vk::PFN_vkGetMemoryFdPropertiesKHR;
    "vkGetMemoryWin32HandleKHR" => Device, win32::get_memory_win32_handle, vk::PFN_vkGetMemoryWin32HandleKHR;
    "vkGetMemoryWin32HandlePropertiesKHR" => Device, win32::get_memory_win32_handle_properties, vk::PFN_vkGetMemoryWin32HandlePropertiesKHR;
    "vkGetMemoryWin32HandleNV" => Device, win32::get_memory_win32_handle_nv, vk::PFN_vkGetMemoryWin32HandleNV;
    "vkGetMemoryHostPointerPropertiesEXT" => Device, memory::get_memory_host_pointer_properties, vk::PFN_vkGetMemoryHostPointerPropertiesEXT;
    "vkCreateBuffer" => Device, buffer::create_buffer, vk::PFN_vkCreateBuffer;
    "vkDestroyBuffer" => Device, buffer::destroy_buffer, vk::PFN_vkDestroyBuffer;
    "vkGetBufferMemoryRequirements" => Device, buffer::get_buffer_memory_requirements, vk::PFN_vkGetBufferMemoryRequirements;
    "vkGetBufferMemoryRequirements2" => Device, buffer::get_buffer_memory_requirements2, vk::PFN_vkGetBufferMemoryRequirements2;
    "vkGetBufferMemoryRequirements2KHR" => Device, buffer::get_buffer_memory_requirements2, vk::PFN_vkGetBufferMemoryRequirements2;
    "vkBindBufferMemory" => Device, buffer::bind_buffer_memory, vk::PFN_vkBindBufferMemory;
    "vkBindBufferMemory2" => Device, buffer::bind_buffer_memory2, vk::PFN_vkBindBufferMemory2;
    "vkBindBufferMemory2KHR" => Device, buffer::bind_buffer_memory2, vk::PFN_vkBindBufferMemory2;
    "vkCreateImage" => Device, image::create_image, vk::PFN_vkCreateImage;
    "vkDestroyImage" => Device, image::destroy_image, vk::PFN_vkDestroyImage;
    "vkGetImageMemoryRequirements" => Device, image::get_image_memory_requirements, vk::PFN_vkGetImageMemoryRequirements;
    "vkGetImageMemoryRequirements2" => Device, image::get_image_memory_requirements2, vk::PFN_vkGetImageMemoryRequirements2;
    "vkGetImageMemoryRequirements2KHR" => Device, image::get_image_memory_requirements2, vk::PFN_vkGetImageMemoryRequirements2;
    "vkBindImageMemory" => Device, image::bind_image_memory, vk::PFN_vkBindImageMemory;
    "vkBindImageMemory2" => Device, image::bind_image_memory2, vk::PFN_vkBindImageMemory2;
    "vkBindImageMemory2KHR" => Device, image::bind_image_memory2, vk::PFN_vkBindImageMemory2;
    "vkGetImageSubresourceLayout" => Device, image::get_image_subresource_layout, vk::PFN_vkGetImageSubresourceLayout;
    "vkCmdCopyBufferToImage" => Device, image::cmd_copy_buffer_to_image, vk::PFN_vkCmdCopyBufferToImage;
    "vkCmdCopyImageToBuffer" => Device, image::cmd_copy_image_to_buffer, vk::PFN_vkCmdCopyImageToBuffer;
    "vkCreateCommandPool" => Device, cmd::create_command_pool, vk::PFN_vkCreateCommandPool;
    "vkDestroyCommandPool" => Device, cmd::destroy_command_pool, vk::PFN_vkDestroyCommandPool;
    "vkResetCommandPool" => Device, cmd::reset_command_pool, vk::PFN_vkResetCommandPool;
    "vkTrimCommandPool" => Device, cmd::trim_command_pool, vk::PFN_vkTrimCommandPool;
    "vkAllocateCommandBuffers" => Device, cmd::allocate_command_buffers, vk::PFN_vkAllocateCommandBuffers;
    "vkFreeCommandBuffers" => Device, cmd::free_command_buffers, vk::PFN_vkFreeCommandBuffers;
    "vkBeginCommandBuffer" => Device, cmd::begin_command_buffer, vk::PFN_vkBeginCommandBuffer;
    "vkEndCommandBuffer" => Device, cmd::end_command_buffer, vk::PFN_vkEndCommandBuffer;
    "vkResetCommandBuffer" => Device, cmd::reset_command_buffer, vk::PFN_vkResetCommandBuffer;
    "vkCmdCopyBuffer" => Device, cmd::cmd_copy_buffer, vk::PFN_vkCmdCopyBuffer;
    "vkCmdFillBuffer" => Device, cmd::cmd_fill_buffer, vk::PFN_vkCmdFillBuffer;
    "vkCmdUpdateBuffer" => Device, cmd::cmd_update_buffer, vk::PFN_vkCmdUpdateBuffer;
    "vkCmdPipelineBarrier" => Device, cmd::cmd_pipeline_barrier, vk::PFN_vkCmdPipelineBarrier;
    "vkQueueSubmit" => Device, sync::queue_submit, vk::PFN_vkQueueSubmit;
    "vkQueueWaitIdle" => Device, sync::queue_wait_idle, vk::PFN_vkQueueWaitIdle;
    "vkCreateFence" => Device, sync::create_fence, vk::PFN_vkCreateFence;
    "vkDestroyFence" => Device, sync::destroy_fence, vk::PFN_vkDestroyFence;
    "vkResetFences" => Device, sync::reset_fences, vk::PFN_vkResetFences;
    "vkGetFenceStatus" => Device, sync::get_fence_status, vk::PFN_vkGetFenceStatus;
    "vkWaitForFences" => Device, sync::wait_for_fences, vk::PFN_vkWaitForFences;
    "vkQueueSubmit2" => Device, sync::queue_submit2, vk::PFN_vkQueueSubmit2;
    "vkQueueSubmit2KHR" => Device, sync::queue_submit2, vk::PFN_vkQueueSubmit2;
    "vkCreateSemaphore" => Device, sync::create_semaphore, vk::PFN_vkCreateSemaphore;
    "vkDestroySemaphore" => Device, sync::destroy_semaphore, vk::PFN_vkDestroySemaphore;
    "vkGetSemaphoreCounterValue" => Device, sync::get_semaphore_counter_value, vk::PFN_vkGetSemaphoreCounterValue;
    "vkGetSemaphoreCounterValueKHR" => Device, sync::get_semaphore_counter_value, vk::PFN_vkGetSemaphoreCounterValue;
    "vkWaitSemaphores" => Device, sync::wait_semaphores, vk::PFN_vkWaitSemaphores;
    "vkWaitSemaphoresKHR" => Device, sync::wait_semaphores, vk::PFN_vkWaitSemaphores;
    "vkSignalSemaphore" => Device, sync::signal_semaphore, vk::PFN_vkSignalSemaphore;
    "vkSignalSemaphoreKHR" => Device, sync::signal_semaphore, vk::PFN_vkSignalSemaphore;
    #[cfg(not(windows))]
    "vkGetSemaphoreFdKHR" => Device, sync::get_semaphore_fd, vk::PFN_vkGetSemaphoreFdKHR;
    #[cfg(not(windows))]
    "vkImportSemaphoreFdKHR" => Device, sync::import_semaphore_fd, vk::PFN_vkImportSemaphoreFdKHR;
    #[cfg(not(windows))]
    "vkGetFenceFdKHR" => Device, sync::get_fence_fd, vk::PFN_vkGetFenceFdKHR;
    #[cfg(not(windows))]
    "vkImportFenceFdKHR" => Device, sync::import_fence_fd, vk::PFN_vkImportFenceFdKHR;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_resolves_and_others_do_not() {
        for name in NAMES {
            assert!(lookup(name.as_bytes()).is_some(), "{name}");
        }
        assert!(lookup(b"vkCreateGraphicsPipelines").is_none());
        assert!(lookup(b"vkCreateImageView").is_none());
        assert!(lookup(b"").is_none());
        assert!(matches!(
            lookup(b"vkCreateInstance"),
            Some((Level::Global, _))
        ));
        assert!(matches!(
            lookup(b"vkGetMemoryHostPointerPropertiesEXT"),
            Some((Level::Device, _))
        ));
    }
}
