//! Fences, semaphores and queue submission, over the device's synchronisation objects
//! ([`extmem::sync::Syncobjs`]: DRM syncobjs on extmem-vgpu, an in-process table on the
//! software device).
//!
//! A submission is queued, not run: `vkQueueSubmit` hands each batch's commands to the
//! copy engine with the batch's wait semaphores to wait for and its signal semaphores
//! (and, after the last batch, the fence) to signal, and returns. Every job also signals
//! the next point of the queue's own timeline, which is what `vkQueueWaitIdle` and
//! `vkDeviceWaitIdle` wait for.
//!
//! Memory, buffers and command buffers may be freed while a job that uses them is still
//! queued: the kernel holds its own references to the job's objects and pages and keeps
//! its page-table entries until the job's fence signals (the EXEC contract in
//! `extmem-uapi`), and the commands themselves were copied into the ioctl's argument. The
//! software device runs each job before `submit` returns.
//!
//! Each fence and semaphore has a permanent payload and may have a temporary one
//! (imported with `VK_*_IMPORT_TEMPORARY_BIT`, or any `SYNC_FD` import): the temporary one
//! is what waits and signals use until the next wait on the semaphore is submitted, or the
//! fence is reset, and is then destroyed.

use std::sync::{Arc, Mutex};

use ash::vk::{self, Handle};
use extmem::backend::Backend;
use extmem::exec::{Command, MAX_COMMANDS};
#[cfg(not(windows))]
use extmem::sync::{self as rules, SyncFdKind};
use extmem::sync::{
    SyncHandle, SyncPoint, Syncobjs, WaitOutcome, FENCE_FD_TYPES, SEMAPHORE_FD_TYPES,
};
use extmem::Error;
#[cfg(not(windows))]
use extmem::Vuid;

use crate::error::{IcdError, IcdResult, Rule};
use crate::handles::{lock, DeviceChild, Registry};
use crate::objects::{self, COMMAND_BUFFERS, DEVICES, QUEUES};

/// A payload pair: the permanent object, and the temporary one an import put in front.
#[derive(Debug)]
pub struct Payload {
    /// Created with the fence or semaphore (or replaced by a permanent import).
    permanent: SyncHandle,
    /// A temporary import, used instead of `permanent` until restored.
    temporary: Option<SyncHandle>,
}

impl Payload {
    /// The object waits and signals use now.
    fn active(&self) -> SyncHandle {
        self.temporary.unwrap_or(self.permanent)
    }

    /// Drops a temporary payload, bringing back the permanent one.
    fn restore(&mut self, syncs: &dyn Syncobjs) {
        if let Some(temporary) = self.temporary.take() {
            syncs.destroy(temporary);
        }
    }
}

/// `VkFence`.
#[derive(Debug)]
pub struct Fence {
    /// The device.
    pub device: vk::Device,
    syncs: Arc<dyn Syncobjs>,
    payload: Mutex<Payload>,
    /// `VkExportFenceCreateInfo::handleTypes`.
    pub exportable: vk::ExternalFenceHandleTypeFlags,
}

/// `VkSemaphore`, binary or timeline.
#[derive(Debug)]
pub struct Semaphore {
    /// The device.
    pub device: vk::Device,
    syncs: Arc<dyn Syncobjs>,
    /// `VK_SEMAPHORE_TYPE_TIMELINE`.
    pub timeline: bool,
    payload: Mutex<Payload>,
    /// `VkExportSemaphoreCreateInfo::handleTypes`.
    pub exportable: vk::ExternalSemaphoreHandleTypeFlags,
}

/// Destroys both payloads when the last reference goes (the handle was destroyed, or the
/// device): queued jobs keep what they wait for and signal.
macro_rules! release_payloads {
    ($($object:ty),+) => {
        $(impl Drop for $object {
            fn drop(&mut self) {
                let payload = self.payload.get_mut().unwrap_or_else(|e| e.into_inner());
                payload.restore(&*self.syncs);
                self.syncs.destroy(payload.permanent);
            }
        }

        impl DeviceChild for $object {
            fn device(&self) -> vk::Device {
                self.device
            }
        })+
    };
}

release_payloads!(Fence, Semaphore);

/// Live fences.
pub static FENCES: Registry<vk::Fence, Fence> = Registry::new();
/// Live semaphores.
pub static SEMAPHORES: Registry<vk::Semaphore, Semaphore> = Registry::new();

/// A queue's timeline: every job signals its next point.
#[derive(Debug)]
pub struct QueueTimeline {
    syncs: Arc<dyn Syncobjs>,
    handle: SyncHandle,
    /// The last point a queued job signals.
    submitted: Mutex<u64>,
}

impl QueueTimeline {
    /// A new timeline at 0 on `syncs`.
    pub fn new(syncs: Arc<dyn Syncobjs>) -> IcdResult<Self> {
        let handle = syncs.create(false).map_err(sync_error)?;
        Ok(Self {
            syncs,
            handle,
            submitted: Mutex::new(0),
        })
    }

    /// Waits until every job queued so far has run.
    pub fn wait_idle(&self) -> IcdResult<()> {
        let last = *lock(&self.submitted);
        if last == 0 {
            return Ok(());
        }
        let point = SyncPoint {
            handle: self.handle,
            value: last,
        };
        self.syncs
            .wait(&[point], true, u64::MAX)
            .map_err(sync_error)?;
        Ok(())
    }
}

impl Drop for QueueTimeline {
    fn drop(&mut self) {
        self.syncs.destroy(self.handle);
    }
}

/// A backend refusal of a synchronisation call, in the manager's terms.
fn sync_error(e: extmem::backend::BackendError) -> IcdError {
    IcdError::Memory(e.to_error(extmem_hw::HostVa::new(0), 0))
}

/// The device's synchronisation objects.
fn syncs_of(device: vk::Device) -> IcdResult<Arc<dyn Syncobjs>> {
    Ok(Arc::clone(&DEVICES.live(device)?.syncs))
}

/// `vkCreateFence`.
pub fn create_fence(
    device: vk::Device,
    signaled: bool,
    exportable: vk::ExternalFenceHandleTypeFlags,
) -> IcdResult<vk::Fence> {
    let syncs = syncs_of(device)?;
    check_exportable(
        &*syncs,
        exportable.as_raw(),
        FENCE_FD_TYPES.as_raw(),
        Rule::FenceExportTypes,
    )?;
    let permanent = syncs.create(signaled).map_err(sync_error)?;
    Ok(FENCES.insert(Fence {
        device,
        syncs,
        payload: Mutex::new(Payload {
            permanent,
            temporary: None,
        }),
        exportable,
    }))
}

/// An export request the device cannot honour: handle types other than the fd ones, or
/// any on a device whose objects cannot leave the process (the properties queries answer
/// them as not exportable, so asking is the application's error).
fn check_exportable(syncs: &dyn Syncobjs, raw: u32, fd_types: u32, rule: Rule) -> IcdResult<()> {
    let supported = if syncs.shareable() { fd_types } else { 0 };
    if raw & !supported != 0 {
        return Err(IcdError::rule(rule, u64::from(raw)));
    }
    Ok(())
}

/// `vkDestroyFence`.
pub fn destroy_fence(device: vk::Device, fence: vk::Fence) {
    FENCES.remove_of(device, fence);
}

/// The points that say `fences` are signalled.
fn fence_points(
    device: vk::Device,
    fences: &[vk::Fence],
) -> IcdResult<Vec<(Arc<Fence>, SyncPoint)>> {
    fences
        .iter()
        .map(|f| {
            let fence = FENCES.live_of(device, *f)?;
            let point = SyncPoint::binary(lock(&fence.payload).active());
            Ok((fence, point))
        })
        .collect()
}

/// Waits for points of one device's objects, at most `timeout_ns`: `true` when
/// signalled. More points than one kernel wait takes are waited for in turn (for `all`)
/// or refused (for any: the device's limit, reported as out of host memory).
fn wait_points(
    syncs: &dyn Syncobjs,
    points: &[SyncPoint],
    all: bool,
    timeout_ns: u64,
) -> IcdResult<bool> {
    let max = extmem::sync::MAX_WAIT_POINTS;
    if !all && points.len() > max {
        return Err(IcdError::Memory(Error::OutOfHostMemory));
    }
    for chunk in points.chunks(max.max(1)) {
        if syncs.wait(chunk, all, timeout_ns).map_err(sync_error)? == WaitOutcome::TimedOut {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `vkWaitForFences`: `true` when signalled, `false` on timeout.
pub fn wait_for_fences(
    device: vk::Device,
    fences: &[vk::Fence],
    all: bool,
    timeout_ns: u64,
) -> IcdResult<bool> {
    let points = fence_points(device, fences)?;
    let syncs = syncs_of(device)?;
    let points: Vec<SyncPoint> = points.into_iter().map(|(_, p)| p).collect();
    wait_points(&*syncs, &points, all, timeout_ns)
}

/// `vkGetFenceStatus`: `true` when signalled.
pub fn fence_status(device: vk::Device, fence: vk::Fence) -> IcdResult<bool> {
    wait_for_fences(device, &[fence], true, 0)
}

/// `vkResetFences`: a temporary payload is restored first, then the permanent one is
/// reset (the specification's order).
pub fn reset_fences(device: vk::Device, fences: &[vk::Fence]) -> IcdResult<()> {
    let fences = fences
        .iter()
        .map(|f| FENCES.live_of(device, *f))
        .collect::<IcdResult<Vec<_>>>()?;
    for fence in fences {
        let mut payload = lock(&fence.payload);
        payload.restore(&*fence.syncs);
        fence.syncs.reset(payload.permanent).map_err(sync_error)?;
    }
    Ok(())
}

/// `vkCreateSemaphore`: binary, or a timeline starting at `initial`.
pub fn create_semaphore(
    device: vk::Device,
    timeline: Option<u64>,
    exportable: vk::ExternalSemaphoreHandleTypeFlags,
) -> IcdResult<vk::Semaphore> {
    let syncs = syncs_of(device)?;
    check_exportable(
        &*syncs,
        exportable.as_raw(),
        SEMAPHORE_FD_TYPES.as_raw(),
        Rule::SemaphoreExportTypes,
    )?;
    let permanent = syncs.create(false).map_err(sync_error)?;
    let semaphore = Semaphore {
        device,
        syncs,
        timeline: timeline.is_some(),
        payload: Mutex::new(Payload {
            permanent,
            temporary: None,
        }),
        exportable,
    };
    if let Some(initial) = timeline.filter(|v| *v > 0) {
        // Dropping `semaphore` on failure destroys the new object.
        semaphore
            .syncs
            .signal(SyncPoint {
                handle: permanent,
                value: initial,
            })
            .map_err(sync_error)?;
    }
    Ok(SEMAPHORES.insert(semaphore))
}

/// `vkDestroySemaphore`.
pub fn destroy_semaphore(device: vk::Device, semaphore: vk::Semaphore) {
    SEMAPHORES.remove_of(device, semaphore);
}

/// A live timeline semaphore of `device`, or the refusal naming `rule`.
fn timeline_of(
    device: vk::Device,
    semaphore: vk::Semaphore,
    rule: Rule,
) -> IcdResult<Arc<Semaphore>> {
    let s = SEMAPHORES.live_of(device, semaphore)?;
    if !s.timeline {
        return Err(IcdError::rule(rule, semaphore.as_raw()));
    }
    Ok(s)
}

/// `vkGetSemaphoreCounterValue`.
pub fn semaphore_counter(device: vk::Device, semaphore: vk::Semaphore) -> IcdResult<u64> {
    let s = timeline_of(device, semaphore, Rule::CounterTimeline)?;
    let handle = lock(&s.payload).active();
    s.syncs.query(handle).map_err(sync_error)
}

/// `vkWaitSemaphores`: `true` when the values are reached, `false` on timeout.
pub fn wait_semaphores(
    device: vk::Device,
    waits: &[(vk::Semaphore, u64)],
    all: bool,
    timeout_ns: u64,
) -> IcdResult<bool> {
    let points = waits
        .iter()
        .map(|(h, value)| {
            let s = timeline_of(device, *h, Rule::WaitTimeline)?;
            let handle = lock(&s.payload).active();
            Ok(SyncPoint {
                handle,
                value: *value,
            })
        })
        .collect::<IcdResult<Vec<_>>>()?;
    let syncs = syncs_of(device)?;
    wait_points(&*syncs, &points, all, timeout_ns)
}

/// `vkSignalSemaphore`.
pub fn signal_semaphore(device: vk::Device, semaphore: vk::Semaphore, value: u64) -> IcdResult<()> {
    let s = timeline_of(device, semaphore, Rule::SignalTimeline)?;
    let handle = lock(&s.payload).active();
    let current = s.syncs.query(handle).map_err(sync_error)?;
    if value <= current {
        return Err(IcdError::rule(Rule::SignalValue, value));
    }
    s.syncs
        .signal(SyncPoint { handle, value })
        .map_err(sync_error)
}

/// `vkGetSemaphoreFdKHR`: a new close-on-exec fd the caller owns. Exporting a `SYNC_FD`
/// consumes the binary payload, as a wait would: the semaphore is unsignalled after it
/// (and a temporary payload restored).
#[cfg(not(windows))]
pub fn semaphore_fd(
    device: vk::Device,
    semaphore: vk::Semaphore,
    handle_type: vk::ExternalSemaphoreHandleTypeFlags,
) -> IcdResult<rustix::fd::OwnedFd> {
    let s = SEMAPHORES.live_of(device, semaphore)?;
    let kind = rules::check_semaphore_export(s.exportable, handle_type, s.timeline)?;
    let mut payload = lock(&s.payload);
    let fd = s
        .syncs
        .export(payload.active(), kind)
        .map_err(|e| export_error(e, kind, Vuid::SemaphoreGetSyncFdSubmitted))?;
    if kind == SyncFdKind::SyncFile {
        payload.restore(&*s.syncs);
        s.syncs.reset(payload.permanent).map_err(sync_error)?;
    }
    Ok(fd)
}

/// A refused export: a `SYNC_FD` of a payload with no fence (`EINVAL`: nothing was
/// submitted to signal it) breaks `pending`; anything else is the kernel's.
#[cfg(not(windows))]
fn export_error(e: extmem::backend::BackendError, kind: SyncFdKind, pending: Vuid) -> IcdError {
    if kind == SyncFdKind::SyncFile && e.errno == extmem::backend::errno::EINVAL {
        IcdError::Memory(Error::ValidUsage(pending))
    } else {
        sync_error(e)
    }
}

/// `vkImportSemaphoreFdKHR`. On success the fd is the driver's (closed here: the kernel
/// keeps what it refers to); on failure it stays the application's. `SYNC_FD` -1 is a
/// payload that has already signalled, as the specification defines it.
#[cfg(not(windows))]
pub fn import_semaphore_fd(
    device: vk::Device,
    semaphore: vk::Semaphore,
    handle_type: vk::ExternalSemaphoreHandleTypeFlags,
    temporary: bool,
    fd: i32,
) -> IcdResult<()> {
    let s = SEMAPHORES.live_of(device, semaphore)?;
    let kind = rules::check_semaphore_import(handle_type, temporary, s.timeline)?;
    let mut payload = lock(&s.payload);
    import_fd(
        &mut payload,
        &*s.syncs,
        kind,
        fd,
        temporary,
        Vuid::SemaphoreImportFdValid,
    )
}

/// Imports `fd` of `kind` into `payload` (the shared half of the two import commands),
/// taking the fd only on success.
#[cfg(not(windows))]
fn import_fd(
    payload: &mut Payload,
    syncs: &dyn Syncobjs,
    kind: SyncFdKind,
    fd: i32,
    temporary: bool,
    invalid: Vuid,
) -> IcdResult<()> {
    use rustix::fd::{BorrowedFd, FromRawFd, OwnedFd};
    let invalid = IcdError::Memory(Error::ValidUsage(invalid));
    if kind == SyncFdKind::SyncFile && fd == -1 {
        let handle = syncs.create(true).map_err(sync_error)?;
        install(payload, syncs, handle, temporary);
        return Ok(());
    }
    if fd < 0 {
        return Err(invalid);
    }
    // SAFETY: the number is only used for the import ioctls, which fail with EBADF if it
    // is not open; the application keeps ownership until the import succeeds.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let refused = |e: extmem::backend::BackendError| match e.op {
        extmem::backend::Op::ImportSync => invalid,
        _ => sync_error(e),
    };
    let handle = match kind {
        SyncFdKind::Syncobj => syncs.import_syncobj(borrowed).map_err(refused)?,
        SyncFdKind::SyncFile => {
            let handle = syncs.create(false).map_err(sync_error)?;
            if let Err(e) = syncs.import_sync_file(handle, borrowed) {
                syncs.destroy(handle);
                return Err(refused(e));
            }
            handle
        }
    };
    install(payload, syncs, handle, temporary);
    // SAFETY: the import succeeded, so Vulkan hands the fd to us; nothing else in this
    // process closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

/// Puts an imported object in place: in front of the permanent payload, or instead of it.
#[cfg(not(windows))]
fn install(payload: &mut Payload, syncs: &dyn Syncobjs, handle: SyncHandle, temporary: bool) {
    payload.restore(syncs);
    if temporary {
        payload.temporary = Some(handle);
    } else {
        syncs.destroy(payload.permanent);
        payload.permanent = handle;
    }
}

/// `vkGetFenceFdKHR`: a new close-on-exec fd the caller owns.
#[cfg(not(windows))]
pub fn fence_fd(
    device: vk::Device,
    fence: vk::Fence,
    handle_type: vk::ExternalFenceHandleTypeFlags,
) -> IcdResult<rustix::fd::OwnedFd> {
    let f = FENCES.live_of(device, fence)?;
    let kind = rules::check_fence_export(f.exportable, handle_type)?;
    let handle = lock(&f.payload).active();
    f.syncs
        .export(handle, kind)
        .map_err(|e| export_error(e, kind, Vuid::FenceGetSyncFdPending))
}

/// `vkImportFenceFdKHR`, with the fd ownership and `SYNC_FD` -1 of
/// [`import_semaphore_fd`].
#[cfg(not(windows))]
pub fn import_fence_fd(
    device: vk::Device,
    fence: vk::Fence,
    handle_type: vk::ExternalFenceHandleTypeFlags,
    temporary: bool,
    fd: i32,
) -> IcdResult<()> {
    let f = FENCES.live_of(device, fence)?;
    let kind = rules::check_fence_import(handle_type, temporary)?;
    let mut payload = lock(&f.payload);
    import_fd(
        &mut payload,
        &*f.syncs,
        kind,
        fd,
        temporary,
        Vuid::FenceImportFdValid,
    )
}

/// One batch of a submission (`VkSubmitInfo`, `VkSubmitInfo2`): semaphores with the
/// timeline value to wait for or signal (ignored for binary semaphores).
#[derive(Debug, Default)]
pub struct Batch {
    /// Semaphores waited for before the batch's commands run.
    pub waits: Vec<(vk::Semaphore, u64)>,
    /// The command buffers, in order.
    pub command_buffers: Vec<vk::CommandBuffer>,
    /// Semaphores signalled once the commands have run.
    pub signals: Vec<(vk::Semaphore, u64)>,
}

/// A batch with its objects looked up and its commands gathered.
struct Resolved {
    waits: Vec<(Arc<Semaphore>, SyncPoint)>,
    cmds: Vec<Command>,
    signals: Vec<SyncPoint>,
}

fn semaphore_point(
    device: vk::Device,
    (h, value): (vk::Semaphore, u64),
) -> IcdResult<(Arc<Semaphore>, SyncPoint)> {
    let s = SEMAPHORES.live_of(device, h)?;
    let handle = lock(&s.payload).active();
    let value = if s.timeline { value } else { 0 };
    Ok((s, SyncPoint { handle, value }))
}

fn resolve(device: vk::Device, batch: &Batch) -> IcdResult<Resolved> {
    let waits = batch
        .waits
        .iter()
        .map(|w| semaphore_point(device, *w))
        .collect::<IcdResult<Vec<_>>>()?;
    let signals = batch
        .signals
        .iter()
        .map(|s| semaphore_point(device, *s).map(|(_, p)| p))
        .collect::<IcdResult<Vec<_>>>()?;
    let mut cmds = Vec::new();
    for h in &batch.command_buffers {
        let cb = COMMAND_BUFFERS.live_of(device, *h)?;
        let recording = lock(&cb.recording);
        if recording.error.is_some() {
            return Err(IcdError::rule(Rule::SubmitExecutable, h.as_raw()));
        }
        cmds.extend_from_slice(&recording.cmds);
    }
    Ok(Resolved {
        waits,
        cmds,
        signals,
    })
}

/// `vkQueueSubmit` and `vkQueueSubmit2`: queues every batch in order, then signals
/// `fence` after the last. A batch without commands still waits and signals (the device
/// runs a 4-byte fill of its scratch page for it). A kernel refusal is
/// `VK_ERROR_DEVICE_LOST`; batches before the refused one stay queued.
pub fn submit(queue: vk::Queue, batches: &[Batch], fence: Option<vk::Fence>) -> IcdResult<()> {
    let q = QUEUES.live(queue)?;
    let dev = DEVICES.live(q.device)?;
    let fence = fence.map(|f| FENCES.live_of(q.device, f)).transpose()?;
    let mut resolved = batches
        .iter()
        .map(|b| resolve(q.device, b))
        .collect::<IcdResult<Vec<_>>>()?;
    if resolved.is_empty() && fence.is_some() {
        resolved.push(Resolved {
            waits: Vec::new(),
            cmds: Vec::new(),
            signals: Vec::new(),
        });
    }
    let fence_point = fence
        .as_ref()
        .map(|f| SyncPoint::binary(lock(&f.payload).active()));
    let nop = [Command::Fill {
        dst: dev.scratch,
        size: 4,
        value: 0,
    }];
    let chunk_len = usize::try_from(MAX_COMMANDS).unwrap_or(1);
    let mut manager = lock(&dev.memory);
    let engine = manager
        .backend_mut()
        .engine()
        .ok_or(IcdError::NoCopyEngine)?;
    let mut submitted = lock(&q.timeline.submitted);
    let batch_count = resolved.len();
    for (index, batch) in resolved.iter().enumerate() {
        let chunks: Vec<&[Command]> = if batch.cmds.is_empty() {
            vec![&nop[..]]
        } else {
            batch.cmds.chunks(chunk_len).collect()
        };
        let wait_points: Vec<SyncPoint> = batch.waits.iter().map(|(_, p)| *p).collect();
        let last_chunk = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let point = submitted
                .checked_add(1)
                .ok_or(IcdError::Memory(Error::DeviceLost {
                    errno: extmem::backend::errno::EOVERFLOW,
                }))?;
            let mut signals = vec![SyncPoint {
                handle: q.timeline.handle,
                value: point,
            }];
            if i == last_chunk {
                signals.extend_from_slice(&batch.signals);
                if index + 1 == batch_count {
                    signals.extend(fence_point);
                }
            }
            let waits = if i == 0 { &wait_points[..] } else { &[] };
            engine.submit(chunk, waits, &signals)?;
            *submitted = point;
        }
        // The wait is submitted: a temporary payload has served (the queued job holds
        // the fence it waits for).
        for (s, _) in &batch.waits {
            lock(&s.payload).restore(&*s.syncs);
        }
    }
    Ok(())
}

/// `vkQueueWaitIdle`.
pub fn wait_idle_queue(queue: vk::Queue) -> IcdResult<()> {
    QUEUES.live(queue)?.timeline.wait_idle()
}

/// `vkDeviceWaitIdle`: the device's queue.
pub fn wait_idle_device(device: vk::Device) -> IcdResult<()> {
    DEVICES.live(device)?;
    match objects::device_queue(device) {
        Some(queue) => wait_idle_queue(queue),
        None => Ok(()),
    }
}
