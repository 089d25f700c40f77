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

/// Reads `out.len()` bytes at the imported address `addr` into `out`.
pub fn read(addr: HostVa, out: &mut [u8]) -> Result<(), HostFault> {
    let at = usize::try_from(addr.get()).map_err(|_| HostFault { addr })?;
    let mut done = 0usize;
    // SAFETY: `out` is ours to write for `out.len()` bytes; the source is only reached by
    // the OS, which reports a page it cannot read as a failure of the call.
    let ok = unsafe {
        ReadProcessMemory(
            GetCurrentProcess(),
            at as *const c_void,
            out.as_mut_ptr().cast::<c_void>(),
            out.len(),
            &mut done,
        )
    };
    if ok != 0 && done == out.len() {
        Ok(())
    } else {
        Err(HostFault { addr })
    }
}

/// Writes `data` to the imported address `addr`, if every page of it is writable.
pub fn write(addr: HostVa, data: &[u8]) -> Result<(), HostFault> {
    let len = u64::try_from(data.len()).map_err(|_| HostFault { addr })?;
    check_pages(addr, len, true).map_err(|_| HostFault { addr })?;
    let at = usize::try_from(addr.get()).map_err(|_| HostFault { addr })?;
    let mut done = 0usize;
    // SAFETY: `data` is ours to read for `data.len()` bytes; the destination is only
    // reached by the OS, which reports a page it cannot write as a failure of the call.
    let ok = unsafe {
        WriteProcessMemory(
            GetCurrentProcess(),
            at as *const c_void,
            data.as_ptr().cast::<c_void>(),
            data.len(),
            &mut done,
        )
    };
    if ok != 0 && done == data.len() {
        Ok(())
    } else {
        Err(HostFault { addr })
    }
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
