//! Driving extmem's `MemoryManager` from a guest program: the extmem-vgpu manager set up
//! as the ICD sets it up, `vkAllocateMemory`/`vkMapMemory`-style calls that turn errors into
//! KTAP failures, the fd ownership checks of an import, and handing an fd to a child process
//! over a unix socket (SCM_RIGHTS). Generic over the backend, so every backend's flows read
//! the same.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::ptr;

use ash::vk;
use extmem::alloc_info::{AllocRequest, DeviceLimits, Import};
use extmem::backend::{Backend, CopyEngine};
use extmem::handle_types::DeviceCaps;
use extmem::memory::{DeviceMemory, MemoryManager};
use extmem::va_allocator::VaAllocator;
use extmem::vgpu::Vgpu;
use extmem::{Error, Vuid};
use extmem_hw::profile::VGPU;
use extmem_hw::{Alignment, GpuVa, HostVa, PageSize, PageSizes};
use extmem_uapi::Param;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::fd_passing::{recv_with_fd, send_with_fd, FdChild};
use crate::ktap::{expect_eq, io_op, CheckResult, Failure};
use crate::mapping::SharedMapping;
use crate::pattern;

type Types = vk::ExternalMemoryHandleTypeFlags;

/// The memory types the ICD reports (`userspace/icd/src/physical_device.rs`): 0 is device
/// memory, 1 the application's imported host memory; both host-visible.
pub const TYPE_DEVICE: u32 = 0;
/// The memory type of imported host memory.
pub const TYPE_HOST: u32 = 1;
/// How many memory types there are.
pub const MEMORY_TYPE_COUNT: u32 = 2;
/// The types a host pointer can be imported into.
pub const HOST_POINTER_TYPES: u32 = 1 << TYPE_HOST;
/// The types a dma-buf can be imported into.
pub const DMA_BUF_TYPES: u32 = (1 << TYPE_DEVICE) | (1 << TYPE_HOST);
/// The GPU VA userspace hands out starts at 2 MiB, as in the ICD.
pub const VA_START: u64 = 2 << 20;

/// A manager over `backend` with the ICD's memory types, for a backend without a GPU VM
/// (the VA range is never used) or with one.
pub fn manager_over<B: Backend>(backend: B, caps: DeviceCaps) -> MemoryManager<B> {
    let limits = DeviceLimits {
        caps,
        memory_type_count: MEMORY_TYPE_COUNT,
        min_import_alignment: VGPU.min_import_alignment,
        host_pointer_types: HOST_POINTER_TYPES,
    };
    let end = 1_u64 << VGPU.va_bits;
    let va = VaAllocator::new(GpuVa::new(VA_START), GpuVa::new(end), VGPU.page_sizes);
    MemoryManager::new(backend, limits, va, DMA_BUF_TYPES)
}

/// The first extmem-vgpu render node, found the way the ICD finds it.
pub fn find_vgpu_node() -> CheckResult<(OwnedFd, PathBuf)> {
    let mut paths: Vec<PathBuf> = fs::read_dir("/dev/dri")
        .map_err(|e| Failure::op("listing /dev/dri", e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("renderD"))
        })
        .collect();
    paths.sort();
    let mut seen = Vec::new();
    for path in paths {
        let fd = match rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                seen.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        if extmem::drm_core::driver_is(fd.as_fd(), extmem_uapi::DRIVER_NAME) {
            return Ok((fd, path));
        }
        seen.push(format!("{}: another driver", path.display()));
    }
    Err(Failure::new(
        "a render node of extmem-vgpu",
        format!("[{}]", seen.join(", ")),
    ))
}

/// A `MemoryManager` over the node, set up as the ICD's `vkCreateDevice` does, with the
/// limits read back from the kernel and checked against the profile.
pub fn vgpu_manager(fd: OwnedFd, path: &Path) -> CheckResult<MemoryManager<Vgpu>> {
    let vgpu =
        Vgpu::new(fd).map_err(|e| Failure::op(format!("Vgpu::new({})", path.display()), e))?;
    let param = |p: Param| {
        vgpu.param(p)
            .map_err(|e| Failure::op(format!("GET_PARAM {}", p.name().unwrap_or("?")), e))
    };
    let align = param(Param::MIN_IMPORT_ALIGNMENT)?;
    let min_import_alignment = Alignment::new(align)
        .ok_or_else(|| Failure::new("a power-of-two MIN_IMPORT_ALIGNMENT", align.to_string()))?;
    // Whole CPU pages (the kernel pins those), or the profile's alignment if coarser.
    let cpu_page = rustix::param::page_size() as u64;
    expect_eq(
        "MIN_IMPORT_ALIGNMENT",
        min_import_alignment.get(),
        VGPU.min_import_alignment.get().max(cpu_page),
    )?;
    let raw_sizes = param(Param::PAGE_SIZES)?;
    let page_sizes = PageSize::ALL
        .iter()
        .filter(|p| raw_sizes & p.bytes() != 0)
        .fold(PageSizes::EMPTY, |set, p| set.with(*p));
    expect_eq("PAGE_SIZES", page_sizes, VGPU.page_sizes)?;
    let va_bits = param(Param::VA_BITS)?;
    expect_eq("VA_BITS", va_bits, u64::from(VGPU.va_bits))?;
    let end = u32::try_from(va_bits)
        .ok()
        .and_then(|bits| 1_u64.checked_shl(bits))
        .ok_or_else(|| Failure::new("VA_BITS below 64", va_bits.to_string()))?;
    let limits = DeviceLimits {
        caps: DeviceCaps::LINUX_FULL,
        memory_type_count: MEMORY_TYPE_COUNT,
        min_import_alignment,
        host_pointer_types: HOST_POINTER_TYPES,
    };
    let va = VaAllocator::new(GpuVa::new(VA_START), GpuVa::new(end), page_sizes);
    Ok(MemoryManager::new(vgpu, limits, va, DMA_BUF_TYPES))
}

/// An `Error` with its `VkResult`, for messages.
pub fn describe(e: &Error) -> String {
    format!("{e} ({:?}, {:?})", e, e.result())
}

/// `result`, or a failure naming `what` and the error with its `VkResult`.
pub fn vk_op<T>(what: impl fmt::Display, result: Result<T, Error>) -> CheckResult<T> {
    result.map_err(|e| Failure::op(what, describe(&e)))
}

/// `result` is the error `expected` names; an allocation that succeeded anyway is freed.
pub fn expect_error<B: Backend, T>(
    mm: &mut MemoryManager<B>,
    what: &str,
    result: Result<T, Error>,
    expected: &str,
    matches: impl FnOnce(&Error) -> bool,
) -> CheckResult<()>
where
    T: Freeable,
{
    match result {
        Err(e) if matches(&e) => Ok(()),
        Err(e) => Err(Failure::new(
            format!("{what} fails with {expected}"),
            format!("it failed with {}", describe(&e)),
        )),
        Ok(value) => {
            let seen = value.describe();
            value.release(mm);
            Err(Failure::new(
                format!("{what} fails with {expected}"),
                format!("it succeeded: {seen}"),
            ))
        }
    }
}

/// A call's success value, which a rejection test must give back if it appears anyway.
pub trait Freeable {
    /// What the value is, for a failure message.
    fn describe(&self) -> String;
    /// Gives the value back (frees memory).
    fn release<B: Backend>(self, mm: &mut MemoryManager<B>);
}

impl Freeable for DeviceMemory {
    /// What the value is, for a failure message.
    fn describe(&self) -> String {
        format!("{self:?}")
    }
    /// Gives the value back (frees memory).
    fn release<B: Backend>(self, mm: &mut MemoryManager<B>) {
        mm.free(self);
    }
}

impl Freeable for u32 {
    /// What the value is, for a failure message.
    fn describe(&self) -> String {
        format!("{self:#x}")
    }
    /// Gives the value back (frees memory).
    fn release<B: Backend>(self, _: &mut MemoryManager<B>) {}
}

impl Freeable for OwnedFd {
    /// What the value is, for a failure message.
    fn describe(&self) -> String {
        format!("fd {}", self.as_raw_fd())
    }
    /// Gives the value back (frees memory).
    fn release<B: Backend>(self, _: &mut MemoryManager<B>) {}
}

/// `result` is `Error::ValidUsage(vuid)`.
pub fn expect_vuid<B: Backend, T: Freeable>(
    mm: &mut MemoryManager<B>,
    what: &str,
    result: Result<T, Error>,
    vuid: Vuid,
) -> CheckResult<()> {
    expect_error(mm, what, result, vuid.id(), |e| {
        *e == Error::ValidUsage(vuid)
    })
}

/// `vkAllocateMemory` of `req`.
pub fn allocate<B: Backend>(
    mm: &mut MemoryManager<B>,
    req: &AllocRequest,
) -> CheckResult<DeviceMemory> {
    vk_op(format!("allocate({:?})", req.import), mm.allocate(req))
}

/// Allocates, runs `body`, frees whatever `body` did.
pub fn with_memory<B: Backend, T>(
    mm: &mut MemoryManager<B>,
    req: &AllocRequest,
    body: impl FnOnce(&mut MemoryManager<B>, &mut DeviceMemory) -> CheckResult<T>,
) -> CheckResult<T> {
    let mut memory = allocate(mm, req)?;
    let result = body(mm, &mut memory);
    mm.free(memory);
    result
}

/// An fd import as Vulkan does it: the fd number goes into the request; on success the
/// manager owns (and closes) it, on failure it is handed back.
pub fn import_fd<B: Backend>(
    mm: &mut MemoryManager<B>,
    handle_type: Types,
    fd: OwnedFd,
    size: u64,
    memory_type_index: u32,
) -> (Result<DeviceMemory, Error>, Option<OwnedFd>, RawFd) {
    let raw = fd.into_raw_fd();
    let req = AllocRequest {
        size,
        memory_type_index,
        import: Import::Fd {
            handle_type,
            fd: raw,
        },
        ..AllocRequest::default()
    };
    match mm.allocate(&req) {
        Ok(memory) => (Ok(memory), None, raw),
        Err(e) => {
            // SAFETY: a failed import leaves the fd with the application (SPEC: ownership
            // moves only on success); `raw` came from `into_raw_fd` above and nothing
            // else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            (Err(e), Some(fd), raw)
        }
    }
}

/// An import that should succeed and take the fd: the memory, with the fd checked closed.
pub fn import_fd_ok<B: Backend>(
    mm: &mut MemoryManager<B>,
    handle_type: Types,
    fd: OwnedFd,
    size: u64,
    memory_type_index: u32,
) -> CheckResult<DeviceMemory> {
    let (result, _, raw) = import_fd(mm, handle_type, fd, size, memory_type_index);
    let memory = vk_op(format!("allocate(Import::Fd {handle_type:?})"), result)?;
    match fd_state(raw) {
        Ok(false) => Ok(memory),
        other => {
            mm.free(memory);
            Err(Failure::new(
                format!("fd {raw} closed by the successful import (F_GETFD fails with EBADF)"),
                format!("F_GETFD: {other:?} (false = still open)"),
            ))
        }
    }
}

/// Whether `raw` is open: `fcntl(F_GETFD)`, `EBADF` meaning closed.
pub fn fd_state(raw: RawFd) -> Result<bool, Errno> {
    // SAFETY: the number is only handed to fcntl(F_GETFD), which reports EBADF when nothing
    // is open under it; the program is single-threaded, so nothing opens an fd that could
    // take the number between the import and this call.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    match rustix::io::fcntl_getfd(fd) {
        Ok(_) => Ok(true),
        Err(Errno::BADF) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `EXEC` on the manager's extmem-vgpu node, through the backend's copy engine as the
/// ICD submits.
pub fn exec(mm: &mut MemoryManager<Vgpu>, cmds: &[extmem::exec::Command]) -> CheckResult<()> {
    mm.backend_mut()
        .exec(cmds)
        .map_err(|e| Failure::op("CopyEngine::exec", format!("{e:?}")))
}

/// A COPY of `size` bytes from GPU VA `src` to `dst`, for [`exec`].
pub fn copy_cmd(src: u64, dst: u64, size: u64) -> extmem::exec::Command {
    extmem::exec::Command::Copy {
        src: GpuVa::new(src),
        dst: GpuVa::new(dst),
        size,
    }
}

/// A FILL of `size` bytes at GPU VA `dst` with the 32-bit `value`, for [`exec`].
pub fn fill_cmd(dst: u64, value: u32, size: u64) -> extmem::exec::Command {
    extmem::exec::Command::Fill {
        dst: GpuVa::new(dst),
        size,
        value,
    }
}

/// The memory's GPU VA; 0 (never mapped, so a command using it faults and the check
/// fails) if it has none, which extmem-vgpu never does.
pub fn va(memory: &DeviceMemory) -> u64 {
    memory.gpu_va().map_or(0, |va| va.get())
}

/// Copies `len` bytes out of this process's memory at `ptr`.
///
/// # Safety
/// `[ptr, ptr + len)` is mapped readable for the call and no Rust reference points into it.
pub unsafe fn read_cpu(ptr: *const u8, len: usize) -> Vec<u8> {
    let mut out = vec![0_u8; len];
    // SAFETY: the caller guarantees the source range is mapped and readable; `out` is a
    // fresh vector of `len` bytes.
    unsafe { ptr::copy_nonoverlapping(ptr, out.as_mut_ptr(), len) };
    out
}

/// Copies `bytes` into this process's memory at `ptr`.
///
/// # Safety
/// `[ptr, ptr + bytes.len())` is mapped writable for the call and no Rust reference points
/// into it.
pub unsafe fn write_cpu(ptr: *mut u8, bytes: &[u8]) {
    // SAFETY: the caller guarantees the destination is mapped and writable; the source is a
    // separate Rust slice.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
}

/// `vkMapMemory` as a pointer of this process.
pub fn map_ptr<B: Backend>(
    mm: &mut MemoryManager<B>,
    memory: &mut DeviceMemory,
) -> CheckResult<*mut u8> {
    let ptr = vk_op("map", mm.map(memory))?;
    let addr = usize::try_from(ptr.get())
        .map_err(|_| Failure::new("a CPU address that fits in usize", ptr.to_string()))?;
    Ok(addr as *mut u8)
}

/// `vkMapMemory`, then the first `len` bytes.
pub fn read_mapped<B: Backend>(
    mm: &mut MemoryManager<B>,
    memory: &mut DeviceMemory,
    len: usize,
) -> CheckResult<Vec<u8>> {
    let len_u64 = u64::try_from(len).unwrap_or(u64::MAX);
    if len_u64 > memory.size() {
        return Err(Failure::new(
            format!("at most {} bytes to read", memory.size()),
            len.to_string(),
        ));
    }
    let ptr = map_ptr(mm, memory)?;
    // SAFETY: `map` returned a mapping of the whole memory (or the application's own live
    // buffer for a host import) that stays until `free`; `len` is within its size.
    Ok(unsafe { read_cpu(ptr, len) })
}

/// `vkMapMemory`, then writes `bytes` at the start.
pub fn write_mapped<B: Backend>(
    mm: &mut MemoryManager<B>,
    memory: &mut DeviceMemory,
    bytes: &[u8],
) -> CheckResult<()> {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if len > memory.size() {
        return Err(Failure::new(
            format!("at most {} bytes to write", memory.size()),
            bytes.len().to_string(),
        ));
    }
    let ptr = map_ptr(mm, memory)?;
    // SAFETY: as in `read_mapped`; the mapping is writable (MAP_SHARED read-write, or the
    // application's read-write buffer).
    unsafe { write_cpu(ptr, bytes) };
    Ok(())
}

/// `seen` is `expected`, or a failure naming the first difference.
pub fn same_bytes(what: &str, expected: &[u8], seen: &[u8]) -> CheckResult<()> {
    pattern::compare(expected, seen).map_err(|m| Failure::new(what.to_owned(), m.to_string()))
}

/// A close-on-exec duplicate of `fd`.
pub fn dup(fd: BorrowedFd<'_>) -> CheckResult<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| Failure::op("F_DUPFD_CLOEXEC", e))
}

/// A shared mapping of the first `len` bytes of `fd`.
pub fn map_fd(fd: BorrowedFd<'_>, len: usize) -> CheckResult<SharedMapping> {
    io_op("mmap", SharedMapping::new(fd, 0, len))
}

/// What the parent sends with the fd: handle type, seed (of the pattern the child must see
/// and the value it fills with) and size, little-endian.
pub const MESSAGE_LEN: usize = 16;

/// The message for `handle_type`, `seed` and `size`.
pub fn encode(handle_type: Types, seed: u32, size: u64) -> [u8; MESSAGE_LEN] {
    let mut message = [0_u8; MESSAGE_LEN];
    message[..4].copy_from_slice(&handle_type.as_raw().to_le_bytes());
    message[4..8].copy_from_slice(&seed.to_le_bytes());
    message[8..].copy_from_slice(&size.to_le_bytes());
    message
}

/// The handle type, seed and size of a message.
pub fn decode(message: &[u8; MESSAGE_LEN]) -> (Types, u32, u64) {
    let [a, b, c, d, e, f, g, h, rest @ ..] = *message;
    (
        Types::from_raw(u32::from_le_bytes([a, b, c, d])),
        u32::from_le_bytes([e, f, g, h]),
        u64::from_le_bytes(rest),
    )
}

/// A plain allocation of `size` bytes of device memory, exportable as `export`.
pub fn plain_request(size: u64, export: Types) -> AllocRequest {
    AllocRequest {
        size,
        memory_type_index: TYPE_DEVICE,
        export,
        ..AllocRequest::default()
    }
}

/// An import of `[ptr, ptr + size)` as host memory of `handle_type`.
pub fn host_request(handle_type: Types, ptr: u64, size: u64) -> AllocRequest {
    AllocRequest {
        size,
        memory_type_index: TYPE_HOST,
        import: Import::HostPointer {
            handle_type,
            ptr: HostVa::new(ptr),
        },
        ..AllocRequest::default()
    }
}

/// Starts `exe arg` with one end of a socket pair as its stdin, sends `fd` and `message`
/// over the other (SCM_RIGHTS), drops our `fd`, and waits for it to exit 0.
pub fn send_to_child(
    exe: &Path,
    arg: &str,
    fd: OwnedFd,
    message: [u8; MESSAGE_LEN],
) -> CheckResult<()> {
    let child = io_op(
        format!("spawning {} {arg}", exe.display()),
        FdChild::spawn_program(exe, &[arg], Stdio::piped()),
    )?;
    let sent = send_with_fd(child.socket(), fd.as_fd(), &message);
    // The child has its own reference now; ours goes.
    drop(fd);
    let ended = child.finish();
    io_op("sendmsg(SCM_RIGHTS)", sent)?;
    ended.map_err(|e| Failure::new("the child exits 0", e))
}

/// In a child started by [`send_to_child`]: the fd and message from stdin.
pub fn receive_from_parent() -> CheckResult<(OwnedFd, [u8; MESSAGE_LEN])> {
    let mut message = [0_u8; MESSAGE_LEN];
    let fd = io_op("recvmsg", recv_with_fd(io::stdin().as_fd(), &mut message))?;
    Ok((fd, message))
}
