//! dma-buf import on extmem-vgpu against the attachment mapping alone: a udmabuf (sealed
//! memfd pages, so neither importer takes a shortcut for its own buffers) imported with
//! `PRIME_FD_TO_HANDLE` and closed again, alone and with a `VM_BIND` map and unbind in
//! between, against vgem importing the same dma-buf. DRM's PRIME import attaches and maps
//! the dma-buf (`dma_buf_attach` + `dma_buf_map_attachment`) and then asks the driver for an
//! object around the mapped sg-table; vgem's object is a bare shmem wrapper, so its import
//! is the attachment mapping plus DRM's handle bookkeeping: the reference. Timed by
//! [`per_call`].
//!
//! And import + `VM_BIND` against the attachment mapping alone, as the module times it
//! around `dma_buf_attach` + `dma_buf_map_attachment` (`GET_PARAM LAST_ATTACH_NS`) in the
//! same import, at 64 KiB … 64 MiB (udmabuf's default limit).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use extmem_uapi::Param;

use extmem_guest_tests::dri::{self, NodeKind};
use extmem_guest_tests::udmabuf;
use extmem_guest_tests::vgpu::Vgpu;

use super::{median, per_call, Row, KIB, MIB};

/// Where the bound rows bind.
const VA: u64 = 1 << 36;

/// The dma-buf import rows; `gpu` is a file of the extmem-vgpu node.
pub fn rows(gpu: &Vgpu) -> Result<Vec<Row>, String> {
    let vgem = dri::open_by_driver("vgem", NodeKind::Primary).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for size in [64 * KIB, MIB, 16 * MIB] {
        let size64 = u64::try_from(size).map_err(|e| e.to_string())?;
        let (_memfd, dma_buf) =
            udmabuf::over_sealed_memfd("bench", size64).map_err(|e| e.to_string())?;
        let reference = || {
            let handle = vgem
                .import(dma_buf.as_fd())
                .map_err(|e| format!("vgem PRIME_FD_TO_HANDLE: {e}"))?;
            vgem.close_handle(handle)
                .map_err(|e| format!("vgem GEM_CLOSE: {e}"))
        };
        let (ours, vgem_import) = per_call(
            || {
                let handle = gpu
                    .import(dma_buf.as_fd())
                    .map_err(|e| format!("PRIME_FD_TO_HANDLE: {e}"))?;
                gpu.close(handle).map_err(|e| format!("GEM_CLOSE: {e}"))
            },
            reference,
        )?;
        rows.push(Row {
            case: "dma-buf import (udmabuf)",
            size,
            ours,
            reference: vgem_import,
            reference_name: "vgem import (attach+map)",
            note: String::new(),
        });
        let (ours, vgem_import) = per_call(
            || {
                let handle = gpu
                    .import(dma_buf.as_fd())
                    .map_err(|e| format!("PRIME_FD_TO_HANDLE: {e}"))?;
                gpu.map(handle, VA, 0, size64, 0)
                    .map_err(|e| format!("VM_BIND: {e}"))?;
                gpu.unmap(VA, size64)
                    .map_err(|e| format!("VM_BIND unmap: {e}"))?;
                gpu.close(handle).map_err(|e| format!("GEM_CLOSE: {e}"))
            },
            reference,
        )?;
        rows.push(Row {
            case: "dma-buf import + bind + unbind",
            size,
            ours,
            reference: vgem_import,
            reference_name: "vgem import (attach+map)",
            note: String::new(),
        });
    }
    for size in [64 * KIB, MIB, 16 * MIB, 64 * MIB] {
        rows.push(against_attach(gpu, size)?);
    }
    Ok(rows)
}

/// Timed imports per size in [`against_attach`].
const IMPORTS: usize = 15;

/// `PRIME_FD_TO_HANDLE` + `VM_BIND` of a `size`-byte udmabuf, against the module's own
/// time for the attachment mapping of the same import; medians of [`IMPORTS`] calls.
fn against_attach(gpu: &Vgpu, size: usize) -> Result<Row, String> {
    let size64 = u64::try_from(size).map_err(|e| e.to_string())?;
    let (_memfd, dma_buf) =
        udmabuf::over_sealed_memfd("bench", size64).map_err(|e| e.to_string())?;
    let mut ours = Vec::new();
    let mut attach = Vec::new();
    for _ in 0..IMPORTS {
        let started = Instant::now();
        let handle = gpu
            .import(dma_buf.as_fd())
            .map_err(|e| format!("PRIME_FD_TO_HANDLE: {e}"))?;
        gpu.map(handle, VA, 0, size64, 0)
            .map_err(|e| format!("VM_BIND: {e}"))?;
        ours.push(started.elapsed());
        let ns = gpu
            .get_param(Param::LAST_ATTACH_NS)
            .map_err(|e| format!("GET_PARAM LAST_ATTACH_NS: {e}"))?;
        if ns == 0 {
            return Err("LAST_ATTACH_NS is 0 after a dma-buf import".to_string());
        }
        attach.push(Duration::from_nanos(ns));
        gpu.unmap(VA, size64)
            .map_err(|e| format!("VM_BIND unmap: {e}"))?;
        gpu.close(handle).map_err(|e| format!("GEM_CLOSE: {e}"))?;
    }
    Ok(Row {
        case: "dma-buf import + bind",
        size,
        ours: median(ours),
        reference: median(attach),
        reference_name: "attachment mapping alone",
        note: String::new(),
    })
}
