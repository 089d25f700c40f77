//! Fences and semaphores over the device's synchronisation objects
//! ([`extmem::sync::Syncobjs`]: DRM syncobjs on extmem-vgpu, an in-process table on the
//! software device); submission and the queue are [`crate::queue`]'s.
//!
//! Each fence and semaphore has a permanent payload and may have a temporary one
//! (imported with `VK_*_IMPORT_TEMPORARY_BIT`, or any `SYNC_FD` import): the temporary one
//! is what waits and signals use until the next wait on the semaphore is submitted, or the
//! fence is reset, and is then destroyed.
//!
//! Every wait ends with the device's status ([`crate::objects::Device::check_status`]): a
//! point signals whether or not the job behind it ran, so a wait that returns after a
//! job of the device failed reports `VK_ERROR_DEVICE_LOST`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use ash::vk::{self, Handle};
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
use crate::objects::{Device, DEVICES};

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

    /// Takes a temporary payload out, bringing back the permanent one; the caller
    /// destroys it (once nothing queued needs its handle).
    fn take_temporary(&mut self) -> Option<SyncHandle> {
        self.temporary.take()
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
    /// The queue point of the last submission that signals it (0: none): until the
    /// queue reaches it, the fence is in use by pending work.
    pub last_use: AtomicU64,
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
    /// The queue point of the last submission that waits for or signals it (0: none).
    pub last_use: AtomicU64,
}

/// What fences and semaphores share: the payload waits and signals use now.
macro_rules! payload_access {
    ($($object:ty),+) => {
        $(impl $object {
            /// The object waits and signals use now.
            pub fn active(&self) -> SyncHandle {
                lock(&self.payload).active()
            }

            /// Takes a temporary payload out (a submitted wait consumed it); the caller
            /// destroys it once the wait is in the kernel.
            pub fn take_temporary(&self) -> Option<SyncHandle> {
                lock(&self.payload).take_temporary()
            }
        })+
    };
}

payload_access!(Fence, Semaphore);

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

/// A backend refusal of a synchronisation call, in the manager's terms.
pub(crate) fn sync_error(e: extmem::backend::BackendError) -> IcdError {
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
        last_use: AtomicU64::new(0),
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
/// signalled, and `VK_ERROR_DEVICE_LOST` before or after if a job of the device has
/// failed. More points than one kernel wait takes are waited for in turn (for `all`) or
/// refused (for any: the device's limit, reported as out of host memory).
fn wait_points(dev: &Device, points: &[SyncPoint], all: bool, timeout_ns: u64) -> IcdResult<bool> {
    dev.check_status()?;
    let max = extmem::sync::MAX_WAIT_POINTS;
    if !all && points.len() > max {
        return Err(IcdError::Memory(Error::OutOfHostMemory));
    }
    let mut signalled = true;
    for chunk in points.chunks(max.max(1)) {
        if dev.syncs.wait(chunk, all, timeout_ns).map_err(sync_error)? == WaitOutcome::TimedOut {
            signalled = false;
            break;
        }
    }
    dev.check_status()?;
    Ok(signalled)
}

/// `vkWaitForFences`: `true` when signalled, `false` on timeout.
pub fn wait_for_fences(
    device: vk::Device,
    fences: &[vk::Fence],
    all: bool,
    timeout_ns: u64,
) -> IcdResult<bool> {
    let points = fence_points(device, fences)?;
    let points: Vec<SyncPoint> = points.into_iter().map(|(_, p)| p).collect();
    wait_points(&*DEVICES.live(device)?, &points, all, timeout_ns)
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
        last_use: AtomicU64::new(0),
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
    let value = s.syncs.query(handle).map_err(sync_error)?;
    DEVICES.live(device)?.check_status()?;
    Ok(value)
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
    wait_points(&*DEVICES.live(device)?, &points, all, timeout_ns)
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
    if kind == SyncFdKind::SyncFile {
        wait_for_held_signal(device, s.active())?;
    }
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

/// Before a `SYNC_FD` export of `handle`'s binary payload: while the queue holds jobs
/// back, the signal the application submitted may be one of them, not yet in the kernel,
/// so this waits until the payload has a fence (as Mesa's runtime waits for a pending
/// signal before it exports). With nothing held, a payload without a fence has had no
/// signal submitted, which the export then reports.
#[cfg(not(windows))]
fn wait_for_held_signal(device: vk::Device, handle: SyncHandle) -> IcdResult<()> {
    let dev = DEVICES.live(device)?;
    let Some(queue) = queue_of(device)? else {
        return Ok(());
    };
    if queue.submits.holds_jobs() {
        dev.syncs
            .wait_available(&[SyncPoint::binary(handle)], u64::MAX)
            .map_err(sync_error)?;
    }
    Ok(())
}

/// The device's queue.
#[cfg(not(windows))]
fn queue_of(device: vk::Device) -> IcdResult<Option<Arc<crate::objects::Queue>>> {
    crate::objects::device_queue(device)
        .map(|q| crate::objects::QUEUES.live(q))
        .transpose()
}

/// Whether a submission the queue has not finished (held ones included) waits for or
/// signals the object last used at `last_use`.
#[cfg(not(windows))]
fn in_use(device: vk::Device, last_use: &AtomicU64) -> IcdResult<bool> {
    let point = last_use.load(std::sync::atomic::Ordering::SeqCst);
    match queue_of(device)? {
        Some(queue) => Ok(!queue.submits.reached(point)?),
        None => Ok(false),
    }
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
    let kind = rules::check_semaphore_import(
        handle_type,
        temporary,
        s.timeline,
        in_use(device, &s.last_use)?,
    )?;
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
    let handle = f.active();
    if kind == SyncFdKind::SyncFile {
        wait_for_held_signal(device, handle)?;
    }
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
    let kind = rules::check_fence_import(handle_type, temporary, in_use(device, &f.last_use)?)?;
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
