//! The loader interface and the global and instance commands: version negotiation,
//! instance creation, and the enumeration of physical devices.

use core::ffi::{c_char, CStr};
use std::path::Path;

use ash::vk;

use super::{c_name, enumerate, enumerate_into, guard_result, guard_void, into_out, slice, write};
use crate::error::{IcdError, IcdResult};
use crate::objects;
use crate::physical_device::{self, DeviceSelection, INSTANCE_EXTENSIONS};

/// The loader interface version we speak: 5 (the ICD must accept any `apiVersion` in
/// `vkCreateInstance`, which we do). Debian 12's loader (1.3.239) offers up to 6; 6 only
/// adds `vk_icdEnumerateAdapterPhysicalDevices` for Windows.
pub const LOADER_INTERFACE_VERSION: u32 = 5;

/// `vk_icdNegotiateLoaderICDInterfaceVersion`.
///
/// # Safety
/// `supported` is valid for reads and writes.
#[no_mangle]
pub unsafe extern "system" fn vk_icdNegotiateLoaderICDInterfaceVersion(
    supported: *mut u32,
) -> vk::Result {
    guard_result("vk_icdNegotiateLoaderICDInterfaceVersion", || {
        if supported.is_null() {
            return Err(IcdError::IncompatibleLoader { offered: 0 });
        }
        // SAFETY: non-null, valid per the loader's contract.
        let offered = unsafe { supported.read() };
        // Version 3 is the first with vk_icdGetPhysicalDeviceProcAddr, which we rely on.
        if offered < 3 {
            return Err(IcdError::IncompatibleLoader { offered });
        }
        // SAFETY: as above.
        unsafe { supported.write(offered.min(LOADER_INTERFACE_VERSION)) };
        Ok(vk::Result::SUCCESS)
    })
}

/// Checks a list of extension names against what we support.
///
/// # Safety
/// `names` is null or points to `count` NUL-terminated strings.
pub(super) unsafe fn check_extensions(
    names: *const *const c_char,
    count: u32,
    supported: &[(&CStr, u32)],
) -> IcdResult<()> {
    // SAFETY: per the caller.
    let names = unsafe { slice(names, count) }.ok_or(IcdError::ExtensionNotPresent { index: 0 })?;
    for (index, name) in names.iter().enumerate() {
        // SAFETY: each is a NUL-terminated string per the caller.
        let name = unsafe { c_name(*name) };
        if !name.is_some_and(|name| supported.iter().any(|(n, _)| n.to_bytes() == name)) {
            return Err(IcdError::ExtensionNotPresent { index });
        }
    }
    Ok(())
}

/// `vkCreateInstance`.
///
/// # Safety
/// Vulkan's contract for `vkCreateInstance`.
pub unsafe extern "system" fn create_instance(
    info: *const vk::InstanceCreateInfo<'_>,
    _allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Instance,
) -> vk::Result {
    guard_result("vkCreateInstance", || {
        let make = |info: &vk::InstanceCreateInfo<'_>| {
            // SAFETY: the names are valid per the contract.
            unsafe {
                check_extensions(
                    info.pp_enabled_extension_names,
                    info.enabled_extension_count,
                    INSTANCE_EXTENSIONS,
                )
            }?;
            let selection =
                DeviceSelection::from_value(std::env::var_os(DeviceSelection::VARIABLE).as_deref());
            let devices = physical_device::devices(Path::new("/dev/dri"), selection);
            Ok(objects::create_instance(devices))
        };
        // SAFETY: per the contract.
        unsafe { into_out(info, out, make) }
    })
}

/// `vkDestroyInstance`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn destroy_instance(
    instance: vk::Instance,
    _allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard_void("vkDestroyInstance", || {
        objects::destroy_instance(instance);
        Ok(())
    });
}

/// `vkEnumerateInstanceVersion`.
///
/// # Safety
/// `version` is valid for a write.
pub unsafe extern "system" fn enumerate_instance_version(version: *mut u32) -> vk::Result {
    guard_result("vkEnumerateInstanceVersion", || {
        // SAFETY: per the contract.
        unsafe { write(version, physical_device::API_VERSION) }?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkEnumerateInstanceExtensionProperties`.
///
/// # Safety
/// Vulkan's two-call contract.
pub unsafe extern "system" fn enumerate_instance_extension_properties(
    layer: *const c_char,
    count: *mut u32,
    out: *mut vk::ExtensionProperties,
) -> vk::Result {
    guard_result("vkEnumerateInstanceExtensionProperties", || {
        if !layer.is_null() {
            return Err(IcdError::LayerNotPresent);
        }
        let props = physical_device::extension_properties(INSTANCE_EXTENSIONS);
        // SAFETY: per the contract.
        unsafe { enumerate(&props, count, out) }
    })
}

/// `vkEnumeratePhysicalDevices`.
///
/// # Safety
/// Vulkan's two-call contract.
pub unsafe extern "system" fn enumerate_physical_devices(
    instance: vk::Instance,
    count: *mut u32,
    out: *mut vk::PhysicalDevice,
) -> vk::Result {
    guard_result("vkEnumeratePhysicalDevices", || {
        let instance = objects::INSTANCES.live(instance)?;
        // SAFETY: per the contract.
        unsafe { enumerate(&instance.physical_devices, count, out) }
    })
}

/// `vkEnumeratePhysicalDeviceGroups`: each device is its own group.
///
/// # Safety
/// Vulkan's two-call contract.
pub unsafe extern "system" fn enumerate_physical_device_groups(
    instance: vk::Instance,
    count: *mut u32,
    out: *mut vk::PhysicalDeviceGroupProperties<'_>,
) -> vk::Result {
    guard_result("vkEnumeratePhysicalDeviceGroups", || {
        let instance = objects::INSTANCES.live(instance)?;
        let put = |slot: *mut vk::PhysicalDeviceGroupProperties<'_>, pd: &vk::PhysicalDevice| {
            // SAFETY: a valid output structure of the application's array (per
            // `enumerate_into`), whose sType/pNext the application set and we keep.
            let group = unsafe { &mut *slot };
            group.physical_device_count = 1;
            group.physical_devices = [vk::PhysicalDevice::null(); vk::MAX_DEVICE_GROUP_SIZE];
            group.physical_devices[0] = *pd;
            group.subset_allocation = vk::FALSE;
        };
        // SAFETY: per the two-call contract.
        unsafe { enumerate_into(&instance.physical_devices, count, out, put) }
    })
}
