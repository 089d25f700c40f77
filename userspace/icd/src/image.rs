//! Images: the formats the device supports, their memory layout, and the answers to the
//! image-format queries.
//!
//! The device is a copy engine, so an image is memory with a row pitch: 2D, one mip level,
//! one layer, one sample, used only as a transfer source or destination. That is what the
//! NV external-memory family needs (an image shared with another API through
//! `VK_IMAGE_LAYOUT_GENERAL`), and what a copy engine can honestly offer. Anything else
//! answers `VK_ERROR_FORMAT_NOT_SUPPORTED`, with all-zero properties.
//!
//! Both tilings are offered. With `VK_IMAGE_TILING_OPTIMAL` the layout is the device's
//! choice, which the application may not ask for
//! (`VUID-vkGetImageSubresourceLayout-image-07790`); the device chooses the linear one,
//! rows padded to [`ROW_PITCH_ALIGNMENT`]. A coarser alignment would buy nothing: the copy
//! engine moves bytes by GPU VA, with no tiles or texture caches to serve, and a coarser
//! alignment pads more widths, each padded image costing one COPY per row instead of one
//! for the whole image. One layout for both tilings also means that an optimal and a
//! linear image over the same memory agree, and since the layout follows from the create
//! info alone, any device of this driver that creates the same image over imported memory
//! finds the same texels.

use ash::vk;
use extmem::handle_types::{external_memory_properties, DeviceCaps, Target};

/// The supported formats, each with its texel size in bytes.
pub const FORMATS: &[(vk::Format, u64)] = &[
    (vk::Format::R8_UNORM, 1),
    (vk::Format::R8G8_UNORM, 2),
    (vk::Format::R8G8B8A8_UNORM, 4),
    (vk::Format::B8G8R8A8_UNORM, 4),
    (vk::Format::R16G16B16A16_SFLOAT, 8),
    (vk::Format::R32G32B32A32_SFLOAT, 16),
];

/// The usages an image may have: the copy engine reads and writes it.
pub const USAGE: vk::ImageUsageFlags = vk::ImageUsageFlags::from_raw(
    vk::ImageUsageFlags::TRANSFER_SRC.as_raw() | vk::ImageUsageFlags::TRANSFER_DST.as_raw(),
);

/// The largest width or height (`maxImageDimension2D`): 16384, what Mali-G610 reports.
pub const MAX_DIMENSION: u32 = 16384;

/// Row pitches are multiples of this: 64 bytes, the linear-layout stride alignment
/// panfrost uses for Mali, so an image exported to a Mali driver keeps its layout.
pub const ROW_PITCH_ALIGNMENT: u64 = 64;

/// Images are bound at 4 KiB-aligned offsets: a page, so that an image alone in its memory
/// can be shared as a whole number of pages.
pub const IMAGE_ALIGNMENT: u64 = 4096;

/// The bytes of one texel of `format`, if the device supports it.
pub fn texel_size(format: vk::Format) -> Option<u64> {
    FORMATS
        .iter()
        .find(|(f, _)| *f == format)
        .map(|(_, size)| *size)
}

/// The tilings an image may have: both, laid out alike (see the module documentation).
pub const TILINGS: [vk::ImageTiling; 2] = [vk::ImageTiling::LINEAR, vk::ImageTiling::OPTIMAL];

/// `vkGetPhysicalDeviceFormatProperties`: transfer source and destination with linear and
/// with optimal tiling for a supported format; nothing for buffers (no shaders, no texel
/// buffers).
pub fn format_properties(format: vk::Format) -> vk::FormatProperties {
    let features = if texel_size(format).is_some() {
        vk::FormatFeatureFlags::TRANSFER_SRC | vk::FormatFeatureFlags::TRANSFER_DST
    } else {
        vk::FormatFeatureFlags::empty()
    };
    vk::FormatProperties {
        linear_tiling_features: features,
        optimal_tiling_features: features,
        buffer_features: vk::FormatFeatureFlags::empty(),
    }
}

/// What `vkCreateImage` (and the format queries) are asked about.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ImageQuery {
    /// `format`.
    pub format: vk::Format,
    /// `imageType`.
    pub ty: vk::ImageType,
    /// `tiling`.
    pub tiling: vk::ImageTiling,
    /// `usage`.
    pub usage: vk::ImageUsageFlags,
    /// `flags`.
    pub flags: vk::ImageCreateFlags,
}

/// The limits a supported combination has: 2D of one of [`TILINGS`] up to
/// [`MAX_DIMENSION`], one level, one layer, one sample, at most `max_resource_size` bytes.
/// `None` for anything else.
pub fn image_format_properties(
    query: &ImageQuery,
    max_resource_size: u64,
) -> Option<vk::ImageFormatProperties> {
    let supported = texel_size(query.format).is_some()
        && query.ty == vk::ImageType::TYPE_2D
        && TILINGS.contains(&query.tiling)
        && !query.usage.is_empty()
        && USAGE.contains(query.usage)
        && query.flags.is_empty();
    supported.then_some(vk::ImageFormatProperties {
        max_extent: vk::Extent3D {
            width: MAX_DIMENSION,
            height: MAX_DIMENSION,
            depth: 1,
        },
        max_mip_levels: 1,
        max_array_layers: 1,
        sample_counts: vk::SampleCountFlags::TYPE_1,
        max_resource_size,
    })
}

/// The external part of `vkGetPhysicalDeviceImageFormatProperties2` for `handle_type`
/// (`VkPhysicalDeviceExternalImageFormatInfo`): `None` when the device cannot share such
/// an image through that handle type, which the query answers with
/// `VK_ERROR_FORMAT_NOT_SUPPORTED`. A zero handle type asks nothing.
///
/// The answer is the same for both tilings. Opaque fds (and NT handles) are only
/// importable by the same driver and device (`driverUUID`/`deviceUUID`), which lays the
/// image out the same way. A dma-buf carries no layout: without DRM format modifiers an
/// optimal image's layout is implementation-defined, so only an importer that knows this
/// driver's layout reads it right; this device exports and imports such dma-bufs (the
/// pages are plain memory, with no metadata that would make the memory dedicated-only),
/// and what the texels mean outside Vulkan is the application's agreement to make.
pub fn external_image_properties(
    caps: &DeviceCaps,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
) -> Option<vk::ExternalMemoryProperties> {
    if handle_type.is_empty() {
        return Some(vk::ExternalMemoryProperties::default());
    }
    let props = external_memory_properties(caps, handle_type, Target::Image);
    (!props.external_memory_features.is_empty()).then_some(props)
}

/// Why `vkCreateImage` refused (the application broke a Valid Usage rule, or asked for
/// something [`image_format_properties`] does not offer).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ImageError {
    /// Format, type, tiling, usage or flags not supported
    /// (`VUID-VkImageCreateInfo-imageCreateMaxMipLevels-02251`).
    Unsupported,
    /// A zero or too large extent, or a depth other than 1 for 2D
    /// (`VUID-VkImageCreateInfo-extent-00944`/`-00945`/`-02253`, `-imageType-00957`).
    Extent {
        /// The extent asked for.
        width: u32,
        /// Its height.
        height: u32,
        /// Its depth.
        depth: u32,
    },
    /// More than one mip level, layer or sample (`-mipLevels-02255`, `-arrayLayers-02256`,
    /// `-samples-02258`).
    Counts,
    /// `initialLayout` other than `UNDEFINED` or `PREINITIALIZED`
    /// (`VUID-VkImageCreateInfo-initialLayout-00993`).
    InitialLayout,
    /// More bytes than `maxResourceSize`.
    TooLarge {
        /// The size the image would have.
        size: u64,
    },
}

/// An image's memory layout: row `y` starts `y * row_pitch` bytes in, whichever its
/// tiling.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ImageLayout {
    /// Its format.
    pub format: vk::Format,
    /// Its tiling: whether the application may ask for the layout.
    pub tiling: vk::ImageTiling,
    /// Bytes per texel.
    pub texel: u64,
    /// Width in texels.
    pub width: u32,
    /// Height in texels.
    pub height: u32,
    /// Bytes from one row to the next (a multiple of [`ROW_PITCH_ALIGNMENT`]).
    pub row_pitch: u64,
    /// Bytes the image occupies.
    pub size: u64,
    /// The usages it was created with.
    pub usage: vk::ImageUsageFlags,
}

impl ImageLayout {
    /// Checks a `VkImageCreateInfo` (its fields as given) and lays the image out.
    pub fn new(
        query: &ImageQuery,
        extent: vk::Extent3D,
        counts: (u32, u32, vk::SampleCountFlags),
        initial_layout: vk::ImageLayout,
        max_resource_size: u64,
    ) -> Result<Self, ImageError> {
        if image_format_properties(query, max_resource_size).is_none() {
            return Err(ImageError::Unsupported);
        }
        let texel = texel_size(query.format).ok_or(ImageError::Unsupported)?;
        let bad_extent = ImageError::Extent {
            width: extent.width,
            height: extent.height,
            depth: extent.depth,
        };
        let dimension_ok = |d: u32| (1..=MAX_DIMENSION).contains(&d);
        if !dimension_ok(extent.width) || !dimension_ok(extent.height) || extent.depth != 1 {
            return Err(bad_extent);
        }
        if counts != (1, 1, vk::SampleCountFlags::TYPE_1) {
            return Err(ImageError::Counts);
        }
        if initial_layout != vk::ImageLayout::UNDEFINED
            && initial_layout != vk::ImageLayout::PREINITIALIZED
        {
            return Err(ImageError::InitialLayout);
        }
        // Both dimensions are at most 2^14 and a texel at most 16 bytes: no overflow.
        let row_pitch = (u64::from(extent.width) * texel).next_multiple_of(ROW_PITCH_ALIGNMENT);
        let size = row_pitch * u64::from(extent.height);
        if size > max_resource_size {
            return Err(ImageError::TooLarge { size });
        }
        Ok(Self {
            format: query.format,
            tiling: query.tiling,
            texel,
            width: extent.width,
            height: extent.height,
            row_pitch,
            size,
            usage: query.usage,
        })
    }

    /// `vkGetImageMemoryRequirements`, for memory types `memory_type_bits`.
    pub fn requirements(&self, memory_type_bits: u32) -> vk::MemoryRequirements {
        vk::MemoryRequirements {
            size: self.size,
            alignment: IMAGE_ALIGNMENT,
            memory_type_bits,
        }
    }

    /// `vkGetImageSubresourceLayout` of the only subresource (colour, level 0, layer 0) of
    /// a linear image. `None` for an optimal image: its layout is the device's business and
    /// asking for it is invalid (`VUID-vkGetImageSubresourceLayout-image-07790`).
    pub fn subresource_layout(&self) -> Option<vk::SubresourceLayout> {
        (self.tiling == vk::ImageTiling::LINEAR).then_some(vk::SubresourceLayout {
            offset: 0,
            size: self.size,
            row_pitch: self.row_pitch,
            array_pitch: self.size,
            depth_pitch: self.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use extmem::handle_types::Platform;

    const MAX: u64 = 1 << 32;

    fn rgba(usage: vk::ImageUsageFlags) -> ImageQuery {
        ImageQuery {
            format: vk::Format::R8G8B8A8_UNORM,
            ty: vk::ImageType::TYPE_2D,
            tiling: vk::ImageTiling::LINEAR,
            usage,
            flags: vk::ImageCreateFlags::empty(),
        }
    }

    fn extent(width: u32, height: u32) -> vk::Extent3D {
        vk::Extent3D {
            width,
            height,
            depth: 1,
        }
    }

    const ONE: (u32, u32, vk::SampleCountFlags) = (1, 1, vk::SampleCountFlags::TYPE_1);

    #[test]
    fn only_2d_transfer_images_of_known_formats_are_offered_in_both_tilings() {
        let ok = image_format_properties(&rgba(USAGE), MAX)
            .unwrap_or_else(|| panic!("RGBA8 linear transfer"));
        assert_eq!(ok.max_extent.width, MAX_DIMENSION);
        assert_eq!((ok.max_mip_levels, ok.max_array_layers), (1, 1));
        let optimal = ImageQuery {
            tiling: vk::ImageTiling::OPTIMAL,
            ..rgba(vk::ImageUsageFlags::TRANSFER_DST)
        };
        let opt = image_format_properties(&optimal, MAX)
            .unwrap_or_else(|| panic!("RGBA8 optimal transfer"));
        assert_eq!(
            (opt.max_extent, opt.max_mip_levels, opt.sample_counts),
            (ok.max_extent, 1, vk::SampleCountFlags::TYPE_1)
        );
        for bad in [
            // A modifier names a layout; without VK_EXT_image_drm_format_modifier there is none.
            ImageQuery {
                tiling: vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT,
                ..rgba(USAGE)
            },
            ImageQuery {
                ty: vk::ImageType::TYPE_3D,
                ..rgba(USAGE)
            },
            ImageQuery {
                format: vk::Format::D32_SFLOAT,
                ..rgba(USAGE)
            },
            ImageQuery {
                flags: vk::ImageCreateFlags::MUTABLE_FORMAT,
                ..rgba(USAGE)
            },
            rgba(vk::ImageUsageFlags::SAMPLED),
            rgba(vk::ImageUsageFlags::empty()),
        ] {
            assert!(image_format_properties(&bad, MAX).is_none(), "{bad:?}");
        }
        let transfer = vk::FormatFeatureFlags::TRANSFER_SRC | vk::FormatFeatureFlags::TRANSFER_DST;
        for (format, _) in FORMATS {
            let features = format_properties(*format);
            assert_eq!(features.linear_tiling_features, transfer, "{format:?}");
            assert_eq!(features.optimal_tiling_features, transfer, "{format:?}");
            assert!(features.buffer_features.is_empty(), "{format:?}");
        }
        let depth = format_properties(vk::Format::D16_UNORM);
        assert!(
            depth.linear_tiling_features.is_empty() && depth.optimal_tiling_features.is_empty()
        );
    }

    #[test]
    fn rows_are_64_byte_aligned_and_the_size_follows() {
        let q = rgba(USAGE);
        let layout = ImageLayout::new(&q, extent(33, 5), ONE, vk::ImageLayout::UNDEFINED, MAX)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((layout.row_pitch, layout.size), (192, 960));
        let sub = layout
            .subresource_layout()
            .unwrap_or_else(|| panic!("a linear image's layout"));
        assert_eq!((sub.offset, sub.row_pitch, sub.size), (0, 192, 960));
        let reqs = layout.requirements(0b11);
        assert_eq!((reqs.size, reqs.alignment), (960, IMAGE_ALIGNMENT));
        let r8 = ImageQuery {
            format: vk::Format::R8_UNORM,
            ..q
        };
        let layout = ImageLayout::new(&r8, extent(64, 2), ONE, vk::ImageLayout::UNDEFINED, MAX)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(layout.row_pitch, 64, "already aligned");
    }

    #[test]
    fn optimal_images_have_the_linear_layout_and_do_not_tell_it() {
        let linear = rgba(USAGE);
        let optimal = ImageQuery {
            tiling: vk::ImageTiling::OPTIMAL,
            ..linear
        };
        let undefined = vk::ImageLayout::UNDEFINED;
        for (w, h) in [(33, 5), (16, 16), (1, 1), (MAX_DIMENSION, 3)] {
            let lin = ImageLayout::new(&linear, extent(w, h), ONE, undefined, MAX)
                .unwrap_or_else(|e| panic!("{e:?}"));
            let opt = ImageLayout::new(&optimal, extent(w, h), ONE, undefined, MAX)
                .unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(opt.tiling, vk::ImageTiling::OPTIMAL);
            let (a, b) = (opt.requirements(1), lin.requirements(1));
            assert_eq!(
                (opt.row_pitch, opt.size, a.size, a.alignment),
                (lin.row_pitch, lin.size, b.size, b.alignment),
                "{w}x{h}"
            );
            assert_eq!(opt.row_pitch % ROW_PITCH_ALIGNMENT, 0);
            // VUID-vkGetImageSubresourceLayout-image-07790: no layout to give.
            assert!(opt.subresource_layout().is_none());
            assert!(lin.subresource_layout().is_some());
        }
    }

    #[test]
    fn bad_create_infos_are_refused_with_their_reason() {
        let q = rgba(USAGE);
        let new = |e, counts, layout, max| ImageLayout::new(&q, e, counts, layout, max);
        let undefined = vk::ImageLayout::UNDEFINED;
        assert!(matches!(
            new(extent(0, 4), ONE, undefined, MAX),
            Err(ImageError::Extent { .. })
        ));
        assert!(matches!(
            new(extent(MAX_DIMENSION + 1, 4), ONE, undefined, MAX),
            Err(ImageError::Extent { .. })
        ));
        assert!(matches!(
            new(
                vk::Extent3D {
                    depth: 2,
                    ..extent(4, 4)
                },
                ONE,
                undefined,
                MAX
            ),
            Err(ImageError::Extent { .. })
        ));
        assert_eq!(
            new(
                extent(4, 4),
                (2, 1, vk::SampleCountFlags::TYPE_1),
                undefined,
                MAX
            ),
            Err(ImageError::Counts)
        );
        assert_eq!(
            new(extent(4, 4), ONE, vk::ImageLayout::GENERAL, MAX),
            Err(ImageError::InitialLayout)
        );
        assert_eq!(
            new(extent(4096, 4096), ONE, undefined, 1 << 20),
            Err(ImageError::TooLarge { size: 64 << 20 })
        );
        let modifier = ImageQuery {
            tiling: vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT,
            ..q
        };
        assert_eq!(
            ImageLayout::new(&modifier, extent(4, 4), ONE, undefined, MAX),
            Err(ImageError::Unsupported)
        );
    }

    #[test]
    fn external_image_answers_follow_the_handle_types() {
        type Types = vk::ExternalMemoryHandleTypeFlags;
        let caps = extmem_softgpu::CAPS;
        // The software device shares images by opaque fd on Linux, by NT handle on Windows.
        let (shared, other, platform) = if cfg!(windows) {
            (Types::OPAQUE_WIN32, Types::OPAQUE_FD, Platform::Windows)
        } else {
            (Types::OPAQUE_FD, Types::OPAQUE_WIN32, Platform::Linux)
        };
        let opaque =
            external_image_properties(&caps, shared).unwrap_or_else(|| panic!("{shared:?} images"));
        assert!(opaque
            .external_memory_features
            .contains(vk::ExternalMemoryFeatureFlags::EXPORTABLE));
        for none in [Types::DMA_BUF_EXT, Types::HOST_ALLOCATION_EXT, other] {
            assert!(external_image_properties(&caps, none).is_none(), "{none:?}");
        }
        assert!(
            external_image_properties(&caps, vk::ExternalMemoryHandleTypeFlags::empty()).is_some()
        );
        assert_eq!(caps.platform, platform);
    }
}
