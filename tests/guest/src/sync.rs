//! Explicit and implicit synchronisation from userspace: DRM syncobjs (binary and
//! timeline, `include/uapi/drm/drm.h`), sync_files, the dma-buf sync_file ioctls
//! (`include/uapi/linux/dma-buf.h`, Linux ≥ 6.0) and vgem's fences
//! (`include/uapi/drm/vgem_drm.h`).
//!
//! The syncobj ioctls are drm-ffi's; linux-raw-sys and drm-ffi carry neither the dma-buf
//! sync_file nor vgem's fence ioctls, so their structs are declared here and each ioctl
//! number is pinned to the value the C headers give.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::ioctl::{self, opcode, Opcode, Setter, Updater};
use rustix::time::{clock_gettime, ClockId};

/// `struct dma_buf_export_sync_file` (and `dma_buf_import_sync_file`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct DmaBufSyncFile {
    flags: u32,
    fd: i32,
}

/// `struct drm_vgem_fence_attach`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct VgemFenceAttach {
    handle: u32,
    flags: u32,
    out_fence: u32,
    pad: u32,
}

/// `struct drm_vgem_fence_signal`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct VgemFenceSignal {
    fence: u32,
    flags: u32,
}

const DMA_BUF_EXPORT_SYNC_FILE: Opcode = opcode::read_write::<DmaBufSyncFile>(b'b', 2);
const DMA_BUF_IMPORT_SYNC_FILE: Opcode = opcode::write::<DmaBufSyncFile>(b'b', 3);
const VGEM_FENCE_ATTACH: Opcode = opcode::read_write::<VgemFenceAttach>(b'd', 0x41);
const VGEM_FENCE_SIGNAL: Opcode = opcode::write::<VgemFenceSignal>(b'd', 0x42);
const _: () = {
    assert!(DMA_BUF_EXPORT_SYNC_FILE == 0xc008_6202);
    assert!(DMA_BUF_IMPORT_SYNC_FILE == 0x4008_6203);
    assert!(VGEM_FENCE_ATTACH == 0xc010_6441);
    assert!(VGEM_FENCE_SIGNAL == 0x4008_6442);
};

/// `DMA_BUF_SYNC_READ` / `DMA_BUF_SYNC_WRITE`.
pub const DMA_BUF_SYNC_READ: u32 = 1 << 0;
/// See [`DMA_BUF_SYNC_READ`].
pub const DMA_BUF_SYNC_WRITE: u32 = 1 << 1;
/// `VGEM_FENCE_WRITE`.
pub const VGEM_FENCE_WRITE: u32 = 1 << 0;

/// `CLOCK_MONOTONIC` now plus `timeout`, in nanoseconds: the absolute deadline the syncobj
/// waits take.
fn deadline(timeout: Duration) -> i64 {
    let now = clock_gettime(ClockId::Monotonic);
    let now = i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec);
    let timeout = i128::try_from(timeout.as_nanos()).unwrap_or(i128::MAX);
    i64::try_from(now.saturating_add(timeout)).unwrap_or(i64::MAX)
}

/// A syncobj handle of one DRM file.
pub type Syncobj = u32;

/// drm-ffi's `io::Error` as the errno the checks name.
fn errno(error: std::io::Error) -> Errno {
    Errno::from_io_error(&error).unwrap_or(Errno::IO)
}

/// `DRM_IOCTL_SYNCOBJ_CREATE` (flags 0: no fence yet).
pub fn syncobj_create(drm: BorrowedFd<'_>) -> Result<Syncobj, Errno> {
    Ok(drm_ffi::syncobj::create(drm, false).map_err(errno)?.handle)
}

/// `DRM_IOCTL_SYNCOBJ_DESTROY`.
pub fn syncobj_destroy(drm: BorrowedFd<'_>, handle: Syncobj) -> Result<(), Errno> {
    drm_ffi::syncobj::destroy(drm, handle).map_err(errno)?;
    Ok(())
}

/// `DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD`: the syncobj as a file, or with `sync_file` its
/// current fence as a sync_file.
pub fn syncobj_export(
    drm: BorrowedFd<'_>,
    handle: Syncobj,
    sync_file: bool,
) -> Result<OwnedFd, Errno> {
    let fd = drm_ffi::syncobj::handle_to_fd(drm, handle, sync_file)
        .map_err(errno)?
        .fd;
    if fd < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE` of a syncobj file (a new handle in this DRM file).
pub fn syncobj_import(drm: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<Syncobj, Errno> {
    Ok(drm_ffi::syncobj::fd_to_handle(drm, fd, false)
        .map_err(errno)?
        .handle)
}

/// `DRM_IOCTL_SYNCOBJ_WAIT` for every binary syncobj of `handles`, at most `timeout`
/// (`ETIME` when it passes).
pub fn syncobj_wait(
    drm: BorrowedFd<'_>,
    handles: &[Syncobj],
    timeout: Duration,
) -> Result<(), Errno> {
    // drm-ffi narrows the count without a check.
    u32::try_from(handles.len()).map_err(|_| Errno::INVAL)?;
    drm_ffi::syncobj::wait(drm, handles, deadline(timeout), true, false).map_err(errno)?;
    Ok(())
}

/// `DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT` for `point` of one timeline syncobj, at most
/// `timeout` (`ETIME`).
pub fn timeline_wait(
    drm: BorrowedFd<'_>,
    handle: Syncobj,
    point: u64,
    timeout: Duration,
) -> Result<(), Errno> {
    drm_ffi::syncobj::timeline_wait(
        drm,
        &[handle],
        &[point],
        deadline(timeout),
        true,
        false,
        false,
    )
    .map_err(errno)?;
    Ok(())
}

/// `DRM_IOCTL_SYNCOBJ_QUERY`: the last signalled point of a timeline syncobj.
pub fn timeline_query(drm: BorrowedFd<'_>, handle: Syncobj) -> Result<u64, Errno> {
    let mut points = [0u64];
    drm_ffi::syncobj::query(drm, &[handle], &mut points, false).map_err(errno)?;
    Ok(points[0])
}

/// `DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL`: signals `point` of a timeline syncobj from the CPU.
pub fn timeline_signal(drm: BorrowedFd<'_>, handle: Syncobj, point: u64) -> Result<(), Errno> {
    drm_ffi::syncobj::timeline_signal(drm, &[handle], &[point]).map_err(errno)?;
    Ok(())
}

/// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`: a sync_file of the dma-buf's fences that a reader
/// (`DMA_BUF_SYNC_READ`: the writers') or a writer (`DMA_BUF_SYNC_WRITE`: all) waits for.
pub fn dma_buf_export_sync_file(dma_buf: BorrowedFd<'_>, flags: u32) -> Result<OwnedFd, Errno> {
    let mut args = DmaBufSyncFile { flags, fd: -1 };
    // SAFETY: the opcode takes a `struct dma_buf_export_sync_file`.
    unsafe {
        ioctl::ioctl(
            dma_buf,
            Updater::<DMA_BUF_EXPORT_SYNC_FILE, _>::new(&mut args),
        )
    }?;
    if args.fd < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: the kernel just installed this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(args.fd) })
}

/// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`: adds the sync_file's fence to the dma-buf's
/// reservation object (as a write with `DMA_BUF_SYNC_WRITE`).
pub fn dma_buf_import_sync_file(
    dma_buf: BorrowedFd<'_>,
    flags: u32,
    sync_file: BorrowedFd<'_>,
) -> Result<(), Errno> {
    let args = DmaBufSyncFile {
        flags,
        fd: rustix::fd::AsRawFd::as_raw_fd(&sync_file),
    };
    // SAFETY: the opcode takes a `struct dma_buf_import_sync_file` by pointer.
    unsafe { ioctl::ioctl(dma_buf, Setter::<DMA_BUF_IMPORT_SYNC_FILE, _>::new(args)) }
}

/// Whether a sync_file (or a dma-buf, for its implicit fences) is signalled within
/// `timeout` (`poll` for `POLLIN`).
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> Result<bool, Errno> {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    Ok(poll(&mut fds, Some(&timeout))? > 0 && fds[0].revents().contains(PollFlags::IN))
}

/// `DRM_IOCTL_VGEM_FENCE_ATTACH`: a vgem fence on the object's reservation object (a write
/// with [`VGEM_FENCE_WRITE`]); its id for [`vgem_fence_signal`]. vgem signals it itself
/// after 10 s.
pub fn vgem_fence_attach(vgem: BorrowedFd<'_>, handle: u32, flags: u32) -> Result<u32, Errno> {
    let mut args = VgemFenceAttach {
        handle,
        flags,
        ..VgemFenceAttach::default()
    };
    // SAFETY: the opcode takes a `struct drm_vgem_fence_attach`.
    unsafe { ioctl::ioctl(vgem, Updater::<VGEM_FENCE_ATTACH, _>::new(&mut args)) }?;
    Ok(args.out_fence)
}

/// `DRM_IOCTL_VGEM_FENCE_SIGNAL`.
pub fn vgem_fence_signal(vgem: BorrowedFd<'_>, fence: u32) -> Result<(), Errno> {
    let args = VgemFenceSignal { fence, flags: 0 };
    // SAFETY: the opcode takes a `struct drm_vgem_fence_signal` by pointer.
    unsafe { ioctl::ioctl(vgem, Setter::<VGEM_FENCE_SIGNAL, _>::new(args)) }
}

/// A syncobj that is destroyed when dropped.
pub struct OwnedSyncobj<'a> {
    drm: BorrowedFd<'a>,
    /// The handle.
    pub handle: Syncobj,
}

impl<'a> OwnedSyncobj<'a> {
    /// A new syncobj in `drm`'s file.
    pub fn new(drm: &'a impl AsFd) -> Result<Self, Errno> {
        let drm = drm.as_fd();
        Ok(Self {
            drm,
            handle: syncobj_create(drm)?,
        })
    }
}

impl Drop for OwnedSyncobj<'_> {
    fn drop(&mut self) {
        let _ = syncobj_destroy(self.drm, self.handle);
    }
}
