//! vgpu: the extmem-vgpu kernel module, end to end on the real kernel.
//!
//! Host pointers (heap and anonymous mappings) pinned, bound and copied through the GPU's page
//! tables; dma-buf imports from vgem, udmabuf and the system dma-heap; PRIME export into vgem;
//! host-mapped foreign memory (a `GEM_USERPTR` inside a CPU mapping of a dma-buf); 2 MiB
//! blocks; every documented rejection (with the counters unchanged); `RLIMIT_MEMLOCK`; and a
//! SIGKILLed process giving everything back. One KTAP result per check; a failure says what
//! was expected and what was seen.
//!
//! The program re-runs itself as a child for the checks that need another process
//! (`vgpu child-memlock`, `vgpu child-hold`).

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use extmem_guest_tests::child_process;
use extmem_guest_tests::device_snapshot::{
    counters, errno_name, expect_counters, expect_errno, expect_snapshot, op, snapshot, Snapshot,
};
use extmem_guest_tests::dri::{self, DrmNode, GemHandle, NodeKind};
use extmem_guest_tests::host_memory::{self, AnonMapping, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure, KtapWriter};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::pattern::filled;
use extmem_guest_tests::vgpu::{self, Counters, Vgpu};
use extmem_guest_tests::{dma_buf, dma_heap, fd_table, pattern, udmabuf};
use extmem_hw::profile::VGPU;
use extmem_hw::PageSize;
use extmem_uapi::{
    BindOp, Cmd, CmdOp, Exec, FaultKind, GemCreate, GemInfo, GemUserptr, GetParam, ObjectKind,
    Param, VmBind, VmQuery, FLAG_READ_ONLY, MAX_EXEC_CMDS, QUERY_MAPPED, QUERY_READ_ONLY,
    USERPTR_PROBE,
};
use rustix::fs::{memfd_create, MemfdFlags};
use rustix::io::Errno;
use rustix::mm::{Advice, MapFlags, MprotectFlags, ProtFlags};

/// How long a `vgpu child-*` run may take before it counts as a hang.
const CHILD_LIMIT: Duration = Duration::from_secs(120);

/// Number of results the parent writes; the runner fails the program if fewer arrive.
const PLAN: usize = 102;

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
const SIZE_2M: u64 = 2 * MIB;
/// The same sizes as buffer lengths.
const PAGE_LEN: usize = 4096;
const MIB_LEN: usize = 1 << 20;
const SIZE_2M_LEN: usize = 2 << 20;
/// Each group of checks binds in its own 512 GiB slot of the VA space (one level-0 entry), so
/// table-page counts of one group do not depend on another's.
const SLOT: u64 = 1 << 39;

type Ktap = KtapWriter<io::Stdout>;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("child-memlock") => return child_memlock(),
        Some("child-hold") => return child_hold(),
        _ => {}
    }
    fd_table::ktap_program(PLAN, run)
}

fn run(ktap: &mut Ktap) {
    let gpu = ktap.check(
        "extmem-vgpu: a renderD* node reports driver \"extmem-vgpu\" (DRM_IOCTL_VERSION)",
        || Vgpu::open().map_err(|e| Failure::new("a render node of extmem-vgpu", e.to_string())),
    );
    let gpu = gpu.as_ref();
    let what = "counters: no objects, pinned pages, attachments (counter and debugfs) or bindings before the test makes any";
    let start = ktap.check_after(what, gpu, |gpu| {
        let now = snapshot(gpu)?;
        let idle = Counters {
            pt_pages: now.counters.pt_pages,
            ..Counters::default()
        };
        expect_counters(now.counters, idle)?;
        expect_eq("dma-buf attachments in debugfs", now.attachments, 0)?;
        Ok(now)
    });
    let vgem = ktap.check(
        "vgem: a card* node reports driver \"vgem\" (the exporter of the import tests)",
        || {
            dri::open_by_driver("vgem", NodeKind::Primary)
                .map_err(|e| Failure::new("a vgem node", e.to_string()))
        },
    );
    let vgem = vgem.as_ref();

    params(ktap, gpu);
    host_pointers(ktap, gpu);
    imports(ktap, gpu, vgem);
    exports(ktap, gpu, vgem);
    foreign(ktap, gpu, vgem);
    blocks(ktap, gpu);
    pin_forms(ktap, gpu);
    rejections(ktap, gpu);
    memlock(ktap, gpu);
    killed_process(ktap, gpu);

    ktap.check_after(
        "counters, outstanding pins and debugfs attachments: back to their values at the start",
        gpu.zip(start),
        |(gpu, start)| expect_snapshot(snapshot(gpu)?, start),
    );
}

// ---- helpers ----------------------------------------------------------------------------

/// The guest's RAM in bytes (what the module's device budget is 3/4 of).
#[allow(
    clippy::useless_conversion,
    reason = "sysinfo's fields are u32 on 32-bit targets"
)]
fn ram_bytes() -> u64 {
    let info = rustix::system::sysinfo();
    u64::from(info.totalram).saturating_mul(u64::from(info.mem_unit.max(1)))
}

/// `expected` with the page-table pages of `now`: a VM keeps the tables it grew until the
/// file closes, so group cleanups compare everything else.
fn tables_aside(expected: Snapshot, now: Snapshot) -> Snapshot {
    Snapshot {
        counters: Counters {
            pt_pages: now.counters.pt_pages,
            ..expected.counters
        },
        ..expected
    }
}

/// A rejection: `attempt` fails with `expected`, and neither the device counters nor the
/// kernel's pins and attachments move.
fn rejected<T: fmt::Debug>(
    gpu: &Vgpu,
    what: &str,
    expected: Errno,
    attempt: impl FnOnce() -> Result<T, Errno>,
) -> CheckResult<()> {
    let before = snapshot(gpu)?;
    let result = attempt();
    let after = snapshot(gpu)?;
    expect_errno(what, result, expected)?;
    expect_snapshot(after, before)
        .map_err(|f| Failure::new(format!("{} (unchanged)", f.expected), f.seen))
}

fn as_len(size: u64) -> CheckResult<usize> {
    usize::try_from(size).map_err(|_| Failure::new("a size that fits in usize", size.to_string()))
}

/// The handle of a `GEM_USERPTR` that should have made an object of `kind`.
fn userptr_handle(answer: GemUserptr, kind: ObjectKind) -> CheckResult<GemHandle> {
    expect_eq("kind", answer.kind, kind)?;
    std::num::NonZeroU32::new(answer.handle)
        .map(GemHandle)
        .ok_or_else(|| Failure::new("a non-zero handle", "handle 0"))
}

/// GEM_INFO matches.
fn expect_info(
    gpu: &Vgpu,
    handle: GemHandle,
    kind: ObjectKind,
    size: u64,
    read_only: bool,
) -> CheckResult<GemInfo> {
    let info = op(format!("GEM_INFO of handle {handle}"), gpu.gem_info(handle))?;
    expect_eq("kind", info.kind, kind)?;
    expect_eq("size", info.size, size)?;
    let flags = if read_only { FLAG_READ_ONLY } else { 0 };
    expect_eq("flags", info.flags, flags)?;
    let mappable = kind == ObjectKind::SHMEM;
    if mappable == (info.mmap_offset == 0) {
        return Err(Failure::new(
            format!("an mmap offset only for SHMEM objects ({kind:?})"),
            format!("mmap_offset {:#x}", info.mmap_offset),
        ));
    }
    Ok(info)
}

/// A shmem object and its CPU mapping through the DRM file.
struct GemObject {
    handle: GemHandle,
    map: SharedMapping,
}

fn create_gem(gpu: &Vgpu, size: u64) -> CheckResult<GemObject> {
    let handle = op(format!("GEM_CREATE of {size} bytes"), gpu.gem_create(size))?;
    let info = expect_info(gpu, handle, ObjectKind::SHMEM, size, false)?;
    let map = io_op(
        "mmap of the DRM file at the GEM_INFO offset",
        SharedMapping::new(gpu.as_fd(), info.mmap_offset, as_len(size)?),
    )?;
    Ok(GemObject { handle, map })
}

fn map(gpu: &Vgpu, handle: GemHandle, va: u64, size: u64, flags: u32) -> CheckResult<()> {
    op(
        format!("VM_BIND MAP of handle {handle} at {va:#x} ({size} bytes)"),
        gpu.map(handle, va, 0, size, flags),
    )
}

fn unmap(gpu: &Vgpu, va: u64, size: u64) -> CheckResult<()> {
    op(format!("VM_BIND UNMAP at {va:#x}"), gpu.unmap(va, size))
}

fn close(gpu: &Vgpu, handle: GemHandle) -> CheckResult<()> {
    io_op(format!("GEM_CLOSE of handle {handle}"), gpu.close(handle))
}

fn exec(gpu: &Vgpu, cmds: &[Cmd]) -> CheckResult<()> {
    gpu.exec(cmds).map(|_| ()).map_err(|(errno, args)| {
        Failure::op(
            "EXEC",
            format!(
                "{} (fault at {:#x}, command {}, kind {:?})",
                errno_name(errno),
                args.fault_va,
                args.fault_cmd,
                args.fault_kind
            ),
        )
    })
}

fn same_bytes(what: &str, expected: &[u8], seen: &[u8]) -> CheckResult<()> {
    pattern::compare(expected, seen).map_err(|m| Failure::new(what.to_owned(), m.to_string()))
}

fn read_raw(buffer: &impl RawBytes, offset: usize, len: usize) -> CheckResult<Vec<u8>> {
    buffer
        .read(offset, len)
        .map_err(|e| Failure::op("reading the buffer", e))
}

fn write_raw(buffer: &impl RawBytes, offset: usize, bytes: &[u8]) -> CheckResult<()> {
    buffer
        .write(offset, bytes)
        .map_err(|e| Failure::op("writing the buffer", e))
}

fn read_map(map: &SharedMapping, dma_buf: Option<BorrowedFd<'_>>) -> CheckResult<Vec<u8>> {
    match dma_buf {
        Some(fd) => io_op(
            "DMA_BUF_IOCTL_SYNC",
            dma_buf::with_cpu_access(fd, || map.read_all()),
        ),
        None => Ok(map.read_all()),
    }
}

fn write_map(
    map: &SharedMapping,
    dma_buf: Option<BorrowedFd<'_>>,
    bytes: &[u8],
) -> CheckResult<()> {
    let written = match dma_buf {
        Some(fd) => io_op(
            "DMA_BUF_IOCTL_SYNC",
            dma_buf::with_cpu_access(fd, || map.write(0, bytes)),
        )?,
        None => map.write(0, bytes),
    };
    written.map_err(|e| Failure::op("writing the mapping", e))
}

// ---- parameters -------------------------------------------------------------------------

fn params(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    let page_sizes: u64 = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G]
        .into_iter()
        .filter(|s| VGPU.page_sizes.contains(*s))
        .map(PageSize::bytes)
        .sum();
    let expected = [
        (Param::API_VERSION, extmem_uapi::API_VERSION),
        (Param::VA_BITS, u64::from(VGPU.va_bits)),
        (Param::OA_BITS, u64::from(VGPU.oa_bits)),
        (Param::PAGE_SIZES, page_sizes),
        (Param::MIN_IMPORT_ALIGNMENT, VGPU.min_import_alignment.get()),
        (Param::MAX_MAPPING, VGPU.max_mapping),
    ];
    for (param, value) in expected {
        let name = param.name().unwrap_or("?");
        ktap.check_after(
            &format!("GET_PARAM {name} is {value:#x}, as extmem_hw::profile::VGPU says"),
            gpu,
            |gpu| {
                expect_eq(
                    name,
                    op(format!("GET_PARAM {name}"), gpu.get_param(param))?,
                    value,
                )
            },
        );
    }
    let what = "GET_PARAM UUIDs: the device UUID is an RFC 9562 version-8 UUID, the driver UUID is set, both the same on a second open file";
    ktap.check_after(what, gpu, |gpu| {
        let read = |gpu: &Vgpu| -> CheckResult<[u64; 4]> {
            Ok([
                op(
                    "GET_PARAM DEVICE_UUID_LO",
                    gpu.get_param(Param::DEVICE_UUID_LO),
                )?,
                op(
                    "GET_PARAM DEVICE_UUID_HI",
                    gpu.get_param(Param::DEVICE_UUID_HI),
                )?,
                op(
                    "GET_PARAM DRIVER_UUID_LO",
                    gpu.get_param(Param::DRIVER_UUID_LO),
                )?,
                op(
                    "GET_PARAM DRIVER_UUID_HI",
                    gpu.get_param(Param::DRIVER_UUID_HI),
                )?,
            ])
        };
        let first = read(gpu)?;
        let [device_lo, device_hi, driver_lo, driver_hi] = first;
        let version = (device_lo >> 52) & 0xf;
        let variant = device_hi & 0xc0;
        if version != 8 || variant != 0x80 {
            return Err(Failure::new(
                "byte 6 high nibble 8, byte 8 top bits 10",
                format!("device UUID {device_lo:016x} {device_hi:016x}"),
            ));
        }
        if driver_lo == 0 && driver_hi == 0 {
            return Err(Failure::new("a non-zero driver UUID", "0"));
        }
        let other = Vgpu::open().map_err(|e| Failure::op("opening the node again", e))?;
        expect_eq("UUIDs on the second file", read(&other)?, first)
    });
    ktap.check_after(
        "GET_PARAM of an unknown parameter fails with EINVAL",
        gpu,
        |gpu| expect_errno("GET_PARAM 999", gpu.get_param(Param(999)), Errno::INVAL),
    );
    ktap.check_after(
        "GET_PARAM with non-zero padding fails with EINVAL",
        gpu,
        |gpu| {
            let mut args = GetParam {
                param: Param::VA_BITS,
                pad: 1,
                value: 0,
            };
            expect_errno(
                "GET_PARAM with pad 1",
                gpu.get_param_raw(&mut args),
                Errno::INVAL,
            )
        },
    );
}

// ---- host pointers ----------------------------------------------------------------------

fn host_pointers(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    const VA_HEAP: u64 = SLOT;
    const VA_GEM: u64 = SLOT + 16 * MIB;
    const VA_ANON: u64 = SLOT + 32 * MIB;
    const VA_RO: u64 = SLOT + 48 * MIB;
    let len = MIB_LEN;
    let start = gpu.map(snapshot).and_then(Result::ok);

    let what = "host pointer: GEM_USERPTR of a 4096-aligned 1 MiB heap allocation gives a USERPTR object, pins 256 pages, LAST_PIN_NS > 0";
    let heap = ktap.check_after(what, gpu.zip(start), |(gpu, start)| {
        let before = start.counters;
        let buffer = io_op("allocating 1 MiB", HeapBuffer::new(len, 4096))?;
        write_raw(&buffer, 0, &pattern::bytes(21, len))?;
        let answer = op("GEM_USERPTR", gpu.userptr(buffer.addr(), MIB, 0))?;
        let handle = userptr_handle(answer, ObjectKind::USERPTR)?;
        expect_counters(
            counters(gpu)?,
            Counters {
                live_objects: before.live_objects + 1,
                pinned_pages: before.pinned_pages + 256,
                ..before
            },
        )?;
        let ns = op("GET_PARAM LAST_PIN_NS", gpu.get_param(Param::LAST_PIN_NS))?;
        if ns == 0 {
            return Err(Failure::new("LAST_PIN_NS > 0 after a pin", "0"));
        }
        Ok((buffer, handle))
    });
    ktap.check_after(
        "host pointer: GEM_INFO says USERPTR, 1 MiB, writable, no mmap offset",
        gpu.zip(heap.as_ref()),
        |(gpu, (_, handle))| expect_info(gpu, *handle, ObjectKind::USERPTR, MIB, false).map(|_| ()),
    );
    let what = "GEM_CREATE of 1 MiB gives a SHMEM object that maps through the DRM file at its GEM_INFO offset";
    let gem = ktap.check_after(what, gpu, |gpu| create_gem(gpu, MIB));
    let what = "host pointer: both bound (2 bindings more); VM_QUERY of the heap VA gives a 4 KiB page at the pagemap physical address";
    let bound = ktap.check_after(
        what,
        gpu.zip(heap.as_ref()).zip(gem.as_ref()),
        |((gpu, (buffer, handle)), gem)| {
            let before = counters(gpu)?;
            map(gpu, *handle, VA_HEAP, MIB, 0)?;
            map(gpu, gem.handle, VA_GEM, MIB, 0)?;
            let after = counters(gpu)?;
            expect_eq("bindings", after.bindings, before.bindings + 2)?;
            let probe = 5 * PAGE;
            let query = op("VM_QUERY", gpu.vm_query(VA_HEAP + probe))?;
            let pa = io_op(
                "reading /proc/self/pagemap",
                host_memory::physical_address(buffer.addr() + probe),
            )?;
            expect_eq("flags", query.flags, QUERY_MAPPED)?;
            expect_eq("page size", query.page_size, PAGE)?;
            expect_eq("physical address", Some(query.pa), pa)
        },
    );
    let ready = bound.and(gpu.zip(heap.as_ref()).zip(gem.as_ref()));
    let what = "host pointer: EXEC COPY heap VA -> GEM VA (1 MiB); the GEM object's mmap shows the heap's bytes";
    ktap.check_after(what, ready, |((gpu, _), gem)| {
        exec(gpu, &[vgpu::copy(VA_HEAP, VA_GEM, MIB)])?;
        same_bytes(
            "the heap's 1 MiB pattern",
            &pattern::bytes(21, len),
            &gem.map.read_all(),
        )
    });
    let what = "host pointer: the CPU writes the GEM object, EXEC COPY GEM -> heap VA; the heap allocation shows the GPU's write";
    ktap.check_after(what, ready, |((gpu, (buffer, _)), gem)| {
        let expected = pattern::bytes(22, len);
        gem.map
            .write(0, &expected)
            .map_err(|e| Failure::op("writing the GEM mapping", e))?;
        exec(gpu, &[vgpu::copy(VA_GEM, VA_HEAP, MIB)])?;
        same_bytes(
            "the GEM object's bytes",
            &expected,
            &read_raw(buffer, 0, len)?,
        )
    });
    let what = "host pointer: EXEC FILL 0xa5a55a5a over [64 KiB, 128 KiB) of the heap VA; the CPU sees exactly that range change";
    ktap.check_after(what, ready, |((gpu, (buffer, _)), _)| {
        let mut expected = pattern::bytes(22, len);
        exec(gpu, &[vgpu::fill(VA_HEAP + 0x10000, 0xa5a5_5a5a, 0x10000)])?;
        if let Some(window) = expected.get_mut(0x10000..0x20000) {
            window.copy_from_slice(&filled(0xa5a5_5a5a, 0x10000));
        }
        same_bytes(
            "the heap with the filled window",
            &expected,
            &read_raw(buffer, 0, len)?,
        )
    });
    let what = "host pointer: an anonymous 512 KiB mmap pinned and bound; EXEC COPY into the GEM object: the object shows its bytes";
    ktap.check_after(what, gpu.zip(gem.as_ref()), |(gpu, gem)| {
        let anon = io_op("mmap 512 KiB", AnonMapping::read_write(len / 2))?;
        write_raw(&anon, 0, &pattern::bytes(23, len / 2))?;
        let handle = userptr_handle(
            op("GEM_USERPTR", gpu.userptr(anon.addr(), MIB / 2, 0))?,
            ObjectKind::USERPTR,
        )?;
        map(gpu, handle, VA_ANON, MIB / 2, 0)?;
        exec(gpu, &[vgpu::copy(VA_ANON, VA_GEM, MIB / 2)])?;
        let seen = gem
            .map
            .read(0, len / 2)
            .map_err(|e| Failure::op("reading", e))?;
        same_bytes(
            "the anonymous mapping's bytes",
            &pattern::bytes(23, len / 2),
            &seen,
        )?;
        // The GPU writes back into the anonymous mapping.
        exec(gpu, &[vgpu::fill(VA_ANON, 0x1234_5678, MIB / 2)])?;
        same_bytes(
            "the GPU's fill in the anonymous mapping",
            &filled(0x1234_5678, len / 2),
            &read_raw(&anon, 0, len / 2)?,
        )?;
        unmap(gpu, VA_ANON, MIB / 2)?;
        close(gpu, handle)
    });
    let what = "read-only host pointer: GEM_USERPTR(READ_ONLY) of a PROT_READ mapping works; GEM_INFO says READ_ONLY";
    let read_only = ktap.check_after(what, gpu, |gpu| {
        let anon = io_op("mmap 64 KiB", AnonMapping::read_write(0x10000))?;
        write_raw(&anon, 0, &pattern::bytes(24, 0x10000))?;
        io_op("mprotect(PROT_READ)", anon.protect(MprotectFlags::READ))?;
        let answer = op(
            "GEM_USERPTR(READ_ONLY)",
            gpu.userptr(anon.addr(), 0x10000, FLAG_READ_ONLY),
        )?;
        let handle = userptr_handle(answer, ObjectKind::USERPTR)?;
        expect_info(gpu, handle, ObjectKind::USERPTR, 0x10000, true)?;
        Ok((anon, handle))
    });
    ktap.check_after(
        "read-only host pointer: VM_BIND without READ_ONLY fails with EACCES, counters unchanged",
        gpu.zip(read_only.as_ref()),
        |(gpu, (_, handle))| {
            rejected(
                gpu,
                "VM_BIND of a read-only object without READ_ONLY",
                Errno::ACCESS,
                || gpu.map(*handle, VA_RO, 0, 0x10000, 0),
            )
        },
    );
    let what = "read-only host pointer: bound READ_ONLY, the GPU copies out of it; a write faults with EIO, fault READ_ONLY at the VA, command 0";
    ktap.check_after(
        what,
        gpu.zip(read_only.as_ref()).zip(gem.as_ref()),
        |((gpu, (_, handle)), gem)| {
            map(gpu, *handle, VA_RO, 0x10000, FLAG_READ_ONLY)?;
            let query = op("VM_QUERY", gpu.vm_query(VA_RO))?;
            expect_eq("flags", query.flags, QUERY_MAPPED | QUERY_READ_ONLY)?;
            exec(gpu, &[vgpu::copy(VA_RO, VA_GEM, 0x10000)])?;
            let seen = gem
                .map
                .read(0, 0x10000)
                .map_err(|e| Failure::op("reading", e))?;
            same_bytes(
                "the read-only mapping's bytes",
                &pattern::bytes(24, 0x10000),
                &seen,
            )?;
            match gpu.exec(&[vgpu::fill(VA_RO + 0x2000, 7, 4)]) {
                Err((Errno::IO, args)) => {
                    expect_eq("fault kind", args.fault_kind, FaultKind::READ_ONLY)?;
                    expect_eq("fault VA", args.fault_va, VA_RO + 0x2000)?;
                    expect_eq("fault command", args.fault_cmd, 0)
                }
                other => Err(Failure::new(
                    "EIO with a READ_ONLY fault",
                    format!("{other:?}"),
                )),
            }
        },
    );
    let what = "PROBE: GEM_USERPTR(PROBE) of a mapped heap range answers USERPTR with handle 0, pins and creates nothing";
    ktap.check_after(what, gpu, |gpu| {
        let buffer = io_op("allocating 256 KiB", HeapBuffer::new(0x40000, 4096))?;
        let before = snapshot(gpu)?;
        let answer = op(
            "GEM_USERPTR(PROBE)",
            gpu.userptr(buffer.addr(), 0x40000, USERPTR_PROBE),
        )?;
        expect_eq("kind", answer.kind, ObjectKind::USERPTR)?;
        expect_eq("handle", answer.handle, 0)?;
        expect_snapshot(snapshot(gpu)?, before)
    });
    let owned = (heap, gem, read_only);
    let what = "host pointer: after UNMAP, GEM_CLOSE and munmap of everything the counters are back (page tables aside)";
    ktap.check_after(what, gpu.zip(start), |(gpu, start)| {
        let (heap, gem, read_only) = owned;
        let mut result = Ok(());
        let mut keep = |r: CheckResult<()>| {
            if result.is_ok() {
                result = r;
            }
        };
        if let Some((_, handle)) = heap.as_ref() {
            keep(unmap(gpu, VA_HEAP, MIB));
            keep(close(gpu, *handle));
        }
        if let Some(gem) = gem.as_ref() {
            keep(unmap(gpu, VA_GEM, MIB));
            keep(close(gpu, gem.handle));
        }
        if let Some((_, handle)) = read_only.as_ref() {
            keep(unmap(gpu, VA_RO, 0x10000));
            keep(close(gpu, *handle));
        }
        // A CPU mapping of a GEM object holds a reference to it.
        drop((heap, gem, read_only));
        result?;
        let now = snapshot(gpu)?;
        expect_snapshot(now, tables_aside(start, now))
    });
}

// ---- dma-buf imports --------------------------------------------------------------------

fn map_fd(fd: BorrowedFd<'_>, offset: u64, size: u64) -> CheckResult<SharedMapping> {
    io_op("mmap", SharedMapping::new(fd, offset, as_len(size)?))
}

/// Imports `dma_buf`, binds it at `va`, FILLs it through the GPU and checks the bytes in
/// `reader` (the exporter's mapping); then the CPU writes a pattern through `reader` and the
/// GPU copies it into the GEM object bound at `gem_va` (`gem_at`).
fn import_round_trip(
    gpu: &Vgpu,
    dma_buf: BorrowedFd<'_>,
    reader: &SharedMapping,
    reader_sync: Option<BorrowedFd<'_>>,
    va: u64,
    (gem, gem_va): (&GemObject, u64),
    seed: u64,
) -> CheckResult<GemHandle> {
    let size = reader.len() as u64;
    let before = counters(gpu)?;
    let handle = io_op("PRIME_FD_TO_HANDLE", gpu.import(dma_buf))?;
    expect_info(gpu, handle, ObjectKind::DMABUF, size, false)?;
    expect_counters(
        counters(gpu)?,
        Counters {
            live_objects: before.live_objects + 1,
            attachments: before.attachments + 1,
            ..before
        },
    )?;
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
    let seen = gem
        .map
        .read(0, as_len(copy_len)?)
        .map_err(|e| Failure::op("reading", e))?;
    same_bytes(
        "the exporter's bytes, copied by the GPU",
        expected.get(..seen.len()).unwrap_or_default(),
        &seen,
    )?;
    Ok(handle)
}

fn imports(ktap: &mut Ktap, gpu: Option<&Vgpu>, vgem: Option<&DrmNode>) {
    const VA_GEM: u64 = 2 * SLOT;
    const VA_VGEM: u64 = 2 * SLOT + 16 * MIB;
    const VA_UDMABUF: u64 = 2 * SLOT + 32 * MIB;
    const VA_HEAP: u64 = 2 * SLOT + 48 * MIB;
    const SIZE: u64 = 256 * 1024;
    let start = gpu.map(snapshot).and_then(Result::ok);
    let gem = gpu.map(|gpu| {
        let gem = create_gem(gpu, SIZE)?;
        map(gpu, gem.handle, VA_GEM, SIZE, 0)?;
        Ok::<_, Failure>(gem)
    });
    let gem = match gem {
        Some(Ok(gem)) => Some(gem),
        Some(Err(failure)) => {
            ktap.diagnostic(format_args!(
                "import checks: no GEM object: {}",
                failure.seen
            ));
            None
        }
        None => None,
    };

    let what = "dma-buf import: a vgem dma-buf imports as DMABUF (1 attachment more); a GPU FILL shows in the dma-buf mmap, CPU bytes copy out";
    let from_vgem = ktap.check_after(
        what,
        gpu.zip(vgem).zip(gem.as_ref()),
        |((gpu, vgem), gem)| {
            let fd = vgem.dumb_dma_buf(SIZE)?;
            let view = map_fd(fd.as_fd(), 0, SIZE)?;
            let handle = import_round_trip(
                gpu,
                fd.as_fd(),
                &view,
                Some(fd.as_fd()),
                VA_VGEM,
                (gem, VA_GEM),
                31,
            )?;
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
    let what = "dma-buf import: a udmabuf imports as DMABUF, LAST_ATTACH_NS > 0; a GPU FILL shows in the memfd's mapping, memfd bytes copy out";
    let from_udmabuf = ktap.check_after(what, gpu.zip(gem.as_ref()), |(gpu, gem)| {
        let (memfd, fd) = io_op(
            "a udmabuf over a sealed memfd",
            udmabuf::over_sealed_memfd("extmem-vgpu", SIZE),
        )?;
        let view = map_fd(memfd.as_fd(), 0, SIZE)?;
        let handle =
            import_round_trip(gpu, fd.as_fd(), &view, None, VA_UDMABUF, (gem, VA_GEM), 32)?;
        let ns = op(
            "GET_PARAM LAST_ATTACH_NS",
            gpu.get_param(Param::LAST_ATTACH_NS),
        )?;
        if ns == 0 {
            return Err(Failure::new("LAST_ATTACH_NS > 0 after an import", "0"));
        }
        Ok((memfd, fd, handle))
    });
    let what = "dma-buf import: a system dma-heap buffer imports as DMABUF; a GPU FILL shows in its mmap, CPU bytes copy out";
    let from_heap = ktap.check_after(what, gpu.zip(gem.as_ref()), |(gpu, gem)| {
        let heap = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/dma_heap/system")
            .map_err(|e| Failure::op("open(/dev/dma_heap/system)", e))?;
        let fd = io_op(
            "DMA_HEAP_IOCTL_ALLOC",
            dma_heap::allocate(heap.as_fd(), SIZE),
        )?;
        let view = map_fd(fd.as_fd(), 0, SIZE)?;
        let handle = import_round_trip(
            gpu,
            fd.as_fd(),
            &view,
            Some(fd.as_fd()),
            VA_HEAP,
            (gem, VA_GEM),
            33,
        )?;
        Ok((fd, handle))
    });
    ktap.check_after(
        "dma-buf import: UNMAP and GEM_CLOSE give every attachment back",
        gpu.zip(start),
        move |(gpu, start)| {
            let mut first_error = Ok(());
            let mut steps: Vec<CheckResult<()>> = Vec::new();
            if let Some((_, handle)) = from_vgem.as_ref() {
                steps.push(unmap(gpu, VA_VGEM, SIZE));
                steps.push(close(gpu, *handle));
            }
            if let Some((_, _, handle)) = from_udmabuf.as_ref() {
                steps.push(unmap(gpu, VA_UDMABUF, SIZE));
                steps.push(close(gpu, *handle));
            }
            if let Some((_, handle)) = from_heap.as_ref() {
                steps.push(unmap(gpu, VA_HEAP, SIZE));
                steps.push(close(gpu, *handle));
            }
            if let Some(gem) = gem {
                steps.push(unmap(gpu, VA_GEM, SIZE));
                steps.push(close(gpu, gem.handle));
                // Its CPU mapping holds a reference to the object.
                drop(gem);
            }
            for step in steps {
                if first_error.is_ok() {
                    first_error = step;
                }
            }
            // The udmabuf pins its memfd's pages while it exists.
            drop((from_vgem, from_udmabuf, from_heap));
            first_error?;
            let now = snapshot(gpu)?;
            expect_snapshot(now, tables_aside(start, now))
        },
    );
}

// ---- PRIME export -----------------------------------------------------------------------

fn exports(ktap: &mut Ktap, gpu: Option<&Vgpu>, vgem: Option<&DrmNode>) {
    const VA_GEM: u64 = 3 * SLOT;
    const VA_HEAP: u64 = 3 * SLOT + 16 * MIB;
    const LEN: usize = 256 * 1024;
    const SIZE: u64 = LEN as u64;
    let len = LEN;

    let exported = ktap.check_after(
        "PRIME export: a GEM object filled by the GPU exports as a dma-buf of its size",
        gpu,
        |gpu| {
            let gem = create_gem(gpu, SIZE)?;
            map(gpu, gem.handle, VA_GEM, SIZE, 0)?;
            exec(gpu, &[vgpu::fill(VA_GEM, 0x5eed_f00d, SIZE)])?;
            let fd = io_op("PRIME_HANDLE_TO_FD", gpu.export(gem.handle))?;
            expect_eq(
                "dma-buf size",
                io_op("lseek", dma_buf::size_by_seek(fd.as_fd()))?,
                SIZE,
            )?;
            Ok((gem, fd))
        },
    );
    // vgem cannot map an imported object itself (DRM refuses MAP_DUMB on imports), so what
    // vgem holds is seen through its re-export, which must be our dma-buf again.
    let what = "PRIME export: vgem imports the dma-buf (attaching to the object); its re-export is the same dma-buf, whose mmap shows the GPU's fill";
    let in_vgem = ktap.check_after(what, vgem.zip(exported.as_ref()), |(vgem, (_, fd))| {
        let handle = io_op("vgem PRIME_FD_TO_HANDLE", vgem.import(fd.as_fd()))?;
        let checked = (|| {
            let again = io_op("vgem re-export", vgem.export(handle))?;
            expect_eq(
                "re-exported dma-buf",
                io_op("fstat", dma_buf::identity(again.as_fd()))?,
                io_op("fstat", dma_buf::identity(fd.as_fd()))?,
            )?;
            let view = map_fd(again.as_fd(), 0, SIZE)?;
            same_bytes(
                "the GPU's fill",
                &filled(0x5eed_f00d, len),
                &read_map(&view, Some(again.as_fd()))?,
            )?;
            Ok((again, view))
        })();
        match checked {
            Ok((again, view)) => Ok((handle, again, view)),
            Err(failure) => {
                let _ = vgem.close_handle(handle);
                Err(failure)
            }
        }
    });
    let what = "PRIME export: bytes the CPU writes through the mmap of vgem's re-export reach a host pointer by a GPU COPY";
    ktap.check_after(
        what,
        gpu.zip(exported.as_ref()).zip(in_vgem.as_ref()),
        |((gpu, _), (_, again, view))| {
            let expected = pattern::bytes(41, len);
            write_map(view, Some(again.as_fd()), &expected)?;
            let buffer = io_op("allocating", HeapBuffer::new(len, 4096))?;
            let handle = userptr_handle(
                op("GEM_USERPTR", gpu.userptr(buffer.addr(), SIZE, 0))?,
                ObjectKind::USERPTR,
            )?;
            map(gpu, handle, VA_HEAP, SIZE, 0)?;
            exec(gpu, &[vgpu::copy(VA_GEM, VA_HEAP, SIZE)])?;
            let seen = read_raw(&buffer, 0, len)?;
            unmap(gpu, VA_HEAP, SIZE)?;
            close(gpu, handle)?;
            same_bytes("vgem's bytes", &expected, &seen)
        },
    );
    let what = "PRIME export: the dma-buf imported back into extmem-vgpu is the same object (same handle, SHMEM)";
    ktap.check_after(what, gpu.zip(exported.as_ref()), |(gpu, (gem, fd))| {
        let handle = io_op("PRIME_FD_TO_HANDLE", gpu.import(fd.as_fd()))?;
        expect_eq("handle", handle, gem.handle)?;
        expect_info(gpu, handle, ObjectKind::SHMEM, SIZE, false).map(|_| ())
    });
    ktap.check_after(
        "PRIME export of a host-pointer object is refused with EOPNOTSUPP (importable only)",
        gpu,
        |gpu| {
            let buffer = io_op("allocating", HeapBuffer::new(len, 4096))?;
            let handle = userptr_handle(
                op("GEM_USERPTR", gpu.userptr(buffer.addr(), SIZE, 0))?,
                ObjectKind::USERPTR,
            )?;
            let result = gpu.export(handle);
            close(gpu, handle)?;
            match result {
                Err(e) if e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error()) => Ok(()),
                other => Err(Failure::new("EOPNOTSUPP", format!("{other:?}"))),
            }
        },
    );
    // Tear down: vgem's import, then ours.
    if let (Some(vgem), Some((handle, _, _))) = (vgem, in_vgem.as_ref()) {
        if let Err(err) = vgem.close_handle(*handle) {
            ktap.diagnostic(format_args!("vgem GEM_CLOSE failed: {err}"));
        }
    }
    if let (Some(gpu), Some((gem, _))) = (gpu, exported.as_ref()) {
        if let Err(f) = unmap(gpu, VA_GEM, SIZE).and_then(|()| close(gpu, gem.handle)) {
            ktap.diagnostic(format_args!("export cleanup: {}", f.seen));
        }
    }
}

// ---- host-mapped foreign memory ---------------------------------------------------------

fn foreign(ktap: &mut Ktap, gpu: Option<&Vgpu>, vgem: Option<&DrmNode>) {
    const VA_GEM: u64 = 4 * SLOT;
    const VA_FOREIGN: u64 = 4 * SLOT + 16 * MIB;
    const VA_WINDOW: u64 = 4 * SLOT + 32 * MIB;
    const VA_UDMABUF: u64 = 4 * SLOT + 48 * MIB;
    const LEN: usize = 512 * 1024;
    const SIZE: u64 = LEN as u64;
    let len = LEN;
    let start = gpu.map(snapshot).and_then(Result::ok);
    let gem = gpu.map(|gpu| {
        let gem = create_gem(gpu, SIZE)?;
        map(gpu, gem.handle, VA_GEM, SIZE, 0)?;
        Ok::<_, Failure>(gem)
    });
    let gem = match gem {
        Some(Ok(gem)) => Some(gem),
        Some(Err(failure)) => {
            ktap.diagnostic(format_args!(
                "foreign checks: no GEM object: {}",
                failure.seen
            ));
            None
        }
        None => None,
    };

    let what = "foreign: GEM_USERPTR inside an mmap of a vgem dma-buf gives a FOREIGN object (1 attachment more, no pinned pages)";
    let from_vgem = ktap.check_after(what, gpu.zip(vgem), |(gpu, vgem)| {
        let fd = vgem.dumb_dma_buf(SIZE)?;
        let view = map_fd(fd.as_fd(), 0, SIZE)?;
        write_map(&view, Some(fd.as_fd()), &pattern::bytes(51, len))?;
        let before = counters(gpu)?;
        let answer = op(
            "GEM_USERPTR on the dma-buf mapping",
            gpu.userptr(view_addr(&view), SIZE, 0),
        )?;
        let handle = userptr_handle(answer, ObjectKind::FOREIGN)?;
        expect_info(gpu, handle, ObjectKind::FOREIGN, SIZE, false)?;
        expect_counters(
            counters(gpu)?,
            Counters {
                live_objects: before.live_objects + 1,
                attachments: before.attachments + 1,
                ..before
            },
        )?;
        Ok((fd, view, handle))
    });
    let what = "foreign (vgem): a GPU COPY out of the FOREIGN object gives the dma-buf's bytes; a GPU FILL into it shows in the mapping";
    ktap.check_after(
        what,
        gpu.zip(from_vgem.as_ref()).zip(gem.as_ref()),
        |((gpu, (fd, view, handle)), gem)| {
            map(gpu, *handle, VA_FOREIGN, SIZE, 0)?;
            exec(gpu, &[vgpu::copy(VA_FOREIGN, VA_GEM, SIZE)])?;
            same_bytes(
                "the dma-buf's bytes",
                &pattern::bytes(51, len),
                &gem.map.read_all(),
            )?;
            exec(gpu, &[vgpu::fill(VA_FOREIGN + 0x1000, 0xf0f0_0f0f, 0x3000)])?;
            let mut expected = pattern::bytes(51, len);
            if let Some(window) = expected.get_mut(0x1000..0x4000) {
                window.copy_from_slice(&filled(0xf0f0_0f0f, 0x3000));
            }
            same_bytes(
                "the fill in the dma-buf mapping",
                &expected,
                &read_map(view, Some(fd.as_fd()))?,
            )?;
            unmap(gpu, VA_FOREIGN, SIZE)
        },
    );
    let what = "foreign (vgem): a 128 KiB window 64 KiB into a mapping made at dma-buf offset 256 KiB holds exactly dma-buf bytes [320 KiB, 448 KiB)";
    ktap.check_after(
        what,
        gpu.zip(from_vgem.as_ref()).zip(gem.as_ref()),
        |((gpu, (fd, _, _)), gem)| {
            let expected = pattern::bytes(52, len);
            let whole = map_fd(fd.as_fd(), 0, SIZE)?;
            write_map(&whole, Some(fd.as_fd()), &expected)?;
            let half = map_fd(fd.as_fd(), SIZE / 2, SIZE / 2)?;
            let answer = op(
                "GEM_USERPTR of the window",
                gpu.userptr(view_addr(&half) + 0x10000, 0x20000, 0),
            )?;
            let handle = userptr_handle(answer, ObjectKind::FOREIGN)?;
            map(gpu, handle, VA_WINDOW, 0x20000, 0)?;
            exec(gpu, &[vgpu::copy(VA_WINDOW, VA_GEM, 0x20000)])?;
            let seen = gem
                .map
                .read(0, 0x20000)
                .map_err(|e| Failure::op("reading", e))?;
            unmap(gpu, VA_WINDOW, 0x20000)?;
            close(gpu, handle)?;
            same_bytes(
                "dma-buf bytes [320 KiB, 448 KiB)",
                expected.get(0x50000..0x70000).unwrap_or_default(),
                &seen,
            )
        },
    );
    let what = "foreign (udmabuf): GEM_USERPTR inside an mmap (at offset 128 KiB) of a udmabuf gives FOREIGN; a GPU COPY gives the memfd's bytes";
    ktap.check_after(what, gpu.zip(gem.as_ref()), |(gpu, gem)| {
        let (memfd, fd) = io_op(
            "a udmabuf over a sealed memfd",
            udmabuf::over_sealed_memfd("extmem-vgpu", SIZE),
        )?;
        let expected = pattern::bytes(53, len);
        let memfd_view = map_fd(memfd.as_fd(), 0, SIZE)?;
        write_map(&memfd_view, None, &expected)?;
        let view = map_fd(fd.as_fd(), 0x20000, SIZE - 0x20000)?;
        let answer = op(
            "GEM_USERPTR on the udmabuf mapping",
            gpu.userptr(view_addr(&view), 0x40000, 0),
        )?;
        let handle = userptr_handle(answer, ObjectKind::FOREIGN)?;
        map(gpu, handle, VA_UDMABUF, 0x40000, 0)?;
        exec(gpu, &[vgpu::copy(VA_UDMABUF, VA_GEM, 0x40000)])?;
        let seen = gem
            .map
            .read(0, 0x40000)
            .map_err(|e| Failure::op("reading", e))?;
        unmap(gpu, VA_UDMABUF, 0x40000)?;
        close(gpu, handle)?;
        same_bytes(
            "memfd bytes [128 KiB, 384 KiB)",
            expected.get(0x20000..0x60000).unwrap_or_default(),
            &seen,
        )
    });
    let what = "foreign: PROBE inside a dma-buf mapping answers FOREIGN with handle 0 and attaches nothing";
    ktap.check_after(what, gpu.zip(from_vgem.as_ref()), |(gpu, (_, view, _))| {
        let before = snapshot(gpu)?;
        let answer = op(
            "GEM_USERPTR(PROBE)",
            gpu.userptr(view_addr(view), SIZE, USERPTR_PROBE),
        )?;
        expect_eq("kind", answer.kind, ObjectKind::FOREIGN)?;
        expect_eq("handle", answer.handle, 0)?;
        expect_snapshot(snapshot(gpu)?, before)
    });
    let what = "foreign: a range running past the end of the dma-buf mapping fails with EFAULT, counters unchanged";
    ktap.check_after(what, gpu.zip(from_vgem.as_ref()), |(gpu, (fd, _, _))| {
        let half = map_fd(fd.as_fd(), 0, SIZE / 2)?;
        rejected(
            gpu,
            "GEM_USERPTR past the mapping's end",
            Errno::FAULT,
            || gpu.userptr(view_addr(&half) + SIZE / 4, SIZE / 2, 0),
        )
    });
    let what = "foreign: a PROT_READ dma-buf mapping without READ_ONLY fails with EFAULT; with READ_ONLY it imports read-only";
    ktap.check_after(what, gpu.zip(vgem), |(gpu, vgem)| {
        let fd = vgem.dumb_dma_buf(SIZE)?;
        let ptr = io_op(
            "mmap(PROT_READ) of the dma-buf",
            read_only_mapping(fd.as_fd(), len),
        )?;
        let addr = ptr.addr();
        rejected(
            gpu,
            "GEM_USERPTR for writing on a PROT_READ mapping",
            Errno::FAULT,
            || gpu.userptr(addr, SIZE, 0),
        )?;
        let answer = op(
            "GEM_USERPTR(READ_ONLY)",
            gpu.userptr(addr, SIZE, FLAG_READ_ONLY),
        )?;
        let handle = userptr_handle(answer, ObjectKind::FOREIGN)?;
        let info = expect_info(gpu, handle, ObjectKind::FOREIGN, SIZE, true);
        close(gpu, handle)?;
        info.map(|_| ())
    });
    ktap.check_after(
        "foreign: after UNMAP and GEM_CLOSE the attachments are given back",
        gpu.zip(start),
        move |(gpu, start)| {
            let mut result = Ok(());
            if let Some((_, _, handle)) = from_vgem.as_ref() {
                result = close(gpu, *handle);
            }
            if let Some(gem) = gem {
                result = result
                    .and_then(|()| unmap(gpu, VA_GEM, SIZE))
                    .and_then(|()| close(gpu, gem.handle));
                // Its CPU mapping holds a reference to the object.
                drop(gem);
            }
            drop(from_vgem);
            result?;
            let now = snapshot(gpu)?;
            expect_snapshot(now, tables_aside(start, now))
        },
    );
}

fn view_addr(view: &SharedMapping) -> u64 {
    view.addr()
}

/// A `PROT_READ`, `MAP_SHARED` mapping of `len` bytes of `fd`.
fn read_only_mapping(fd: BorrowedFd<'_>, len: usize) -> io::Result<ReadOnlyMapping> {
    ReadOnlyMapping::new(fd, len)
}

/// A read-only shared mapping, only ever handed to the kernel by address.
///
/// # Invariants
///
/// `base`/`len` describe a live mapping owned by this value.
struct ReadOnlyMapping {
    base: *mut std::ffi::c_void,
    len: usize,
}

impl ReadOnlyMapping {
    fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping at a kernel-chosen address overlaps nothing Rust uses; it is
        // never dereferenced here.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        Ok(Self { base, len })
    }

    fn addr(&self) -> u64 {
        self.base as u64
    }
}

impl Drop for ReadOnlyMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by this value (type invariant) and unmapped once.
        if let Err(err) = unsafe { rustix::mm::munmap(self.base, self.len) } {
            eprintln!("munmap failed: {err}");
        }
    }
}

// ---- 2 MiB blocks -----------------------------------------------------------------------

/// A 2 MiB-aligned, physically contiguous 2 MiB of host memory: a transparent huge page
/// (`MADV_HUGEPAGE`), else a hugetlb page. Returns the mapping, the offset of the 2 MiB in it,
/// the physical address and how it was obtained.
fn contiguous_2m() -> CheckResult<(AnonMapping, usize, u64, &'static str)> {
    let thp = || -> CheckResult<(AnonMapping, usize)> {
        let mapping = io_op("mmap 4 MiB", AnonMapping::read_write(2 * SIZE_2M_LEN))?;
        let offset = as_len(SIZE_2M.wrapping_sub(mapping.addr() % SIZE_2M) % SIZE_2M)?;
        io_op(
            "madvise(MADV_HUGEPAGE)",
            mapping.advise(offset, SIZE_2M_LEN, Advice::LinuxHugepage),
        )?;
        write_raw(&mapping, offset, &pattern::bytes(61, SIZE_2M_LEN))?;
        Ok((mapping, offset))
    };
    let hugetlb = || -> CheckResult<(AnonMapping, usize)> {
        // Reserve two huge pages for the test (the guest boots with none).
        std::fs::write("/proc/sys/vm/nr_hugepages", "2")
            .map_err(|e| Failure::op("writing /proc/sys/vm/nr_hugepages", e))?;
        let mapping = io_op(
            "mmap(MAP_HUGETLB | MAP_HUGE_2MB) of 2 MiB",
            AnonMapping::new(
                SIZE_2M_LEN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::HUGETLB | MapFlags::HUGE_2MB,
            ),
        )?;
        write_raw(&mapping, 0, &pattern::bytes(61, SIZE_2M_LEN))?;
        Ok((mapping, 0))
    };
    let mut tried = Vec::new();
    for (how, attempt) in [
        ("transparent huge page", &thp as &dyn Fn() -> _),
        ("hugetlb page", &hugetlb),
    ] {
        match attempt().and_then(|(mapping, offset)| {
            let pa = contiguous_pa(&mapping, offset)?;
            Ok((mapping, offset, pa))
        }) {
            Ok((mapping, offset, pa)) => return Ok((mapping, offset, pa, how)),
            Err(failure) => tried.push(format!("{how}: {}", failure.seen)),
        }
    }
    Err(Failure::new(
        "a physically contiguous 2 MiB",
        tried.join("; "),
    ))
}

/// The physical address of the 2 MiB at `offset` if pagemap shows 512 consecutive frames
/// starting 2 MiB-aligned.
fn contiguous_pa(mapping: &AnonMapping, offset: usize) -> CheckResult<u64> {
    let base = mapping.addr() + offset as u64;
    let first = io_op("pagemap", host_memory::physical_address(base))?
        .ok_or_else(|| Failure::new("a present page", "not present"))?;
    if first % SIZE_2M != 0 {
        return Err(Failure::new("a 2 MiB-aligned frame", format!("{first:#x}")));
    }
    for page in 1..512 {
        let pa = io_op("pagemap", host_memory::physical_address(base + page * PAGE))?;
        if pa != Some(first + page * PAGE) {
            return Err(Failure::new(
                format!("page {page} at {:#x}", first + page * PAGE),
                format!("{pa:x?}"),
            ));
        }
    }
    Ok(first)
}

fn blocks(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    const VA_BLOCK: u64 = 5 * SLOT;
    const VA_PAGES: u64 = 6 * SLOT;
    const VA_GEM: u64 = 7 * SLOT;
    let what = "2 MiB: a 2 MiB-aligned, physically contiguous host buffer exists (pagemap: 512 consecutive frames)";
    let huge = ktap.check_after(what, gpu, |_| {
        let found = contiguous_2m()?;
        Ok(found)
    });
    if let Some((_, _, _, how)) = huge.as_ref() {
        ktap.diagnostic(format_args!("2 MiB host buffer: {how}"));
    }
    let what = "2 MiB: pinned and bound at a 2 MiB-aligned VA, VM_QUERY reports 2 MiB leaves at the pagemap address; 2 new table pages (4 KiB pages need 3)";
    let bound = ktap.check_after(
        what,
        gpu.zip(huge.as_ref()),
        |(gpu, (mapping, offset, pa, _))| {
            let answer = op(
                "GEM_USERPTR of the 2 MiB",
                gpu.userptr(mapping.addr() + *offset as u64, SIZE_2M, 0),
            )?;
            let handle = userptr_handle(answer, ObjectKind::USERPTR)?;
            let before = counters(gpu)?;
            map(gpu, handle, VA_BLOCK, SIZE_2M, 0)?;
            let block_tables = counters(gpu)?.pt_pages - before.pt_pages;
            for probe in [0, 0x1000, 0x12_3000, SIZE_2M - PAGE] {
                let query = op("VM_QUERY", gpu.vm_query(VA_BLOCK + probe))?;
                expect_eq(
                    &format!("page size at +{probe:#x}"),
                    query.page_size,
                    SIZE_2M,
                )?;
                expect_eq(
                    &format!("physical address at +{probe:#x}"),
                    query.pa,
                    pa + probe,
                )?;
            }
            // The same size from a shmem object (not contiguous) needs a level-3 table.
            let gem = op("GEM_CREATE 2 MiB", gpu.gem_create(SIZE_2M))?;
            let before = counters(gpu)?;
            map(gpu, gem, VA_PAGES, SIZE_2M, 0)?;
            let page_tables = counters(gpu)?.pt_pages - before.pt_pages;
            let query = op("VM_QUERY", gpu.vm_query(VA_PAGES))?;
            unmap(gpu, VA_PAGES, SIZE_2M)?;
            close(gpu, gem)?;
            expect_eq("page size of the shmem object", query.page_size, PAGE)?;
            expect_eq(
                "new table pages for (2 MiB block, 4 KiB pages)",
                (block_tables, page_tables),
                (2, 3),
            )?;
            Ok(handle)
        },
    );
    ktap.check_after(
        "2 MiB: a GPU COPY through the block reads the huge page's bytes",
        gpu.zip(bound),
        |(gpu, _)| {
            let gem = create_gem(gpu, SIZE_2M)?;
            map(gpu, gem.handle, VA_GEM, SIZE_2M, 0)?;
            exec(gpu, &[vgpu::copy(VA_BLOCK, VA_GEM, SIZE_2M)])?;
            let seen = gem.map.read_all();
            unmap(gpu, VA_GEM, SIZE_2M)?;
            close(gpu, gem.handle)?;
            same_bytes(
                "the huge page's bytes",
                &pattern::bytes(61, SIZE_2M_LEN),
                &seen,
            )
        },
    );
    let what = "2 MiB: UNMAP of half the block binding fails with ENOENT (UNMAP takes whole bindings, so no split), the block still translates";
    ktap.check_after(what, gpu.zip(bound), |(gpu, _)| {
        rejected(gpu, "UNMAP of the first 1 MiB", Errno::NOENT, || {
            gpu.unmap(VA_BLOCK, MIB)
        })?;
        let query = op("VM_QUERY", gpu.vm_query(VA_BLOCK + MIB))?;
        expect_eq("page size", query.page_size, SIZE_2M)
    });
    if let (Some(gpu), Some(handle)) = (gpu, bound) {
        if let Err(f) = unmap(gpu, VA_BLOCK, SIZE_2M).and_then(|()| close(gpu, handle)) {
            ktap.diagnostic(format_args!("2 MiB cleanup: {}", f.seen));
        }
    }
}

// ---- pin forms: huge pages as runs, scattered pages as a page array ---------------------

/// Imports `[offset, offset + len)` of `mapping` (whose bytes are `bytes`), binds it, and
/// checks every 64th page's translation against pagemap and a GPU copy of all of it.
fn pinned_range_translates(
    gpu: &Vgpu,
    mapping: &AnonMapping,
    bytes: &[u8],
    offset: usize,
    len: usize,
) -> CheckResult<()> {
    const VA: u64 = 11 * SLOT;
    const VA_GEM: u64 = 11 * SLOT + 16 * MIB;
    let size = len as u64;
    let before = counters(gpu)?;
    let answer = op(
        "GEM_USERPTR",
        gpu.userptr(mapping.addr() + offset as u64, size, 0),
    )?;
    let handle = userptr_handle(answer, ObjectKind::USERPTR)?;
    let checked = (|| {
        expect_eq(
            "pinned pages",
            counters(gpu)?.pinned_pages,
            before.pinned_pages + size / PAGE,
        )?;
        map(gpu, handle, VA, size, 0)?;
        let mut probe = 0;
        while probe < size {
            let query = op("VM_QUERY", gpu.vm_query(VA + probe))?;
            let pa = io_op(
                "reading /proc/self/pagemap",
                host_memory::physical_address(mapping.addr() + offset as u64 + probe),
            )?;
            expect_eq(
                &format!("physical address at +{probe:#x}"),
                Some(query.pa),
                pa,
            )?;
            probe += 64 * PAGE + PAGE;
        }
        let gem = create_gem(gpu, size)?;
        map(gpu, gem.handle, VA_GEM, size, 0)?;
        exec(gpu, &[vgpu::copy(VA, VA_GEM, size)])?;
        let seen = gem.map.read_all();
        unmap(gpu, VA_GEM, size)?;
        close(gpu, gem.handle)?;
        unmap(gpu, VA, size)?;
        same_bytes(
            "the imported range's bytes",
            &bytes[offset..offset + len],
            &seen,
        )
    })();
    close(gpu, handle)?;
    checked?;
    expect_eq(
        "pinned pages after GEM_CLOSE",
        counters(gpu)?.pinned_pages,
        before.pinned_pages,
    )
}

/// 10 MiB of anonymous memory whose 2 MiB-aligned middle 4 MiB (at least 2 MiB in)
/// asks for huge pages (`MADV_HUGEPAGE`) and whose rest (at least 2 MiB after) has 4 KiB
/// pages only; every byte written. Returns the mapping, its bytes and the offset of the
/// huge part.
fn half_huge() -> CheckResult<(AnonMapping, Vec<u8>, usize)> {
    let len = 5 * SIZE_2M_LEN;
    let mapping = io_op("mmap 10 MiB", AnonMapping::read_write(len))?;
    let huge = as_len(SIZE_2M.wrapping_sub(mapping.addr() % SIZE_2M) % SIZE_2M)? + SIZE_2M_LEN;
    io_op(
        "madvise(MADV_NOHUGEPAGE)",
        mapping.advise(0, len, Advice::LinuxNoHugepage),
    )?;
    io_op(
        "madvise(MADV_HUGEPAGE)",
        mapping.advise(huge, 2 * SIZE_2M_LEN, Advice::LinuxHugepage),
    )?;
    let bytes = pattern::bytes(71, len);
    write_raw(&mapping, 0, &bytes)?;
    Ok((mapping, bytes, huge))
}

fn pin_forms(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    let what = "pin forms: 10 MiB of anonymous memory, huge pages asked for in its 2 MiB-aligned middle 4 MiB only, written";
    let memory = ktap.check_after(what, gpu, |_| half_huge());
    if let Some((mapping, _, huge)) = memory.as_ref() {
        let form = match contiguous_pa(mapping, *huge) {
            Ok(_) => "a transparent huge page".to_string(),
            Err(f) => format!("not one huge page ({})", f.seen),
        };
        ktap.diagnostic(format_args!(
            "pin forms: the middle's first 2 MiB is {form}"
        ));
    }
    // (what, start relative to the first huge page, length): ranges whose pin takes each
    // form, runs of huge pages and 4 KiB pages in either order.
    let forms: [(&str, isize, usize); 3] = [
        (
            "pin forms: huge pages then 4 KiB pages (4 MiB + 256 KiB from a 2 MiB boundary) pin, translate as pagemap says, copy right and unpin on close",
            0,
            2 * SIZE_2M_LEN + 64 * PAGE_LEN,
        ),
        (
            "pin forms: 4 KiB pages then huge pages (64 KiB before a 2 MiB boundary to 4 MiB past it) pin, translate as pagemap says, copy right and unpin on close",
            -16 * PAGE_LEN as isize,
            2 * SIZE_2M_LEN + 16 * PAGE_LEN,
        ),
        (
            "pin forms: a huge page then 1 MiB of 4 KiB pages (runs that stop paying mid-way) pin, translate as pagemap says, copy right and unpin on close",
            SIZE_2M_LEN as isize,
            SIZE_2M_LEN + MIB_LEN,
        ),
    ];
    for (what, from_huge, len) in forms {
        ktap.check_after(
            what,
            gpu.zip(memory.as_ref()),
            |(gpu, (mapping, bytes, huge))| {
                pinned_range_translates(
                    gpu,
                    mapping,
                    bytes,
                    huge.wrapping_add_signed(from_huge),
                    len,
                )
            },
        );
    }
}

// ---- rejections -------------------------------------------------------------------------

fn rejections(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    const VA: u64 = 8 * SLOT;
    let buffer = HeapBuffer::new(0x10000, 4096).ok();
    let ptr = buffer.as_ref().map_or(0, RawBytes::addr);
    let object = gpu.and_then(|gpu| {
        let gem = gpu.gem_create(0x10000).ok()?;
        gpu.map(gem, VA, 0, 0x10000, 0).ok()?;
        Some(gem)
    });
    let read_only = AnonMapping::read_write(0x10000).ok();
    if let Some(mapping) = read_only.as_ref() {
        let _ = write_raw(mapping, 0, &[1]);
        if let Err(err) = mapping.protect(MprotectFlags::READ) {
            ktap.diagnostic(format_args!("mprotect failed: {err}"));
        }
    }
    let no_access = AnonMapping::new(0x10000, ProtFlags::empty(), MapFlags::empty()).ok();
    let half_mapped = AnonMapping::read_write(0x2000).ok().inspect(|m| {
        // Unmap the second page so the range is mapped, then not.
        // SAFETY: the page lies inside the mapping `m` owns; no reference into it exists, and
        // `Drop` unmapping an already unmapped page is harmless (munmap of a hole succeeds).
        let _ = unsafe { rustix::mm::munmap((m.addr() + PAGE) as *mut std::ffi::c_void, PAGE_LEN) };
    });

    let userptr = |args: GemUserptr| {
        move |gpu: &Vgpu| {
            let mut args = args;
            gpu.userptr_raw(&mut args).map(|()| args)
        }
    };
    let base = GemUserptr {
        ptr,
        size: 0x10000,
        ..GemUserptr::default()
    };
    type Attempt<'a> = Box<dyn Fn(&Vgpu) -> Result<String, Errno> + 'a>;
    fn boxed<'a, T: fmt::Debug>(f: impl Fn(&Vgpu) -> Result<T, Errno> + 'a) -> Attempt<'a> {
        Box::new(move |gpu| f(gpu).map(|v| format!("{v:?}")))
    }
    let handle = object.map_or(0, |h| h.0.get());
    let bind = move |args: VmBind| {
        move |gpu: &Vgpu| {
            let mut args = args;
            gpu.vm_bind_raw(&mut args)
        }
    };
    let bind_base = VmBind {
        op: BindOp::MAP,
        handle,
        va: VA + 0x100_0000,
        size: 0x10000,
        ..VmBind::default()
    };
    let exec_raw = |count: u32, cmds: u64| {
        move |gpu: &Vgpu| {
            let mut args = Exec {
                cmds,
                count,
                ..Exec::default()
            };
            gpu.exec_raw(&mut args).map(|()| args)
        }
    };
    let one_copy = [vgpu::copy(VA, VA + 0x8000, 0x1000)];
    let bad_op = [
        vgpu::fill(VA, 1, 0x1000),
        Cmd {
            op: CmdOp(9),
            ..Cmd::default()
        },
    ];
    let unaligned_fill = [vgpu::fill(VA, 1, 6)];
    let too_many = vec![vgpu::fill(VA, 1, 4); usize::try_from(MAX_EXEC_CMDS).unwrap_or(1024) + 1];
    let ro_addr = read_only.as_ref().map_or(0, RawBytes::addr);
    let none_addr = no_access.as_ref().map_or(0, RawBytes::addr);
    let half_addr = half_mapped.as_ref().map_or(0, RawBytes::addr);
    let hole = host_memory::unmapped_range(0x10000).unwrap_or(0);

    let cases: Vec<(&str, Errno, Attempt<'_>)> = vec![
        (
            "GEM_USERPTR: a pointer off the 4 KiB alignment (ptr + 1)",
            Errno::INVAL,
            boxed(userptr(GemUserptr {
                ptr: ptr + 1,
                ..base
            })),
        ),
        (
            "GEM_USERPTR: a size that is not a multiple of 4 KiB (4097)",
            Errno::INVAL,
            boxed(userptr(GemUserptr { size: 4097, ..base })),
        ),
        (
            "GEM_USERPTR: size 0",
            Errno::INVAL,
            boxed(userptr(GemUserptr { size: 0, ..base })),
        ),
        (
            "GEM_USERPTR: ptr + size wraps around (ptr 2^64 - 4 KiB, 8 KiB)",
            Errno::OVERFLOW,
            boxed(userptr(GemUserptr {
                ptr: u64::MAX - 0xfff,
                size: 0x2000,
                ..base
            })),
        ),
        (
            "GEM_USERPTR: a size above MAX_MAPPING",
            Errno::RANGE,
            boxed(userptr(GemUserptr {
                size: VGPU.max_mapping + PAGE,
                ..base
            })),
        ),
        (
            "GEM_USERPTR: an unknown flag (1 << 7)",
            Errno::INVAL,
            boxed(userptr(GemUserptr {
                flags: 1 << 7,
                ..base
            })),
        ),
        (
            "GEM_USERPTR: non-zero padding",
            Errno::INVAL,
            boxed(userptr(GemUserptr { pad: 1, ..base })),
        ),
        (
            "GEM_USERPTR: an unmapped range",
            Errno::FAULT,
            boxed(userptr(GemUserptr { ptr: hole, ..base })),
        ),
        (
            "GEM_USERPTR: a range whose second page is unmapped (the first page's pin is undone)",
            Errno::FAULT,
            boxed(userptr(GemUserptr {
                ptr: half_addr,
                size: 0x2000,
                ..base
            })),
        ),
        (
            "GEM_USERPTR: a PROT_READ range without READ_ONLY",
            Errno::FAULT,
            boxed(userptr(GemUserptr {
                ptr: ro_addr,
                ..base
            })),
        ),
        (
            "GEM_USERPTR(PROBE): a PROT_READ range without READ_ONLY",
            Errno::FAULT,
            boxed(userptr(GemUserptr {
                ptr: ro_addr,
                flags: USERPTR_PROBE,
                ..base
            })),
        ),
        (
            "GEM_USERPTR(READ_ONLY): a PROT_NONE range",
            Errno::FAULT,
            boxed(userptr(GemUserptr {
                ptr: none_addr,
                flags: FLAG_READ_ONLY,
                ..base
            })),
        ),
        (
            "GEM_CREATE: size 0",
            Errno::INVAL,
            boxed(|gpu: &Vgpu| {
                let mut a = GemCreate::default();
                gpu.gem_create_raw(&mut a).map(|()| a)
            }),
        ),
        (
            "GEM_CREATE: a size that is not a multiple of 4 KiB",
            Errno::INVAL,
            boxed(|gpu: &Vgpu| {
                let mut a = GemCreate {
                    size: 0x1800,
                    ..GemCreate::default()
                };
                gpu.gem_create_raw(&mut a).map(|()| a)
            }),
        ),
        (
            "GEM_CREATE: an unknown flag",
            Errno::INVAL,
            boxed(|gpu: &Vgpu| {
                let mut a = GemCreate {
                    size: 0x1000,
                    flags: 1,
                    handle: 0,
                };
                gpu.gem_create_raw(&mut a).map(|()| a)
            }),
        ),
        (
            "GEM_CREATE: all of RAM, more than the device budget (3/4 of RAM), fails with ENOMEM at once",
            Errno::NOMEM,
            boxed(|gpu: &Vgpu| gpu.gem_create(ram_bytes() & !(PAGE - 1))),
        ),
        (
            "GEM_CREATE: a second half of RAM while the first lives (the total over the budget) fails with ENOMEM",
            Errno::NOMEM,
            boxed(|gpu: &Vgpu| {
                let half = (ram_bytes() / 2) & !(PAGE - 1);
                let first = gpu.gem_create(half)?;
                let second = gpu.gem_create(half);
                for handle in std::iter::once(first).chain(second.ok()) {
                    let _ = gpu.close(handle);
                }
                second
            }),
        ),
        (
            "GEM_INFO: a handle that does not exist",
            Errno::NOENT,
            boxed(|gpu: &Vgpu| {
                let mut a = GemInfo {
                    handle: 0xffff,
                    ..GemInfo::default()
                };
                gpu.gem_info_raw(&mut a).map(|()| a)
            }),
        ),
        (
            "GEM_INFO: non-zero padding",
            Errno::INVAL,
            boxed(move |gpu: &Vgpu| {
                let mut a = GemInfo {
                    handle,
                    pad: 1,
                    ..GemInfo::default()
                };
                gpu.gem_info_raw(&mut a).map(|()| a)
            }),
        ),
        (
            "VM_BIND: a VA at the end of the 48-bit space (1 << 48)",
            Errno::RANGE,
            boxed(bind(VmBind {
                va: 1 << 48,
                ..bind_base
            })),
        ),
        (
            "VM_BIND: a range crossing the end of the VA space",
            Errno::RANGE,
            boxed(bind(VmBind {
                va: (1 << 48) - 0x8000,
                ..bind_base
            })),
        ),
        (
            "VM_BIND: a VA off the 4 KiB alignment",
            Errno::INVAL,
            boxed(bind(VmBind {
                va: VA + 0x100_0800,
                ..bind_base
            })),
        ),
        (
            "VM_BIND: size 0",
            Errno::INVAL,
            boxed(bind(VmBind {
                size: 0,
                ..bind_base
            })),
        ),
        (
            "VM_BIND: va + size wraps around",
            Errno::OVERFLOW,
            boxed(bind(VmBind {
                va: u64::MAX - 0xfff,
                size: 0x2000,
                ..bind_base
            })),
        ),
        (
            "VM_BIND: an object range past the object's end (offset 32 KiB + 64 KiB of 64 KiB)",
            Errno::RANGE,
            boxed(bind(VmBind {
                offset: 0x8000,
                ..bind_base
            })),
        ),
        (
            "VM_BIND: a range overlapping an existing binding",
            Errno::EXIST,
            boxed(bind(VmBind {
                va: VA + 0x8000,
                ..bind_base
            })),
        ),
        (
            "VM_BIND: a handle that does not exist",
            Errno::NOENT,
            boxed(bind(VmBind {
                handle: 0xffff,
                ..bind_base
            })),
        ),
        (
            "VM_BIND: an unknown op (7)",
            Errno::INVAL,
            boxed(bind(VmBind {
                op: BindOp(7),
                ..bind_base
            })),
        ),
        (
            "VM_BIND: an unknown flag (1 << 5)",
            Errno::INVAL,
            boxed(bind(VmBind {
                flags: 1 << 5,
                ..bind_base
            })),
        ),
        (
            "VM_BIND: non-zero padding",
            Errno::INVAL,
            boxed(bind(VmBind {
                pad: 1,
                ..bind_base
            })),
        ),
        (
            "VM_BIND UNMAP: no binding starts at that VA",
            Errno::NOENT,
            boxed(bind(VmBind {
                op: BindOp::UNMAP,
                handle: 0,
                va: VA + 0x200_0000,
                ..bind_base
            })),
        ),
        (
            "EXEC: count 0",
            Errno::INVAL,
            boxed(exec_raw(0, one_copy.as_ptr() as u64)),
        ),
        (
            "EXEC: count above MAX_EXEC_CMDS",
            Errno::INVAL,
            boxed(exec_raw(MAX_EXEC_CMDS + 1, too_many.as_ptr() as u64)),
        ),
        (
            "EXEC: a command pointer into an unmapped range",
            Errno::FAULT,
            boxed(exec_raw(1, hole)),
        ),
        (
            "EXEC: an unknown command op",
            Errno::INVAL,
            boxed(exec_raw(2, bad_op.as_ptr() as u64)),
        ),
        (
            "EXEC: a FILL whose size is not a multiple of 4",
            Errno::INVAL,
            boxed(exec_raw(1, unaligned_fill.as_ptr() as u64)),
        ),
        (
            "VM_QUERY: non-zero padding",
            Errno::INVAL,
            boxed(|gpu: &Vgpu| {
                let mut a = VmQuery {
                    va: VA,
                    pad: 1,
                    ..VmQuery::default()
                };
                gpu.vm_query_raw(&mut a).map(|()| a)
            }),
        ),
        (
            "VM_QUERY: a VA outside the VA space",
            Errno::RANGE,
            boxed(|gpu: &Vgpu| gpu.vm_query(1 << 48)),
        ),
        (
            "PRIME_FD_TO_HANDLE: a memfd, not a dma-buf",
            Errno::INVAL,
            boxed(|gpu: &Vgpu| {
                let memfd = memfd_create("not-a-dma-buf", MemfdFlags::CLOEXEC)?;
                gpu.import(memfd.as_fd())
                    .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
            }),
        ),
    ];
    for (what, errno, attempt) in cases {
        ktap.check_after(
            &format!(
                "rejected with {}: {what}; counters unchanged",
                errno_name(errno)
            ),
            gpu,
            |gpu| rejected(gpu, what, errno, || attempt(gpu)),
        );
    }

    let what = "GEM_USERPTR: the 1025th host-pointer object of one file fails with ENOSPC (the file's pin ledger holds 1024); counters unchanged; closing the file gives all back";
    ktap.check_after(what, gpu, |gpu| {
        let before = snapshot(gpu)?;
        let page = io_op("allocating a page", HeapBuffer::new(PAGE_LEN, 4096))?;
        {
            let file = Vgpu::open().map_err(|e| Failure::op("opening a second file", e))?;
            for index in 0..1024 {
                op(
                    format!("GEM_USERPTR number {}", index + 1),
                    file.userptr(page.addr(), PAGE, 0),
                )?;
            }
            rejected(gpu, "the 1025th GEM_USERPTR", Errno::NOSPC, || {
                file.userptr(page.addr(), PAGE, 0)
            })?;
        }
        expect_snapshot(snapshot(gpu)?, before)
    });
    let what = "VM_BIND: the 4097th binding of one file fails with ENOSPC (the binding table holds 4096); counters unchanged; closing the file gives all back";
    ktap.check_after(what, gpu, |gpu| {
        let before = snapshot(gpu)?;
        {
            let file = Vgpu::open().map_err(|e| Failure::op("opening a second file", e))?;
            let object = op("GEM_CREATE", file.gem_create(PAGE))?;
            for index in 0..4096 {
                op(
                    format!("VM_BIND number {}", index + 1),
                    file.map(object, VA + index * PAGE, 0, PAGE, 0),
                )?;
            }
            rejected(gpu, "the 4097th VM_BIND", Errno::NOSPC, || {
                file.map(object, VA + 4096 * PAGE, 0, PAGE, 0)
            })?;
        }
        expect_snapshot(snapshot(gpu)?, before)
    });
    let what = "EXEC: a COPY to an unmapped VA fails with EIO, fault UNMAPPED at that VA, command 1; command 0 ran";
    ktap.check_after(what, gpu.zip(object), |(gpu, _)| {
        let hole_va = VA + 0x80_0000;
        let cmds = [
            vgpu::fill(VA, 0x0bad_cafe, 0x1000),
            vgpu::copy(VA, hole_va + 0x40, 0x100),
        ];
        let before = snapshot(gpu)?;
        let result = gpu.exec(&cmds);
        expect_snapshot(snapshot(gpu)?, before)?;
        match result {
            Err((Errno::IO, args)) => {
                expect_eq("fault kind", args.fault_kind, FaultKind::UNMAPPED)?;
                expect_eq("fault VA", args.fault_va, hole_va + 0x40)?;
                expect_eq("fault command", args.fault_cmd, 1)?;
            }
            other => {
                return Err(Failure::new(
                    "EIO with an UNMAPPED fault",
                    format!("{other:?}"),
                ))
            }
        }
        // Command 0 filled the object: copy it out through the GPU to see.
        let check = io_op("allocating", HeapBuffer::new(0x1000, 4096))?;
        let handle = userptr_handle(
            op("GEM_USERPTR", gpu.userptr(check.addr(), 0x1000, 0))?,
            ObjectKind::USERPTR,
        )?;
        map(gpu, handle, VA + 0x40_0000, 0x1000, 0)?;
        exec(gpu, &[vgpu::copy(VA, VA + 0x40_0000, 0x1000)])?;
        unmap(gpu, VA + 0x40_0000, 0x1000)?;
        close(gpu, handle)?;
        same_bytes(
            "command 0's fill",
            &filled(0x0bad_cafe, 0x1000),
            &read_raw(&check, 0, 0x1000)?,
        )
    });
    if let (Some(gpu), Some(object)) = (gpu, object) {
        if let Err(f) = unmap(gpu, VA, 0x10000).and_then(|()| close(gpu, object)) {
            ktap.diagnostic(format_args!("rejection cleanup: {}", f.seen));
        }
    }
    drop(buffer);
}

// ---- RLIMIT_MEMLOCK ---------------------------------------------------------------------

/// The checks `vgpu child-memlock` reports, in order.
const MEMLOCK_CHECKS: [&str; 4] = [
    "RLIMIT_MEMLOCK: as uid 65534 with a 64 KiB limit, pinning 1 MiB fails with ENOMEM; VmPin stays 0, nothing pinned",
    "RLIMIT_MEMLOCK: PROBE of 1 MiB fails with ENOMEM too",
    "RLIMIT_MEMLOCK: 32 KiB within the limit pins (VmPin 32 kB) and GEM_CLOSE unpins it (VmPin 0)",
    "unprivileged VM_QUERY (uid 65534, no CAP_SYS_ADMIN): a bound VA reads as mapped with physical address 0",
];

const MEMLOCK_LIMIT: u64 = 64 * 1024;

fn memlock(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    let before = gpu.map(snapshot).and_then(Result::ok);
    let reported = child_process::run_self(&["child-memlock"], CHILD_LIMIT).map(|run| run.lines);
    for (index, description) in MEMLOCK_CHECKS.iter().enumerate() {
        match &reported {
            Ok(lines) => match lines.get(index).map(|l| child_process::parse_line(l)) {
                Some(Ok(())) => ktap.pass(description),
                Some(Err(failure)) => ktap.fail(description, &failure),
                None => ktap.fail(
                    description,
                    &Failure::new(
                        "a result line from the child",
                        format!("{} lines: {lines:?}", lines.len()),
                    ),
                ),
            },
            Err(failure) => ktap.fail(description, failure),
        }
    }
    let what = "RLIMIT_MEMLOCK: after the child exits the device holds no more pinned pages or objects, and the kernel no more pins, than before";
    ktap.check_after(what, gpu.zip(before), |(gpu, before)| {
        expect_snapshot(snapshot(gpu)?, before)
    });
}

fn child_memlock() -> ExitCode {
    let results = memlock_child_checks();
    for result in &results {
        child_process::report(result);
    }
    ExitCode::SUCCESS
}

fn memlock_child_checks() -> [CheckResult<()>; 4] {
    let setup = || -> CheckResult<(Vgpu, HeapBuffer)> {
        // Opened as root: the render node is 0600 root in the guest's devtmpfs.
        let gpu = Vgpu::open().map_err(|e| Failure::op("opening extmem-vgpu", e))?;
        let buffer = io_op("allocating 1 MiB", HeapBuffer::new(MIB_LEN, 4096))?;
        let limit = rustix::process::Rlimit {
            current: Some(MEMLOCK_LIMIT),
            maximum: Some(MEMLOCK_LIMIT),
        };
        io_op(
            "setrlimit(RLIMIT_MEMLOCK, 64 KiB)",
            rustix::process::setrlimit(rustix::process::Resource::Memlock, limit)
                .map_err(io::Error::from),
        )?;
        drop_privileges()?;
        Ok((gpu, buffer))
    };
    let (gpu, buffer) = match setup() {
        Ok(state) => state,
        Err(failure) => {
            return [
                Err(failure.clone()),
                Err(failure.clone()),
                Err(failure.clone()),
                Err(failure),
            ]
        }
    };
    let vm_pin = || io_op("reading VmPin", host_memory::vm_pin_kib("self"));
    let over = (|| {
        expect_errno(
            "GEM_USERPTR of 1 MiB",
            gpu.userptr(buffer.addr(), MIB, 0),
            Errno::NOMEM,
        )?;
        expect_eq("VmPin (kB)", vm_pin()?, 0)?;
        expect_eq(
            "device pinned pages",
            op("GET_PARAM", gpu.get_param(Param::PINNED_PAGES))?,
            0,
        )
    })();
    let probe = expect_errno(
        "GEM_USERPTR(PROBE) of 1 MiB",
        gpu.userptr(buffer.addr(), MIB, USERPTR_PROBE),
        Errno::NOMEM,
    );
    let within = (|| {
        let answer = op(
            "GEM_USERPTR of 32 KiB",
            gpu.userptr(buffer.addr(), 0x8000, 0),
        )?;
        let handle = userptr_handle(answer, ObjectKind::USERPTR)?;
        expect_eq("VmPin (kB) while pinned", vm_pin()?, 32)?;
        close(&gpu, handle)?;
        expect_eq("VmPin (kB) after GEM_CLOSE", vm_pin()?, 0)
    })();
    let query = (|| {
        const VA: u64 = 10 * SLOT;
        let answer = op("GEM_USERPTR of 4 KiB", gpu.userptr(buffer.addr(), PAGE, 0))?;
        let handle = userptr_handle(answer, ObjectKind::USERPTR)?;
        map(&gpu, handle, VA, PAGE, 0)?;
        let query = op("VM_QUERY", gpu.vm_query(VA))?;
        unmap(&gpu, VA, PAGE)?;
        close(&gpu, handle)?;
        expect_eq("flags", query.flags, QUERY_MAPPED)?;
        expect_eq("page size", query.page_size, PAGE)?;
        expect_eq("physical address", query.pa, 0)
    })();
    [over, probe, within, query]
}

/// setgroups([]), setresgid and setresuid to 65534 (nobody): with every uid non-zero the
/// kernel clears the capability sets, so CAP_IPC_LOCK no longer lifts RLIMIT_MEMLOCK.
fn drop_privileges() -> CheckResult<()> {
    use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
    let gid = rustix::process::Gid::from_raw(65534);
    let uid = rustix::process::Uid::from_raw(65534);
    // This program is single-threaded, so the per-thread syscalls change the whole process.
    io_op(
        "setgroups([])",
        set_thread_groups(&[]).map_err(io::Error::from),
    )?;
    io_op(
        "setresgid(65534)",
        set_thread_res_gid(gid, gid, gid).map_err(io::Error::from),
    )?;
    io_op(
        "setresuid(65534)",
        set_thread_res_uid(uid, uid, uid).map_err(io::Error::from),
    )?;
    Ok(())
}

// ---- a killed process -------------------------------------------------------------------

/// What `vgpu child-hold` sets up: 5 objects (userptr, shmem, vgem and udmabuf imports, a
/// foreign window of the udmabuf), 5 bindings, 3 attachments, 256 pinned pages.
const HOLD_OBJECTS: u64 = 5;
const HOLD_ATTACHMENTS: u64 = 3;
const HOLD_PINNED: u64 = 256;

fn killed_process(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    let before = gpu.map(snapshot).and_then(Result::ok);
    let what = "SIGKILL: a child holding a pin, imports, a foreign object and 5 bindings shows in every counter and its VmPin";
    let child = ktap.check_after(what, gpu.zip(before), |(gpu, start)| {
        let mut child = spawn_hold()?;
        let checked = (|| {
            let held = snapshot(gpu)?;
            if held.pins < start.pins + i64::try_from(HOLD_PINNED).unwrap_or(i64::MAX) {
                return Err(Failure::new(
                    format!(
                        "at least {HOLD_PINNED} more FOLL_PIN pins than {}",
                        start.pins
                    ),
                    held.pins.to_string(),
                ));
            }
            let (now, before) = (held.counters, start.counters);
            expect_eq(
                "objects",
                now.live_objects,
                before.live_objects + HOLD_OBJECTS,
            )?;
            expect_eq(
                "pinned pages",
                now.pinned_pages,
                before.pinned_pages + HOLD_PINNED,
            )?;
            expect_eq(
                "attachments",
                now.attachments,
                before.attachments + HOLD_ATTACHMENTS,
            )?;
            expect_eq("bindings", now.bindings, before.bindings + HOLD_OBJECTS)?;
            if now.pt_pages <= before.pt_pages {
                return Err(Failure::new("more page-table pages", format!("{now}")));
            }
            let vm_pin = io_op(
                "reading the child's VmPin",
                host_memory::vm_pin_kib(&child.id().to_string()),
            )?;
            expect_eq("child's VmPin (kB)", vm_pin, HOLD_PINNED * 4)
        })();
        if let Err(failure) = checked {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failure);
        }
        Ok(child)
    });
    ktap.check_after(
        "SIGKILL: once the child is killed and reaped every counter, pin and debugfs attachment is back to its value before",
        gpu.zip(before).zip(child),
        |((gpu, before), mut child)| {
            io_op("kill(SIGKILL)", child.kill())?;
            let status = io_op("waitpid", child.wait())?;
            expect_eq("termination signal", status.signal(), Some(9))?;
            expect_snapshot(snapshot(gpu)?, before)
        },
    );
}

fn spawn_hold() -> CheckResult<Child> {
    let exe = io_op("locating /proc/self/exe", std::env::current_exe())?;
    let mut child = io_op(
        "spawning the child",
        Command::new(exe)
            .arg("child-hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn(),
    )?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Failure::new("the child's stdout", "none"))?;
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    match (read, line.trim_end()) {
        (Ok(_), "ready") => Ok(child),
        (read, other) => {
            let _ = child.kill();
            let _ = child.wait();
            let failure = child_process::parse_line(other).err();
            Err(failure.unwrap_or_else(|| {
                Failure::new("\"ready\" from the child", format!("{read:?}: {other:?}"))
            }))
        }
    }
}

/// Everything the held child keeps alive until it is killed.
struct Held {
    _gpu: Vgpu,
    _vgem: DrmNode,
    _buffer: HeapBuffer,
    _files: Vec<OwnedFd>,
    _maps: Vec<SharedMapping>,
}

fn child_hold() -> ExitCode {
    match hold_setup() {
        Ok(held) => {
            println!("ready");
            let _ = io::stdout().flush();
            // Wait to be killed (EOF on stdin would mean the parent is gone).
            let mut line = String::new();
            let _ = io::stdin().read_line(&mut line);
            drop(held);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            child_process::report(&Err(failure));
            ExitCode::FAILURE
        }
    }
}

fn hold_setup() -> CheckResult<Held> {
    const VA: u64 = 9 * SLOT;
    const SIZE: u64 = 256 * 1024;
    let gpu = Vgpu::open().map_err(|e| Failure::op("opening extmem-vgpu", e))?;
    let vgem = dri::open_by_driver("vgem", NodeKind::Primary)
        .map_err(|e| Failure::op("opening vgem", e))?;
    let buffer = io_op("allocating 1 MiB", HeapBuffer::new(MIB_LEN, 4096))?;
    let pinned = userptr_handle(
        op("GEM_USERPTR", gpu.userptr(buffer.addr(), MIB, 0))?,
        ObjectKind::USERPTR,
    )?;
    map(&gpu, pinned, VA, MIB, 0)?;
    let shmem = op("GEM_CREATE", gpu.gem_create(MIB))?;
    map(&gpu, shmem, VA + 16 * MIB, MIB, 0)?;
    let vgem_buf = vgem.dumb_dma_buf(SIZE)?;
    let vgem_handle = io_op("PRIME_FD_TO_HANDLE (vgem)", gpu.import(vgem_buf.as_fd()))?;
    map(&gpu, vgem_handle, VA + 32 * MIB, SIZE, 0)?;
    let (memfd, udma) = io_op(
        "a udmabuf over a sealed memfd",
        udmabuf::over_sealed_memfd("extmem-vgpu", SIZE),
    )?;
    let udma_handle = io_op("PRIME_FD_TO_HANDLE (udmabuf)", gpu.import(udma.as_fd()))?;
    map(&gpu, udma_handle, VA + 48 * MIB, SIZE, 0)?;
    let view = map_fd(udma.as_fd(), 0, SIZE)?;
    let foreign = userptr_handle(
        op(
            "GEM_USERPTR (foreign)",
            gpu.userptr(view_addr(&view), SIZE, 0),
        )?,
        ObjectKind::FOREIGN,
    )?;
    map(&gpu, foreign, VA + 64 * MIB, SIZE, 0)?;
    exec(
        &gpu,
        &[
            vgpu::copy(VA, VA + 16 * MIB, MIB),
            vgpu::fill(VA + 64 * MIB, 1, SIZE),
        ],
    )?;
    // Handles stay open too: the kernel must drop them on exit.
    Ok(Held {
        _gpu: gpu,
        _vgem: vgem,
        _buffer: buffer,
        _files: vec![vgem_buf, memfd, udma],
        _maps: vec![view],
    })
}
