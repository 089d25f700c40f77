//! The entry points of images (see [`crate::image`]): create, require, bind, lay out, and
//! copy to and from buffers on the copy engine. Thin wrappers, as the rest of
//! [`crate::entry`].

use ash::vk::{self, Handle};
use extmem::handle_types::nv_external_image_format_properties;

use super::{each_out, fill, guard, guard_result, slice, write};
use crate::commands::Direction;
use crate::image::{external_image_properties, ImageLayout, ImageQuery};
use crate::objects::{self, BAD_HANDLE, DEVICES, INVALID};
use crate::physical_device::BUFFER_MEMORY_TYPES;

/// `vkCreateImage`: a 2D transfer image of a supported format, linear or optimal (laid out
/// alike), optionally for
/// external memory of handle types the device can share images through
/// (`VUID-VkImageCreateInfo-pNext-00990`; the NV types only on Windows).
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn create_image(
    device: vk::Device,
    info: *const vk::ImageCreateInfo<'_>,
    _allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Image,
) -> vk::Result {
    guard_result(|| {
        let dev = DEVICES.get(device.as_raw()).ok_or(BAD_HANDLE)?;
        if info.is_null() || out.is_null() {
            return Err(BAD_HANDLE);
        }
        // SAFETY: non-null, valid per the contract.
        let info = unsafe { &*info };
        let caps = dev.info.caps();
        let mut external_ok = true;
        // SAFETY: the chain is valid per the contract (only read here); each cast
        // matches its sType.
        unsafe {
            each_out(info.p_next.cast_mut(), |s| match (*s).s_type {
                vk::StructureType::EXTERNAL_MEMORY_IMAGE_CREATE_INFO => {
                    let types = (*s.cast::<vk::ExternalMemoryImageCreateInfo<'_>>()).handle_types;
                    external_ok &=
                        each_bit(types).all(|bit| external_image_properties(&caps, bit).is_some());
                }
                vk::StructureType::EXTERNAL_MEMORY_IMAGE_CREATE_INFO_NV => {
                    let types = (*s.cast::<vk::ExternalMemoryImageCreateInfoNV<'_>>()).handle_types;
                    // The format itself is checked with the layout below.
                    let nv = nv_external_image_format_properties(
                        &caps,
                        types,
                        true,
                        vk::ImageFormatProperties::default(),
                    );
                    external_ok &= nv.compatible_handle_types.contains(types);
                }
                _ => {}
            })
        };
        if !external_ok {
            return Err(INVALID);
        }
        let query = ImageQuery {
            format: info.format,
            ty: info.image_type,
            tiling: info.tiling,
            usage: info.usage,
            flags: info.flags,
        };
        let counts = (info.mip_levels, info.array_layers, info.samples);
        let layout = ImageLayout::new(
            &query,
            info.extent,
            counts,
            info.initial_layout,
            dev.info.max_allocation_size(),
        )
        .map_err(|_| INVALID)?;
        let image = objects::create_image(device.as_raw(), layout)?;
        // SAFETY: non-null, valid for a write per the contract.
        unsafe { out.write(vk::Image::from_raw(image)) };
        Ok(vk::Result::SUCCESS)
    })
}

/// The single bits of `types`.
fn each_bit(
    types: vk::ExternalMemoryHandleTypeFlags,
) -> impl Iterator<Item = vk::ExternalMemoryHandleTypeFlags> {
    (0..32)
        .map(|i| vk::ExternalMemoryHandleTypeFlags::from_raw(1 << i))
        .filter(move |bit| types.contains(*bit))
}

/// `vkDestroyImage`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn destroy_image(
    device: vk::Device,
    image: vk::Image,
    _allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard((), || {
        objects::destroy_image(device.as_raw(), image.as_raw())
    });
}

/// `vkGetImageMemoryRequirements`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_image_memory_requirements(
    device: vk::Device,
    image: vk::Image,
    out: *mut vk::MemoryRequirements,
) {
    guard((), || {
        if let Ok(layout) = objects::image_layout(device.as_raw(), image.as_raw()) {
            // SAFETY: valid for a write per the contract.
            let _ = unsafe { write(out, layout.requirements(BUFFER_MEMORY_TYPES)) };
        }
    });
}

/// `vkGetImageMemoryRequirements2`: never dedicated-only nor preferring it.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_image_memory_requirements2(
    device: vk::Device,
    info: *const vk::ImageMemoryRequirementsInfo2<'_>,
    out: *mut vk::MemoryRequirements2<'_>,
) {
    guard((), || {
        if info.is_null() || out.is_null() {
            return;
        }
        // SAFETY: non-null, valid per the contract.
        let image = unsafe { (*info).image };
        let Ok(layout) = objects::image_layout(device.as_raw(), image.as_raw()) else {
            return;
        };
        // SAFETY: non-null, a valid structure with a valid chain per the contract; each
        // cast matches its sType.
        unsafe {
            (*out).memory_requirements = layout.requirements(BUFFER_MEMORY_TYPES);
            each_out((*out).p_next, |s| {
                if (*s).s_type == vk::StructureType::MEMORY_DEDICATED_REQUIREMENTS {
                    fill(s, vk::MemoryDedicatedRequirements::default());
                }
            });
        }
    });
}

/// `vkBindImageMemory`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn bind_image_memory(
    device: vk::Device,
    image: vk::Image,
    memory: vk::DeviceMemory,
    offset: vk::DeviceSize,
) -> vk::Result {
    guard_result(|| {
        objects::bind_image(device.as_raw(), image.as_raw(), memory.as_raw(), offset)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkBindImageMemory2`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn bind_image_memory2(
    device: vk::Device,
    count: u32,
    infos: *const vk::BindImageMemoryInfo<'_>,
) -> vk::Result {
    guard_result(|| {
        // SAFETY: `infos` points to `count` structures per the contract.
        let infos = unsafe { slice(infos, count) }.ok_or(BAD_HANDLE)?;
        for info in infos {
            objects::bind_image(
                device.as_raw(),
                info.image.as_raw(),
                info.memory.as_raw(),
                info.memory_offset,
            )?;
        }
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkGetImageSubresourceLayout`: the only subresource is colour, level 0, layer 0, of a
/// linear image; any other (`VUID-vkGetImageSubresourceLayout-aspectMask-00997`,
/// `-mipLevel-01716`, `-arrayLayer-01717`), and any subresource of an optimal image, whose
/// layout is the device's own (`VUID-vkGetImageSubresourceLayout-image-07790`), gets an
/// all-zero layout.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_image_subresource_layout(
    device: vk::Device,
    image: vk::Image,
    subresource: *const vk::ImageSubresource,
    out: *mut vk::SubresourceLayout,
) {
    guard((), || {
        let Ok(layout) = objects::image_layout(device.as_raw(), image.as_raw()) else {
            return;
        };
        if subresource.is_null() {
            return;
        }
        // SAFETY: non-null, valid per the contract.
        let sub = unsafe { *subresource };
        let only = sub.aspect_mask == vk::ImageAspectFlags::COLOR
            && sub.mip_level == 0
            && sub.array_layer == 0;
        let answer = layout
            .subresource_layout()
            .filter(|_| only)
            .unwrap_or_default();
        // SAFETY: valid for a write per the contract.
        let _ = unsafe { write(out, answer) };
    });
}

/// `vkCmdCopyBufferToImage`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn cmd_copy_buffer_to_image(
    cb: vk::CommandBuffer,
    src: vk::Buffer,
    dst: vk::Image,
    dst_layout: vk::ImageLayout,
    count: u32,
    regions: *const vk::BufferImageCopy,
) {
    guard((), || {
        // SAFETY: `regions` points to `count` structures per the contract.
        let regions = unsafe { slice(regions, count) };
        objects::cmd_copy_buffer_image(
            cb.as_raw(),
            src.as_raw(),
            dst.as_raw(),
            dst_layout,
            regions,
            Direction::BufferToImage,
        );
    });
}

/// `vkCmdCopyImageToBuffer`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn cmd_copy_image_to_buffer(
    cb: vk::CommandBuffer,
    src: vk::Image,
    src_layout: vk::ImageLayout,
    dst: vk::Buffer,
    count: u32,
    regions: *const vk::BufferImageCopy,
) {
    guard((), || {
        // SAFETY: `regions` points to `count` structures per the contract.
        let regions = unsafe { slice(regions, count) };
        objects::cmd_copy_buffer_image(
            cb.as_raw(),
            dst.as_raw(),
            src.as_raw(),
            src_layout,
            regions,
            Direction::ImageToBuffer,
        );
    });
}
