//! The DMA API around jobs: whether the device is cache-coherent, and the per-job sync
//! counters (debugfs) against the objects each job touched, with the bytes checked after each
//! GPU command through the CPU's view and through the dma-buf's own `mmap`.
//!
//! QEMU's TCG does not model caches, so a missing sync cannot corrupt bytes in this guest:
//! the byte checks prove the data path, the counters prove that each job synced what it read
//! for the device before it ran and what it wrote for the CPU after. On arm64 (`-M virt`) the
//! device is not DMA-coherent, so those syncs are real cache maintenance on hardware.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use extmem_guest_tests::device_snapshot::op;
use extmem_guest_tests::dri::GemHandle;
use extmem_guest_tests::exporters::Exporter;
use extmem_guest_tests::host_memory::{self, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure};
use extmem_guest_tests::pattern;
use extmem_guest_tests::vgpu::{self, SyncCounts, Vgpu};
use extmem_uapi::{ObjectKind, FLAG_READ_ONLY};

use crate::helpers::{
    close, create_gem, exec, exporter, map, map_fd, read_map, read_raw, release, same_bytes, unmap,
    userptr_handle, write_raw,
};
use crate::{Ktap, SLOT};

/// Results this group writes.
pub(crate) const CHECKS: usize = 5;

/// Object sizes: unequal, so a count of bytes says which objects were synced. Multiples of
/// 64 KiB, so whole CPU pages on 4, 16 and 64 KiB kernels.
const GEM_SIZE: u64 = 256 * 1024;
const HOST_SIZE: u64 = 128 * 1024;
const IMPORT_SIZE: u64 = 192 * 1024;
/// The import + copy whose maintenance is timed.
const COST_SIZE: u64 = 8 << 20;
const MIB: f64 = (1 << 20) as f64;

/// A size above as a buffer length (they are small constants).
fn len(size: u64) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
}

fn last_job() -> CheckResult<SyncCounts> {
    io_op("reading the debugfs counters", vgpu::dma_counters()).map(|c| c.last_job)
}

fn expect_syncs(job: &str, expected: SyncCounts) -> CheckResult<()> {
    expect_eq(
        &format!("the syncs of {job} (debugfs last_job_sync_*)"),
        last_job()?,
        expected,
    )
}

/// A writable heap buffer of `size` bytes holding `bytes`, pinned as a USERPTR object
/// (`flags` 0 or [`FLAG_READ_ONLY`]).
fn pinned(gpu: &Vgpu, bytes: &[u8], flags: u32) -> CheckResult<(HeapBuffer, GemHandle)> {
    let page = host_memory::cpu_page_len();
    let buffer = io_op(
        format!("allocating {} bytes", bytes.len()),
        HeapBuffer::new(bytes.len(), page),
    )?;
    write_raw(&buffer, 0, bytes)?;
    let answer = op(
        "GEM_USERPTR",
        gpu.userptr(buffer.addr(), bytes.len() as u64, flags),
    )?;
    Ok((buffer, userptr_handle(answer, ObjectKind::USERPTR)?))
}

/// An object bound for a check: its handle, VA, size and `VM_BIND` flags.
type Binding = (GemHandle, u64, u64, u32);

/// Binds `src` and `dst` and has the GPU copy `size` bytes from the start of one to the start
/// of the other; returns how long the `EXEC` took.
fn bind_and_copy(gpu: &Vgpu, src: Binding, dst: Binding, size: u64) -> CheckResult<Duration> {
    for (handle, va, bytes, flags) in [src, dst] {
        map(gpu, handle, va, bytes, flags)?;
    }
    let started = Instant::now();
    exec(gpu, &[vgpu::copy(src.1, dst.1, size)])?;
    Ok(started.elapsed())
}

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    const VA_GEM: u64 = 13 * SLOT;
    const VA_HOST: u64 = 13 * SLOT + (16 << 20);
    const VA_IMPORT: u64 = 13 * SLOT + (32 << 20);

    let arm64 = cfg!(target_arch = "aarch64");
    let what = if arm64 {
        "DMA: the device is not DMA-coherent on arm64 -M virt (the syncs do cache maintenance) and takes DMA segments of any length"
    } else {
        "DMA: the device is DMA-coherent on x86_64 (the syncs do no cache work) and takes DMA segments of any length"
    };
    ktap.check_after(what, gpu, |_| {
        let counters = io_op("reading the debugfs counters", vgpu::dma_counters())?;
        expect_eq("dma_coherent", counters.coherent, !arm64)?;
        expect_eq(
            "dma_max_seg_size",
            counters.max_seg_size,
            u64::from(u32::MAX),
        )
    });

    let what = "DMA: a COPY from a GEM object into a host pointer syncs both for the device before and the host pointer for the CPU after; the host pointer holds the bytes";
    ktap.check_after(what, gpu, |gpu| {
        let gem = create_gem(gpu, GEM_SIZE)?;
        let source = pattern::bytes(61, len(GEM_SIZE));
        gem.map
            .write(0, &source)
            .map_err(|e| Failure::op("writing the GEM mapping", e))?;
        let (host, handle) = pinned(gpu, &vec![0; len(HOST_SIZE)], 0)?;
        let bound = [(VA_GEM, GEM_SIZE, gem.handle), (VA_HOST, HOST_SIZE, handle)];
        let checked = (|| {
            bind_and_copy(
                gpu,
                (gem.handle, VA_GEM, GEM_SIZE, 0),
                (handle, VA_HOST, HOST_SIZE, 0),
                HOST_SIZE,
            )?;
            expect_syncs(
                "a GEM-to-host COPY",
                SyncCounts {
                    for_device: 2,
                    for_device_bytes: GEM_SIZE + HOST_SIZE,
                    for_cpu: 1,
                    for_cpu_bytes: HOST_SIZE,
                },
            )?;
            same_bytes(
                "the host pointer after the COPY",
                &source[..len(HOST_SIZE)],
                &read_raw(&host, 0, len(HOST_SIZE))?,
            )
        })();
        let released = release(gpu, bound);
        checked.and(released)
    });

    let what = "DMA: a FILL of a GEM object syncs it for the device and for the CPU; its CPU mapping and its PRIME export's mmap (between DMA_BUF_IOCTL_SYNC) show the fill";
    ktap.check_after(what, gpu, |gpu| {
        let gem = create_gem(gpu, GEM_SIZE)?;
        let checked = (|| {
            map(gpu, gem.handle, VA_GEM, GEM_SIZE, 0)?;
            exec(gpu, &[vgpu::fill(VA_GEM, 0xd3a5_0c0b, GEM_SIZE)])?;
            expect_syncs(
                "a FILL",
                SyncCounts {
                    for_device: 1,
                    for_device_bytes: GEM_SIZE,
                    for_cpu: 1,
                    for_cpu_bytes: GEM_SIZE,
                },
            )?;
            let expected = pattern::filled(0xd3a5_0c0b, len(GEM_SIZE));
            same_bytes("the GEM mapping", &expected, &gem.read(len(GEM_SIZE))?)?;
            let fd = io_op("PRIME_HANDLE_TO_FD", gpu.export(gem.handle))?;
            let view = map_fd(fd.as_fd(), 0, GEM_SIZE)?;
            same_bytes(
                "the dma-buf's mmap",
                &expected,
                &read_map(&view, Some(fd.as_fd()))?,
            )?;
            unmap(gpu, VA_GEM, GEM_SIZE)
        })();
        let closed = close(gpu, gem.handle);
        checked.and(closed)
    });

    let (heap, name) = exporter(Exporter::SystemHeap);
    let what = format!(
        "DMA: a COPY from a read-only host pointer into an imported {name} syncs only the host pointer, for the device (the exporter syncs its own table); the dma-buf's mmap (between DMA_BUF_IOCTL_SYNC) shows the bytes"
    );
    ktap.check_after(&what, gpu, |gpu| {
        let exported = heap?.export(IMPORT_SIZE)?;
        let fd = exported.dma_buf.as_fd();
        let imported = io_op("PRIME_FD_TO_HANDLE", gpu.import(fd))?;
        let source = pattern::bytes(62, len(HOST_SIZE));
        let (_host, handle) = pinned(gpu, &source, FLAG_READ_ONLY)?;
        let bound = [
            (VA_HOST, HOST_SIZE, handle),
            (VA_IMPORT, IMPORT_SIZE, imported),
        ];
        let checked = (|| {
            bind_and_copy(
                gpu,
                (handle, VA_HOST, HOST_SIZE, FLAG_READ_ONLY),
                (imported, VA_IMPORT, IMPORT_SIZE, 0),
                HOST_SIZE,
            )?;
            expect_syncs(
                "a host-to-import COPY",
                SyncCounts {
                    for_device: 1,
                    for_device_bytes: HOST_SIZE,
                    for_cpu: 0,
                    for_cpu_bytes: 0,
                },
            )?;
            let view = map_fd(fd, 0, IMPORT_SIZE)?;
            let seen = read_map(&view, Some(fd))?;
            same_bytes(
                "the imported dma-buf's mmap",
                &source,
                &seen[..len(HOST_SIZE)],
            )
        })();
        let released = release(gpu, bound);
        checked.and(released)
    });

    let what = "DMA cost: a GEM_USERPTR of 8 MiB copied by the GPU into a GEM object syncs both (16 MiB) for the device and the GEM object (8 MiB) for the CPU, in less time than the EXEC took";
    let cost = ktap.check_after(what, gpu, |gpu| import_and_copy_cost(gpu, VA_HOST, VA_GEM));
    if let Some(cost) = cost {
        ktap.diagnostic(cost);
    }
}

/// What the maintenance of one import + copy cost.
struct Cost {
    syncs_ns: u64,
    exec_ns: u64,
    pin_ns: u64,
    coherent: bool,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = COST_SIZE as f64 / MIB;
        let us = |ns: u64| ns as f64 / 1000.0;
        write!(
            f,
            "DMA cost ({}): an 8 MiB import + copy synced in {:.0} us ({:.1} us per MiB copied), {:.1}% of the EXEC's {:.0} us; the pin took {:.0} us",
            if self.coherent { "coherent device" } else { "non-coherent device, cache maintenance" },
            us(self.syncs_ns),
            us(self.syncs_ns) / mib,
            100.0 * self.syncs_ns as f64 / self.exec_ns.max(1) as f64,
            us(self.exec_ns),
            us(self.pin_ns),
        )
    }
}

fn import_and_copy_cost(gpu: &Vgpu, va_host: u64, va_gem: u64) -> CheckResult<Cost> {
    let source = pattern::bytes(63, len(COST_SIZE));
    let (_host, handle) = pinned(gpu, &source, 0)?;
    let pin_ns = op(
        "GET_PARAM LAST_PIN_NS",
        gpu.get_param(extmem_uapi::Param::LAST_PIN_NS),
    )?;
    let gem = create_gem(gpu, COST_SIZE)?;
    let bound = [
        (va_host, COST_SIZE, handle),
        (va_gem, COST_SIZE, gem.handle),
    ];
    let measured = (|| {
        let took = bind_and_copy(
            gpu,
            (handle, va_host, COST_SIZE, 0),
            (gem.handle, va_gem, COST_SIZE, 0),
            COST_SIZE,
        )?;
        let exec_ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let counters = io_op("reading the debugfs counters", vgpu::dma_counters())?;
        expect_eq(
            "the syncs of the import + copy (debugfs last_job_sync_*)",
            counters.last_job,
            SyncCounts {
                for_device: 2,
                for_device_bytes: 2 * COST_SIZE,
                for_cpu: 1,
                for_cpu_bytes: COST_SIZE,
            },
        )?;
        if counters.last_job_ns >= exec_ns {
            return Err(Failure::new(
                format!("syncs inside the EXEC's {exec_ns} ns"),
                format!("{} ns of syncs", counters.last_job_ns),
            ));
        }
        same_bytes(
            "the GEM object after the COPY",
            &source,
            &gem.read(len(COST_SIZE))?,
        )?;
        Ok(Cost {
            syncs_ns: counters.last_job_ns,
            exec_ns,
            pin_ns,
            coherent: counters.coherent,
        })
    })();
    let released = release(gpu, bound);
    measured.and_then(|cost| released.map(|()| cost))
}
