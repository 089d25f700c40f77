//! Global-share (KMT) tokens: `VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_WIN32_KMT_BIT` names
//! memory by a value that is not a handle (the application never closes it) and works in
//! any process while the memory lives. Windows has no such thing for plain sections (D3D's
//! KMT handles live in the kernel graphics stack), so the device makes one:
//!
//! - on the first export, a small named section, `Local\extmem-softgpu-kmt-<pid>-<n>`
//!   (`<pid>` the exporting process, `<n>` a counter of that process), records the
//!   exporter's process id and the value of its own handle to the memory's section;
//! - the token is `(pid << 32) | n` (never 0: `n` starts at 1);
//! - an import opens the token section by name, opens the exporting process for
//!   `PROCESS_DUP_HANDLE` and duplicates the recorded handle out of it, then imports that
//!   section like an NT handle (the trailer check included).
//!
//! The token section is closed with the memory that published it, which removes the name
//! (nobody else holds the section: imports close it at once), so a token stops working
//! when the memory is freed (`ENOENT`), and when the exporting process exits.

use core::mem::size_of;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, OwnedHandle};
use std::sync::atomic::{AtomicU32, Ordering};

use extmem::backend::RawWin32Handle;
use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_ALREADY_EXISTS, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, OpenFileMappingW, FILE_MAP_READ, PAGE_READWRITE,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcessId, OpenProcess, PROCESS_DUP_HANDLE};

use super::{duplicate, map_view, owned, wide};
use crate::shared_memory::{Mapping, MemoryError};
use crate::win32_error::last_error;

/// The first bytes of a token section.
const MAGIC: [u8; 16] = *b"extmem-softgpu\0K";

/// What a token section holds.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Record {
    /// [`MAGIC`].
    magic: [u8; 16],
    /// The exporting process.
    pid: u32,
    /// Zero.
    pad: u32,
    /// The exporter's handle to the memory's section, in the exporter's handle table.
    handle: u64,
}

/// The next token number of this process.
static NEXT: AtomicU32 = AtomicU32::new(1);

/// The token section's name for `(pid, n)`, NUL-terminated.
fn section_name(pid: u32, n: u32) -> Vec<u16> {
    let name: Vec<u16> = format!("Local\\extmem-softgpu-kmt-{pid}-{n}")
        .encode_utf16()
        .collect();
    wide(&name)
}

/// A published token: its section, which keeps the name alive, and its value.
#[derive(Debug)]
pub struct Token {
    _section: OwnedHandle,
    value: RawWin32Handle,
}

impl Token {
    /// Publishes a token for `memory`, a section handle that stays open (in this process,
    /// at this value) as long as the token does.
    pub fn publish(memory: BorrowedHandle<'_>) -> Result<Self, MemoryError> {
        // SAFETY: no arguments; returns this process's id.
        let pid = unsafe { GetCurrentProcessId() };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            // 2^32 tokens in one process: the counter wrapped onto the reserved value.
            return Err(MemoryError::TokensExhausted);
        }
        let value = (u64::from(pid) << 32) | u64::from(n);
        // A handle is pointer-sized: on a 32-bit process most token values do not fit.
        let value = isize::try_from(i64::from_ne_bytes(value.to_ne_bytes()))
            .map_err(|_| MemoryError::TokensExhausted)?;
        let name = section_name(pid, n);
        // Four integers: the size fits any integer.
        let size = u32::try_from(size_of::<Record>()).unwrap_or(u32::MAX);
        // SAFETY: `name` is NUL-terminated and lives across the call; no attributes (the
        // default descriptor, not inheritable).
        let raw = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                core::ptr::null(),
                PAGE_READWRITE,
                0,
                size,
                name.as_ptr(),
            )
        };
        if raw.is_null() {
            return Err(last_error("CreateFileMappingW"));
        }
        // SAFETY: reads the last-error value CreateFileMappingW set.
        let existed = unsafe { GetLastError() } == ERROR_ALREADY_EXISTS;
        let section = owned(raw);
        if existed {
            // Someone squats on our name: never hand out a token that leads elsewhere.
            return Err(MemoryError::NameTaken);
        }
        let view = Mapping {
            ptr: map_view(std::os::windows::io::AsHandle::as_handle(&section), 0)?,
            len: size_of::<Record>(),
        };
        let record = Record {
            magic: MAGIC,
            pid,
            pad: 0,
            handle: memory.as_raw_handle() as usize as u64,
        };
        // SAFETY: the view is at least a page, and a `Record` fits in it.
        unsafe { view.ptr.as_ptr().cast::<Record>().write_unaligned(record) };
        Ok(Self {
            _section: section,
            value,
        })
    }

    /// The token's value.
    pub fn value(&self) -> RawWin32Handle {
        self.value
    }
}

/// A new handle, in this process, to the section a token names; `ENOENT` for a token
/// that names nothing (any more).
pub fn resolve(token: RawWin32Handle) -> Result<OwnedHandle, MemoryError> {
    let unknown = MemoryError::UnknownToken { token };
    let value = u64::from_ne_bytes(i64::try_from(token).map_err(|_| unknown)?.to_ne_bytes());
    let pid = u32::try_from(value >> 32).map_err(|_| unknown)?;
    let n = u32::try_from(value & u64::from(u32::MAX)).map_err(|_| unknown)?;
    if n == 0 {
        return Err(unknown);
    }
    let name = section_name(pid, n);
    // SAFETY: `name` is NUL-terminated and lives across the call.
    let raw = unsafe { OpenFileMappingW(FILE_MAP_READ, 0, name.as_ptr()) };
    if raw.is_null() {
        // ERROR_FILE_NOT_FOUND (ENOENT) once the exporting memory is gone.
        return Err(last_error("OpenFileMappingW"));
    }
    let section = owned(raw);
    let view = Mapping {
        ptr: map_read(&section)?,
        len: size_of::<Record>(),
    };
    // SAFETY: the view is at least a page; any bytes are a valid `Record` (integers only).
    let record = unsafe { view.ptr.as_ptr().cast::<Record>().read_unaligned() };
    drop(view);
    if record.magic != MAGIC || record.pid != pid {
        return Err(MemoryError::NotDeviceMemory);
    }
    let source = usize::try_from(record.handle).map_err(|_| MemoryError::NotDeviceMemory)?;
    // SAFETY: opens the exporting process for handle duplication only; the OS checks
    // that it exists and that we may.
    let process = unsafe { OpenProcess(PROCESS_DUP_HANDLE, 0, pid) };
    if process.is_null() {
        return Err(last_error("OpenProcess"));
    }
    let process = owned(process);
    duplicate(process.as_raw_handle(), source as HANDLE, None, false).map(owned)
}

/// Maps a token section for reading.
fn map_read(section: &OwnedHandle) -> Result<core::ptr::NonNull<u8>, MemoryError> {
    // SAFETY: a new read-only view at an address the OS chooses; it aliases no Rust
    // object.
    let view = unsafe {
        windows_sys::Win32::System::Memory::MapViewOfFile(
            section.as_raw_handle(),
            FILE_MAP_READ,
            0,
            0,
            0,
        )
    };
    core::ptr::NonNull::new(view.Value.cast::<u8>()).ok_or_else(|| last_error("MapViewOfFile"))
}
