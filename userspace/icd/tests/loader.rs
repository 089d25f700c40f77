//! The ICD as applications see it: loaded by the real Khronos loader (`libvulkan.so.1`)
//! through the manifest `build.rs` writes next to the library.
//!
//! The host has no extmem-vgpu node, so the instance offers the software device
//! (extmem-softgpu) and the Vulkan flows run on it here, under the Khronos validation
//! layer. Real-device tests run in the QEMU guest.
//!
//! Linux only: on Windows the DLL is tested under Wine through `vk_icdGetInstanceProcAddr`.
#![cfg(not(windows))]

use std::ffi::c_void;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Once;

use ash::vk;
use extmem_guest_tests::host_memory::{unmapped_range, AnonMapping, RawBytes};
use extmem_guest_tests::vulkan::{self, fill_pattern, Gpu, Image, Instance};

type Types = vk::ExternalMemoryHandleTypeFlags;

/// `<target>/<profile>/`: the test binary lives in its `deps/` directory, and cargo has
/// built the cdylib and written the manifest there before running the test.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no profile directory above {}", exe.display()))
}

fn app_info() -> vk::ApplicationInfo<'static> {
    vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_1)
}

/// Points the loader at our ICD only, with no implicit layers (the host's Mesa
/// device-select layer would otherwise wrap the instance), once per test binary and before
/// any test opens the loader: every test calls this first, and `Once` holds the others
/// back until the environment is set.
fn isolate_loader() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // `cargo test` links the cdylib into deps/ without copying it up to the profile
        // directory, so the tests use a copy of the manifest there, whose relative
        // library path then names that file.
        let deps = profile_dir().join("deps");
        let library = deps.join("libextmem_icd.so");
        assert!(library.exists(), "{} missing", library.display());
        let manifest = deps.join("extmem_icd.json");
        std::fs::copy(profile_dir().join("extmem_icd.json"), &manifest)
            .unwrap_or_else(|e| panic!("copying the manifest to {}: {e}", manifest.display()));
        std::env::set_var("VK_DRIVER_FILES", &manifest);
        std::env::set_var("VK_ICD_FILENAMES", &manifest);
        std::env::set_var("VK_LOADER_LAYERS_DISABLE", "~implicit~");
        std::env::set_var("NODEVICE_SELECT", "1");
    });
}

#[test]
fn the_khronos_loader_loads_the_icd_and_instance_queries_work() {
    // build.rs writes the manifest for `cargo build` users next to the profile's library.
    let shipped = profile_dir().join("extmem_icd.json");
    assert!(shipped.exists(), "{} missing", shipped.display());
    let text = std::fs::read_to_string(&shipped).unwrap_or_default();
    assert!(
        text.contains("\"library_path\": \"./libextmem_icd.so\""),
        "{text}"
    );
    assert!(text.contains("\"api_version\": \"1.1.0\""), "{text}");

    isolate_loader();

    // SAFETY: loading libvulkan.so.1 runs its initialisers, which is what it is for.
    let entry = match unsafe { ash::Entry::load() } {
        Ok(entry) => entry,
        Err(e) => panic!("libvulkan.so.1 is needed (apt-get install libvulkan1): {e}"),
    };

    // Instance extensions come from our ICD (the loader adds its own debug ones).
    // SAFETY: no layer name.
    let exts = unsafe { entry.enumerate_instance_extension_properties(None) }
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = exts
        .iter()
        .filter_map(|e| e.extension_name_as_c_str().ok())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    for want in [
        "VK_KHR_external_memory_capabilities",
        "VK_KHR_get_physical_device_properties2",
        "VK_NV_external_memory_capabilities",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }

    let enabled = [
        vk::KHR_EXTERNAL_MEMORY_CAPABILITIES_NAME.as_ptr(),
        vk::KHR_GET_PHYSICAL_DEVICE_PROPERTIES2_NAME.as_ptr(),
        vk::NV_EXTERNAL_MEMORY_CAPABILITIES_NAME.as_ptr(),
    ];
    let app = app_info();
    let info = vk::InstanceCreateInfo::default()
        .application_info(&app)
        .enabled_extension_names(&enabled);
    // SAFETY: a valid create info.
    let instance = unsafe { entry.create_instance(&info, None) }.unwrap_or_else(|e| panic!("{e}"));
    // No extmem-vgpu node here: the software device stands in.
    // SAFETY: a live instance.
    let devices = unsafe { instance.enumerate_physical_devices() }
        .unwrap_or_else(|e| panic!("vkEnumeratePhysicalDevices: {e}"));
    assert_eq!(devices.len(), 1);
    // SAFETY: a physical device of the live instance.
    let props = unsafe { instance.get_physical_device_properties(devices[0]) };
    assert_eq!(
        props.device_name_as_c_str().ok(),
        Some(c"extmem-softgpu (software device)")
    );
    // SAFETY: nothing was created from it.
    unsafe { instance.destroy_instance(None) };

    // An unsupported extension is refused.
    let bogus = [c"VK_KHR_surface".as_ptr()];
    let info = vk::InstanceCreateInfo::default()
        .application_info(&app)
        .enabled_extension_names(&bogus);
    // SAFETY: a valid create info.
    let refused = unsafe { entry.create_instance(&info, None) };
    assert!(refused.is_err());
}

/// Unwraps a step of the flow, naming it on failure.
fn step<T>(result: Result<T, String>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// `vkGetPhysicalDeviceExternalBufferProperties` for one handle type.
fn buffer_features(instance: &Instance, pd: vk::PhysicalDevice, ty: Types) -> (u32, Types) {
    let info = vk::PhysicalDeviceExternalBufferInfo::default()
        .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
        .handle_type(ty);
    let mut out = vk::ExternalBufferProperties::default();
    // SAFETY: a live physical device; valid structures.
    unsafe {
        instance
            .instance
            .get_physical_device_external_buffer_properties(pd, &info, &mut out)
    };
    let p = out.external_memory_properties;
    (
        p.external_memory_features.as_raw(),
        p.compatible_handle_types,
    )
}

/// Host memory, device memory and an opaque fd shared between two devices, on the
/// software device through the Khronos loader and the validation layer: every byte
/// checked, every refusal the expected `VkResult`, and no validation message.
#[test]
fn vulkan_flows_run_on_the_software_device() {
    isolate_loader();
    let entry = step(vulkan::load());
    assert!(
        vulkan::validation_available(&entry),
        "the Khronos validation layer is provisioned (vulkan-validationlayers)"
    );
    let instance = step(Instance::new(&entry, true));
    let pds = step(instance.physical_devices());
    assert_eq!(pds.len(), 1, "the software device only");
    let pd = pds[0];
    assert_eq!(
        instance.uuids(pd),
        (extmem_softgpu::DEVICE_UUID, extmem_softgpu::DRIVER_UUID)
    );
    assert_eq!(instance.host_pointer_alignment(pd), 4096);

    // What it can share: opaque fds both ways, host allocations in; no dma-buf.
    let both = (vk::ExternalMemoryFeatureFlags::EXPORTABLE
        | vk::ExternalMemoryFeatureFlags::IMPORTABLE)
        .as_raw();
    let import = vk::ExternalMemoryFeatureFlags::IMPORTABLE.as_raw();
    assert_eq!(
        buffer_features(&instance, pd, Types::OPAQUE_FD),
        (both, Types::OPAQUE_FD)
    );
    assert_eq!(
        buffer_features(&instance, pd, Types::HOST_ALLOCATION_EXT),
        (import, Types::HOST_ALLOCATION_EXT)
    );
    for none in [Types::DMA_BUF_EXT, Types::HOST_MAPPED_FOREIGN_MEMORY_EXT] {
        assert_eq!(buffer_features(&instance, pd, none), (0, Types::empty()));
    }
    // SAFETY: a live physical device.
    let exts = unsafe { instance.instance.enumerate_device_extension_properties(pd) }
        .unwrap_or_else(|e| panic!("{e}"));
    let has = |name: &std::ffi::CStr| exts.iter().any(|e| e.extension_name_as_c_str() == Ok(name));
    assert!(has(vk::EXT_EXTERNAL_MEMORY_HOST_NAME) && has(vk::KHR_EXTERNAL_MEMORY_FD_NAME));
    assert!(!has(vk::EXT_EXTERNAL_MEMORY_DMA_BUF_NAME));

    let gpu = step(Gpu::new(&instance));
    const SIZE: usize = 1 << 20;
    let size = SIZE as u64;
    let source = step(AnonMapping::read_write(SIZE).map_err(|e| e.to_string()));
    let sink = step(AnonMapping::read_write(SIZE).map_err(|e| e.to_string()));
    let pattern: Vec<u8> = (0..SIZE).map(|i| (i % 251).to_le_bytes()[0]).collect();
    source
        .write(0, &pattern)
        .unwrap_or_else(|e| panic!("{e:?}"));

    // Host pointer -> device memory -> host pointer on the copy engine.
    let host = Types::HOST_ALLOCATION_EXT;
    // SAFETY: both mappings outlive the imports (freed below, before the mappings drop).
    let (from, to) = unsafe {
        (
            step(gpu.import_host(source.base().as_ptr().cast::<c_void>(), size, host)),
            step(gpu.import_host(sink.base().as_ptr().cast::<c_void>(), size, host)),
        )
    };
    let device = step(gpu.allocate(size, Types::OPAQUE_FD));
    let from_buf = step(gpu.buffer(from, size, host));
    let to_buf = step(gpu.buffer(to, size, host));
    let device_buf = step(gpu.buffer(device, size, Types::OPAQUE_FD));
    step(gpu.copy(from_buf, device_buf, size));
    step(gpu.copy(device_buf, to_buf, size));
    assert!(
        sink.read(0, SIZE).ok() == Some(pattern.clone()),
        "host -> device -> host"
    );
    assert!(
        step(gpu.read(device, 0, SIZE)) == pattern,
        "the CPU's view of device memory"
    );
    step(gpu.fill(to_buf, 4096, 0xfeed_f00d));
    assert_eq!(
        sink.read(0, 4096).ok(),
        Some(fill_pattern(0xfeed_f00d, 4096))
    );

    // An opaque fd into a second device (its own VM, as another process would have):
    // what that device's GPU writes, this one's CPU reads.
    let fd = step(gpu.export_fd(device, Types::OPAQUE_FD));
    let other = step(Gpu::new(&instance));
    let shared = step(other.import_fd(fd, Types::OPAQUE_FD, size, step(other.device_local_type())));
    let shared_buf = step(other.buffer(shared, size, Types::OPAQUE_FD));
    assert!(
        step(other.read(shared, 0, 4096)) == pattern[..4096],
        "the same memory"
    );
    step(other.fill(shared_buf, 8192, 0x0102_0304));
    assert_eq!(
        step(gpu.read(device, 0, 8192)),
        fill_pattern(0x0102_0304, 8192)
    );

    // Refusals. A pipe is no opaque fd: the import fails and the fd stays ours.
    let (pipe, _writer) = rustix::pipe::pipe().unwrap_or_else(|e| panic!("{e}"));
    let raw = pipe.into_raw_fd();
    let mut import = vk::ImportMemoryFdInfoKHR::default()
        .handle_type(Types::OPAQUE_FD)
        .fd(raw);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .memory_type_index(step(gpu.device_local_type()))
        .push_next(&mut import);
    // SAFETY: a live device; the chain lives across the call.
    let refused = unsafe { gpu.device.allocate_memory(&info, None) };
    assert_eq!(refused, Err(vk::Result::ERROR_INVALID_EXTERNAL_HANDLE));
    // SAFETY: a failed import leaves the fd with us.
    let pipe = unsafe { OwnedFd::from_raw_fd(raw) };
    assert!(
        rustix::fs::fstat(&pipe).is_ok(),
        "the driver did not close it"
    );
    // An unmapped host range is refused at the properties query.
    let hole = unmapped_range(4096).unwrap_or_else(|e| panic!("{e}"));
    let hole = usize::try_from(hole).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        gpu.host_pointer_properties(host, hole).0,
        vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
    );
    // Host-mapped foreign memory is not something this device imports.
    let mapped = usize::try_from(source.addr()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        gpu.host_pointer_properties(Types::HOST_MAPPED_FOREIGN_MEMORY_EXT, mapped)
            .0,
        vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
    );
    // DMA_BUF does not exist on this device (a Valid Usage violation on purpose, so the
    // layer's messages about it are expected).
    let dma_buf = step(gpu.export_fd(device, Types::OPAQUE_FD));
    let mut answer = (vk::Result::SUCCESS, 0);
    vulkan::expect_messages(|| {
        answer = gpu.fd_properties(Types::DMA_BUF_EXT, dma_buf.as_raw_fd());
    });
    assert_eq!(answer.0, vk::Result::ERROR_INVALID_EXTERNAL_HANDLE);
    // The layer is active: a misaligned fill is reported (and refused by the driver).
    let mut misaligned = Ok(());
    let messages = vulkan::expect_messages(|| {
        misaligned = gpu.run(|device, cb| {
            // SAFETY: recording; the violation is the point.
            unsafe { device.cmd_fill_buffer(cb, to_buf, 2, 4, 0) };
        });
    });
    assert!(
        misaligned.is_err() && messages > 0,
        "{misaligned:?}, {messages} messages"
    );

    images(&instance, &gpu, &other, vk::ImageTiling::LINEAR);
    images(&instance, &gpu, &other, vk::ImageTiling::OPTIMAL);

    for buffer in [from_buf, to_buf, device_buf] {
        gpu.destroy_buffer(buffer);
    }
    other.destroy_buffer(shared_buf);
    other.free(shared);
    for memory in [from, to, device] {
        gpu.free(memory);
    }
    drop((other, gpu));
    assert_eq!(
        vulkan::validation_message_count(),
        0,
        "{:?}",
        vulkan::validation_messages()
    );
}

/// The images' extent: 33 RGBA texels are 132 bytes, which rows pad to 192.
const EXTENT: (u32, u32) = (33, 17);

/// Images of `tiling`: the format queries, a buffer -> image -> buffer round trip through
/// the row pitch, and the image's memory shared with a second device by opaque fd, where an
/// image of the same tiling over the same memory reads the same texels. An optimal image's
/// layout is the device's to choose and not the application's to ask
/// (`VUID-vkGetImageSubresourceLayout-image-07790`); this device chooses the linear one,
/// which the bytes in memory show.
fn images(instance: &Instance, gpu: &Gpu<'_>, other: &Gpu<'_>, tiling: vk::ImageTiling) {
    let pd = gpu.physical;
    // SAFETY: a live physical device.
    let formats = unsafe {
        instance
            .instance
            .get_physical_device_format_properties(pd, vk::Format::R8G8B8A8_UNORM)
    };
    let features = if tiling == vk::ImageTiling::OPTIMAL {
        formats.optimal_tiling_features
    } else {
        formats.linear_tiling_features
    };
    assert_eq!(
        features,
        vk::FormatFeatureFlags::TRANSFER_SRC | vk::FormatFeatureFlags::TRANSFER_DST,
        "{tiling:?}"
    );
    let query = |ty: Types| {
        let (result, limits, external) = instance.image_format_properties(pd, tiling, ty);
        (
            result,
            limits.max_extent.width,
            external.external_memory_features,
        )
    };
    let (result, max_width, features) = query(Types::OPAQUE_FD);
    assert_eq!((result, max_width), (Ok(()), 16384));
    assert!(features.contains(
        vk::ExternalMemoryFeatureFlags::EXPORTABLE | vk::ExternalMemoryFeatureFlags::IMPORTABLE
    ));
    // No host-memory images; no dma-buf on the software device.
    for none in [Types::HOST_ALLOCATION_EXT, Types::DMA_BUF_EXT] {
        let (result, max_width, _) = query(none);
        assert_eq!(
            (result, max_width),
            (Err(vk::Result::ERROR_FORMAT_NOT_SUPPORTED), 0),
            "{none:?}"
        );
    }

    let image = step(gpu.image(EXTENT, tiling, Types::OPAQUE_FD));
    let reqs = gpu.image_requirements(image);
    let subresource = vk::ImageSubresource {
        aspect_mask: vk::ImageAspectFlags::COLOR,
        mip_level: 0,
        array_layer: 0,
    };
    let mut layout = vk::SubresourceLayout::default();
    let messages = vulkan::expect_messages(|| {
        // SAFETY: a live image; for an optimal one the call breaks
        // VUID-vkGetImageSubresourceLayout-image-07790 on purpose.
        layout = unsafe {
            gpu.device
                .get_image_subresource_layout(image.image, subresource)
        };
    });
    // The device's choice for both tilings.
    let pitch: usize = 192;
    if tiling == vk::ImageTiling::OPTIMAL {
        assert!(
            messages > 0,
            "the layer reports the query on an optimal image"
        );
        assert_eq!(
            (layout.size, layout.row_pitch),
            (0, 0),
            "no layout for an optimal image"
        );
    } else {
        assert_eq!((messages, layout.row_pitch), (0, 192));
    }
    let height = EXTENT.1 as usize;
    assert_eq!(reqs.size, 192 * u64::from(EXTENT.1));
    let memory = step(gpu.allocate(reqs.size.next_multiple_of(4096), Types::OPAQUE_FD));
    step(gpu.bind_image(image, memory));

    let row = Image::TEXEL * EXTENT.0 as usize;
    let packed = image.packed_len();
    let texels: Vec<u8> = (0..packed)
        .map(|i| (i * 3 % 253).to_le_bytes()[0])
        .collect();
    let staging_memory = step(gpu.allocate(4096 * 2, Types::empty()));
    let staging = step(gpu.buffer(staging_memory, 4096 * 2, Types::empty()));
    step(gpu.write(staging_memory, 0, &texels));
    step(gpu.image_round_trip(image, staging, 4096));
    // In the image's memory each row sits at the row pitch; the padding stays zero.
    let stored = step(gpu.read(memory, 0, pitch * height));
    for (y, texel_row) in texels.chunks(row).enumerate() {
        let at = y * pitch;
        assert!(stored[at..at + row] == *texel_row, "row {y}");
        assert!(
            stored[at + row..at + pitch].iter().all(|b| *b == 0),
            "row {y} padding"
        );
    }
    assert!(
        step(gpu.read(staging_memory, 4096, packed)) == texels,
        "image -> buffer"
    );

    // The image's memory in another device, under an image of the same tiling there.
    let fd = step(gpu.export_fd(memory, Types::OPAQUE_FD));
    let imported = step(other.import_fd(
        fd,
        Types::OPAQUE_FD,
        reqs.size.next_multiple_of(4096),
        step(other.device_local_type()),
    ));
    let there = step(other.image(EXTENT, tiling, Types::OPAQUE_FD));
    step(other.bind_image(there, imported));
    let readback_memory = step(other.allocate(4096, Types::empty()));
    let readback = step(other.buffer(readback_memory, 4096, Types::empty()));
    step(other.read_image(there, readback));
    assert!(
        step(other.read(readback_memory, 0, packed)) == texels,
        "shared image"
    );

    other.destroy_image(there);
    gpu.destroy_image(image);
    other.destroy_buffer(readback);
    other.free(readback_memory);
    other.free(imported);
    gpu.destroy_buffer(staging);
    gpu.free(staging_memory);
    gpu.free(memory);
}

/// Fences, binary and timeline semaphores and vkQueueSubmit2 on the software device,
/// whose synchronisation objects live in the process: every wait sees the bytes its signal
/// covers, and no fd handle type is offered (nothing can leave the process).
#[test]
fn fences_and_semaphores_run_on_the_software_device() {
    use extmem_guest_tests::vulkan_sync::{FenceTypes, SemTypes, SyncBatch};

    isolate_loader();
    let entry = step(vulkan::load());
    let instance = step(Instance::new(&entry, vulkan::validation_available(&entry)));
    let gpu = step(Gpu::new(&instance));
    // SAFETY: a live physical device.
    let exts = unsafe {
        instance
            .instance
            .enumerate_device_extension_properties(gpu.physical)
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let has = |name: &std::ffi::CStr| exts.iter().any(|e| e.extension_name_as_c_str() == Ok(name));
    assert!(has(vk::KHR_TIMELINE_SEMAPHORE_NAME) && has(vk::KHR_SYNCHRONIZATION2_NAME));
    assert!(!has(vk::KHR_EXTERNAL_SEMAPHORE_FD_NAME) && !has(vk::KHR_EXTERNAL_FENCE_FD_NAME));
    for ty in [SemTypes::OPAQUE_FD, SemTypes::SYNC_FD] {
        let p = gpu.semaphore_properties(ty, false);
        assert_eq!(
            (p.external_semaphore_features, p.compatible_handle_types),
            (
                vk::ExternalSemaphoreFeatureFlags::empty(),
                SemTypes::empty()
            ),
            "{ty:?}"
        );
    }
    for ty in [FenceTypes::OPAQUE_FD, FenceTypes::SYNC_FD] {
        let p = gpu.fence_properties(ty);
        assert_eq!(
            (p.external_fence_features, p.compatible_handle_types),
            (vk::ExternalFenceFeatureFlags::empty(), FenceTypes::empty()),
            "{ty:?}"
        );
    }

    const SIZE: u64 = 1 << 20;
    let len = usize::try_from(SIZE).unwrap_or_else(|e| panic!("{e}"));
    let block = || {
        let memory = step(gpu.allocate(SIZE, Types::empty()));
        (memory, step(gpu.buffer(memory, SIZE, Types::empty())))
    };
    let (a, b, c) = (block(), block(), block());
    let pattern: Vec<u8> = (0..len).map(|i| (i % 241).to_le_bytes()[0]).collect();
    step(gpu.write(a.0, 0, &pattern));

    // A fence: unsignalled, then signalled by a copy, reset, signalled by an empty submit.
    let fence = step(gpu.fence(false, FenceTypes::empty()));
    assert!(
        !step(gpu.wait_fence(fence, 0)),
        "VK_TIMEOUT before any submit"
    );
    let first = step(gpu.record_copy(a.1, b.1, SIZE));
    let semaphore = step(gpu.semaphore(None, SemTypes::empty()));
    let signal = SyncBatch {
        command_buffers: vec![first],
        signals: vec![(semaphore, 0)],
        ..SyncBatch::default()
    };
    step(gpu.submit_batches(&[signal], vk::Fence::null()));
    // The chain: B -> C after the semaphore, through vkQueueSubmit2, with the fence.
    let second = step(gpu.record_copy(b.1, c.1, SIZE));
    let wait = SyncBatch {
        waits: vec![(semaphore, 0)],
        command_buffers: vec![second],
        ..SyncBatch::default()
    };
    step(gpu.submit2(&wait, fence));
    assert!(step(gpu.wait_fence(fence, u64::MAX)));
    assert!(step(gpu.read(c.0, 0, len)) == pattern, "C holds A's bytes");
    // SAFETY: a live fence, not in use.
    unsafe { gpu.device.reset_fences(&[fence]) }.unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: a live fence.
    assert_eq!(unsafe { gpu.device.get_fence_status(fence) }, Ok(false));
    step(gpu.submit_batches(&[], fence));
    assert!(
        step(gpu.wait_fence(fence, 0)),
        "an empty submit signals its fence"
    );

    // A timeline from the host and from a submit.
    let timeline = step(gpu.semaphore(Some(3), SemTypes::empty()));
    assert_eq!(step(gpu.counter(timeline)), 3);
    assert!(!step(gpu.wait_timeline(timeline, 4, 0)));
    // The host signal comes before the GPU's: the validation layer keeps a GPU signal
    // pending past the waits that saw it, and would take a later host signal for one
    // below it (VUID-VkSemaphoreSignalInfo-value-03259).
    step(gpu.signal_timeline(timeline, 5));
    assert_eq!(step(gpu.counter(timeline)), 5);
    let third = step(gpu.record_copy(c.1, a.1, SIZE));
    let batch = SyncBatch {
        command_buffers: vec![third],
        signals: vec![(timeline, 8)],
        ..SyncBatch::default()
    };
    step(gpu.submit_batches(&[batch], vk::Fence::null()));
    assert!(step(gpu.wait_timeline(timeline, 8, u64::MAX)));
    assert_eq!(step(gpu.counter(timeline)), 8);
    assert!(
        !step(gpu.wait_timeline(timeline, 9, 1_000_000)),
        "9 never comes"
    );
    // SAFETY: a live device.
    unsafe { gpu.device.device_wait_idle() }.unwrap_or_else(|e| panic!("{e}"));

    for cb in [first, second, third] {
        gpu.free_command_buffer(cb);
    }
    gpu.destroy_semaphore(semaphore);
    gpu.destroy_semaphore(timeline);
    gpu.destroy_fence(fence);
    for (memory, buffer) in [a, b, c] {
        gpu.destroy_buffer(buffer);
        gpu.free(memory);
    }
    drop(gpu);
    assert_eq!(
        vulkan::validation_message_count(),
        0,
        "{:?}",
        vulkan::validation_messages()
    );
}

/// On the software device too: a submission waiting for a timeline point nobody has
/// signalled is held until `vkSignalSemaphore`, and a copy out of memory freed after
/// recording faults, which loses the device (its waits and submits return
/// `VK_ERROR_DEVICE_LOST`) and no other.
#[test]
fn held_submits_and_a_lost_device_on_the_software_device() {
    use extmem_guest_tests::vulkan::DeviceBuffer;
    use extmem_guest_tests::vulkan_sync::{FenceTypes, SemTypes, SyncBatch};

    isolate_loader();
    let entry = step(vulkan::load());
    let instance = step(Instance::new(&entry, vulkan::validation_available(&entry)));
    const SIZE: u64 = 1 << 16;
    let len = usize::try_from(SIZE).unwrap_or_else(|e| panic!("{e}"));
    let pattern: Vec<u8> = (0..len).map(|i| (i % 239).to_le_bytes()[0]).collect();
    let settled = |r: Result<(), extmem_guest_tests::ktap::Failure>| {
        r.unwrap_or_else(|e| panic!("{e:?}"));
    };

    let gpu = step(Gpu::new(&instance));
    let src = step(DeviceBuffer::new(&gpu, SIZE, Types::empty()));
    let dst = step(DeviceBuffer::new(&gpu, SIZE, Types::empty()));
    step(gpu.write(src.memory, 0, &pattern));
    let cb = step(gpu.record_copy(src.buffer, dst.buffer, SIZE));
    let timeline = step(gpu.semaphore(Some(0), SemTypes::empty()));
    let fence = step(gpu.fence(false, FenceTypes::empty()));
    let held = SyncBatch {
        waits: vec![(timeline, 1)],
        command_buffers: vec![cb],
        ..SyncBatch::default()
    };
    step(gpu.submit_batches(&[held], fence));
    assert!(
        !step(gpu.wait_fence(fence, 20_000_000)),
        "held until point 1 is signalled"
    );
    assert!(
        step(gpu.read(dst.memory, 0, len)) != pattern,
        "not copied yet"
    );
    step(gpu.signal_timeline(timeline, 1));
    step(gpu.await_fence(fence));
    assert!(
        step(gpu.read(dst.memory, 0, len)) == pattern,
        "copied once released"
    );
    settled(gpu.settle(Ok(()), &[fence], &[timeline], &[cb]));
    drop((src, dst));

    let lost = step(Gpu::new(&instance));
    let mut seen = Vec::new();
    vulkan::expect_messages(|| {
        let src = step(DeviceBuffer::new(&lost, SIZE, Types::empty()));
        let dst = step(DeviceBuffer::new(&lost, SIZE, Types::empty()));
        let cb = step(lost.record_copy(src.buffer, dst.buffer, SIZE));
        let fence = step(lost.fence(false, FenceTypes::empty()));
        drop(src);
        let batch = SyncBatch {
            command_buffers: vec![cb],
            ..SyncBatch::default()
        };
        step(lost.submit_batches(&[batch], fence));
        // SAFETY: a live fence.
        seen.push(unsafe { lost.device.wait_for_fences(&[fence], true, u64::MAX) });
        // SAFETY: a live queue.
        seen.push(unsafe { lost.device.queue_wait_idle(lost.queue) });
        // SAFETY: a live queue; an empty submission.
        seen.push(unsafe { lost.device.queue_submit(lost.queue, &[], vk::Fence::null()) });
        lost.destroy_fence(fence);
        lost.free_command_buffer(cb);
        drop(dst);
        drop(lost);
    });
    // vkWaitForFences, vkQueueWaitIdle and a later vkQueueSubmit.
    assert_eq!(seen, [Err(vk::Result::ERROR_DEVICE_LOST); 3]);
    // The first device is not lost.
    step(gpu.submit_batches(&[], vk::Fence::null()));
    settled(gpu.settle(Ok(()), &[], &[], &[]));
    drop(gpu);
    assert_eq!(
        vulkan::validation_message_count(),
        0,
        "{:?}",
        vulkan::validation_messages()
    );
}
