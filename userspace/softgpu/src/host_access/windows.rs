//! Host-pointer access on Windows: the copy engine reads and writes imported addresses with
//! `ReadProcessMemory` / `WriteProcessMemory` on its own process, which fail
//! (`ERROR_PARTIAL_COPY`, `ERROR_NOACCESS`) on a page that is not mapped instead of raising
//! an access violation.
//!
//! `WriteProcessMemory` is made for debuggers: it writes a read-only page by changing its
//! protection for the write (Windows does, and so does Wine). A host import the
//! application made read-only must not be written, so a write first asks `VirtualQuery`
//! that every page of the range is committed and writable. An application that changes
//! the protection between that check and the write (undefined behaviour in Vulkan) gets
//! its page written, not a crash.

use core::ffi::c_void;
use core::mem::size_of;

use extmem_hw::HostVa;
use extmem_uapi::errno;
use windows_sys::Win32::System::Diagnostics::Debug::{ReadProcessMemory, WriteProcessMemory};
use windows_sys::Win32::System::Memory::{
    VirtualQuery, MEMORY_BASIC_INFORMATION, MEM_COMMIT, PAGE_EXECUTE_READWRITE,
    PAGE_EXECUTE_WRITECOPY, PAGE_GUARD, PAGE_NOACCESS, PAGE_READWRITE, PAGE_WRITECOPY,
};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

use super::HostFault;
use crate::error::OsError;

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
    if check_pages(HostVa::new(at as u64), size, true).is_err() {
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
    let start = usize::try_from(addr.get()).map_err(|_| HostFault { addr })?;
    if start.checked_add(len).is_none() {
        return Err(HostFault { addr });
    }
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
    let at = u64::try_from(done)
        .ok()
        .and_then(|d| addr.checked_add(d))
        .unwrap_or(addr);
    Err(HostFault { addr: at })
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

/// Whether `[addr, addr + len)` is mapped in this process, every page of it: committed and
/// accessible (not `PAGE_NOACCESS`, not a guard page). `ENOMEM` for a hole, as `msync`
/// answers on Linux; `EFAULT` for a range that does not fit the address space.
pub fn check_mapped(addr: HostVa, len: u64) -> Result<(), OsError> {
    check_pages(addr, len, false).map_err(|errno| OsError {
        call: "VirtualQuery",
        errno,
    })
}

/// Walks the regions `VirtualQuery` reports over the range; with `writable`, each must
/// also allow writing.
fn check_pages(addr: HostVa, len: u64, writable: bool) -> Result<(), i32> {
    let end = addr.checked_add(len).ok_or(errno::EFAULT)?;
    let (Ok(mut at), Ok(end)) = (usize::try_from(addr.get()), usize::try_from(end.get())) else {
        return Err(errno::EFAULT);
    };
    let writable_pages =
        PAGE_READWRITE | PAGE_WRITECOPY | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_WRITECOPY;
    while at < end {
        let mut info = MEMORY_BASIC_INFORMATION::default();
        // SAFETY: `VirtualQuery` only writes `info`, whose size we pass; it reads no
        // memory at `at`.
        let got = unsafe {
            VirtualQuery(
                at as *const c_void,
                &mut info,
                size_of::<MEMORY_BASIC_INFORMATION>(),
            )
        };
        let accessible = info.State == MEM_COMMIT
            && info.Protect & (PAGE_NOACCESS | PAGE_GUARD) == 0
            && (!writable || info.Protect & writable_pages != 0);
        if got == 0 || !accessible || info.RegionSize == 0 {
            return Err(errno::ENOMEM);
        }
        let region_end = (info.BaseAddress as usize).saturating_add(info.RegionSize);
        if region_end <= at {
            return Err(errno::ENOMEM);
        }
        at = region_end;
    }
    Ok(())
}
