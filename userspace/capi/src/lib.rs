//! libextmem: extmem's memory manager for C drivers (`include/extmem.h`).
//!
//! A Mesa-style Vulkan driver hands its `vkAllocateMemory`, `vkGetMemoryFdKHR`,
//! `vkGetMemoryFdPropertiesKHR`, `vkGetMemoryHostPointerPropertiesEXT` and `vkMapMemory`
//! arguments to these functions as they came from the application, and gets back the
//! `VkResult` the specification asks for, with the VUID of a broken rule and the errno of
//! a refusing kernel from `extmem_last_error`. The driver keeps its own ioctls: it
//! describes its kernel as a table of callbacks ([`ExtmemBackend`]).
//!
//! Each `extern "C"` function is a thin wrapper: it checks its handles and pointers, runs
//! the plain Rust call inside `catch_unwind` (no panic crosses into C), and records the
//! outcome for `extmem_last_error`.
//!
//! Ownership, as the header states it at each function:
//! - a successful fd import takes the fd (libextmem closes it); a failed one leaves it
//!   with the caller;
//! - every exported fd is new, close-on-exec, and the caller's to close;
//! - a host-pointer import does not take the memory: the caller frees it only after
//!   `extmem_free_memory` of every memory imported from it;
//! - the backend table is copied; its `user` pointer must outlive the device.

use core::ffi::{c_char, c_int, c_void};
use core::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};

use ash::vk;
use extmem::alloc_info::{self, DeviceLimits};
use extmem::device_params::{DeviceParams, RawParams};
use extmem::handle_types::{DeviceCaps, Platform};
use extmem::memory::{DeviceMemory, MemoryManager};
use extmem::va_allocator::VaAllocator;
use extmem::Vuid;
use extmem_hw::{GpuVa, HostVa};
use rustix::fd::{BorrowedFd, IntoRawFd};

mod c_backend;
mod capi_error;
mod handle_table;
mod host_range;
mod memory_stats;

pub use c_backend::{
    ExtmemBackend, EXTMEM_BACKEND_VERSION, EXTMEM_CAPS_ALL, EXTMEM_CAP_DMA_BUF,
    EXTMEM_CAP_HOST_ALLOCATION, EXTMEM_CAP_HOST_MAPPED_FOREIGN, EXTMEM_CAP_OPAQUE_FD,
    EXTMEM_ORIGIN_IMPORTED, EXTMEM_ORIGIN_NATIVE, EXTMEM_ORIGIN_USERPTR,
};
pub use capi_error::{BackendTableError, CapiError, ExtmemError, HandleKind, PointerFault};
pub use handle_table::HandleLookupError;
pub use host_range::extmem_host_range_importable;
pub use memory_stats::{MemoryStats, STATS_VARIABLE};

use c_backend::CBackend;
use handle_table::HandleTable;

/// A device: one backend and the memory allocated on it. 0 is the null handle; a handle
/// is checked on every call, so a destroyed or made-up one is an error, not a crash.
pub type ExtmemDevice = u64;

/// A `VkDeviceMemory` of one device. 0 is the null handle; checked like a device handle,
/// and memory of another device is refused.
pub type ExtmemMemory = u64;

/// The GPU VA libextmem hands out starts at 2 MiB, so 0 and small values never name
/// memory (as in extmem's ICD).
const VA_START: u64 = 2 << 20;

/// The most memory types Vulkan has (`VK_MAX_MEMORY_TYPES`).
const MAX_MEMORY_TYPES: u32 = 32;

struct Device {
    manager: MemoryManager<CBackend>,
    memories: HandleTable<DeviceMemory>,
    stats: MemoryStats,
}

static DEVICES: Mutex<HandleTable<Arc<Mutex<Device>>>> = Mutex::new(HandleTable::new());

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, CapiError> {
    mutex.lock().map_err(|_| CapiError::Poisoned)
}

/// Runs one call: stops a panic at the boundary, records the outcome for
/// `extmem_last_error`, and returns its `VkResult`.
fn entry(call: impl FnOnce() -> Result<(), CapiError>) -> vk::Result {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(call)).unwrap_or(Err(CapiError::Panic));
    let error = outcome.err();
    capi_error::record(error);
    error.map_or(vk::Result::SUCCESS, CapiError::result)
}

/// Writes `value` through the caller's out-pointer.
///
/// # Safety
/// A non-null, aligned `out` must point to writable memory of a `T` (the caller's promise
/// in the header); null and misaligned pointers are refused here.
unsafe fn write_out<T>(out: *mut T, argument: &'static str, value: T) -> Result<(), CapiError> {
    check_out(out, argument)?;
    // SAFETY: checked non-null and aligned; writable per the caller's promise.
    unsafe { out.write(value) };
    Ok(())
}

fn check_out<T>(out: *mut T, argument: &'static str) -> Result<(), CapiError> {
    let fault = if out.is_null() {
        PointerFault::Null
    } else if !out.is_aligned() {
        PointerFault::Misaligned
    } else {
        return Ok(());
    };
    Err(CapiError::Pointer { argument, fault })
}

fn with_device<R>(
    device: ExtmemDevice,
    call: impl FnOnce(&mut Device) -> Result<R, CapiError>,
) -> Result<R, CapiError> {
    let shared = lock(&DEVICES)?
        .get(device)
        .map_err(|lookup| CapiError::Handle {
            kind: HandleKind::Device,
            lookup,
        })?
        .clone();
    let mut guard = lock(&shared)?;
    call(&mut guard)
}

fn memory_lookup(lookup: HandleLookupError) -> CapiError {
    CapiError::Handle {
        kind: HandleKind::Memory,
        lookup,
    }
}

/// Checks a backend table and builds the manager over it.
fn open_device(table: ExtmemBackend) -> Result<Device, BackendTableError> {
    if table.version != EXTMEM_BACKEND_VERSION {
        return Err(BackendTableError::Version { got: table.version });
    }
    let unknown = table.caps & !EXTMEM_CAPS_ALL;
    if unknown != 0 {
        return Err(BackendTableError::UnknownCaps { bits: unknown });
    }
    if table.memory_type_count == 0 || table.memory_type_count > MAX_MEMORY_TYPES {
        return Err(BackendTableError::MemoryTypeCount {
            count: table.memory_type_count,
        });
    }
    let type_mask = 1u32
        .checked_shl(table.memory_type_count)
        .map_or(u32::MAX, |bit| bit - 1);
    for (field, mask) in [
        ("host_pointer_types", table.host_pointer_types),
        ("dma_buf_types", table.dma_buf_types),
    ] {
        if mask & !type_mask != 0 {
            return Err(BackendTableError::TypesOutOfRange { field, mask });
        }
    }
    let has = |cap: u32| table.caps & cap != 0;
    let needs = [
        ("close", table.close.is_some(), "every device"),
        (
            "import_host",
            table.import_host.is_some(),
            "EXTMEM_CAP_HOST_ALLOCATION or EXTMEM_CAP_HOST_MAPPED_FOREIGN",
        )
            .needed_if(has(EXTMEM_CAP_HOST_ALLOCATION) || has(EXTMEM_CAP_HOST_MAPPED_FOREIGN)),
        (
            "import_fd",
            table.import_fd.is_some(),
            "EXTMEM_CAP_OPAQUE_FD or EXTMEM_CAP_DMA_BUF",
        )
            .needed_if(has(EXTMEM_CAP_OPAQUE_FD) || has(EXTMEM_CAP_DMA_BUF)),
        (
            "export_fd",
            table.export_fd.is_some(),
            "EXTMEM_CAP_OPAQUE_FD or EXTMEM_CAP_DMA_BUF",
        )
            .needed_if(has(EXTMEM_CAP_OPAQUE_FD) || has(EXTMEM_CAP_DMA_BUF)),
        ("info", table.info.is_some(), "EXTMEM_CAP_OPAQUE_FD").needed_if(has(EXTMEM_CAP_OPAQUE_FD)),
        ("unbind", table.unbind.is_some(), "bind").needed_if(table.bind.is_some()),
        ("unmap", table.unmap.is_some(), "map").needed_if(table.map.is_some()),
    ];
    if let Some((callback, _, needed_for)) = needs.into_iter().find(|(_, present, _)| !present) {
        return Err(BackendTableError::MissingCallback {
            callback,
            needed_for,
        });
    }
    let params = DeviceParams::from_raw(RawParams {
        min_import_alignment: table.min_import_alignment,
        va_bits: u64::from(table.va_bits),
        page_sizes: table.page_sizes,
        ..RawParams::default()
    })
    .map_err(BackendTableError::Param)?;
    let limits = DeviceLimits {
        caps: DeviceCaps {
            platform: Platform::Linux,
            opaque_fd: has(EXTMEM_CAP_OPAQUE_FD),
            dma_buf: has(EXTMEM_CAP_DMA_BUF),
            host_allocation: has(EXTMEM_CAP_HOST_ALLOCATION),
            host_mapped_foreign: has(EXTMEM_CAP_HOST_MAPPED_FOREIGN),
            win32: false,
        },
        memory_type_count: table.memory_type_count,
        min_import_alignment: params.min_import_alignment,
        host_pointer_types: table.host_pointer_types,
    };
    // va_bits is 32..=48 after the check above, so the shift cannot overflow.
    let va_end = 1u64 << params.va_bits;
    let va = VaAllocator::new(GpuVa::new(VA_START), GpuVa::new(va_end), params.page_sizes);
    let manager = MemoryManager::new(CBackend::new(table), limits, va, table.dma_buf_types);
    Ok(Device {
        manager,
        memories: HandleTable::new(),
        stats: MemoryStats::default(),
    })
}

/// A callback requirement that only applies under a condition.
trait NeededIf {
    fn needed_if(self, condition: bool) -> Self;
}

impl NeededIf for (&'static str, bool, &'static str) {
    fn needed_if(self, condition: bool) -> Self {
        (self.0, self.1 || !condition, self.2)
    }
}

/// Creates a device over the driver's backend and stores its handle in `*device`.
///
/// The table is checked (version, capabilities against callbacks, memory-type masks,
/// `min_import_alignment`, `va_bits`, `page_sizes`; `VK_ERROR_INITIALIZATION_FAILED` names
/// what is wrong) and copied: the caller may free it when this returns. `backend->user`
/// is not copied and must stay valid until `extmem_device_destroy` returns.
///
/// # Safety
/// `backend` is NULL or points to an `extmem_backend`; `device` is NULL or points to
/// writable memory.
#[no_mangle]
pub unsafe extern "C" fn extmem_device_create(
    backend: *const ExtmemBackend,
    device: *mut ExtmemDevice,
) -> vk::Result {
    entry(|| {
        check_out(device, "device")?;
        if backend.is_null() {
            return Err(CapiError::Pointer {
                argument: "backend",
                fault: PointerFault::Null,
            });
        }
        if !backend.is_aligned() {
            return Err(CapiError::Pointer {
                argument: "backend",
                fault: PointerFault::Misaligned,
            });
        }
        // SAFETY: non-null and aligned, and an extmem_backend per the caller's promise;
        // copied, not kept.
        let table = unsafe { backend.read() };
        let opened = open_device(table).map_err(CapiError::BackendTable)?;
        let handle = lock(&DEVICES)?
            .insert(Arc::new(Mutex::new(opened)))
            .map_err(|_| CapiError::TooManyHandles)?;
        // SAFETY: checked above; writable per the caller's promise.
        unsafe { write_out(device, "device", handle) }
    })
}

/// Destroys the device: frees every memory still allocated on it (unbinding, unmapping
/// and closing each object through the callbacks) and makes its handle and its memories'
/// handles stale. After it returns no callback is called with this device's `user`.
///
/// With `EXTMEM_STATS` set (not empty, not `0`) in the environment, it first prints one
/// line on stderr counting the device's host imports, fd imports, allocations and fd
/// exports: evidence, for an application test, that memory went through libextmem.
///
/// # Safety
/// None beyond the handle, which is checked.
#[no_mangle]
pub unsafe extern "C" fn extmem_device_destroy(device: ExtmemDevice) -> vk::Result {
    entry(|| {
        let shared = lock(&DEVICES)?
            .remove(device)
            .map_err(|lookup| CapiError::Handle {
                kind: HandleKind::Device,
                lookup,
            })?;
        let mut guard = lock(&shared)?;
        let Device {
            manager,
            memories,
            stats,
        } = &mut *guard;
        stats.report(device);
        for memory in memories.drain() {
            manager.free(memory);
        }
        Ok(())
    })
}

/// `vkAllocateMemory`: checks `info` and its pNext chain against every Valid Usage rule
/// (a broken one returns its `VkResult`, and `extmem_last_error` names the VUID), then
/// creates or imports the memory through the backend, binds it at a new GPU VA if the
/// backend has `bind`, and stores the handle in `*memory`.
///
/// Ownership: with `VkImportMemoryFdInfoKHR`, success takes the fd (libextmem closes it,
/// after the backend's `import_fd` has returned); failure leaves it the caller's. With
/// `VkImportMemoryHostPointerInfoEXT`, the memory stays the caller's and must not be
/// freed or unmapped before `extmem_free_memory`. `info` is only read during the call.
///
/// # Safety
/// `info` is NULL or a valid `VkMemoryAllocateInfo` whose pNext chain is valid (Vulkan's
/// own rule: each structure laid out as its sType says); `memory` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn extmem_allocate_memory(
    device: ExtmemDevice,
    info: *const vk::MemoryAllocateInfo<'static>,
    memory: *mut ExtmemMemory,
) -> vk::Result {
    entry(|| {
        check_out(memory, "memory")?;
        // SAFETY: the caller's promise; a null pointer becomes None.
        let info = unsafe { info.as_ref() }.ok_or(CapiError::Pointer {
            argument: "info",
            fault: PointerFault::Null,
        })?;
        // SAFETY: the chain is valid per the caller's promise (Vulkan's pNext rule).
        let request = unsafe { alloc_info::parse(info) }?;
        with_device(device, |dev| {
            // Checked before anything is imported, so a full table never strands an fd
            // the import already took.
            if !dev.memories.has_room() {
                return Err(CapiError::TooManyHandles);
            }
            let allocated = dev.manager.allocate(&request)?;
            let counted = dev.stats;
            dev.stats.allocated(&allocated);
            let handle = match dev.memories.insert(allocated) {
                Ok(handle) => handle,
                Err(allocated) => {
                    dev.stats = counted;
                    dev.manager.free(allocated);
                    return Err(CapiError::TooManyHandles);
                }
            };
            // SAFETY: checked above; writable per the caller's promise.
            unsafe { write_out(memory, "memory", handle) }
        })
    })
}

/// `vkFreeMemory`: unmaps, unbinds and releases the memory; its handle is stale from now
/// on. A host allocation it imported may be freed by the caller after this returns.
///
/// # Safety
/// None beyond the handles, which are checked.
#[no_mangle]
pub unsafe extern "C" fn extmem_free_memory(
    device: ExtmemDevice,
    memory: ExtmemMemory,
) -> vk::Result {
    entry(|| {
        with_device(device, |dev| {
            let taken = dev.memories.remove(memory).map_err(memory_lookup)?;
            dev.manager.free(taken);
            Ok(())
        })
    })
}

/// `vkMapMemory`: the CPU address of byte 0 in `*ptr`, readable and writable. A host
/// import gives back the application's own pointer; other memory is mapped once through
/// the backend's `map` and the mapping reused until `extmem_free_memory`, which unmaps it.
/// Memory whose buffer is read-only returns `VK_ERROR_MEMORY_MAP_FAILED` (errno
/// `EACCES`) rather than a pointer whose first write would fault.
///
/// # Safety
/// `ptr` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn extmem_map_memory(
    device: ExtmemDevice,
    memory: ExtmemMemory,
    ptr: *mut *mut c_void,
) -> vk::Result {
    entry(|| {
        check_out(ptr, "ptr")?;
        with_device(device, |dev| {
            let Device {
                manager, memories, ..
            } = dev;
            let mem = memories.get_mut(memory).map_err(memory_lookup)?;
            let address = manager.map(mem)?;
            let address = usize::try_from(address.get()).map_err(|_| {
                CapiError::Memory(extmem::Error::MemoryMapFailed {
                    errno: extmem::backend::errno::EOVERFLOW,
                })
            })?;
            // SAFETY: checked above; writable per the caller's promise.
            unsafe { write_out(ptr, "ptr", address as *mut c_void) }
        })
    })
}

/// The GPU VA the memory is bound at, in `*va`; `VK_ERROR_FEATURE_NOT_PRESENT` (operation
/// `Bind`) on a backend without `bind`.
///
/// # Safety
/// `va` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn extmem_memory_gpu_va(
    device: ExtmemDevice,
    memory: ExtmemMemory,
    va: *mut u64,
) -> vk::Result {
    entry(|| {
        check_out(va, "va")?;
        with_device(device, |dev| {
            let address = dev.memories.get(memory).map_err(memory_lookup)?.gpu_va()?;
            // SAFETY: checked above; writable per the caller's promise.
            unsafe { write_out(va, "va", address.get()) }
        })
    })
}

/// The backend's handle of the object behind the memory (what `create`, `import_host` or
/// `import_fd` stored), in `*handle`: how a driver finds its own record of the memory
/// (the CPU address and allocation a CPU driver binds resources to, say) after
/// `extmem_allocate_memory`. The handle stays the backend's, valid until `close`.
///
/// # Safety
/// `handle` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn extmem_memory_handle(
    device: ExtmemDevice,
    memory: ExtmemMemory,
    handle: *mut u32,
) -> vk::Result {
    entry(|| {
        check_out(handle, "handle")?;
        with_device(device, |dev| {
            let object = dev.memories.get(memory).map_err(memory_lookup)?.handle().0;
            // SAFETY: checked above; writable per the caller's promise.
            unsafe { write_out(handle, "handle", object.get()) }
        })
    })
}

/// `vkGetMemoryFdKHR`: exports the memory as `handle_type` (OPAQUE_FD or DMA_BUF, and one
/// it was allocated with in `VkExportMemoryAllocateInfo`) and stores a new close-on-exec
/// fd in `*fd`, which the caller owns and closes.
///
/// # Safety
/// `fd` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn extmem_get_memory_fd(
    device: ExtmemDevice,
    memory: ExtmemMemory,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
    fd: *mut c_int,
) -> vk::Result {
    entry(|| {
        check_out(fd, "fd")?;
        with_device(device, |dev| {
            let Device {
                manager,
                memories,
                stats,
            } = dev;
            let mem = memories.get(memory).map_err(memory_lookup)?;
            let exported = manager.get_fd(mem, handle_type)?;
            stats.exported();
            // SAFETY: checked above; writable per the caller's promise. The fd is the
            // caller's from here.
            unsafe { write_out(fd, "fd", exported.into_raw_fd()) }
        })
    })
}

/// `vkGetMemoryFdPropertiesKHR`: the memory types (`*memory_type_bits`) a dma-buf `fd`
/// can be imported into, found by importing it through the backend and releasing it.
/// OPAQUE_FD is refused (VUID 00674); an fd that is not an importable dma-buf is
/// `VK_ERROR_INVALID_EXTERNAL_HANDLE` (VUID 00673). The fd stays the caller's.
///
/// # Safety
/// `memory_type_bits` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn extmem_get_memory_fd_properties(
    device: ExtmemDevice,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
    fd: c_int,
    memory_type_bits: *mut u32,
) -> vk::Result {
    entry(|| {
        check_out(memory_type_bits, "memory_type_bits")?;
        with_device(device, |dev| {
            if fd < 0 {
                return Err(extmem::Error::from(Vuid::FdPropsValid).into());
            }
            // SAFETY: the fd is only passed to syscalls and the backend's import, which
            // fail with EBADF if it is not open; it stays the caller's.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let bits = dev.manager.fd_properties(handle_type, borrowed)?;
            // SAFETY: checked above; writable per the caller's promise.
            unsafe { write_out(memory_type_bits, "memory_type_bits", bits) }
        })
    })
}

/// `vkGetMemoryHostPointerPropertiesEXT`: checks, without pinning, that one import unit
/// at `ptr` could be imported (the backend's `import_host` with `probe`), and stores the
/// memory types a host pointer can be imported into in `*memory_type_bits`.
///
/// # Safety
/// `memory_type_bits` is NULL or writable; `ptr` is only passed to the backend.
#[no_mangle]
pub unsafe extern "C" fn extmem_get_memory_host_pointer_properties(
    device: ExtmemDevice,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
    ptr: *const c_void,
    memory_type_bits: *mut u32,
) -> vk::Result {
    entry(|| {
        check_out(memory_type_bits, "memory_type_bits")?;
        with_device(device, |dev| {
            let address = HostVa::new(ptr as usize as u64);
            let bits = dev.manager.host_pointer_properties(handle_type, address)?;
            // SAFETY: checked above; writable per the caller's promise.
            unsafe { write_out(memory_type_bits, "memory_type_bits", bits) }
        })
    })
}

/// What the calling thread's most recent libextmem call returned, with the VUID, backend
/// operation and errno behind a failure (all NULL/0 after a success). The strings are
/// static: never freed, valid for the life of the process.
#[no_mangle]
pub extern "C" fn extmem_last_error() -> ExtmemError {
    ExtmemError::of(capi_error::last())
}

/// Writes a sentence about the calling thread's most recent call (empty after a success)
/// into `buf` as a NUL-terminated string of at most `size` bytes, and returns the
/// sentence's full length without the NUL (as `snprintf` does: a return of `size` or more
/// means it was cut). `buf` may be NULL when `size` is 0.
///
/// # Safety
/// `buf` points to `size` writable bytes (or `size` is 0).
#[no_mangle]
pub unsafe extern "C" fn extmem_last_error_message(buf: *mut c_char, size: usize) -> usize {
    let text = capi_error::last()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let bytes = text.as_bytes();
    if !buf.is_null() && size > 0 {
        let copied = bytes.len().min(size - 1);
        // SAFETY: `buf` has `size` writable bytes (the caller's promise) and we write
        // `copied + 1 <= size` of them; `bytes` is our own string, not overlapping.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), copied);
            buf.add(copied).write(0);
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_stops_at_the_boundary_and_is_reported() {
        let result = entry(|| panic!("a bug inside libextmem"));
        assert_eq!(result, vk::Result::ERROR_UNKNOWN);
        let last = extmem_last_error();
        assert_eq!(last.result, vk::Result::ERROR_UNKNOWN);
        assert!(last.vuid.is_null() && last.operation.is_null());
        assert_eq!(entry(|| Ok(())), vk::Result::SUCCESS);
        assert_eq!(extmem_last_error().result, vk::Result::SUCCESS);
    }

    #[test]
    fn a_vuid_comes_back_as_a_static_c_string() {
        let result = entry(|| Err(extmem::Error::from(Vuid::OneImport).into()));
        assert_eq!(result, vk::Result::ERROR_VALIDATION_FAILED_EXT);
        let vuid = extmem_last_error().vuid;
        assert!(!vuid.is_null());
        // SAFETY: a pointer into the process-lifetime VUID table, NUL-terminated.
        let text = unsafe { core::ffi::CStr::from_ptr(vuid) };
        assert_eq!(text.to_str(), Ok(Vuid::OneImport.id()));
    }
}
