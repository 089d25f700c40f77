//! Host-pointer access on Windows: the copy engine reads and writes imported addresses with
//! `ReadProcessMemory` / `WriteProcessMemory` on its own process, which fail
//! (`ERROR_PARTIAL_COPY`, `ERROR_NOACCESS`) on a page that is not mapped instead of raising
//! an access violation.
//!
//! `WriteProcessMemory` is made for debuggers: it writes a read-only page by changing its
//! protection for the write (Windows does, and so does Wine). A host import the
//! application made read-only must not be written, so a write first asks `VirtualQuery`
//! that every page of the range is committed and writable
//! (`extmem::host_range::check_writable`). An application that changes the protection
//! between that check and the write (undefined behaviour in Vulkan) gets its page
//! written, not a crash.

use core::ffi::c_void;

use extmem::host_range;
use extmem_hw::HostVa;
use windows_sys::Win32::System::Diagnostics::Debug::{ReadProcessMemory, WriteProcessMemory};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

use super::{fault_after, range_start, HostFault};

/// The host page: after a failed call, the range is moved again a page at a time to find
/// the first page that cannot be moved.
const PAGE: usize = 4096;

/// Reads `out.len()` bytes at the imported address `addr` into `out`.
pub fn read(addr: HostVa, out: &mut [u8]) -> Result<(), HostFault> {
    // SAFETY: `out` is ours to write for the call.
    unsafe { read_raw(addr, out.as_mut_ptr(), out.len()) }
}

/// Writes `data` to the imported address `addr`, if every page of it is writable.
pub fn write(addr: HostVa, data: &[u8]) -> Result<(), HostFault> {
    // SAFETY: `data` is ours to read for the call.
    unsafe { write_raw(addr, data.as_ptr(), data.len()) }
}

/// One `ReadProcessMemory` of `len` bytes from `at` into `out`, all or nothing.
///
/// # Safety
/// `out` is valid for writes of `len` bytes for the call.
unsafe fn read_once(at: usize, out: *mut u8, len: usize) -> bool {
    let mut done = 0usize;
    // SAFETY: `out` is valid per the caller; the source is only reached by the OS, which
    // reports a page it cannot read as a failure of the call.
    let ok = unsafe {
        ReadProcessMemory(
            GetCurrentProcess(),
            at as *const c_void,
            out.cast::<c_void>(),
            len,
            &mut done,
        )
    };
    ok != 0 && done == len
}

/// One `WriteProcessMemory` of `len` bytes from `data` to `at`, if every page of the
/// destination is writable (see the module docs), all or nothing.
///
/// # Safety
/// `data` is valid for reads of `len` bytes for the call.
unsafe fn write_once(at: usize, data: *const u8, len: usize) -> bool {
    let Ok(size) = u64::try_from(len) else {
        return false;
    };
    if host_range::check_writable(HostVa::new(at as u64), size).is_err() {
        return false;
    }
    let mut done = 0usize;
    // SAFETY: `data` is valid per the caller; the destination is only reached by the OS,
    // which reports a page it cannot write as a failure of the call.
    let ok = unsafe {
        WriteProcessMemory(
            GetCurrentProcess(),
            at as *const c_void,
            data.cast::<c_void>(),
            len,
            &mut done,
        )
    };
    ok != 0 && done == len
}

/// Moves `len` bytes between the imported address `addr` and our memory at `local` with
/// `once`: the whole run in one call; if that fails, page by page from the start to find
/// the first page that cannot be moved (Windows says only that the call failed), so that
/// everything before it is moved as on Linux. Moving a page twice moves the same bytes.
///
/// # Safety
/// `local` is valid for `len` bytes of what `once` does to it for the call.
unsafe fn move_bytes(
    once: unsafe fn(usize, *mut u8, usize) -> bool,
    local: *mut u8,
    len: usize,
    addr: HostVa,
) -> Result<(), HostFault> {
    let start = range_start(addr, len)?;
    // SAFETY: the whole of `local`, as the caller promises.
    if unsafe { once(start, local, len) } {
        return Ok(());
    }
    let mut done = 0usize;
    while done < len {
        let at = start.wrapping_add(done);
        let piece = (len - done).min(PAGE - at % PAGE);
        // SAFETY: `local + done` and `piece` stay inside the caller's buffer.
        if !unsafe { once(at, local.wrapping_add(done), piece) } {
            break;
        }
        done += piece;
    }
    Err(fault_after(addr, done))
}

/// Reads `len` bytes at the imported address `addr` into memory we own at `out`.
///
/// # Safety
/// `out` is valid for writes of `len` bytes for the duration of the call; other
/// processes sharing that memory may write it concurrently (the OS writes it, never a
/// Rust reference).
pub unsafe fn read_raw(addr: HostVa, out: *mut u8, len: usize) -> Result<(), HostFault> {
    // SAFETY: as the caller promises.
    unsafe { move_bytes(read_once, out, len, addr) }
}

/// Writes `len` bytes from memory we own at `data` to the imported address `addr`, if
/// every page of it is writable.
///
/// # Safety
/// `data` is valid for reads of `len` bytes for the duration of the call.
pub unsafe fn write_raw(addr: HostVa, data: *const u8, len: usize) -> Result<(), HostFault> {
    /// `write_once` with the signature `move_bytes` takes (it only reads `data`).
    unsafe fn write_from(at: usize, data: *mut u8, len: usize) -> bool {
        // SAFETY: as `move_bytes`' caller promises for `data`.
        unsafe { write_once(at, data.cast_const(), len) }
    }
    // SAFETY: as the caller promises; `write_from` only reads through the pointer.
    unsafe { move_bytes(write_from, data.cast_mut(), len, addr) }
}
