//! The ICD as applications see it: loaded by the real Khronos loader (`libvulkan.so.1`)
//! through the manifest `build.rs` writes next to the library.
//!
//! The host has no extmem-vgpu node, so the instance has no physical device. Real-device
//! tests run in the QEMU guest.

use std::path::PathBuf;

use ash::vk;

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

    // `cargo test` links the cdylib into deps/ without copying it up to the profile
    // directory, so this test points its own manifest at that file.
    let library = profile_dir().join("deps").join("libextmem_icd.so");
    assert!(library.exists(), "{} missing", library.display());
    let dir = std::env::temp_dir().join(format!("extmem-icd-loader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let manifest = dir.join("extmem_icd.json");
    let own = text.replace("./libextmem_icd.so", &library.display().to_string());
    std::fs::write(&manifest, own).unwrap_or_else(|e| panic!("{e}"));

    // Only our driver, and no implicit layers (the host's Mesa device-select layer would
    // otherwise wrap the instance). Set before the loader is opened; this is the only
    // test in this binary, so no other thread reads the environment meanwhile.
    std::env::set_var("VK_DRIVER_FILES", &manifest);
    std::env::set_var("VK_ICD_FILENAMES", &manifest);
    std::env::set_var("VK_LOADER_LAYERS_DISABLE", "~implicit~");
    std::env::set_var("NODEVICE_SELECT", "1");

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
    // SAFETY: a live instance.
    match unsafe { instance.enumerate_physical_devices() } {
        Ok(devices) => assert!(devices.is_empty(), "{} devices", devices.len()),
        // The loader itself turns "no device in any driver" into this error, on purpose
        // (KhronosGroup/Vulkan-Loader#104); the ICD answered 0 devices and SUCCESS (the
        // unit tests check that without the loader).
        Err(vk::Result::ERROR_INITIALIZATION_FAILED) => {}
        Err(e) => panic!("vkEnumeratePhysicalDevices: {e}"),
    }
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
    let _ = std::fs::remove_dir_all(&dir);
}
