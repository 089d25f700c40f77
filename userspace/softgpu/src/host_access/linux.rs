//! Host-pointer access on Linux: the copy engine reads and writes imported addresses with
//! `process_vm_readv` / `process_vm_writev` on its own process, which walk the page tables
//! as the kernel's `copy_from_user` does and fail with `EFAULT` on a page that is not
//! mapped (or, for a write, not writable) instead of raising a signal.
//!
//! `process_vm_*` on one's own process needs no ptrace permission (`ptrace_may_access`
//! allows the caller's own thread group), so Yama's `ptrace_scope` does not matter.

use core::ffi::{c_int, c_ulong};

use extmem_hw::HostVa;

use super::{fault_after, range_start, HostFault};

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

fn own_pid() -> c_int {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// `process_vm_readv` or `process_vm_writev`.
type Transfer =
    unsafe extern "C" fn(c_int, *const Iovec, c_ulong, *const Iovec, c_ulong, c_ulong) -> isize;

/// The host page: the unit in which a failed move is retried to find its fault.
const PAGE: usize = 4096;

/// One `transfer` of `len` bytes between `local` and `remote`, one iovec each: the bytes
/// moved, a prefix of the range (0 when the call failed).
///
/// # Safety
/// As [`move_bytes`], for `local..local + len`.
unsafe fn transfer_once(
    transfer: Transfer,
    pid: c_int,
    local: usize,
    remote: usize,
    len: usize,
) -> usize {
    let ours = Iovec { base: local, len };
    let theirs = Iovec { base: remote, len };
    // SAFETY: `ours` is valid per the caller; `theirs` is only reached by the kernel
    // through the process's page tables, which refuse a missing page (and, for a write,
    // one that is not writable) with a short count or an error, not a fault in this
    // thread. One iovec each, no flags.
    let moved = unsafe { transfer(pid, &ours, 1, &theirs, 1, 0) };
    // -1 (nothing moved) counts as 0.
    usize::try_from(moved).unwrap_or(0).min(len)
}

/// Moves `len` bytes between our memory at `local` and the imported address `addr` with
/// `transfer`, front to back: the whole range in one call, in which the kernel walks the
/// application's pages under one `mmap` lock and copies straight between the two
/// mappings (one iovec each: measured faster than one remote iovec per page, see the
/// bench). If the call stops short, the rest is retried a page at a time up to the first
/// page that cannot be moved: `process_vm_readv(2)` promises partial transfers only at
/// iovec granularity, so only a one-page iovec names the faulting page for certain.
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
    let start = range_start(addr, len)?;
    let (pid, local) = (own_pid(), local as usize);
    // SAFETY: the whole of the caller's buffer.
    let mut done = unsafe { transfer_once(transfer, pid, local, start, len) };
    while done < len {
        let at = start.wrapping_add(done);
        let piece = (len - done).min(PAGE - at % PAGE);
        // SAFETY: `done + piece <= len`: inside the caller's buffer.
        let moved = unsafe { transfer_once(transfer, pid, local.wrapping_add(done), at, piece) };
        done += moved;
        if moved < piece {
            break;
        }
    }
    if done == len {
        return Ok(());
    }
    Err(fault_after(addr, done))
}

/// Reads `out.len()` bytes at the imported address `addr` into `out`.
pub fn read(addr: HostVa, out: &mut [u8]) -> Result<(), HostFault> {
    // SAFETY: `out` is ours to write for the call.
    unsafe { read_raw(addr, out.as_mut_ptr(), out.len()) }
}

/// Writes `data` to the imported address `addr`.
pub fn write(addr: HostVa, data: &[u8]) -> Result<(), HostFault> {
    // SAFETY: `data` is ours to read for the call.
    unsafe { write_raw(addr, data.as_ptr(), data.len()) }
}

/// Reads `len` bytes at the imported address `addr` into memory we own at `out`.
///
/// # Safety
/// `out` is valid for writes of `len` bytes for the duration of the call; other
/// processes sharing that memory may write it concurrently (the kernel writes it as
/// `copy_to_user` would, never through a Rust reference).
pub unsafe fn read_raw(addr: HostVa, out: *mut u8, len: usize) -> Result<(), HostFault> {
    // SAFETY: as the caller promises.
    unsafe { move_bytes(process_vm_readv, out, len, addr) }
}

/// Writes `len` bytes from memory we own at `data` to the imported address `addr`.
///
/// # Safety
/// `data` is valid for reads of `len` bytes for the duration of the call.
pub unsafe fn write_raw(addr: HostVa, data: *const u8, len: usize) -> Result<(), HostFault> {
    // SAFETY: as the caller promises.
    unsafe { move_bytes(process_vm_writev, data, len, addr) }
}
