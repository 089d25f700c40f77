//! DRM syncobjs (`DRIVER_SYNCOBJ | DRIVER_SYNCOBJ_TIMELINE`) on a render node: the
//! standard ioctls of `<drm/drm.h>` behind [`Syncobjs`]. Layouts are the C structs of
//! the oldest kernel in the matrix (6.1): `drm_syncobj_wait` and `drm_syncobj_timeline_wait`
//! without the later `deadline_nsec`, `drm_syncobj_handle` without the later `point`;
//! `drm_ioctl` zero-fills the fields a newer kernel has beyond the size the number encodes.
//! The one call that is not standard is [`Syncobjs::job_faults`]: extmem-vgpu's
//! `GET_PARAM(JOB_FAULTS)` on the same file.

use core::num::NonZeroU32;

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Opcode, Updater};
use rustix::time::{clock_gettime, ClockId};

use crate::backend::{errno, BackendError, Op};
use crate::sync::{SyncFdKind, SyncHandle, SyncPoint, Syncobjs, WaitOutcome};

/// `struct drm_syncobj_create`.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct Create {
    handle: u32,
    flags: u32,
}

/// `struct drm_syncobj_destroy`.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct Destroy {
    handle: u32,
    pad: u32,
}

/// `struct drm_syncobj_handle` (6.1's 16 bytes).
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct HandleFd {
    handle: u32,
    flags: u32,
    fd: i32,
    pad: u32,
}

/// `struct drm_syncobj_timeline_wait` (6.1's 40 bytes).
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct TimelineWait {
    handles: u64,
    points: u64,
    timeout_nsec: i64,
    count_handles: u32,
    flags: u32,
    first_signaled: u32,
    pad: u32,
}

/// `struct drm_syncobj_array`.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct Array {
    handles: u64,
    count_handles: u32,
    pad: u32,
}

/// `struct drm_syncobj_timeline_array`.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct TimelineArray {
    handles: u64,
    points: u64,
    count_handles: u32,
    flags: u32,
}

const CREATE: Opcode = opcode::read_write::<Create>(extmem_uapi::DRM_IOCTL_BASE, 0xBF);
const DESTROY: Opcode = opcode::read_write::<Destroy>(extmem_uapi::DRM_IOCTL_BASE, 0xC0);
const HANDLE_TO_FD: Opcode = opcode::read_write::<HandleFd>(extmem_uapi::DRM_IOCTL_BASE, 0xC1);
const FD_TO_HANDLE: Opcode = opcode::read_write::<HandleFd>(extmem_uapi::DRM_IOCTL_BASE, 0xC2);
const RESET: Opcode = opcode::read_write::<Array>(extmem_uapi::DRM_IOCTL_BASE, 0xC4);
const SIGNAL: Opcode = opcode::read_write::<Array>(extmem_uapi::DRM_IOCTL_BASE, 0xC5);
const TIMELINE_WAIT: Opcode = opcode::read_write::<TimelineWait>(extmem_uapi::DRM_IOCTL_BASE, 0xCA);
const QUERY: Opcode = opcode::read_write::<TimelineArray>(extmem_uapi::DRM_IOCTL_BASE, 0xCB);
const TIMELINE_SIGNAL: Opcode =
    opcode::read_write::<TimelineArray>(extmem_uapi::DRM_IOCTL_BASE, 0xCD);

/// `DRM_SYNCOBJ_CREATE_SIGNALED`.
const CREATE_SIGNALED: u32 = 1 << 0;
/// `DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE` (and `FD_TO_HANDLE`'s
/// `IMPORT_SYNC_FILE`, the same bit).
const SYNC_FILE: u32 = 1 << 0;
/// `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL`.
const WAIT_ALL: u32 = 1 << 0;
/// `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT`: a point with no fence yet is waited for
/// rather than refused, so a host wait may start before the signal is submitted.
const WAIT_FOR_SUBMIT: u32 = 1 << 1;
/// `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE`: the wait ends once each point has a fence,
/// signalled or not (with `WAIT_FOR_SUBMIT`, once its signal is submitted).
const WAIT_AVAILABLE: u32 = 1 << 2;
/// extmem-vgpu's `GET_PARAM`, for the file's failed-job count.
const GET_PARAM: Opcode = extmem_uapi::IOCTL_GET_PARAM as Opcode;

/// Most points one wait takes ([`crate::sync::MAX_WAIT_POINTS`]).
const MAX_WAIT: usize = crate::sync::MAX_WAIT_POINTS;

/// The syncobjs of one DRM file, on a descriptor of that file (a `dup` of the backend's:
/// syncobj handles belong to the open file, not to the descriptor).
#[derive(Debug)]
pub struct DrmSyncobjs {
    fd: OwnedFd,
}

fn sync_error(op: Op, e: Errno) -> BackendError {
    BackendError {
        op,
        errno: e.raw_os_error(),
    }
}

/// Runs one syncobj ioctl on `arg`.
///
/// # Safety
/// `OPCODE`'s argument must be exactly a `T`, and every user pointer in `arg` must be
/// valid for the counts it carries for the duration of the call.
unsafe fn call<const OPCODE: Opcode, T>(
    fd: BorrowedFd<'_>,
    arg: &mut T,
    op: Op,
) -> Result<(), BackendError> {
    // SAFETY: the caller guarantees the argument type and the pointers inside it.
    unsafe { ioctl(fd, Updater::<OPCODE, T>::new(arg)) }.map_err(|e| sync_error(op, e))
}

/// `CLOCK_MONOTONIC` now plus `timeout_ns`, saturated: the absolute deadline the waits
/// take (a relative `u64::MAX`, Vulkan's "forever", becomes `i64::MAX`).
fn deadline(timeout_ns: u64) -> i64 {
    let now = clock_gettime(ClockId::Monotonic);
    let now = i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec);
    i64::try_from(now.saturating_add(i128::from(timeout_ns))).unwrap_or(i64::MAX)
}

impl DrmSyncobjs {
    /// The syncobjs of the DRM file `fd` is a descriptor of.
    #[must_use]
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn handle(raw: u32, op: Op) -> Result<SyncHandle, BackendError> {
        NonZeroU32::new(raw).map(SyncHandle).ok_or(BackendError {
            op,
            errno: errno::EINVAL,
        })
    }

    /// `TIMELINE_SIGNAL` or `SIGNAL` of one point.
    fn signal_one(&self, point: SyncPoint) -> Result<(), BackendError> {
        let handle = point.handle.0.get();
        if point.value == 0 {
            let mut arg = Array {
                handles: core::ptr::from_ref(&handle) as usize as u64,
                count_handles: 1,
                pad: 0,
            };
            // SAFETY: SIGNAL takes a drm_syncobj_array; `handles` points at one u32
            // that lives across the call.
            return unsafe { call::<SIGNAL, _>(self.fd(), &mut arg, Op::Sync) };
        }
        let mut arg = TimelineArray {
            handles: core::ptr::from_ref(&handle) as usize as u64,
            points: core::ptr::from_ref(&point.value) as usize as u64,
            count_handles: 1,
            flags: 0,
        };
        // SAFETY: TIMELINE_SIGNAL takes a drm_syncobj_timeline_array; both arrays are one
        // element long and live across the call.
        unsafe { call::<TIMELINE_SIGNAL, _>(self.fd(), &mut arg, Op::Sync) }
    }
}

impl DrmSyncobjs {
    /// `TIMELINE_WAIT` for `points` with `flags` (always `WAIT_FOR_SUBMIT` besides).
    fn timeline_wait(
        &self,
        points: &[SyncPoint],
        flags: u32,
        timeout_ns: u64,
    ) -> Result<WaitOutcome, BackendError> {
        let too_many = BackendError {
            op: Op::Sync,
            errno: errno::EINVAL,
        };
        if points.len() > MAX_WAIT {
            return Err(too_many);
        }
        if points.is_empty() {
            return Ok(WaitOutcome::Signaled);
        }
        let mut handles = [0u32; MAX_WAIT];
        let mut values = [0u64; MAX_WAIT];
        for ((h, v), p) in handles.iter_mut().zip(values.iter_mut()).zip(points) {
            *h = p.handle.0.get();
            *v = p.value;
        }
        let mut arg = TimelineWait {
            handles: handles.as_ptr() as usize as u64,
            points: values.as_ptr() as usize as u64,
            timeout_nsec: deadline(timeout_ns),
            count_handles: u32::try_from(points.len()).map_err(|_| too_many)?,
            flags: WAIT_FOR_SUBMIT | flags,
            first_signaled: 0,
            pad: 0,
        };
        // SAFETY: TIMELINE_WAIT takes a drm_syncobj_timeline_wait; both arrays hold at
        // least `count_handles` elements and live across the call. Point 0 of a binary
        // syncobj waits for its fence, as `SYNCOBJ_WAIT` would.
        match unsafe { call::<TIMELINE_WAIT, _>(self.fd(), &mut arg, Op::Sync) } {
            Ok(()) => Ok(WaitOutcome::Signaled),
            Err(e) if e.errno == Errno::TIME.raw_os_error() => Ok(WaitOutcome::TimedOut),
            Err(e) => Err(e),
        }
    }
}

impl Syncobjs for DrmSyncobjs {
    fn create(&self, signaled: bool) -> Result<SyncHandle, BackendError> {
        let mut arg = Create {
            handle: 0,
            flags: if signaled { CREATE_SIGNALED } else { 0 },
        };
        // SAFETY: CREATE takes a drm_syncobj_create.
        unsafe { call::<CREATE, _>(self.fd(), &mut arg, Op::Sync)? };
        Self::handle(arg.handle, Op::Sync)
    }

    fn destroy(&self, handle: SyncHandle) {
        let mut arg = Destroy {
            handle: handle.0.get(),
            pad: 0,
        };
        // SAFETY: DESTROY takes a drm_syncobj_destroy. A failure means the handle was
        // already gone; there is nothing to undo.
        let _ = unsafe { call::<DESTROY, _>(self.fd(), &mut arg, Op::Sync) };
    }

    fn wait(
        &self,
        points: &[SyncPoint],
        all: bool,
        timeout_ns: u64,
    ) -> Result<WaitOutcome, BackendError> {
        self.timeline_wait(points, if all { WAIT_ALL } else { 0 }, timeout_ns)
    }

    fn wait_available(
        &self,
        points: &[SyncPoint],
        timeout_ns: u64,
    ) -> Result<WaitOutcome, BackendError> {
        self.timeline_wait(points, WAIT_ALL | WAIT_AVAILABLE, timeout_ns)
    }

    fn job_faults(&self) -> Result<u64, BackendError> {
        let mut arg = extmem_uapi::GetParam {
            param: extmem_uapi::Param::JOB_FAULTS,
            ..Default::default()
        };
        // SAFETY: GET_PARAM takes a drm_extmem_get_param, which holds no pointer. The
        // descriptor is a dup of the device's own, so the count is its file's.
        unsafe { call::<GET_PARAM, _>(self.fd(), &mut arg, Op::Exec)? };
        Ok(arg.value)
    }

    fn reset(&self, handle: SyncHandle) -> Result<(), BackendError> {
        let raw = handle.0.get();
        let mut arg = Array {
            handles: core::ptr::from_ref(&raw) as usize as u64,
            count_handles: 1,
            pad: 0,
        };
        // SAFETY: RESET takes a drm_syncobj_array; `handles` points at one u32 that lives
        // across the call.
        unsafe { call::<RESET, _>(self.fd(), &mut arg, Op::Sync) }
    }

    fn signal(&self, point: SyncPoint) -> Result<(), BackendError> {
        self.signal_one(point)
    }

    fn query(&self, handle: SyncHandle) -> Result<u64, BackendError> {
        let raw = handle.0.get();
        let mut value = 0u64;
        let mut arg = TimelineArray {
            handles: core::ptr::from_ref(&raw) as usize as u64,
            points: core::ptr::from_mut(&mut value) as usize as u64,
            count_handles: 1,
            flags: 0,
        };
        // SAFETY: QUERY takes a drm_syncobj_timeline_array and writes one u64 to
        // `points`, which points at `value`; both live across the call.
        unsafe { call::<QUERY, _>(self.fd(), &mut arg, Op::Sync)? };
        Ok(value)
    }

    fn shareable(&self) -> bool {
        true
    }

    fn export(&self, handle: SyncHandle, kind: SyncFdKind) -> Result<OwnedFd, BackendError> {
        let mut arg = HandleFd {
            handle: handle.0.get(),
            flags: match kind {
                SyncFdKind::Syncobj => 0,
                SyncFdKind::SyncFile => SYNC_FILE,
            },
            fd: -1,
            pad: 0,
        };
        // SAFETY: HANDLE_TO_FD takes a drm_syncobj_handle. The kernel makes every fd it
        // installs here close-on-exec (`drm_syncobj_handle_to_fd` and
        // `drm_syncobj_export_sync_file` both use `O_CLOEXEC`).
        unsafe { call::<HANDLE_TO_FD, _>(self.fd(), &mut arg, Op::Sync)? };
        if arg.fd < 0 {
            return Err(BackendError {
                op: Op::Sync,
                errno: errno::EBADF,
            });
        }
        // SAFETY: the kernel just installed this fd for us.
        Ok(unsafe { crate::vgpu::owned(arg.fd) })
    }

    fn import_syncobj(&self, fd: BorrowedFd<'_>) -> Result<SyncHandle, BackendError> {
        let mut arg = HandleFd {
            fd: fd.as_raw_fd(),
            ..HandleFd::default()
        };
        // SAFETY: FD_TO_HANDLE takes a drm_syncobj_handle; the kernel takes its own
        // reference to the file and leaves the fd open.
        unsafe { call::<FD_TO_HANDLE, _>(self.fd(), &mut arg, Op::ImportSync)? };
        Self::handle(arg.handle, Op::ImportSync)
    }

    fn import_sync_file(&self, handle: SyncHandle, fd: BorrowedFd<'_>) -> Result<(), BackendError> {
        let mut arg = HandleFd {
            handle: handle.0.get(),
            flags: SYNC_FILE,
            fd: fd.as_raw_fd(),
            pad: 0,
        };
        // SAFETY: FD_TO_HANDLE takes a drm_syncobj_handle; with IMPORT_SYNC_FILE it
        // replaces `handle`'s fence with the sync_file's and leaves the fd open.
        unsafe { call::<FD_TO_HANDLE, _>(self.fd(), &mut arg, Op::ImportSync) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_match_drm_h() {
        // DRM_IOCTL_SYNCOBJ_* of <drm/drm.h> as 6.1 defines them.
        assert_eq!(CREATE, 0xc008_64bf);
        assert_eq!(DESTROY, 0xc008_64c0);
        assert_eq!(HANDLE_TO_FD, 0xc010_64c1);
        assert_eq!(FD_TO_HANDLE, 0xc010_64c2);
        assert_eq!(RESET, 0xc010_64c4);
        assert_eq!(SIGNAL, 0xc010_64c5);
        assert_eq!(TIMELINE_WAIT, 0xc028_64ca);
        assert_eq!(QUERY, 0xc018_64cb);
        assert_eq!(TIMELINE_SIGNAL, 0xc018_64cd);
    }

    #[test]
    fn a_relative_timeout_becomes_a_saturated_absolute_deadline() {
        assert_eq!(deadline(u64::MAX), i64::MAX);
        let soon = deadline(0);
        assert!(soon > 0 && soon < i64::MAX);
    }
}
