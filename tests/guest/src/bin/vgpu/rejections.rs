//! Rejections: every documented refusal of every ioctl, as a table of request and the errno
//! it must get, each checked the same way (the errno, and the device counters, the kernel's
//! pins and the attachments unchanged); then the per-file limits and an EXEC fault.

use std::os::fd::AsFd;

use extmem_guest_tests::device_snapshot::{errno_name, expect_snapshot, op, snapshot};
use extmem_guest_tests::host_memory::{self, AnonMapping, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure};
use extmem_guest_tests::pattern::filled;
use extmem_guest_tests::vgpu::{self, Vgpu};
use extmem_hw::profile::VGPU;
use extmem_uapi::{
    BindOp, Cmd, CmdOp, Exec, FaultKind, GemCreate, GemInfo, GemUserptr, VmBind, VmQuery,
    FLAG_READ_ONLY, MAX_EXEC_CMDS, USERPTR_PROBE,
};
use rustix::fs::{memfd_create, MemfdFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};

use crate::helpers::{close, gpu_read, ram_bytes, rejected, same_bytes, unmap, write_raw};
use crate::{Ktap, PAGE, SLOT};

/// Where this group binds.
const VA: u64 = 8 * SLOT;

/// A request the device must refuse, as the ioctl argument it sends.
enum Request {
    Userptr(GemUserptr),
    GemCreate(GemCreate),
    GemInfo(GemInfo),
    Bind(VmBind),
    Exec(Exec),
    Query(VmQuery),
    /// A request that takes more than one call (an object made first, a memfd).
    Calls(fn(&Vgpu) -> Result<(), Errno>),
}

impl Request {
    /// Sends the request; on success, what came back (for the failure message).
    fn send(&self, gpu: &Vgpu) -> Result<String, Errno> {
        fn answer<T: std::fmt::Debug>(
            mut args: T,
            call: impl FnOnce(&mut T) -> Result<(), Errno>,
        ) -> Result<String, Errno> {
            call(&mut args).map(|()| format!("{args:?}"))
        }
        match *self {
            Request::Userptr(args) => answer(args, |a| gpu.userptr_raw(a)),
            Request::GemCreate(args) => answer(args, |a| gpu.gem_create_raw(a)),
            Request::GemInfo(args) => answer(args, |a| gpu.gem_info_raw(a)),
            Request::Bind(args) => answer(args, |a| gpu.vm_bind_raw(a)),
            Request::Exec(args) => answer(args, |a| gpu.exec_raw(a)),
            Request::Query(args) => answer(args, |a| gpu.vm_query_raw(a)),
            Request::Calls(calls) => calls(gpu).map(|()| "success".to_owned()),
        }
    }
}

/// What the requests point at: host ranges in each state the checks need, an object bound at
/// [`VA`], and command arrays for EXEC.
struct Fixtures {
    /// The CPU page's size in bytes.
    cpu_page: u64,
    /// A 64 KiB heap buffer, read-write.
    ptr: u64,
    /// A 64 KiB shmem object, bound at [`VA`].
    handle: u32,
    /// 64 KiB mapped `PROT_READ`.
    read_only: u64,
    /// 64 KiB mapped `PROT_NONE`.
    no_access: u64,
    /// Two CPU pages, the second unmapped.
    half_mapped: u64,
    /// 64 KiB with nothing mapped.
    hole: u64,
    one_copy: [Cmd; 1],
    bad_op: [Cmd; 2],
    unaligned_fill: [Cmd; 1],
    too_many: Vec<Cmd>,
}

/// The table: what is wrong with the request, the errno it must get, the request.
fn table(f: &Fixtures) -> Vec<(String, Errno, Request)> {
    let cpu = f.cpu_page;
    // Off by one GPU page where the CPU page is larger (16 KiB pages: 4 KiB), else by half a
    // CPU page: aligned for the GPU, not for the CPU.
    let misalign = if cpu > PAGE { PAGE } else { cpu / 2 };
    let up = GemUserptr {
        ptr: f.ptr,
        size: 0x10000,
        ..GemUserptr::default()
    };
    let bind = VmBind {
        op: BindOp::MAP,
        handle: f.handle,
        va: VA + 0x100_0000,
        size: 0x10000,
        ..VmBind::default()
    };
    let exec = |count: u32, cmds: &[Cmd]| {
        Request::Exec(Exec {
            cmds: cmds.as_ptr() as u64,
            count,
            ..Exec::default()
        })
    };
    vec![
        (
            "GEM_USERPTR: a pointer off the CPU page's alignment (ptr + 1)".into(),
            Errno::INVAL,
            Request::Userptr(GemUserptr { ptr: f.ptr + 1, ..up }),
        ),
        (
            "GEM_USERPTR: a size that is not a multiple of 4 KiB (4097)".into(),
            Errno::INVAL,
            Request::Userptr(GemUserptr { size: 4097, ..up }),
        ),
        (
            format!("GEM_USERPTR: a pointer {misalign} bytes off the {cpu}-byte CPU page (GPU-page aligned)"),
            Errno::INVAL,
            Request::Userptr(GemUserptr { ptr: f.ptr + misalign, size: 0x10000 - cpu, ..up }),
        ),
        (
            format!("GEM_USERPTR: a size {misalign} bytes short of a multiple of the {cpu}-byte CPU page"),
            Errno::INVAL,
            Request::Userptr(GemUserptr { size: 0x10000 - misalign, ..up }),
        ),
        (
            "GEM_USERPTR: size 0".into(),
            Errno::INVAL,
            Request::Userptr(GemUserptr { size: 0, ..up }),
        ),
        (
            format!("GEM_USERPTR: ptr + size wraps around (ptr 2^64 - {} KiB, {} KiB)", cpu >> 10, (2 * cpu) >> 10),
            Errno::OVERFLOW,
            Request::Userptr(GemUserptr { ptr: u64::MAX - (cpu - 1), size: 2 * cpu, ..up }),
        ),
        (
            "GEM_USERPTR: a size above MAX_MAPPING".into(),
            Errno::RANGE,
            Request::Userptr(GemUserptr { size: VGPU.max_mapping + cpu, ..up }),
        ),
        (
            "GEM_USERPTR: an unknown flag (1 << 7)".into(),
            Errno::INVAL,
            Request::Userptr(GemUserptr { flags: 1 << 7, ..up }),
        ),
        (
            "GEM_USERPTR: non-zero padding".into(),
            Errno::INVAL,
            Request::Userptr(GemUserptr { pad: 1, ..up }),
        ),
        (
            "GEM_USERPTR: an unmapped range".into(),
            Errno::FAULT,
            Request::Userptr(GemUserptr { ptr: f.hole, ..up }),
        ),
        (
            "GEM_USERPTR: a range whose second page is unmapped (the first page's pin is undone)".into(),
            Errno::FAULT,
            Request::Userptr(GemUserptr { ptr: f.half_mapped, size: 2 * cpu, ..up }),
        ),
        (
            "GEM_USERPTR: a PROT_READ range without READ_ONLY".into(),
            Errno::FAULT,
            Request::Userptr(GemUserptr { ptr: f.read_only, ..up }),
        ),
        (
            "GEM_USERPTR(PROBE): a PROT_READ range without READ_ONLY".into(),
            Errno::FAULT,
            Request::Userptr(GemUserptr { ptr: f.read_only, flags: USERPTR_PROBE, ..up }),
        ),
        (
            "GEM_USERPTR(READ_ONLY): a PROT_NONE range".into(),
            Errno::FAULT,
            Request::Userptr(GemUserptr { ptr: f.no_access, flags: FLAG_READ_ONLY, ..up }),
        ),
        (
            "GEM_CREATE: size 0".into(),
            Errno::INVAL,
            Request::GemCreate(GemCreate::default()),
        ),
        (
            "GEM_CREATE: a size that is not a multiple of 4 KiB".into(),
            Errno::INVAL,
            Request::GemCreate(GemCreate { size: 0x1800, ..GemCreate::default() }),
        ),
        (
            format!("GEM_CREATE: a size {misalign} bytes past a multiple of the {cpu}-byte CPU page"),
            Errno::INVAL,
            Request::GemCreate(GemCreate { size: cpu + misalign, ..GemCreate::default() }),
        ),
        (
            "GEM_CREATE: an unknown flag".into(),
            Errno::INVAL,
            Request::GemCreate(GemCreate { size: cpu, flags: 1, handle: 0 }),
        ),
        (
            "GEM_CREATE: all of RAM, more than the device budget (3/4 of RAM), fails with ENOMEM at once".into(),
            Errno::NOMEM,
            Request::GemCreate(GemCreate { size: ram_bytes() & !(cpu - 1), ..GemCreate::default() }),
        ),
        (
            "GEM_CREATE: a second half of RAM while the first lives (the total over the budget) fails with ENOMEM".into(),
            Errno::NOMEM,
            Request::Calls(|gpu| {
                let half = (ram_bytes() / 2) & !(host_memory::cpu_page() - 1);
                let first = gpu.gem_create(half)?;
                let second = gpu.gem_create(half);
                for handle in std::iter::once(first).chain(second.as_ref().ok().copied()) {
                    let _ = gpu.close(handle);
                }
                second.map(|_| ())
            }),
        ),
        (
            "GEM_INFO: a handle that does not exist".into(),
            Errno::NOENT,
            Request::GemInfo(GemInfo { handle: 0xffff, ..GemInfo::default() }),
        ),
        (
            "GEM_INFO: non-zero padding".into(),
            Errno::INVAL,
            Request::GemInfo(GemInfo { handle: f.handle, pad: 1, ..GemInfo::default() }),
        ),
        (
            "VM_BIND: a VA at the end of the 48-bit space (1 << 48)".into(),
            Errno::RANGE,
            Request::Bind(VmBind { va: 1 << 48, ..bind }),
        ),
        (
            "VM_BIND: a range crossing the end of the VA space".into(),
            Errno::RANGE,
            Request::Bind(VmBind { va: (1 << 48) - 0x8000, ..bind }),
        ),
        (
            "VM_BIND: a VA off the 4 KiB alignment".into(),
            Errno::INVAL,
            Request::Bind(VmBind { va: VA + 0x100_0800, ..bind }),
        ),
        (
            "VM_BIND: size 0".into(),
            Errno::INVAL,
            Request::Bind(VmBind { size: 0, ..bind }),
        ),
        (
            "VM_BIND: va + size wraps around".into(),
            Errno::OVERFLOW,
            Request::Bind(VmBind { va: u64::MAX - 0xfff, size: 0x2000, ..bind }),
        ),
        (
            "VM_BIND: an object range past the object's end (offset 32 KiB + 64 KiB of 64 KiB)".into(),
            Errno::RANGE,
            Request::Bind(VmBind { offset: 0x8000, ..bind }),
        ),
        (
            "VM_BIND: a range overlapping an existing binding".into(),
            Errno::EXIST,
            Request::Bind(VmBind { va: VA + 0x8000, ..bind }),
        ),
        (
            "VM_BIND: a handle that does not exist".into(),
            Errno::NOENT,
            Request::Bind(VmBind { handle: 0xffff, ..bind }),
        ),
        (
            "VM_BIND: an unknown op (7)".into(),
            Errno::INVAL,
            Request::Bind(VmBind { op: BindOp(7), ..bind }),
        ),
        (
            "VM_BIND: an unknown flag (1 << 5)".into(),
            Errno::INVAL,
            Request::Bind(VmBind { flags: 1 << 5, ..bind }),
        ),
        (
            "VM_BIND: non-zero padding".into(),
            Errno::INVAL,
            Request::Bind(VmBind { pad: 1, ..bind }),
        ),
        (
            "VM_BIND UNMAP: no binding starts at that VA".into(),
            Errno::NOENT,
            Request::Bind(VmBind { op: BindOp::UNMAP, handle: 0, va: VA + 0x200_0000, ..bind }),
        ),
        ("EXEC: count 0".into(), Errno::INVAL, exec(0, &f.one_copy)),
        (
            "EXEC: count above MAX_EXEC_CMDS".into(),
            Errno::INVAL,
            exec(MAX_EXEC_CMDS + 1, &f.too_many),
        ),
        (
            "EXEC: a command pointer into an unmapped range".into(),
            Errno::FAULT,
            Request::Exec(Exec { cmds: f.hole, count: 1, ..Exec::default() }),
        ),
        ("EXEC: an unknown command op".into(), Errno::INVAL, exec(2, &f.bad_op)),
        (
            "EXEC: a FILL whose size is not a multiple of 4".into(),
            Errno::INVAL,
            exec(1, &f.unaligned_fill),
        ),
        (
            "VM_QUERY: non-zero padding".into(),
            Errno::INVAL,
            Request::Query(VmQuery { va: VA, pad: 1, ..VmQuery::default() }),
        ),
        (
            "VM_QUERY: a VA outside the VA space".into(),
            Errno::RANGE,
            Request::Query(VmQuery { va: 1 << 48, ..VmQuery::default() }),
        ),
        (
            "PRIME_FD_TO_HANDLE: a memfd, not a dma-buf".into(),
            Errno::INVAL,
            Request::Calls(|gpu| {
                let memfd = memfd_create("not-a-dma-buf", MemfdFlags::CLOEXEC)?;
                gpu.import(memfd.as_fd())
                    .map(|_| ())
                    .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
            }),
        ),
    ]
}

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    let buffer = HeapBuffer::new(0x10000, host_memory::cpu_page_len()).ok();
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
    let cpu_page = host_memory::cpu_page();
    let cpu_page_len = host_memory::cpu_page_len();
    let half_mapped = AnonMapping::read_write(2 * cpu_page_len).ok().inspect(|m| {
        // Unmap the second page so the range is mapped, then not.
        // SAFETY: the page lies inside the mapping `m` owns; no reference into it exists, and
        // `Drop` unmapping an already unmapped page is harmless (munmap of a hole succeeds).
        let _ = unsafe {
            rustix::mm::munmap((m.addr() + cpu_page) as *mut std::ffi::c_void, cpu_page_len)
        };
    });
    let addr = |mapping: Option<&AnonMapping>| mapping.map_or(0, RawBytes::addr);
    let fixtures = Fixtures {
        cpu_page,
        ptr: buffer.as_ref().map_or(0, RawBytes::addr),
        handle: object.map_or(0, |h| h.0.get()),
        read_only: addr(read_only.as_ref()),
        no_access: addr(no_access.as_ref()),
        half_mapped: addr(half_mapped.as_ref()),
        hole: host_memory::unmapped_range(0x10000).unwrap_or(0),
        one_copy: [vgpu::copy(VA, VA + 0x8000, 0x1000)],
        bad_op: [
            vgpu::fill(VA, 1, 0x1000),
            Cmd {
                op: CmdOp(9),
                ..Cmd::default()
            },
        ],
        unaligned_fill: [vgpu::fill(VA, 1, 6)],
        too_many: vec![vgpu::fill(VA, 1, 4); usize::try_from(MAX_EXEC_CMDS).unwrap_or(1024) + 1],
    };

    for (what, errno, request) in table(&fixtures) {
        ktap.check_after(
            &format!(
                "rejected with {}: {what}; counters unchanged",
                errno_name(errno)
            ),
            gpu,
            |gpu| rejected(gpu, &what, errno, || request.send(gpu)),
        );
    }

    let what = "GEM_USERPTR: the 1025th host-pointer object of one file fails with ENOSPC (the file's pin ledger holds 1024); counters unchanged; closing the file gives all back";
    ktap.check_after(what, gpu, |gpu| {
        let page = io_op(
            "allocating a page",
            HeapBuffer::new(cpu_page_len, cpu_page_len),
        )?;
        one_past_capacity(
            gpu,
            ("GEM_USERPTR", 1024),
            |_| Ok(()),
            |file, (), _| file.userptr(page.addr(), cpu_page, 0),
        )
    });
    let what = "VM_BIND: the 4097th binding of one file fails with ENOSPC (the binding table holds 4096); counters unchanged; closing the file gives all back";
    ktap.check_after(what, gpu, |gpu| {
        one_past_capacity(
            gpu,
            ("VM_BIND", 4096),
            |file| op("GEM_CREATE", file.gem_create(cpu_page)),
            |file, object, index| file.map(*object, VA + index * PAGE, 0, PAGE, 0),
        )
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
        same_bytes(
            "command 0's fill",
            &filled(0x0bad_cafe, 0x1000),
            &gpu_read(gpu, VA, 0x1000, VA + 0x40_0000)?,
        )
    });
    if let (Some(gpu), Some(object)) = (gpu, object) {
        if let Err(f) = unmap(gpu, VA, 0x10000).and_then(|()| close(gpu, object)) {
            ktap.diagnostic(format_args!("rejection cleanup: {}", f.seen));
        }
    }
    drop((buffer, read_only, no_access, half_mapped));
}

/// A per-file table full: on a second file, after `setup`, `capacity` calls of `add` (given
/// the index) succeed and the next fails with ENOSPC, counters unchanged; closing the file
/// gives everything back.
fn one_past_capacity<S, T: std::fmt::Debug>(
    gpu: &Vgpu,
    (call, capacity): (&str, u64),
    setup: impl FnOnce(&Vgpu) -> CheckResult<S>,
    add: impl Fn(&Vgpu, &S, u64) -> Result<T, Errno>,
) -> CheckResult<()> {
    let before = snapshot(gpu)?;
    {
        let file = Vgpu::open().map_err(|e| Failure::op("opening a second file", e))?;
        let state = setup(&file)?;
        for index in 0..capacity {
            op(
                format!("{call} number {}", index + 1),
                add(&file, &state, index),
            )?;
        }
        let what = format!("the {}th {call}", capacity + 1);
        rejected(gpu, &what, Errno::NOSPC, || add(&file, &state, capacity))?;
    }
    expect_snapshot(snapshot(gpu)?, before)
}
