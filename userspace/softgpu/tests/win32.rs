//! The software device's Windows sharing through `extmem`'s `Backend` and `Win32Sharing`
//! traits, as the memory manager drives them, under Wine: section memory shared by NT
//! handle, by name and by global-share (KMT) token, between two devices of one process and
//! with a second process, the copy engine moving the bytes; and every refusal by errno.
//!
//! The second process is this test executable again (`std::env::current_exe`), run with
//! [`CHILD`] set and only the cross-process test selected, which then plays the child's
//! part ([`child_role`]) instead of the parent's.
#![cfg(windows)]

use std::io::Write;
use std::mem::size_of;
use std::os::windows::io::AsRawHandle;
use std::process::{Command, Stdio};

use extmem::backend::{
    errno, Backend, BackendError, CopyEngine, CpuAccess, GemHandle, RawWin32Handle,
    Win32ExportInfo, Win32Sharing,
};
use extmem::exec;
use extmem_hw::{GpuVa, HostVa};
use extmem_softgpu::SoftGpu;
use windows_sys::Win32::Foundation::{
    CloseHandle, DuplicateHandle, GetHandleInformation, DUPLICATE_CLOSE_SOURCE,
    DUPLICATE_SAME_ACCESS, HANDLE, HANDLE_FLAG_INHERIT, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Security::{
    InitializeAcl, InitializeSecurityDescriptor, SetSecurityDescriptorDacl, ACL, ACL_REVISION,
    PSECURITY_DESCRIPTOR, SECURITY_DESCRIPTOR,
};
use windows_sys::Win32::System::Memory::{CreateFileMappingW, PAGE_READWRITE};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetCurrentProcessId};

const PAGE: u64 = 4096;
const SIZE: u64 = 2 * PAGE;
const PAGE_LEN: usize = 4096;
const SIZE_LEN: usize = 2 * PAGE_LEN;
const VA_MEMORY: u64 = 0x10_0000_0000;
const VA_HOST: u64 = 0x20_0000_0000;
/// The variable that makes this executable the child: `nt,name,token` of three memories.
const CHILD: &str = "EXTMEM_SOFTGPU_WIN32_CHILD";

fn device() -> SoftGpu {
    SoftGpu::new().unwrap_or_else(|e| panic!("{e}"))
}

/// A copy-engine COPY of `size` bytes from `src` to `dst`.
fn copy(src: u64, dst: u64, size: u64) -> exec::Command {
    exec::Command::Copy {
        src: GpuVa::new(src),
        dst: GpuVa::new(dst),
        size,
    }
}

fn ok<T>(result: Result<T, BackendError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn errno_of<T: std::fmt::Debug>(result: Result<T, BackendError>) -> i32 {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.errno,
    }
}

fn win32(gpu: &mut SoftGpu) -> &mut dyn Win32Sharing {
    gpu.win32()
        .unwrap_or_else(|| panic!("the software device shares on Windows"))
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().collect()
}

/// A name no other test process uses.
fn unique_name(what: &str) -> Vec<u16> {
    // SAFETY: no arguments.
    let pid = unsafe { GetCurrentProcessId() };
    wide(&format!("Local\\extmem-softgpu-win32-test-{pid}-{what}"))
}

/// Reads (or with `Some`, first writes) the first `len` bytes of `handle` through a CPU
/// mapping.
fn cpu(gpu: &mut SoftGpu, handle: GemHandle, write: Option<&[u8]>, len: usize) -> Vec<u8> {
    let ptr = ok(gpu.map(handle, SIZE, CpuAccess::ReadWrite));
    let addr = usize::try_from(ptr.get()).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: a live SIZE-byte mapping of the memory; `len` and the data fit in it.
    let bytes = unsafe {
        if let Some(data) = write {
            core::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len());
        }
        std::slice::from_raw_parts(addr as *const u8, len).to_vec()
    };
    gpu.unmap(ptr, SIZE);
    bytes
}

/// Copies `data` into the first bytes of `handle` and back out with the copy engine,
/// through a host-pointer import; returns what the memory held before.
fn gpu_swap(gpu: &mut SoftGpu, handle: GemHandle, data: &[u8]) -> Vec<u8> {
    let mut host = vec![0u8; 3 * PAGE_LEN];
    // Page-aligned SIZE bytes inside `host`.
    let offset = host.as_ptr().align_offset(PAGE_LEN);
    let base = host.as_mut_ptr() as u64 + offset as u64;
    let (imported, _) = ok(gpu.import_host(HostVa::new(base), SIZE, false, false))
        .unwrap_or_else(|| panic!("an import, not a probe"));
    let vm = gpu
        .vm()
        .unwrap_or_else(|| panic!("the software device has a VM"));
    ok(vm.bind(handle, GpuVa::new(VA_MEMORY), 0, SIZE, false));
    ok(vm.bind(imported, GpuVa::new(VA_HOST), 0, SIZE, false));
    let len = data.len() as u64;
    // Memory → host, then the new data host → memory.
    gpu.exec(&[copy(VA_MEMORY, VA_HOST, len)])
        .unwrap_or_else(|e| panic!("{e:?}"));
    let before = host[offset..offset + data.len()].to_vec();
    host[offset + PAGE_LEN..offset + PAGE_LEN + data.len()].copy_from_slice(data);
    gpu.exec(&[copy(VA_HOST + PAGE, VA_MEMORY, len)])
        .unwrap_or_else(|e| panic!("{e:?}"));
    let vm = gpu
        .vm()
        .unwrap_or_else(|| panic!("the software device has a VM"));
    ok(vm.unbind(GpuVa::new(VA_MEMORY), SIZE));
    ok(vm.unbind(GpuVa::new(VA_HOST), SIZE));
    gpu.close(imported);
    drop(host);
    before
}

/// Whether `handle` has `HANDLE_FLAG_INHERIT`.
fn inheritable(handle: RawWin32Handle) -> bool {
    let mut flags = 0u32;
    // SAFETY: writes only `flags`; the OS checks the handle.
    let got = unsafe { GetHandleInformation(handle as HANDLE, &mut flags) };
    assert_ne!(got, 0, "GetHandleInformation({handle:#x})");
    flags & HANDLE_FLAG_INHERIT != 0
}

fn close(handle: RawWin32Handle) -> bool {
    // SAFETY: the caller owns `handle` (an export handed to it) and does not use it again.
    unsafe { CloseHandle(handle as HANDLE) != 0 }
}

#[test]
fn nt_handles_share_memory_between_devices_and_stay_the_callers() {
    let mut a = device();
    let mut b = device();
    let memory = ok(a.create(SIZE));
    assert_eq!(cpu(&mut a, memory, None, SIZE_LEN), vec![0; SIZE_LEN]);
    cpu(&mut a, memory, Some(b"written by device a"), 0);
    let nt = ok(win32(&mut a).export_nt(memory, 0, false));
    let imported = ok(win32(&mut b).import_nt(nt));
    assert_eq!(ok(b.info(imported)).0, SIZE);
    // Through b's copy engine: a's bytes out, b's bytes in.
    assert_eq!(
        gpu_swap(&mut b, imported, b"device b, by GPU"),
        b"written by devic"
    );
    assert_eq!(cpu(&mut a, memory, None, 16), b"device b, by GPU");
    // The same memory imported again (same device) is the same object.
    let again = ok(win32(&mut b).import_nt(nt));
    assert_eq!(again, imported);
    let same = ok(win32(&mut a).import_nt(nt));
    assert_eq!(
        same, memory,
        "the exporter's own memory comes back as itself"
    );
    assert!(
        close(nt),
        "the application's handle is still open, and its own"
    );
    assert_eq!(errno_of(win32(&mut b).import_nt(nt)), errno::EBADF);
    assert_eq!(errno_of(win32(&mut b).import_nt(0)), errno::EBADF);
    // Through the OS-neutral export too.
    let owned = ok(a.export_shared(memory));
    let via_shared = ok(b.import_shared(std::os::windows::io::AsHandle::as_handle(&owned)));
    assert_eq!(via_shared, imported);
}

#[test]
fn names_are_taken_once_and_imported_by_name() {
    let mut a = device();
    let mut b = device();
    let name = unique_name("named");
    let export = Win32ExportInfo {
        name: Some(&name),
        ..Default::default()
    };
    let memory = ok(win32(&mut a).create_exportable(SIZE, &export));
    assert_eq!(
        errno_of(win32(&mut b).create_exportable(SIZE, &export)),
        errno::EEXIST
    );
    cpu(&mut a, memory, Some(b"named memory"), 0);
    let imported = ok(win32(&mut b).import_name(&name));
    assert_eq!(cpu(&mut b, imported, None, 12), b"named memory");
    assert_eq!(
        errno_of(win32(&mut b).import_name(&unique_name("nobody"))),
        errno::ENOENT
    );
}

#[test]
fn the_security_descriptor_asked_for_is_the_sections() {
    // An absolute descriptor whose DACL is present and empty: it grants nothing, so the
    // name can be opened by nobody (the creator's own handle has its access already).
    let mut acl = ACL::default();
    let mut descriptor = SECURITY_DESCRIPTOR::default();
    let acl_len = u32::try_from(size_of::<ACL>()).unwrap_or_else(|e| panic!("{e}"));
    let descriptor_ptr: PSECURITY_DESCRIPTOR = (&raw mut descriptor).cast();
    // SAFETY: both structures are ours and live until the end of the test; the calls
    // write only them.
    let made = unsafe {
        InitializeAcl(&mut acl, acl_len, ACL_REVISION) != 0
            && InitializeSecurityDescriptor(descriptor_ptr, 1) != 0
            && SetSecurityDescriptorDacl(descriptor_ptr, 1, &acl, 0) != 0
    };
    assert!(made, "an empty-DACL descriptor");
    let mut a = device();
    let mut b = device();
    let name = unique_name("locked");
    let export = Win32ExportInfo {
        security_descriptor: descriptor_ptr.cast_const(),
        name: Some(&name),
        ..Default::default()
    };
    let memory = ok(win32(&mut a).create_exportable(SIZE, &export));
    assert_eq!(
        errno_of(win32(&mut b).import_name(&name)),
        errno::EACCES,
        "the empty DACL denies opening by name"
    );
    // The exporter's NT handles still work: they are duplicated from its own handle.
    let nt = ok(win32(&mut a).export_nt(memory, 0, false));
    ok(win32(&mut b).import_nt(nt));
    assert!(close(nt));
}

#[test]
fn sections_of_someone_else_are_refused() {
    let mut gpu = device();
    let size = u32::try_from(SIZE).unwrap_or_else(|e| panic!("{e}"));
    let name = unique_name("foreign");
    let mut name_z = name.clone();
    name_z.push(0);
    // SAFETY: a plain named section, as any other program makes one; `name_z` is
    // NUL-terminated.
    let raw = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            core::ptr::null(),
            PAGE_READWRITE,
            0,
            size,
            name_z.as_ptr(),
        )
    };
    assert!(!raw.is_null());
    let raw = raw as RawWin32Handle;
    assert_eq!(errno_of(win32(&mut gpu).import_nt(raw)), errno::EINVAL);
    assert_eq!(errno_of(win32(&mut gpu).import_name(&name)), errno::EINVAL);
    assert!(close(raw), "refusing it left the handle open");
    assert_eq!(gpu.live_objects(), 0);
}

#[test]
fn global_tokens_work_until_the_memory_is_freed() {
    let mut a = device();
    let mut b = device();
    let memory = ok(a.create(SIZE));
    cpu(&mut a, memory, Some(b"shared by token"), 0);
    let token = ok(win32(&mut a).export_global(memory));
    assert_ne!(token, 0);
    assert_eq!(ok(win32(&mut a).export_global(memory)), token);
    let imported = ok(win32(&mut b).import_global(token));
    assert_eq!(cpu(&mut b, imported, None, 15), b"shared by token");
    a.close(memory);
    // b's import keeps the memory, but the token was a's and is gone with it.
    assert_eq!(errno_of(win32(&mut b).import_global(token)), errno::ENOENT);
    assert_eq!(cpu(&mut b, imported, None, 15), b"shared by token");
    assert_eq!(errno_of(win32(&mut b).import_global(0)), errno::ENOENT);
}

#[test]
fn a_second_process_imports_by_inherited_and_duplicated_handle_name_and_token() {
    if std::env::var_os(CHILD).is_some() {
        return child_role();
    }
    let mut gpu = device();
    let by_handle = ok(gpu.create(SIZE));
    let name = unique_name("child");
    let export = Win32ExportInfo {
        name: Some(&name),
        ..Default::default()
    };
    let by_name = ok(win32(&mut gpu).create_exportable(SIZE, &export));
    let by_token = ok(gpu.create(SIZE));
    let by_duplicate = ok(gpu.create(SIZE));
    for (memory, text) in [
        (by_handle, b"parent: handle"),
        (by_name, b"parent: name  "),
        (by_token, b"parent: token "),
        (by_duplicate, b"parent: dup   "),
    ] {
        cpu(&mut gpu, memory, Some(text), 0);
    }
    // Inheritable: std creates children with handle inheritance on.
    let nt = ok(win32(&mut gpu).export_nt(by_handle, 0, true));
    assert!(inheritable(nt));
    let token = ok(win32(&mut gpu).export_global(by_token));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "a_second_process_imports_by_inherited_and_duplicated_handle_name_and_token",
            "--nocapture",
        ])
        .env(
            CHILD,
            format!("{nt},{},{token}", String::from_utf16_lossy(&name)),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Not inheritable: moved into the running child as an application would hand it
    // over (DuplicateHandle into the target process, closing ours), its value sent on
    // the child's stdin.
    let not_inherited = ok(win32(&mut gpu).export_nt(by_duplicate, 0, false));
    let mut in_child: HANDLE = core::ptr::null_mut();
    // SAFETY: `not_inherited` is ours and is closed by the call (DUPLICATE_CLOSE_SOURCE);
    // the child's process handle is live while `child` is; the call writes `in_child`.
    let moved = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            not_inherited as HANDLE,
            child.as_raw_handle(),
            &mut in_child,
            0,
            0,
            DUPLICATE_SAME_ACCESS | DUPLICATE_CLOSE_SOURCE,
        )
    };
    assert_ne!(moved, 0, "DuplicateHandle into the child");
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("piped stdin"));
    writeln!(stdin, "{}", in_child as RawWin32Handle).unwrap_or_else(|e| panic!("{e}"));
    drop(stdin);
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child failed:\n{log}");
    assert!(log.contains("1 passed"), "the child ran its part:\n{log}");
    assert_eq!(cpu(&mut gpu, by_handle, None, 14), b"child: handle ");
    assert_eq!(cpu(&mut gpu, by_name, None, 14), b"child: name   ");
    assert_eq!(cpu(&mut gpu, by_token, None, 14), b"child: token  ");
    assert_eq!(cpu(&mut gpu, by_duplicate, None, 14), b"child: dup    ");
    assert!(close(nt));
}

/// The second process of the test above: imports the four memories, reads what the
/// parent wrote and writes back, through its own copy engine.
/// The child's part of the cross-process test.
fn child_role() {
    let spec = std::env::var(CHILD).unwrap_or_else(|e| panic!("{CHILD}: {e}"));
    let parts: Vec<&str> = spec.split(',').collect();
    let [nt, name, token] = parts[..] else {
        panic!("{CHILD} is not nt,name,token: {spec}");
    };
    let number = |s: &str| {
        s.parse::<RawWin32Handle>()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    };
    let (nt, token) = (number(nt), number(token));
    let mut gpu = device();
    let by_handle = ok(win32(&mut gpu).import_nt(nt));
    let by_name = ok(win32(&mut gpu).import_name(&wide(name)));
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    let duplicated = number(line.trim());
    let by_duplicate = ok(win32(&mut gpu).import_nt(duplicated));
    let by_token = ok(win32(&mut gpu).import_global(token));
    assert_eq!(
        gpu_swap(&mut gpu, by_handle, b"child: handle "),
        b"parent: handle"
    );
    assert_eq!(
        gpu_swap(&mut gpu, by_name, b"child: name   "),
        b"parent: name  "
    );
    assert_eq!(
        gpu_swap(&mut gpu, by_token, b"child: token  "),
        b"parent: token "
    );
    assert_eq!(
        gpu_swap(&mut gpu, by_duplicate, b"child: dup    "),
        b"parent: dup   "
    );
    assert!(
        close(nt),
        "the inherited handle stayed the child's to close"
    );
    assert!(close(duplicated), "so did the duplicated one");
}
