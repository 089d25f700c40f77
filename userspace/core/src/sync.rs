//! Synchronisation objects of a device: what `VkFence` and `VkSemaphore` (binary and
//! timeline) stand on. On extmem-vgpu they are DRM syncobjs ([`crate::syncobj`]); the
//! software device keeps them in its process. A copy-engine submission
//! ([`crate::backend::CopyEngine::submit`]) waits for and signals [`SyncPoint`]s, and
//! the front end waits, resets, signals, queries and shares them through [`Syncobjs`].
//!
//! One payload model serves both semaphore types, as a DRM syncobj does: a point with
//! `value == 0` is the binary payload (a fence that is replaced when signalled and
//! removed when reset), a point with a value above 0 is that value of a timeline.

use core::fmt;
use core::num::NonZeroU32;

use ash::vk;

use crate::backend::{errno, BackendError, Op};
use crate::error::{Error, Vuid};
use crate::os_handle::{BorrowedOsHandle, OwnedOsHandle};

/// A synchronisation object of one device (a DRM syncobj handle of the device's file, or
/// the software device's own name): non-zero by construction.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SyncHandle(pub NonZeroU32);

/// One object and the point of it that is waited for or signalled.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SyncPoint {
    /// The object.
    pub handle: SyncHandle,
    /// The timeline value, or 0 for the binary payload.
    pub value: u64,
}

impl SyncPoint {
    /// The binary payload of `handle`.
    #[must_use]
    pub const fn binary(handle: SyncHandle) -> Self {
        Self { handle, value: 0 }
    }
}

/// Most points one [`Syncobjs::wait`] takes (what a DRM syncobj wait is given without a
/// heap allocation per call); a front end waits for more in several calls.
pub const MAX_WAIT_POINTS: usize = 64;

/// How a payload leaves or enters the process as a file descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SyncFdKind {
    /// The whole object (`DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD`): `OPAQUE_FD`, reference
    /// transference.
    Syncobj,
    /// The current fence as a sync_file: `SYNC_FD`, copy transference.
    SyncFile,
}

/// How [`Syncobjs::wait`] ended.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum WaitOutcome {
    /// The points (all of them, or one, as asked) are signalled.
    Signaled,
    /// The timeout passed first.
    TimedOut,
}

/// The synchronisation objects of one device. Every method takes `&self` so that a wait
/// never holds a lock another thread needs to signal what is waited for.
pub trait Syncobjs: fmt::Debug + Send + Sync {
    /// A new object, its binary payload signalled if `signaled`, its timeline at 0.
    fn create(&self, signaled: bool) -> Result<SyncHandle, BackendError>;
    /// Drops the object; work already queued keeps what it waits for and signals.
    fn destroy(&self, handle: SyncHandle);
    /// Waits at most `timeout_ns` (relative; `u64::MAX` is forever) until all `points`
    /// (or, without `all`, one of them) are signalled, including points whose signal is
    /// not submitted yet when the wait starts.
    fn wait(
        &self,
        points: &[SyncPoint],
        all: bool,
        timeout_ns: u64,
    ) -> Result<WaitOutcome, BackendError>;
    /// Waits at most `timeout_ns` (relative; `u64::MAX` is forever) until every point of
    /// `points` is *available*: its signal is submitted (the kernel holds a fence for it)
    /// or it is signalled. A submission that waits for a point the kernel has no fence
    /// for yet is refused, so a front end holds such a submission back until this says
    /// its points are there (Vulkan's wait-before-signal).
    fn wait_available(
        &self,
        points: &[SyncPoint],
        timeout_ns: u64,
    ) -> Result<WaitOutcome, BackendError>;
    /// How many jobs of this device's file have failed (a GPU fault, a dependency that
    /// never signalled) since it was opened, counted before their signal. A wait only
    /// says that a point is signalled, not whether the work behind it succeeded (a
    /// timeline point carries no error at all), so a front end compares this count after
    /// each wait to learn that its device is lost.
    fn job_faults(&self) -> Result<u64, BackendError>;
    /// Removes the binary payload (`vkResetFences`, and what a binary wait consumes).
    fn reset(&self, handle: SyncHandle) -> Result<(), BackendError>;
    /// Signals `point` from the host (`vkSignalSemaphore`, a timeline's initial value).
    fn signal(&self, point: SyncPoint) -> Result<(), BackendError>;
    /// The last signalled timeline value.
    fn query(&self, handle: SyncHandle) -> Result<u64, BackendError>;
    /// Whether the objects can leave the process as fds ([`Syncobjs::export`]). The
    /// software device's cannot (the default); the kernel's can.
    fn shareable(&self) -> bool {
        false
    }
    /// A new close-on-exec fd of `kind` for the object (`Syncobj`) or its current binary
    /// payload (`SyncFile`), which the caller owns.
    fn export(&self, handle: SyncHandle, kind: SyncFdKind) -> Result<OwnedOsHandle, BackendError> {
        let _ = (handle, kind);
        Err(unsupported())
    }
    /// The object behind a syncobj fd, as a new handle; the fd stays the caller's.
    fn import_syncobj(&self, fd: BorrowedOsHandle<'_>) -> Result<SyncHandle, BackendError> {
        let _ = fd;
        Err(unsupported())
    }
    /// Makes the sync_file's fence the object's binary payload; the fd stays the caller's.
    fn import_sync_file(
        &self,
        handle: SyncHandle,
        fd: BorrowedOsHandle<'_>,
    ) -> Result<(), BackendError> {
        let _ = (handle, fd);
        Err(unsupported())
    }
}

/// What a backend without fd sharing answers.
const fn unsupported() -> BackendError {
    BackendError {
        op: Op::Sync,
        errno: errno::EOPNOTSUPP,
    }
}

/// The kind of fd a single fd handle-type bit is: `opaque` (`OPAQUE_FD`) is the syncobj
/// itself, `sync` (`SYNC_FD`) its current fence as a sync_file. Any other value (or
/// several bits) is `None`. The bits are passed in because fences and semaphores number
/// `SYNC_FD` differently.
fn fd_kind(raw: u32, opaque: u32, sync: u32) -> Option<SyncFdKind> {
    if raw == opaque {
        Some(SyncFdKind::Syncobj)
    } else if raw == sync {
        Some(SyncFdKind::SyncFile)
    } else {
        None
    }
}

/// The semaphore handle types a device with shareable synchronisation objects exports
/// and imports (`exportFromImportedHandleTypes` too: an imported payload is a syncobj
/// like any other).
pub const SEMAPHORE_FD_TYPES: vk::ExternalSemaphoreHandleTypeFlags =
    vk::ExternalSemaphoreHandleTypeFlags::from_raw(
        vk::ExternalSemaphoreHandleTypeFlags::OPAQUE_FD.as_raw()
            | vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD.as_raw(),
    );

/// The fence handle types of such a device, as [`SEMAPHORE_FD_TYPES`].
pub const FENCE_FD_TYPES: vk::ExternalFenceHandleTypeFlags =
    vk::ExternalFenceHandleTypeFlags::from_raw(
        vk::ExternalFenceHandleTypeFlags::OPAQUE_FD.as_raw()
            | vk::ExternalFenceHandleTypeFlags::SYNC_FD.as_raw(),
    );

fn semaphore_fd_kind(handle_type: vk::ExternalSemaphoreHandleTypeFlags) -> Option<SyncFdKind> {
    fd_kind(
        handle_type.as_raw(),
        vk::ExternalSemaphoreHandleTypeFlags::OPAQUE_FD.as_raw(),
        vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD.as_raw(),
    )
}

fn fence_fd_kind(handle_type: vk::ExternalFenceHandleTypeFlags) -> Option<SyncFdKind> {
    fd_kind(
        handle_type.as_raw(),
        vk::ExternalFenceHandleTypeFlags::OPAQUE_FD.as_raw(),
        vk::ExternalFenceHandleTypeFlags::SYNC_FD.as_raw(),
    )
}

/// `vkGetSemaphoreFdKHR`'s rules for a semaphore created exportable as `exportable`
/// (binary, or a timeline if `timeline`): the kind of fd to export.
pub fn check_semaphore_export(
    exportable: vk::ExternalSemaphoreHandleTypeFlags,
    handle_type: vk::ExternalSemaphoreHandleTypeFlags,
    timeline: bool,
) -> Result<SyncFdKind, Error> {
    let kind =
        semaphore_fd_kind(handle_type).ok_or(Error::ValidUsage(Vuid::SemaphoreGetFdHandleType))?;
    if !exportable.contains(handle_type) {
        return Err(Error::ValidUsage(Vuid::SemaphoreGetFdExported));
    }
    if kind == SyncFdKind::SyncFile && timeline {
        return Err(Error::ValidUsage(Vuid::SemaphoreGetSyncFdBinary));
    }
    Ok(kind)
}

/// `vkImportSemaphoreFdKHR`'s rules for an import into a binary semaphore (or a timeline
/// if `timeline`), temporary if `temporary`, which a queue command that has not completed
/// waits for or signals if `in_use`: the kind of fd to import.
pub fn check_semaphore_import(
    handle_type: vk::ExternalSemaphoreHandleTypeFlags,
    temporary: bool,
    timeline: bool,
    in_use: bool,
) -> Result<SyncFdKind, Error> {
    let kind =
        semaphore_fd_kind(handle_type).ok_or(Error::ValidUsage(Vuid::SemaphoreImportHandleType))?;
    if in_use {
        return Err(Error::ValidUsage(Vuid::SemaphoreImportInUse));
    }
    // SYNC_FD has copy transference, which only temporary imports have.
    if kind == SyncFdKind::SyncFile && !temporary {
        return Err(Error::ValidUsage(Vuid::SemaphoreImportSyncFdTemporary));
    }
    if temporary && timeline {
        return Err(Error::ValidUsage(Vuid::SemaphoreImportTemporaryBinary));
    }
    Ok(kind)
}

/// `vkGetFenceFdKHR`'s rules for a fence created exportable as `exportable`.
pub fn check_fence_export(
    exportable: vk::ExternalFenceHandleTypeFlags,
    handle_type: vk::ExternalFenceHandleTypeFlags,
) -> Result<SyncFdKind, Error> {
    let kind = fence_fd_kind(handle_type).ok_or(Error::ValidUsage(Vuid::FenceGetFdHandleType))?;
    if !exportable.contains(handle_type) {
        return Err(Error::ValidUsage(Vuid::FenceGetFdExported));
    }
    Ok(kind)
}

/// `vkImportFenceFdKHR`'s rules, temporary if `temporary`, for a fence a queue command
/// that has not completed signals if `in_use`.
pub fn check_fence_import(
    handle_type: vk::ExternalFenceHandleTypeFlags,
    temporary: bool,
    in_use: bool,
) -> Result<SyncFdKind, Error> {
    let kind = fence_fd_kind(handle_type).ok_or(Error::ValidUsage(Vuid::FenceImportHandleType))?;
    if in_use {
        return Err(Error::ValidUsage(Vuid::FenceImportInUse));
    }
    if kind == SyncFdKind::SyncFile && !temporary {
        return Err(Error::ValidUsage(Vuid::FenceImportSyncFdTemporary));
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Sem = vk::ExternalSemaphoreHandleTypeFlags;
    type Fen = vk::ExternalFenceHandleTypeFlags;

    #[test]
    fn semaphore_exports_follow_their_rules() {
        let both = Sem::OPAQUE_FD | Sem::SYNC_FD;
        assert_eq!(
            check_semaphore_export(both, Sem::OPAQUE_FD, true),
            Ok(SyncFdKind::Syncobj)
        );
        assert_eq!(
            check_semaphore_export(both, Sem::SYNC_FD, false),
            Ok(SyncFdKind::SyncFile)
        );
        assert_eq!(
            check_semaphore_export(both, Sem::OPAQUE_WIN32, false),
            Err(Error::ValidUsage(Vuid::SemaphoreGetFdHandleType))
        );
        assert_eq!(
            check_semaphore_export(both, both, false),
            Err(Error::ValidUsage(Vuid::SemaphoreGetFdHandleType)),
            "one handle type at a time"
        );
        assert_eq!(
            check_semaphore_export(Sem::OPAQUE_FD, Sem::SYNC_FD, false),
            Err(Error::ValidUsage(Vuid::SemaphoreGetFdExported))
        );
        assert_eq!(
            check_semaphore_export(both, Sem::SYNC_FD, true),
            Err(Error::ValidUsage(Vuid::SemaphoreGetSyncFdBinary))
        );
    }

    #[test]
    fn semaphore_imports_follow_their_rules() {
        assert_eq!(
            check_semaphore_import(Sem::OPAQUE_FD, false, true, false),
            Ok(SyncFdKind::Syncobj)
        );
        assert_eq!(
            check_semaphore_import(Sem::SYNC_FD, true, false, false),
            Ok(SyncFdKind::SyncFile)
        );
        assert_eq!(
            check_semaphore_import(Sem::D3D12_FENCE, true, false, false),
            Err(Error::ValidUsage(Vuid::SemaphoreImportHandleType))
        );
        assert_eq!(
            check_semaphore_import(Sem::SYNC_FD, false, false, false),
            Err(Error::ValidUsage(Vuid::SemaphoreImportSyncFdTemporary))
        );
        assert_eq!(
            check_semaphore_import(Sem::OPAQUE_FD, true, true, false),
            Err(Error::ValidUsage(Vuid::SemaphoreImportTemporaryBinary))
        );
    }

    #[test]
    fn an_object_pending_work_uses_cannot_take_an_import() {
        assert_eq!(
            check_semaphore_import(Sem::OPAQUE_FD, false, false, true),
            Err(Error::ValidUsage(Vuid::SemaphoreImportInUse))
        );
        assert_eq!(
            check_semaphore_import(Sem::SYNC_FD, true, false, true),
            Err(Error::ValidUsage(Vuid::SemaphoreImportInUse))
        );
        assert_eq!(
            check_fence_import(Fen::OPAQUE_FD, false, true),
            Err(Error::ValidUsage(Vuid::FenceImportInUse))
        );
        assert_eq!(
            check_fence_import(Fen::SYNC_FD, true, true),
            Err(Error::ValidUsage(Vuid::FenceImportInUse))
        );
        // The handle type is still checked first.
        assert_eq!(
            check_fence_import(Fen::OPAQUE_WIN32, true, true),
            Err(Error::ValidUsage(Vuid::FenceImportHandleType))
        );
    }

    #[test]
    fn fence_exports_and_imports_follow_their_rules() {
        let both = Fen::OPAQUE_FD | Fen::SYNC_FD;
        assert_eq!(
            check_fence_export(both, Fen::SYNC_FD),
            Ok(SyncFdKind::SyncFile)
        );
        assert_eq!(
            check_fence_export(both, Fen::OPAQUE_WIN32),
            Err(Error::ValidUsage(Vuid::FenceGetFdHandleType))
        );
        assert_eq!(
            check_fence_export(Fen::SYNC_FD, Fen::OPAQUE_FD),
            Err(Error::ValidUsage(Vuid::FenceGetFdExported))
        );
        assert_eq!(
            check_fence_import(Fen::OPAQUE_FD, false, false),
            Ok(SyncFdKind::Syncobj)
        );
        assert_eq!(
            check_fence_import(Fen::OPAQUE_WIN32_KMT, true, false),
            Err(Error::ValidUsage(Vuid::FenceImportHandleType))
        );
        assert_eq!(
            check_fence_import(Fen::SYNC_FD, false, false),
            Err(Error::ValidUsage(Vuid::FenceImportSyncFdTemporary))
        );
    }
}
