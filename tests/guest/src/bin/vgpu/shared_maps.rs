//! What imports share: one DMA mapping per pinned page range however many
//! `GEM_USERPTR` objects pin it, and one attachment per dma-buf however many objects import
//! it. Without the sharing, the 8th mapping of a page the device may write trips DMA-API
//! debugging ("exceeded 7 overlapping mappings"), and a second attachment of a udmabuf maps
//! its pages again with CPU syncs ("overlapping mappings aren't supported"); these checks
//! catch a regression on every kernel, not only the debug kernel.

use std::os::fd::AsFd;

use extmem_guest_tests::device_snapshot::{counters, op, snapshot};
use extmem_guest_tests::dri::GemHandle;
use extmem_guest_tests::exporters::Exporter;
use extmem_guest_tests::host_memory::{self, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult};
use extmem_guest_tests::pattern::{self, filled};
use extmem_guest_tests::vgpu::{self, Vgpu};
use extmem_uapi::{ObjectKind, FLAG_READ_ONLY};

use crate::helpers::{
    back_to_start, close, exec, exporter, map, map_fd, read_raw, same_bytes, unmap, userptr_handle,
    write_raw,
};
use crate::{Ktap, SLOT};

/// Results this group writes.
pub(crate) const CHECKS: usize = 2;

/// Writable imports of one buffer: more than the 7 overlapping mappings DMA-API debugging
/// tracks.
const WRITABLE_IMPORTS: usize = 9;
/// 64 KiB: whole CPU pages on 4, 16 and 64 KiB kernels.
const SIZE: u64 = 64 * 1024;
const LEN: usize = 64 * 1024;

fn user_dma_maps() -> CheckResult<u64> {
    io_op("reading the debugfs counters", vgpu::dma_counters()).map(|c| c.user_dma_maps)
}

fn close_all(gpu: &Vgpu, handles: &[GemHandle]) -> CheckResult<()> {
    let mut first = Ok(());
    for handle in handles {
        let closed = close(gpu, *handle);
        if first.is_ok() {
            first = closed;
        }
    }
    first
}

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    const VA: u64 = 14 * SLOT;
    let what = format!("shared mappings: {WRITABLE_IMPORTS} writable GEM_USERPTR imports of one host buffer share 1 DMA mapping, a read-only one shares it too, a GPU FILL through the last writable one lands in the buffer, and closing them all unmaps it");
    ktap.check_after(&what, gpu, |gpu| {
        let start = snapshot(gpu)?;
        let maps_before = user_dma_maps()?;
        let buffer = io_op(
            format!("allocating {LEN} bytes"),
            HeapBuffer::new(LEN, host_memory::cpu_page_len()),
        )?;
        write_raw(&buffer, 0, &pattern::bytes(91, LEN))?;
        let mut handles = Vec::new();
        let result = (|| {
            for _ in 0..WRITABLE_IMPORTS {
                let answer = op("GEM_USERPTR", gpu.userptr(buffer.addr(), SIZE, 0))?;
                handles.push(userptr_handle(answer, ObjectKind::USERPTR)?);
            }
            expect_eq(
                "DMA mappings of user pages (debugfs user_dma_maps)",
                user_dma_maps()?,
                maps_before + 1,
            )?;
            let pages = SIZE / host_memory::cpu_page();
            let now = counters(gpu)?;
            expect_eq(
                "pinned pages (each object keeps its own pin)",
                now.pinned_pages,
                start.counters.pinned_pages + pages * WRITABLE_IMPORTS as u64,
            )?;
            let answer = op(
                "GEM_USERPTR(READ_ONLY)",
                gpu.userptr(buffer.addr(), SIZE, FLAG_READ_ONLY),
            )?;
            handles.push(userptr_handle(answer, ObjectKind::USERPTR)?);
            // Mapped both ways like the writable ones (kmod's EXTMEM_USER_DMA_DIR).
            expect_eq(
                "DMA mappings after a read-only import",
                user_dma_maps()?,
                maps_before + 1,
            )?;
            let last = handles.get(WRITABLE_IMPORTS - 1).copied();
            if let Some(handle) = last {
                map(gpu, handle, VA, SIZE, 0)?;
                exec(gpu, &[vgpu::fill(VA + 0x1000, 0x5a5a_a5a5, 0x2000)])?;
                unmap(gpu, VA, SIZE)?;
            }
            let mut expected = pattern::bytes(91, LEN);
            if let Some(window) = expected.get_mut(0x1000..0x3000) {
                window.copy_from_slice(&filled(0x5a5a_a5a5, 0x2000));
            }
            same_bytes(
                "the fill in the host buffer",
                &expected,
                &read_raw(&buffer, 0, LEN)?,
            )
        })();
        let closed = close_all(gpu, &handles);
        result?;
        closed?;
        expect_eq(
            "DMA mappings after closing every import",
            user_dma_maps()?,
            maps_before,
        )?;
        back_to_start(gpu, start)
    });

    let (udmabuf, name) = exporter(Exporter::Udmabuf);
    let what = format!("shared attachments ({name}): two GEM_USERPTR imports of one range of its mapping and a PRIME import of it hold 1 attachment (counter and debugfs), and closing them detaches it");
    ktap.check_after(&what, gpu, |gpu| {
        let start = snapshot(gpu)?;
        let exported = udmabuf?.export(SIZE)?;
        let view = map_fd(exported.dma_buf.as_fd(), 0, SIZE)?;
        let mut handles = Vec::new();
        let result = (|| {
            for _ in 0..2 {
                let answer = op(
                    "GEM_USERPTR on the dma-buf mapping",
                    gpu.userptr(view.addr(), SIZE, 0),
                )?;
                handles.push(userptr_handle(answer, ObjectKind::FOREIGN)?);
            }
            handles.push(io_op(
                "PRIME import of the dma-buf",
                gpu.import(exported.dma_buf.as_fd()),
            )?);
            // snapshot() also checks the counter against the dma-buf core's own list.
            let now = snapshot(gpu)?;
            expect_eq(
                "attachments",
                now.counters.attachments,
                start.counters.attachments + 1,
            )?;
            expect_eq(
                "objects",
                now.counters.live_objects,
                start.counters.live_objects + 3,
            )
        })();
        let closed = close_all(gpu, &handles);
        result?;
        closed?;
        // The udmabuf pins its memfd's pages until it is gone.
        drop(view);
        drop(exported);
        back_to_start(gpu, start)
    });
}
