//! The entry points driven through `ash` with the ICD itself as the "loader"
//! (`vk_icdGetInstanceProcAddr`), and an instance whose physical device is described by
//! fixed parameters, so every physical-device query runs without a kernel.

use std::path::PathBuf;

use ash::vk::{self, Handle};

use super::command_buffer::cmd_fill_buffer;
use super::device::destroy_device;
use super::instance::enumerate_physical_devices;
#[cfg(not(windows))]
use super::memory::get_memory_fd;
use super::memory::{allocate_memory, free_memory};
use super::physical_device::get_physical_device_properties;
use super::sync::queue_submit;
use super::*;
use crate::physical_device::{DeviceInfo, DeviceNode, TEST_PARAMS};

/// What an unknown handle or a null pointer gets (the specification leaves them
/// undefined; the ICD refuses).
const BAD_HANDLE: vk::Result = vk::Result::ERROR_UNKNOWN;

fn entry() -> ash::Entry {
    let static_fn = ash::StaticFn {
        get_instance_proc_addr: vk_icdGetInstanceProcAddr,
    };
    // SAFETY: our vkGetInstanceProcAddr follows the Vulkan contract.
    unsafe { ash::Entry::from_static_fn(static_fn) }
}

fn fake_info() -> DeviceInfo {
    let node = DeviceNode::Render(PathBuf::from("/nonexistent/renderD200"));
    DeviceInfo::new(node, TEST_PARAMS, 4 << 30)
}

/// An ash instance over a registry instance with one fake physical device.
fn fake_instance(entry: &ash::Entry) -> ash::Instance {
    let handle = objects::create_instance(vec![fake_info()]);
    // SAFETY: `handle` is a live instance of this ICD.
    unsafe { ash::Instance::load(entry.static_fn(), handle) }
}

#[test]
fn negotiation_settles_on_version_5() {
    let mut v = 6;
    // SAFETY: a valid pointer.
    let r = unsafe { vk_icdNegotiateLoaderICDInterfaceVersion(&mut v) };
    assert_eq!(r, vk::Result::SUCCESS);
    assert_eq!(v, 5);
    let mut old = 2;
    // SAFETY: as above.
    let r = unsafe { vk_icdNegotiateLoaderICDInterfaceVersion(&mut old) };
    assert_eq!(r, vk::Result::ERROR_INCOMPATIBLE_DRIVER);
    // SAFETY: null is checked.
    let r = unsafe { vk_icdNegotiateLoaderICDInterfaceVersion(core::ptr::null_mut()) };
    assert_eq!(r, vk::Result::ERROR_INCOMPATIBLE_DRIVER);
}

#[test]
fn proc_addr_levels_are_respected() {
    // SAFETY: NUL-terminated names.
    unsafe {
        assert!(
            vk_icdGetInstanceProcAddr(vk::Instance::null(), c"vkCreateInstance".as_ptr()).is_some()
        );
        assert!(
            vk_icdGetInstanceProcAddr(vk::Instance::null(), c"vkCreateDevice".as_ptr()).is_none()
        );
        assert!(vk_icdGetInstanceProcAddr(vk::Instance::null(), core::ptr::null()).is_none());
        // A handle that is not a live instance gets nothing.
        let forged = vk::Instance::from_raw(0x1234_5678);
        assert!(vk_icdGetInstanceProcAddr(forged, c"vkCreateDevice".as_ptr()).is_none());
        let entry = entry();
        let instance = fake_instance(&entry);
        let h = instance.handle();
        assert!(vk_icdGetInstanceProcAddr(h, c"vkCreateDevice".as_ptr()).is_some());
        assert!(vk_icdGetInstanceProcAddr(h, c"vkCreateGraphicsPipelines".as_ptr()).is_none());
        assert!(vk_icdGetPhysicalDeviceProcAddr(
            h,
            c"vkGetPhysicalDeviceExternalImageFormatPropertiesNV".as_ptr()
        )
        .is_some());
        assert!(vk_icdGetPhysicalDeviceProcAddr(h, c"vkAllocateMemory".as_ptr()).is_none());
        instance.destroy_instance(None);
    }
}

#[test]
fn an_instance_without_vgpu_nodes_offers_the_software_device() {
    let entry = entry();
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: a valid create info. The host has no extmem-vgpu node (and the suite does
    // not set EXTMEM_DEVICE).
    let instance = unsafe { entry.create_instance(&info, None) }.unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: a live instance.
    let devices = unsafe { instance.enumerate_physical_devices() }.unwrap_or_default();
    assert_eq!(devices.len(), 1);
    // SAFETY: a physical device of the live instance.
    let props = unsafe { instance.get_physical_device_properties(devices[0]) };
    assert_eq!(props.device_type, vk::PhysicalDeviceType::CPU);
    assert_eq!(
        props.device_name_as_c_str().ok(),
        Some(c"extmem-softgpu (software device)")
    );
    // SAFETY: as above.
    unsafe { instance.destroy_instance(None) };
    // SAFETY: a valid pointer.
    let version = unsafe { entry.try_enumerate_instance_version() };
    assert_eq!(version, Ok(Some(vk::API_VERSION_1_1)));
}

#[test]
fn physical_device_queries_answer_from_the_tables() {
    let entry = entry();
    let instance = fake_instance(&entry);
    // SAFETY: every call below gets a live handle and valid structures.
    unsafe {
        let pds = instance
            .enumerate_physical_devices()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pds.len(), 1);
        let pd = pds[0];
        let props = instance.get_physical_device_properties(pd);
        assert_eq!(props.api_version, vk::API_VERSION_1_1);

        let mut id = vk::PhysicalDeviceIDProperties::default();
        let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        let mut driver = vk::PhysicalDeviceDriverProperties::default();
        let mut props2 = vk::PhysicalDeviceProperties2::default()
            .push_next(&mut id)
            .push_next(&mut host)
            .push_next(&mut driver);
        instance.get_physical_device_properties2(pd, &mut props2);
        assert_eq!(
            props2.properties.device_type,
            vk::PhysicalDeviceType::VIRTUAL_GPU
        );
        assert_eq!(host.min_imported_host_pointer_alignment, 4096);
        assert_eq!(
            host.s_type,
            vk::StructureType::PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT
        );
        assert_eq!(id.device_uuid, fake_info().device_uuid);
        assert_eq!(id.driver_uuid, fake_info().driver_uuid);
        assert_eq!(id.device_luid_valid, vk::FALSE);
        let v = driver.conformance_version;
        assert_eq!((v.major, v.minor, v.subminor, v.patch), (0, 0, 0, 0));
        assert_eq!(driver.driver_name_as_c_str().ok(), Some(c"extmem"));
        // The chain (props2 → driver → host → id) is intact after filling.
        assert!(!driver.p_next.is_null() && !host.p_next.is_null());

        let families = instance.get_physical_device_queue_family_properties(pd);
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].queue_flags, vk::QueueFlags::TRANSFER);

        let mem = instance.get_physical_device_memory_properties(pd);
        assert_eq!(mem.memory_type_count, 2);

        let exts = instance
            .enumerate_device_extension_properties(pd)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(exts
            .iter()
            .any(|e| e.extension_name_as_c_str().ok() == Some(vk::EXT_EXTERNAL_MEMORY_HOST_NAME)));

        // Host allocations: import only, compatible with themselves.
        let info = vk::PhysicalDeviceExternalBufferInfo::default()
            .usage(vk::BufferUsageFlags::TRANSFER_SRC)
            .handle_type(vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT);
        let mut out = vk::ExternalBufferProperties::default();
        instance.get_physical_device_external_buffer_properties(pd, &info, &mut out);
        let p = out.external_memory_properties;
        assert_eq!(
            p.external_memory_features,
            vk::ExternalMemoryFeatureFlags::IMPORTABLE
        );
        assert_eq!(
            p.compatible_handle_types,
            vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT
        );
        // Win32 on Linux: nothing, and no error.
        let info = info.handle_type(vk::ExternalMemoryHandleTypeFlags::OPAQUE_WIN32);
        instance.get_physical_device_external_buffer_properties(pd, &info, &mut out);
        assert!(out
            .external_memory_properties
            .external_memory_features
            .is_empty());

        // Transfer images, linear or optimal; no DRM format modifiers.
        let image_query = |tiling| {
            instance.get_physical_device_image_format_properties(
                pd,
                vk::Format::R8G8B8A8_UNORM,
                vk::ImageType::TYPE_2D,
                tiling,
                vk::ImageUsageFlags::TRANSFER_DST,
                vk::ImageCreateFlags::empty(),
            )
        };
        let linear = image_query(vk::ImageTiling::LINEAR).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(linear.max_extent.width, crate::image::MAX_DIMENSION);
        let optimal = image_query(vk::ImageTiling::OPTIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(optimal.max_extent, linear.max_extent);
        assert_eq!(
            image_query(vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT).err(),
            Some(vk::Result::ERROR_FORMAT_NOT_SUPPORTED)
        );

        // NV: no handle type on Linux.
        let mut nv = vk::ExternalImageFormatPropertiesNV::default();
        let nv_fn = vk_icdGetPhysicalDeviceProcAddr(
            instance.handle(),
            c"vkGetPhysicalDeviceExternalImageFormatPropertiesNV".as_ptr(),
        )
        .map(|f| {
            core::mem::transmute::<
                unsafe extern "system" fn(),
                vk::PFN_vkGetPhysicalDeviceExternalImageFormatPropertiesNV,
            >(f)
        })
        .unwrap_or_else(|| panic!("no NV entry point"));
        let r = nv_fn(
            pd,
            vk::Format::R8G8B8A8_UNORM,
            vk::ImageType::TYPE_2D,
            vk::ImageTiling::LINEAR,
            vk::ImageUsageFlags::TRANSFER_DST,
            vk::ImageCreateFlags::empty(),
            vk::ExternalMemoryHandleTypeFlagsNV::OPAQUE_WIN32,
            &mut nv,
        );
        // The image is supported; no NV handle type is, on Linux.
        assert_eq!(r, vk::Result::SUCCESS);
        assert!(nv.compatible_handle_types.is_empty());
        assert!(nv.external_memory_features.is_empty());
        assert_eq!(nv.image_format_properties.max_mip_levels, 1);

        // The node does not exist, so the device cannot be created: an error, not a crash.
        let priorities = [1.0];
        let queue = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(0)
            .queue_priorities(&priorities)];
        let info = vk::DeviceCreateInfo::default().queue_create_infos(&queue);
        assert_eq!(
            instance.create_device(pd, &info, None).err(),
            Some(vk::Result::ERROR_INITIALIZATION_FAILED)
        );

        instance.destroy_instance(None);
        // After destruction the physical device is gone: queries are ignored.
        let mut props = vk::PhysicalDeviceProperties::default();
        get_physical_device_properties(pd, &mut props);
        assert_eq!(props.api_version, 0);
    }
}

#[test]
fn forged_handles_and_null_pointers_are_refused_not_followed() {
    let forged_device = vk::Device::from_raw(0xdead_0000);
    let mut memory = vk::DeviceMemory::null();
    let info = vk::MemoryAllocateInfo::default().allocation_size(4096);
    // SAFETY: the calls must cope with the forged handle and the null pointers.
    unsafe {
        assert_eq!(
            allocate_memory(forged_device, &info, core::ptr::null(), &mut memory),
            BAD_HANDLE
        );
        assert_eq!(
            allocate_memory(
                forged_device,
                core::ptr::null(),
                core::ptr::null(),
                &mut memory
            ),
            BAD_HANDLE
        );
        #[cfg(not(windows))]
        {
            let mut fd = -1;
            assert_eq!(
                get_memory_fd(forged_device, core::ptr::null(), &mut fd),
                BAD_HANDLE
            );
        }
        let mut handle: vk::HANDLE = 0;
        let get = vk::MemoryGetWin32HandleInfoKHR::default()
            .memory(vk::DeviceMemory::from_raw(7))
            .handle_type(vk::ExternalMemoryHandleTypeFlags::OPAQUE_WIN32);
        assert_eq!(
            win32::get_memory_win32_handle(forged_device, &get, &mut handle),
            BAD_HANDLE
        );
        assert_eq!(
            win32::get_memory_win32_handle_nv(
                forged_device,
                vk::DeviceMemory::from_raw(7),
                vk::ExternalMemoryHandleTypeFlagsNV::OPAQUE_WIN32,
                &mut handle
            ),
            BAD_HANDLE
        );
        assert_eq!(handle, 0, "nothing written on failure");
        free_memory(
            forged_device,
            vk::DeviceMemory::from_raw(7),
            core::ptr::null(),
        );
        destroy_device(forged_device, core::ptr::null());
        cmd_fill_buffer(
            vk::CommandBuffer::from_raw(0x77),
            vk::Buffer::from_raw(1),
            0,
            4,
            0,
        );
        assert_eq!(
            queue_submit(
                vk::Queue::from_raw(0x99),
                0,
                core::ptr::null(),
                vk::Fence::null()
            ),
            BAD_HANDLE
        );
        assert_eq!(
            enumerate_physical_devices(
                vk::Instance::from_raw(3),
                core::ptr::null_mut(),
                core::ptr::null_mut()
            ),
            BAD_HANDLE
        );
    }
}

#[test]
fn the_two_call_idiom_reports_incomplete() {
    let items = [1u32, 2, 3];
    let mut count = 0;
    // SAFETY: valid pointers with the stated capacities.
    unsafe {
        assert_eq!(
            enumerate(&items, &mut count, core::ptr::null_mut()),
            Ok(vk::Result::SUCCESS)
        );
        assert_eq!(count, 3);
        let mut out = [0u32; 2];
        count = 2;
        assert_eq!(
            enumerate(&items, &mut count, out.as_mut_ptr()),
            Ok(vk::Result::INCOMPLETE)
        );
        assert_eq!((count, out), (2, [1, 2]));
    }
}

#[test]
fn a_panic_becomes_an_error_code() {
    assert_eq!(
        guard_result("vkTest", || panic!("boom")),
        vk::Result::ERROR_UNKNOWN
    );
    assert_eq!(guard("vkTest", 7, || 8), 8);
}

/// Set in the environment of a child run of this test binary: the test it runs plays the
/// child's part instead of the parent's.
const CHILD_ROLE: &str = "EXTMEM_ICD_TEST_CHILD";

/// The test binary itself, run again for the one test `name` in its child role, with
/// `EXTMEM_DEBUG` set to `debug` (or unset): its stderr.
fn stderr_of_child(name: &str, debug: Option<&str>) -> String {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut child = std::process::Command::new(exe);
    child
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, "1");
    match debug {
        Some(value) => child.env(crate::debug::VARIABLE, value),
        None => child.env_remove(crate::debug::VARIABLE),
    };
    let output = child
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{name} failed: {stderr}");
    stderr
}

#[test]
fn a_caught_panic_is_printed_only_under_extmem_debug() {
    if std::env::var_os(CHILD_ROLE).is_some() {
        // The child: a panic at the boundary, which the guard turns into a result.
        let result = guard_result("vkQueueSubmit", || panic!("boom at the boundary"));
        assert_eq!(result, vk::Result::ERROR_UNKNOWN);
        return;
    }
    let this = "entry::tests::a_caught_panic_is_printed_only_under_extmem_debug";
    let line = "extmem: vkQueueSubmit: panic caught at the C boundary: boom at the boundary";
    let debug = stderr_of_child(this, Some("1"));
    assert!(debug.lines().any(|l| l == line), "{debug}");
    let quiet = stderr_of_child(this, None);
    assert!(!quiet.contains("extmem:"), "{quiet}");
}

#[test]
fn drm_nodes_and_optimal_images_are_answered_through_the_entry_points() {
    use crate::drm_node::{DeviceNumber, DrmNodes};
    type Types = vk::ExternalMemoryHandleTypeFlags;
    let entry = entry();
    let nodes = DrmNodes {
        render: DeviceNumber {
            major: 226,
            minor: 200,
        },
        primary: None,
    };
    let info = DeviceInfo {
        drm: Some(nodes),
        ..fake_info()
    };
    let handle = objects::create_instance(vec![info]);
    // SAFETY: `handle` is a live instance of this ICD; every call below gets a live handle
    // and valid structures.
    unsafe {
        let instance = ash::Instance::load(entry.static_fn(), handle);
        let pd = instance
            .enumerate_physical_devices()
            .unwrap_or_else(|e| panic!("{e}"))[0];
        let exts = instance
            .enumerate_device_extension_properties(pd)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(exts
            .iter()
            .any(|e| e.extension_name_as_c_str().ok() == Some(vk::EXT_PHYSICAL_DEVICE_DRM_NAME)));
        let mut drm = vk::PhysicalDeviceDrmPropertiesEXT::default();
        let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut drm);
        instance.get_physical_device_properties2(pd, &mut props2);
        assert_eq!(
            drm.s_type,
            vk::StructureType::PHYSICAL_DEVICE_DRM_PROPERTIES_EXT
        );
        assert_eq!((drm.has_render, drm.has_primary), (vk::TRUE, vk::FALSE));
        assert_eq!((drm.render_major, drm.render_minor), (226, 200));

        let transfer = vk::FormatFeatureFlags::TRANSFER_SRC | vk::FormatFeatureFlags::TRANSFER_DST;
        let mut formats = vk::FormatProperties2::default();
        instance.get_physical_device_format_properties2(
            pd,
            vk::Format::B8G8R8A8_UNORM,
            &mut formats,
        );
        let f = formats.format_properties;
        assert_eq!(
            (f.linear_tiling_features, f.optimal_tiling_features),
            (transfer, transfer)
        );

        // An optimal image shares by opaque fd and by dma-buf as a linear one does (the
        // kernel device's capabilities), never from host memory.
        let query = |tiling, ty: Types| {
            let mut external = vk::PhysicalDeviceExternalImageFormatInfo::default().handle_type(ty);
            let info = vk::PhysicalDeviceImageFormatInfo2::default()
                .format(vk::Format::R8G8B8A8_UNORM)
                .ty(vk::ImageType::TYPE_2D)
                .tiling(tiling)
                .usage(vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST)
                .push_next(&mut external);
            let mut ext_out = vk::ExternalImageFormatProperties::default();
            let mut out = vk::ImageFormatProperties2::default().push_next(&mut ext_out);
            let result = instance.get_physical_device_image_format_properties2(pd, &info, &mut out);
            let width = out.image_format_properties.max_extent.width;
            let p = ext_out.external_memory_properties;
            (
                result,
                width,
                p.external_memory_features,
                p.compatible_handle_types,
            )
        };
        let both =
            vk::ExternalMemoryFeatureFlags::EXPORTABLE | vk::ExternalMemoryFeatureFlags::IMPORTABLE;
        let fds = Types::OPAQUE_FD | Types::DMA_BUF_EXT;
        for ty in [Types::OPAQUE_FD, Types::DMA_BUF_EXT] {
            assert_eq!(
                query(vk::ImageTiling::OPTIMAL, ty),
                (Ok(()), crate::image::MAX_DIMENSION, both, fds),
                "{ty:?}"
            );
            assert_eq!(
                query(vk::ImageTiling::OPTIMAL, ty),
                query(vk::ImageTiling::LINEAR, ty)
            );
        }
        let unsupported = (
            Err(vk::Result::ERROR_FORMAT_NOT_SUPPORTED),
            0,
            vk::ExternalMemoryFeatureFlags::empty(),
            Types::empty(),
        );
        assert_eq!(
            query(vk::ImageTiling::OPTIMAL, Types::HOST_ALLOCATION_EXT),
            unsupported
        );
        assert_eq!(
            query(vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT, Types::DMA_BUF_EXT),
            unsupported
        );
        instance.destroy_instance(None);
    }
}
