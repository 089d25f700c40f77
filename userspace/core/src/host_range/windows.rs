//! The host-range rule on Windows, from `VirtualQuery`: the pages' state, protection and
//! type, the counterpart of what `pin_user_pages(FOLL_LONGTERM)` checks on Linux. Nothing
//! here reads or writes the pages themselves.

use core::ffi::c_void;
use core::mem::size_of;

use extmem_hw::HostVa;
use windows_sys::Win32::System::Memory::{
    VirtualQuery, MEMORY_BASIC_INFORMATION, MEM_COMMIT, MEM_IMAGE, MEM_MAPPED, PAGE_EXECUTE_READ,
    PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY, PAGE_GUARD, PAGE_NOACCESS, PAGE_READONLY,
    PAGE_READWRITE, PAGE_WRITECOPY,
};
use windows_sys::Win32::System::ProcessStatus::K32GetMappedFileNameW;
use windows_sys::Win32::System::Threading::GetCurrentProcess;

use super::RangeRefusal;

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

/// Whether every page of `[addr, addr + len)` is committed, readable and writable: what a
/// write into a range already imported needs. `WriteProcessMemory` would write a
/// read-only page anyway (it changes the protection, as a debugger wants), so a writer
/// asks this first.
pub fn check_writable(addr: HostVa, len: u64) -> Result<(), RangeRefusal> {
    check_pages(addr, len, Access::Write)
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
        let path = std::env::temp_dir().join(std::format!("extmem-view-{}", std::process::id()));
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
