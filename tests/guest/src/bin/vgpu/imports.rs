//! dma-buf imports: buffers from vgem, udmabuf and the system dma-heap imported by
//! `PRIME_FD_TO_HANDLE`, filled by the GPU and copied out of. Where the kernel has no udmabuf
//! or dma-heap (Debian's 6.1), a virtio-gpu dumb buffer stands in, and the check says so
//! (`exporters`).

use std::os::fd::{AsFd, BorrowedFd};

use extmem_guest_tests::device_snapshot::{counters, expect_counters, op, snapshot};
use extmem_guest_tests::dri::{DrmNode, GemHandle};
use extmem_guest_tests::exporters::{Exported, Exporter};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::pattern::{self, filled};
use extmem_guest_tests::vgpu::{self, Vgpu};
use extmem_uapi::{ObjectKind, Param};

use crate::helpers::{
    as_len, back_to_start, bound_gem, exec, expect_info, expect_new_object, exporter, map, map_fd,
    read_map, release, same_bytes, write_map, GemObject,
};
use crate::{Ktap, MIB, SLOT};

/// The size of every buffer imported here.
const SIZE: u64 = 256 * 1024;

/// Imports `dma_buf`, binds it at `va`, FILLs it through the GPU and checks the bytes in the
/// exporter's view; then the CPU writes a pattern through that view and the GPU copies it
/// into `gem` (bound at `gem_va`). The view is `memfd_view` for a udmabuf (its memfd's
/// mapping, coherent with no sync), else a mapping of the dma-buf itself, read and written
/// between `DMA_BUF_IOCTL_SYNC` calls.
fn import_round_trip(
    gpu: &Vgpu,
    dma_buf: BorrowedFd<'_>,
    memfd_view: Option<&SharedMapping>,
    va: u64,
    (gem, gem_va): (&GemObject, u64),
    seed: u64,
) -> CheckResult<GemHandle> {
    let own_view;
    let (reader, reader_sync) = match memfd_view {
        Some(view) => (view, None),
        None => {
            own_view = map_fd(dma_buf, 0, SIZE)?;
            (&own_view, Some(dma_buf))
        }
    };
    let size = SIZE;
    let before = counters(gpu)?;
    let handle = io_op("PRIME_FD_TO_HANDLE", gpu.import(dma_buf))?;
    expect_info(gpu, handle, ObjectKind::DMABUF, size, false)?;
    expect_new_object(gpu, before, (1, 0))?;
    map(gpu, handle, va, size, 0)?;
    let value = 0xc0de_0000 | u32::try_from(seed & 0xffff).unwrap_or(0);
    exec(gpu, &[vgpu::fill(va, value, size)])?;
    same_bytes(
        "the GPU's fill, through the exporter's mapping",
        &filled(value, reader.len()),
        &read_map(reader, reader_sync)?,
    )?;
    let expected = pattern::bytes(seed, reader.len());
    write_map(reader, reader_sync, &expected)?;
    let copy_len = size.min(gem.map.len() as u64);
    exec(gpu, &[vgpu::copy(va, gem_va, copy_len)])?;
    let seen = gem.read(as_len(copy_len)?)?;
    same_bytes(
        "the exporter's bytes, copied by the GPU",
        expected.get(..seen.len()).unwrap_or_default(),
        &seen,
    )?;
    Ok(handle)
}

/// What a check of an import from `exporter` sees: a udmabuf's pages through its memfd's
/// mapping, the others' through the dma-buf's own.
fn fill_and_copy_out(exporter: Option<&Exporter>) -> &'static str {
    match exporter {
        Some(Exporter::Udmabuf) => "a GPU FILL shows in the memfd's mapping, memfd bytes copy out",
        _ => "a GPU FILL shows in its mmap, CPU bytes copy out",
    }
}

/// A new dma-buf from `exporter`, through [`import_round_trip`]; the dma-buf (and memfd)
/// and the handle.
fn import_exported(
    gpu: &Vgpu,
    exporter: Exporter,
    va: u64,
    gem: (&GemObject, u64),
    seed: u64,
) -> CheckResult<(Exported, GemHandle)> {
    let exported = exporter.export(SIZE)?;
    let view = match &exported.memfd {
        Some(memfd) => Some(map_fd(memfd.as_fd(), 0, SIZE)?),
        None => None,
    };
    let handle = import_round_trip(gpu, exported.dma_buf.as_fd(), view.as_ref(), va, gem, seed)?;
    Ok((exported, handle))
}

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>, vgem: Option<&DrmNode>) {
    const VA_GEM: u64 = 2 * SLOT;
    const VA_VGEM: u64 = 2 * SLOT + 16 * MIB;
    const VA_UDMABUF: u64 = 2 * SLOT + 32 * MIB;
    const VA_HEAP: u64 = 2 * SLOT + 48 * MIB;
    let start = gpu.map(snapshot).and_then(Result::ok);
    let gem = bound_gem(ktap, gpu, (VA_GEM, SIZE), "import checks");

    let what = "dma-buf import: a vgem dma-buf imports as DMABUF (1 attachment more); a GPU FILL shows in the dma-buf mmap, CPU bytes copy out";
    let from_vgem = ktap.check_after(
        what,
        gpu.zip(vgem).zip(gem.as_ref()),
        |((gpu, vgem), gem)| {
            let fd = vgem.dumb_dma_buf(SIZE)?;
            let handle = import_round_trip(gpu, fd.as_fd(), None, VA_VGEM, (gem, VA_GEM), 31)?;
            Ok((fd, handle))
        },
    );
    let what = "dma-buf import: importing the same dma-buf again gives the same handle and no new attachment";
    ktap.check_after(what, gpu.zip(from_vgem.as_ref()), |(gpu, (fd, handle))| {
        let before = counters(gpu)?;
        let again = io_op("PRIME_FD_TO_HANDLE again", gpu.import(fd.as_fd()))?;
        expect_eq("handle", again, *handle)?;
        expect_counters(counters(gpu)?, before)
    });
    let (memfd_exporter, name) = exporter(Exporter::Udmabuf);
    let what = format!(
        "dma-buf import: a {name} imports as DMABUF, LAST_ATTACH_NS > 0; {}",
        fill_and_copy_out(memfd_exporter.as_ref().ok())
    );
    let from_udmabuf = ktap.check_after(&what, gpu.zip(gem.as_ref()), |(gpu, gem)| {
        let (exported, handle) =
            import_exported(gpu, memfd_exporter?, VA_UDMABUF, (gem, VA_GEM), 32)?;
        let ns = op(
            "GET_PARAM LAST_ATTACH_NS",
            gpu.get_param(Param::LAST_ATTACH_NS),
        )?;
        if ns == 0 {
            return Err(Failure::new("LAST_ATTACH_NS > 0 after an import", "0"));
        }
        Ok((exported, handle))
    });
    let (heap_exporter, name) = exporter(Exporter::SystemHeap);
    let what = format!(
        "dma-buf import: a {name} imports as DMABUF; {}",
        fill_and_copy_out(heap_exporter.as_ref().ok())
    );
    let from_heap = ktap.check_after(&what, gpu.zip(gem.as_ref()), |(gpu, gem)| {
        import_exported(gpu, heap_exporter?, VA_HEAP, (gem, VA_GEM), 33)
    });
    ktap.check_after(
        "dma-buf import: UNMAP and GEM_CLOSE give every attachment back",
        gpu.zip(start),
        move |(gpu, start)| {
            let bound = [
                from_vgem
                    .as_ref()
                    .map(|(_, handle)| (VA_VGEM, SIZE, *handle)),
                from_udmabuf
                    .as_ref()
                    .map(|(_, handle)| (VA_UDMABUF, SIZE, *handle)),
                from_heap
                    .as_ref()
                    .map(|(_, handle)| (VA_HEAP, SIZE, *handle)),
                gem.as_ref().map(|gem| (VA_GEM, SIZE, gem.handle)),
            ];
            let released = release(gpu, bound.into_iter().flatten());
            // A GEM object's CPU mapping holds a reference to it, and a udmabuf pins its
            // memfd's pages while it exists.
            drop((gem, from_vgem, from_udmabuf, from_heap));
            released?;
            back_to_start(gpu, start)
        },
    );
}
