//! What one device is, as Vulkan describes it: an extmem-vgpu render node found by
//! scanning `/dev/dri`, or the software device (`extmem-softgpu`, kcore hosted in the
//! process) where there is none or `EXTMEM_DEVICE=software` asks for it; either is
//! described by the parameters its backend reports (`Backend::device_params`) and answered
//! from the tables below.
//!
//! The device is a copy engine behind a real GPU MMU: one transfer queue, no shaders, and
//! images only as 2D transfer images (linear or optimal, laid out alike). Everything
//! shader-related answers zero (the truth), not the specification's minimums for devices
//! that have them; the driver does not claim conformance.

use std::ffi::{CStr, OsStr};
#[cfg(not(windows))]
use std::fs;
use std::path::{Path, PathBuf};

use ash::vk;
use extmem::alloc_info::DeviceLimits;
use extmem::backend::Backend;
use extmem::device_params::DeviceParams;
use extmem::handle_types::DeviceCaps;
#[cfg(not(windows))]
use extmem::vgpu::Vgpu;
use extmem_hw::{Alignment, PageSize, PageSizes};
use extmem_softgpu::SoftGpu;
#[cfg(not(windows))]
use rustix::fs::{Mode, OFlags};

use crate::drm_node::DrmNodes;

/// The Vulkan version the device supports (the manifest's `api_version` says the same).
pub const API_VERSION: u32 = vk::API_VERSION_1_1;

/// `driverVersion`: the crate version, in Vulkan's encoding.
pub const DRIVER_VERSION: u32 = vk::make_api_version(0, 0, 1, 0);

/// Memory type 0: device memory (shmem GEM objects, `GEM_CREATE`), mappable and
/// coherent: the vGPU shares system RAM with the CPU, as integrated GPUs do.
pub const MEMORY_TYPE_DEVICE: u32 = 0;
/// Memory type 1: host memory the application imports (`GEM_USERPTR`): cached, coherent
/// (the copy engine reads and writes through the CPU's cache-coherent view of RAM).
pub const MEMORY_TYPE_HOST: u32 = 1;
/// The memory types a host pointer may be imported into.
pub const HOST_POINTER_TYPES: u32 = 1 << MEMORY_TYPE_HOST;
/// The memory types a dma-buf may be imported into: any; the pages stay where the
/// exporter put them.
pub const DMA_BUF_TYPES: u32 = (1 << MEMORY_TYPE_DEVICE) | (1 << MEMORY_TYPE_HOST);
/// The memory types a buffer may be bound to.
pub const BUFFER_MEMORY_TYPES: u32 = DMA_BUF_TYPES;

/// Alignment of a buffer inside its memory: a cache line (the copy engine needs none;
/// this keeps CPU and GPU from sharing lines between buffers).
pub const BUFFER_ALIGNMENT: u64 = 64;

/// The only queue family.
pub const QUEUE_FAMILY: u32 = 0;

/// Instance extensions, with their spec versions.
pub const INSTANCE_EXTENSIONS: &[(&CStr, u32)] = &[
    (
        vk::KHR_GET_PHYSICAL_DEVICE_PROPERTIES2_NAME,
        vk::KHR_GET_PHYSICAL_DEVICE_PROPERTIES2_SPEC_VERSION,
    ),
    (
        vk::KHR_EXTERNAL_MEMORY_CAPABILITIES_NAME,
        vk::KHR_EXTERNAL_MEMORY_CAPABILITIES_SPEC_VERSION,
    ),
    (
        vk::NV_EXTERNAL_MEMORY_CAPABILITIES_NAME,
        vk::NV_EXTERNAL_MEMORY_CAPABILITIES_SPEC_VERSION,
    ),
    (
        vk::KHR_EXTERNAL_SEMAPHORE_CAPABILITIES_NAME,
        vk::KHR_EXTERNAL_SEMAPHORE_CAPABILITIES_SPEC_VERSION,
    ),
    (
        vk::KHR_EXTERNAL_FENCE_CAPABILITIES_NAME,
        vk::KHR_EXTERNAL_FENCE_CAPABILITIES_SPEC_VERSION,
    ),
];

/// Device extensions, with their spec versions: every one the driver implements; a
/// device offers those its capabilities allow ([`DeviceInfo::device_extensions`]).
pub const DEVICE_EXTENSIONS: &[(&CStr, u32)] = &[
    (
        vk::KHR_TIMELINE_SEMAPHORE_NAME,
        vk::KHR_TIMELINE_SEMAPHORE_SPEC_VERSION,
    ),
    (
        vk::KHR_SYNCHRONIZATION2_NAME,
        vk::KHR_SYNCHRONIZATION2_SPEC_VERSION,
    ),
    (
        vk::KHR_EXTERNAL_SEMAPHORE_NAME,
        vk::KHR_EXTERNAL_SEMAPHORE_SPEC_VERSION,
    ),
    (
        vk::KHR_EXTERNAL_FENCE_NAME,
        vk::KHR_EXTERNAL_FENCE_SPEC_VERSION,
    ),
    (
        vk::KHR_EXTERNAL_SEMAPHORE_FD_NAME,
        vk::KHR_EXTERNAL_SEMAPHORE_FD_SPEC_VERSION,
    ),
    (
        vk::KHR_EXTERNAL_FENCE_FD_NAME,
        vk::KHR_EXTERNAL_FENCE_FD_SPEC_VERSION,
    ),
    (
        vk::KHR_EXTERNAL_MEMORY_NAME,
        vk::KHR_EXTERNAL_MEMORY_SPEC_VERSION,
    ),
    (
        vk::KHR_EXTERNAL_MEMORY_FD_NAME,
        vk::KHR_EXTERNAL_MEMORY_FD_SPEC_VERSION,
    ),
    (
        vk::EXT_EXTERNAL_MEMORY_DMA_BUF_NAME,
        vk::EXT_EXTERNAL_MEMORY_DMA_BUF_SPEC_VERSION,
    ),
    (
        vk::EXT_EXTERNAL_MEMORY_HOST_NAME,
        vk::EXT_EXTERNAL_MEMORY_HOST_SPEC_VERSION,
    ),
    (
        vk::KHR_DEDICATED_ALLOCATION_NAME,
        vk::KHR_DEDICATED_ALLOCATION_SPEC_VERSION,
    ),
    // Required by VK_KHR_dedicated_allocation; both are core in 1.1 anyway.
    (
        vk::KHR_GET_MEMORY_REQUIREMENTS2_NAME,
        vk::KHR_GET_MEMORY_REQUIREMENTS2_SPEC_VERSION,
    ),
    (vk::KHR_BIND_MEMORY2_NAME, vk::KHR_BIND_MEMORY2_SPEC_VERSION),
    (
        vk::NV_EXTERNAL_MEMORY_NAME,
        vk::NV_EXTERNAL_MEMORY_SPEC_VERSION,
    ),
    (
        vk::KHR_EXTERNAL_MEMORY_WIN32_NAME,
        vk::KHR_EXTERNAL_MEMORY_WIN32_SPEC_VERSION,
    ),
    (
        vk::NV_EXTERNAL_MEMORY_WIN32_NAME,
        vk::NV_EXTERNAL_MEMORY_WIN32_SPEC_VERSION,
    ),
    (
        vk::EXT_PHYSICAL_DEVICE_DRM_NAME,
        vk::EXT_PHYSICAL_DEVICE_DRM_SPEC_VERSION,
    ),
];

/// Which device a [`DeviceInfo`] describes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DeviceNode {
    /// An extmem-vgpu render node, e.g. `/dev/dri/renderD128`.
    Render(PathBuf),
    /// The software device: kcore in the process, device memory in memfds.
    Software,
}

/// Which devices `vkCreateInstance` offers: the `EXTMEM_DEVICE` environment variable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DeviceSelection {
    /// Unset (or any other value): the extmem-vgpu nodes, or the software device if there
    /// is none.
    Auto,
    /// `vgpu`: the extmem-vgpu nodes only (none is none).
    Vgpu,
    /// `software`: the software device only.
    Software,
}

impl DeviceSelection {
    /// The environment variable.
    pub const VARIABLE: &str = "EXTMEM_DEVICE";

    /// The selection its value asks for.
    pub fn from_value(value: Option<&OsStr>) -> Self {
        match value.and_then(OsStr::to_str) {
            Some("software") => DeviceSelection::Software,
            Some("vgpu") => DeviceSelection::Vgpu,
            _ => DeviceSelection::Auto,
        }
    }
}

/// What the ICD knows about one device.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeviceInfo {
    /// Which device it is.
    pub node: DeviceNode,
    /// `deviceUUID`, as the device reports it.
    pub device_uuid: [u8; vk::UUID_SIZE],
    /// `driverUUID`, as the device reports it.
    pub driver_uuid: [u8; vk::UUID_SIZE],
    /// `minImportedHostPointerAlignment`.
    pub min_import_alignment: Alignment,
    /// Width of a GPU VA.
    pub va_bits: u8,
    /// The page and block sizes of the GPU MMU.
    pub page_sizes: PageSizes,
    /// The largest object or mapping in bytes.
    pub max_mapping: u64,
    /// The machine's RAM in bytes (both heaps live in it).
    pub ram_bytes: u64,
    /// The DRM nodes of a kernel device (`VK_EXT_physical_device_drm`); `None` for the
    /// software device, which has none.
    pub drm: Option<DrmNodes>,
}

impl DeviceInfo {
    /// The description of the device at `node`, from the parameters its backend reported
    /// (already checked: [`DeviceParams::from_raw`]).
    pub fn new(node: DeviceNode, params: DeviceParams, ram_bytes: u64) -> Self {
        Self {
            node,
            device_uuid: params.device_uuid,
            driver_uuid: params.driver_uuid,
            min_import_alignment: params.min_import_alignment,
            va_bits: params.va_bits,
            page_sizes: params.page_sizes,
            max_mapping: params.max_mapping,
            ram_bytes,
            drm: None,
        }
    }

    /// The device's external-memory capabilities: on extmem-vgpu fds, dma-bufs and both
    /// host types; on the software device what [`extmem_softgpu::CAPS`] says (opaque fds
    /// and host allocations: a memfd is not a dma-buf).
    pub fn caps(&self) -> DeviceCaps {
        match self.node {
            DeviceNode::Render(_) => DeviceCaps::LINUX_FULL,
            DeviceNode::Software => extmem_softgpu::CAPS,
        }
    }

    /// Whether its fences and semaphores can leave the process as fds: DRM syncobjs on
    /// extmem-vgpu; the software device's live in its process only.
    pub fn shares_sync_fds(&self) -> bool {
        matches!(self.node, DeviceNode::Render(_))
    }

    /// What `VkExternalSemaphoreProperties` reports for `handle_type` on a binary
    /// semaphore (or a timeline if `timeline`): `(exportFromImported, compatible,
    /// exportable and importable)`. `SYNC_FD` carries only a binary payload (a sync_file
    /// is one fence).
    pub fn semaphore_fd_properties(
        &self,
        handle_type: vk::ExternalSemaphoreHandleTypeFlags,
        timeline: bool,
    ) -> (
        vk::ExternalSemaphoreHandleTypeFlags,
        vk::ExternalSemaphoreHandleTypeFlags,
        bool,
    ) {
        type Types = vk::ExternalSemaphoreHandleTypeFlags;
        let supported = self.shares_sync_fds()
            && (handle_type == Types::OPAQUE_FD || (handle_type == Types::SYNC_FD && !timeline));
        if supported {
            (extmem::sync::SEMAPHORE_FD_TYPES, handle_type, true)
        } else {
            (Types::empty(), Types::empty(), false)
        }
    }

    /// What `VkExternalFenceProperties` reports for `handle_type`, as
    /// [`DeviceInfo::semaphore_fd_properties`].
    pub fn fence_fd_properties(
        &self,
        handle_type: vk::ExternalFenceHandleTypeFlags,
    ) -> (
        vk::ExternalFenceHandleTypeFlags,
        vk::ExternalFenceHandleTypeFlags,
        bool,
    ) {
        type Types = vk::ExternalFenceHandleTypeFlags;
        let supported = self.shares_sync_fds()
            && (handle_type == Types::OPAQUE_FD || handle_type == Types::SYNC_FD);
        if supported {
            (extmem::sync::FENCE_FD_TYPES, handle_type, true)
        } else {
            (Types::empty(), Types::empty(), false)
        }
    }

    /// The device extensions it offers: [`DEVICE_EXTENSIONS`] less those of handle types
    /// the device has none of (no dma-buf extension on the software device, no fd or host
    /// extension on Windows, no win32 extension on Linux), and `VK_EXT_physical_device_drm`
    /// only with DRM nodes to report. `VK_NV_external_memory` stays: on Linux it truthfully
    /// answers no NV handle type.
    pub fn device_extensions(&self) -> Vec<(&'static CStr, u32)> {
        let caps = self.caps();
        DEVICE_EXTENSIONS
            .iter()
            .filter(|(name, _)| {
                let name = *name;
                if name == vk::EXT_EXTERNAL_MEMORY_DMA_BUF_NAME {
                    caps.dma_buf
                } else if name == vk::KHR_EXTERNAL_MEMORY_FD_NAME {
                    caps.opaque_fd || caps.dma_buf
                } else if name == vk::EXT_EXTERNAL_MEMORY_HOST_NAME {
                    caps.host_allocation || caps.host_mapped_foreign
                } else if name == vk::KHR_EXTERNAL_MEMORY_WIN32_NAME
                    || name == vk::NV_EXTERNAL_MEMORY_WIN32_NAME
                {
                    caps.win32
                } else if name == vk::EXT_PHYSICAL_DEVICE_DRM_NAME {
                    self.drm.is_some()
                } else if name == vk::KHR_EXTERNAL_SEMAPHORE_FD_NAME
                    || name == vk::KHR_EXTERNAL_FENCE_FD_NAME
                {
                    self.shares_sync_fds()
                } else {
                    true
                }
            })
            .copied()
            .collect()
    }

    /// What allocation validation needs.
    pub fn limits(&self) -> DeviceLimits {
        DeviceLimits {
            caps: self.caps(),
            memory_type_count: self.memory_properties().memory_type_count,
            min_import_alignment: self.min_import_alignment,
            host_pointer_types: HOST_POINTER_TYPES,
        }
    }

    /// The GPU VA range userspace hands out: from 2 MiB (so that 0 and small values never
    /// name memory) to the top of the VA space.
    pub fn va_range(&self) -> (u64, u64) {
        (1 << 21, 1u64 << self.va_bits)
    }

    /// `VkPhysicalDeviceProperties`.
    pub fn properties(&self) -> vk::PhysicalDeviceProperties {
        let mut name = [0 as core::ffi::c_char; vk::MAX_PHYSICAL_DEVICE_NAME_SIZE];
        let (device_name, device_type) = match &self.node {
            DeviceNode::Render(path) => {
                let node = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
                (
                    format!("extmem-vgpu ({node})"),
                    vk::PhysicalDeviceType::VIRTUAL_GPU,
                )
            }
            // A device the CPU runs, as lavapipe reports itself.
            DeviceNode::Software => (
                "extmem-softgpu (software device)".to_owned(),
                vk::PhysicalDeviceType::CPU,
            ),
        };
        write_c_string(&mut name, &device_name);
        let mut pipeline_cache_uuid = self.driver_uuid;
        // No pipelines exist; the UUID still must identify the driver build.
        pipeline_cache_uuid.reverse();
        vk::PhysicalDeviceProperties {
            api_version: API_VERSION,
            driver_version: DRIVER_VERSION,
            // Khronos' vendor id for Mesa-style open drivers without a PCI id.
            vendor_id: vk::VendorId::MESA.as_raw() as u32,
            device_id: 0,
            device_type,
            device_name: name,
            pipeline_cache_uuid,
            limits: self.device_limits(),
            sparse_properties: vk::PhysicalDeviceSparseProperties::default(),
        }
    }

    /// `VkPhysicalDeviceLimits`: the memory, buffer and image limits are real;
    /// shader, sampler and framebuffer limits are zero because the device has none of those.
    pub fn device_limits(&self) -> vk::PhysicalDeviceLimits {
        let page = PageSize::Size4K.bytes();
        vk::PhysicalDeviceLimits {
            // The kernel's object table is fixed-size; 4096 is the specification's minimum.
            max_memory_allocation_count: 4096,
            buffer_image_granularity: page,
            non_coherent_atom_size: BUFFER_ALIGNMENT,
            min_memory_map_alignment: usize::try_from(page).unwrap_or(4096),
            optimal_buffer_copy_offset_alignment: 1,
            optimal_buffer_copy_row_pitch_alignment: 1,
            min_texel_buffer_offset_alignment: BUFFER_ALIGNMENT,
            min_uniform_buffer_offset_alignment: BUFFER_ALIGNMENT,
            min_storage_buffer_offset_alignment: BUFFER_ALIGNMENT,
            timestamp_period: 1.0,
            // Transfer images (see `crate::image`): 2D, one layer.
            max_image_dimension2_d: crate::image::MAX_DIMENSION,
            max_image_array_layers: 1,
            ..vk::PhysicalDeviceLimits::default()
        }
    }

    /// `VkPhysicalDeviceMemoryProperties`: heap 0 is the device memory the vGPU allocates
    /// from RAM (3/4 of it, as Mesa's integrated-GPU drivers report); heap 1 is the
    /// application's own memory, which host-pointer imports pin in place.
    pub fn memory_properties(&self) -> vk::PhysicalDeviceMemoryProperties {
        let mut props = vk::PhysicalDeviceMemoryProperties {
            memory_type_count: 2,
            memory_heap_count: 2,
            ..Default::default()
        };
        props.memory_heaps[0] = vk::MemoryHeap {
            size: self.ram_bytes / 4 * 3,
            flags: vk::MemoryHeapFlags::DEVICE_LOCAL,
        };
        props.memory_heaps[1] = vk::MemoryHeap {
            size: self.ram_bytes,
            flags: vk::MemoryHeapFlags::empty(),
        };
        props.memory_types[MEMORY_TYPE_DEVICE as usize] = vk::MemoryType {
            property_flags: vk::MemoryPropertyFlags::DEVICE_LOCAL
                | vk::MemoryPropertyFlags::HOST_VISIBLE
                | vk::MemoryPropertyFlags::HOST_COHERENT,
            heap_index: 0,
        };
        props.memory_types[MEMORY_TYPE_HOST as usize] = vk::MemoryType {
            property_flags: vk::MemoryPropertyFlags::HOST_VISIBLE
                | vk::MemoryPropertyFlags::HOST_COHERENT
                | vk::MemoryPropertyFlags::HOST_CACHED,
            heap_index: 1,
        };
        props
    }

    /// `VkPhysicalDeviceIDProperties`: the device's UUIDs; a LUID only on Windows (see
    /// `device_luid`, built for Windows only), none on Linux.
    pub fn id_properties(&self) -> vk::PhysicalDeviceIDProperties<'static> {
        #[cfg_attr(not(windows), allow(unused_mut))]
        let mut props = vk::PhysicalDeviceIDProperties {
            device_uuid: self.device_uuid,
            driver_uuid: self.driver_uuid,
            ..Default::default()
        };
        #[cfg(windows)]
        if self.node == DeviceNode::Software {
            if let Some(luid) = crate::device_luid::device_luid() {
                props.device_luid = luid;
                props.device_node_mask = 1;
                props.device_luid_valid = vk::TRUE;
            }
        }
        props
    }

    /// `VkPhysicalDeviceDrmPropertiesEXT`: the render node the device opened and its
    /// primary node; all false and zero without DRM nodes.
    pub fn drm_properties(&self) -> vk::PhysicalDeviceDrmPropertiesEXT<'static> {
        crate::drm_node::properties(self.drm.as_ref())
    }

    /// `maxMemoryAllocationSize` (`VkPhysicalDeviceMaintenance3Properties`).
    pub fn max_allocation_size(&self) -> u64 {
        self.max_mapping
    }
}

/// Parameters of a made-up extmem-vgpu device (48-bit VA, 4 KiB and 2 MiB pages, 4 KiB
/// import alignment, UUIDs 0..16 and all 7s), for tests that need a device without one.
#[cfg(test)]
pub(crate) const TEST_PARAMS: DeviceParams = DeviceParams {
    device_uuid: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    driver_uuid: [7; vk::UUID_SIZE],
    min_import_alignment: Alignment::SIZE_4K,
    va_bits: 48,
    page_sizes: PageSizes::EMPTY
        .with(PageSize::Size4K)
        .with(PageSize::Size2M),
    max_mapping: 1 << 32,
};

/// The queue families: one, transfer only (a copy engine; no graphics, no compute).
pub fn queue_families() -> [vk::QueueFamilyProperties; 1] {
    [vk::QueueFamilyProperties {
        queue_flags: vk::QueueFlags::TRANSFER,
        queue_count: 1,
        timestamp_valid_bits: 0,
        min_image_transfer_granularity: vk::Extent3D {
            width: 1,
            height: 1,
            depth: 1,
        },
    }]
}

/// Whether `name` is one of `list`.
pub fn has_extension(list: &[(&CStr, u32)], name: &CStr) -> bool {
    list.iter().any(|(n, _)| *n == name)
}

/// Copies `text` into a fixed-size C string, truncating and always NUL-terminating.
pub fn write_c_string(out: &mut [core::ffi::c_char], text: &str) {
    let Some(room) = out.len().checked_sub(1) else {
        return;
    };
    let bytes = text.as_bytes();
    let n = bytes.len().min(room);
    for (dst, src) in out.iter_mut().zip(bytes.iter().take(n)) {
        *dst = *src as core::ffi::c_char;
    }
    if let Some(nul) = out.get_mut(n) {
        *nul = 0;
    }
}

/// The extension properties for `list`.
pub fn extension_properties(list: &[(&CStr, u32)]) -> Vec<vk::ExtensionProperties> {
    list.iter()
        .map(|(name, spec_version)| {
            let mut props = vk::ExtensionProperties {
                spec_version: *spec_version,
                ..Default::default()
            };
            write_c_string(&mut props.extension_name, name.to_str().unwrap_or(""));
            props
        })
        .collect()
}

/// The machine's RAM in bytes.
#[cfg(not(windows))]
#[allow(
    clippy::useless_conversion,
    reason = "sysinfo's fields are u32 on 32-bit targets"
)]
pub fn ram_bytes() -> u64 {
    let info = rustix::system::sysinfo();
    u64::from(info.totalram).saturating_mul(u64::from(info.mem_unit.max(1)))
}

/// The machine's RAM in bytes (0 if Windows cannot tell, which the heap sizes survive).
#[cfg(windows)]
pub fn ram_bytes() -> u64 {
    use windows_sys::Win32::System::SystemInformation::{GlobalMemoryStatusEx, MEMORYSTATUSEX};
    let mut status = MEMORYSTATUSEX {
        // 64 bytes: the conversion cannot fail.
        dwLength: u32::try_from(core::mem::size_of::<MEMORYSTATUSEX>()).unwrap_or(u32::MAX),
        // SAFETY: MEMORYSTATUSEX is plain data, all-zero valid.
        ..unsafe { core::mem::zeroed() }
    };
    // SAFETY: a valid MEMORYSTATUSEX with dwLength set, as the call requires.
    if unsafe { GlobalMemoryStatusEx(&mut status) } == 0 {
        return 0;
    }
    status.ullTotalPhys
}

/// Opens a render node read-write, close-on-exec.
#[cfg(not(windows))]
pub fn open_node(path: &Path) -> rustix::io::Result<rustix::fd::OwnedFd> {
    rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
}

/// No extmem-vgpu kernel driver exists on Windows: the software device is the device.
#[cfg(windows)]
pub fn discover(_dir: &Path) -> Vec<DeviceInfo> {
    Vec::new()
}

/// Every extmem-vgpu render node under `dir` (normally `/dev/dri`), sorted by name, with
/// its DRM node numbers (the primary node looked up in `/sys`). Nodes of other drivers, and
/// nodes whose parameters are out of range, are skipped.
#[cfg(not(windows))]
pub fn discover(dir: &Path) -> Vec<DeviceInfo> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("renderD"))
        .map(|e| e.path())
        .collect();
    nodes.sort();
    let ram = ram_bytes();
    nodes
        .into_iter()
        .filter_map(|path| {
            // `Vgpu::new` refuses other drivers' nodes before sending them anything of ours.
            let vgpu = Vgpu::new(open_node(&path).ok()?).ok()?;
            let params = vgpu.device_params().ok()?;
            let drm = crate::drm_node::of_render_node(vgpu.fd(), Path::new("/sys"));
            let info = DeviceInfo::new(DeviceNode::Render(path), params, ram);
            Some(DeviceInfo { drm, ..info })
        })
        .collect()
}

/// The software device, as a new one describes itself.
pub fn software_device() -> Option<DeviceInfo> {
    let params = SoftGpu::new().ok()?.device_params().ok()?;
    Some(DeviceInfo::new(DeviceNode::Software, params, ram_bytes()))
}

/// The devices `vkCreateInstance` offers under `selection`, the extmem-vgpu nodes looked
/// for under `dir` (normally `/dev/dri`).
pub fn devices(dir: &Path, selection: DeviceSelection) -> Vec<DeviceInfo> {
    match selection {
        DeviceSelection::Vgpu => discover(dir),
        DeviceSelection::Software => software_device().into_iter().collect(),
        DeviceSelection::Auto => {
            let nodes = discover(dir);
            if nodes.is_empty() {
                software_device().into_iter().collect()
            } else {
                nodes
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drm_node::DeviceNumber;

    const NODES: DrmNodes = DrmNodes {
        render: DeviceNumber {
            major: 226,
            minor: 129,
        },
        primary: Some(DeviceNumber {
            major: 226,
            minor: 1,
        }),
    };

    /// A kernel device as discovery describes it: parameters, then its DRM nodes.
    fn info() -> DeviceInfo {
        let info = DeviceInfo::new(
            DeviceNode::Render("/dev/dri/renderD129".into()),
            TEST_PARAMS,
            8 << 30,
        );
        DeviceInfo {
            drm: Some(NODES),
            ..info
        }
    }

    #[test]
    fn the_description_is_the_devices_parameters() {
        let info = info();
        let expect: Vec<u8> = (0..16).collect();
        assert_eq!(info.device_uuid.to_vec(), expect);
        assert_eq!(info.id_properties().device_uuid, info.device_uuid);
        assert_eq!(info.id_properties().driver_uuid, [7; vk::UUID_SIZE]);
        assert_eq!(info.id_properties().device_luid_valid, vk::FALSE);
        assert_eq!(info.limits().min_import_alignment, Alignment::SIZE_4K);
        assert_eq!(info.max_allocation_size(), 1 << 32);
        assert!(info.page_sizes.contains(PageSize::Size2M));
    }

    #[test]
    fn memory_types_are_ordered_and_describe_the_heaps() {
        let props = info().memory_properties();
        assert_eq!(props.memory_type_count, 2);
        let types = &props.memory_types[..2];
        // Vulkan's ordering rule: a type whose flags are a strict subset of a later
        // type's must come first; neither may be a strict superset of an earlier one.
        for (i, x) in types.iter().enumerate() {
            for y in &types[i + 1..] {
                let (a, b) = (x.property_flags, y.property_flags);
                assert!(!(a.contains(b) && a != b), "{b:?} must precede {a:?}");
            }
        }
        assert!(types[0]
            .property_flags
            .contains(vk::MemoryPropertyFlags::DEVICE_LOCAL));
        assert!(types[1]
            .property_flags
            .contains(vk::MemoryPropertyFlags::HOST_VISIBLE));
        assert_eq!(props.memory_heaps[0].size, 6 << 30);
        assert_eq!(props.memory_heaps[1].size, 8 << 30);
        for t in types {
            assert!(t.heap_index < props.memory_heap_count);
            assert!(t
                .property_flags
                .contains(vk::MemoryPropertyFlags::HOST_COHERENT));
        }
        assert_eq!(
            HOST_POINTER_TYPES & !((1 << props.memory_type_count) - 1),
            0
        );
    }

    #[test]
    fn one_transfer_queue_family_and_honest_properties() {
        let families = queue_families();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].queue_flags, vk::QueueFlags::TRANSFER);
        let props = info().properties();
        assert_eq!(props.api_version, vk::API_VERSION_1_1);
        assert_eq!(props.device_type, vk::PhysicalDeviceType::VIRTUAL_GPU);
        let name = props
            .device_name_as_c_str()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(name.to_str().ok(), Some("extmem-vgpu (renderD129)"));
        assert!(props.limits.non_coherent_atom_size.is_power_of_two());
        assert_eq!(info().limits().host_pointer_types, HOST_POINTER_TYPES);
        assert_eq!(info().va_range(), (1 << 21, 1 << 48));
    }

    #[test]
    fn extension_lists_are_well_formed() {
        for list in [INSTANCE_EXTENSIONS, DEVICE_EXTENSIONS] {
            let props = extension_properties(list);
            assert_eq!(props.len(), list.len());
            for (p, (name, _)) in props.iter().zip(list) {
                assert_eq!(p.extension_name_as_c_str().ok(), Some(*name));
            }
        }
        assert!(has_extension(
            DEVICE_EXTENSIONS,
            vk::EXT_EXTERNAL_MEMORY_HOST_NAME
        ));
        assert!(!has_extension(DEVICE_EXTENSIONS, c"VK_KHR_swapchain"));
    }

    #[test]
    fn the_drm_extension_comes_with_the_nodes_it_reports() {
        let kernel = info();
        assert!(has_extension(
            &kernel.device_extensions(),
            vk::EXT_PHYSICAL_DEVICE_DRM_NAME
        ));
        // The numbers discovery found (drm_node's tests cover the structure itself).
        let p = kernel.drm_properties();
        assert_eq!(
            (p.has_primary, p.render_minor, p.primary_minor),
            (vk::TRUE, 129, 1)
        );
        // A render node whose numbers could not be read offers no numbers and no extension.
        let unknown = DeviceInfo {
            drm: None,
            ..info()
        };
        assert!(!has_extension(
            &unknown.device_extensions(),
            vk::EXT_PHYSICAL_DEVICE_DRM_NAME
        ));
        assert_eq!(unknown.drm_properties().has_render, vk::FALSE);
    }

    #[test]
    fn c_strings_are_truncated_and_terminated() {
        let mut buf = [1 as core::ffi::c_char; 4];
        write_c_string(&mut buf, "abcdef");
        assert_eq!(buf, [b'a' as _, b'b' as _, b'c' as _, 0]);
        write_c_string(&mut [], "x");
    }

    #[test]
    fn discovery_of_a_directory_without_vgpu_nodes_is_empty() {
        assert!(discover(Path::new("/nonexistent")).is_empty());
        // The host has no extmem-vgpu node (other drivers' nodes are skipped).
        assert!(discover(Path::new("/dev/dri")).is_empty());
    }

    #[test]
    fn the_software_device_stands_in_where_there_is_no_node_or_when_asked() {
        let none = Path::new("/nonexistent");
        let auto = devices(none, DeviceSelection::Auto);
        assert_eq!(auto.len(), 1);
        let soft = &auto[0];
        assert_eq!(soft.node, DeviceNode::Software);
        assert_eq!(soft.device_uuid, extmem_softgpu::DEVICE_UUID);
        assert_eq!(soft.driver_uuid, extmem_softgpu::DRIVER_UUID);
        assert_ne!(soft.device_uuid, info().device_uuid);
        assert_eq!(soft.min_import_alignment, Alignment::SIZE_4K);
        let props = soft.properties();
        assert_eq!(props.device_type, vk::PhysicalDeviceType::CPU);
        assert_eq!(
            props.device_name_as_c_str().ok(),
            Some(c"extmem-softgpu (software device)")
        );
        assert!(devices(none, DeviceSelection::Vgpu).is_empty());
        assert_eq!(devices(none, DeviceSelection::Software), auto);
        // No dma-buf on a memfd or a section: neither the capability nor the extension.
        assert!(!soft.caps().dma_buf);
        let exts = soft.device_extensions();
        assert!(!has_extension(&exts, vk::EXT_EXTERNAL_MEMORY_DMA_BUF_NAME));
        assert!(has_extension(&exts, vk::NV_EXTERNAL_MEMORY_NAME));
        // Opaque fds on Linux, the win32 pair on Windows: never both.
        let windows = cfg!(windows);
        assert_eq!(soft.caps().opaque_fd, !windows);
        assert_eq!(
            has_extension(&exts, vk::KHR_EXTERNAL_MEMORY_FD_NAME),
            !windows
        );
        for win32 in [
            vk::KHR_EXTERNAL_MEMORY_WIN32_NAME,
            vk::NV_EXTERNAL_MEMORY_WIN32_NAME,
        ] {
            assert_eq!(has_extension(&exts, win32), windows, "{win32:?}");
        }
        // Nor DRM node numbers: it has none to report.
        assert!(!has_extension(&exts, vk::EXT_PHYSICAL_DEVICE_DRM_NAME));
        assert_eq!(soft.drm_properties().has_render, vk::FALSE);
        // The kernel device (a Linux render node) never offers the win32 pair.
        let vgpu = info().device_extensions();
        assert_eq!(
            vgpu.len(),
            DEVICE_EXTENSIONS.len() - 2,
            "all but the win32 pair"
        );
        assert!(!has_extension(&vgpu, vk::KHR_EXTERNAL_MEMORY_WIN32_NAME));
        for (value, want) in [
            (Some("software"), DeviceSelection::Software),
            (Some("vgpu"), DeviceSelection::Vgpu),
            (Some("lavapipe"), DeviceSelection::Auto),
            (None, DeviceSelection::Auto),
        ] {
            assert_eq!(DeviceSelection::from_value(value.map(OsStr::new)), want);
        }
    }
}
