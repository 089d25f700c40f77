//! The physical-device queries: features, properties, queue families, memory, formats and
//! the external-memory capabilities, answered from [`crate::physical_device`]'s tables.

use core::ffi::c_char;

use ash::vk;
use extmem::handle_types::{
    external_memory_properties, nv_external_image_format_properties, Target,
};

use super::{
    each_in, each_out, enumerate, enumerate_into, fill, guard_result, guard_void, input, output,
    physical, write,
};
use crate::error::{IcdError, IcdResult};
use crate::image::{image_format_properties, ImageQuery};
use crate::physical_device::{self, DeviceInfo};

/// Writes what `answer` says of the live physical device `pd` to `out`.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn write_answer<T>(
    pd: vk::PhysicalDevice,
    out: *mut T,
    answer: impl FnOnce(&DeviceInfo) -> T,
) -> IcdResult<()> {
    let info = physical(pd)?;
    // SAFETY: per the caller.
    unsafe { write(out, answer(&info)) }
}

/// Lets `answer` fill the application's output structure `out` (a `*2` query's, whose
/// sType and pNext it keeps) for the live physical device `pd`.
///
/// # Safety
/// `out` is null or a valid structure.
unsafe fn fill_answer<T>(
    pd: vk::PhysicalDevice,
    out: *mut T,
    answer: impl FnOnce(&DeviceInfo, &mut T),
) -> IcdResult<()> {
    let info = physical(pd)?;
    // SAFETY: per the caller.
    answer(&info, unsafe { output(out) }?);
    Ok(())
}

/// `vkGetPhysicalDeviceFeatures`: no optional feature (a copy engine has none).
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_features(
    pd: vk::PhysicalDevice,
    out: *mut vk::PhysicalDeviceFeatures,
) {
    // SAFETY: valid for a write per the contract.
    guard_void("vkGetPhysicalDeviceFeatures", || unsafe {
        write_answer(pd, out, |_| vk::PhysicalDeviceFeatures::default())
    });
}

/// `vkGetPhysicalDeviceFeatures2`: no feature in every structure we know, but timeline
/// semaphores and synchronization2.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_features2(
    pd: vk::PhysicalDevice,
    out: *mut vk::PhysicalDeviceFeatures2<'_>,
) {
    let answer = |_: &DeviceInfo, features: &mut vk::PhysicalDeviceFeatures2<'_>| {
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
                vk::StructureType::PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_FEATURES => fill(
                    s,
                    vk::PhysicalDeviceTimelineSemaphoreFeatures {
                        timeline_semaphore: vk::TRUE,
                        ..Default::default()
                    },
                ),
                vk::StructureType::PHYSICAL_DEVICE_SYNCHRONIZATION_2_FEATURES => fill(
                    s,
                    vk::PhysicalDeviceSynchronization2Features {
                        synchronization2: vk::TRUE,
                        ..Default::default()
                    },
                ),
                _ => {}
            })
        };
    };
    // SAFETY: a valid structure per the contract.
    guard_void("vkGetPhysicalDeviceFeatures2", || unsafe {
        fill_answer(pd, out, answer)
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
    // SAFETY: valid for a write per the contract.
    guard_void("vkGetPhysicalDeviceProperties", || unsafe {
        write_answer(pd, out, DeviceInfo::properties)
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
    let answer = |info: &DeviceInfo, props: &mut vk::PhysicalDeviceProperties2<'_>| {
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
                vk::StructureType::PHYSICAL_DEVICE_DRM_PROPERTIES_EXT => {
                    fill(s, info.drm_properties())
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
                vk::StructureType::PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_PROPERTIES => fill(
                    s,
                    vk::PhysicalDeviceTimelineSemaphoreProperties {
                        // A DRM syncobj timeline (and the software device's) is a u64
                        // with no limit on the distance between pending points.
                        max_timeline_semaphore_value_difference: u64::MAX,
                        ..Default::default()
                    },
                ),
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
    };
    // SAFETY: a valid structure per the contract.
    guard_void("vkGetPhysicalDeviceProperties2", || unsafe {
        fill_answer(pd, out, answer)
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
    guard_void("vkGetPhysicalDeviceQueueFamilyProperties", || {
        physical(pd)?;
        // SAFETY: per the two-call contract.
        let _ = unsafe { enumerate(&physical_device::queue_families(), count, out) };
        Ok(())
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
    guard_void("vkGetPhysicalDeviceQueueFamilyProperties2", || {
        physical(pd)?;
        let put = |slot: *mut vk::QueueFamilyProperties2<'_>, family: &_| {
            // SAFETY: a valid structure of the application's array (per `enumerate_into`);
            // only its body is written, its sType/pNext stay.
            unsafe { (*slot).queue_family_properties = *family };
        };
        // SAFETY: per the two-call contract.
        let _ = unsafe { enumerate_into(&physical_device::queue_families(), count, out, put) };
        Ok(())
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
    // SAFETY: valid for a write per the contract.
    guard_void("vkGetPhysicalDeviceMemoryProperties", || unsafe {
        write_answer(pd, out, DeviceInfo::memory_properties)
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
    let answer = |info: &DeviceInfo, out: &mut vk::PhysicalDeviceMemoryProperties2<'_>| {
        out.memory_properties = info.memory_properties();
    };
    // SAFETY: a valid structure per the contract.
    guard_void("vkGetPhysicalDeviceMemoryProperties2", || unsafe {
        fill_answer(pd, out, answer)
    });
}

/// `vkGetPhysicalDeviceFormatProperties`: transfer source and destination, in both
/// tilings, for the image formats (see [`crate::image`]); nothing else (no shaders, no
/// texel buffers).
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_format_properties(
    pd: vk::PhysicalDevice,
    format: vk::Format,
    out: *mut vk::FormatProperties,
) {
    let answer = |_: &DeviceInfo| crate::image::format_properties(format);
    // SAFETY: valid for a write per the contract.
    guard_void("vkGetPhysicalDeviceFormatProperties", || unsafe {
        write_answer(pd, out, answer)
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
    let answer = |_: &DeviceInfo, out: &mut vk::FormatProperties2<'_>| {
        out.format_properties = crate::image::format_properties(format);
    };
    // SAFETY: a valid structure per the contract.
    guard_void("vkGetPhysicalDeviceFormatProperties2", || unsafe {
        fill_answer(pd, out, answer)
    });
}

/// The answer of the image-format queries for `query` on `pd`: the device, and the
/// properties if the device offers such images.
fn image_format(
    pd: vk::PhysicalDevice,
    query: &ImageQuery,
) -> IcdResult<(DeviceInfo, Option<vk::ImageFormatProperties>)> {
    let dev = physical(pd)?;
    let props = image_format_properties(query, dev.max_allocation_size());
    Ok((dev, props))
}

/// `VK_SUCCESS` for a format query answered, else `VK_ERROR_FORMAT_NOT_SUPPORTED`.
fn supported<T>(answer: Option<T>) -> IcdResult<vk::Result> {
    answer
        .map(|_| vk::Result::SUCCESS)
        .ok_or(IcdError::FormatNotSupported)
}

/// `vkGetPhysicalDeviceImageFormatProperties`: 2D transfer images of the supported
/// formats, linear or optimal (see [`crate::image`]); anything else is
/// `VK_ERROR_FORMAT_NOT_SUPPORTED` with all-zero properties.
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
    guard_result("vkGetPhysicalDeviceImageFormatProperties", || {
        let query = ImageQuery {
            format,
            ty,
            tiling,
            usage,
            flags,
        };
        let (_, props) = image_format(pd, &query)?;
        // SAFETY: valid for a write per the contract.
        let _ = unsafe { write(out, props.unwrap_or_default()) };
        supported(props)
    })
}

/// `vkGetPhysicalDeviceImageFormatProperties2`: 2D transfer images of the supported
/// formats, linear or optimal; with `VkPhysicalDeviceExternalImageFormatInfo`, only for a handle
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
    guard_result("vkGetPhysicalDeviceImageFormatProperties2", || {
        physical(pd)?;
        // SAFETY: valid per the contract.
        let info = unsafe { input(info) }?;
        // SAFETY: a valid structure per the contract.
        let out = unsafe { output(out) }?;
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
        let query = ImageQuery {
            format: info.format,
            ty: info.ty,
            tiling: info.tiling,
            usage: info.usage,
            flags: info.flags,
        };
        let (dev, props) = image_format(pd, &query)?;
        let external = crate::image::external_image_properties(&dev.caps(), handle_type);
        let answer = props.zip(external);
        out.image_format_properties = answer.map(|a| a.0).unwrap_or_default();
        // SAFETY: the output chain is valid per the contract; the cast matches its sType.
        unsafe {
            each_out(out.p_next, |s| {
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
        supported(answer)
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
    guard_void("vkGetPhysicalDeviceSparseImageFormatProperties", || {
        // SAFETY: valid for a write per the contract.
        unsafe { write(count, 0) }
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
    guard_void("vkGetPhysicalDeviceSparseImageFormatProperties2", || {
        // SAFETY: valid for a write per the contract.
        unsafe { write(count, 0) }
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
    guard_result("vkEnumerateDeviceExtensionProperties", || {
        let info = physical(pd)?;
        if !layer.is_null() {
            return Err(IcdError::LayerNotPresent);
        }
        let props = physical_device::extension_properties(&info.device_extensions());
        // SAFETY: per the two-call contract.
        unsafe { enumerate(&props, count, out) }
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
    guard_result("vkEnumerateDeviceLayerProperties", || unsafe {
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
    guard_void("vkGetPhysicalDeviceExternalBufferProperties", || {
        let dev = physical(pd)?;
        // SAFETY: valid per the contract.
        let info = unsafe { input(info) }?;
        // SAFETY: a valid structure per the contract.
        let out = unsafe { output(out) }?;
        let sparse = info.flags.intersects(
            vk::BufferCreateFlags::SPARSE_BINDING
                | vk::BufferCreateFlags::SPARSE_RESIDENCY
                | vk::BufferCreateFlags::SPARSE_ALIASED,
        );
        out.external_memory_properties = if sparse {
            vk::ExternalMemoryProperties::default()
        } else {
            external_memory_properties(&dev.caps(), info.handle_type, Target::Buffer)
        };
        Ok(())
    });
}

/// `vkGetPhysicalDeviceExternalSemaphoreProperties`: `OPAQUE_FD` (binary and timeline)
/// and `SYNC_FD` (binary) on the kernel device, nothing on the software device or for any
/// other handle type.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_external_semaphore_properties(
    pd: vk::PhysicalDevice,
    info: *const vk::PhysicalDeviceExternalSemaphoreInfo<'_>,
    out: *mut vk::ExternalSemaphoreProperties<'_>,
) {
    guard_void("vkGetPhysicalDeviceExternalSemaphoreProperties", || {
        let dev = physical(pd)?;
        // SAFETY: valid per the contract.
        let info = unsafe { input(info) }?;
        let mut timeline = false;
        // SAFETY: a valid input chain per the contract; the cast matches the sType.
        unsafe {
            each_in(info.p_next, |s| {
                if (*s).s_type == vk::StructureType::SEMAPHORE_TYPE_CREATE_INFO {
                    let ty = &*s.cast::<vk::SemaphoreTypeCreateInfo<'_>>();
                    timeline = ty.semaphore_type == vk::SemaphoreType::TIMELINE;
                }
            });
        }
        let (from_imported, compatible, both) =
            dev.semaphore_fd_properties(info.handle_type, timeline);
        // SAFETY: a valid structure per the contract.
        let out = unsafe { output(out) }?;
        out.export_from_imported_handle_types = from_imported;
        out.compatible_handle_types = compatible;
        out.external_semaphore_features = if both {
            vk::ExternalSemaphoreFeatureFlags::EXPORTABLE
                | vk::ExternalSemaphoreFeatureFlags::IMPORTABLE
        } else {
            vk::ExternalSemaphoreFeatureFlags::empty()
        };
        Ok(())
    });
}

/// `vkGetPhysicalDeviceExternalFenceProperties`: `OPAQUE_FD` and `SYNC_FD` on the kernel
/// device, nothing on the software device or for any other handle type.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_physical_device_external_fence_properties(
    pd: vk::PhysicalDevice,
    info: *const vk::PhysicalDeviceExternalFenceInfo<'_>,
    out: *mut vk::ExternalFenceProperties<'_>,
) {
    guard_void("vkGetPhysicalDeviceExternalFenceProperties", || {
        let dev = physical(pd)?;
        // SAFETY: valid per the contract.
        let info = unsafe { input(info) }?;
        let (from_imported, compatible, both) = dev.fence_fd_properties(info.handle_type);
        // SAFETY: a valid structure per the contract.
        let out = unsafe { output(out) }?;
        out.export_from_imported_handle_types = from_imported;
        out.compatible_handle_types = compatible;
        out.external_fence_features = if both {
            vk::ExternalFenceFeatureFlags::EXPORTABLE | vk::ExternalFenceFeatureFlags::IMPORTABLE
        } else {
            vk::ExternalFenceFeatureFlags::empty()
        };
        Ok(())
    });
}

/// `vkGetPhysicalDeviceExternalImageFormatPropertiesNV`: the image answer of
/// `vkGetPhysicalDeviceImageFormatProperties`, and no NV handle type (there are none on
/// Linux).
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
    guard_result("vkGetPhysicalDeviceExternalImageFormatPropertiesNV", || {
        let query = ImageQuery {
            format,
            ty,
            tiling,
            usage,
            flags,
        };
        let (dev, image) = image_format(pd, &query)?;
        let props = nv_external_image_format_properties(
            &dev.caps(),
            handle_type,
            image.is_some(),
            image.unwrap_or_default(),
        );
        // SAFETY: valid for a write per the contract.
        let _ = unsafe { write(out, props) };
        supported(image)
    })
}
