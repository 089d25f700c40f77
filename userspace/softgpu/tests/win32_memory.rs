//! `extmem`'s memory manager on the software device under Wine: `VK_KHR_external_memory_win32`
//! from `VkMemoryAllocateInfo` chains to section objects and back, the Vulkan rules of
//! `userspace/core/src/memory/win32.rs` against the real backend rather than its fake.
#![cfg(windows)]

use ash::vk;
use extmem::alloc_info::{parse, AllocRequest, DeviceLimits, Import};
use extmem::backend::errno;
use extmem::memory::{DeviceMemory, MemoryManager};
use extmem::va_allocator::VaAllocator;
use extmem::{Error, HandleError, Vuid};
use extmem_hw::GpuVa;
use extmem_softgpu::SoftGpu;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::Threading::GetCurrentProcessId;

type Types = vk::ExternalMemoryHandleTypeFlags;

const SIZE: u64 = 8192;

fn manager() -> MemoryManager<SoftGpu> {
    let limits = DeviceLimits {
        caps: extmem_softgpu::CAPS,
        memory_type_count: 1,
        min_import_alignment: extmem_hw::Alignment::SIZE_4K,
        host_pointer_types: 0,
    };
    let va = VaAllocator::new(
        GpuVa::new(2 << 20),
        GpuVa::new(1 << 40),
        extmem_hw::profile::VGPU.page_sizes,
    );
    let gpu = SoftGpu::new().unwrap_or_else(|e| panic!("{e}"));
    MemoryManager::new(gpu, limits, va, 0)
}

fn ok<T>(result: Result<T, Error>) -> T {
    result.unwrap_or_else(|e| panic!("{e:?}"))
}

/// `text` as a NUL-terminated wide string.
fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain([0]).collect()
}

/// Memory exporting OPAQUE_WIN32 and OPAQUE_WIN32_KMT, named `name`.
fn exported(m: &mut MemoryManager<SoftGpu>, name: &[u16]) -> Result<DeviceMemory, Error> {
    let mut win32 = vk::ExportMemoryWin32HandleInfoKHR::default().name(name.as_ptr());
    let mut export = vk::ExportMemoryAllocateInfo::default()
        .handle_types(Types::OPAQUE_WIN32 | Types::OPAQUE_WIN32_KMT);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(SIZE)
        .push_next(&mut export)
        .push_next(&mut win32);
    // SAFETY: a chain of live structures built above; `name` is NUL-terminated.
    let req = unsafe { parse(&info) }?;
    m.allocate(&req)
}

fn import(
    m: &mut MemoryManager<SoftGpu>,
    handle_type: Types,
    handle: isize,
    name: Option<&[u16]>,
) -> Result<DeviceMemory, Error> {
    let req = AllocRequest {
        size: SIZE,
        import: Import::Win32 {
            handle_type,
            handle,
            name: name.map_or(core::ptr::null(), <[u16]>::as_ptr),
        },
        ..AllocRequest::default()
    };
    m.allocate(&req)
}

/// Writes `data` at the start of the memory (if given) and reads `len` bytes back.
fn cpu(
    m: &mut MemoryManager<SoftGpu>,
    memory: &mut DeviceMemory,
    data: Option<&[u8]>,
    len: usize,
) -> Vec<u8> {
    let ptr = ok(m.map(memory));
    let addr = usize::try_from(ptr.get()).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: vkMapMemory's mapping of SIZE bytes, live until the memory is freed.
    unsafe {
        if let Some(data) = data {
            core::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len());
        }
        std::slice::from_raw_parts(addr as *const u8, len).to_vec()
    }
}

#[test]
fn win32_memory_round_trips_through_two_memory_managers() {
    // SAFETY: no arguments.
    let pid = unsafe { GetCurrentProcessId() };
    let name = wide(&format!("Local\\extmem-softgpu-manager-test-{pid}"));
    let mut a = manager();
    let mut b = manager();
    let mut memory = ok(exported(&mut a, &name));
    cpu(&mut a, &mut memory, Some(b"from manager a"), 0);
    // The name is taken now.
    assert!(matches!(
        exported(&mut b, &name),
        Err(Error::InvalidHandle(HandleError::Win32Refused {
            errno: errno::EEXIST,
            ..
        }))
    ));

    let nt = ok(a.get_win32_handle(&mut memory, Types::OPAQUE_WIN32));
    assert_eq!(
        a.get_win32_handle(&mut memory, Types::OPAQUE_WIN32),
        Err(Vuid::GetWin32Once.into())
    );
    let token = ok(a.get_win32_handle(&mut memory, Types::OPAQUE_WIN32_KMT));
    assert_eq!(
        ok(a.get_win32_handle(&mut memory, Types::OPAQUE_WIN32_KMT)),
        token
    );

    let mut by_handle = ok(import(&mut b, Types::OPAQUE_WIN32, nt, None));
    assert_eq!(cpu(&mut b, &mut by_handle, None, 14), b"from manager a");
    let mut by_name = ok(import(&mut b, Types::OPAQUE_WIN32, 0, Some(&name)));
    let mut by_token = ok(import(&mut b, Types::OPAQUE_WIN32_KMT, token, None));
    assert_eq!(by_name.handle(), by_handle.handle(), "one object in b");
    assert_eq!(by_token.handle(), by_handle.handle(), "one object in b");
    cpu(&mut b, &mut by_token, Some(b"from manager b"), 0);
    assert_eq!(cpu(&mut a, &mut memory, None, 14), b"from manager b");
    assert_eq!(cpu(&mut b, &mut by_name, None, 14), b"from manager b");
    // SAFETY: vkGetMemoryWin32HandleKHR's NT handle is the application's to close.
    let closed = unsafe { CloseHandle(nt as HANDLE) };
    assert_ne!(closed, 0, "the imports left the application's handle open");

    b.free(by_name);
    b.free(by_token);
    a.free(memory);
    // The token ended with the exporting memory; b's import still holds the section.
    assert!(matches!(
        import(&mut b, Types::OPAQUE_WIN32_KMT, token, None),
        Err(Error::InvalidHandle(HandleError::Win32Refused {
            errno: errno::ENOENT,
            ..
        }))
    ));
    assert_eq!(cpu(&mut b, &mut by_handle, None, 14), b"from manager b");
    b.free(by_handle);
    assert_eq!(b.live_handles(), 0);
    assert_eq!(a.live_handles(), 0);
}
