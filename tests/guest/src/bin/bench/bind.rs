//! `VM_BIND` map + unbind of one imported 4 KiB page, against a `GET_PARAM` (the cost of an
//! ioctl round trip): once in an empty VM, where the map allocates the three table pages
//! below the root and the unbind frees them again, and once next to a binding that keeps
//! those tables alive, so only descriptors change. Timed by [`per_call`].

use extmem_guest_tests::host_memory::RawBytes;
use extmem_guest_tests::vgpu::Vgpu;
use extmem_uapi::Param;

use super::{gem, per_call, prefaulted, Row, KIB};

/// Where the measured page binds; the neighbour sits one page above it.
const VA: u64 = 1 << 37;

/// The bind rows; `gpu` is a file of the extmem-vgpu node with nothing bound near [`VA`].
pub fn rows(gpu: &Vgpu) -> Result<Vec<Row>, String> {
    let pages = prefaulted(8 * KIB).map_err(|e| e.to_string())?;
    let handle = gpu
        .userptr(pages.addr(), 8192, 0)
        .map_err(|e| format!("GEM_USERPTR: {e}"))?
        .handle;
    let handle = gem(handle).map_err(|e| e.to_string())?;
    let bind_unbind = || {
        gpu.map(handle, VA, 0, 4096, 0)
            .map_err(|e| format!("VM_BIND: {e}"))?;
        gpu.unmap(VA, 4096)
            .map_err(|e| format!("VM_BIND unmap: {e}"))
    };
    let get_param = || {
        gpu.get_param(Param::PT_PAGES)
            .map(drop)
            .map_err(|e| format!("GET_PARAM: {e}"))
    };
    let mut rows = Vec::new();
    let (ours, reference) = per_call(bind_unbind, get_param)?;
    rows.push(Row {
        case: "VM_BIND + unbind 4K, empty VM",
        size: 4 * KIB,
        ours,
        reference,
        reference_name: "GET_PARAM (ioctl trip)",
        note: String::new(),
    });
    gpu.map(handle, VA + 4096, 4096, 4096, 0)
        .map_err(|e| format!("VM_BIND neighbour: {e}"))?;
    let measured = per_call(bind_unbind, get_param);
    let unbound = gpu.unmap(VA + 4096, 4096);
    let closed = gpu.close(handle);
    let (ours, reference) = measured?;
    unbound.map_err(|e| format!("VM_BIND unmap neighbour: {e}"))?;
    closed.map_err(|e| format!("GEM_CLOSE: {e}"))?;
    rows.push(Row {
        case: "VM_BIND + unbind 4K, tables kept",
        size: 4 * KIB,
        ours,
        reference,
        reference_name: "GET_PARAM (ioctl trip)",
        note: String::new(),
    });
    Ok(rows)
}
