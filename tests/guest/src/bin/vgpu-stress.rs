//! vgpu-stress: extmem-vgpu under load and abuse, on the real kernel.
//!
//! - 10,000 cycles of host-pointer import, GEM create, dma-buf export and re-import, vgem
//!   dma-buf import, three binds, a GPU copy and fill, unbind and free, with the device's
//!   counters, the kernel's pins and attachments and the process's descriptors sampled every
//!   1,000 cycles and asserted equal to their values after the first cycle (page-table pages
//!   stay with the VM until the file closes, so they are compared with the first cycle's too).
//! - Busy clients running those cycles, SIGKILLed at random points: nothing is left behind.
//! - Several processes with several threads each importing, binding, copying and freeing on
//!   the device at once, every byte checked, under a time limit (a hang is a failure).
//! - One thread copying through a VA while another unbinds it, closes the object under the
//!   binding, imports again and rebinds: every EXEC either runs or faults cleanly.
//! - The fixed limits: 4,096 bindings per VM and 1,024 pins per file end in `ENOSPC`, the
//!   end of the 48-bit VA space in `ERANGE`, and nothing is half-done.
//!
//! - Host memory unmapped, or a process forked, while the GPU uses an import: the pinned
//!   pages stay the object's (see `lifetime`).
//!
//! The program re-runs itself as `vgpu-stress busy <seed>`, `vgpu-stress worker <id>` and
//! `vgpu-stress race`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use extmem_guest_tests::device_snapshot::{
    errno_name, expect_errno, expect_snapshot, op, snapshot, Snapshot,
};
use extmem_guest_tests::dri::{self, DrmNode, GemHandle, NodeKind};
use extmem_guest_tests::host_memory::{self, AnonMapping, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure, KtapWriter};
use extmem_guest_tests::pattern::{self, Rng};
use extmem_guest_tests::vgpu::Vgpu;
use extmem_guest_tests::{child_process, fd_table, kernel_log};
use extmem_uapi::{Cmd, GemUserptr, ObjectKind, FLAG_READ_ONLY, IOCTL_GEM_USERPTR};
use rustix::io::Errno;
use rustix::ioctl::{self, Updater};

const PLAN: usize = 16;
const PAGE: u64 = 4096;
/// The size of the objects of the other checks.
const SIZE: u64 = 64 << 10;
const SIZE_LEN: usize = 64 << 10;
/// The size of every object of a leak cycle (small: the cycles are about lifetimes, and
/// 10,000 of them must stay quick under TCG).
const CYCLE_SIZE: u64 = 16 << 10;
const CYCLE_LEN: usize = 16 << 10;
/// Cycles of the leak check, and how often it samples.
const CYCLES: u64 = 10_000;
const SAMPLE_EVERY: u64 = 1_000;
/// Busy clients killed, and the longest a client runs before its SIGKILL.
const KILLS: u64 = 24;
const MAX_KILL_DELAY_MS: u64 = 400;
/// Processes and threads per process of the concurrency check, and rounds per thread.
const WORKERS: usize = 4;
const THREADS: usize = 3;
const ROUNDS: u64 = 150;
/// How long one worker may run before it counts as hung.
const WORKER_LIMIT: Duration = Duration::from_secs(240);
/// kcore's fixed capacities (`BINDINGS_MAX`, `PINS_MAX`).
const BINDINGS_MAX: u64 = 4096;
const PINS_MAX: u64 = 1024;
/// The device's VA space (`VA_BITS` 48).
const VA_END: u64 = 1 << 48;
/// Each user of the VM binds in its own 512 GiB slot.
const SLOT: u64 = 1 << 39;

type Ktap = KtapWriter<io::Stdout>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("busy") => return busy(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1)),
        Some("worker") => return worker(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0)),
        Some("race") => return race(),
        _ => {}
    }
    fd_table::ktap_program(PLAN, run)
}

fn run(ktap: &mut Ktap) {
    let gpu = ktap.check("extmem-vgpu: the render node opens", open_vgpu);
    let gpu = gpu.as_ref();
    let start = gpu.and_then(|gpu| snapshot(gpu).ok());
    let mark = kernel_log::mark();
    let started = Instant::now();
    cycles(ktap, gpu.zip(start));
    ktap.diagnostic(format_args!(
        "cycles: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let started = Instant::now();
    kills(ktap, gpu.zip(start));
    ktap.diagnostic(format_args!(
        "kills: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let started = Instant::now();
    concurrency(ktap, gpu.zip(start));
    ktap.diagnostic(format_args!(
        "concurrency: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    racing(ktap, gpu.zip(start));
    own_file_checks(ktap, gpu.zip(start));
    ktap.check(
        "stress: the kernel log has no BUG, WARNING or Oops since the program began",
        || kernel_log::clean_since(mark),
    );
}

// ---- import/export/bind/free cycles ----------------------------------------------------

/// What one client cycles through: its own file, a host buffer and a vgem dma-buf.
struct Cycler {
    gpu: Vgpu,
    _vgem: DrmNode,
    vgem_buf: OwnedFd,
    host: HeapBuffer,
    va: u64,
}

impl Cycler {
    fn new(va: u64) -> CheckResult<Self> {
        let gpu = open_vgpu()?;
        let vgem = dri::open_by_driver("vgem", NodeKind::Primary)
            .map_err(|e| Failure::op("opening vgem", e))?;
        let vgem_buf = vgem.dumb_dma_buf(CYCLE_SIZE)?;
        let host = io_op(
            "allocating 16 KiB",
            HeapBuffer::new(CYCLE_LEN, host_memory::cpu_page_len()),
        )?;
        io_op("filling it", host.write(0, &pattern::bytes(3, CYCLE_LEN)))?;
        Ok(Self {
            gpu,
            _vgem: vgem,
            vgem_buf,
            host,
            va,
        })
    }

    /// One cycle; everything it made is gone again when it returns `Ok`.
    fn cycle(&self, index: u64) -> CheckResult<()> {
        let gpu = &self.gpu;
        let answer = op("GEM_USERPTR", gpu.userptr(self.host.addr(), CYCLE_SIZE, 0))?;
        expect_eq("kind", answer.kind, ObjectKind::USERPTR)?;
        let user = handle(answer.handle)?;
        let shmem = op("GEM_CREATE", gpu.gem_create(CYCLE_SIZE))?;
        let exported = io_op("PRIME export", gpu.export(shmem))?;
        let again = io_op("PRIME re-import", gpu.import(exported.as_fd()))?;
        expect_eq("the re-imported handle", again, shmem)?;
        let vgem = io_op("PRIME import (vgem)", gpu.import(self.vgem_buf.as_fd()))?;
        let va = self.va;
        for (h, at) in [
            (user, va),
            (shmem, va + CYCLE_SIZE),
            (vgem, va + 2 * CYCLE_SIZE),
        ] {
            op("VM_BIND MAP", gpu.map(h, at, 0, CYCLE_SIZE, 0))?;
        }
        let fill = u32::try_from(index & 0xffff_ffff).unwrap_or(0);
        gpu.exec(&[
            Cmd::copy(va, va + CYCLE_SIZE, CYCLE_SIZE),
            Cmd::fill(va + 2 * CYCLE_SIZE, fill, CYCLE_SIZE),
        ])
        .map_err(|(e, args)| Failure::op("EXEC", format!("{} {args:?}", errno_name(e))))?;
        for at in [va, va + CYCLE_SIZE, va + 2 * CYCLE_SIZE] {
            op("VM_BIND UNMAP", gpu.unmap(at, CYCLE_SIZE))?;
        }
        for h in [user, shmem, vgem] {
            io_op("GEM_CLOSE", gpu.close(h))?;
        }
        drop(exported);
        Ok(())
    }
}

fn open_vgpu() -> CheckResult<Vgpu> {
    Vgpu::open().map_err(|e| Failure::op("opening extmem-vgpu", e))
}

fn handle(raw: u32) -> CheckResult<GemHandle> {
    std::num::NonZeroU32::new(raw)
        .map(GemHandle)
        .ok_or_else(|| Failure::new("a non-zero handle", "handle 0"))
}

/// The process's open descriptors.
fn fd_count() -> CheckResult<usize> {
    io_op("listing /proc/self/fd", fd_table::snapshot()).map(|fds| fds.len())
}

fn cycles(ktap: &mut Ktap, gpu: Option<(&Vgpu, Snapshot)>) {
    let what = format!("{CYCLES} import/export/bind/exec/free cycles: counters, pins, attachments, page-table pages and descriptors sampled every {SAMPLE_EVERY} stay exactly at their values after the first");
    let done = ktap.check_after(&what, gpu, |(gpu, _)| {
        let cycler = Cycler::new(SLOT)?;
        cycler.cycle(0)?;
        let base = (snapshot(gpu)?, fd_count()?);
        for index in 1..CYCLES {
            cycler
                .cycle(index)
                .map_err(|f| Failure::new(f.expected, format!("cycle {index}: {}", f.seen)))?;
            if index % SAMPLE_EVERY == 0 || index == CYCLES - 1 {
                let now = (snapshot(gpu)?, fd_count()?);
                if now != base {
                    return Err(Failure::new(
                        format!("{} and {} descriptors", base.0, base.1),
                        format!("after cycle {index}: {} and {} descriptors", now.0, now.1),
                    ));
                }
            }
        }
        Ok(cycler)
    });
    ktap.check_after(
        "cycles: closing the client's file gives the page-table pages back too: every counter at its value before",
        gpu.zip(done),
        |((gpu, start), cycler)| {
            drop(cycler);
            expect_snapshot(snapshot(gpu)?, start)
        },
    );
}

// ---- killed clients ----------------------------------------------------------------------

/// `vgpu-stress busy <seed>`: cycles until killed.
fn busy(seed: u64) -> ExitCode {
    let result = (|| {
        let cycler = Cycler::new(SLOT + (seed % 8) * CYCLE_SIZE * 4)?;
        for index in 0.. {
            cycler.cycle(index)?;
        }
        Ok(())
    })();
    child_process::report(&result);
    ExitCode::FAILURE
}

fn kills(ktap: &mut Ktap, gpu: Option<(&Vgpu, Snapshot)>) {
    let what = format!("SIGKILL: {KILLS} busy clients killed at random points (0-{MAX_KILL_DELAY_MS} ms) all die by the signal, none failing first");
    let exe = std::env::current_exe();
    ktap.check_after(&what, gpu, |_| {
        let exe = io_op("locating /proc/self/exe", exe)?;
        let mut rng = Rng::new(0x5eed);
        let mut delays = Vec::new();
        for index in 0..KILLS {
            let mut child = io_op(
                "spawning a busy client",
                Command::new(&exe)
                    .args(["busy", &index.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn(),
            )?;
            let delay = rng.below(MAX_KILL_DELAY_MS + 1);
            delays.push(delay);
            thread::sleep(Duration::from_millis(delay));
            io_op("kill(SIGKILL)", child.kill())?;
            let output = io_op("waitpid", child.wait_with_output())?;
            if output.status.signal() != Some(9) {
                return Err(Failure::new(
                    format!("client {index} killed by SIGKILL after {delay} ms"),
                    format!(
                        "{:?}: {}",
                        output.status,
                        String::from_utf8_lossy(&output.stdout).trim()
                    ),
                ));
            }
        }
        Ok(())
    });
    ktap.check_after(
        "SIGKILL: after the killed clients are reaped every counter, pin and debugfs attachment is back to its value before",
        gpu,
        |(gpu, start)| expect_snapshot(snapshot(gpu)?, start),
    );
}

// ---- concurrency -------------------------------------------------------------------------

/// `vgpu-stress worker <id>`: `THREADS` threads on one file, each `ROUNDS` rounds of import,
/// bind, copy through a shmem object and back, check, free.
fn worker(id: u64) -> ExitCode {
    let result = (|| {
        let gpu = open_vgpu()?;
        thread::scope(|scope| {
            let threads: Vec<_> = (0..THREADS as u64)
                .map(|t| {
                    let gpu = &gpu;
                    scope.spawn(move || rounds(gpu, id * 16 + t, SLOT * (t + 1)))
                })
                .collect();
            threads.into_iter().try_for_each(|t| {
                t.join()
                    .map_err(|_| Failure::new("a worker thread ends", "it panicked"))?
            })
        })
    })();
    child_process::report(&result);
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn rounds(gpu: &Vgpu, seed: u64, va: u64) -> CheckResult<()> {
    let src = io_op(
        "allocating 64 KiB",
        HeapBuffer::new(SIZE_LEN, host_memory::cpu_page_len()),
    )?;
    let dst = io_op(
        "allocating 64 KiB",
        HeapBuffer::new(SIZE_LEN, host_memory::cpu_page_len()),
    )?;
    for round in 0..ROUNDS {
        let expected = pattern::bytes(seed << 20 | round, SIZE_LEN);
        io_op("writing the source", src.write(0, &expected))?;
        io_op("clearing the destination", dst.write(0, &[0; SIZE_LEN]))?;
        let s = handle(
            op(
                "GEM_USERPTR (source)",
                gpu.userptr(src.addr(), SIZE, FLAG_READ_ONLY),
            )?
            .handle,
        )?;
        let d = handle(
            op(
                "GEM_USERPTR (destination)",
                gpu.userptr(dst.addr(), SIZE, 0),
            )?
            .handle,
        )?;
        let m = op("GEM_CREATE", gpu.gem_create(SIZE))?;
        op("VM_BIND (source)", gpu.map(s, va, 0, SIZE, FLAG_READ_ONLY))?;
        op("VM_BIND (shmem)", gpu.map(m, va + SIZE, 0, SIZE, 0))?;
        op(
            "VM_BIND (destination)",
            gpu.map(d, va + 2 * SIZE, 0, SIZE, 0),
        )?;
        gpu.exec(&[
            Cmd::copy(va, va + SIZE, SIZE),
            Cmd::copy(va + SIZE, va + 2 * SIZE, SIZE),
        ])
        .map_err(|(e, args)| Failure::op("EXEC", format!("{} {args:?}", errno_name(e))))?;
        for at in [va, va + SIZE, va + 2 * SIZE] {
            op("VM_BIND UNMAP", gpu.unmap(at, SIZE))?;
        }
        for h in [s, d, m] {
            io_op("GEM_CLOSE", gpu.close(h))?;
        }
        let seen = io_op("reading the destination", dst.read(0, SIZE_LEN))?;
        pattern::compare(&expected, &seen).map_err(|m| {
            Failure::new(
                format!("thread {seed:#x} round {round}: the source's bytes"),
                m.to_string(),
            )
        })?;
    }
    Ok(())
}

fn concurrency(ktap: &mut Ktap, gpu: Option<(&Vgpu, Snapshot)>) {
    let what = format!("concurrency: {WORKERS} processes x {THREADS} threads, {ROUNDS} rounds each of import, bind, copy via shmem, free: every byte right, none hung ({} s limit)", WORKER_LIMIT.as_secs());
    ktap.check_after(&what, gpu, |_| {
        let runs: Vec<CheckResult<child_process::ChildRun>> = thread::scope(|scope| {
            let spawned: Vec<_> = (0..WORKERS)
                .map(|id| {
                    scope.spawn(move || {
                        child_process::run_self(&["worker", &id.to_string()], WORKER_LIMIT)
                    })
                })
                .collect();
            spawned
                .into_iter()
                .map(|t| {
                    t.join()
                        .map_err(|_| Failure::new("a waiting thread ends", "it panicked"))?
                })
                .collect()
        });
        for (id, run) in runs.into_iter().enumerate() {
            let run = run?;
            run.verdict()
                .map_err(|f| Failure::new(f.expected, format!("worker {id}: {}", f.seen)))?;
        }
        Ok(())
    });
    ktap.check_after(
        "concurrency: once the workers are gone every counter, pin and debugfs attachment is back to its value before",
        gpu,
        |(gpu, start)| expect_snapshot(snapshot(gpu)?, start),
    );
}

// ---- racing unbind and close against EXEC ----------------------------------------------

/// How long the two racing threads run.
const RACE: Duration = Duration::from_secs(3);

/// `vgpu-stress race`: on one file, a thread runs COPYs out of `SLOT` while another keeps
/// replacing what is bound there (unbind then close, or close under the binding then
/// unbind; import again; bind). Prints the outcome counts and one result line.
fn race() -> ExitCode {
    let result = (|| {
        let gpu = open_vgpu()?;
        let src = io_op(
            "allocating 64 KiB",
            HeapBuffer::new(SIZE_LEN, host_memory::cpu_page_len()),
        )?;
        let dst = op("GEM_CREATE", gpu.gem_create(SIZE))?;
        op(
            "VM_BIND (destination)",
            gpu.map(dst, SLOT + SIZE, 0, SIZE, 0),
        )?;
        let import = || -> CheckResult<GemHandle> {
            let h = handle(op("GEM_USERPTR", gpu.userptr(src.addr(), SIZE, 0))?.handle)?;
            op("VM_BIND (source)", gpu.map(h, SLOT, 0, SIZE, 0))?;
            Ok(h)
        };
        let first = import()?;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (copies, swaps) = thread::scope(|scope| {
            let copier = scope.spawn(|| -> CheckResult<(u64, u64)> {
                let (mut ran, mut faulted) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match gpu.exec(&[Cmd::copy(SLOT, SLOT + SIZE, SIZE)]) {
                        Ok(_) => ran += 1,
                        Err((Errno::IO, args))
                            if args.fault_kind == extmem_uapi::FaultKind::UNMAPPED =>
                        {
                            faulted += 1
                        }
                        Err((e, args)) => {
                            return Err(Failure::new(
                                "EXEC runs or faults with UNMAPPED",
                                format!("{} {args:?}", errno_name(e)),
                            ))
                        }
                    }
                }
                Ok((ran, faulted))
            });
            let swapped = (|| -> CheckResult<u64> {
                let started = Instant::now();
                let mut current = first;
                let mut swaps = 0;
                while started.elapsed() < RACE {
                    if swaps % 2 == 0 {
                        op("VM_BIND UNMAP", gpu.unmap(SLOT, SIZE))?;
                        io_op("GEM_CLOSE", gpu.close(current))?;
                    } else {
                        // The binding holds the object: closing the handle first is fine.
                        io_op("GEM_CLOSE under the binding", gpu.close(current))?;
                        op("VM_BIND UNMAP", gpu.unmap(SLOT, SIZE))?;
                    }
                    current = import()?;
                    swaps += 1;
                }
                Ok(swaps)
            })();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let copies = copier
                .join()
                .map_err(|_| Failure::new("the copying thread ends", "it panicked"))?;
            Ok::<_, Failure>((copies?, swapped?))
        })?;
        println!(
            "race: {} copies ran, {} faulted cleanly, {swaps} rebinds",
            copies.0, copies.1
        );
        if copies.0 == 0 || swaps == 0 {
            return Err(Failure::new(
                "both threads made progress",
                format!("{copies:?} copies, {swaps} rebinds"),
            ));
        }
        Ok(())
    })();
    child_process::report(&result);
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn racing(ktap: &mut Ktap, gpu: Option<(&Vgpu, Snapshot)>) {
    let what = format!("race: EXEC on one thread, unbind/close/re-import/rebind of its source on another for {} s: every EXEC runs or faults with UNMAPPED, nothing hangs", RACE.as_secs());
    ktap.check_after(&what, gpu, |_| {
        let run = child_process::run_self(&["race"], WORKER_LIMIT)?;
        for line in run.notes() {
            println!("# {line}");
        }
        run.verdict()
    });
    ktap.check_after(
        "race: once the racing process is gone every counter, pin and debugfs attachment is back to its value before",
        gpu,
        |(gpu, start)| expect_snapshot(snapshot(gpu)?, start),
    );
}

// ---- fixed limits and the lifetime of imported memory, each on a file of its own ---------

/// A check on a file of its own, given the observer and the state to return to.
type OwnFileCheck = fn(&Vgpu, Snapshot) -> CheckResult<()>;

/// The limits and lifetime checks, each on a file of its own.
const OWN_FILE_CHECKS: &[(&str, OwnFileCheck)] = &[
    (
        "limits: 4,096 bindings fit in one VM, the next VM_BIND fails with ENOSPC and changes nothing, all unbind again",
        bindings_limit,
    ),
    (
        "limits: 1,024 pins fit in one file, the next GEM_USERPTR fails with ENOSPC and pins nothing, all close again",
        pins_limit,
    ),
    (
        "limits: the last page of the 48-bit VA space binds; a binding at or across its end fails with ERANGE",
        va_end,
    ),
    (
        "munmap of an imported, bound host range: no fault; its pages stay pinned until the file closes and the GPU copies the bytes written before the munmap; a new import of the range fails with EFAULT",
        munmapped,
    ),
    (
        "fork after import: the child sees the bytes and its writes stay its own (the pinned page was copied for it at fork); the GPU and the parent keep the parent's pinned page, parent writes after the fork reach the GPU; the child's own import through the inherited file outlives its mm and is released with the file",
        forked,
    ),
];

fn own_file_checks(ktap: &mut Ktap, gpu: Option<(&Vgpu, Snapshot)>) {
    for (description, check) in OWN_FILE_CHECKS {
        ktap.check_after(description, gpu, |(observer, start)| check(observer, start));
    }
}

fn bindings_limit(observer: &Vgpu, start: Snapshot) -> CheckResult<()> {
    let gpu = open_vgpu()?;
    let object = op("GEM_CREATE of 4 KiB", gpu.gem_create(PAGE))?;
    let va = |i: u64| SLOT + i * PAGE;
    for i in 0..BINDINGS_MAX {
        let what = format!("VM_BIND number {}", i + 1);
        op(what, gpu.map(object, va(i), 0, PAGE, 0))?;
    }
    let full = snapshot(observer)?;
    let bindings = start.counters.bindings + BINDINGS_MAX;
    expect_eq("bindings", full.counters.bindings, bindings)?;
    let next = gpu.map(object, va(BINDINGS_MAX + 1), 0, PAGE, 0);
    expect_errno("VM_BIND number 4097", next, Errno::NOSPC)?;
    expect_snapshot(snapshot(observer)?, full)?;
    for i in 0..BINDINGS_MAX {
        op("VM_BIND UNMAP", gpu.unmap(va(i), PAGE))?;
    }
    io_op("GEM_CLOSE", gpu.close(object))?;
    drop(gpu);
    expect_snapshot(snapshot(observer)?, start)
}

fn pins_limit(observer: &Vgpu, start: Snapshot) -> CheckResult<()> {
    let gpu = open_vgpu()?;
    let buffer = io_op(
        "allocating 4 KiB",
        HeapBuffer::new(4096, host_memory::cpu_page_len()),
    )?;
    let mut handles = Vec::new();
    for i in 0..PINS_MAX {
        let what = format!("GEM_USERPTR number {}", i + 1);
        handles.push(handle(
            op(what, gpu.userptr(buffer.addr(), PAGE, 0))?.handle,
        )?);
    }
    let full = snapshot(observer)?;
    let pinned = start.counters.pinned_pages + PINS_MAX;
    expect_eq("pinned pages", full.counters.pinned_pages, pinned)?;
    let next = gpu.userptr(buffer.addr(), PAGE, 0);
    expect_errno("GEM_USERPTR number 1025", next, Errno::NOSPC)?;
    expect_snapshot(snapshot(observer)?, full)?;
    for h in handles {
        io_op("GEM_CLOSE", gpu.close(h))?;
    }
    drop(gpu);
    expect_snapshot(snapshot(observer)?, start)
}

fn va_end(observer: &Vgpu, start: Snapshot) -> CheckResult<()> {
    let gpu = open_vgpu()?;
    let object = op("GEM_CREATE of 8 KiB", gpu.gem_create(2 * PAGE))?;
    let last = VA_END - PAGE;
    op(
        "VM_BIND of the last page",
        gpu.map(object, last, 0, PAGE, 0),
    )?;
    let at_end = gpu.map(object, VA_END, 0, PAGE, 0);
    expect_errno("VM_BIND at the end", at_end, Errno::RANGE)?;
    let across = gpu.map(object, last, 0, 2 * PAGE, 0);
    expect_errno("VM_BIND across the end", across, Errno::RANGE)?;
    op("VM_BIND UNMAP of the last page", gpu.unmap(last, PAGE))?;
    io_op("GEM_CLOSE", gpu.close(object))?;
    drop(gpu);
    expect_snapshot(snapshot(observer)?, start)
}

// ---- lifetime of imported host memory ---------------------------------------------------

/// A file with a source range bound at `SLOT` and a 64 KiB host destination at `SLOT + SIZE`;
/// `copy` runs the GPU copy and returns the destination's bytes.
struct CopyRig {
    gpu: Vgpu,
    dst: HeapBuffer,
}

impl CopyRig {
    fn new(src: u64) -> CheckResult<Self> {
        let gpu = open_vgpu()?;
        let dst = io_op(
            "allocating 64 KiB",
            HeapBuffer::new(SIZE_LEN, host_memory::cpu_page_len()),
        )?;
        let s = handle(op("GEM_USERPTR (source)", gpu.userptr(src, SIZE, 0))?.handle)?;
        let d = handle(
            op(
                "GEM_USERPTR (destination)",
                gpu.userptr(dst.addr(), SIZE, 0),
            )?
            .handle,
        )?;
        op("VM_BIND (source)", gpu.map(s, SLOT, 0, SIZE, 0))?;
        op("VM_BIND (destination)", gpu.map(d, SLOT + SIZE, 0, SIZE, 0))?;
        Ok(Self { gpu, dst })
    }

    fn copy(&self) -> CheckResult<Vec<u8>> {
        self.gpu
            .exec(&[Cmd::copy(SLOT, SLOT + SIZE, SIZE)])
            .map_err(|(e, args)| Failure::op("EXEC", format!("{} {args:?}", errno_name(e))))?;
        io_op("reading the destination", self.dst.read(0, SIZE_LEN))
    }
}

fn same(what: &str, expected: &[u8], seen: &[u8]) -> CheckResult<()> {
    pattern::compare(expected, seen).map_err(|m| Failure::new(what.to_owned(), m.to_string()))
}

fn munmapped(observer: &Vgpu, start: Snapshot) -> CheckResult<()> {
    let expected = pattern::bytes(11, SIZE_LEN);
    let source = io_op("mapping 64 KiB", AnonMapping::read_write(SIZE_LEN))?;
    io_op("writing it", source.write(0, &expected))?;
    let addr = source.addr();
    let rig = CopyRig::new(addr)?;
    drop(source);
    let held = snapshot(observer)?;
    expect_eq(
        "pinned pages after the munmap",
        held.counters.pinned_pages,
        start.counters.pinned_pages + 2 * SIZE / PAGE,
    )?;
    same(
        "the GPU's copy of the unmapped range",
        &expected,
        &rig.copy()?,
    )?;
    expect_errno(
        "GEM_USERPTR of the unmapped range",
        rig.gpu.userptr(addr, SIZE, 0),
        Errno::FAULT,
    )?;
    drop(rig);
    expect_snapshot(snapshot(observer)?, start)
}

fn forked(observer: &Vgpu, start: Snapshot) -> CheckResult<()> {
    let before = pattern::bytes(12, SIZE_LEN);
    let after = pattern::bytes(13, SIZE_LEN);
    let source = io_op("mapping 64 KiB", AnonMapping::read_write(SIZE_LEN))?;
    io_op("writing it", source.write(0, &before))?;
    let rig = CopyRig::new(source.addr())?;
    let held = snapshot(observer)?;
    let base = source.base().as_ptr() as usize;
    let gpu_fd = rig.gpu.as_fd().as_raw_fd();
    let expected_ptr = before.as_ptr() as usize;
    let mut command = Command::new("/bin/true");
    command.stdin(Stdio::null()).stdout(Stdio::null());
    // Runs in the forked child before exec: no allocation, no locks, only memory the
    // child has its own copy of (its view of the imported range and of `before`).
    let check_and_write = move || {
        // SAFETY: both ranges are 64 KiB of mapped memory in the child's copy of the
        // address space, and nothing else runs in the child.
        let (seen, want) = unsafe {
            (
                std::slice::from_raw_parts_mut(base as *mut u8, SIZE_LEN),
                std::slice::from_raw_parts(expected_ptr as *const u8, SIZE_LEN),
            )
        };
        if seen != want {
            return Err(io::Error::from_raw_os_error(Errno::PROTO.raw_os_error()));
        }
        seen.fill(0x5a);
        // The child imports its own copy through the inherited file: the pin is
        // charged to the child's mm, which exec replaces and exit frees while the
        // parent's file still holds the object.
        let mut args = GemUserptr {
            ptr: base as u64,
            size: SIZE,
            ..GemUserptr::default()
        };
        // SAFETY: `gpu_fd` is the parent's extmem-vgpu file, inherited and open until
        // exec; IOCTL_GEM_USERPTR takes a `GemUserptr`, a live local.
        unsafe {
            let file = BorrowedFd::borrow_raw(gpu_fd);
            ioctl::ioctl(
                file,
                Updater::<IOCTL_GEM_USERPTR, GemUserptr>::new(&mut args),
            )
        }?;
        Ok(())
    };
    // SAFETY: `check_and_write` is async-signal-safe (see above).
    unsafe { command.pre_exec(check_and_write) };
    let status = io_op(
        "fork, the child's check and write, exec /bin/true",
        command.status(),
    )?;
    expect_eq("the child's exit", status.code(), Some(0))?;
    let now = snapshot(observer)?.counters;
    expect_eq(
        "objects and pinned pages with the child's import (its mm gone)",
        (now.live_objects, now.pinned_pages),
        (
            held.counters.live_objects + 1,
            held.counters.pinned_pages + SIZE / PAGE,
        ),
    )?;
    same(
        "the parent's bytes after the child wrote its copy",
        &before,
        &io_op("reading", source.read(0, SIZE_LEN))?,
    )?;
    same("the GPU's copy after the fork", &before, &rig.copy()?)?;
    io_op("writing new bytes in the parent", source.write(0, &after))?;
    same(
        "the GPU's copy of the parent's new bytes",
        &after,
        &rig.copy()?,
    )?;
    drop(rig);
    drop(source);
    expect_snapshot(snapshot(observer)?, start)
}
