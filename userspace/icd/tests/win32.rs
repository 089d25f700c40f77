//! The ICD on Windows, as an application uses it: `extmem_icd.dll` loaded with
//! `LoadLibraryW` and driven through the `vk_icdGetInstanceProcAddr` it exports (no
//! Windows loader exists under Wine), on the software device, whose memory is section
//! objects.
//!
//! One test, two processes. The parent allocates memory exportable as an NT handle (named,
//! inheritable) and as a global-share (KMT) token, writes a pattern with the copy engine and
//! starts this test binary again as a child (`EXTMEM_WIN32_CHILD` set), handing it the
//! inherited NT handle, a handle duplicated into it, the name and the token on stdin. The
//! child imports all four, checks the parent's bytes through its own device and writes its
//! own pattern back with its copy engine; the parent checks those. Then the ownership
//! rules: the application closes its NT handle, a second NT export is refused, a KMT token
//! stops working once the memory is freed, and every refusal has its Vulkan error.
#![cfg(windows)]

use std::io::{BufRead, Write};
use std::os::windows::io::AsRawHandle;
use std::process::{Command, Stdio};

use ash::vk;
use windows_sys::Win32::Foundation::{CloseHandle, DuplicateHandle, DUPLICATE_SAME_ACCESS, HANDLE};
use windows_sys::Win32::System::LibraryLoader::{GetProcAddress, LoadLibraryW};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

mod common;

type Types = vk::ExternalMemoryHandleTypeFlags;
type Nv = vk::ExternalMemoryHandleTypeFlagsNV;

const CHILD: &str = "EXTMEM_WIN32_CHILD";
/// The NV-shared image: 33 RGBA8 texels a row, so rows are padded to the row pitch.
const IMAGE_WIDTH: u32 = 33;
const IMAGE_HEIGHT: u32 = 17;
const SIZE: u64 = 64 << 10;

fn fail<T>(what: &str) -> impl FnOnce(vk::Result) -> T + '_ {
    move |e| panic!("{what}: {e}")
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain([0]).collect()
}

/// `vk_icdGetInstanceProcAddr` from the DLL cargo built for this test: next to the test
/// executable (`<target>/x86_64-pc-windows-gnu/<profile>/deps/`; `cargo test` does not
/// refresh the copy one directory up).
fn entry() -> ash::Entry {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let dll = exe
        .parent()
        .map(|deps| deps.join("extmem_icd.dll"))
        .unwrap_or_else(|| panic!("no directory above {}", exe.display()));
    let path = wide(&dll.to_string_lossy());
    // SAFETY: a NUL-terminated path; the library stays loaded for the process.
    let module = unsafe { LoadLibraryW(path.as_ptr()) };
    assert!(!module.is_null(), "LoadLibraryW({})", dll.display());
    // SAFETY: a live module and a NUL-terminated name.
    let symbol = unsafe { GetProcAddress(module, c"vk_icdGetInstanceProcAddr".as_ptr().cast()) };
    let symbol = symbol.unwrap_or_else(|| panic!("the DLL exports vk_icdGetInstanceProcAddr"));
    // SAFETY: the export has exactly this type (extmem_icd::vk_icdGetInstanceProcAddr).
    let get_instance_proc_addr = unsafe {
        core::mem::transmute::<unsafe extern "system" fn() -> isize, vk::PFN_vkGetInstanceProcAddr>(
            symbol,
        )
    };
    // SAFETY: our vkGetInstanceProcAddr follows the Vulkan contract.
    unsafe {
        ash::Entry::from_static_fn(ash::StaticFn {
            get_instance_proc_addr,
        })
    }
}

/// One device on the software device, with a transfer queue and a command buffer.
struct Gpu {
    device: ash::Device,
    queue: vk::Queue,
    pool: vk::CommandPool,
    win32: ash::khr::external_memory_win32::Device,
    win32_nv: ash::nv::external_memory_win32::Device,
}

impl Gpu {
    fn new(instance: &ash::Instance, pd: vk::PhysicalDevice) -> Self {
        let priorities = [1.0];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(0)
            .queue_priorities(&priorities)];
        let extensions = [
            vk::KHR_EXTERNAL_MEMORY_WIN32_NAME.as_ptr(),
            vk::NV_EXTERNAL_MEMORY_NAME.as_ptr(),
            vk::NV_EXTERNAL_MEMORY_WIN32_NAME.as_ptr(),
        ];
        let info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&extensions);
        // SAFETY: a live physical device and a valid create info.
        let device = unsafe { instance.create_device(pd, &info, None) }
            .unwrap_or_else(fail("vkCreateDevice"));
        // SAFETY: a live device with one queue in family 0.
        let queue = unsafe { device.get_device_queue(0, 0) };
        let pool_info = vk::CommandPoolCreateInfo::default().queue_family_index(0);
        // SAFETY: a live device.
        let pool = unsafe { device.create_command_pool(&pool_info, None) }
            .unwrap_or_else(fail("vkCreateCommandPool"));
        let win32 = ash::khr::external_memory_win32::Device::new(instance, &device);
        let win32_nv = ash::nv::external_memory_win32::Device::new(instance, &device);
        Self {
            device,
            queue,
            pool,
            win32,
            win32_nv,
        }
    }

    fn allocate(&self, info: &vk::MemoryAllocateInfo<'_>) -> Result<vk::DeviceMemory, vk::Result> {
        // SAFETY: a live device; the caller's chain lives across the call.
        unsafe { self.device.allocate_memory(info, None) }
    }

    /// Imports `handle_type` memory by handle or by name.
    fn import(
        &self,
        handle_type: Types,
        handle: HANDLE,
        name: Option<&[u16]>,
    ) -> Result<vk::DeviceMemory, vk::Result> {
        let mut import = vk::ImportMemoryWin32HandleInfoKHR::default()
            .handle_type(handle_type)
            .handle(handle as isize);
        if let Some(name) = name {
            import = import.name(name.as_ptr());
        }
        let info = vk::MemoryAllocateInfo::default()
            .allocation_size(SIZE)
            .push_next(&mut import);
        self.allocate(&info)
    }

    /// Runs `record` in one command buffer and waits for it.
    fn run(&self, record: impl FnOnce(&ash::Device, vk::CommandBuffer)) {
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.pool)
            .command_buffer_count(1);
        // SAFETY: a live device and pool.
        let cb = unsafe { self.device.allocate_command_buffers(&info) }
            .unwrap_or_else(fail("vkAllocateCommandBuffers"))[0];
        // SAFETY: recording and submitting a command buffer of this device, then waiting.
        unsafe {
            let begin = vk::CommandBufferBeginInfo::default();
            self.device
                .begin_command_buffer(cb, &begin)
                .unwrap_or_else(fail("vkBeginCommandBuffer"));
            record(&self.device, cb);
            self.device
                .end_command_buffer(cb)
                .unwrap_or_else(fail("vkEndCommandBuffer"));
            let cbs = [cb];
            let submit = [vk::SubmitInfo::default().command_buffers(&cbs)];
            self.device
                .queue_submit(self.queue, &submit, vk::Fence::null())
                .unwrap_or_else(fail("vkQueueSubmit"));
            self.device
                .queue_wait_idle(self.queue)
                .unwrap_or_else(fail("vkQueueWaitIdle"));
            self.device.free_command_buffers(self.pool, &cbs);
        }
    }

    /// A transfer buffer over the whole of `memory`.
    fn buffer(&self, memory: vk::DeviceMemory) -> vk::Buffer {
        let info = vk::BufferCreateInfo::default()
            .size(SIZE)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST);
        // SAFETY: a live device; the buffer is bound once, at offset 0.
        unsafe {
            let buffer = self
                .device
                .create_buffer(&info, None)
                .unwrap_or_else(fail("vkCreateBuffer"));
            self.device
                .bind_buffer_memory(buffer, memory, 0)
                .unwrap_or_else(fail("vkBindBufferMemory"));
            buffer
        }
    }

    /// Fills `[offset, offset + size)` of `memory` with `word` on the copy engine.
    fn fill(&self, memory: vk::DeviceMemory, offset: u64, size: u64, word: u32) {
        let buffer = self.buffer(memory);
        // SAFETY: recording into a command buffer of this device.
        self.run(|device, cb| unsafe { device.cmd_fill_buffer(cb, buffer, offset, size, word) });
        // SAFETY: the copy finished (run waits).
        unsafe { self.device.destroy_buffer(buffer, None) };
    }

    /// The words of `memory` at `offset`, read through a CPU mapping.
    fn words(&self, memory: vk::DeviceMemory, offset: u64, count: usize) -> Vec<u32> {
        // SAFETY: host-visible memory of this device, mapped whole, read, unmapped.
        unsafe {
            let ptr = self
                .device
                .map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
                .unwrap_or_else(fail("vkMapMemory"));
            let start = ptr.cast::<u8>().add(usize::try_from(offset).unwrap_or(0));
            let words = std::slice::from_raw_parts(start.cast::<u32>(), count).to_vec();
            self.device.unmap_memory(memory);
            words
        }
    }

    /// `vkGetMemoryWin32HandleNV` (ash 0.38 has no wrapper for it).
    fn nv_handle(&self, memory: vk::DeviceMemory, handle_type: Nv) -> Result<HANDLE, vk::Result> {
        let mut handle: vk::HANDLE = 0;
        // SAFETY: a live device and memory, a valid output pointer.
        let answer = unsafe {
            (self.win32_nv.fp().get_memory_win32_handle_nv)(
                self.device.handle(),
                memory,
                handle_type,
                &mut handle,
            )
        };
        answer.result_with_success(handle as HANDLE)
    }

    /// Writes `words` at the start of `memory` through a CPU mapping.
    fn write_words(&self, memory: vk::DeviceMemory, words: &[u32]) {
        // SAFETY: host-visible memory of this device, mapped whole, written within its
        // size, unmapped.
        unsafe {
            let ptr = self
                .device
                .map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
                .unwrap_or_else(fail("vkMapMemory"));
            core::ptr::copy_nonoverlapping(words.as_ptr(), ptr.cast::<u32>(), words.len());
            self.device.unmap_memory(memory);
        }
    }

    fn free(&self, memory: vk::DeviceMemory) {
        // SAFETY: memory of this device, no longer used.
        unsafe { self.device.free_memory(memory, None) };
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: every object of the device was destroyed by its user.
        unsafe {
            self.device.destroy_command_pool(self.pool, None);
            self.device.destroy_device(None);
        }
    }
}

/// The instance and its one physical device, whose answers about Windows handles are
/// checked on the way.
fn instance(entry: &ash::Entry) -> (ash::Instance, vk::PhysicalDevice) {
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_1);
    let extensions = [vk::NV_EXTERNAL_MEMORY_CAPABILITIES_NAME.as_ptr()];
    let info = vk::InstanceCreateInfo::default()
        .application_info(&app)
        .enabled_extension_names(&extensions);
    // SAFETY: a valid create info.
    let instance =
        unsafe { entry.create_instance(&info, None) }.unwrap_or_else(fail("vkCreateInstance"));
    // SAFETY: a live instance.
    let pds = unsafe { instance.enumerate_physical_devices() }
        .unwrap_or_else(fail("vkEnumeratePhysicalDevices"));
    assert_eq!(pds.len(), 1, "the software device");
    (instance, pds[0])
}

/// `deviceLUID`, which must be valid on Windows.
fn luid(instance: &ash::Instance, pd: vk::PhysicalDevice) -> [u8; vk::LUID_SIZE] {
    let mut id = vk::PhysicalDeviceIDProperties::default();
    let mut props = vk::PhysicalDeviceProperties2::default().push_next(&mut id);
    // SAFETY: a live physical device and a valid chain.
    unsafe { instance.get_physical_device_properties2(pd, &mut props) };
    assert_eq!(id.device_luid_valid, vk::TRUE, "deviceLUIDValid on Windows");
    assert_eq!(id.device_node_mask, 1);
    assert_ne!(id.device_luid, [0; vk::LUID_SIZE]);
    id.device_luid
}

fn child() {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [inherited, duplicated, token, name] = fields[..] else {
        panic!("bad request {line:?}");
    };
    let number = |text: &str| {
        usize::from_str_radix(text, 16).unwrap_or_else(|e| panic!("{text}: {e}")) as HANDLE
    };
    let entry = entry();
    let (instance, pd) = instance(&entry);
    let gpu = Gpu::new(&instance, pd);
    let name = wide(name);
    let imports = [
        gpu.import(Types::OPAQUE_WIN32, number(inherited), None),
        gpu.import(Types::OPAQUE_WIN32, number(duplicated), None),
        gpu.import(Types::OPAQUE_WIN32, core::ptr::null_mut(), Some(&name)),
        gpu.import(Types::OPAQUE_WIN32_KMT, number(token), None),
    ];
    for (i, memory) in (0u32..).zip(imports) {
        let memory = memory.unwrap_or_else(fail("child import"));
        assert_eq!(
            gpu.words(memory, 0, 4),
            [0x5eed_0001; 4],
            "import {i} sees the parent's bytes"
        );
        gpu.fill(memory, 4096 * (u64::from(i) + 1), 4096, 0xc41d_0000 + i);
        gpu.free(memory);
    }
    // SAFETY: the child's copy of the duplicated handle is its own to close.
    assert_ne!(unsafe { CloseHandle(number(duplicated)) }, 0);
    drop(gpu);
    let luid = luid(&instance, pd);
    // SAFETY: nothing of the instance is left.
    unsafe { instance.destroy_instance(None) };
    println!("child ok luid={luid:?}");
}

#[test]
fn memory_is_shared_between_processes_by_nt_handle_name_and_kmt_token() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let entry = entry();
    let (instance, pd) = instance(&entry);
    // SAFETY: a live physical device, a valid query.
    let exts = unsafe { instance.enumerate_device_extension_properties(pd) }
        .unwrap_or_else(fail("extensions"));
    let has = |name: &std::ffi::CStr| exts.iter().any(|e| e.extension_name_as_c_str() == Ok(name));
    assert!(has(vk::KHR_EXTERNAL_MEMORY_WIN32_NAME) && has(vk::NV_EXTERNAL_MEMORY_WIN32_NAME));
    assert!(!has(vk::KHR_EXTERNAL_MEMORY_FD_NAME) && !has(vk::EXT_EXTERNAL_MEMORY_DMA_BUF_NAME));
    let nv = ash::nv::external_memory_capabilities::Instance::new(&entry, &instance);
    let mut nv_props = vk::ExternalImageFormatPropertiesNV::default();
    // SAFETY: a live physical device, a supported format, a valid output structure.
    let answer = unsafe {
        (nv.fp()
            .get_physical_device_external_image_format_properties_nv)(
            pd,
            vk::Format::R8G8B8A8_UNORM,
            vk::ImageType::TYPE_2D,
            vk::ImageTiling::LINEAR,
            vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST,
            vk::ImageCreateFlags::empty(),
            Nv::OPAQUE_WIN32,
            &mut nv_props,
        )
    };
    assert_eq!(answer, vk::Result::SUCCESS, "NV image format properties");
    assert_eq!(
        nv_props.compatible_handle_types,
        Nv::OPAQUE_WIN32 | Nv::OPAQUE_WIN32_KMT
    );

    let luid = luid(&instance, pd);
    let gpu = Gpu::new(&instance, pd);
    let name = wide(&format!("Local\\extmem-win32-test-{}", std::process::id()));
    let attributes = windows_sys::Win32::Security::SECURITY_ATTRIBUTES {
        nLength: u32::try_from(core::mem::size_of::<
            windows_sys::Win32::Security::SECURITY_ATTRIBUTES,
        >())
        .unwrap_or(u32::MAX),
        lpSecurityDescriptor: core::ptr::null_mut(),
        bInheritHandle: 1,
    };
    let mut export = vk::ExportMemoryAllocateInfo::default().handle_types(Types::OPAQUE_WIN32);
    let mut named = vk::ExportMemoryWin32HandleInfoKHR::default().name(name.as_ptr());
    named.p_attributes = (&raw const attributes).cast();
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(SIZE)
        .push_next(&mut export)
        .push_next(&mut named);
    let shared = gpu
        .allocate(&info)
        .unwrap_or_else(fail("NT-exportable memory"));
    // A second object cannot take the same name.
    assert_eq!(
        gpu.allocate(&info),
        Err(vk::Result::ERROR_INVALID_EXTERNAL_HANDLE)
    );
    let mut kmt_export =
        vk::ExportMemoryAllocateInfo::default().handle_types(Types::OPAQUE_WIN32_KMT);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(SIZE)
        .push_next(&mut kmt_export);
    let global = gpu
        .allocate(&info)
        .unwrap_or_else(fail("KMT-exportable memory"));
    for memory in [shared, global] {
        gpu.fill(memory, 0, SIZE, 0x5eed_0001);
    }

    let get = |memory, handle_type| {
        let info = vk::MemoryGetWin32HandleInfoKHR::default()
            .memory(memory)
            .handle_type(handle_type);
        // SAFETY: a live device and memory.
        unsafe { gpu.win32.get_memory_win32_handle(&info) }
    };
    let nt = get(shared, Types::OPAQUE_WIN32).unwrap_or_else(fail("NT export")) as HANDLE;
    assert_eq!(
        get(shared, Types::OPAQUE_WIN32).err(),
        Some(vk::Result::ERROR_VALIDATION_FAILED_EXT),
        "a second NT handle of one memory (VUID 00663)"
    );
    assert_eq!(
        get(shared, Types::OPAQUE_WIN32_KMT).err(),
        Some(vk::Result::ERROR_VALIDATION_FAILED_EXT),
        "a type the memory was not exported with (VUID 00662)"
    );
    let token = get(global, Types::OPAQUE_WIN32_KMT).unwrap_or_else(fail("KMT export"));
    assert_eq!(
        get(global, Types::OPAQUE_WIN32_KMT),
        Ok(token),
        "a stable token"
    );
    let token = token as HANDLE;

    // The child: the NT handle is inheritable (bInheritHandle), std starts children with
    // handle inheritance on; the duplicate is made for it once it exists.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "memory_is_shared_between_processes_by_nt_handle_name_and_kmt_token",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut duplicated: HANDLE = core::ptr::null_mut();
    // SAFETY: our own NT handle duplicated into a live child process.
    let ok = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            nt,
            child.as_raw_handle() as HANDLE,
            &mut duplicated,
            0,
            0,
            DUPLICATE_SAME_ACCESS,
        )
    };
    assert_ne!(ok, 0, "DuplicateHandle into the child");
    let name_text = String::from_utf16_lossy(&name[..name.len() - 1]);
    let request = format!(
        "{:x} {:x} {:x} {name_text}\n",
        nt as usize, duplicated as usize, token as usize
    );
    child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(request.as_bytes()))
        .unwrap_or_else(|| panic!("child stdin"))
        .unwrap_or_else(|e| panic!("{e}"));
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("child ok luid={luid:?}")),
        "child (the same deviceLUID in both processes): {:?}\n{stdout}",
        output.status
    );
    // What the child's copy engine wrote through each import, this process reads.
    for (i, memory) in (0u32..).zip([shared, shared, shared, global]) {
        let offset = 4096 * (u64::from(i) + 1);
        assert_eq!(
            gpu.words(memory, offset, 4),
            [0xc41d_0000 + i; 4],
            "child's write through import {i}"
        );
    }

    // Importing never takes the application's handle; the application closes it.
    let again = gpu
        .import(Types::OPAQUE_WIN32, nt, None)
        .unwrap_or_else(fail("re-import"));
    gpu.free(again);
    // SAFETY: the NT handle is ours (vkGetMemoryWin32HandleKHR gave it to us).
    let closed = unsafe { CloseHandle(nt) };
    assert_ne!(closed, 0, "the application closes its NT handle");

    // Refusals, each with its error.
    let bogus = 0x1234_5678 as HANDLE;
    assert_eq!(
        gpu.import(Types::OPAQUE_WIN32, bogus, None),
        Err(vk::Result::ERROR_INVALID_EXTERNAL_HANDLE),
        "not a handle"
    );
    assert_eq!(
        gpu.import(Types::OPAQUE_WIN32, bogus, Some(&name)),
        Err(vk::Result::ERROR_INVALID_EXTERNAL_HANDLE),
        "a handle and a name (VUID 01441)"
    );
    let unknown = wide("Local\\extmem-no-such-memory");
    assert_eq!(
        gpu.import(Types::OPAQUE_WIN32, core::ptr::null_mut(), Some(&unknown)),
        Err(vk::Result::ERROR_INVALID_EXTERNAL_HANDLE),
        "an unknown name"
    );
    let mut props = vk::MemoryWin32HandlePropertiesKHR::default();
    // SAFETY: a live device; the handle is only looked at.
    let answer = unsafe {
        gpu.win32.get_memory_win32_handle_properties(
            Types::OPAQUE_WIN32,
            bogus as isize,
            &mut props,
        )
    };
    assert_eq!(
        answer,
        Err(vk::Result::ERROR_INVALID_EXTERNAL_HANDLE),
        "VUID 00666"
    );

    // NV: an NT handle of NV-exported memory imports into a second device.
    let mut nv_export = vk::ExportMemoryAllocateInfoNV::default().handle_types(Nv::OPAQUE_WIN32);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(SIZE)
        .push_next(&mut nv_export);
    let nv_memory = gpu
        .allocate(&info)
        .unwrap_or_else(fail("NV-exportable memory"));
    gpu.fill(nv_memory, 0, SIZE, 0x0000_0a11);
    let nv_handle = gpu
        .nv_handle(nv_memory, Nv::OPAQUE_WIN32)
        .unwrap_or_else(fail("vkGetMemoryWin32HandleNV"));
    assert_eq!(
        gpu.nv_handle(nv_memory, Nv::OPAQUE_WIN32_KMT).err(),
        Some(vk::Result::ERROR_VALIDATION_FAILED_EXT),
        "KMT was not exported (VUID 01326)"
    );
    // An image for NV sharing: linear, created with the NV handle type, bound to the
    // NV-exported memory, moved to GENERAL (the layout for sharing outside Vulkan) and
    // written by a buffer -> image copy; an image -> buffer copy reads it back, and the
    // second device below sees the texels in the shared memory at the image's row pitch.
    let mut nv_image =
        vk::ExternalMemoryImageCreateInfoNV::default().handle_types(Nv::OPAQUE_WIN32);
    let image_info = common::linear_image_info(IMAGE_WIDTH, IMAGE_HEIGHT).push_next(&mut nv_image);
    let texels: Vec<u32> = (0..IMAGE_WIDTH * IMAGE_HEIGHT)
        .map(|i| 0x7e00_0000 | i)
        .collect();
    let staging = gpu
        .allocate(&vk::MemoryAllocateInfo::default().allocation_size(SIZE))
        .unwrap_or_else(fail("staging memory"));
    let readback = gpu
        .allocate(&vk::MemoryAllocateInfo::default().allocation_size(SIZE))
        .unwrap_or_else(fail("readback memory"));
    gpu.write_words(staging, &texels);
    let (staging_buf, readback_buf) = (gpu.buffer(staging), gpu.buffer(readback));
    // SAFETY: a live device, a valid create info; the image is bound, used and destroyed
    // here, after the copies finished (run waits).
    let row_pitch = unsafe {
        let image = gpu
            .device
            .create_image(&image_info, None)
            .unwrap_or_else(fail("NV-shared linear image"));
        let needs = gpu.device.get_image_memory_requirements(image);
        assert!(needs.size <= SIZE, "{needs:?}");
        gpu.device
            .bind_image_memory(image, nv_memory, 0)
            .unwrap_or_else(fail("vkBindImageMemory"));
        let layout = gpu.device.get_image_subresource_layout(
            image,
            vk::ImageSubresource {
                aspect_mask: vk::ImageAspectFlags::COLOR,
                mip_level: 0,
                array_layer: 0,
            },
        );
        let region = common::whole_image(IMAGE_WIDTH, IMAGE_HEIGHT);
        gpu.run(|device, cb| {
            common::to_general(device, cb, image);
            device.cmd_copy_buffer_to_image(
                cb,
                staging_buf,
                image,
                vk::ImageLayout::GENERAL,
                &[region],
            );
            device.cmd_copy_image_to_buffer(
                cb,
                image,
                vk::ImageLayout::GENERAL,
                readback_buf,
                &[region],
            );
        });
        gpu.device.destroy_image(image, None);
        layout.row_pitch
    };
    assert_eq!(
        gpu.words(readback, 0, texels.len()),
        texels,
        "buffer -> NV-shared image -> buffer"
    );
    // SAFETY: the copies finished.
    unsafe {
        gpu.device.destroy_buffer(staging_buf, None);
        gpu.device.destroy_buffer(readback_buf, None);
    }
    gpu.free(staging);
    gpu.free(readback);
    let other = Gpu::new(&instance, pd);
    let mut nv_import = vk::ImportMemoryWin32HandleInfoNV::default()
        .handle_type(Nv::OPAQUE_WIN32)
        .handle(nv_handle as isize);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(SIZE)
        .push_next(&mut nv_import);
    let nv_imported = other.allocate(&info).unwrap_or_else(fail("NV import"));
    let width = IMAGE_WIDTH as usize;
    for row in 0..IMAGE_HEIGHT as usize {
        assert_eq!(
            other.words(nv_imported, row as u64 * row_pitch, width),
            texels[row * width..][..width],
            "row {row} of the image, seen by the other device at row pitch {row_pitch}"
        );
    }
    // Past the image, the memory keeps the fill from before.
    assert_eq!(other.words(nv_imported, SIZE - 16, 4), [0x0000_0a11; 4]);
    other.free(nv_imported);
    // SAFETY: the NV NT handle is the application's as well.
    assert_ne!(unsafe { CloseHandle(nv_handle) }, 0);
    gpu.free(nv_memory);
    drop(other);

    // A KMT token lives as long as its memory.
    gpu.free(shared);
    let imported = gpu
        .import(Types::OPAQUE_WIN32_KMT, token, None)
        .unwrap_or_else(fail("KMT import while the memory lives"));
    gpu.free(imported);
    gpu.free(global);
    assert_eq!(
        gpu.import(Types::OPAQUE_WIN32_KMT, token, None),
        Err(vk::Result::ERROR_INVALID_EXTERNAL_HANDLE),
        "a KMT token after its memory was freed"
    );
    drop(gpu);
    // SAFETY: nothing of the instance is left.
    unsafe { instance.destroy_instance(None) };
}
