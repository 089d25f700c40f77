//! The entry points of linear images (see [`crate::image`]): create, require, bind, lay
//! out, and copy to and from buffers on the copy engine. Thin wrappers, as the rest of
//! [`crate::entry`].

use ash::vk;
use extmem::handle_types::nv_external_image_format_properties;

use super::{
    each_info, each_out, guard_result, guard_void, null, slice, write, write_requirements2,
};
use crate::commands::Direction;
use crate::error::{IcdError, Rule};
use crate::image::{external_image_properties, ImageLayout, ImageQuery};
use crate::objects::{self, DEVICES};
use crate::physical_device::BUFFER_MEMORY_TYPES;

/// `vkCreateImage`: a linear 2D transfer image of a supported format, optionally for
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
    guard_result("vkCreateImage", || {
        let dev = DEVICES.live(device)?;
        if out.is_null() {
            return Err(null::<vk::Image>());
        }
        // SAFETY: valid per the contract.
        let info = unsafe { super::input(info) }?;
        let caps = dev.info.caps();
        // The first handle types (their raw bits) the device cannot share this image with.
        let mut refused: Option<u32> = None;
        // SAFETY: the chain is valid per the contract (only read here); each cast
        // matches its sType.
        unsafe {
            each_out(info.p_next.cast_mut(), |s| match (*s).s_type {
                vk::StructureType::EXTERNAL_MEMORY_IMAGE_CREATE_INFO => {
                    let types = (*s.cast::<vk::ExternalMemoryImageCreateInfo<'_>>()).handle_types;
                    if !each_bit(types).all(|bit| external_image_properties(&caps, bit).is_some()) {
                        refused.get_or_insert(types.as_raw());
                    }
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
                    if !nv.compatible_handle_types.contains(types) {
                        refused.get_or_insert(types.as_raw());
                    }
                }
                _ => {}
            })
        };
        if let Some(types) = refused {
            return Err(IcdError::rule(Rule::ImageHandleTypes, u64::from(types)));
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
        )?;
        let image = objects::create_image(device, layout)?;
        // SAFETY: non-null, valid for a write per the contract.
        unsafe { out.write(image) };
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
    guard_void("vkDestroyImage", || {
        objects::destroy_image(device, image);
        Ok(())
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
    guard_void("vkGetImageMemoryRequirements", || {
        let layout = objects::image_layout(device, image)?;
        // SAFETY: valid for a write per the contract.
        unsafe { write(out, layout.requirements(BUFFER_MEMORY_TYPES)) }
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
    guard_void("vkGetImageMemoryRequirements2", || {
        // SAFETY: valid per the contract.
        let info = unsafe { super::input(info) }?;
        let layout = objects::image_layout(device, info.image)?;
        // SAFETY: a valid structure with a valid chain per the contract.
        unsafe { write_requirements2(out, layout.requirements(BUFFER_MEMORY_TYPES)) }
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
    guard_result("vkBindImageMemory", || {
        objects::bind_image(device, image, memory, offset)?;
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
    guard_result("vkBindImageMemory2", || {
        // SAFETY: `infos` points to `count` structures per the contract.
        unsafe {
            each_info(infos, count, |info| {
                objects::bind_image(device, info.image, info.memory, info.memory_offset)
            })
        }
    })
}

/// `vkGetImageSubresourceLayout`: the only subresource is colour, level 0, layer 0; any
/// other (`VUID-vkGetImageSubresourceLayout-aspectMask-00997`, `-mipLevel-01716`,
/// `-arrayLayer-01717`) gets an all-zero layout.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_image_subresource_layout(
    device: vk::Device,
    image: vk::Image,
    subresource: *const vk::ImageSubresource,
    out: *mut vk::SubresourceLayout,
) {
    guard_void("vkGetImageSubresourceLayout", || {
        let layout = objects::image_layout(device, image)?;
        // SAFETY: valid per the contract.
        let sub = unsafe { super::input(subresource) }?;
        let only = sub.aspect_mask == vk::ImageAspectFlags::COLOR
            && sub.mip_level == 0
            && sub.array_layer == 0;
        let answer = if only {
            layout.subresource_layout()
        } else {
            vk::SubresourceLayout::default()
        };
        // SAFETY: valid for a write per the contract.
        unsafe { write(out, answer) }
    });
}

/// Records a copy between `buffer` and `image` of the `count` regions at `regions`.
///
/// # Safety
/// `regions` is null or points to `count` structures.
unsafe fn record_copy(
    entry: &'static str,
    cb: vk::CommandBuffer,
    buffer: vk::Buffer,
    image: vk::Image,
    layout: vk::ImageLayout,
    (count, regions): (u32, *const vk::BufferImageCopy),
    direction: Direction,
) {
    guard_void(entry, || {
        // SAFETY: per the caller.
        let regions = unsafe { slice(regions, count) };
        objects::cmd_copy_buffer_image(cb, buffer, image, layout, regions, direction);
        Ok(())
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
    let regions = (count, regions);
    let entry = "vkCmdCopyBufferToImage";
    let direction = Direction::BufferToImage;
    // SAFETY: `regions` points to `count` structures per the contract.
    unsafe { record_copy(entry, cb, src, dst, dst_layout, regions, direction) };
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
    let regions = (count, regions);
    let entry = "vkCmdCopyImageToBuffer";
    let direction = Direction::ImageToBuffer;
    // SAFETY: `regions` points to `count` structures per the contract.
    unsafe { record_copy(entry, cb, dst, src, src_layout, regions, direction) };
}
