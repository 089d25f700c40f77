//! Device memory of the software device on Windows: pagefile-backed section objects
//! (`CreateFileMappingW(INVALID_HANDLE_VALUE, …)`), mapped with `MapViewOfFile`, shared as
//! NT handles (`DuplicateHandle`), by name (`OpenFileMappingW`) and by global-share token
//! ([`kmt`]).
//!
//! # Which sections are ours: the trailer page
//! A section carries no name we could check the way a memfd's link does (a section may be
//! unnamed, and anyone may pick any name), so every section the device creates is one page
//! longer than the memory and that last page holds a `Trailer`: a magic number, the
//! memory's size and a random 128-bit object id, which is the memory's [`Identity`] in
//! every process (repeated imports of one memory are recognised by it). An import maps the
//! whole section, asks `VirtualQuery` how long the view really is, and refuses (`EINVAL`)
//! anything whose last page lacks the magic or whose recorded size is not the view's
//! length less that page: a plain `CreateFileMapping` of someone else, or a section too
//! short for what it claims (which would turn a copy into an access violation). Only the
//! committed read-write run of pages at the start of the view counts, so a `SEC_RESERVE`
//! section (pages that fault until committed) is refused too; a section cannot shrink
//! (nor can the file under a file-backed one while it is mapped), so what was checked
//! stays true.
//! `VUID-VkImportMemoryWin32HandleInfoKHR-handleType-00659` asks for memory of the same
//! device; the magic is that check, as the memfd name is on Linux.
//!
//! The page is a trailer, not a header, because a view must start at a multiple of the
//! allocation granularity (64 KiB): memory after a one-page header could not be mapped on
//! its own, whereas memory before a trailer is simply the first `size` bytes of the
//! section, which is all the device and `vkMapMemory` ever map.

pub mod kmt;

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr::{self, NonNull};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use extmem::backend::RawWin32Handle;
use extmem_uapi::errno;
use windows_sys::Win32::Foundation::{
    DuplicateHandle, GetLastError, DUPLICATE_SAME_ACCESS, ERROR_ALREADY_EXISTS, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery,
    FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS,
    MEM_COMMIT, PAGE_READWRITE, SECTION_MAP_READ, SECTION_MAP_WRITE, SECTION_QUERY,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetCurrentProcessId};

use super::{Identity, Mapping, MemoryError};
use crate::win32_error::last_error;

/// A page: the trailer's size, and the unit of every section's size (the profile's
/// smallest page).
const PAGE: usize = 1 << extmem_hw::profile::MIN_PAGE.log2();

/// The first bytes of every trailer.
pub const MAGIC: [u8; 16] = *b"extmem-softgpu\0S";

/// The access an NT handle gets when `VkExportMemoryWin32HandleInfoKHR::dwAccess` is 0:
/// map for reading and writing, and query (what the device's own import needs).
pub const DEFAULT_ACCESS: u32 = SECTION_QUERY | SECTION_MAP_READ | SECTION_MAP_WRITE;

/// The last page of every section of the device.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Trailer {
    /// [`MAGIC`].
    magic: [u8; 16],
    /// The memory's object id (its [`Identity`]).
    id: [u64; 2],
    /// The memory's size: the section's, less this page.
    size: u64,
}

/// A new object id: 128 bits from std's randomly keyed SipHash (whose keys come from the
/// OS's random generator) over this process's id and a counter, so that ids differ between
/// objects of one process (the counter) and between processes (the keys).
fn new_object_id() -> Identity {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // SAFETY: no arguments; returns this process's id.
    let pid = unsafe { GetCurrentProcessId() };
    let half = |salt: u64| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_u32(pid);
        hasher.write_u64(n);
        hasher.finish()
    };
    (half(0), half(1))
}

/// `name` with its terminating NUL, for the `PCWSTR` of a Win32 call.
fn wide(name: &[u16]) -> Vec<u16> {
    name.iter().copied().chain([0]).collect()
}

/// Maps `len` bytes (0: the whole section) of `section` read-write.
fn map_view(section: BorrowedHandle<'_>, len: usize) -> Result<NonNull<u8>, MemoryError> {
    // SAFETY: a new view at an address the OS chooses; it aliases no Rust object. A
    // handle that is not a section fails the call.
    let view = unsafe {
        MapViewOfFile(
            section.as_raw_handle(),
            FILE_MAP_READ | FILE_MAP_WRITE,
            0,
            0,
            len,
        )
    };
    NonNull::new(view.Value.cast::<u8>()).ok_or_else(|| last_error("MapViewOfFile"))
}

/// Unmaps the view at `ptr` (Windows unmaps whole views; `_len` is the Linux interface's).
///
/// # Safety
/// `ptr` is the start of a view this process mapped and nothing uses any more.
pub(super) unsafe fn unmap_raw(ptr: NonNull<u8>, _len: usize) {
    let view = MEMORY_MAPPED_VIEW_ADDRESS {
        Value: ptr.as_ptr().cast::<c_void>(),
    };
    // SAFETY: per the caller's contract.
    let _ = unsafe { UnmapViewOfFile(view) };
}

/// The length of the committed, read-write run of pages that starts the view at `ptr`
/// (all of it for a section of ours). Not device memory if the first page is not
/// committed read-write: a `SEC_RESERVE` section, whose reserved pages fault when touched.
fn view_len(ptr: NonNull<u8>) -> Result<usize, MemoryError> {
    let mut info = MEMORY_BASIC_INFORMATION::default();
    // SAFETY: writes only `info`, whose size we pass.
    let got = unsafe {
        VirtualQuery(
            ptr.as_ptr().cast::<c_void>(),
            &mut info,
            size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    if got == 0 {
        return Err(last_error("VirtualQuery"));
    }
    if info.State != MEM_COMMIT || info.Protect != PAGE_READWRITE {
        return Err(MemoryError::NotDeviceMemory);
    }
    Ok(info.RegionSize)
}

/// Duplicates `source`, a handle of `process`, into this process: with the same access if
/// `access` is `None`, inheritable if `inherit`. The caller owns the result.
fn duplicate(
    process: HANDLE,
    source: HANDLE,
    access: Option<u32>,
    inherit: bool,
) -> Result<HANDLE, MemoryError> {
    let mut out: HANDLE = ptr::null_mut();
    let (access, options) = match access {
        Some(access) => (access, 0),
        None => (0, DUPLICATE_SAME_ACCESS),
    };
    // SAFETY: the OS checks both handles (a value that is not a handle of `process`
    // fails with ERROR_INVALID_HANDLE) and writes only `out`.
    let ok = unsafe {
        DuplicateHandle(
            process,
            source,
            GetCurrentProcess(),
            &mut out,
            access,
            i32::from(inherit),
            options,
        )
    };
    if ok == 0 {
        return Err(last_error("DuplicateHandle"));
    }
    Ok(out)
}

/// Takes ownership of a handle the OS just gave us.
fn owned(handle: HANDLE) -> OwnedHandle {
    // SAFETY: `handle` is a new handle this process owns and nothing else closes.
    unsafe { OwnedHandle::from_raw_handle(handle) }
}

/// One section of device memory and the device's own view of it.
#[derive(Debug)]
pub struct SharedMemory {
    /// The global-share token, once exported; closing it ends the token. First, so that it
    /// is dropped first: the handle value it records stays ours until the token is gone.
    token: Mutex<Option<kmt::Token>>,
    section: OwnedHandle,
    /// The whole section, trailer included; `len` is the memory's size only.
    mapping: Mapping,
    identity: Identity,
}

impl SharedMemory {
    /// A new unnamed section of `size` bytes (a multiple of 4 KiB), zeroed and mapped.
    pub fn create(size: u64) -> Result<Self, MemoryError> {
        Self::create_exportable(size, ptr::null(), None)
    }

    /// A new section of `size` bytes with the security descriptor `descriptor` (null: the
    /// default) and, if given, `name` (no NUL); `EEXIST` if an object of that name exists.
    pub fn create_exportable(
        size: u64,
        descriptor: *const c_void,
        name: Option<&[u16]>,
    ) -> Result<Self, MemoryError> {
        let too_large = MemoryError::TooLarge { size };
        let len = usize::try_from(size).map_err(|_| too_large)?;
        if len == 0 || len % PAGE != 0 {
            return Err(MemoryError::BadSize { size });
        }
        let total = len.checked_add(PAGE).ok_or(too_large)?;
        let total = u64::try_from(total).map_err(|_| too_large)?;
        let high = u32::try_from(total >> 32).map_err(|_| too_large)?;
        let low = u32::try_from(total & u64::from(u32::MAX)).map_err(|_| too_large)?;
        let attributes = SECURITY_ATTRIBUTES {
            // A struct of three fields: its size fits any integer.
            nLength: u32::try_from(size_of::<SECURITY_ATTRIBUTES>()).unwrap_or(u32::MAX),
            lpSecurityDescriptor: descriptor.cast_mut(),
            // The device's own handle is never inherited; exports choose.
            bInheritHandle: 0,
        };
        let name = name.map(wide);
        // SAFETY: `attributes` and `name` (NUL-terminated) live across the call; the
        // descriptor is the application's, valid during vkAllocateMemory.
        let raw = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                &attributes,
                PAGE_READWRITE,
                high,
                low,
                name.as_ref().map_or(ptr::null(), |n| n.as_ptr()),
            )
        };
        if raw.is_null() {
            return Err(last_error("CreateFileMappingW"));
        }
        // SAFETY: reads the calling thread's last-error value, which CreateFileMappingW
        // set (ERROR_ALREADY_EXISTS when it opened an existing object instead).
        let existed = unsafe { GetLastError() } == ERROR_ALREADY_EXISTS;
        let section = owned(raw);
        if existed {
            return Err(MemoryError::NameTaken);
        }
        let ptr = map_view(section.as_handle(), 0)?;
        let mapping = Mapping { ptr, len };
        let identity = new_object_id();
        let trailer = Trailer {
            magic: MAGIC,
            id: [identity.0, identity.1],
            size,
        };
        // SAFETY: the view is the whole section, `len + PAGE` bytes: the trailer page
        // starts at `len` and holds a `Trailer`.
        unsafe {
            ptr.as_ptr()
                .add(len)
                .cast::<Trailer>()
                .write_unaligned(trailer)
        };
        Ok(Self {
            section,
            mapping,
            identity,
            token: Mutex::new(None),
        })
    }

    /// Imports a section handle this driver exported (through a duplicate, so the caller
    /// keeps its handle); see the module docs for what is refused.
    pub fn import(handle: BorrowedHandle<'_>) -> Result<Self, MemoryError> {
        Self::import_raw(handle.as_raw_handle() as RawWin32Handle)
    }

    /// [`SharedMemory::import`] of an application's raw handle value, which the OS checks:
    /// `EBADF` for a value that is not an open handle.
    pub fn import_raw(handle: RawWin32Handle) -> Result<Self, MemoryError> {
        // SAFETY: no arguments; the pseudo-handle of this process.
        let me = unsafe { GetCurrentProcess() };
        let own = duplicate(me, handle as HANDLE, None, false)?;
        Self::adopt(owned(own))
    }

    /// Opens the section called `name` (no NUL); `ENOENT` if there is none.
    pub fn open_name(name: &[u16]) -> Result<Self, MemoryError> {
        let name = wide(name);
        // SAFETY: `name` is NUL-terminated and lives across the call.
        let raw = unsafe { OpenFileMappingW(DEFAULT_ACCESS, 0, name.as_ptr()) };
        if raw.is_null() {
            return Err(last_error("OpenFileMappingW"));
        }
        Self::adopt(owned(raw))
    }

    /// Imports the memory behind a global-share token ([`kmt`]), in any process;
    /// `ENOENT` once the exporting memory is freed.
    pub fn import_token(token: RawWin32Handle) -> Result<Self, MemoryError> {
        Self::adopt(kmt::resolve(token)?)
    }

    /// Maps a section we now hold and checks its trailer.
    fn adopt(section: OwnedHandle) -> Result<Self, MemoryError> {
        let ptr = map_view(section.as_handle(), 0).map_err(|e| {
            // A handle of another kind of object is not memory.
            if e.errno() == errno::EBADF {
                MemoryError::NotDeviceMemory
            } else {
                e
            }
        })?;
        // The whole view, unmapped on every refusal below.
        let mut view = Mapping { ptr, len: 0 };
        view.len = view_len(ptr)?;
        let Some(len) = view.len.checked_sub(PAGE).filter(|l| *l >= PAGE) else {
            return Err(MemoryError::NotDeviceMemory);
        };
        // SAFETY: the view is `len + PAGE` bytes long (VirtualQuery says so); the trailer
        // page starts at `len`. Any bytes are a valid `Trailer` (integers only).
        let trailer = unsafe { ptr.as_ptr().add(len).cast::<Trailer>().read_unaligned() };
        if trailer.magic != MAGIC || usize::try_from(trailer.size) != Ok(len) {
            return Err(MemoryError::NotDeviceMemory);
        }
        Ok(Self {
            section,
            mapping: Mapping {
                ptr: view.leak(),
                len,
            },
            identity: (trailer.id[0], trailer.id[1]),
            token: Mutex::new(None),
        })
    }

    /// A new section handle (not inheritable), for the OS-neutral `export_shared`.
    pub fn export(&self) -> Result<OwnedHandle, MemoryError> {
        // SAFETY: no arguments; the pseudo-handle of this process.
        let me = unsafe { GetCurrentProcess() };
        duplicate(me, self.section.as_raw_handle(), None, false).map(owned)
    }

    /// A new NT handle the caller owns: with `access` (0: [`DEFAULT_ACCESS`]), inheritable
    /// if `inherit`.
    pub fn export_nt(&self, access: u32, inherit: bool) -> Result<RawWin32Handle, MemoryError> {
        let access = if access == 0 { DEFAULT_ACCESS } else { access };
        // SAFETY: no arguments; the pseudo-handle of this process.
        let me = unsafe { GetCurrentProcess() };
        duplicate(me, self.section.as_raw_handle(), Some(access), inherit)
            .map(|h| h as RawWin32Handle)
    }

    /// The memory's global-share token: made on first use, the same afterwards, valid in
    /// any process until this memory is dropped.
    pub fn global_token(&self) -> Result<RawWin32Handle, MemoryError> {
        let mut token = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = token.as_ref() {
            return Ok(token.value());
        }
        let new = kmt::Token::publish(self.section.as_handle())?;
        let value = new.value();
        *token = Some(new);
        Ok(value)
    }

    /// A new CPU mapping of the first `size` bytes, for `vkMapMemory`; the caller unmaps
    /// it (the memory manager does, at free). The trailer is never part of it.
    pub fn map(&self, size: u64) -> Result<NonNull<u8>, MemoryError> {
        let len = usize::try_from(size).map_err(|_| MemoryError::BadSize { size })?;
        if size == 0 || len > self.mapping.len() {
            return Err(MemoryError::BadSize { size });
        }
        map_view(self.section.as_handle(), len)
    }

    /// The device's mapping, which the copy engine uses (the memory, not the trailer).
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        u64::try_from(self.mapping.len()).unwrap_or(u64::MAX)
    }

    /// The object id from the trailer.
    pub fn identity(&self) -> Identity {
        self.identity
    }
}

#[cfg(test)]
mod tests;
