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
use windows_sys::Win32::System::Diagnostics::Debug::{ReadProcessMemory, WriteProcessMemory};
use windows_sys::Win32::System::Memory::{
    VirtualQuery, MEMORY_BASIC_INFORMATION, MEM_COMMIT, MEM_IMAGE, MEM_MAPPED, PAGE_EXECUTE_READ,
    PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY, PAGE_GUARD, PAGE_NOACCESS, PAGE_READONLY,
    PAGE_READWRITE, PAGE_WRITECOPY,
};
use windows_sys::Win32::System::ProcessStatus::K32GetMappedFileNameW;
use windows_sys::Win32::System::Threading::GetCurrentProcess;

use super::{fault_after, range_start, HostFault, RangeRefusal};

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
    if check_pages(HostVa::new(at as u64), size, Access::Write).is_err() {
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

/// Whether `[addr, addr + len)` may be imported, by the rules `GEM_USERPTR` applies on the
/// Linux kernel device, as `VirtualQuery` sees the pages: every page committed and
/// readable (not `PAGE_NOACCESS`, not a guard page); for a `writable` import also writable,
/// and not a shared view of a file that writes go back to (`MEM_MAPPED` or `MEM_IMAGE`
/// with `PAGE_READWRITE`, over a file `GetMappedFileNameW` names), the counterpart of a
/// `MAP_SHARED` file mapping. Private memory, copy-on-write views (`PAGE_WRITECOPY`, as
/// `MAP_PRIVATE`) and pagefile-backed sections (as shmem) are fine.
pub fn check_importable(addr: HostVa, len: u64, writable: bool) -> Result<(), RangeRefusal> {
    let access = if writable {
        Access::ImportWritable
    } else {
        Access::Read
    };
    check_pages(addr, len, access)
}

/// What [`check_pages`] asks of every page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Readable.
    Read,
    /// Readable and writable (a GPU write into an import already checked).
    Write,
    /// Readable, writable and not a shared view of a written-back file.
    ImportWritable,
}

/// Whether the view at `base` maps a file (as opposed to the pagefile): Windows names the
/// file only then.
fn maps_a_file(base: *const c_void) -> bool {
    let mut name = [0u16; 260];
    let room = u32::try_from(name.len()).unwrap_or(0);
    // SAFETY: writes at most `room` UTF-16 units into `name`; reads no memory at `base`.
    let got = unsafe { K32GetMappedFileNameW(GetCurrentProcess(), base, name.as_mut_ptr(), room) };
    got != 0
}

/// Walks the regions `VirtualQuery` reports over the range, each held to `access`.
fn check_pages(addr: HostVa, len: u64, access: Access) -> Result<(), RangeRefusal> {
    let wraps = RangeRefusal::Unmapped { addr };
    let end = addr.checked_add(len).ok_or(wraps)?;
    let (Ok(mut at), Ok(end)) = (usize::try_from(addr.get()), usize::try_from(end.get())) else {
        return Err(wraps);
    };
    let readable_pages = PAGE_READONLY
        | PAGE_READWRITE
        | PAGE_WRITECOPY
        | PAGE_EXECUTE_READ
        | PAGE_EXECUTE_READWRITE
        | PAGE_EXECUTE_WRITECOPY;
    let writable_pages =
        PAGE_READWRITE | PAGE_WRITECOPY | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_WRITECOPY;
    // Writes through these reach the file or section behind the view, not a private copy.
    let shared_writable_pages = PAGE_READWRITE | PAGE_EXECUTE_READWRITE;
    while at < end {
        let here = HostVa::new(at as u64);
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
        if got == 0 || info.State != MEM_COMMIT || info.RegionSize == 0 {
            return Err(RangeRefusal::Unmapped { addr: here });
        }
        if info.Protect & (PAGE_NOACCESS | PAGE_GUARD) != 0 || info.Protect & readable_pages == 0 {
            return Err(RangeRefusal::NotReadable { addr: here });
        }
        if access != Access::Read && info.Protect & writable_pages == 0 {
            return Err(RangeRefusal::NotWritable { addr: here });
        }
        if access == Access::ImportWritable
            && (info.Type == MEM_MAPPED || info.Type == MEM_IMAGE)
            && info.Protect & shared_writable_pages != 0
            && maps_a_file(info.AllocationBase)
        {
            return Err(RangeRefusal::SharedFileMapping { addr: here });
        }
        let region_end = (info.BaseAddress as usize).saturating_add(info.RegionSize);
        if region_end <= at {
            return Err(RangeRefusal::Unmapped { addr: here });
        }
        at = region_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Memory::{
        CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, FILE_MAP_COPY, FILE_MAP_READ,
        FILE_MAP_WRITE, MEMORY_MAPPED_VIEW_ADDRESS,
    };

    const LEN: u32 = 0x4000;

    /// A view of `access` into a section over `file` (the pagefile when `None`), checked
    /// for a writable import; the view and section are gone after.
    fn writable_import_of_view(file: Option<HANDLE>, access: u32) -> Result<(), RangeRefusal> {
        let backing = file.unwrap_or(INVALID_HANDLE_VALUE);
        // SAFETY: a new section over our own file (or the pagefile), no name.
        let section = unsafe {
            CreateFileMappingW(
                backing,
                core::ptr::null(),
                PAGE_READWRITE,
                0,
                LEN,
                core::ptr::null(),
            )
        };
        assert!(!section.is_null(), "CreateFileMappingW");
        // SAFETY: a view of the whole section we just made.
        let view = unsafe { MapViewOfFile(section, access, 0, 0, LEN as usize) };
        assert!(!view.Value.is_null(), "MapViewOfFile");
        let answer = check_importable(HostVa::new(view.Value as u64), u64::from(LEN), true);
        // SAFETY: our own view and section, not used after.
        unsafe {
            UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: view.Value });
            CloseHandle(section);
        }
        answer
    }

    #[test]
    fn a_writable_import_refuses_a_shared_view_of_a_file_only() {
        let path = std::env::temp_dir().join(format!("extmem-view-{}", std::process::id()));
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        file.set_len(u64::from(LEN))
            .unwrap_or_else(|e| panic!("{e}"));
        let handle = file.as_raw_handle() as HANDLE;
        let shared = writable_import_of_view(Some(handle), FILE_MAP_READ | FILE_MAP_WRITE);
        assert!(
            matches!(shared, Err(RangeRefusal::SharedFileMapping { .. })),
            "{shared:?}"
        );
        // Copy-on-write, as MAP_PRIVATE: private pages.
        assert_eq!(writable_import_of_view(Some(handle), FILE_MAP_COPY), Ok(()));
        // The pagefile, as shmem: nothing written back.
        assert_eq!(
            writable_import_of_view(None, FILE_MAP_READ | FILE_MAP_WRITE),
            Ok(())
        );
        drop(file);
        let _ = std::fs::remove_file(path);
    }
}
