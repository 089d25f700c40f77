//! Jobs, fences and syncobjs: `EXEC` without `EXEC_WAIT` returns before the copy is done
//! and a syncobj wait sees it; a vgem fence on an imported dma-buf holds a job back until
//! it is signalled; a sync_file exported from our dma-buf lets another process wait for
//! the GPU's write; timeline points; the file's count of failed jobs (`JOB_FAULTS`); bad
//! syncobj arguments; a killed process with a job in flight gives everything back.
//! Latencies (submit to signal) go out as diagnostics.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use extmem_guest_tests::child_process;
use extmem_guest_tests::device_snapshot::{expect_errno, op, snapshot};
use extmem_guest_tests::dri::{self, DrmNode, GemHandle, NodeKind};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure};
use extmem_guest_tests::pattern::{self, filled};
use extmem_guest_tests::sync::{self, OwnedSyncobj, DMA_BUF_SYNC_READ, VGEM_FENCE_WRITE};
use extmem_guest_tests::vgpu::{self, Vgpu};
use extmem_uapi::{Cmd, Exec, ExecSync, GetParam, Param, EXEC_WAIT, MAX_EXEC_SYNCS};
use rustix::io::{fcntl_setfd, Errno, FdFlags};

use crate::helpers::{back_to_start, create_gem, map, map_fd, rejected, release, same_bytes};
use crate::{Ktap, MIB, SLOT};

/// Results this group writes.
pub(crate) const CHECKS: usize = 9;

const VA: u64 = 12 * SLOT;
/// Long enough for "not yet done" to hold under TCG and KVM alike.
const BIG: u64 = 64 * MIB;
const WAIT: Duration = Duration::from_secs(20);

/// `EXEC` of `cmds` without waiting, waiting for `waits` and signalling `signals`.
fn submit(gpu: &Vgpu, cmds: &[Cmd], waits: &[ExecSync], signals: &[ExecSync]) -> Result<(), Errno> {
    let mut args = Exec {
        cmds: cmds.as_ptr() as u64,
        count: u32::try_from(cmds.len()).map_err(|_| Errno::INVAL)?,
        waits: waits.as_ptr() as u64,
        wait_count: u32::try_from(waits.len()).map_err(|_| Errno::INVAL)?,
        signals: signals.as_ptr() as u64,
        signal_count: u32::try_from(signals.len()).map_err(|_| Errno::INVAL)?,
        ..Exec::default()
    };
    gpu.exec_raw(&mut args)
}

fn binary(handle: u32) -> ExecSync {
    ExecSync {
        handle,
        flags: 0,
        point: 0,
    }
}

fn point(handle: u32, point: u64) -> ExecSync {
    ExecSync {
        handle,
        flags: 0,
        point,
    }
}

fn syncobj(gpu: &Vgpu) -> CheckResult<OwnedSyncobj<'_>> {
    op("DRM_IOCTL_SYNCOBJ_CREATE", OwnedSyncobj::new(gpu))
}

fn wait(gpu: &Vgpu, handle: u32) -> CheckResult<()> {
    op(
        "DRM_IOCTL_SYNCOBJ_WAIT",
        sync::syncobj_wait(gpu.as_fd(), &[handle], WAIT),
    )
}

/// Whether the syncobj is still unsignalled (a wait that times out at once).
fn pending(gpu: &Vgpu, handle: u32) -> CheckResult<bool> {
    match sync::syncobj_wait(gpu.as_fd(), &[handle], Duration::ZERO) {
        Ok(()) => Ok(false),
        Err(Errno::TIME) => Ok(true),
        Err(e) => Err(Failure::op("DRM_IOCTL_SYNCOBJ_WAIT (no timeout)", e)),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>, vgem: Option<&DrmNode>) {
    let start = gpu.map(snapshot).and_then(Result::ok);

    let what = "jobs: EXEC without EXEC_WAIT returns before a 64 MiB copy is done; SYNCOBJ_WAIT then sees every byte";
    let objects = ktap.check_after(what, gpu, |gpu| {
        let src = create_gem(gpu, BIG)?;
        let dst = create_gem(gpu, BIG)?;
        map(gpu, src.handle, VA, BIG, 0)?;
        map(gpu, dst.handle, VA + BIG, BIG, 0)?;
        crate::helpers::exec(gpu, &[vgpu::fill(VA, 0x600d_cafe, BIG)])?;
        let done = syncobj(gpu)?;
        let t0 = Instant::now();
        op(
            "EXEC (COPY 64 MiB, signal a syncobj)",
            submit(
                gpu,
                &[vgpu::copy(VA, VA + BIG, BIG)],
                &[],
                &[binary(done.handle)],
            ),
        )?;
        let submitted = t0.elapsed();
        if !pending(gpu, done.handle)? {
            return Err(Failure::new(
                "the syncobj still unsignalled right after EXEC returned",
                format!("signalled already ({submitted:?} after the submit)"),
            ));
        }
        wait(gpu, done.handle)?;
        let signalled = t0.elapsed();
        same_bytes(
            "the copy",
            &filled(0x600d_cafe, crate::MIB_LEN * 64),
            &dst.read(crate::MIB_LEN * 64)?,
        )?;
        // The same copy through EXEC_WAIT, for the scheduler's cost on a big copy.
        let t1 = Instant::now();
        crate::helpers::exec(gpu, &[vgpu::copy(VA + BIG, VA, BIG)])?;
        let waited = t1.elapsed();
        Ok((src, dst, submitted, signalled, waited))
    });
    if let Some((_, _, submitted, signalled, waited)) = &objects {
        ktap.diagnostic(format_args!(
            "64 MiB copy: EXEC returned after {submitted:?}, its syncobj signalled after {signalled:?}; with EXEC_WAIT {waited:?}"
        ));
    }

    let what = "jobs: submit-to-signal latency of a minimal job and a 4 KiB copy against a GET_PARAM round trip (diagnostic)";
    ktap.check_after(what, gpu.zip(objects.as_ref()), |(gpu, _)| {
        let done = syncobj(gpu)?;
        let lat = |cmd: Cmd| -> CheckResult<Duration> {
            let mut samples = Vec::new();
            for _ in 0..64 {
                let t = Instant::now();
                op("EXEC", submit(gpu, &[cmd], &[], &[binary(done.handle)]))?;
                wait(gpu, done.handle)?;
                samples.push(t.elapsed());
            }
            Ok(median(samples))
        };
        let empty = lat(vgpu::fill(VA, 0, 4))?;
        let copy = lat(vgpu::copy(VA, VA + BIG, 4096))?;
        let mut samples = Vec::new();
        for _ in 0..64 {
            let mut args = GetParam {
                param: Param::API_VERSION,
                ..GetParam::default()
            };
            let t = Instant::now();
            op("GET_PARAM", gpu.get_param_raw(&mut args))?;
            samples.push(t.elapsed());
        }
        let param = median(samples);
        println!(
            "# submit-to-signal (median of 64): 4-byte FILL job {empty:?}, 4 KiB COPY job {copy:?}; GET_PARAM round trip {param:?}"
        );
        Ok(())
    });

    let what = "implicit sync: a vgem write fence on an imported dma-buf holds a reading job back until VGEM_FENCE_SIGNAL; the job sees the bytes written before the signal";
    ktap.check_after(
        what,
        gpu.zip(vgem).zip(objects.as_ref()),
        |((gpu, vgem), _)| vgem_fence_holds_job(gpu, vgem),
    );

    let what = "implicit sync: a sync_file exported from our dma-buf (DMA_BUF_IOCTL_EXPORT_SYNC_FILE) is pending while the writing job is held, and a child process that waits on it sees every byte";
    ktap.check_after(
        what,
        gpu.zip(vgem).zip(objects.as_ref()),
        |((gpu, vgem), _)| sync_file_to_child(gpu, vgem),
    );

    let what = "timeline: a job signals point 1, a second waits for it and signals 2; QUERY reads 2; a CPU-signalled point 3 releases a third; a wait for an unsubmitted point is EINVAL";
    ktap.check_after(what, gpu.zip(objects.as_ref()), |(gpu, _)| timeline(gpu));

    let what = "JOB_FAULTS: a faulting queued job (binary and timeline signal) and a faulting EXEC_WAIT job each count once by the time they signal; good jobs, and another file's fault, leave this file's count alone";
    ktap.check_after(what, gpu.zip(objects.as_ref()), |(gpu, _)| job_faults(gpu));

    let what = "rejections: unknown EXEC flags, sync flags, too many syncs, unknown wait and signal handles, an empty syncobj: EINVAL/ENOENT, counters unchanged";
    ktap.check_after(what, gpu.zip(objects.as_ref()), |(gpu, _)| bad_syncs(gpu));

    let what = "SIGKILL with a job in flight (held by a vgem fence): once reaped, no job, pin, object, attachment or binding of it is left";
    ktap.check_after(what, gpu.zip(start), |(gpu, start)| {
        let (mut child, stdout, _) = child_process::spawn_self(&["child-job"], Stdio::piped())?;
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim_end() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failure::new("\"ready\" from the child", line));
        }
        let busy = op("GET_PARAM(JOBS)", gpu.get_param(Param::JOBS))?;
        let t = Instant::now();
        io_op("kill(SIGKILL)", child.kill())?;
        let status = io_op("waitpid", child.wait())?;
        expect_eq("termination signal", status.signal(), Some(9))?;
        let now = snapshot(gpu)?;
        expect_eq("jobs while the child held one", busy >= 1, true)?;
        expect_eq("jobs after the child is gone", now.counters.jobs, 0)?;
        println!(
            "# the killed child's held job was cancelled and reaped in {:?}",
            t.elapsed()
        );
        // The group's own objects are still bound: compare the rest with the start.
        let held = start.counters;
        expect_eq("pinned pages", now.counters.pinned_pages, held.pinned_pages)?;
        expect_eq("attachments", now.counters.attachments, held.attachments)?;
        Ok(())
    });

    ktap.check_after(
        "jobs: the group's objects released, every counter back to its value at the start",
        gpu.zip(start).zip(objects),
        |((gpu, start), (src, dst, ..))| {
            let bound = [(VA, BIG, src.handle), (VA + BIG, BIG, dst.handle)];
            // Their CPU mappings hold the objects too.
            drop((src, dst));
            release(gpu, bound)?;
            back_to_start(gpu, start)
        },
    );
}

/// A vgem dumb buffer of `size` bytes: its vgem handle, its dma-buf, and a CPU mapping of
/// the dma-buf (written without DMA_BUF_IOCTL_SYNC, which would wait for the fence).
fn vgem_buffer(
    vgem: &DrmNode,
    size: u64,
) -> CheckResult<(
    GemHandle,
    OwnedFd,
    extmem_guest_tests::mapping::SharedMapping,
)> {
    let height = u32::try_from(size / 4096).map_err(|_| Failure::new("a small size", ""))?;
    let dumb = io_op("vgem CREATE_DUMB", vgem.create_dumb(1024, height, 32))?;
    let fd = io_op("vgem PRIME export", vgem.export(dumb.handle))?;
    let view = map_fd(fd.as_fd(), 0, size)?;
    Ok((dumb.handle, fd, view))
}

fn vgem_fence_holds_job(gpu: &Vgpu, vgem: &DrmNode) -> CheckResult<()> {
    const SIZE: u64 = MIB;
    const AT: u64 = VA + 2 * BIG;
    let (vgem_handle, fd, view) = vgem_buffer(vgem, SIZE)?;
    let imported = io_op("PRIME_FD_TO_HANDLE", gpu.import(fd.as_fd()))?;
    let dst = create_gem(gpu, SIZE)?;
    map(gpu, imported, AT, SIZE, 0)?;
    map(gpu, dst.handle, AT + SIZE, SIZE, 0)?;
    let fence = op(
        "VGEM_FENCE_ATTACH (write)",
        sync::vgem_fence_attach(vgem.as_fd(), vgem_handle.0.get(), VGEM_FENCE_WRITE),
    )?;
    let done = syncobj(gpu)?;
    let checked = (|| {
        op(
            "EXEC (COPY from the fenced dma-buf)",
            submit(
                gpu,
                &[vgpu::copy(AT, AT + SIZE, SIZE)],
                &[],
                &[binary(done.handle)],
            ),
        )?;
        std::thread::sleep(Duration::from_millis(300));
        if !pending(gpu, done.handle)? {
            return Err(Failure::new(
                "the job held back by the vgem fence",
                "its syncobj signalled before VGEM_FENCE_SIGNAL",
            ));
        }
        let bytes = pattern::bytes(0x5e1f, crate::MIB_LEN);
        view.write(0, &bytes)
            .map_err(|e| Failure::op("writing the vgem buffer", e))?;
        op(
            "VGEM_FENCE_SIGNAL",
            sync::vgem_fence_signal(vgem.as_fd(), fence),
        )?;
        wait(gpu, done.handle)?;
        same_bytes("the job's copy", &bytes, &dst.read(crate::MIB_LEN)?)
    })();
    // Signalled already unless a step above failed first; vgem refuses a second signal.
    let _ = sync::vgem_fence_signal(vgem.as_fd(), fence);
    let released = release(gpu, [(AT, SIZE, imported), (AT + SIZE, SIZE, dst.handle)]);
    let _ = vgem.close_handle(vgem_handle);
    checked.and(released)
}

fn sync_file_to_child(gpu: &Vgpu, vgem: &DrmNode) -> CheckResult<()> {
    const SIZE: u64 = MIB;
    const AT: u64 = VA + 3 * BIG;
    let (vgem_handle, vgem_fd, view) = vgem_buffer(vgem, SIZE)?;
    let imported = io_op("PRIME_FD_TO_HANDLE", gpu.import(vgem_fd.as_fd()))?;
    let dst = create_gem(gpu, SIZE)?;
    map(gpu, imported, AT, SIZE, 0)?;
    map(gpu, dst.handle, AT + SIZE, SIZE, 0)?;
    let exported = io_op("PRIME_HANDLE_TO_FD", gpu.export(dst.handle))?;
    let fence = op(
        "VGEM_FENCE_ATTACH (write)",
        sync::vgem_fence_attach(vgem.as_fd(), vgem_handle.0.get(), VGEM_FENCE_WRITE),
    )?;
    let checked = (|| {
        op(
            "EXEC (COPY from the fenced vgem buffer into the exported object)",
            submit(gpu, &[vgpu::copy(AT, AT + SIZE, SIZE)], &[], &[]),
        )?;
        let sync_file = op(
            "DMA_BUF_IOCTL_EXPORT_SYNC_FILE (READ: the writers)",
            sync::dma_buf_export_sync_file(exported.as_fd(), DMA_BUF_SYNC_READ),
        )?;
        if op(
            "poll",
            sync::wait_readable(sync_file.as_fd(), Duration::ZERO),
        )? {
            return Err(Failure::new(
                "the sync_file pending while the job is held",
                "already signalled",
            ));
        }
        let bytes = pattern::bytes(0xc41d, crate::MIB_LEN);
        view.write(0, &bytes)
            .map_err(|e| Failure::op("writing the vgem buffer", e))?;
        for fd in [exported.as_fd(), sync_file.as_fd()] {
            io_op("clearing FD_CLOEXEC", fcntl_setfd(fd, FdFlags::empty()))?;
        }
        let args = [
            "child-sync-file".to_owned(),
            exported.as_raw_fd().to_string(),
            sync_file.as_raw_fd().to_string(),
            "0xc41d".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The child starts waiting; the fence is signalled from here meanwhile.
        std::thread::scope(|scope| {
            let signaller = scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(500));
                sync::vgem_fence_signal(vgem.as_fd(), fence)
            });
            let run = child_process::run_self(&args, WAIT);
            let signalled = signaller.join().unwrap_or(Err(Errno::FAULT));
            op("VGEM_FENCE_SIGNAL", signalled)?;
            run?.verdict()
        })
    })();
    let _ = sync::vgem_fence_signal(vgem.as_fd(), fence);
    let released = release(gpu, [(AT, SIZE, imported), (AT + SIZE, SIZE, dst.handle)]);
    let _ = vgem.close_handle(vgem_handle);
    checked.and(released)
}

/// `vgpu child-sync-file <dma-buf fd> <sync_file fd> <pattern seed>`: waits on the
/// sync_file, then checks every byte of the dma-buf against the pattern.
pub(crate) fn child_sync_file(args: &[String]) -> ExitCode {
    let result = (|| {
        let number = |i: usize| -> CheckResult<i32> {
            args.get(i)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Failure::new("a descriptor number argument", format!("{args:?}")))
        };
        let seed = args
            .get(4)
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| Failure::new("a pattern seed argument", format!("{args:?}")))?;
        // SAFETY: the parent passed these two descriptors open, for this process alone.
        let (dma_buf, sync_file) = unsafe {
            (
                OwnedFd::from_raw_fd(number(2)?),
                OwnedFd::from_raw_fd(number(3)?),
            )
        };
        let t = Instant::now();
        if !op(
            "poll on the sync_file",
            sync::wait_readable(sync_file.as_fd(), WAIT),
        )? {
            return Err(Failure::new(
                "the sync_file signalled",
                "still pending after 20 s",
            ));
        }
        println!("# the child's sync_file signalled after {:?}", t.elapsed());
        let view = map_fd(dma_buf.as_fd(), 0, MIB)?;
        same_bytes(
            "every byte of the dma-buf in the child",
            &pattern::bytes(seed, crate::MIB_LEN),
            &view.read_all(),
        )
    })();
    child_process::report(&result);
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn timeline(gpu: &Vgpu) -> CheckResult<()> {
    let tl = syncobj(gpu)?;
    let h = tl.handle;
    op(
        "EXEC signalling point 1",
        submit(gpu, &[vgpu::fill(VA, 1, 4096)], &[], &[point(h, 1)]),
    )?;
    op(
        "EXEC waiting for point 1, signalling point 2",
        submit(
            gpu,
            &[vgpu::fill(VA, 2, 4096)],
            &[point(h, 1)],
            &[point(h, 2)],
        ),
    )?;
    op(
        "TIMELINE_WAIT(2)",
        sync::timeline_wait(gpu.as_fd(), h, 2, WAIT),
    )?;
    expect_eq(
        "QUERY",
        op("SYNCOBJ_QUERY", sync::timeline_query(gpu.as_fd(), h))?,
        2,
    )?;
    op(
        "TIMELINE_SIGNAL(3)",
        sync::timeline_signal(gpu.as_fd(), h, 3),
    )?;
    op(
        "EXEC waiting for the CPU-signalled point 3, signalling 4",
        submit(gpu, &[vgpu::fill(VA, 3, 4)], &[point(h, 3)], &[point(h, 4)]),
    )?;
    op(
        "TIMELINE_WAIT(4)",
        sync::timeline_wait(gpu.as_fd(), h, 4, WAIT),
    )?;
    expect_errno(
        "EXEC waiting for the unsubmitted point 9",
        submit(gpu, &[vgpu::fill(VA, 3, 4)], &[point(h, 9)], &[]),
        Errno::INVAL,
    )
}

/// `EXEC_WAIT` of `cmds`, which must fault (`EIO`).
fn faults(gpu: &Vgpu, cmds: &[Cmd]) -> CheckResult<()> {
    match gpu.exec(cmds) {
        Err((Errno::IO, _)) => Ok(()),
        other => Err(Failure::new(
            "EIO from a job that faults",
            format!("{other:?}"),
        )),
    }
}

fn job_faults(gpu: &Vgpu) -> CheckResult<()> {
    let count = |gpu: &Vgpu| op("GET_PARAM(JOB_FAULTS)", gpu.get_param(Param::JOB_FAULTS));
    let start = count(gpu)?;
    let other = io_op("opening extmem-vgpu again", Vgpu::open())?;
    expect_eq("a new file's count", count(&other)?, 0)?;
    // The group binds its two objects at VA and VA + BIG; nothing is bound after them.
    let unmapped = VA + 2 * BIG;
    let done = syncobj(gpu)?;
    op(
        "EXEC (a good job)",
        submit(gpu, &[vgpu::fill(VA, 1, 4096)], &[], &[binary(done.handle)]),
    )?;
    wait(gpu, done.handle)?;
    expect_eq("the count after a good job", count(gpu)?, start)?;
    op(
        "EXEC (a fill of an unmapped VA, queued)",
        submit(
            gpu,
            &[vgpu::fill(unmapped, 2, 4096)],
            &[],
            &[binary(done.handle)],
        ),
    )?;
    wait(gpu, done.handle)?;
    expect_eq(
        "the count read as soon as the faulting job's syncobj signalled",
        count(gpu)?,
        start + 1,
    )?;
    // A timeline point's chain node carries no error: the count is what tells.
    let tl = syncobj(gpu)?;
    op(
        "EXEC (a copy from an unmapped VA, signalling timeline point 1)",
        submit(
            gpu,
            &[vgpu::copy(unmapped, VA, 4096)],
            &[],
            &[point(tl.handle, 1)],
        ),
    )?;
    op(
        "TIMELINE_WAIT(1)",
        sync::timeline_wait(gpu.as_fd(), tl.handle, 1, WAIT),
    )?;
    expect_eq("the count after the timeline job", count(gpu)?, start + 2)?;
    faults(gpu, &[vgpu::fill(unmapped, 3, 4)])?;
    expect_eq(
        "the count after a faulting EXEC_WAIT job",
        count(gpu)?,
        start + 3,
    )?;
    crate::helpers::exec(gpu, &[vgpu::fill(VA, 4, 4)])?;
    expect_eq(
        "the count after a good EXEC_WAIT job",
        count(gpu)?,
        start + 3,
    )?;
    expect_eq("the other file's count", count(&other)?, 0)?;
    // The other file binds nothing: any address faults there.
    faults(&other, &[vgpu::fill(VA, 5, 4)])?;
    expect_eq("the other file's count after its fault", count(&other)?, 1)?;
    expect_eq(
        "this file's count after the other's fault",
        count(gpu)?,
        start + 3,
    )
}

fn bad_syncs(gpu: &Vgpu) -> CheckResult<()> {
    let ok = syncobj(gpu)?;
    let empty = syncobj(gpu)?;
    let cmd = [vgpu::fill(VA, 0, 4)];
    let raw = |flags: u32, waits: &[ExecSync], wait_count: u32| {
        let mut args = Exec {
            cmds: cmd.as_ptr() as u64,
            count: 1,
            flags,
            waits: waits.as_ptr() as u64,
            wait_count,
            ..Exec::default()
        };
        gpu.exec_raw(&mut args)
    };
    rejected(gpu, "EXEC flags 0x80", Errno::INVAL, || raw(0x80, &[], 0))?;
    rejected(gpu, "EXEC flags EXEC_WAIT | 0x2", Errno::INVAL, || {
        raw(EXEC_WAIT | 2, &[], 0)
    })?;
    let flagged = [ExecSync {
        handle: ok.handle,
        flags: 1,
        point: 0,
    }];
    rejected(gpu, "a wait sync with flags 1", Errno::INVAL, || {
        raw(0, &flagged, 1)
    })?;
    let many = vec![binary(ok.handle); usize::try_from(MAX_EXEC_SYNCS).unwrap_or(64) + 1];
    rejected(gpu, "MAX_EXEC_SYNCS + 1 waits", Errno::INVAL, || {
        raw(0, &many, MAX_EXEC_SYNCS + 1)
    })?;
    rejected(gpu, "a wait on handle 0xdead", Errno::NOENT, || {
        submit(gpu, &cmd, &[binary(0xdead)], &[])
    })?;
    rejected(gpu, "a signal of handle 0xdead", Errno::NOENT, || {
        submit(gpu, &cmd, &[], &[binary(0xdead)])
    })?;
    rejected(
        gpu,
        "a wait on a syncobj with no fence",
        Errno::INVAL,
        || submit(gpu, &cmd, &[binary(empty.handle)], &[]),
    )?;
    // And a signal to a syncobj of another file is an unknown handle here.
    let other = io_op("opening extmem-vgpu again", Vgpu::open())?;
    let foreign = op("SYNCOBJ_CREATE (other file)", OwnedSyncobj::new(&other))?;
    let unknown = if foreign.handle == ok.handle || foreign.handle == empty.handle {
        foreign.handle + 100
    } else {
        foreign.handle
    };
    rejected(
        gpu,
        "a signal of another file's handle",
        Errno::NOENT,
        || submit(gpu, &cmd, &[], &[binary(unknown)]),
    )
}

/// `vgpu child-job`: queues a job held back by a vgem fence (and a big copy behind it),
/// says "ready" and waits to be killed.
pub(crate) fn child_job() -> ExitCode {
    let held = (|| {
        let gpu = io_op("opening extmem-vgpu", Vgpu::open())?;
        let vgem = dri::open_by_driver("vgem", NodeKind::Primary)
            .map_err(|e| Failure::new("a vgem node", e.to_string()))?;
        let (vgem_handle, fd, view) = vgem_buffer(&vgem, MIB)?;
        let imported = io_op("PRIME_FD_TO_HANDLE", gpu.import(fd.as_fd()))?;
        let dst = op("GEM_CREATE", gpu.gem_create(BIG))?;
        map(&gpu, imported, VA, MIB, 0)?;
        map(&gpu, dst, VA + BIG, BIG, 0)?;
        op(
            "VGEM_FENCE_ATTACH",
            sync::vgem_fence_attach(vgem.as_fd(), vgem_handle.0.get(), VGEM_FENCE_WRITE),
        )?;
        op(
            "EXEC (held)",
            submit(&gpu, &[vgpu::copy(VA, VA + BIG, MIB)], &[], &[]),
        )?;
        op(
            "EXEC (64 MiB fill behind it)",
            submit(&gpu, &[vgpu::fill(VA + BIG, 7, BIG)], &[], &[]),
        )?;
        Ok::<_, Failure>((gpu, vgem, fd, view))
    })();
    match held {
        Ok(_held) => {
            println!("ready");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            child_process::report(&Err(failure));
            ExitCode::FAILURE
        }
    }
}
