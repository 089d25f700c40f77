//! The synchronisation group of icd-e2e: fences and semaphores on the kernel's syncobjs,
//! timelines from the host, fd export and import between processes, submissions held
//! until what they wait for is signalled (wait-before-signal, in one process and across
//! two), a device lost to a faulting job, and each Valid Usage rule of the fd commands
//! broken on purpose (on the unvalidated device).
//!
//! `icd-e2e child-timeline`, `icd-e2e child-syncfd` and `icd-e2e child-held` are the other
//! processes of the three cross-process cases; each receives a memory fd and a
//! synchronisation fd over the unix socket on its stdin.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use ash::vk;
use extmem::Vuid;
use extmem_guest_tests::fd_passing::FdChild;
use extmem_guest_tests::ktap::{io_op, CheckResult, Failure};
use extmem_guest_tests::pattern::{self, expect_bytes};
use extmem_guest_tests::vulkan::{self, recv_fd, send_fd, DeviceBuffer, FdMessage, Gpu, Instance};
use extmem_guest_tests::vulkan_sync::{FenceTypes, SemTypes, SyncBatch};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use super::{vk_op, Ktap, Types};

/// Checks this group writes.
pub const CHECKS: usize = 13;

/// The copy the fence case waits for: big enough that the copy engine is still busy
/// when the status is first read.
const BIG: u64 = 64 << 20;
/// Memory the cross-process cases share.
const SHARED: u64 = 1 << 20;
/// The timeline value the parent's copy signals for the child.
const CHILD_POINT: u64 = 7;
/// How long a child waits for the parent's GPU work before giving up.
const CHILD_WAIT: Duration = Duration::from_secs(30);

fn len(size: u64) -> CheckResult<usize> {
    usize::try_from(size).map_err(|_| Failure::new("a size that fits usize", size.to_string()))
}

fn expect(what: &str, ok: bool, seen: impl std::fmt::Display) -> CheckResult<()> {
    if ok {
        Ok(())
    } else {
        Err(Failure::new(what.to_string(), seen.to_string()))
    }
}

/// Runs the group.
pub fn run(ktap: &mut Ktap, gpu: Option<&Gpu<'_>>, raw: Option<&Gpu<'_>>) {
    ktap.check_after(
        "sync properties: OPAQUE_FD and SYNC_FD semaphores (SYNC_FD binary only) and fences are exportable and importable; other handle types answer 0",
        gpu,
        properties,
    );
    ktap.check_after(
        "fence: after a 64 MiB copy is submitted, vkGetFenceStatus/vkWaitForFences(0) say VK_NOT_READY/VK_TIMEOUT or every byte has landed; once signalled, every byte has",
        gpu,
        fence_after_copy,
    );
    ktap.check_after(
        "semaphore chain: copy A->B signals a binary semaphore, a vkQueueSubmit2 copy B->C waits for it; C holds A's bytes",
        gpu,
        semaphore_chain,
    );
    ktap.check_after(
        "timeline: initial value 3, a wait for 4 times out, vkSignalSemaphore(5), a GPU copy signals 7, vkWaitSemaphores(7) sees the bytes, counter 7, a wait for 10 times out",
        gpu,
        timeline_host,
    );
    ktap.check_after(
        "payloads: a SYNC_FD (and -1) imported into a fence is temporary and vkResetFences restores it; an OPAQUE_FD imported permanently shares the semaphore; exports are close-on-exec and a successful import takes its fd",
        gpu,
        payloads,
    );
    ktap.check_after(
        "timeline across processes: memory and a timeline semaphore (OPAQUE_FD) sent over SCM_RIGHTS; the child waits for 7, the parent's GPU fill signals 7, the child sees every byte",
        gpu,
        timeline_child,
    );
    ktap.check_after(
        "SYNC_FD producer/consumer: a GPU fill of a dma-buf signals a semaphore exported as a sync_file; the consumer process polls it, imports it, copies the dma-buf after it and sees every byte",
        gpu,
        sync_fd_child,
    );
    ktap.check_after(
        "VUIDs: each rule of vkGetSemaphoreFdKHR, vkImportSemaphoreFdKHR, vkGetFenceFdKHR and vkImportFenceFdKHR broken on purpose returns its VkResult; failed imports leave the fd open",
        raw,
        vuids,
    );
    ktap.check_after(
        "wait-before-signal: a copy waiting for timeline point 1 (not yet signalled) is held: its fence stays unsignalled and the bytes absent; vkSignalSemaphore(1) releases it, the fence signals and every byte arrives",
        gpu,
        held_until_host_signal,
    );
    ktap.check_after(
        "wait-before-signal: three submits chained on timeline points 1 -> 2 -> 3 -> 4, the first waiting for a host signal, are all held and then run in order (D holds A's bytes after A->B->C->D); vkQueueWaitIdle covers them",
        gpu,
        held_chain,
    );
    ktap.check_after(
        "wait-before-signal across processes: a child imports a timeline (OPAQUE_FD) and submits a fill that waits for point 1, held; a later submit of the parent signals 1; the child's fill signals 2 and the parent sees every byte",
        gpu,
        held_across_processes,
    );
    ktap.check_after(
        "VUIDs 01142 and 01463: a semaphore and a fence that a held submission signals refuse an import with VK_ERROR_VALIDATION_FAILED_EXT (the fd stays open); once the submission ran they take one",
        raw,
        import_in_use,
    );
    ktap.check_after(
        "device lost: a copy out of memory freed after recording (the validation layer reports the invalid command buffer) faults the job in the kernel; vkWaitForFences, vkGetFenceStatus, vkWaitSemaphores, vkQueueWaitIdle, vkDeviceWaitIdle and a later vkQueueSubmit return VK_ERROR_DEVICE_LOST",
        gpu,
        device_lost,
    );
}

fn properties(gpu: &Gpu<'_>) -> CheckResult<()> {
    let both_sem = vk::ExternalSemaphoreFeatureFlags::EXPORTABLE
        | vk::ExternalSemaphoreFeatureFlags::IMPORTABLE;
    for (ty, timeline, supported) in [
        (SemTypes::OPAQUE_FD, false, true),
        (SemTypes::OPAQUE_FD, true, true),
        (SemTypes::SYNC_FD, false, true),
        (SemTypes::SYNC_FD, true, false),
        (SemTypes::OPAQUE_WIN32, false, false),
        (SemTypes::D3D12_FENCE, false, false),
    ] {
        let p = gpu.semaphore_properties(ty, timeline);
        let want = if supported {
            both_sem
        } else {
            vk::ExternalSemaphoreFeatureFlags::empty()
        };
        expect(
            &format!("{ty:?} (timeline {timeline}): features {want:?}, compatible with itself"),
            p.external_semaphore_features == want
                && (p.compatible_handle_types == ty) == supported
                && (!supported || p.export_from_imported_handle_types.contains(ty)),
            format!("{p:?}"),
        )?;
    }
    let both_fence =
        vk::ExternalFenceFeatureFlags::EXPORTABLE | vk::ExternalFenceFeatureFlags::IMPORTABLE;
    for (ty, supported) in [
        (FenceTypes::OPAQUE_FD, true),
        (FenceTypes::SYNC_FD, true),
        (FenceTypes::OPAQUE_WIN32_KMT, false),
    ] {
        let p = gpu.fence_properties(ty);
        let want = if supported {
            both_fence
        } else {
            vk::ExternalFenceFeatureFlags::empty()
        };
        expect(
            &format!("{ty:?}: features {want:?}"),
            p.external_fence_features == want && (p.compatible_handle_types == ty) == supported,
            format!("{p:?}"),
        )?;
    }
    Ok(())
}

fn fence_after_copy(gpu: &Gpu<'_>) -> CheckResult<()> {
    let size = BIG;
    let bytes = pattern::bytes(19, len(size)?);
    let src = vk_op(DeviceBuffer::new(gpu, size, Types::empty()))?;
    let dst = vk_op(DeviceBuffer::new(gpu, size, Types::empty()))?;
    vk_op(gpu.write(src.memory, 0, &bytes))?;
    let cb = vk_op(gpu.record_copy(src.buffer, dst.buffer, size))?;
    let fence = vk_op(gpu.fence(false, FenceTypes::empty()))?;
    let result = (|| {
        let batch = SyncBatch {
            command_buffers: vec![cb],
            ..SyncBatch::default()
        };
        vk_op(gpu.submit_batches(&[batch], fence))?;
        // SAFETY: a live fence.
        let status = unsafe { gpu.device.get_fence_status(fence) };
        let early = vk_op(gpu.wait_fence(fence, 0))?;
        let pending = matches!(status, Ok(false)) && !early;
        if !pending {
            // Signalled already: the copy must be complete now.
            let seen = vk_op(gpu.read(dst.memory, 0, bytes.len()))?;
            expect_bytes(
                "the copy when the fence is first seen signalled",
                &bytes,
                &seen,
            )?;
        }
        super::ktap_note(format_args!(
            "fence: the 64 MiB copy was {} when first checked",
            if pending { "still running" } else { "done" }
        ));
        vk_op(gpu.await_fence(fence))?;
        // SAFETY: a live fence.
        let after = unsafe { gpu.device.get_fence_status(fence) };
        expect(
            "vkGetFenceStatus is VK_SUCCESS",
            after == Ok(true),
            format!("{after:?}"),
        )?;
        let seen = vk_op(gpu.read(dst.memory, 0, bytes.len()))?;
        expect_bytes("the copy after the fence", &bytes, &seen)
    })();
    gpu.destroy_fence(fence);
    gpu.free_command_buffer(cb);
    result
}

fn semaphore_chain(gpu: &Gpu<'_>) -> CheckResult<()> {
    const SIZE: u64 = 4 << 20;
    let bytes = pattern::bytes(23, len(SIZE)?);
    let a = vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?;
    let b = vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?;
    let c = vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?;
    vk_op(gpu.write(a.memory, 0, &bytes))?;
    let first = vk_op(gpu.record_copy(a.buffer, b.buffer, SIZE))?;
    let second = vk_op(gpu.record_copy(b.buffer, c.buffer, SIZE))?;
    let semaphore = vk_op(gpu.semaphore(None, SemTypes::empty()))?;
    let fence = vk_op(gpu.fence(false, FenceTypes::empty()))?;
    let result = (|| {
        let signal = SyncBatch {
            command_buffers: vec![first],
            signals: vec![(semaphore, 0)],
            ..SyncBatch::default()
        };
        vk_op(gpu.submit_batches(&[signal], vk::Fence::null()))?;
        let wait = SyncBatch {
            waits: vec![(semaphore, 0)],
            command_buffers: vec![second],
            ..SyncBatch::default()
        };
        vk_op(gpu.submit2(&wait, fence))?;
        vk_op(gpu.await_fence(fence))?;
        let seen = vk_op(gpu.read(c.memory, 0, bytes.len()))?;
        expect_bytes("C after the chain", &bytes, &seen)
    })();
    gpu.settle(result, &[fence], &[semaphore], &[first, second])
}

fn timeline_host(gpu: &Gpu<'_>) -> CheckResult<()> {
    const SIZE: u64 = 1 << 20;
    let src = vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?;
    let dst = vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?;
    let bytes = pattern::bytes(29, len(SIZE)?);
    vk_op(gpu.write(src.memory, 0, &bytes))?;
    let cb = vk_op(gpu.record_copy(src.buffer, dst.buffer, SIZE))?;
    let timeline = vk_op(gpu.semaphore(Some(3), SemTypes::empty()))?;
    let result = (|| {
        expect(
            "the initial value",
            vk_op(gpu.counter(timeline))? == 3,
            "another value",
        )?;
        expect(
            "a wait for 4 with timeout 0 times out",
            !vk_op(gpu.wait_timeline(timeline, 4, 0))?,
            "it returned VK_SUCCESS",
        )?;
        // The host signal comes before the GPU's: the validation layer keeps a GPU signal
        // pending past the waits that saw it, and would take a later host signal for one
        // below it (VUID-VkSemaphoreSignalInfo-value-03259).
        vk_op(gpu.signal_timeline(timeline, 5))?;
        let value = vk_op(gpu.counter(timeline))?;
        expect("the counter after vkSignalSemaphore(5)", value == 5, value)?;
        let batch = SyncBatch {
            command_buffers: vec![cb],
            signals: vec![(timeline, CHILD_POINT)],
            ..SyncBatch::default()
        };
        vk_op(gpu.submit_batches(&[batch], vk::Fence::null()))?;
        expect(
            "vkWaitSemaphores for 7 returns",
            vk_op(gpu.wait_timeline(timeline, CHILD_POINT, u64::MAX))?,
            "VK_TIMEOUT",
        )?;
        let seen = vk_op(gpu.read(dst.memory, 0, bytes.len()))?;
        expect_bytes("the copy that signalled 7", &bytes, &seen)?;
        let value = vk_op(gpu.counter(timeline))?;
        expect(
            "the counter after the GPU's signal",
            value == CHILD_POINT,
            value,
        )?;
        expect(
            "a wait for 10 with a 1 ms timeout times out",
            !vk_op(gpu.wait_timeline(timeline, 10, 1_000_000))?,
            "it returned VK_SUCCESS",
        )
    })();
    gpu.settle(result, &[], &[timeline], &[cb])
}

/// `VK_SUCCESS` (signalled) or `VK_NOT_READY` of a fence.
fn signalled(gpu: &Gpu<'_>, fence: vk::Fence) -> CheckResult<bool> {
    // SAFETY: a live fence.
    unsafe { gpu.device.get_fence_status(fence) }.map_err(|e| Failure::op("vkGetFenceStatus", e))
}

fn payloads(gpu: &Gpu<'_>) -> CheckResult<()> {
    let source = vk_op(gpu.fence(true, FenceTypes::SYNC_FD | FenceTypes::OPAQUE_FD))?;
    let target = vk_op(gpu.fence(false, FenceTypes::empty()))?;
    let a = vk_op(gpu.semaphore(None, SemTypes::OPAQUE_FD))?;
    let b = vk_op(gpu.semaphore(None, SemTypes::empty()))?;
    let fence = vk_op(gpu.fence(false, FenceTypes::empty()))?;
    let result = (|| {
        // A signalled fence's SYNC_FD, temporarily in an unsignalled fence.
        let sync_file = gpu
            .export_fence(source, FenceTypes::SYNC_FD)
            .map_err(|e| Failure::op("vkGetFenceFdKHR(SYNC_FD)", e))?;
        expect(
            "the exported fd is close-on-exec",
            io_op("fcntl(F_GETFD)", vulkan::is_cloexec(&sync_file))?,
            "FD_CLOEXEC clear",
        )?;
        let raw = sync_file.as_raw_fd();
        gpu.import_fence(target, FenceTypes::SYNC_FD, true, sync_file)
            .map_err(|(e, _)| Failure::op("vkImportFenceFdKHR(SYNC_FD, temporary)", e))?;
        expect(
            "a successful import closed the fd",
            rustix::io::fcntl_getfd(
                // SAFETY: only asked whether the number is open.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) },
            )
            .is_err(),
            "it is still open",
        )?;
        expect(
            "the imported fence is signalled",
            signalled(gpu, target)?,
            "VK_NOT_READY",
        )?;
        // SAFETY: a live fence not in use by a queue.
        unsafe { gpu.device.reset_fences(&[target]) }
            .map_err(|e| Failure::op("vkResetFences", e))?;
        expect(
            "vkResetFences restored the (unsignalled) permanent payload",
            !signalled(gpu, target)?,
            "still signalled",
        )?;
        // SYNC_FD -1: already signalled, temporary as well.
        let minus_one = vk::ImportFenceFdInfoKHR::default()
            .fence(target)
            .handle_type(FenceTypes::SYNC_FD)
            .flags(vk::FenceImportFlags::TEMPORARY)
            .fd(-1);
        // SAFETY: a live fence; -1 is the specification's "already signalled".
        unsafe { gpu.fence_fd().import_fence_fd(&minus_one) }
            .map_err(|e| Failure::op("vkImportFenceFdKHR(SYNC_FD, -1)", e))?;
        expect(
            "-1 imports as signalled",
            signalled(gpu, target)?,
            "VK_NOT_READY",
        )?;
        // SAFETY: as above.
        unsafe { gpu.device.reset_fences(&[target]) }
            .map_err(|e| Failure::op("vkResetFences", e))?;
        expect("reset again", !signalled(gpu, target)?, "still signalled")?;

        // A's OPAQUE_FD permanently in B: a signal of B is a signal of A.
        let opaque = gpu
            .export_semaphore(a, SemTypes::OPAQUE_FD)
            .map_err(|e| Failure::op("vkGetSemaphoreFdKHR(OPAQUE_FD)", e))?;
        gpu.import_semaphore(b, SemTypes::OPAQUE_FD, false, opaque)
            .map_err(|(e, _)| Failure::op("vkImportSemaphoreFdKHR(OPAQUE_FD)", e))?;
        let signal_b = SyncBatch {
            signals: vec![(b, 0)],
            ..SyncBatch::default()
        };
        let wait_a = SyncBatch {
            waits: vec![(a, 0)],
            ..SyncBatch::default()
        };
        vk_op(gpu.submit_batches(&[signal_b], vk::Fence::null()))?;
        // A wait on A after a signal of B completes.
        vk_op(gpu.submit_and_wait(&[wait_a], fence))
    })();
    gpu.settle(result, &[source, target, fence], &[a, b], &[])
}

/// Starts `icd-e2e <role>` with one end of a new unix socket on its stdin.
fn spawn_child(role: &str) -> CheckResult<FdChild> {
    io_op(
        format!("starting the {role} child"),
        FdChild::spawn(&[role], Stdio::null()),
    )
}

/// Waits for the child and turns a failure into the check's.
fn reap(child: FdChild, what: &str) -> CheckResult<()> {
    child
        .finish()
        .map_err(|e| Failure::new(format!("the child {what}, exit 0"), e))
}

/// Starts the child `role` and sends it `shared` (`SHARED` bytes, to be filled with
/// `value`) and `timeline`, both as OPAQUE_FD: the child, the socket, and whether the
/// sends worked (reported after the child is reaped, which says more).
fn share_with_child(
    gpu: &Gpu<'_>,
    role: &str,
    shared: &DeviceBuffer<'_, '_>,
    timeline: vk::Semaphore,
    value: u32,
) -> CheckResult<(FdChild, io::Result<()>)> {
    let memory_fd = vk_op(gpu.export_fd(shared.memory, Types::OPAQUE_FD))?;
    let sync_fd = gpu
        .export_semaphore(timeline, SemTypes::OPAQUE_FD)
        .map_err(|e| Failure::op("vkGetSemaphoreFdKHR(OPAQUE_FD)", e))?;
    let child = spawn_child(role)?;
    let message = FdMessage {
        size: SHARED,
        value,
    };
    let sent = send_fd(child.socket(), memory_fd.as_fd(), message)
        .and_then(|()| send_fd(child.socket(), sync_fd.as_fd(), message));
    Ok((child, sent))
}

fn timeline_child(gpu: &Gpu<'_>) -> CheckResult<()> {
    let value = 0x7131_e11e_u32;
    let shared = vk_op(DeviceBuffer::new(gpu, SHARED, Types::OPAQUE_FD))?;
    let timeline = vk_op(gpu.semaphore(Some(0), SemTypes::OPAQUE_FD))?;
    let cb = vk_op(gpu.record(|device, cb| {
        // SAFETY: recording; the buffer is bound and SHARED bytes long.
        unsafe { device.cmd_fill_buffer(cb, shared.buffer, 0, SHARED, value) };
    }))?;
    let result = (|| {
        let (child, sent) = share_with_child(gpu, "child-timeline", &shared, timeline, value)?;
        // The child is (or soon will be) waiting for 7; only now is it submitted.
        let batch = SyncBatch {
            command_buffers: vec![cb],
            signals: vec![(timeline, CHILD_POINT)],
            ..SyncBatch::default()
        };
        let submitted = vk_op(gpu.submit_batches(&[batch], vk::Fence::null()));
        let reaped = reap(child, "waits for 7 and sees the fill");
        io_op("sendmsg(SCM_RIGHTS)", sent)?;
        submitted?;
        reaped
    })();
    gpu.settle(result, &[], &[timeline], &[cb])
}

fn held_across_processes(gpu: &Gpu<'_>) -> CheckResult<()> {
    let value = 0x4e1d_b4c4_u32;
    let shared = vk_op(DeviceBuffer::new(gpu, SHARED, Types::OPAQUE_FD))?;
    vk_op(gpu.write(shared.memory, 0, &vec![0; len(SHARED)?]))?;
    let timeline = vk_op(gpu.semaphore(Some(0), SemTypes::OPAQUE_FD))?;
    let result = (|| {
        let (child, sent) = share_with_child(gpu, "child-held", &shared, timeline, value)?;
        // The child says when its held submit is in: only then is point 1 signalled.
        let mut byte = [0u8; 1];
        let heard = rustix::net::recv(child.socket(), &mut byte, rustix::net::RecvFlags::empty());
        let signal = SyncBatch {
            signals: vec![(timeline, 1)],
            ..SyncBatch::default()
        };
        let submitted = match heard {
            Ok((1, _)) => vk_op(gpu.submit_batches(&[signal], vk::Fence::null())),
            other => Err(Failure::new(
                "one byte from the child once it has submitted",
                format!("{other:?}"),
            )),
        };
        let timeout = u64::try_from(CHILD_WAIT.as_nanos()).unwrap_or(u64::MAX);
        let reached = submitted.and_then(|()| vk_op(gpu.wait_timeline(timeline, 2, timeout)));
        let reaped = reap(child, "submits a fill held for point 1 that signals 2");
        io_op("sendmsg(SCM_RIGHTS)", sent)?;
        expect("point 2, the child's fill", reached?, "not reached")?;
        reaped?;
        let seen = vk_op(gpu.read(shared.memory, 0, len(SHARED)?))?;
        expect_bytes(
            "the child's held fill",
            &vulkan::fill_pattern(value, len(SHARED)?),
            &seen,
        )
    })();
    gpu.settle(result, &[], &[timeline], &[])
}

fn sync_fd_child(gpu: &Gpu<'_>) -> CheckResult<()> {
    let value = 0x5f0d_c0de_u32;
    let shared = vk_op(DeviceBuffer::new(gpu, SHARED, Types::DMA_BUF_EXT))?;
    let semaphore = vk_op(gpu.semaphore(None, SemTypes::SYNC_FD))?;
    let cb = vk_op(gpu.record(|device, cb| {
        // SAFETY: recording; the buffer is bound and SHARED bytes long.
        unsafe { device.cmd_fill_buffer(cb, shared.buffer, 0, SHARED, value) };
    }))?;
    let result = (|| {
        let batch = SyncBatch {
            command_buffers: vec![cb],
            signals: vec![(semaphore, 0)],
            ..SyncBatch::default()
        };
        vk_op(gpu.submit_batches(&[batch], vk::Fence::null()))?;
        let sync_file = gpu
            .export_semaphore(semaphore, SemTypes::SYNC_FD)
            .map_err(|e| Failure::op("vkGetSemaphoreFdKHR(SYNC_FD)", e))?;
        let dma_buf = vk_op(gpu.export_fd(shared.memory, Types::DMA_BUF_EXT))?;
        let child = spawn_child("child-syncfd")?;
        let message = FdMessage {
            size: SHARED,
            value,
        };
        let sent = send_fd(child.socket(), dma_buf.as_fd(), message)
            .and_then(|()| send_fd(child.socket(), sync_file.as_fd(), message));
        drop((dma_buf, sync_file));
        let reaped = reap(child, "polls the sync_file, imports it and sees every byte");
        io_op("sendmsg(SCM_RIGHTS)", sent)?;
        reaped
    })();
    gpu.settle(result, &[], &[semaphore], &[cb])
}

/// The child side of both cross-process cases: `Ok` or what went wrong.
fn child(role: &str, work: impl FnOnce(&Gpu<'_>) -> Result<(), String>) -> ExitCode {
    let result = (|| -> Result<(), String> {
        // The parent's environment (only our ICD, no implicit layers) is inherited.
        let entry = vulkan::load()?;
        let validated = vulkan::validation_available(&entry);
        let instance = Instance::new(&entry, validated)?;
        let gpu = Gpu::new(&instance)?;
        work(&gpu)?;
        drop(gpu);
        drop(instance);
        let count = vulkan::validation_message_count();
        if count != 0 {
            return Err(format!(
                "{count} validation messages: {}",
                vulkan::validation_messages().join(" | ")
            ));
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{role}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn receive_two() -> Result<(OwnedFd, OwnedFd, FdMessage), String> {
    let (memory, message) = recv_fd(io::stdin().as_fd()).map_err(|e| format!("recvmsg: {e}"))?;
    let (sync, _) = recv_fd(io::stdin().as_fd()).map_err(|e| format!("recvmsg: {e}"))?;
    Ok((memory, sync, message))
}

/// Reads the whole of `block` and compares it with the fill `value`.
fn check_fill(gpu: &Gpu<'_>, memory: vk::DeviceMemory, message: FdMessage) -> Result<(), String> {
    let n = usize::try_from(message.size).map_err(|e| e.to_string())?;
    let seen = gpu.read(memory, 0, n)?;
    let want = vulkan::fill_pattern(message.value, n);
    match seen.iter().zip(&want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(at) => Err(format!("byte {at} is {:#x}, not {:#x}", seen[at], want[at])),
    }
}

/// `icd-e2e child-timeline`: imports the memory and the timeline, waits for 7, checks
/// every byte.
pub fn child_timeline() -> ExitCode {
    child("child-timeline", |gpu| {
        let (memory_fd, sync_fd, message) = receive_two()?;
        let shared = DeviceBuffer::import(gpu, memory_fd, Types::OPAQUE_FD, message.size)?;
        let timeline = gpu.semaphore(Some(0), SemTypes::OPAQUE_FD)?;
        let result = (|| {
            gpu.import_semaphore(timeline, SemTypes::OPAQUE_FD, false, sync_fd)
                .map_err(|(e, _)| format!("vkImportSemaphoreFdKHR: {e}"))?;
            let timeout = u64::try_from(CHILD_WAIT.as_nanos()).unwrap_or(u64::MAX);
            if !gpu.wait_timeline(timeline, CHILD_POINT, timeout)? {
                return Err(format!("value {CHILD_POINT} not reached in {CHILD_WAIT:?}"));
            }
            check_fill(gpu, shared.memory, message)
        })();
        gpu.destroy_semaphore(timeline);
        result
    })
}

/// `icd-e2e child-held`: imports the memory and the timeline, submits a fill that waits
/// for point 1 (which nobody has signalled yet) and signals 2, tells the parent, and
/// waits for 2.
pub fn child_held() -> ExitCode {
    child("child-held", |gpu| {
        let (memory_fd, sync_fd, message) = receive_two()?;
        let shared = DeviceBuffer::import(gpu, memory_fd, Types::OPAQUE_FD, message.size)?;
        let timeline = gpu.semaphore(Some(0), SemTypes::OPAQUE_FD)?;
        let cb = gpu.record(|device, cb| {
            // SAFETY: recording; the buffer is bound and `message.size` bytes long.
            unsafe { device.cmd_fill_buffer(cb, shared.buffer, 0, message.size, message.value) };
        });
        let result = cb.clone().and_then(|cb| {
            gpu.import_semaphore(timeline, SemTypes::OPAQUE_FD, false, sync_fd)
                .map_err(|(e, _)| format!("vkImportSemaphoreFdKHR: {e}"))?;
            let batch = SyncBatch {
                waits: vec![(timeline, 1)],
                command_buffers: vec![cb],
                signals: vec![(timeline, 2)],
            };
            gpu.submit_batches(&[batch], vk::Fence::null())?;
            // SAFETY: fd 0 is the socket the parent gave us as stdin.
            let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
            rustix::net::send(stdin, &[1], rustix::net::SendFlags::empty())
                .map_err(|e| format!("send to the parent: {e}"))?;
            let timeout = u64::try_from(CHILD_WAIT.as_nanos()).unwrap_or(u64::MAX);
            if !gpu.wait_timeline(timeline, 2, timeout)? {
                return Err(format!("point 2 not reached in {CHILD_WAIT:?}"));
            }
            Ok(())
        });
        let idle = gpu.wait_idle();
        gpu.destroy_semaphore(timeline);
        if let Ok(cb) = cb {
            gpu.free_command_buffer(cb);
        }
        result.and(idle)
    })
}

/// `icd-e2e child-syncfd`: polls the sync_file, imports it into a semaphore, copies the
/// dma-buf into its own memory after it and checks every byte.
pub fn child_syncfd() -> ExitCode {
    child("child-syncfd", |gpu| {
        let (dma_buf, sync_file, message) = receive_two()?;
        let mut fds = [PollFd::new(&sync_file, PollFlags::IN)];
        let timeout = Timespec {
            tv_sec: i64::try_from(CHILD_WAIT.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let ready = poll(&mut fds, Some(&timeout)).map_err(|e| format!("poll: {e}"))?;
        if ready != 1 {
            return Err(format!("the sync_file did not signal in {CHILD_WAIT:?}"));
        }
        let shared = DeviceBuffer::import(gpu, dma_buf, Types::DMA_BUF_EXT, message.size)?;
        let local = gpu.allocate(message.size, Types::empty())?;
        let local = match gpu.buffer(local, message.size, Types::empty()) {
            Ok(buffer) => (local, buffer),
            Err(e) => {
                gpu.free(local);
                return Err(e);
            }
        };
        let semaphore = gpu.semaphore(None, SemTypes::empty())?;
        let fence = gpu.fence(false, FenceTypes::empty())?;
        let cb = gpu.record_copy(shared.buffer, local.1, message.size)?;
        let result = (|| {
            gpu.import_semaphore(semaphore, SemTypes::SYNC_FD, true, sync_file)
                .map_err(|(e, _)| format!("vkImportSemaphoreFdKHR(SYNC_FD): {e}"))?;
            let batch = SyncBatch {
                waits: vec![(semaphore, 0)],
                command_buffers: vec![cb],
                ..SyncBatch::default()
            };
            gpu.submit_and_wait(&[batch], fence)?;
            check_fill(gpu, local.0, message)
        })();
        let _ = gpu.wait_idle();
        gpu.free_command_buffer(cb);
        gpu.destroy_fence(fence);
        gpu.destroy_semaphore(semaphore);
        gpu.destroy_buffer(local.1);
        gpu.free(local.0);
        result
    })
}

/// A raw Vulkan result, or `VK_SUCCESS`.
fn code<T>(r: Result<T, vk::Result>) -> vk::Result {
    r.map_or_else(|e| e, |_| vk::Result::SUCCESS)
}

/// Whether `fd` is still open (a failed import must leave it so).
fn still_open(fd: &OwnedFd) -> bool {
    rustix::io::fcntl_getfd(fd).is_ok()
}

fn vuids(raw: &Gpu<'_>) -> CheckResult<()> {
    let opaque_only = raw_semaphore(raw, None, SemTypes::OPAQUE_FD)?;
    let sync_only = raw_semaphore(raw, None, SemTypes::SYNC_FD)?;
    let timeline = raw_semaphore(raw, Some(0), SemTypes::OPAQUE_FD | SemTypes::SYNC_FD)?;
    let plain = raw_semaphore(raw, None, SemTypes::empty())?;
    let fence_opaque = raw_fence(raw, FenceTypes::OPAQUE_FD)?;
    let fence_sync = raw_fence(raw, FenceTypes::SYNC_FD)?;
    let null = || io_op("open(/dev/null)", File::open("/dev/null")).map(OwnedFd::from);
    let result = (|| {
        let exports: [(Vuid, vk::Result); 7] = [
            (
                Vuid::SemaphoreGetFdExported,
                code(raw.export_semaphore(opaque_only, SemTypes::SYNC_FD)),
            ),
            (
                Vuid::SemaphoreGetFdHandleType,
                code(raw.export_semaphore(opaque_only, SemTypes::OPAQUE_WIN32)),
            ),
            (
                Vuid::SemaphoreGetSyncFdBinary,
                code(raw.export_semaphore(timeline, SemTypes::SYNC_FD)),
            ),
            (
                Vuid::SemaphoreGetSyncFdSubmitted,
                code(raw.export_semaphore(sync_only, SemTypes::SYNC_FD)),
            ),
            (
                Vuid::FenceGetFdExported,
                code(raw.export_fence(fence_opaque, FenceTypes::SYNC_FD)),
            ),
            (
                Vuid::FenceGetFdHandleType,
                code(raw.export_fence(fence_opaque, FenceTypes::OPAQUE_WIN32)),
            ),
            (
                Vuid::FenceGetSyncFdPending,
                code(raw.export_fence(fence_sync, FenceTypes::SYNC_FD)),
            ),
        ];
        for (vuid, seen) in exports {
            expect(
                &format!("{} returns {}", vuid.id(), vuid.result()),
                seen == vuid.result(),
                seen,
            )?;
        }
        let sem_imports: [(Vuid, vk::Semaphore, SemTypes, bool); 4] = [
            (
                Vuid::SemaphoreImportHandleType,
                plain,
                SemTypes::OPAQUE_WIN32,
                true,
            ),
            (
                Vuid::SemaphoreImportFdValid,
                plain,
                SemTypes::OPAQUE_FD,
                false,
            ),
            (
                Vuid::SemaphoreImportSyncFdTemporary,
                plain,
                SemTypes::SYNC_FD,
                false,
            ),
            (
                Vuid::SemaphoreImportTemporaryBinary,
                timeline,
                SemTypes::OPAQUE_FD,
                true,
            ),
        ];
        for (vuid, semaphore, ty, temporary) in sem_imports {
            let refused = raw.import_semaphore(semaphore, ty, temporary, null()?);
            expect_refused(vuid, refused)?;
        }
        let fence_imports: [(Vuid, FenceTypes, bool); 3] = [
            (Vuid::FenceImportHandleType, FenceTypes::OPAQUE_WIN32, true),
            (Vuid::FenceImportFdValid, FenceTypes::SYNC_FD, true),
            (Vuid::FenceImportSyncFdTemporary, FenceTypes::SYNC_FD, false),
        ];
        for (vuid, ty, temporary) in fence_imports {
            let refused = raw.import_fence(fence_opaque, ty, temporary, null()?);
            expect_refused(vuid, refused)?;
        }
        Ok(())
    })();
    for s in [opaque_only, sync_only, timeline, plain] {
        raw.destroy_semaphore(s);
    }
    raw.destroy_fence(fence_opaque);
    raw.destroy_fence(fence_sync);
    result
}

/// An import that must fail with `vuid`'s result and leave its fd open.
fn expect_refused(vuid: Vuid, refused: Result<(), (vk::Result, OwnedFd)>) -> CheckResult<()> {
    match refused {
        Ok(()) => Err(Failure::new(
            format!("{} returns {}", vuid.id(), vuid.result()),
            "the import succeeded",
        )),
        Err((seen, fd)) => {
            expect(
                &format!("{} returns {}", vuid.id(), vuid.result()),
                seen == vuid.result(),
                seen,
            )?;
            expect(
                &format!("the fd of the failed import ({}) is still open", vuid.id()),
                still_open(&fd),
                "it was closed",
            )
        }
    }
}

fn raw_semaphore(
    raw: &Gpu<'_>,
    timeline: Option<u64>,
    export: SemTypes,
) -> CheckResult<vk::Semaphore> {
    vk_op(raw.semaphore(timeline, export))
}

fn raw_fence(raw: &Gpu<'_>, export: FenceTypes) -> CheckResult<vk::Fence> {
    vk_op(raw.fence(false, export))
}

/// `vkGetFenceStatus` is `VK_NOT_READY` now and stays so for a while: the submission that
/// signals it is held (or still running).
fn still_pending(gpu: &Gpu<'_>, fence: vk::Fence, what: &str) -> CheckResult<()> {
    expect(
        what,
        !vk_op(gpu.wait_fence(fence, 50_000_000))?,
        "the fence signalled",
    )
}

fn held_until_host_signal(gpu: &Gpu<'_>) -> CheckResult<()> {
    const SIZE: u64 = 1 << 20;
    let src = vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?;
    let dst = vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?;
    let bytes = pattern::bytes(31, len(SIZE)?);
    vk_op(gpu.write(src.memory, 0, &bytes))?;
    vk_op(gpu.write(dst.memory, 0, &vec![0; bytes.len()]))?;
    let cb = vk_op(gpu.record_copy(src.buffer, dst.buffer, SIZE))?;
    let timeline = vk_op(gpu.semaphore(Some(0), SemTypes::empty()))?;
    let fence = vk_op(gpu.fence(false, FenceTypes::empty()))?;
    let result = (|| {
        let batch = SyncBatch {
            waits: vec![(timeline, 1)],
            command_buffers: vec![cb],
            ..SyncBatch::default()
        };
        vk_op(gpu.submit_batches(&[batch], fence))?;
        still_pending(gpu, fence, "the fence before the signal")?;
        let early = vk_op(gpu.read(dst.memory, 0, bytes.len()))?;
        expect(
            "no byte copied before the signal",
            early.iter().all(|b| *b == 0),
            "the copy ran early",
        )?;
        vk_op(gpu.signal_timeline(timeline, 1))?;
        vk_op(gpu.await_fence(fence))?;
        let seen = vk_op(gpu.read(dst.memory, 0, bytes.len()))?;
        expect_bytes("the held copy", &bytes, &seen)
    })();
    gpu.settle(result, &[fence], &[timeline], &[cb])
}

fn held_chain(gpu: &Gpu<'_>) -> CheckResult<()> {
    const SIZE: u64 = 1 << 20;
    let blocks = [
        vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?,
        vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?,
        vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?,
        vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?,
    ];
    let bytes = pattern::bytes(37, len(SIZE)?);
    vk_op(gpu.write(blocks[0].memory, 0, &bytes))?;
    let mut cbs = Vec::new();
    for pair in blocks.windows(2) {
        if let [from, to] = pair {
            cbs.push(vk_op(gpu.record_copy(from.buffer, to.buffer, SIZE))?);
        }
    }
    let timeline = vk_op(gpu.semaphore(Some(0), SemTypes::empty()))?;
    let fence = vk_op(gpu.fence(false, FenceTypes::empty()))?;
    let result = (|| {
        // Copy i waits for point i + 1 and signals i + 2; the first point is the host's.
        for (cb, wait) in cbs.iter().zip(1u64..) {
            let batch = SyncBatch {
                waits: vec![(timeline, wait)],
                command_buffers: vec![*cb],
                signals: vec![(timeline, wait + 1)],
            };
            let last = wait == 3;
            vk_op(gpu.submit_batches(&[batch], if last { fence } else { vk::Fence::null() }))?;
        }
        still_pending(gpu, fence, "the last fence before the host signal")?;
        expect(
            "the counter while all three are held",
            vk_op(gpu.counter(timeline))? == 0,
            "another value",
        )?;
        vk_op(gpu.signal_timeline(timeline, 1))?;
        vk_op(gpu.wait_idle())?;
        expect(
            "the fence of the last submit after vkQueueWaitIdle",
            signalled(gpu, fence)?,
            "VK_NOT_READY",
        )?;
        let value = vk_op(gpu.counter(timeline))?;
        expect("the counter after the chain", value == 4, value)?;
        for (i, block) in blocks.iter().enumerate().skip(1) {
            let seen = vk_op(gpu.read(block.memory, 0, bytes.len()))?;
            expect_bytes(&format!("block {i} after the chain"), &bytes, &seen)?;
        }
        Ok(())
    })();
    gpu.settle(result, &[fence], &[timeline], &cbs)
}

fn import_in_use(raw: &Gpu<'_>) -> CheckResult<()> {
    let timeline = raw_semaphore(raw, Some(0), SemTypes::empty())?;
    let semaphore = raw_semaphore(raw, None, SemTypes::OPAQUE_FD)?;
    let fence = raw_fence(raw, FenceTypes::OPAQUE_FD)?;
    let donor = raw_semaphore(raw, None, SemTypes::OPAQUE_FD)?;
    let donor_fence = raw_fence(raw, FenceTypes::OPAQUE_FD)?;
    let result = (|| {
        let held = SyncBatch {
            waits: vec![(timeline, 1)],
            signals: vec![(semaphore, 0)],
            ..SyncBatch::default()
        };
        vk_op(raw.submit_batches(&[held], fence))?;
        let export = |s| {
            raw.export_semaphore(s, SemTypes::OPAQUE_FD)
                .map_err(|e| Failure::op("vkGetSemaphoreFdKHR(OPAQUE_FD)", e))
        };
        let export_fence = || {
            raw.export_fence(donor_fence, FenceTypes::OPAQUE_FD)
                .map_err(|e| Failure::op("vkGetFenceFdKHR(OPAQUE_FD)", e))
        };
        expect_refused(
            Vuid::SemaphoreImportInUse,
            raw.import_semaphore(semaphore, SemTypes::OPAQUE_FD, false, export(donor)?),
        )?;
        expect_refused(
            Vuid::FenceImportInUse,
            raw.import_fence(fence, FenceTypes::OPAQUE_FD, false, export_fence()?),
        )?;
        vk_op(raw.signal_timeline(timeline, 1))?;
        vk_op(raw.await_fence(fence))?;
        raw.import_semaphore(semaphore, SemTypes::OPAQUE_FD, false, export(donor)?)
            .map_err(|(e, _)| Failure::op("vkImportSemaphoreFdKHR once idle", e))?;
        raw.import_fence(fence, FenceTypes::OPAQUE_FD, false, export_fence()?)
            .map_err(|(e, _)| Failure::op("vkImportFenceFdKHR once idle", e))
    })();
    raw.settle(
        result,
        &[fence, donor_fence],
        &[timeline, semaphore, donor],
        &[],
    )
}

/// `VK_ERROR_DEVICE_LOST` from `result`.
fn lost<T: std::fmt::Debug>(what: &str, result: Result<T, vk::Result>) -> CheckResult<()> {
    expect(
        &format!("{what} returns VK_ERROR_DEVICE_LOST"),
        matches!(result, Err(vk::Result::ERROR_DEVICE_LOST)),
        format!("{result:?}"),
    )
}

fn device_lost(gpu: &Gpu<'_>) -> CheckResult<()> {
    // A device of its own: a lost device stays lost.
    let device = Gpu::new(gpu.instance).map_err(|e| Failure::new("a second device", e))?;
    let mut result = Ok(());
    // The submission of a command buffer whose memory is gone is what the validation layer
    // reports; the waits on the lost device and its teardown may be reported too.
    let messages = vulkan::expect_messages(|| {
        result = lose_device(&device);
        drop(device);
    });
    result?;
    expect(
        "the validation layer reported the invalid command buffer",
        messages >= 1,
        messages,
    )
}

fn lose_device(gpu: &Gpu<'_>) -> CheckResult<()> {
    const SIZE: u64 = 1 << 20;
    let src = vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?;
    let dst = vk_op(DeviceBuffer::new(gpu, SIZE, Types::empty()))?;
    let cb = vk_op(gpu.record_copy(src.buffer, dst.buffer, SIZE))?;
    let fence = vk_op(gpu.fence(false, FenceTypes::empty()))?;
    let timeline = vk_op(gpu.semaphore(Some(0), SemTypes::empty()))?;
    // Freed: the kernel unbinds it, and the copy finds nothing mapped at its source.
    drop(src);
    let result = (|| {
        let batch = SyncBatch {
            command_buffers: vec![cb],
            signals: vec![(timeline, 1)],
            ..SyncBatch::default()
        };
        vk_op(gpu.submit_batches(&[batch], fence))?;
        // SAFETY: a live fence.
        lost("vkWaitForFences", unsafe {
            gpu.device.wait_for_fences(&[fence], true, u64::MAX)
        })?;
        // SAFETY: a live fence.
        lost("vkGetFenceStatus", unsafe {
            gpu.device.get_fence_status(fence)
        })?;
        let semaphores = [timeline];
        let values = [1];
        let info = vk::SemaphoreWaitInfo::default()
            .semaphores(&semaphores)
            .values(&values);
        // SAFETY: a live timeline semaphore; the arrays live across the call.
        lost("vkWaitSemaphores", unsafe {
            gpu.timeline().wait_semaphores(&info, u64::MAX)
        })?;
        // SAFETY: a live queue.
        lost("vkQueueWaitIdle", unsafe {
            gpu.device.queue_wait_idle(gpu.queue)
        })?;
        // SAFETY: a live device.
        lost("vkDeviceWaitIdle", unsafe { gpu.device.device_wait_idle() })?;
        let again = SyncBatch {
            command_buffers: vec![cb],
            ..SyncBatch::default()
        };
        let submits = [vk::SubmitInfo::default().command_buffers(&again.command_buffers)];
        // SAFETY: live objects; the arrays live across the call.
        lost("a later vkQueueSubmit", unsafe {
            gpu.device
                .queue_submit(gpu.queue, &submits, vk::Fence::null())
        })
    })();
    gpu.destroy_semaphore(timeline);
    gpu.destroy_fence(fence);
    gpu.free_command_buffer(cb);
    drop(dst);
    result
}
