//! `deviceLUID` of the software device on Windows.
//!
//! A LUID is what Windows hands out to name an adapter for the boot; Vulkan reports it so
//! that processes (and APIs) can tell they use the same device. The software device has no
//! adapter, so it takes one LUID from the system (`AllocateLocallyUniqueId`) and publishes
//! it in a small named section: the first process to open the device creates the section
//! and writes the LUID, every later one reads it, and while any process using the device
//! lives (each keeps the section open) every process sees the same value. It matches no
//! D3D adapter, which is the truth: no D3D device shares this memory.

use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_ALREADY_EXISTS, INVALID_HANDLE_VALUE, LUID,
};
use windows_sys::Win32::Security::AllocateLocallyUniqueId;
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, FILE_MAP_READ, FILE_MAP_WRITE, PAGE_READWRITE,
};
use windows_sys::Win32::System::Threading::Sleep;

/// The section's name (per session, as the sections of device memory are).
const SECTION: &str = "Local\\extmem-softgpu-device-luid";

/// The device's LUID as Vulkan lays it out, or `None` if Windows refused the section.
pub fn device_luid() -> Option<[u8; 8]> {
    static LUID_BYTES: OnceLock<Option<[u8; 8]>> = OnceLock::new();
    *LUID_BYTES.get_or_init(publish_or_read)
}

fn publish_or_read() -> Option<[u8; 8]> {
    let name: Vec<u16> = SECTION.encode_utf16().chain([0]).collect();
    // SAFETY: a pagefile-backed section of one page, created or opened by name. The handle
    // is deliberately never closed: it keeps the LUID published while this process lives.
    let section = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            core::ptr::null(),
            PAGE_READWRITE,
            0,
            4096,
            name.as_ptr(),
        )
    };
    if section.is_null() {
        return None;
    }
    // SAFETY: read right after the call that set it.
    let existed = unsafe { GetLastError() } == ERROR_ALREADY_EXISTS;
    // SAFETY: a view of the whole (one-page) section; never unmapped, like the handle.
    let view = unsafe { MapViewOfFile(section, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, 8) };
    let slot = view.Value.cast::<u64>();
    if slot.is_null() {
        return None;
    }
    // SAFETY: the view is at least 8 bytes, page-aligned, shared with other processes:
    // only ever accessed as one aligned u64 through volatile reads and writes.
    unsafe {
        if !existed {
            let mut luid = LUID {
                LowPart: 0,
                HighPart: 0,
            };
            if AllocateLocallyUniqueId(&mut luid) == 0 {
                return None;
            }
            let value = u64::from(luid.LowPart) | (u64::from(luid.HighPart as u32) << 32);
            slot.write_volatile(value);
        }
        // The creator may not have written it yet: a LUID is never 0.
        for _ in 0..100 {
            let value = slot.read_volatile();
            if value != 0 {
                return Some(value.to_le_bytes());
            }
            Sleep(1);
        }
    }
    None
}
