//! The Vulkan front end's cost per call: each entry point through the Khronos loader and
//! extmem's ICD on the extmem-vgpu node, against the ioctls that call makes, issued directly
//! on a second file of the same node, timed by [`per_call`].
//!
//! - `vkGetMemoryHostPointerPropertiesEXT` of a mapped page vs `GEM_USERPTR` with
//!   `USERPTR_PROBE` of that page (the check the ICD asks the kernel for).
//! - `vkAllocateMemory` importing a host range + `vkFreeMemory` vs `GEM_USERPTR` + `VM_BIND`
//!   + unbind + `GEM_CLOSE` of the same range, at several sizes.
//! - `vkGetMemoryFdKHR` (OPAQUE_FD) + `close` vs `PRIME_HANDLE_TO_FD` + `close`.

use std::ffi::c_void;

use ash::vk;
use extmem_guest_tests::host_memory::RawBytes;
use extmem_guest_tests::vgpu::Vgpu;
use extmem_guest_tests::vulkan::{self, Gpu, Instance};
use extmem_uapi::USERPTR_PROBE;

use super::{gem, per_call, prefaulted, Row, KIB, MIB};

/// Where the reference binds (the ICD's VM is another file's, so any free VA works).
const REF_VA: u64 = 1 << 35;

const HOST: vk::ExternalMemoryHandleTypeFlags =
    vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;
const OPAQUE_FD: vk::ExternalMemoryHandleTypeFlags = vk::ExternalMemoryHandleTypeFlags::OPAQUE_FD;

/// The front-end rows; `raw` is the reference's file of the node.
pub fn rows(raw: &Vgpu) -> Result<Vec<Row>, String> {
    vulkan::isolate_loader().map_err(|e| format!("the ICD manifest: {e}"))?;
    let entry = vulkan::load()?;
    let instance = Instance::new(&entry, false)?;
    let gpu = Gpu::new(&instance)?;
    let mut rows = vec![host_pointer_properties(&gpu, raw)?];
    for size in [4 * KIB, MIB, 16 * MIB] {
        rows.push(host_import(&gpu, raw, size)?);
    }
    rows.push(export_fd(&gpu, raw)?);
    Ok(rows)
}

fn host_pointer_properties(gpu: &Gpu<'_>, raw: &Vgpu) -> Result<Row, String> {
    let page = prefaulted(4 * KIB).map_err(|e| e.to_string())?;
    let addr = page.addr();
    let (ours, reference) = per_call(
        || match gpu.host_pointer_properties(HOST, page.base().as_ptr() as usize) {
            (vk::Result::SUCCESS, bits) if bits != 0 => Ok(()),
            (result, bits) => Err(format!(
                "vkGetMemoryHostPointerPropertiesEXT: {result}, type bits {bits:#x}"
            )),
        },
        || {
            raw.userptr(addr, 4096, USERPTR_PROBE)
                .map(drop)
                .map_err(|e| format!("GEM_USERPTR probe: {e}"))
        },
    )?;
    Ok(Row {
        case: "vkGetMemoryHostPointerPropertiesEXT",
        size: 4 * KIB,
        ours,
        reference,
        reference_name: "GEM_USERPTR probe",
        note: String::new(),
    })
}

fn host_import(gpu: &Gpu<'_>, raw: &Vgpu, size: usize) -> Result<Row, String> {
    let memory = prefaulted(size).map_err(|e| e.to_string())?;
    let size64 = u64::try_from(size).map_err(|e| e.to_string())?;
    let ptr = memory.base().as_ptr().cast::<c_void>();
    let (result, bits) = gpu.host_pointer_properties(HOST, ptr as usize);
    if result != vk::Result::SUCCESS {
        return Err(format!("vkGetMemoryHostPointerPropertiesEXT: {result}"));
    }
    let type_index = gpu.memory_type(bits, vk::MemoryPropertyFlags::HOST_VISIBLE)?;
    let (ours, reference) = per_call(
        || {
            // SAFETY: the range stays mapped until after the free below.
            let imported = unsafe { gpu.import_host_as(ptr, size64, HOST, type_index) }?;
            gpu.free(imported);
            Ok(())
        },
        || {
            let handle = raw
                .userptr(memory.addr(), size64, 0)
                .map_err(|e| format!("GEM_USERPTR: {e}"))?
                .handle;
            let handle = gem(handle).map_err(|e| e.to_string())?;
            raw.map(handle, REF_VA, 0, size64, 0)
                .map_err(|e| format!("VM_BIND: {e}"))?;
            raw.unmap(REF_VA, size64)
                .map_err(|e| format!("VM_BIND unmap: {e}"))?;
            raw.close(handle).map_err(|e| format!("GEM_CLOSE: {e}"))
        },
    )?;
    Ok(Row {
        case: "vkAllocateMemory host import + free",
        size,
        ours,
        reference,
        reference_name: "USERPTR+BIND+unbind+CLOSE",
        note: String::new(),
    })
}

fn export_fd(gpu: &Gpu<'_>, raw: &Vgpu) -> Result<Row, String> {
    let size = MIB;
    let size64 = u64::try_from(size).map_err(|e| e.to_string())?;
    let exportable = gpu.allocate(size64, OPAQUE_FD)?;
    let handle = raw
        .gem_create(size64)
        .map_err(|e| format!("GEM_CREATE: {e}"))?;
    let measured = per_call(
        || gpu.export_fd(exportable, OPAQUE_FD).map(drop),
        || {
            raw.export(handle)
                .map(drop)
                .map_err(|e| format!("PRIME_HANDLE_TO_FD: {e}"))
        },
    );
    gpu.free(exportable);
    raw.close(handle).map_err(|e| format!("GEM_CLOSE: {e}"))?;
    let (ours, reference) = measured?;
    Ok(Row {
        case: "vkGetMemoryFdKHR + close",
        size,
        ours,
        reference,
        reference_name: "PRIME_HANDLE_TO_FD+close",
        note: String::new(),
    })
}
