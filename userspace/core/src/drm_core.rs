//! The generic DRM ioctls every render node has: PRIME import and export, GEM_CLOSE and
//! VERSION, and the primary node's MODE_CREATE_DUMB. Layouts from `<drm/drm.h>` and
//! `<drm/drm_mode.h>` (`struct drm_prime_handle`, `struct drm_gem_close`, `struct
//! drm_version`, `struct drm_mode_create_dumb`); numbers from rustix's `_IOC` encoding.
//! drm-rs has these too, but it needs `std` and this crate is `no_std`.

use core::num::NonZeroU32;

use extmem_uapi::DRM_IOCTL_BASE;
use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::ioctl::{ioctl, opcode, Opcode, Updater};

use crate::backend::{errno, BackendError, GemHandle, Op};

/// `struct drm_prime_handle`.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct PrimeHandle {
    handle: u32,
    flags: u32,
    fd: i32,
}

/// `struct drm_gem_close`.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct GemClose {
    handle: u32,
    pad: u32,
}

/// `struct drm_version`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Version {
    major: i32,
    minor: i32,
    patchlevel: i32,
    name_len: usize,
    name: *mut u8,
    date_len: usize,
    date: *mut u8,
    desc_len: usize,
    desc: *mut u8,
}

/// `struct drm_mode_create_dumb`.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct CreateDumb {
    height: u32,
    width: u32,
    bpp: u32,
    flags: u32,
    handle: u32,
    pitch: u32,
    size: u64,
}

// The standard DRM ioctls, `DRM_IO*(nr, type)` of `<drm/drm.h>`, encoded by rustix (the
// driver-private ones are extmem-uapi's).
const VERSION: Opcode = opcode::read_write::<Version>(DRM_IOCTL_BASE, 0x00);
const MODE_CREATE_DUMB: Opcode = opcode::read_write::<CreateDumb>(DRM_IOCTL_BASE, 0xB2);
const GEM_CLOSE: Opcode = opcode::write::<GemClose>(DRM_IOCTL_BASE, 0x09);
const PRIME_HANDLE_TO_FD: Opcode = opcode::read_write::<PrimeHandle>(DRM_IOCTL_BASE, 0x2d);
const PRIME_FD_TO_HANDLE: Opcode = opcode::read_write::<PrimeHandle>(DRM_IOCTL_BASE, 0x2e);

/// `DRM_CLOEXEC` and `DRM_RDWR`, which `<drm/drm.h>` defines as `O_CLOEXEC` and `O_RDWR`.
const DRM_CLOEXEC: u32 = linux_raw_sys::general::O_CLOEXEC;
const DRM_RDWR: u32 = linux_raw_sys::general::O_RDWR;

/// `PRIME_HANDLE_TO_FD`: a new close-on-exec, read-write dma-buf fd.
pub fn prime_handle_to_fd(dev: BorrowedFd<'_>, handle: GemHandle) -> Result<OwnedFd, BackendError> {
    let mut arg = PrimeHandle {
        handle: handle.0.get(),
        flags: DRM_CLOEXEC | DRM_RDWR,
        fd: -1,
    };
    // SAFETY: PRIME_HANDLE_TO_FD takes a drm_prime_handle.
    unsafe {
        ioctl(
            dev,
            Updater::<PRIME_HANDLE_TO_FD, PrimeHandle>::new(&mut arg),
        )
    }
    .map_err(|e| BackendError {
        op: Op::ExportDmaBuf,
        errno: e.raw_os_error(),
    })?;
    if arg.fd < 0 {
        return Err(BackendError {
            op: Op::ExportDmaBuf,
            errno: errno::EINVAL,
        });
    }
    // SAFETY: the kernel just installed this fd for us.
    Ok(unsafe { crate::vgpu::owned(arg.fd) })
}

/// `PRIME_FD_TO_HANDLE`. The same dma-buf always gives the same handle on one device.
pub fn prime_fd_to_handle(
    dev: BorrowedFd<'_>,
    buf: BorrowedFd<'_>,
) -> Result<GemHandle, BackendError> {
    let mut arg = PrimeHandle {
        fd: rustix::fd::AsRawFd::as_raw_fd(&buf),
        ..Default::default()
    };
    // SAFETY: PRIME_FD_TO_HANDLE takes a drm_prime_handle.
    unsafe {
        ioctl(
            dev,
            Updater::<PRIME_FD_TO_HANDLE, PrimeHandle>::new(&mut arg),
        )
    }
    .map_err(|e| BackendError {
        op: Op::ImportDmaBuf,
        errno: e.raw_os_error(),
    })?;
    NonZeroU32::new(arg.handle)
        .map(GemHandle)
        .ok_or(BackendError {
            op: Op::ImportDmaBuf,
            errno: errno::EINVAL,
        })
}

/// Pixels in a row of a dumb buffer standing for plain memory.
const DUMB_WIDTH: u32 = 1024;
/// Bits per pixel of such a buffer.
const DUMB_BPP: u32 = 32;
/// Bytes in one of its rows: 1024 pixels of 32 bits, one 4 KiB page.
const DUMB_ROW: u64 = DUMB_WIDTH as u64 * DUMB_BPP as u64 / 8;

/// `MODE_CREATE_DUMB` of at least `size` bytes, as rows of one page: `(handle, size the
/// kernel allocated)`. Only primary nodes allow it (it is not `DRM_RENDER_ALLOW`; a render
/// node answers `EACCES`), and the kernel caps a dumb buffer below 4 GiB (`EINVAL`).
pub fn create_dumb(dev: BorrowedFd<'_>, size: u64) -> Result<(GemHandle, u64), BackendError> {
    let bad = BackendError {
        op: Op::Create,
        errno: errno::EINVAL,
    };
    let rows = size.div_ceil(DUMB_ROW);
    let mut arg = CreateDumb {
        height: u32::try_from(rows).map_err(|_| bad)?,
        width: DUMB_WIDTH,
        bpp: DUMB_BPP,
        ..Default::default()
    };
    // SAFETY: MODE_CREATE_DUMB takes a drm_mode_create_dumb.
    unsafe { ioctl(dev, Updater::<MODE_CREATE_DUMB, CreateDumb>::new(&mut arg)) }.map_err(|e| {
        BackendError {
            op: Op::Create,
            errno: e.raw_os_error(),
        }
    })?;
    let handle = NonZeroU32::new(arg.handle).map(GemHandle).ok_or(bad)?;
    if arg.size < size {
        gem_close(dev, handle);
        return Err(bad);
    }
    Ok((handle, arg.size))
}

/// `GEM_CLOSE`. A failure means the handle was already gone; nothing to undo.
pub fn gem_close(dev: BorrowedFd<'_>, handle: GemHandle) {
    let mut arg = GemClose {
        handle: handle.0.get(),
        pad: 0,
    };
    // SAFETY: GEM_CLOSE takes a drm_gem_close (the kernel only reads it).
    let _ = unsafe { ioctl(dev, Updater::<GEM_CLOSE, GemClose>::new(&mut arg)) };
}

/// `VERSION`: whether the node's driver is called `name`.
pub fn driver_is(dev: BorrowedFd<'_>, name: &str) -> bool {
    let mut buf = [0u8; 64];
    let mut arg = Version {
        major: 0,
        minor: 0,
        patchlevel: 0,
        name_len: buf.len(),
        name: buf.as_mut_ptr(),
        date_len: 0,
        date: core::ptr::null_mut(),
        desc_len: 0,
        desc: core::ptr::null_mut(),
    };
    // SAFETY: VERSION takes a drm_version whose name buffer is `buf`, valid for name_len
    // bytes; date and desc have zero length.
    if unsafe { ioctl(dev, Updater::<VERSION, Version>::new(&mut arg)) }.is_err() {
        return false;
    }
    buf.get(..arg.name_len) == Some(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_match_drm_h() {
        // Values of DRM_IOCTL_* in <drm/drm.h> on x86_64.
        assert_eq!(PRIME_HANDLE_TO_FD, 0xc00c_642d);
        assert_eq!(PRIME_FD_TO_HANDLE, 0xc00c_642e);
        assert_eq!(GEM_CLOSE, 0x4008_6409);
        assert_eq!(VERSION, 0xc040_6400);
        assert_eq!(MODE_CREATE_DUMB, 0xc020_64b2);
    }
}
