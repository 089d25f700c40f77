//! Section objects under Wine (or Windows): the trailer check, names, NT handles and
//! global-share tokens, in one process. The second process is in tests/win32.rs.

use std::os::windows::io::{AsHandle, AsRawHandle};

use windows_sys::Win32::Foundation::CloseHandle;

use super::*;

fn ok<T>(result: Result<T, MemoryError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn name(text: &str) -> Vec<u16> {
    // Unique per test process, so that parallel runs do not collide.
    // SAFETY: no arguments.
    let pid = unsafe { GetCurrentProcessId() };
    format!("Local\\extmem-softgpu-test-{pid}-{text}")
        .encode_utf16()
        .collect()
}

/// A plain section of `len` bytes made by "someone else", holding `fill` in its last page.
fn foreign_section(len: usize, fill: Option<Trailer>) -> OwnedHandle {
    section_with(len, PAGE_READWRITE, fill)
}

/// A section of `len` bytes created with `protect`, holding `fill` in its last page.
fn section_with(len: usize, protect: u32, fill: Option<Trailer>) -> OwnedHandle {
    let size = u32::try_from(len).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: no name, no attributes.
    let raw = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            ptr::null(),
            protect,
            0,
            size,
            ptr::null(),
        )
    };
    assert!(!raw.is_null(), "CreateFileMappingW");
    let section = owned(raw);
    if let Some(trailer) = fill {
        let view = Mapping {
            ptr: ok(map_view(section.as_handle(), 0)),
            len,
        };
        // SAFETY: the view is `len` bytes; the last page holds the trailer.
        unsafe {
            view.ptr
                .as_ptr()
                .add(len - PAGE)
                .cast::<Trailer>()
                .write_unaligned(trailer)
        };
    }
    section
}

#[test]
fn created_memory_is_zeroed_and_imports_as_the_same_object() {
    let memory = ok(SharedMemory::create(8192));
    assert_eq!(memory.size(), 8192);
    assert_eq!(memory.mapping().len(), 8192);
    let cpu = ok(memory.map(8192));
    // SAFETY: an 8192-byte view of the memory, and the device's view of the same.
    unsafe {
        assert_eq!(cpu.as_ptr().add(8191).read(), 0, "zeroed");
        cpu.as_ptr().add(100).write(0x5a);
        assert_eq!(memory.mapping().ptr().as_ptr().add(100).read(), 0x5a);
    }
    // SAFETY: the view from `map`, no longer used.
    unsafe { super::unmap_raw(cpu, 8192) };
    let exported = ok(memory.export());
    let imported = ok(SharedMemory::import(exported.as_handle()));
    assert_eq!(imported.identity(), memory.identity());
    assert_eq!(imported.size(), 8192);
    // SAFETY: both views are 8192 bytes and live.
    unsafe {
        assert_eq!(imported.mapping().ptr().as_ptr().add(100).read(), 0x5a);
        imported.mapping().ptr().as_ptr().add(4096).write(7);
        assert_eq!(memory.mapping().ptr().as_ptr().add(4096).read(), 7);
    }
    let other = ok(SharedMemory::create(4096));
    assert_ne!(other.identity(), memory.identity(), "object ids differ");
}

#[test]
fn the_importers_handle_stays_open_and_bad_handles_are_ebadf() {
    let memory = ok(SharedMemory::create(4096));
    let nt = ok(memory.export_nt(0, false));
    let imported = ok(SharedMemory::import_raw(nt));
    assert_eq!(imported.identity(), memory.identity());
    // SAFETY: `nt` is ours (export_nt hands it to the caller); the import duplicated it.
    let closed = unsafe { CloseHandle(nt as HANDLE) };
    assert_ne!(closed, 0, "still open after import");
    assert_eq!(
        SharedMemory::import_raw(0).err().map(|e| e.errno()),
        Some(errno::EBADF)
    );
    assert_eq!(
        SharedMemory::import_raw(0x7ff0).err().map(|e| e.errno()),
        Some(errno::EBADF)
    );
}

#[test]
fn foreign_and_short_sections_are_refused() {
    let plain = foreign_section(8192, None);
    assert_eq!(
        SharedMemory::import(plain.as_handle())
            .err()
            .map(|e| e.errno()),
        Some(errno::EINVAL)
    );
    // Our magic, but a size the section does not have.
    let lying = Trailer {
        magic: MAGIC,
        id: [1, 2],
        size: 1 << 20,
    };
    let short = foreign_section(8192, Some(lying));
    assert_eq!(
        SharedMemory::import(short.as_handle())
            .err()
            .map(|e| e.errno()),
        Some(errno::EINVAL)
    );
    // Not a section at all: a file, and this process.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let file = std::fs::File::open(exe).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        SharedMemory::import(file.as_handle())
            .err()
            .map(|e| e.errno()),
        Some(errno::EINVAL)
    );
    assert_eq!(
        SharedMemory::import_raw(-1).err().map(|e| e.errno()),
        Some(errno::EINVAL)
    );
    // Reserved, not committed: touching its pages would fault on Windows (Wine reads
    // them as zeros, so there the magic would refuse it too; VirtualQuery reports
    // MEM_RESERVE on both, which is what refuses it first).
    let reserved = section_with(
        8192,
        PAGE_READWRITE | windows_sys::Win32::System::Memory::SEC_RESERVE,
        None,
    );
    assert_eq!(
        SharedMemory::import(reserved.as_handle())
            .err()
            .map(|e| e.errno()),
        Some(errno::EINVAL)
    );
    // A well-formed trailer is accepted: the check is the trailer, not who made it.
    let honest = Trailer {
        magic: MAGIC,
        id: [3, 4],
        size: 4096,
    };
    let good = foreign_section(8192, Some(honest));
    assert_eq!(
        ok(SharedMemory::import(good.as_handle())).identity(),
        (3, 4)
    );
}

#[test]
fn names_are_created_once_and_opened() {
    let n = name("named");
    let memory = ok(SharedMemory::create_exportable(4096, ptr::null(), Some(&n)));
    assert_eq!(
        SharedMemory::create_exportable(4096, ptr::null(), Some(&n))
            .err()
            .map(|e| e.errno()),
        Some(errno::EEXIST)
    );
    let opened = ok(SharedMemory::open_name(&n));
    assert_eq!(opened.identity(), memory.identity());
    assert_eq!(
        SharedMemory::open_name(&name("nobody"))
            .err()
            .map(|e| e.errno()),
        Some(errno::ENOENT)
    );
    drop((memory, opened));
    assert_eq!(
        SharedMemory::open_name(&n).err().map(|e| e.errno()),
        Some(errno::ENOENT),
        "the name goes with the last handle"
    );
}

#[test]
fn global_tokens_are_stable_and_end_with_the_memory() {
    let memory = ok(SharedMemory::create(4096));
    let token = ok(memory.global_token());
    assert_ne!(token, 0);
    assert_eq!(ok(memory.global_token()), token, "the same every call");
    let imported = ok(SharedMemory::import_token(token));
    assert_eq!(imported.identity(), memory.identity());
    drop(imported);
    drop(memory);
    assert_eq!(
        SharedMemory::import_token(token).err().map(|e| e.errno()),
        Some(errno::ENOENT)
    );
    assert_eq!(
        SharedMemory::import_token(0).err().map(|e| e.errno()),
        Some(errno::ENOENT)
    );
    assert_eq!(
        SharedMemory::import_token(-1).err().map(|e| e.errno()),
        Some(errno::ENOENT)
    );
}

#[test]
fn nt_exports_carry_the_access_asked_for() {
    let memory = ok(SharedMemory::create(4096));
    let read_only = ok(memory.export_nt(SECTION_MAP_READ | SECTION_QUERY, false));
    // The device maps read-write, which a read-only handle does not allow.
    assert_eq!(
        SharedMemory::import_raw(read_only).err().map(|e| e.errno()),
        Some(errno::EACCES)
    );
    // SAFETY: ours, from export_nt.
    assert_ne!(unsafe { CloseHandle(read_only as HANDLE) }, 0);
    let _ = memory.section.as_raw_handle();
}
