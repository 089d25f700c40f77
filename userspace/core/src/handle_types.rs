//! What this device says about each external-memory handle type: the answers to
//! `vkGetPhysicalDeviceExternalBufferProperties`, the external part of
//! `vkGetPhysicalDeviceImageFormatProperties2` and
//! `vkGetPhysicalDeviceExternalImageFormatPropertiesNV`.
//!
//! Answers are truthful per platform: a type the device cannot import or export answers
//! all-zero (not an error), and no Windows type is advertised on Linux.

use ash::vk;

/// The OS family the driver runs on: it decides which handle families exist at all.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Platform {
    /// POSIX fds and dma-bufs.
    Linux,
    /// NT handles and global share (KMT) handles.
    Windows,
}

/// What the backend behind a device can do with external memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DeviceCaps {
    /// The OS family.
    pub platform: Platform,
    /// Export and import of opaque fds (same device and driver only).
    pub opaque_fd: bool,
    /// Export and import of dma-bufs.
    pub dma_buf: bool,
    /// Import of host allocations (pinned user memory).
    pub host_allocation: bool,
    /// Import of CPU mappings of other devices' buffers.
    pub host_mapped_foreign: bool,
    /// Export and import of OPAQUE_WIN32 (NT) and OPAQUE_WIN32_KMT handles.
    pub win32: bool,
}

impl DeviceCaps {
    /// extmem-vgpu on Linux (and the like): opaque fds, dma-bufs and both host-pointer
    /// types, no Windows handles.
    pub const LINUX_FULL: DeviceCaps = DeviceCaps {
        platform: Platform::Linux,
        opaque_fd: true,
        dma_buf: true,
        host_allocation: true,
        host_mapped_foreign: true,
        win32: false,
    };

    /// A Windows device that shares memory only through Windows handles (NT and KMT).
    pub const WINDOWS_HANDLES: DeviceCaps = DeviceCaps {
        platform: Platform::Windows,
        opaque_fd: false,
        dma_buf: false,
        host_allocation: false,
        host_mapped_foreign: false,
        win32: true,
    };
}

/// What the external memory will back.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Target {
    /// A `VkBuffer`.
    Buffer,
    /// A `VkImage`, of linear or optimal tiling: the driver lays out both as rows at a
    /// pitch computed from the create info alone (no metadata in the memory), so an image
    /// of either tiling shares its memory as a buffer does, and a same-driver importer
    /// that creates the same image finds the same texels.
    Image,
}

type Types = vk::ExternalMemoryHandleTypeFlags;

/// Whether `handle_type` is one handle type that is an NT handle or a global-share (KMT)
/// handle: what a Win32 import (VUID 00660) and `vkGetMemoryWin32HandleKHR` (00664) accept.
#[must_use]
pub fn is_nt_or_kmt(handle_type: Types) -> bool {
    let nt_or_kmt = Types::OPAQUE_WIN32
        | Types::OPAQUE_WIN32_KMT
        | Types::D3D11_TEXTURE
        | Types::D3D11_TEXTURE_KMT
        | Types::D3D12_HEAP
        | Types::D3D12_RESOURCE;
    handle_type.as_raw().is_power_of_two() && nt_or_kmt.contains(handle_type)
}

/// The fd types this device exports and imports.
fn fd_types(caps: &DeviceCaps) -> Types {
    let mut types = Types::empty();
    if caps.platform == Platform::Linux {
        if caps.opaque_fd {
            types |= Types::OPAQUE_FD;
        }
        if caps.dma_buf {
            types |= Types::DMA_BUF_EXT;
        }
    }
    types
}

/// The Win32 types this device exports and imports.
fn win32_types(caps: &DeviceCaps) -> Types {
    if caps.platform == Platform::Windows && caps.win32 {
        Types::OPAQUE_WIN32 | Types::OPAQUE_WIN32_KMT
    } else {
        Types::empty()
    }
}

/// The answer for one handle type. `handle_type` must be a single bit; anything else (no
/// bit, several bits, an unknown bit) answers all-zero.
pub fn external_memory_properties(
    caps: &DeviceCaps,
    handle_type: Types,
    target: Target,
) -> vk::ExternalMemoryProperties {
    let none = vk::ExternalMemoryProperties::default();
    if !handle_type.as_raw().is_power_of_two() {
        return none;
    }
    let exportable = vk::ExternalMemoryFeatureFlags::EXPORTABLE;
    let importable = vk::ExternalMemoryFeatureFlags::IMPORTABLE;
    let fd = fd_types(caps);
    if fd.contains(handle_type) {
        // A GEM object can be exported both ways whichever way it came in.
        return vk::ExternalMemoryProperties {
            external_memory_features: exportable | importable,
            export_from_imported_handle_types: fd,
            compatible_handle_types: fd,
        };
    }
    let win32 = win32_types(caps);
    if win32.contains(handle_type) {
        return vk::ExternalMemoryProperties {
            external_memory_features: exportable | importable,
            export_from_imported_handle_types: win32,
            compatible_handle_types: win32,
        };
    }
    let host = (handle_type == Types::HOST_ALLOCATION_EXT && caps.host_allocation)
        || (handle_type == Types::HOST_MAPPED_FOREIGN_MEMORY_EXT && caps.host_mapped_foreign);
    if host && caps.platform == Platform::Linux && target == Target::Buffer {
        // Import only, never dedicated-only, compatible only with itself (the CTS checks
        // exactly this for HOST_ALLOCATION).
        return vk::ExternalMemoryProperties {
            external_memory_features: importable,
            export_from_imported_handle_types: Types::empty(),
            compatible_handle_types: handle_type,
        };
    }
    none
}

/// The handle types `types` may be exported as together: `Some` with the set if every bit
/// is exportable and all are mutually compatible (VUID 09860), `None` otherwise.
#[must_use]
pub fn exportable_together(caps: &DeviceCaps, types: Types, target: Target) -> Option<Types> {
    let mut compatible = Types::from_raw(u32::MAX);
    let mut bits = types.as_raw();
    while bits != 0 {
        let bit = Types::from_raw(bits & bits.wrapping_neg());
        bits &= bits - 1;
        let props = external_memory_properties(caps, bit, target);
        if !props
            .external_memory_features
            .contains(vk::ExternalMemoryFeatureFlags::EXPORTABLE)
        {
            return None;
        }
        compatible &= props.compatible_handle_types;
    }
    compatible.contains(types).then_some(types)
}

type NvTypes = vk::ExternalMemoryHandleTypeFlagsNV;

/// The answer to `vkGetPhysicalDeviceExternalImageFormatPropertiesNV` for the external
/// part: whether the requested NV handle type can be exported and imported for an image
/// of a supported format (see [`Target::Image`]), and the types compatible with it. On Linux, or for an
/// unsupported image, no type.
pub fn nv_external_image_format_properties(
    caps: &DeviceCaps,
    requested: NvTypes,
    image_supported: bool,
    image_format_properties: vk::ImageFormatProperties,
) -> vk::ExternalImageFormatPropertiesNV {
    let supported = if caps.platform == Platform::Windows && caps.win32 && image_supported {
        NvTypes::OPAQUE_WIN32 | NvTypes::OPAQUE_WIN32_KMT
    } else {
        NvTypes::empty()
    };
    // A supported type can be exported and imported, and is compatible with (and
    // exportable from) every supported type, as the KHR answer for the same types says.
    let types = if (requested & supported).is_empty() {
        NvTypes::empty()
    } else {
        supported
    };
    let features = if types.is_empty() {
        vk::ExternalMemoryFeatureFlagsNV::empty()
    } else {
        vk::ExternalMemoryFeatureFlagsNV::EXPORTABLE | vk::ExternalMemoryFeatureFlagsNV::IMPORTABLE
    };
    vk::ExternalImageFormatPropertiesNV {
        image_format_properties,
        external_memory_features: features,
        export_from_imported_handle_types: types,
        compatible_handle_types: types,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX_VGPU: DeviceCaps = DeviceCaps::LINUX_FULL;

    const WINDOWS_SOFT: DeviceCaps = DeviceCaps::WINDOWS_HANDLES;

    fn features(p: vk::ExternalMemoryProperties) -> vk::ExternalMemoryFeatureFlags {
        p.external_memory_features
    }

    /// ash's struct has no PartialEq: compare its three fields.
    fn fields(p: vk::ExternalMemoryProperties) -> (vk::ExternalMemoryFeatureFlags, Types, Types) {
        (
            p.external_memory_features,
            p.export_from_imported_handle_types,
            p.compatible_handle_types,
        )
    }

    #[test]
    fn fd_types_export_and_import_both_ways() {
        let each = [Types::OPAQUE_FD, Types::DMA_BUF_EXT]
            .into_iter()
            .flat_map(|t| [(t, Target::Buffer), (t, Target::Image)]);
        for (t, target) in each {
            let p = external_memory_properties(&LINUX_VGPU, t, target);
            assert_eq!(
                features(p),
                vk::ExternalMemoryFeatureFlags::EXPORTABLE
                    | vk::ExternalMemoryFeatureFlags::IMPORTABLE
            );
            assert!(!features(p).contains(vk::ExternalMemoryFeatureFlags::DEDICATED_ONLY));
            assert_eq!(
                p.compatible_handle_types,
                Types::OPAQUE_FD | Types::DMA_BUF_EXT
            );
            assert_eq!(
                p.export_from_imported_handle_types,
                Types::OPAQUE_FD | Types::DMA_BUF_EXT
            );
        }
    }

    #[test]
    fn host_allocation_is_import_only_compatible_with_itself() {
        let p = external_memory_properties(&LINUX_VGPU, Types::HOST_ALLOCATION_EXT, Target::Buffer);
        assert_eq!(features(p), vk::ExternalMemoryFeatureFlags::IMPORTABLE);
        assert_eq!(p.export_from_imported_handle_types, Types::empty());
        assert_eq!(p.compatible_handle_types, Types::HOST_ALLOCATION_EXT);
        let p = external_memory_properties(
            &LINUX_VGPU,
            Types::HOST_MAPPED_FOREIGN_MEMORY_EXT,
            Target::Buffer,
        );
        assert_eq!(
            p.compatible_handle_types,
            Types::HOST_MAPPED_FOREIGN_MEMORY_EXT
        );
        // Images from host memory are not supported: all zero.
        let p = external_memory_properties(&LINUX_VGPU, Types::HOST_ALLOCATION_EXT, Target::Image);
        assert_eq!(fields(p), fields(vk::ExternalMemoryProperties::default()));
    }

    #[test]
    fn unsupported_and_malformed_types_answer_all_zero() {
        let zero = fields(vk::ExternalMemoryProperties::default());
        for t in [
            Types::OPAQUE_WIN32,
            Types::OPAQUE_WIN32_KMT,
            Types::D3D11_TEXTURE,
            Types::D3D12_RESOURCE,
            Types::ANDROID_HARDWARE_BUFFER_ANDROID,
            Types::empty(),
            Types::OPAQUE_FD | Types::DMA_BUF_EXT,
            Types::from_raw(1 << 30),
        ] {
            assert_eq!(
                fields(external_memory_properties(&LINUX_VGPU, t, Target::Buffer)),
                zero,
                "{t:?}"
            );
        }
        // No fd types on Windows.
        assert_eq!(
            fields(external_memory_properties(
                &WINDOWS_SOFT,
                Types::OPAQUE_FD,
                Target::Buffer
            )),
            zero
        );
    }

    #[test]
    fn win32_types_on_windows_only() {
        let p = external_memory_properties(&WINDOWS_SOFT, Types::OPAQUE_WIN32, Target::Buffer);
        assert!(features(p).contains(vk::ExternalMemoryFeatureFlags::EXPORTABLE));
        assert_eq!(
            p.compatible_handle_types,
            Types::OPAQUE_WIN32 | Types::OPAQUE_WIN32_KMT
        );
        let linux_with_win32 = DeviceCaps {
            win32: true,
            ..LINUX_VGPU
        };
        assert_eq!(
            fields(external_memory_properties(
                &linux_with_win32,
                Types::OPAQUE_WIN32,
                Target::Buffer
            )),
            fields(vk::ExternalMemoryProperties::default())
        );
    }

    #[test]
    fn export_sets_must_be_exportable_and_compatible() {
        let fd = Types::OPAQUE_FD | Types::DMA_BUF_EXT;
        assert_eq!(
            exportable_together(&LINUX_VGPU, fd, Target::Buffer),
            Some(fd)
        );
        assert_eq!(
            exportable_together(&LINUX_VGPU, Types::empty(), Target::Buffer),
            Some(Types::empty())
        );
        assert_eq!(
            exportable_together(&LINUX_VGPU, Types::HOST_ALLOCATION_EXT, Target::Buffer),
            None
        );
        assert_eq!(
            exportable_together(
                &LINUX_VGPU,
                Types::OPAQUE_FD | Types::OPAQUE_WIN32,
                Target::Buffer
            ),
            None
        );
    }

    #[test]
    fn nv_query_reports_no_types_on_linux() {
        let all = NvTypes::OPAQUE_WIN32
            | NvTypes::OPAQUE_WIN32_KMT
            | NvTypes::D3D11_IMAGE
            | NvTypes::D3D11_IMAGE_KMT;
        let p = nv_external_image_format_properties(
            &LINUX_VGPU,
            all,
            true,
            vk::ImageFormatProperties::default(),
        );
        assert_eq!(
            p.external_memory_features,
            vk::ExternalMemoryFeatureFlagsNV::empty()
        );
        assert_eq!(p.compatible_handle_types, NvTypes::empty());
        let p = nv_external_image_format_properties(
            &WINDOWS_SOFT,
            all,
            true,
            vk::ImageFormatProperties::default(),
        );
        assert_eq!(
            p.compatible_handle_types,
            NvTypes::OPAQUE_WIN32 | NvTypes::OPAQUE_WIN32_KMT
        );
        for one in [NvTypes::OPAQUE_WIN32, NvTypes::OPAQUE_WIN32_KMT] {
            let p = nv_external_image_format_properties(
                &WINDOWS_SOFT,
                one,
                true,
                vk::ImageFormatProperties::default(),
            );
            assert_eq!(
                p.compatible_handle_types,
                NvTypes::OPAQUE_WIN32 | NvTypes::OPAQUE_WIN32_KMT,
                "{one:?} is compatible with both"
            );
        }
        let d3d = nv_external_image_format_properties(
            &WINDOWS_SOFT,
            NvTypes::D3D11_IMAGE,
            true,
            vk::ImageFormatProperties::default(),
        );
        assert_eq!(d3d.compatible_handle_types, NvTypes::empty());
        let p = nv_external_image_format_properties(
            &WINDOWS_SOFT,
            all,
            false,
            vk::ImageFormatProperties::default(),
        );
        assert_eq!(
            p.external_memory_features,
            vk::ExternalMemoryFeatureFlagsNV::empty()
        );
    }
}
