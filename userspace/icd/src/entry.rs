//! The C boundary: every Vulkan entry point the ICD exposes.
//!
//! Each function is a thin wrapper: it catches panics (`guard`), turns the
//! application's pointers into Rust values (checking the nulls that are cheap to check),
//! calls the plain function in [`crate::objects`] and writes the answer back. Handles are
//! looked up in the registries, never dereferenced.

use core::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use ash::vk::{self, Handle};
use extmem::handle_types::{
    external_memory_properties, nv_external_image_format_properties, Target,
};
use extmem_hw::HostVa;
#[cfg(not(windows))]
use rustix::fd::{BorrowedFd, IntoRawFd};

use crate::objects::{self, BAD_HANDLE, PHYSICAL_DEVICES};
use crate::physical_device::{self, DeviceInfo, DeviceSelection, INSTANCE_EXTENSIONS};

/// The loader interface version we speak: 5 (the ICD must accept any `apiVersion` in
/// `vkCreateInstance`, which we do). Debian 12's loader (1.3.239) offers up to 6; 6 only
/// adds `vk_icdEnumerateAdapterPhysicalDevices` for Windows.
pub const LOADER_INTERFACE_VERSION: u32 = 5;

/// Most structures followed in one output chain (a longer one is a cycle or garbage).
const MAX_CHAIN: usize = 64;

/// Runs `f`, turning a panic into `on_panic`: a panic must never unwind into C.
fn guard<R>(on_panic: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// [`guard`] for entry points that return a `VkResult`.
fn guard_result(f: impl FnOnce() -> Result<vk::Result, vk::Result>) -> vk::Result {
    guard(vk::Result::ERROR_UNKNOWN, || f().unwrap_or_else(|e| e))
}

/// Writes `value` to `out` unless it is null.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn write<T>(out: *mut T, value: T) -> Result<(), vk::Result> {
    if out.is_null() {
        return Err(BAD_HANDLE);
    }
    // SAFETY: non-null, and valid for writes per the caller.
    unsafe { out.write(value) };
    Ok(())
}

/// The application's array `[ptr, ptr + count)`, or `None` for a null pointer with a
/// non-zero count.
///
/// # Safety
/// `ptr` is null or points to `count` initialised `T`s that outlive `'a`.
unsafe fn slice<'a, T>(ptr: *const T, count: u32) -> Option<&'a [T]> {
    if count == 0 {
        return Some(&[]);
    }
    if ptr.is_null() {
        return None;
    }
    let len = usize::try_from(count).ok()?;
    // SAFETY: per the caller, `ptr` points to `count` initialised elements.
    Some(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// The two-call idiom: the count, or as many items as fit and `VK_INCOMPLETE`.
///
/// # Safety
/// `count` is valid for reads and writes; `out` is null or valid for `*count` writes.
unsafe fn enumerate<T: Copy>(items: &[T], count: *mut u32, out: *mut T) -> vk::Result {
    if count.is_null() {
        return vk::Result::ERROR_UNKNOWN;
    }
    let total = u32::try_from(items.len()).unwrap_or(u32::MAX);
    if out.is_null() {
        // SAFETY: non-null, valid per the caller.
        unsafe { count.write(total) };
        return vk::Result::SUCCESS;
    }
    // SAFETY: as above.
    let room = unsafe { count.read() };
    let n = room.min(total);
    for (i, item) in items.iter().take(n as usize).enumerate() {
        // SAFETY: `i < n <= *count`, the caller's capacity.
        unsafe { out.add(i).write(*item) };
    }
    // SAFETY: as above.
    unsafe { count.write(n) };
    if n < total {
        vk::Result::INCOMPLETE
    } else {
        vk::Result::SUCCESS
    }
}

/// Calls `f` on each structure of an output pNext chain.
///
/// # Safety
/// `p_next` is null or the start of a valid chain of output structures.
unsafe fn each_out(p_next: *mut c_void, mut f: impl FnMut(*mut vk::BaseOutStructure<'_>)) {
    let mut next = p_next.cast::<vk::BaseOutStructure<'_>>();
    let mut seen = 0;
    while !next.is_null() && seen < MAX_CHAIN {
        f(next);
        // SAFETY: `next` is a valid structure per the caller.
        next = unsafe { (*next).p_next };
        seen += 1;
    }
}

/// Replaces the body of the output structure at `base` (of the type its sType names)
/// with `value`, keeping the application's sType and pNext.
///
/// # Safety
/// `base` points to a valid `T`.
unsafe fn fill<T>(base: *mut vk::BaseOutStructure<'_>, value: T) {
    let s = base.cast::<T>();
    // SAFETY: `base` is a T per the caller; the header is read first and put back so the
    // chain stays intact.
    unsafe {
        let header = *base;
        s.write(value);
        (*base).s_type = header.s_type;
        (*base).p_next = header.p_next;
    }
}

fn physical(pd: vk::PhysicalDevice) -> Result<DeviceInfo, vk::Result> {
    PHYSICAL_DEVICES
        .get(pd.as_raw())
        .map(|p| p.info.clone())
        .ok_or(BAD_HANDLE)
}

// ---- Loader interface -------------------------------------------------------------------

/// `vk_icdNegotiateLoaderICDInterfaceVersion`.
///
/// # Safety
/// `supported` is valid for reads and writes.
#[no_mangle]
pub unsafe extern "system" fn vk_icdNegotiateLoaderICDInterfaceVersion(
    supported: *mut u32,
) -> vk::Result {
    guard_result(|| {
        if supported.is_null() {
            return Err(vk::Result::ERROR_INCOMPATIBLE_DRIVER);
        }
        // SAFETY: non-null, valid per the loader's contract.
        let offered = unsafe { supported.read() };
        // Version 3 is the first with vk_icdGetPhysicalDeviceProcAddr, which we rely on.
        if offered < 3 {
            return Err(vk::Result::ERROR_INCOMPATIBLE_DRIVER);
        }
        // SAFETY: as above.
        unsafe { supported.write(offered.min(LOADER_INTERFACE_VERSION)) };
        Ok(vk::Result::SUCCESS)
    })
}

/// `vk_icdGetInstanceProcAddr`.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "system" fn vk_icdGetInstanceProcAddr(
    instance: vk::Instance,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    // SAFETY: forwarded contract.
    unsafe { get_instance_proc_addr(instance, name) }
}

/// `vk_icdGetPhysicalDeviceProcAddr`: physical-device-level commands only.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "system" fn vk_icdGetPhysicalDeviceProcAddr(
    instance: vk::Instance,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    guard(None, || {
        objects::INSTANCES.get(instance.as_raw())?;
        // SAFETY: forwarded contract.
        let name = unsafe { c_name(name) }?;
        crate::proc_table::lookup(name)
            .filter(|(level, _)| *level == crate::proc_table::Level::PhysicalDevice)
            .map(|(_, f)| f)
    })
}

/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn c_name<'a>(name: *const c_char) -> Option<&'a [u8]> {
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the caller.
    Some(unsafe { CStr::from_ptr(name) }.to_bytes())
}

/// `vkGetInstanceProcAddr`: global commands with a null instance, everything with a live
/// one.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
pub unsafe extern "system" fn get_instance_proc_addr(
    instance: vk::Instance,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    guard(None, || {
        // SAFETY: forwarded contract.
        let name = unsafe { c_name(name) }?;
        let (level, f) = crate::proc_table::lookup(name)?;
        if instance == vk::Instance::null() {
            return (level == crate::proc_table::Level::Global).then_some(f);
        }
        objects::INSTANCES.get(instance.as_raw())?;
        Some(f)
    })
}

/// `vkGetDeviceProcAddr`: device-level commands only.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
pub unsafe extern "system" fn get_device_proc_addr(
    device: vk::Device,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    guard(None, || {
        objects::DEVICES.get(device.as_raw())?;
        // SAFETY: forwarded contract.
        let name = unsafe { c_name(name) }?;
        crate::proc_table::lookup(name)
            .filter(|(level, _)| *level == crate::proc_table::Level::Device)
            .map(|(_, f)| f)
    })
}

// ---- Global and instance commands -------------------------------------------------------

/// Checks a list of extension names against what we support.
///
/// # Safety
/// `names` is null or points to `count` NUL-terminated strings.
unsafe fn check_extensions(
    names: *const *const c_char,
    count: u32,
    supported: &[(&CStr, u32)],
) -> Result<(), vk::Result> {
    // SAFETY: per the caller.
    let names = unsafe { slice(names, count) }.ok_or(vk::Result::ERROR_EXTENSION_NOT_PRESENT)?;
    for name in names {
        // SAFETY: each is a NUL-terminated string per the caller.
        let name = unsafe { c_name(*name) }.ok_or(vk::Result::ERROR_EXTENSION_NOT_PRESENT)?;
        if !supported.iter().any(|(n, _)| n.to_bytes() == name) {
            return Err(vk::Result::ERROR_EXTENSION_NOT_PRESENT);
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
    guard_result(|| {
        if info.is_null() {
            return Err(BAD_HANDLE);
        }
        // SAFETY: non-null, valid per the contract.
        let info = unsafe { &*info };
        // SAFETY: as above.
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
        let instance = objects::create_instance(devices);
        // SAFETY: valid for a write per the contract.
        unsafe { write(out, vk::Instance::from_raw(instance)) }.inspect_err(|_| {
            objects::destroy_instance(instance);
        })?;
        Ok(vk::Result::SUCCESS)
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
    guard((), || objects::destroy_instance(instance.as_raw()));
}

/// `vkEnumerateInstanceVersion`.
///
/// # Safety
/// `version` is valid for a write.
pub unsafe extern "system" fn enumerate_instance_version(version: *mut u32) -> vk::Result {
    guard_result(|| {
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
    guard(vk::Result::ERROR_UNKNOWN, || {
        if !layer.is_null() {
            return vk::Result::ERROR_LAYER_NOT_PRESENT;
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
    guard(vk::Result::ERROR_UNKNOWN, || {
        let Some(instance) = objects::INSTANCES.get(instance.as_raw()) else {
            return BAD_HANDLE;
        };
        let handles: Vec<vk::PhysicalDevice> = instance
            .physical_devices
            .iter()
            .map(|h| vk::PhysicalDevice::from_raw(*h))
            .collect();
        // SAFETY: per the contract.
        unsafe { enumerate(&handles, count, out) }
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
    guard(vk::Result::ERROR_UNKNOWN, || {
        let Some(instance) = objects::INSTANCES.get(instance.as_raw()) else {
            return BAD_HANDLE;
        };
        if count.is_null() {
            return BAD_HANDLE;
        }
        let total = u32::try_from(instance.physical_devices.len()).unwrap_or(u32::MAX);
        if out.is_null() {
            // SAFETY: non-null per the check above.
            unsafe { count.write(total) };
            return vk::Result::SUCCESS;
        }
        // SAFETY: as above.
        let room = unsafe { count.read() };
        let n = room.min(total);
        for (i, pd) in instance
            .physical_devices
            .iter()
            .take(n as usize)
            .enumerate()
        {
            // SAFETY: `i < n <= *count`; each element is a valid output structure whose
            // sType/pNext the application set, which we keep.
            unsafe {
                let group = &mut *out.add(i);
                group.physical_device_count = 1;
                group.physical_devices = [vk::PhysicalDevice::null(); vk::MAX_DEVICE_GROUP_SIZE];
                group.physical_devices[0] = vk::PhysicalDevice::from_raw(*pd);
                group.subset_allocation = vk::FALSE;
            }
        }
        // SAFETY: as above.
        unsafe { count.write(n) };
        if n < total {
            vk::Result::INCOMPLETE
        } else {
            vk::Result::SUCCESS
        }
    })
}

// ---- Physical-device queries ------------------------------------------------------------

/// `vkGetPhysicalDeviceFeatures`: no optional feature (a copy engine has none).
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_features(
    pd: vk::PhysicalDevice,
    out: *mut vk::PhysicalDeviceFeatures,
) {
    guard((), || {
        if physical(pd).is_ok() {
            // SAFETY: valid for a write per the contract.
            let _ = unsafe { write(out, vk::PhysicalDeviceFeatures::default()) };
        }
    });
}

/// `vkGetPhysicalDeviceFeatures2`: no feature, in every structure we know.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_features2(
    pd: vk::PhysicalDevice,
    out: *mut vk::PhysicalDeviceFeatures2<'_>,
) {
    guard((), || {
        if physical(pd).is_err() || out.is_null() {
            return;
        }
        // SAFETY: non-null, a valid structure per the contract.
        let features = unsafe { &mut *out };
        features.features = vk::PhysicalDeviceFeatures::default();
        // SAFETY: the chain is valid per the contract; each cast matches its sType.
        unsafe {
            each_out(features.p_next, |s| match (*s).s_type {
                vk::StructureType::PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES => {
                    fill(s, vk::PhysicalDevice16BitStorageFeatures::default())
                }
                vk::StructureType::PHYSICAL_DEVICE_MULTIVIEW_FEATURES => {
                    fill(s, vk::PhysicalDeviceMultiviewFeatures::default())
                }
                vk::StructureType::PHYSICAL_DEVICE_VARIABLE_POINTERS_FEATURES => {
                    fill(s, vk::PhysicalDeviceVariablePointersFeatures::default())
                }
                vk::StructureType::PHYSICAL_DEVICE_PROTECTED_MEMORY_FEATURES => {
                    fill(s, vk::PhysicalDeviceProtectedMemoryFeatures::default())
                }
                vk::StructureType::PHYSICAL_DEVICE_SAMPLER_YCBCR_CONVERSION_FEATURES => fill(
                    s,
                    vk::PhysicalDeviceSamplerYcbcrConversionFeatures::default(),
                ),
                vk::StructureType::PHYSICAL_DEVICE_SHADER_DRAW_PARAMETERS_FEATURES => {
                    fill(s, vk::PhysicalDeviceShaderDrawParametersFeatures::default())
                }
                _ => {}
            })
        };
    });
}

/// `vkGetPhysicalDeviceProperties`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_properties(
    pd: vk::PhysicalDevice,
    out: *mut vk::PhysicalDeviceProperties,
) {
    guard((), || {
        if let Ok(info) = physical(pd) {
            // SAFETY: valid for a write per the contract.
            let _ = unsafe { write(out, info.properties()) };
        }
    });
}

/// `vkGetPhysicalDeviceProperties2`, with the structures listed in the match below.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_properties2(
    pd: vk::PhysicalDevice,
    out: *mut vk::PhysicalDeviceProperties2<'_>,
) {
    guard((), || {
        let Ok(info) = physical(pd) else {
            return;
        };
        if out.is_null() {
            return;
        }
        // SAFETY: non-null, a valid structure per the contract.
        let props = unsafe { &mut *out };
        props.properties = info.properties();
        let id = info.id_properties();
        // SAFETY: the chain is valid per the contract; each cast matches its sType.
        unsafe {
            each_out(props.p_next, |s| match (*s).s_type {
                vk::StructureType::PHYSICAL_DEVICE_ID_PROPERTIES => fill(s, id),
                vk::StructureType::PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT => fill(
                    s,
                    vk::PhysicalDeviceExternalMemoryHostPropertiesEXT {
                        min_imported_host_pointer_alignment: info.min_import_alignment.get(),
                        ..Default::default()
                    },
                ),
                vk::StructureType::PHYSICAL_DEVICE_DRIVER_PROPERTIES => {
                    fill(s, driver_properties())
                }
                vk::StructureType::PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES => fill(
                    s,
                    vk::PhysicalDeviceMaintenance3Properties {
                        max_per_set_descriptors: 0,
                        max_memory_allocation_size: info.max_allocation_size(),
                        ..Default::default()
                    },
                ),
                vk::StructureType::PHYSICAL_DEVICE_MULTIVIEW_PROPERTIES => {
                    fill(s, vk::PhysicalDeviceMultiviewProperties::default())
                }
                vk::StructureType::PHYSICAL_DEVICE_POINT_CLIPPING_PROPERTIES => {
                    fill(s, vk::PhysicalDevicePointClippingProperties::default())
                }
                vk::StructureType::PHYSICAL_DEVICE_PROTECTED_MEMORY_PROPERTIES => {
                    fill(s, vk::PhysicalDeviceProtectedMemoryProperties::default())
                }
                vk::StructureType::PHYSICAL_DEVICE_SUBGROUP_PROPERTIES => fill(
                    s,
                    vk::PhysicalDeviceSubgroupProperties {
                        // No shader stage supports subgroups; 1 is the smallest legal size.
                        subgroup_size: 1,
                        ..Default::default()
                    },
                ),
                _ => {}
            })
        };
    });
}

/// `VkPhysicalDeviceDriverProperties`, answered when an application chains it (the device
/// is Vulkan 1.1 and does not advertise `VK_KHR_driver_properties`). No registered
/// `VkDriverId` names this driver; we report `MESA_PANVK`, the open driver for the Mali
/// GPUs whose MMU format the vGPU implements and into which this external-memory half is
/// meant to go, and say in `driverInfo` what we are. `conformanceVersion` 0.0.0.0: not
/// conformant.
pub fn driver_properties() -> vk::PhysicalDeviceDriverProperties<'static> {
    let mut props = vk::PhysicalDeviceDriverProperties {
        driver_id: vk::DriverId::MESA_PANVK,
        conformance_version: vk::ConformanceVersion::default(),
        ..Default::default()
    };
    physical_device::write_c_string(&mut props.driver_name, "extmem");
    physical_device::write_c_string(
        &mut props.driver_info,
        concat!(
            "extmem-icd ",
            env!("CARGO_PKG_VERSION"),
            " (transfer queue over extmem-vgpu or the software device; not conformant)"
        ),
    );
    props
}

/// `vkGetPhysicalDeviceQueueFamilyProperties`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_queue_family_properties(
    pd: vk::PhysicalDevice,
    count: *mut u32,
    out: *mut vk::QueueFamilyProperties,
) {
    guard((), || {
        if physical(pd).is_ok() {
            // SAFETY: per the two-call contract.
            let _ = unsafe { enumerate(&physical_device::queue_families(), count, out) };
        }
    });
}

/// `vkGetPhysicalDeviceQueueFamilyProperties2` (extension structures are left as they are).
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_queue_family_properties2(
    pd: vk::PhysicalDevice,
    count: *mut u32,
    out: *mut vk::QueueFamilyProperties2<'_>,
) {
    guard((), || {
        if physical(pd).is_err() || count.is_null() {
            return;
        }
        let families = physical_device::queue_families();
        let total = u32::try_from(families.len()).unwrap_or(u32::MAX);
        if out.is_null() {
            // SAFETY: non-null per the check above.
            unsafe { count.write(total) };
            return;
        }
        // SAFETY: as above.
        let n = unsafe { count.read() }.min(total);
        for (i, family) in families.iter().take(n as usize).enumerate() {
            // SAFETY: `i < n <= *count`, a valid structure per the contract.
            unsafe { (*out.add(i)).queue_family_properties = *family };
        }
        // SAFETY: as above.
        unsafe { count.write(n) };
    });
}

/// `vkGetPhysicalDeviceMemoryProperties`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_memory_properties(
    pd: vk::PhysicalDevice,
    out: *mut vk::PhysicalDeviceMemoryProperties,
) {
    guard((), || {
        if let Ok(info) = physical(pd) {
            // SAFETY: valid for a write per the contract.
            let _ = unsafe { write(out, info.memory_properties()) };
        }
    });
}

/// `vkGetPhysicalDeviceMemoryProperties2`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_memory_properties2(
    pd: vk::PhysicalDevice,
    out: *mut vk::PhysicalDeviceMemoryProperties2<'_>,
) {
    guard((), || {
        if let (Ok(info), false) = (physical(pd), out.is_null()) {
            // SAFETY: non-null, a valid structure per the contract.
            unsafe { (*out).memory_properties = info.memory_properties() };
        }
    });
}

/// `vkGetPhysicalDeviceFormatProperties`: transfer source and destination for the
/// linear-image formats (see [`crate::image`]); nothing else (no shaders, no texel buffers).
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_format_properties(
    pd: vk::PhysicalDevice,
    format: vk::Format,
    out: *mut vk::FormatProperties,
) {
    guard((), || {
        if physical(pd).is_ok() {
            // SAFETY: valid for a write per the contract.
            let _ = unsafe { write(out, crate::image::format_properties(format)) };
        }
    });
}

/// `vkGetPhysicalDeviceFormatProperties2`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_format_properties2(
    pd: vk::PhysicalDevice,
    format: vk::Format,
    out: *mut vk::FormatProperties2<'_>,
) {
    guard((), || {
        if physical(pd).is_ok() && !out.is_null() {
            // SAFETY: non-null, a valid structure per the contract.
            unsafe { (*out).format_properties = crate::image::format_properties(format) };
        }
    });
}

/// `vkGetPhysicalDeviceImageFormatProperties`: images are not supported.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_image_format_properties(
    pd: vk::PhysicalDevice,
    format: vk::Format,
    ty: vk::ImageType,
    tiling: vk::ImageTiling,
    usage: vk::ImageUsageFlags,
    flags: vk::ImageCreateFlags,
    out: *mut vk::ImageFormatProperties,
) -> vk::Result {
    guard_result(|| {
        let info = physical(pd)?;
        let query = crate::image::ImageQuery {
            format,
            ty,
            tiling,
            usage,
            flags,
        };
        let props = crate::image::image_format_properties(&query, info.max_allocation_size());
        // SAFETY: valid for a write per the contract.
        let _ = unsafe { write(out, props.unwrap_or_default()) };
        props
            .map(|_| vk::Result::SUCCESS)
            .ok_or(vk::Result::ERROR_FORMAT_NOT_SUPPORTED)
    })
}

/// `vkGetPhysicalDeviceImageFormatProperties2`: linear 2D transfer images of the
/// supported formats; with `VkPhysicalDeviceExternalImageFormatInfo`, only for a handle
/// type the device can share images through, whose properties go into
/// `VkExternalImageFormatProperties`. Anything else is `VK_ERROR_FORMAT_NOT_SUPPORTED`
/// with all-zero properties.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_image_format_properties2(
    pd: vk::PhysicalDevice,
    info: *const vk::PhysicalDeviceImageFormatInfo2<'_>,
    out: *mut vk::ImageFormatProperties2<'_>,
) -> vk::Result {
    guard_result(|| {
        let dev = physical(pd)?;
        if info.is_null() || out.is_null() {
            return Err(BAD_HANDLE);
        }
        // SAFETY: non-null, valid per the contract.
        let info = unsafe { &*info };
        let mut handle_type = vk::ExternalMemoryHandleTypeFlags::empty();
        // SAFETY: the input chain is valid per the contract (only read); each cast
        // matches its sType.
        unsafe {
            each_out(info.p_next.cast_mut(), |s| {
                if (*s).s_type == vk::StructureType::PHYSICAL_DEVICE_EXTERNAL_IMAGE_FORMAT_INFO {
                    handle_type =
                        (*s.cast::<vk::PhysicalDeviceExternalImageFormatInfo<'_>>()).handle_type;
                }
            })
        };
        let query = crate::image::ImageQuery {
            format: info.format,
            ty: info.ty,
            tiling: info.tiling,
            usage: info.usage,
            flags: info.flags,
        };
        let props = crate::image::image_format_properties(&query, dev.max_allocation_size());
        let external = crate::image::external_image_properties(&dev.caps(), handle_type);
        let answer = props.zip(external);
        // SAFETY: non-null, a valid structure with a valid chain per the contract; each
        // cast matches its sType.
        unsafe {
            (*out).image_format_properties = answer.map(|a| a.0).unwrap_or_default();
            each_out((*out).p_next, |s| {
                if (*s).s_type == vk::StructureType::EXTERNAL_IMAGE_FORMAT_PROPERTIES {
                    fill(
                        s,
                        vk::ExternalImageFormatProperties {
                            external_memory_properties: answer.map(|a| a.1).unwrap_or_default(),
                            ..Default::default()
                        },
                    );
                }
            });
        }
        answer
            .map(|_| vk::Result::SUCCESS)
            .ok_or(vk::Result::ERROR_FORMAT_NOT_SUPPORTED)
    })
}

/// `vkGetPhysicalDeviceSparseImageFormatProperties`: none.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_sparse_image_format_properties(
    _pd: vk::PhysicalDevice,
    _format: vk::Format,
    _ty: vk::ImageType,
    _samples: vk::SampleCountFlags,
    _usage: vk::ImageUsageFlags,
    _tiling: vk::ImageTiling,
    count: *mut u32,
    _out: *mut vk::SparseImageFormatProperties,
) {
    guard((), || {
        // SAFETY: valid for a write per the contract.
        let _ = unsafe { write(count, 0) };
    });
}

/// `vkGetPhysicalDeviceSparseImageFormatProperties2`: none.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_sparse_image_format_properties2(
    _pd: vk::PhysicalDevice,
    _info: *const vk::PhysicalDeviceSparseImageFormatInfo2<'_>,
    count: *mut u32,
    _out: *mut vk::SparseImageFormatProperties2<'_>,
) {
    guard((), || {
        // SAFETY: valid for a write per the contract.
        let _ = unsafe { write(count, 0) };
    });
}

/// `vkEnumerateDeviceExtensionProperties`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn enumerate_device_extension_properties(
    pd: vk::PhysicalDevice,
    layer: *const c_char,
    count: *mut u32,
    out: *mut vk::ExtensionProperties,
) -> vk::Result {
    guard_result(|| {
        let info = physical(pd)?;
        if !layer.is_null() {
            return Err(vk::Result::ERROR_LAYER_NOT_PRESENT);
        }
        let props = physical_device::extension_properties(&info.device_extensions());
        // SAFETY: per the two-call contract.
        Ok(unsafe { enumerate(&props, count, out) })
    })
}

/// `vkEnumerateDeviceLayerProperties`: none.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn enumerate_device_layer_properties(
    _pd: vk::PhysicalDevice,
    count: *mut u32,
    out: *mut vk::LayerProperties,
) -> vk::Result {
    // SAFETY: per the two-call contract.
    guard(vk::Result::ERROR_UNKNOWN, || unsafe {
        enumerate::<vk::LayerProperties>(&[], count, out)
    })
}

/// `vkGetPhysicalDeviceExternalBufferProperties`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_external_buffer_properties(
    pd: vk::PhysicalDevice,
    info: *const vk::PhysicalDeviceExternalBufferInfo<'_>,
    out: *mut vk::ExternalBufferProperties<'_>,
) {
    guard((), || {
        let Ok(dev) = physical(pd) else {
            return;
        };
        if info.is_null() || out.is_null() {
            return;
        }
        // SAFETY: non-null, valid per the contract.
        let info = unsafe { &*info };
        let sparse = info.flags.intersects(
            vk::BufferCreateFlags::SPARSE_BINDING
                | vk::BufferCreateFlags::SPARSE_RESIDENCY
                | vk::BufferCreateFlags::SPARSE_ALIASED,
        );
        let props = if sparse {
            vk::ExternalMemoryProperties::default()
        } else {
            external_memory_properties(&dev.caps(), info.handle_type, Target::Buffer)
        };
        // SAFETY: non-null, a valid structure per the contract.
        unsafe { (*out).external_memory_properties = props };
    });
}

/// `vkGetPhysicalDeviceExternalSemaphoreProperties`: no external semaphores.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_external_semaphore_properties(
    _pd: vk::PhysicalDevice,
    _info: *const vk::PhysicalDeviceExternalSemaphoreInfo<'_>,
    out: *mut vk::ExternalSemaphoreProperties<'_>,
) {
    guard((), || {
        if !out.is_null() {
            // SAFETY: non-null, a valid structure per the contract.
            unsafe {
                (*out).export_from_imported_handle_types =
                    vk::ExternalSemaphoreHandleTypeFlags::empty();
                (*out).compatible_handle_types = vk::ExternalSemaphoreHandleTypeFlags::empty();
                (*out).external_semaphore_features = vk::ExternalSemaphoreFeatureFlags::empty();
            }
        }
    });
}

/// `vkGetPhysicalDeviceExternalFenceProperties`: no external fences.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_external_fence_properties(
    _pd: vk::PhysicalDevice,
    _info: *const vk::PhysicalDeviceExternalFenceInfo<'_>,
    out: *mut vk::ExternalFenceProperties<'_>,
) {
    guard((), || {
        if !out.is_null() {
            // SAFETY: non-null, a valid structure per the contract.
            unsafe {
                (*out).export_from_imported_handle_types =
                    vk::ExternalFenceHandleTypeFlags::empty();
                (*out).compatible_handle_types = vk::ExternalFenceHandleTypeFlags::empty();
                (*out).external_fence_features = vk::ExternalFenceFeatureFlags::empty();
            }
        }
    });
}

/// `vkGetPhysicalDeviceExternalImageFormatPropertiesNV`: no image format is supported, so
/// `VK_ERROR_FORMAT_NOT_SUPPORTED`; the structure still says no NV handle type (there are
/// none on Linux).
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_external_image_format_properties_nv(
    pd: vk::PhysicalDevice,
    format: vk::Format,
    ty: vk::ImageType,
    tiling: vk::ImageTiling,
    usage: vk::ImageUsageFlags,
    flags: vk::ImageCreateFlags,
    handle_type: vk::ExternalMemoryHandleTypeFlagsNV,
    out: *mut vk::ExternalImageFormatPropertiesNV,
) -> vk::Result {
    guard_result(|| {
        let dev = physical(pd)?;
        let query = crate::image::ImageQuery {
            format,
            ty,
            tiling,
            usage,
            flags,
        };
        let image = crate::image::image_format_properties(&query, dev.max_allocation_size());
        let props = nv_external_image_format_properties(
            &dev.caps(),
            handle_type,
            image.is_some(),
            image.unwrap_or_default(),
        );
        // SAFETY: valid for a write per the contract.
        let _ = unsafe { write(out, props) };
        image
            .map(|_| vk::Result::SUCCESS)
            .ok_or(vk::Result::ERROR_FORMAT_NOT_SUPPORTED)
    })
}

// ---- Device -------------------------------------------------------------------------------

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
    guard_result(|| {
        let extensions = physical(pd)?.device_extensions();
        if info.is_null() || out.is_null() {
            return Err(BAD_HANDLE);
        }
        // SAFETY: non-null, valid per the contract.
        let info = unsafe { &*info };
        // SAFETY: as above.
        unsafe {
            check_extensions(
                info.pp_enabled_extension_names,
                info.enabled_extension_count,
                &extensions,
            )
        }?;
        // SAFETY: as above.
        let queues = unsafe { slice(info.p_queue_create_infos, info.queue_create_info_count) }
            .ok_or(BAD_HANDLE)?;
        let valid_queue = |q: &vk::DeviceQueueCreateInfo<'_>| {
            q.queue_family_index == physical_device::QUEUE_FAMILY && q.queue_count == 1
        };
        if !queues.iter().all(valid_queue) {
            return Err(vk::Result::ERROR_INITIALIZATION_FAILED);
        }
        if !info.p_enabled_features.is_null() {
            const WORDS: usize = core::mem::size_of::<vk::PhysicalDeviceFeatures>()
                / core::mem::size_of::<vk::Bool32>();
            // SAFETY: non-null and valid per the contract; VkPhysicalDeviceFeatures is a
            // repr(C) struct of VkBool32 only, so it reads as WORDS VkBool32s.
            let wanted = unsafe {
                core::slice::from_raw_parts(info.p_enabled_features.cast::<vk::Bool32>(), WORDS)
            };
            if wanted.iter().any(|w| *w != vk::FALSE) {
                return Err(vk::Result::ERROR_FEATURE_NOT_PRESENT);
            }
        }
        let device = objects::create_device(pd.as_raw())?;
        // SAFETY: non-null, valid for a write per the contract.
        unsafe { out.write(vk::Device::from_raw(device)) };
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkDestroyDevice`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn destroy_device(
    device: vk::Device,
    _allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard((), || objects::destroy_device(device.as_raw()));
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
    guard((), || {
        let queue = objects::device_queue(device.as_raw())
            .filter(|_| family == physical_device::QUEUE_FAMILY && index == 0)
            .map_or(vk::Queue::null(), vk::Queue::from_raw);
        // SAFETY: valid for a write per the contract.
        let _ = unsafe { write(out, queue) };
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
    guard((), || {
        if info.is_null() {
            return;
        }
        // SAFETY: non-null, valid per the contract.
        let info = unsafe { &*info };
        let queue = objects::device_queue(device.as_raw())
            .filter(|_| {
                info.queue_family_index == physical_device::QUEUE_FAMILY
                    && info.queue_index == 0
                    && info.flags.is_empty()
            })
            .map_or(vk::Queue::null(), vk::Queue::from_raw);
        // SAFETY: valid for a write per the contract.
        let _ = unsafe { write(out, queue) };
    });
}

/// `vkDeviceWaitIdle`: submissions finish before they return.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn device_wait_idle(device: vk::Device) -> vk::Result {
    guard_result(|| {
        objects::DEVICES.get(device.as_raw()).ok_or(BAD_HANDLE)?;
        Ok(vk::Result::SUCCESS)
    })
}

// ---- Memory -------------------------------------------------------------------------------

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
    guard_result(|| {
        if info.is_null() || out.is_null() {
            return Err(BAD_HANDLE);
        }
        // SAFETY: non-null; the structure and its chain are valid per the contract.
        let req = unsafe { extmem::alloc_info::parse(&*info) }.map_err(|e| e.result())?;
        let memory = objects::allocate_memory(device.as_raw(), &req)?;
        // SAFETY: non-null, valid for a write per the contract.
        unsafe { out.write(vk::DeviceMemory::from_raw(memory)) };
        Ok(vk::Result::SUCCESS)
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
    guard((), || {
        objects::free_memory(device.as_raw(), memory.as_raw())
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
    guard_result(|| {
        if out.is_null() {
            return Err(BAD_HANDLE);
        }
        let ptr = objects::map_memory(device.as_raw(), memory.as_raw(), offset, size)?;
        let addr = usize::try_from(ptr.get()).map_err(|_| vk::Result::ERROR_MEMORY_MAP_FAILED)?;
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
    guard((), || {
        objects::unmap_memory(device.as_raw(), memory.as_raw())
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
    guard_result(|| {
        // SAFETY: `ranges` points to `count` structures per the contract.
        let ranges = unsafe { slice(ranges, count) }.ok_or(BAD_HANDLE)?;
        let memories: Vec<u64> = ranges.iter().map(|r| r.memory.as_raw()).collect();
        objects::check_ranges(device.as_raw(), &memories)?;
        Ok(vk::Result::SUCCESS)
    })
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
    guard_result(|| {
        if info.is_null() || out.is_null() {
            return Err(BAD_HANDLE);
        }
        // SAFETY: non-null, valid per the contract.
        let info = unsafe { &*info };
        let fd = objects::memory_fd(device.as_raw(), info.memory.as_raw(), info.handle_type)?;
        // SAFETY: non-null, valid for a write per the contract. Ownership of the fd passes
        // to the application.
        unsafe { out.write(fd.into_raw_fd()) };
        Ok(vk::Result::SUCCESS)
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
    guard_result(|| {
        if out.is_null() {
            return Err(BAD_HANDLE);
        }
        if fd < 0 {
            return Err(extmem::Error::from(extmem::Vuid::FdPropsValid).result());
        }
        // SAFETY: the fd is only passed to syscalls, which fail with EBADF if it is not
        // open; the application keeps it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let bits = objects::memory_fd_properties(device.as_raw(), handle_type, borrowed)?;
        // SAFETY: non-null, a valid structure per the contract.
        unsafe { (*out).memory_type_bits = bits };
        Ok(vk::Result::SUCCESS)
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
    guard_result(|| {
        if out.is_null() {
            return Err(BAD_HANDLE);
        }
        let ptr = HostVa::new(ptr as usize as u64);
        let bits = objects::host_pointer_properties(device.as_raw(), handle_type, ptr)?;
        // SAFETY: non-null, a valid structure per the contract.
        unsafe { (*out).memory_type_bits = bits };
        Ok(vk::Result::SUCCESS)
    })
}

// ---- Buffers ------------------------------------------------------------------------------

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
    guard_result(|| {
        if info.is_null() || out.is_null() {
            return Err(BAD_HANDLE);
        }
        // SAFETY: non-null, valid per the contract.
        let info = unsafe { &*info };
        let buffer = objects::create_buffer(device.as_raw(), info.size, info.flags)?;
        // SAFETY: non-null, valid for a write per the contract.
        unsafe { out.write(vk::Buffer::from_raw(buffer)) };
        Ok(vk::Result::SUCCESS)
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
    guard((), || {
        objects::destroy_buffer(device.as_raw(), buffer.as_raw())
    });
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
    guard((), || {
        if let Ok(size) = objects::buffer_size(device.as_raw(), buffer.as_raw()) {
            // SAFETY: valid for a write per the contract.
            let _ = unsafe { write(out, objects::buffer_requirements(size)) };
        }
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
    guard((), || {
        if info.is_null() || out.is_null() {
            return;
        }
        // SAFETY: non-null, valid per the contract.
        let buffer = unsafe { (*info).buffer };
        let Ok(size) = objects::buffer_size(device.as_raw(), buffer.as_raw()) else {
            return;
        };
        // SAFETY: non-null, a valid structure with a valid chain per the contract; each
        // cast matches its sType.
        unsafe {
            (*out).memory_requirements = objects::buffer_requirements(size);
            each_out((*out).p_next, |s| {
                if (*s).s_type == vk::StructureType::MEMORY_DEDICATED_REQUIREMENTS {
                    fill(s, vk::MemoryDedicatedRequirements::default());
                }
            });
        }
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
    guard_result(|| {
        objects::bind_buffer(device.as_raw(), buffer.as_raw(), memory.as_raw(), offset)?;
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
    guard_result(|| {
        // SAFETY: `infos` points to `count` structures per the contract.
        let infos = unsafe { slice(infos, count) }.ok_or(BAD_HANDLE)?;
        for info in infos {
            objects::bind_buffer(
                device.as_raw(),
                info.buffer.as_raw(),
                info.memory.as_raw(),
                info.memory_offset,
            )?;
        }
        Ok(vk::Result::SUCCESS)
    })
}

// ---- Command pools and buffers -------------------------------------------------------------

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
    guard_result(|| {
        if info.is_null() || out.is_null() {
            return Err(BAD_HANDLE);
        }
        // SAFETY: non-null, valid per the contract.
        let family = unsafe { (*info).queue_family_index };
        let pool = objects::create_pool(device.as_raw(), family)?;
        // SAFETY: non-null, valid for a write per the contract.
        unsafe { out.write(vk::CommandPool::from_raw(pool)) };
        Ok(vk::Result::SUCCESS)
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
    guard((), || objects::destroy_pool(device.as_raw(), pool.as_raw()));
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
    guard_result(|| {
        objects::reset_pool(device.as_raw(), pool.as_raw())?;
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
    guard_result(|| {
        if info.is_null() || out.is_null() {
            return Err(BAD_HANDLE);
        }
        // SAFETY: non-null, valid per the contract.
        let info = unsafe { &*info };
        let handles = objects::allocate_command_buffers(
            device.as_raw(),
            info.command_pool.as_raw(),
            info.command_buffer_count,
        )?;
        for (i, h) in handles.iter().enumerate() {
            // SAFETY: `out` has room for `command_buffer_count` handles per the contract.
            unsafe { out.add(i).write(vk::CommandBuffer::from_raw(*h)) };
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
    guard((), || {
        // SAFETY: `buffers` points to `count` handles per the contract.
        if let Some(buffers) = unsafe { slice(buffers, count) } {
            let handles: Vec<u64> = buffers.iter().map(|b| b.as_raw()).collect();
            objects::free_command_buffers(device.as_raw(), pool.as_raw(), &handles);
        }
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
    guard_result(|| {
        objects::reset_command_buffer(cb.as_raw())?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkEndCommandBuffer`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn end_command_buffer(cb: vk::CommandBuffer) -> vk::Result {
    guard_result(|| {
        objects::end_command_buffer(cb.as_raw())?;
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
    guard_result(|| {
        objects::reset_command_buffer(cb.as_raw())?;
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
    guard((), || {
        // SAFETY: `regions` points to `count` structures per the contract.
        let regions = unsafe { slice(regions, count) };
        objects::cmd_copy(cb.as_raw(), src.as_raw(), dst.as_raw(), regions);
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
    guard((), || {
        objects::cmd_fill(cb.as_raw(), dst.as_raw(), offset, size, data)
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
    guard((), || {
        // The size is checked before the data is read: never read more than the limit.
        match u32::try_from(size) {
            Ok(len) if size <= crate::commands::MAX_UPDATE_BYTES => {
                // SAFETY: `data` points to `size` bytes per the contract.
                let bytes = unsafe { slice(data.cast::<u8>(), len) };
                objects::cmd_update(cb.as_raw(), dst.as_raw(), offset, bytes);
            }
            _ => objects::record_error(
                cb.as_raw(),
                crate::commands::RecordError::BadSize { size, buffer: 0 },
            ),
        }
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

// ---- Queue and fences ---------------------------------------------------------------------

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
    guard_result(|| {
        // SAFETY: `submits` points to `count` structures per the contract.
        let submits = unsafe { slice(submits, count) }.ok_or(BAD_HANDLE)?;
        let mut buffers = Vec::new();
        for submit in submits {
            // SAFETY: each points to its `command_buffer_count` handles per the contract.
            let cbs = unsafe { slice(submit.p_command_buffers, submit.command_buffer_count) }
                .ok_or(BAD_HANDLE)?;
            buffers.extend(cbs.iter().map(|c| c.as_raw()));
        }
        let fence = (fence != vk::Fence::null()).then(|| fence.as_raw());
        objects::submit(queue.as_raw(), &buffers, fence)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkQueueWaitIdle`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn queue_wait_idle(queue: vk::Queue) -> vk::Result {
    guard_result(|| {
        objects::wait_idle_queue(queue.as_raw())?;
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
    guard_result(|| {
        if info.is_null() || out.is_null() {
            return Err(BAD_HANDLE);
        }
        // SAFETY: non-null, valid per the contract.
        let signaled = unsafe { (*info).flags }.contains(vk::FenceCreateFlags::SIGNALED);
        let fence = objects::create_fence(device.as_raw(), signaled)?;
        // SAFETY: non-null, valid for a write per the contract.
        unsafe { out.write(vk::Fence::from_raw(fence)) };
        Ok(vk::Result::SUCCESS)
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
    guard((), || {
        objects::destroy_fence(device.as_raw(), fence.as_raw())
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
    guard_result(|| {
        // SAFETY: `fences` points to `count` handles per the contract.
        let fences = unsafe { slice(fences, count) }.ok_or(BAD_HANDLE)?;
        let handles: Vec<u64> = fences.iter().map(|f| f.as_raw()).collect();
        objects::reset_fences(device.as_raw(), &handles)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkGetFenceStatus`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_fence_status(device: vk::Device, fence: vk::Fence) -> vk::Result {
    guard_result(|| {
        Ok(if objects::fence_status(device.as_raw(), fence.as_raw())? {
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
    guard_result(|| {
        // SAFETY: `fences` points to `count` handles per the contract.
        let fences = unsafe { slice(fences, count) }.ok_or(BAD_HANDLE)?;
        let handles: Vec<u64> = fences.iter().map(|f| f.as_raw()).collect();
        Ok(
            if objects::wait_for_fences(device.as_raw(), &handles, wait_all != vk::FALSE)? {
                vk::Result::SUCCESS
            } else {
                vk::Result::TIMEOUT
            },
        )
    })
}

pub mod image;
#[cfg(test)]
mod tests;
pub mod win32;
