//! `EXTMEM_DEBUG`: a refusal crosses the C boundary as one line on stderr with the entry
//! point, the `VkResult`, the backend operation and the errno, and nothing is printed
//! without the variable.
//!
//! The refusal is provoked in a child process (this test binary run again for the same test,
//! which plays the child's part when `EXTMEM_DEBUG_TEST_CHILD` is set), since the variable is
//! read once per process: an application asks the software device for the properties of an
//! unmapped host range, through the ICD's own `vk_icdGetInstanceProcAddr`.
#![cfg(not(windows))]

use core::ffi::c_void;
use std::process::Command;

use ash::vk;
use extmem_guest_tests::host_memory::unmapped_range;

/// Set in the environment of a child run: the test plays the child's part.
const CHILD_ROLE: &str = "EXTMEM_DEBUG_TEST_CHILD";

/// Whether this process is a child run; if so, it has played the child's part.
fn played_child() -> bool {
    if std::env::var_os(CHILD_ROLE).is_none() {
        return false;
    }
    ask_about_an_unmapped_host_range();
    true
}

/// The stderr of `test` run again as a child, with `EXTMEM_DEBUG` set to `debug` (or unset).
fn child_stderr(test: &str, debug: Option<&str>) -> String {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut child = Command::new(exe);
    child
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, "1");
    match debug {
        Some(value) => child.env(extmem_icd::debug::VARIABLE, value),
        None => child.env_remove(extmem_icd::debug::VARIABLE),
    };
    // The software device, whatever the machine has.
    child.env("EXTMEM_DEVICE", "software");
    let output = child
        .output()
        .unwrap_or_else(|e| panic!("running {test}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{test} failed: {stderr}");
    stderr
}

#[test]
fn a_refusal_is_one_line_on_stderr_under_extmem_debug() {
    if played_child() {
        return;
    }
    let stderr = child_stderr(
        "a_refusal_is_one_line_on_stderr_under_extmem_debug",
        Some("1"),
    );
    let prefix = "extmem: vkGetMemoryHostPointerPropertiesEXT: VK_ERROR_INVALID_EXTERNAL_HANDLE \
                  (op ImportHost, errno 14): host range [";
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("extmem:"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with(prefix), "{stderr}");
    assert!(
        lines[0].ends_with("cannot be imported (errno 14)"),
        "{stderr}"
    );
}

#[test]
fn nothing_is_printed_without_extmem_debug() {
    if played_child() {
        return;
    }
    for quiet in [None, Some("0"), Some("")] {
        let stderr = child_stderr("nothing_is_printed_without_extmem_debug", quiet);
        assert!(!stderr.contains("extmem:"), "{quiet:?}: {stderr}");
    }
}

/// The child's part: asks the software device about an unmapped host range, which it must
/// refuse.
fn ask_about_an_unmapped_host_range() {
    let static_fn = ash::StaticFn {
        get_instance_proc_addr: extmem_icd::vk_icdGetInstanceProcAddr,
    };
    // SAFETY: the ICD's vkGetInstanceProcAddr follows the Vulkan contract.
    let entry = unsafe { ash::Entry::from_static_fn(static_fn) };
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_1);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: a valid create info.
    let instance = unsafe { entry.create_instance(&info, None) }
        .unwrap_or_else(|e| panic!("vkCreateInstance: {e}"));
    // SAFETY: a live instance.
    let pd = unsafe { instance.enumerate_physical_devices() }
        .unwrap_or_default()
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no physical device"));
    let priorities = [1.0];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(0)
        .queue_priorities(&priorities)];
    let extensions = [vk::EXT_EXTERNAL_MEMORY_HOST_NAME.as_ptr()];
    let info = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queues)
        .enabled_extension_names(&extensions);
    // SAFETY: a physical device of the live instance, a valid create info.
    let device = unsafe { instance.create_device(pd, &info, None) }
        .unwrap_or_else(|e| panic!("vkCreateDevice: {e}"));
    let host = ash::ext::external_memory_host::Device::new(&instance, &device);
    let hole = unmapped_range(4096).unwrap_or_else(|e| panic!("{e}"));
    let hole = usize::try_from(hole).unwrap_or_else(|e| panic!("{e}"));
    let mut props = vk::MemoryHostPointerPropertiesEXT::default();
    // SAFETY: a live device; the pointer is only asked about, never dereferenced.
    let refused = unsafe {
        (host.fp().get_memory_host_pointer_properties_ext)(
            device.handle(),
            vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT,
            hole as *const c_void,
            &mut props,
        )
    };
    assert_eq!(refused, vk::Result::ERROR_INVALID_EXTERNAL_HANDLE);
    // SAFETY: nothing else uses them.
    unsafe {
        device.destroy_device(None);
        instance.destroy_instance(None);
    }
}
