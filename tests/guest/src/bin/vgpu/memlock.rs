//! `RLIMIT_MEMLOCK`: a child (`vgpu child-memlock`) drops its privileges under a 64 KiB
//! limit and reports what pins; the parent turns its lines into results.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use extmem_guest_tests::child_process;
use extmem_guest_tests::device_snapshot::{expect_errno, expect_snapshot, op, snapshot};
use extmem_guest_tests::host_memory::{self, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure};
use extmem_guest_tests::vgpu::Vgpu;
use extmem_uapi::{ObjectKind, Param, QUERY_MAPPED, USERPTR_PROBE};
use rustix::io::Errno;

use crate::helpers::{close, import_host, map, unmap};
use crate::{Ktap, MIB, MIB_LEN, PAGE, SLOT};

/// How long a `vgpu child-*` run may take before it counts as a hang.
const CHILD_LIMIT: Duration = Duration::from_secs(120);

/// The checks `vgpu child-memlock` reports, in order.
const MEMLOCK_CHECKS: [&str; 4] = [
    "RLIMIT_MEMLOCK: as uid 65534 with a 64 KiB limit, pinning 1 MiB fails with ENOMEM; VmPin stays 0, nothing pinned",
    "RLIMIT_MEMLOCK: PROBE of 1 MiB fails with ENOMEM too",
    "RLIMIT_MEMLOCK: 32 KiB within the limit pins (VmPin 32 kB) and GEM_CLOSE unpins it (VmPin 0)",
    "unprivileged VM_QUERY (uid 65534, no CAP_SYS_ADMIN): a bound VA reads as mapped with physical address 0",
];

const MEMLOCK_LIMIT: u64 = 64 * 1024;

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
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

pub(crate) fn child_memlock() -> ExitCode {
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
        let buffer = io_op(
            "allocating 1 MiB",
            HeapBuffer::new(MIB_LEN, host_memory::cpu_page_len()),
        )?;
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
        let handle = import_host(
            &gpu,
            "GEM_USERPTR of 32 KiB",
            (buffer.addr(), 0x8000),
            ObjectKind::USERPTR,
        )?;
        expect_eq("VmPin (kB) while pinned", vm_pin()?, 32)?;
        close(&gpu, handle)?;
        expect_eq("VmPin (kB) after GEM_CLOSE", vm_pin()?, 0)
    })();
    let query = (|| {
        const VA: u64 = 10 * SLOT;
        // One CPU page pinned, one GPU page of it bound.
        let range = (buffer.addr(), host_memory::cpu_page());
        let handle = import_host(
            &gpu,
            "GEM_USERPTR of a CPU page",
            range,
            ObjectKind::USERPTR,
        )?;
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
