//! A small Vulkan application layer for the guest programs that drive extmem-icd through the
//! Khronos loader (`icd-e2e`, `vk-demo`): load the loader with only our ICD, make an instance
//! (optionally under the Khronos validation layer, counting what it says), a device with the
//! external-memory extensions, and do the few things the programs repeat — allocate, import,
//! bind a buffer, record and submit, read and write through `vkMapMemory` — plus passing an fd
//! to another process over a unix socket (`SCM_RIGHTS`).
//!
//! The loader is `libvulkan.so.1` of the (host) root the guest runs; the ICD is the
//! `libextmem_icd.so` the runner builds into the same directory as the programs, with the
//! manifest `extmem_icd.json` its build script writes next to it.

use std::ffi::{c_void, CStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use ash::vk;

use crate::fd_passing;
use crate::ktap::{CheckResult, Failure};

/// The Khronos validation layer (Debian: vulkan-validationlayers).
pub const VALIDATION_LAYER: &CStr = c"VK_LAYER_KHRONOS_validation";

/// The device extensions every program enables.
pub const DEVICE_EXTENSIONS: [&CStr; 4] = [
    vk::KHR_EXTERNAL_MEMORY_NAME,
    vk::KHR_EXTERNAL_MEMORY_FD_NAME,
    vk::EXT_EXTERNAL_MEMORY_DMA_BUF_NAME,
    vk::EXT_EXTERNAL_MEMORY_HOST_NAME,
];

/// The synchronisation extensions [`Gpu::new`] enables where the device offers them (the
/// fd pair only on the kernel device), with the timeline and synchronization2 features.
pub const SYNC_EXTENSIONS: [&CStr; 6] = [
    vk::KHR_TIMELINE_SEMAPHORE_NAME,
    vk::KHR_SYNCHRONIZATION2_NAME,
    vk::KHR_EXTERNAL_SEMAPHORE_NAME,
    vk::KHR_EXTERNAL_FENCE_NAME,
    vk::KHR_EXTERNAL_SEMAPHORE_FD_NAME,
    vk::KHR_EXTERNAL_FENCE_FD_NAME,
];

/// The ICD manifest next to the running program: `<target>/release/extmem_icd.json`.
pub fn icd_manifest() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let manifest = exe
        .parent()
        .ok_or_else(|| io::Error::other("the program has no directory"))?
        .join("extmem_icd.json");
    if manifest.is_file() {
        Ok(manifest)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} does not exist", manifest.display()),
        ))
    }
}

/// Sets the loader's environment so that it sees our ICD only and no implicit layer (Mesa's
/// device-select layer is installed on Debian). Must run before [`load`], while the program
/// has one thread; child processes inherit it.
pub fn isolate_loader() -> io::Result<PathBuf> {
    let manifest = icd_manifest()?;
    std::env::set_var("VK_DRIVER_FILES", &manifest);
    // The name loaders before 1.3.207 read.
    std::env::set_var("VK_ICD_FILENAMES", &manifest);
    std::env::set_var("VK_LOADER_LAYERS_DISABLE", "~implicit~");
    Ok(manifest)
}

/// Loads `libvulkan.so.1`.
pub fn load() -> Result<ash::Entry, String> {
    // SAFETY: loading the loader runs its initialisers, which is what it is for; nothing else
    // in the program loads or unloads it.
    unsafe { ash::Entry::load() }.map_err(|e| format!("loading libvulkan.so.1: {e}"))
}

/// Whether the Khronos validation layer is installed.
pub fn validation_available(entry: &ash::Entry) -> bool {
    // SAFETY: a plain query.
    unsafe { entry.enumerate_instance_layer_properties() }.is_ok_and(|layers| {
        layers
            .iter()
            .any(|l| l.layer_name_as_c_str().ok() == Some(VALIDATION_LAYER))
    })
}

/// Warnings and errors the validation layer reported, over every instance of the process,
/// outside [`expect_messages`].
static MESSAGE_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Those reported inside [`expect_messages`].
static EXPECTED_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Whether [`expect_messages`] is running.
static EXPECTING: AtomicBool = AtomicBool::new(false);
/// The first few unexpected messages, for diagnostics.
static MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// How many message texts are kept.
const KEPT_MESSAGES: usize = 16;

/// The number of warnings and errors the validation layer reported so far, outside
/// [`expect_messages`].
pub fn validation_message_count() -> usize {
    MESSAGE_COUNT.load(Ordering::SeqCst)
}

/// Runs `violation`, which breaks a Valid Usage rule on purpose, and returns how many messages
/// the validation layer reported meanwhile (proving it is active); those do not count in
/// [`validation_message_count`]. The program must be single-threaded while it runs.
pub fn expect_messages(violation: impl FnOnce()) -> usize {
    let before = EXPECTED_COUNT.load(Ordering::SeqCst);
    EXPECTING.store(true, Ordering::SeqCst);
    violation();
    EXPECTING.store(false, Ordering::SeqCst);
    EXPECTED_COUNT.load(Ordering::SeqCst).saturating_sub(before)
}

/// The first messages the validation layer reported.
pub fn validation_messages() -> Vec<String> {
    MESSAGES.lock().map(|m| m.clone()).unwrap_or_default()
}

unsafe extern "system" fn on_validation_message(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    _types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _user: *mut c_void,
) -> vk::Bool32 {
    if EXPECTING.load(Ordering::SeqCst) {
        EXPECTED_COUNT.fetch_add(1, Ordering::SeqCst);
        return vk::FALSE;
    }
    MESSAGE_COUNT.fetch_add(1, Ordering::SeqCst);
    let text = if data.is_null() {
        String::from("(no callback data)")
    } else {
        // SAFETY: the layer passes a valid structure for the duration of the call; its message
        // is NUL-terminated (or null).
        unsafe { (*data).message_as_c_str() }.map_or_else(
            || String::from("(no message)"),
            |m| m.to_string_lossy().into_owned(),
        )
    };
    if let Ok(mut kept) = MESSAGES.lock() {
        if kept.len() < KEPT_MESSAGES {
            kept.push(format!("{severity:?}: {text}"));
        }
    }
    vk::FALSE
}

fn messenger_info() -> vk::DebugUtilsMessengerCreateInfoEXT<'static> {
    vk::DebugUtilsMessengerCreateInfoEXT::default()
        .message_severity(
            vk::DebugUtilsMessageSeverityFlagsEXT::WARNING
                | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
        )
        // GENERAL messages are the loader's own (e.g. that VK_LOADER_LAYERS_DISABLE turned
        // Mesa's device-select layer off), not the layer's verdict on our calls.
        .message_type(
            vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
        )
        .pfn_user_callback(Some(on_validation_message))
}

/// An instance, optionally validated; destroyed on drop.
pub struct Instance {
    /// The loader.
    pub entry: ash::Entry,
    /// The instance.
    pub instance: ash::Instance,
    messenger: Option<(ash::ext::debug_utils::Instance, vk::DebugUtilsMessengerEXT)>,
}

impl Instance {
    /// A Vulkan 1.1 instance with `VK_NV_external_memory_capabilities` where the driver
    /// offers it (Mesa's drivers, which `cargo mesa` points these programs at, do not); with
    /// `validation`, under the Khronos validation layer with a messenger counting its
    /// warnings and errors (also those of instance creation and destruction).
    pub fn new(entry: &ash::Entry, validation: bool) -> Result<Self, String> {
        let app = vk::ApplicationInfo::default()
            .application_name(c"extmem guest")
            .api_version(vk::API_VERSION_1_1);
        // SAFETY: a plain query of the loaded loader.
        let offered = unsafe { entry.enumerate_instance_extension_properties(None) }
            .map_err(|e| format!("vkEnumerateInstanceExtensionProperties: {e}"))?;
        let nv = vk::NV_EXTERNAL_MEMORY_CAPABILITIES_NAME;
        let mut extensions: Vec<_> = offered
            .iter()
            .any(|e| e.extension_name_as_c_str().ok() == Some(nv))
            .then_some(nv.as_ptr())
            .into_iter()
            .collect();
        let layers = [VALIDATION_LAYER.as_ptr()];
        let mut debug = messenger_info();
        let mut info = vk::InstanceCreateInfo::default().application_info(&app);
        if validation {
            extensions.push(vk::EXT_DEBUG_UTILS_NAME.as_ptr());
            info = info.enabled_layer_names(&layers).push_next(&mut debug);
        }
        info = info.enabled_extension_names(&extensions);
        // SAFETY: the create info and everything it points to live across the call.
        let instance = unsafe { entry.create_instance(&info, None) }
            .map_err(|e| format!("vkCreateInstance: {e}"))?;
        let messenger = if validation {
            let utils = ash::ext::debug_utils::Instance::new(entry, &instance);
            // SAFETY: a valid create info; the callback is a plain function.
            match unsafe { utils.create_debug_utils_messenger(&messenger_info(), None) } {
                Ok(m) => Some((utils, m)),
                Err(e) => {
                    // SAFETY: nothing was created from the instance.
                    unsafe { instance.destroy_instance(None) };
                    return Err(format!("vkCreateDebugUtilsMessengerEXT: {e}"));
                }
            }
        } else {
            None
        };
        Ok(Self {
            entry: entry.clone(),
            instance,
            messenger,
        })
    }

    /// The physical devices.
    pub fn physical_devices(&self) -> Result<Vec<vk::PhysicalDevice>, String> {
        // SAFETY: a live instance.
        unsafe { self.instance.enumerate_physical_devices() }
            .map_err(|e| format!("vkEnumeratePhysicalDevices: {e}"))
    }

    /// `(deviceUUID, driverUUID)` of `pd` (`VkPhysicalDeviceIDProperties`).
    pub fn uuids(&self, pd: vk::PhysicalDevice) -> ([u8; 16], [u8; 16]) {
        let mut id = vk::PhysicalDeviceIDProperties::default();
        let mut props = vk::PhysicalDeviceProperties2::default().push_next(&mut id);
        // SAFETY: a live physical device; the chain lives across the call.
        unsafe {
            self.instance
                .get_physical_device_properties2(pd, &mut props)
        };
        (id.device_uuid, id.driver_uuid)
    }

    /// `VkPhysicalDeviceDrmPropertiesEXT` of `pd` (`VK_EXT_physical_device_drm`; the caller
    /// checks that `pd` offers it).
    pub fn drm_properties(
        &self,
        pd: vk::PhysicalDevice,
    ) -> vk::PhysicalDeviceDrmPropertiesEXT<'static> {
        let mut drm = vk::PhysicalDeviceDrmPropertiesEXT::default();
        let mut props = vk::PhysicalDeviceProperties2::default().push_next(&mut drm);
        // SAFETY: a live physical device; the chain lives across the call.
        unsafe {
            self.instance
                .get_physical_device_properties2(pd, &mut props)
        };
        drm
    }

    /// `vkGetPhysicalDeviceImageFormatProperties2` for the images [`Gpu::image`] makes (RGBA8,
    /// 2D, transfer source and destination) with `tiling`, asking about external memory of
    /// `handle_type`: the result, the image limits and the external-memory properties.
    pub fn image_format_properties(
        &self,
        pd: vk::PhysicalDevice,
        tiling: vk::ImageTiling,
        handle_type: vk::ExternalMemoryHandleTypeFlags,
    ) -> (
        ash::prelude::VkResult<()>,
        vk::ImageFormatProperties,
        vk::ExternalMemoryProperties,
    ) {
        let mut external =
            vk::PhysicalDeviceExternalImageFormatInfo::default().handle_type(handle_type);
        let info = vk::PhysicalDeviceImageFormatInfo2::default()
            .format(vk::Format::R8G8B8A8_UNORM)
            .ty(vk::ImageType::TYPE_2D)
            .tiling(tiling)
            .usage(vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST)
            .push_next(&mut external);
        let mut external_out = vk::ExternalImageFormatProperties::default();
        let mut out = vk::ImageFormatProperties2::default().push_next(&mut external_out);
        // SAFETY: a live physical device; the chains live across the call.
        let result = unsafe {
            self.instance
                .get_physical_device_image_format_properties2(pd, &info, &mut out)
        };
        let limits = out.image_format_properties;
        (result, limits, external_out.external_memory_properties)
    }

    /// `minImportedHostPointerAlignment` of `pd`.
    pub fn host_pointer_alignment(&self, pd: vk::PhysicalDevice) -> u64 {
        let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        let mut props = vk::PhysicalDeviceProperties2::default().push_next(&mut host);
        // SAFETY: as above.
        unsafe {
            self.instance
                .get_physical_device_properties2(pd, &mut props)
        };
        host.min_imported_host_pointer_alignment
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: every object of the instance is gone (the devices borrow it); the messenger
        // goes first, so the layer's messages about destruction still reach the instance's
        // own create-info messenger.
        unsafe {
            if let Some((utils, messenger)) = self.messenger.take() {
                utils.destroy_debug_utils_messenger(messenger, None);
            }
            self.instance.destroy_instance(None);
        }
    }
}

/// A device with the external-memory extensions, its queue and a command pool; destroyed on
/// drop (before its [`Instance`], which it borrows).
pub struct Gpu<'i> {
    /// The instance.
    pub instance: &'i Instance,
    /// The physical device.
    pub physical: vk::PhysicalDevice,
    /// The device.
    pub device: ash::Device,
    /// Its one queue.
    pub queue: vk::Queue,
    /// A pool for one-shot command buffers.
    pub pool: vk::CommandPool,
    /// `VK_KHR_external_memory_fd`.
    pub fd: ash::khr::external_memory_fd::Device,
    /// `VK_EXT_external_memory_host`.
    pub host: ash::ext::external_memory_host::Device,
    /// The memory types.
    pub memory: vk::PhysicalDeviceMemoryProperties,
}

/// A result from Vulkan, with what was called.
pub type VkResult<T> = Result<T, String>;

/// A Vulkan call's result as a check's: any error fails the check as "the Vulkan calls succeed".
pub fn vk_op<T>(result: VkResult<T>) -> CheckResult<T> {
    result.map_err(|e| Failure::new("the Vulkan calls succeed", e))
}

/// Checks that a call whose failure is the point of the check returned exactly `expected`.
pub fn expect_result(what: &str, seen: vk::Result, expected: vk::Result) -> CheckResult<()> {
    if seen == expected {
        Ok(())
    } else {
        Err(Failure::new(
            format!("{what} returns {expected}"),
            format!("it returned {seen}"),
        ))
    }
}

fn call<T>(what: &str, result: ash::prelude::VkResult<T>) -> VkResult<T> {
    result.map_err(|e| format!("{what}: {e}"))
}

impl<'i> Gpu<'i> {
    /// The device of the first physical device.
    pub fn new(instance: &'i Instance) -> VkResult<Self> {
        let physical = *instance
            .physical_devices()?
            .first()
            .ok_or("vkEnumeratePhysicalDevices: no physical device")?;
        let priorities = [1.0_f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(0)
            .queue_priorities(&priorities)];
        let vi = &instance.instance;
        // Those of DEVICE_EXTENSIONS the device offers: the software device (extmem-softgpu)
        // has no dma-bufs and so no VK_EXT_external_memory_dma_buf.
        // SAFETY: a live physical device.
        let offered = call("vkEnumerateDeviceExtensionProperties", unsafe {
            vi.enumerate_device_extension_properties(physical)
        })?;
        let extensions: Vec<_> = DEVICE_EXTENSIONS
            .iter()
            .chain(SYNC_EXTENSIONS.iter())
            .filter(|name| {
                offered
                    .iter()
                    .any(|e| e.extension_name_as_c_str().ok() == Some(**name))
            })
            .map(|name| name.as_ptr())
            .collect();
        let offers = |name: &CStr| {
            offered
                .iter()
                .any(|e| e.extension_name_as_c_str().ok() == Some(name))
        };
        let mut timeline =
            vk::PhysicalDeviceTimelineSemaphoreFeatures::default().timeline_semaphore(true);
        let mut sync2 =
            vk::PhysicalDeviceSynchronization2Features::default().synchronization2(true);
        let mut info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&extensions);
        if offers(vk::KHR_TIMELINE_SEMAPHORE_NAME) {
            info = info.push_next(&mut timeline);
        }
        if offers(vk::KHR_SYNCHRONIZATION2_NAME) {
            info = info.push_next(&mut sync2);
        }
        // SAFETY: a live physical device; the create info lives across the call.
        let device = call("vkCreateDevice", unsafe {
            vi.create_device(physical, &info, None)
        })?;
        // SAFETY: family 0 index 0 was created above.
        let queue = unsafe { device.get_device_queue(0, 0) };
        let pool_info = vk::CommandPoolCreateInfo::default().queue_family_index(0);
        // SAFETY: a live device.
        let pool = match unsafe { device.create_command_pool(&pool_info, None) } {
            Ok(pool) => pool,
            Err(e) => {
                // SAFETY: nothing else was created from the device.
                unsafe { device.destroy_device(None) };
                return Err(format!("vkCreateCommandPool: {e}"));
            }
        };
        // SAFETY: a live physical device.
        let memory = unsafe { vi.get_physical_device_memory_properties(physical) };
        Ok(Self {
            fd: ash::khr::external_memory_fd::Device::new(vi, &device),
            host: ash::ext::external_memory_host::Device::new(vi, &device),
            instance,
            physical,
            device,
            queue,
            pool,
            memory,
        })
    }

    /// The first memory type with `flags`, among `allowed` (a `memoryTypeBits` mask).
    pub fn memory_type(&self, allowed: u32, flags: vk::MemoryPropertyFlags) -> VkResult<u32> {
        self.memory
            .memory_types_as_slice()
            .iter()
            .zip(0_u32..)
            .find(|(t, i)| {
                allowed.checked_shr(*i).is_some_and(|b| b & 1 == 1)
                    && t.property_flags.contains(flags)
            })
            .map(|(_, i)| i)
            .ok_or_else(|| format!("no memory type with {flags:?} among bits {allowed:#x}"))
    }

    /// The device-local memory type.
    pub fn device_local_type(&self) -> VkResult<u32> {
        self.memory_type(u32::MAX, vk::MemoryPropertyFlags::DEVICE_LOCAL)
    }

    /// `vkAllocateMemory` of `size` bytes of device-local memory, exportable as `export` (if
    /// not empty).
    pub fn allocate(
        &self,
        size: u64,
        export: vk::ExternalMemoryHandleTypeFlags,
    ) -> VkResult<vk::DeviceMemory> {
        let mut export_info = vk::ExportMemoryAllocateInfo::default().handle_types(export);
        let mut info = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .memory_type_index(self.device_local_type()?);
        if !export.is_empty() {
            info = info.push_next(&mut export_info);
        }
        // SAFETY: a live device; the chain lives across the call.
        call("vkAllocateMemory", unsafe {
            self.device.allocate_memory(&info, None)
        })
    }

    /// `vkGetMemoryHostPointerPropertiesEXT` of the host address `addr`, as the raw result and
    /// the type bits.
    pub fn host_pointer_properties(
        &self,
        handle_type: vk::ExternalMemoryHandleTypeFlags,
        addr: usize,
    ) -> (vk::Result, u32) {
        let mut props = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: a live device; `props` is a valid output structure. The address is only a
        // value to the driver, which probes it through the kernel (never dereferences it).
        let result = unsafe {
            (self.host.fp().get_memory_host_pointer_properties_ext)(
                self.device.handle(),
                handle_type,
                addr as *const c_void,
                &mut props,
            )
        };
        (result, props.memory_type_bits)
    }

    /// Imports `[ptr, ptr + size)` of host memory (`VK_EXT_external_memory_host`) into the
    /// first host-visible type `vkGetMemoryHostPointerPropertiesEXT` allows.
    ///
    /// # Safety
    /// The range is memory of this process that stays allocated until the returned memory is
    /// freed.
    pub unsafe fn import_host(
        &self,
        ptr: *mut c_void,
        size: u64,
        handle_type: vk::ExternalMemoryHandleTypeFlags,
    ) -> VkResult<vk::DeviceMemory> {
        let (result, bits) = self.host_pointer_properties(handle_type, ptr as usize);
        if result != vk::Result::SUCCESS {
            return Err(format!("vkGetMemoryHostPointerPropertiesEXT: {result}"));
        }
        let type_index = self.memory_type(bits, vk::MemoryPropertyFlags::HOST_VISIBLE)?;
        // SAFETY: the caller's contract.
        unsafe { self.import_host_as(ptr, size, handle_type, type_index) }
    }

    /// `vkAllocateMemory` importing `[ptr, ptr + size)` as memory type `type_index`, without
    /// asking `vkGetMemoryHostPointerPropertiesEXT` first.
    ///
    /// # Safety
    /// As for [`Gpu::import_host`].
    pub unsafe fn import_host_as(
        &self,
        ptr: *mut c_void,
        size: u64,
        handle_type: vk::ExternalMemoryHandleTypeFlags,
        type_index: u32,
    ) -> VkResult<vk::DeviceMemory> {
        let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
            .handle_type(handle_type)
            .host_pointer(ptr);
        let info = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .memory_type_index(type_index)
            .push_next(&mut import);
        // SAFETY: a live device; the range stays allocated per the caller.
        call("vkAllocateMemory (host pointer import)", unsafe {
            self.device.allocate_memory(&info, None)
        })
    }

    /// `vkGetMemoryFdKHR`: a new fd for `memory`.
    pub fn export_fd(
        &self,
        memory: vk::DeviceMemory,
        handle_type: vk::ExternalMemoryHandleTypeFlags,
    ) -> VkResult<OwnedFd> {
        let info = vk::MemoryGetFdInfoKHR::default()
            .memory(memory)
            .handle_type(handle_type);
        // SAFETY: a live device and memory.
        let raw = call("vkGetMemoryFdKHR", unsafe { self.fd.get_memory_fd(&info) })?;
        if raw < 0 {
            return Err(format!("vkGetMemoryFdKHR returned fd {raw}"));
        }
        // SAFETY: the driver made a new fd that the application owns (VK_KHR_external_memory_fd).
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    /// `vkGetMemoryFdPropertiesKHR`, as the raw result and the type bits.
    pub fn fd_properties(
        &self,
        handle_type: vk::ExternalMemoryHandleTypeFlags,
        fd: i32,
    ) -> (vk::Result, u32) {
        let mut props = vk::MemoryFdPropertiesKHR::default();
        // SAFETY: a live device; `props` is a valid output structure; the fd is only looked at.
        let result = unsafe {
            (self.fd.fp().get_memory_fd_properties_khr)(
                self.device.handle(),
                handle_type,
                fd,
                &mut props,
            )
        };
        (result, props.memory_type_bits)
    }

    /// Imports `fd` (`VkImportMemoryFdInfoKHR`) as `size` bytes of `type_index`. A successful
    /// import takes the fd; a failed one gives it back, and it is closed here.
    pub fn import_fd(
        &self,
        fd: OwnedFd,
        handle_type: vk::ExternalMemoryHandleTypeFlags,
        size: u64,
        type_index: u32,
    ) -> VkResult<vk::DeviceMemory> {
        let no_export = vk::ExternalMemoryHandleTypeFlags::empty();
        self.import_fd_exportable(fd, handle_type, size, type_index, no_export)
    }

    /// [`Gpu::import_fd`], the memory exportable again as `export` (if not empty:
    /// `VkExportMemoryAllocateInfo` beside the import, within the imported type's
    /// `exportFromImportedHandleTypes`).
    pub fn import_fd_exportable(
        &self,
        fd: OwnedFd,
        handle_type: vk::ExternalMemoryHandleTypeFlags,
        size: u64,
        type_index: u32,
        export: vk::ExternalMemoryHandleTypeFlags,
    ) -> VkResult<vk::DeviceMemory> {
        let raw = fd.into_raw_fd();
        let mut import = vk::ImportMemoryFdInfoKHR::default()
            .handle_type(handle_type)
            .fd(raw);
        let mut export_info = vk::ExportMemoryAllocateInfo::default().handle_types(export);
        let mut info = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .memory_type_index(type_index)
            .push_next(&mut import);
        if !export.is_empty() {
            info = info.push_next(&mut export_info);
        }
        // SAFETY: a live device; the chain lives across the call.
        match unsafe { self.device.allocate_memory(&info, None) } {
            Ok(memory) => Ok(memory),
            Err(e) => {
                // SAFETY: a failed import leaves the fd with the application, which is us.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
                Err(format!("vkAllocateMemory (fd import): {e}"))
            }
        }
    }

    /// Imports a dma-buf as an application must (`VUID-VkMemoryAllocateInfo-memoryTypeIndex-00648`
    /// ties the type to the handle): `vkGetMemoryFdPropertiesKHR` for its memory types, then
    /// [`Gpu::import_fd`] of `size` bytes into the first of them. Returns the memory and the
    /// type bits.
    pub fn import_dma_buf(&self, fd: OwnedFd, size: u64) -> VkResult<(vk::DeviceMemory, u32)> {
        let handle_type = vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT;
        let (result, bits) = self.fd_properties(handle_type, fd.as_raw_fd());
        if result != vk::Result::SUCCESS {
            return Err(format!(
                "vkGetMemoryFdPropertiesKHR of the dma-buf: {result}"
            ));
        }
        let type_index = self.memory_type(bits, vk::MemoryPropertyFlags::empty())?;
        let memory = self.import_fd(fd, handle_type, size, type_index)?;
        Ok((memory, bits))
    }

    /// A transfer buffer of `size` bytes bound at offset 0 of `memory`, declared for external
    /// memory of `handle_types` (required when `memory` was imported or is exportable).
    pub fn buffer(
        &self,
        memory: vk::DeviceMemory,
        size: u64,
        handle_types: vk::ExternalMemoryHandleTypeFlags,
    ) -> VkResult<vk::Buffer> {
        let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(handle_types);
        let mut info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        if !handle_types.is_empty() {
            info = info.push_next(&mut external);
        }
        // SAFETY: a live device; the chain lives across the call.
        let buffer = call("vkCreateBuffer", unsafe {
            self.device.create_buffer(&info, None)
        })?;
        // SAFETY: a live buffer and memory.
        if let Err(e) = unsafe { self.device.bind_buffer_memory(buffer, memory, 0) } {
            // SAFETY: the buffer is unused.
            unsafe { self.device.destroy_buffer(buffer, None) };
            return Err(format!("vkBindBufferMemory: {e}"));
        }
        Ok(buffer)
    }

    /// Records with `record` into a new command buffer, submits it with a fence, waits, and
    /// frees the command buffer.
    pub fn run(&self, record: impl FnOnce(&ash::Device, vk::CommandBuffer)) -> VkResult<()> {
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: a live pool.
        let cbs = call("vkAllocateCommandBuffers", unsafe {
            self.device.allocate_command_buffers(&alloc)
        })?;
        let result = self.record_and_submit(&cbs, record);
        // SAFETY: the submission finished (waited on below) or never happened.
        unsafe { self.device.free_command_buffers(self.pool, &cbs) };
        result
    }

    /// Records with `record` into `cb` (new, or reset), between a `vkBeginCommandBuffer`
    /// with `flags` and `vkEndCommandBuffer`.
    pub fn begin_record_end(
        &self,
        cb: vk::CommandBuffer,
        flags: vk::CommandBufferUsageFlags,
        record: impl FnOnce(&ash::Device, vk::CommandBuffer),
    ) -> VkResult<()> {
        let begin = vk::CommandBufferBeginInfo::default().flags(flags);
        // SAFETY: a command buffer of a live pool, in the initial state.
        call("vkBeginCommandBuffer", unsafe {
            self.device.begin_command_buffer(cb, &begin)
        })?;
        record(&self.device, cb);
        // SAFETY: recording.
        call("vkEndCommandBuffer", unsafe {
            self.device.end_command_buffer(cb)
        })
    }

    fn record_and_submit(
        &self,
        cbs: &[vk::CommandBuffer],
        record: impl FnOnce(&ash::Device, vk::CommandBuffer),
    ) -> VkResult<()> {
        let cb = *cbs.first().ok_or("no command buffer")?;
        self.begin_record_end(cb, vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT, record)?;
        // SAFETY: a live device.
        let fence = call("vkCreateFence", unsafe {
            self.device
                .create_fence(&vk::FenceCreateInfo::default(), None)
        })?;
        let submit = [vk::SubmitInfo::default().command_buffers(cbs)];
        // SAFETY: an executable command buffer; the fence is unsignalled.
        let result = call("vkQueueSubmit", unsafe {
            self.device.queue_submit(self.queue, &submit, fence)
        })
        .and_then(|()| {
            // SAFETY: the fence was submitted.
            call("vkWaitForFences", unsafe {
                self.device.wait_for_fences(&[fence], true, u64::MAX)
            })
        });
        // SAFETY: the fence is no longer in use (signalled, or the submit failed).
        unsafe { self.device.destroy_fence(fence, None) };
        result
    }

    /// Copies `len` bytes at `offset` of host-visible `memory` out through `vkMapMemory`.
    pub fn read(&self, memory: vk::DeviceMemory, offset: u64, len: usize) -> VkResult<Vec<u8>> {
        let size = u64::try_from(len).map_err(|e| e.to_string())?;
        // SAFETY: live, host-visible, unmapped memory; the range is the caller's to name
        // (the driver checks it).
        let ptr = call("vkMapMemory", unsafe {
            self.device
                .map_memory(memory, offset, size, vk::MemoryMapFlags::empty())
        })?;
        let mut out = vec![0_u8; len];
        // SAFETY: the mapping covers `len` bytes from `ptr`; no Rust reference to it exists
        // (the GPU or another process may write it), so the bytes are copied out.
        unsafe {
            ptr::copy_nonoverlapping(ptr.cast::<u8>(), out.as_mut_ptr(), len);
            self.device.unmap_memory(memory);
        }
        Ok(out)
    }

    /// Copies `bytes` into host-visible `memory` at `offset` through `vkMapMemory`.
    pub fn write(&self, memory: vk::DeviceMemory, offset: u64, bytes: &[u8]) -> VkResult<()> {
        let size = u64::try_from(bytes.len()).map_err(|e| e.to_string())?;
        // SAFETY: as in `read`.
        let ptr = call("vkMapMemory", unsafe {
            self.device
                .map_memory(memory, offset, size, vk::MemoryMapFlags::empty())
        })?;
        // SAFETY: the mapping covers `bytes.len()` bytes from `ptr`, which is not Rust memory.
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.cast::<u8>(), bytes.len());
            self.device.unmap_memory(memory);
        }
        Ok(())
    }

    /// `vkFreeMemory`.
    pub fn free(&self, memory: vk::DeviceMemory) {
        // SAFETY: the caller no longer uses `memory` (its buffers are destroyed).
        unsafe { self.device.free_memory(memory, None) };
    }

    /// `vkDestroyBuffer`.
    pub fn destroy_buffer(&self, buffer: vk::Buffer) {
        // SAFETY: no pending work uses the buffer (every submission is waited for).
        unsafe { self.device.destroy_buffer(buffer, None) };
    }

    /// Copies `size` bytes from `src` to `dst` on the GPU.
    pub fn copy(&self, src: vk::Buffer, dst: vk::Buffer, size: u64) -> VkResult<()> {
        self.run(|device, cb| {
            let region = vk::BufferCopy::default().size(size);
            // SAFETY: recording; both buffers are bound and at least `size` bytes.
            unsafe { device.cmd_copy_buffer(cb, src, dst, &[region]) };
        })
    }

    /// Fills `size` bytes of `dst` with the 32-bit `value` on the GPU.
    pub fn fill(&self, dst: vk::Buffer, size: u64, value: u32) -> VkResult<()> {
        self.run(|device, cb| {
            // SAFETY: recording; the buffer is bound and at least `size` bytes.
            unsafe { device.cmd_fill_buffer(cb, dst, 0, size, value) };
        })
    }
}

/// An RGBA8 2D transfer image of a [`Gpu`] (one level, one layer), with its extent.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    /// The image.
    pub image: vk::Image,
    /// Width in texels.
    pub width: u32,
    /// Height in texels.
    pub height: u32,
}

impl Image {
    /// Bytes per texel (RGBA8).
    pub const TEXEL: usize = 4;

    /// Bytes of the whole image tightly packed, as the copies below lay it out in a buffer.
    pub fn packed_len(&self) -> usize {
        Self::TEXEL * self.width as usize * self.height as usize
    }

    /// The whole image as one copy region, tightly packed at `offset` of the buffer.
    fn region(&self, offset: u64) -> vk::BufferImageCopy {
        vk::BufferImageCopy::default()
            .buffer_offset(offset)
            .image_subresource(vk::ImageSubresourceLayers {
                aspect_mask: vk::ImageAspectFlags::COLOR,
                mip_level: 0,
                base_array_layer: 0,
                layer_count: 1,
            })
            .image_extent(vk::Extent3D {
                width: self.width,
                height: self.height,
                depth: 1,
            })
    }

    /// Records a barrier moving the image from `old` to `new` layout, making the transfer
    /// writes `before` visible to the transfer accesses `after`.
    fn transition(
        &self,
        device: &ash::Device,
        cb: vk::CommandBuffer,
        (old, new): (vk::ImageLayout, vk::ImageLayout),
        (before, after): (vk::AccessFlags, vk::AccessFlags),
    ) {
        let barrier = vk::ImageMemoryBarrier::default()
            .old_layout(old)
            .new_layout(new)
            .src_access_mask(before)
            .dst_access_mask(after)
            .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .image(self.image)
            .subresource_range(vk::ImageSubresourceRange {
                aspect_mask: vk::ImageAspectFlags::COLOR,
                base_mip_level: 0,
                level_count: 1,
                base_array_layer: 0,
                layer_count: 1,
            });
        let source_stage = if before.is_empty() {
            vk::PipelineStageFlags::TOP_OF_PIPE
        } else {
            vk::PipelineStageFlags::TRANSFER
        };
        // SAFETY: recording; the barrier names a live image.
        unsafe {
            device.cmd_pipeline_barrier(
                cb,
                source_stage,
                vk::PipelineStageFlags::TRANSFER,
                vk::DependencyFlags::empty(),
                &[],
                &[],
                &[barrier],
            );
        }
    }
}

impl Gpu<'_> {
    /// A `width` x `height` RGBA8 transfer image of `tiling`, declared for external memory
    /// of `handle_types` (none: not external), not bound yet.
    pub fn image(
        &self,
        (width, height): (u32, u32),
        tiling: vk::ImageTiling,
        handle_types: vk::ExternalMemoryHandleTypeFlags,
    ) -> VkResult<Image> {
        let mut external = vk::ExternalMemoryImageCreateInfo::default().handle_types(handle_types);
        let mut info = vk::ImageCreateInfo::default()
            .image_type(vk::ImageType::TYPE_2D)
            .format(vk::Format::R8G8B8A8_UNORM)
            .extent(vk::Extent3D {
                width,
                height,
                depth: 1,
            })
            .mip_levels(1)
            .array_layers(1)
            .samples(vk::SampleCountFlags::TYPE_1)
            .tiling(tiling)
            .usage(vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .initial_layout(vk::ImageLayout::UNDEFINED);
        if !handle_types.is_empty() {
            info = info.push_next(&mut external);
        }
        // SAFETY: a live device; the chain lives across the call.
        let image = call("vkCreateImage", unsafe {
            self.device.create_image(&info, None)
        })?;
        Ok(Image {
            image,
            width,
            height,
        })
    }

    /// `vkGetImageMemoryRequirements`.
    pub fn image_requirements(&self, image: Image) -> vk::MemoryRequirements {
        // SAFETY: a live image.
        unsafe { self.device.get_image_memory_requirements(image.image) }
    }

    /// `vkBindImageMemory` at offset 0 of `memory`.
    pub fn bind_image(&self, image: Image, memory: vk::DeviceMemory) -> VkResult<()> {
        // SAFETY: a live image and memory.
        call("vkBindImageMemory", unsafe {
            self.device.bind_image_memory(image.image, memory, 0)
        })
    }

    /// `vkDestroyImage`.
    pub fn destroy_image(&self, image: Image) {
        // SAFETY: no pending work uses the image (every submission is waited for).
        unsafe { self.device.destroy_image(image.image, None) };
    }

    /// In one submission, copies the image's texels tightly packed at offset 0 of `buffer`
    /// into the bound `image`, then the image back into `buffer` at `back`, in the transfer
    /// layouts (what the validation layer asks of an optimal image).
    pub fn image_round_trip(&self, image: Image, buffer: vk::Buffer, back: u64) -> VkResult<()> {
        type Access = vk::AccessFlags;
        type Layout = vk::ImageLayout;
        self.run(|device, cb| {
            image.transition(
                device,
                cb,
                (Layout::UNDEFINED, Layout::TRANSFER_DST_OPTIMAL),
                (Access::empty(), Access::TRANSFER_WRITE),
            );
            // SAFETY: recording; the buffer holds both packed copies of the image.
            unsafe {
                device.cmd_copy_buffer_to_image(
                    cb,
                    buffer,
                    image.image,
                    Layout::TRANSFER_DST_OPTIMAL,
                    &[image.region(0)],
                );
            }
            image.transition(
                device,
                cb,
                (Layout::TRANSFER_DST_OPTIMAL, Layout::TRANSFER_SRC_OPTIMAL),
                (Access::TRANSFER_WRITE, Access::TRANSFER_READ),
            );
            // SAFETY: as above.
            unsafe {
                device.cmd_copy_image_to_buffer(
                    cb,
                    image.image,
                    Layout::TRANSFER_SRC_OPTIMAL,
                    buffer,
                    &[image.region(back)],
                );
            }
        })
    }

    /// Copies the whole of a new `image`, bound to memory whose texels were written elsewhere
    /// (another device, another image over the same memory), tightly packed into `buffer` at
    /// offset 0. The transition from `UNDEFINED` keeps the bytes on this device, which has
    /// no layout of its own to convert from.
    pub fn read_image(&self, image: Image, buffer: vk::Buffer) -> VkResult<()> {
        type Layout = vk::ImageLayout;
        self.run(|device, cb| {
            image.transition(
                device,
                cb,
                (Layout::UNDEFINED, Layout::TRANSFER_SRC_OPTIMAL),
                (vk::AccessFlags::empty(), vk::AccessFlags::TRANSFER_READ),
            );
            // SAFETY: recording; the buffer holds one packed copy of the image.
            unsafe {
                device.cmd_copy_image_to_buffer(
                    cb,
                    image.image,
                    Layout::TRANSFER_SRC_OPTIMAL,
                    buffer,
                    &[image.region(0)],
                );
            }
        })
    }
}

/// Device memory with a transfer buffer over all of it, freed (buffer first) on drop.
pub struct DeviceBuffer<'g, 'i> {
    gpu: &'g Gpu<'i>,
    /// The memory.
    pub memory: vk::DeviceMemory,
    /// The buffer bound to it at offset 0.
    pub buffer: vk::Buffer,
}

impl<'g, 'i> DeviceBuffer<'g, 'i> {
    /// `size` bytes of new memory, exportable as `export`.
    pub fn new(
        gpu: &'g Gpu<'i>,
        size: u64,
        export: vk::ExternalMemoryHandleTypeFlags,
    ) -> VkResult<Self> {
        let memory = gpu.allocate(size, export)?;
        Self::over(gpu, memory, size, export)
    }

    /// Memory imported from `fd` of handle type `ty` (OPAQUE_FD or DMA_BUF); the fd is the
    /// driver's on success.
    pub fn import(
        gpu: &'g Gpu<'i>,
        fd: OwnedFd,
        ty: vk::ExternalMemoryHandleTypeFlags,
        size: u64,
    ) -> VkResult<Self> {
        let memory = if ty == vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT {
            gpu.import_dma_buf(fd, size)?.0
        } else {
            gpu.import_fd(fd, ty, size, gpu.device_local_type()?)?
        };
        Self::over(gpu, memory, size, ty)
    }

    /// A buffer over `memory`, which is freed if that fails.
    fn over(
        gpu: &'g Gpu<'i>,
        memory: vk::DeviceMemory,
        size: u64,
        ty: vk::ExternalMemoryHandleTypeFlags,
    ) -> VkResult<Self> {
        match gpu.buffer(memory, size, ty) {
            Ok(buffer) => Ok(Self {
                gpu,
                memory,
                buffer,
            }),
            Err(e) => {
                gpu.free(memory);
                Err(e)
            }
        }
    }
}

impl Drop for DeviceBuffer<'_, '_> {
    fn drop(&mut self) {
        self.gpu.destroy_buffer(self.buffer);
        self.gpu.free(self.memory);
    }
}

impl Drop for Gpu<'_> {
    fn drop(&mut self) {
        // SAFETY: every submission was waited for; the pool's command buffers go with it.
        unsafe {
            self.device.destroy_command_pool(self.pool, None);
            self.device.destroy_device(None);
        }
    }
}

/// `size` bytes of the 32-bit little-endian `value` repeated (what `vkCmdFillBuffer` writes).
pub fn fill_pattern(value: u32, size: usize) -> Vec<u8> {
    value
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect()
}

/// What a parent tells a child along with an fd: how big it is and what to fill it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdMessage {
    /// `allocationSize` to import.
    pub size: u64,
    /// The 32-bit fill value.
    pub value: u32,
}

impl FdMessage {
    fn encode(self) -> [u8; 12] {
        let mut out = [0_u8; 12];
        let (size, value) = out.split_at_mut(8);
        size.copy_from_slice(&self.size.to_le_bytes());
        value.copy_from_slice(&self.value.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8; 12]) -> Self {
        let (size, value) = bytes.split_at(8);
        let mut s = [0_u8; 8];
        s.copy_from_slice(size);
        let mut v = [0_u8; 4];
        v.copy_from_slice(value);
        Self {
            size: u64::from_le_bytes(s),
            value: u32::from_le_bytes(v),
        }
    }
}

/// Sends `fd` with `message` over the unix socket `socket` (`SCM_RIGHTS`).
pub fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>, message: FdMessage) -> io::Result<()> {
    fd_passing::send_with_fd(socket, fd, &message.encode())
}

/// Receives an fd and its message from the unix socket `socket`.
pub fn recv_fd(socket: BorrowedFd<'_>) -> io::Result<(OwnedFd, FdMessage)> {
    let mut payload = [0_u8; 12];
    let fd = fd_passing::recv_with_fd(socket, &mut payload)?;
    Ok((fd, FdMessage::decode(&payload)))
}

/// Whether `fd` is close-on-exec (`FD_CLOEXEC`), as every exported fd must be.
pub fn is_cloexec(fd: impl AsFd) -> io::Result<bool> {
    Ok(rustix::io::fcntl_getfd(fd)?.contains(rustix::io::FdFlags::CLOEXEC))
}
