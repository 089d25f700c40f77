//! A killed process: a child (`vgpu child-hold`) pins, imports, binds and waits; once it is
//! SIGKILLed and reaped the device and the kernel hold nothing of it.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitCode, Stdio};

use extmem_guest_tests::child_process;
use extmem_guest_tests::device_snapshot::{expect_snapshot, op, snapshot};
use extmem_guest_tests::dri::{self, DrmNode, NodeKind};
use extmem_guest_tests::exporters::Exporter;
use extmem_guest_tests::host_memory::{self, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::vgpu::{self, Vgpu};
use extmem_uapi::ObjectKind;

use crate::helpers::{exec, exporter, import_host, map, map_fd};
use crate::{Ktap, MIB, MIB_LEN, SLOT};

/// What `vgpu child-hold` sets up: 5 objects (userptr, shmem, vgem and udmabuf imports, a
/// foreign window of the udmabuf; virtio-gpu's dma-buf in place of the udmabuf where the
/// kernel has none), 5 bindings, 2 attachments (the window shares the udmabuf import's: one
/// attachment per dma-buf), 1 MiB pinned (in CPU pages: 256 of 4 KiB, 64 of 16 KiB).
const HOLD_OBJECTS: u64 = 5;
const HOLD_ATTACHMENTS: u64 = 2;
const HOLD_PINNED_BYTES: u64 = MIB;

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    let before = gpu.map(snapshot).and_then(Result::ok);
    let what = "SIGKILL: a child holding a pin, imports, a foreign object and 5 bindings shows in every counter and its VmPin";
    let child = ktap.check_after(what, gpu.zip(before), |(gpu, start)| {
        let hold_pinned = HOLD_PINNED_BYTES / host_memory::cpu_page();
        let mut child = spawn_hold()?;
        let checked = (|| {
            let held = snapshot(gpu)?;
            if held.pins < start.pins + i64::try_from(hold_pinned).unwrap_or(i64::MAX) {
                return Err(Failure::new(
                    format!(
                        "at least {hold_pinned} more FOLL_PIN pins than {}",
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
                before.pinned_pages + hold_pinned,
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
            expect_eq("child's VmPin (kB)", vm_pin, HOLD_PINNED_BYTES >> 10)
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
    let (mut child, stdout, _) = child_process::spawn_self(&["child-hold"], Stdio::piped())?;
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

pub(crate) fn child_hold() -> ExitCode {
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
    let buffer = io_op(
        "allocating 1 MiB",
        HeapBuffer::new(MIB_LEN, host_memory::cpu_page_len()),
    )?;
    let pinned = import_host(
        &gpu,
        "GEM_USERPTR",
        (buffer.addr(), MIB),
        ObjectKind::USERPTR,
    )?;
    map(&gpu, pinned, VA, MIB, 0)?;
    let shmem = op("GEM_CREATE", gpu.gem_create(MIB))?;
    map(&gpu, shmem, VA + 16 * MIB, MIB, 0)?;
    let vgem_buf = vgem.dumb_dma_buf(SIZE)?;
    let vgem_handle = io_op("PRIME_FD_TO_HANDLE (vgem)", gpu.import(vgem_buf.as_fd()))?;
    map(&gpu, vgem_handle, VA + 32 * MIB, SIZE, 0)?;
    let second = exporter(Exporter::Udmabuf).0?.export(SIZE)?;
    let udma = second.dma_buf;
    let udma_handle = io_op(
        "PRIME_FD_TO_HANDLE (the second exporter's)",
        gpu.import(udma.as_fd()),
    )?;
    map(&gpu, udma_handle, VA + 48 * MIB, SIZE, 0)?;
    let view = map_fd(udma.as_fd(), 0, SIZE)?;
    let range = (view.addr(), SIZE);
    let foreign = import_host(&gpu, "GEM_USERPTR (foreign)", range, ObjectKind::FOREIGN)?;
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
        _files: [vgem_buf, udma].into_iter().chain(second.memfd).collect(),
        _maps: vec![view],
    })
}
