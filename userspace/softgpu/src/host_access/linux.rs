//! Host-pointer access on Linux: the copy engine reads and writes imported addresses with
//! `process_vm_readv` / `process_vm_writev` on its own process, which walk the page tables
//! as the kernel's `copy_from_user` does and fail with `EFAULT` on a page that is not
//! mapped (or, for a write, not writable) instead of raising a signal.
//!
//! `process_vm_*` on one's own process needs no ptrace permission (`ptrace_may_access`
//! allows the caller's own thread group), so Yama's `ptrace_scope` does not matter.

use core::ffi::{c_int, c_ulong, c_void};

use rustix::mm::MsyncFlags;

use extmem_hw::HostVa;

use super::HostFault;
use crate::error::OsError;

/// `struct iovec`.
#[repr(C)]
struct Iovec {
    base: usize,
    len: usize,
}

// glibc's wrappers (since 2.15), linked through std's libc; rustix has no binding.
extern "C" {
    fn process_vm_readv(
        pid: c_int,
        local: *const Iovec,
        local_count: c_ulong,
        remote: *const Iovec,
        remote_count: c_ulong,
        flags: c_ulong,
    ) -> isize;
    fn process_vm_writev(
        pid: c_int,
        local: *const Iovec,
        local_count: c_ulong,
        remote: *const Iovec,
        remote_count: c_ulong,
        flags: c_ulong,
    ) -> isize;
}

fn own_pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// `process_vm_readv` or `process_vm_writev`.
type Transfer =
    unsafe extern "C" fn(c_int, *const Iovec, c_ulong, *const Iovec, c_ulong, c_ulong) -> isize;

/// Moves `len` bytes between our buffer at `local` and the imported address `addr` with
/// `transfer`, all or nothing.
///
/// # Safety
/// `local` is valid for `len` bytes of what `transfer` does to it (written by
/// `process_vm_readv`, read by `process_vm_writev`) for the duration of the call.
unsafe fn move_bytes(
    transfer: Transfer,
    local: *const u8,
    len: usize,
    addr: HostVa,
) -> Result<(), HostFault> {
    let local = Iovec {
        base: local as usize,
        len,
    };
    let remote = Iovec {
        base: usize::try_from(addr.get()).map_err(|_| HostFault { addr })?,
        len,
    };
    // SAFETY: `local` is valid per the caller; `remote` is only reached by the kernel
    // through the process's page tables, which refuse a missing page (and, for a write,
    // one that is not writable) with an error, not a fault in this thread. One iovec each,
    // no flags.
    let done = unsafe { transfer(own_pid(), &local, 1, &remote, 1, 0) };
    if usize::try_from(done).ok() == Some(len) {
        Ok(())
    } else {
        Err(HostFault { addr })
    }
}

/// Reads `out.len()` bytes at the imported address `addr` into `out`.
pub fn read(addr: HostVa, out: &mut [u8]) -> Result<(), HostFault> {
    // SAFETY: `out` is ours to write for the call.
    unsafe { move_bytes(process_vm_readv, out.as_mut_ptr(), out.len(), addr) }
}

/// Writes `data` to the imported address `addr`.
pub fn write(addr: HostVa, data: &[u8]) -> Result<(), HostFault> {
    // SAFETY: `data` is ours to read for the call.
    unsafe { move_bytes(process_vm_writev, data.as_ptr(), data.len(), addr) }
}

/// Whether `[addr, addr + len)` is mapped in this process, every page of it: what
/// `GEM_USERPTR`'s probe answers on the kernel device, without pinning. `msync` with
/// `MS_ASYNC` does nothing to anonymous memory and fails with `ENOMEM` when the range has
/// a hole.
pub fn check_mapped(addr: HostVa, len: u64) -> Result<(), OsError> {
    let failed = |errno| OsError {
        call: "msync",
        errno,
    };
    let (Ok(start), Ok(size)) = (usize::try_from(addr.get()), usize::try_from(len)) else {
        // Beyond this process's address space.
        return Err(failed(extmem_uapi::errno::EFAULT));
    };
    // SAFETY: MS_ASYNC changes no memory and no mapping; the kernel checks the range.
    unsafe { rustix::mm::msync(start as *mut c_void, size, MsyncFlags::ASYNC) }
        .map_err(|e| failed(e.raw_os_error()))
}
