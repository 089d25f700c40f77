//! core-flows: the driver-side memory manager, `extmem::memory::MemoryManager` over
//! `extmem::vgpu::Vgpu`, against the real extmem-vgpu node.
//!
//! What the ICD does for `vkAllocateMemory`, `vkMapMemory`, `vkGetMemoryFdKHR`,
//! `vkGetMemoryFdPropertiesKHR` and `vkGetMemoryHostPointerPropertiesEXT`, run on the real
//! kernel instead of the unit tests' fake backend: plain allocations copied through the copy
//! engine, host-pointer and host-mapped foreign imports, dma-buf and opaque-fd export and
//! import (from vgem, udmabuf and ourselves, with the fd ownership rules), and fds passed to
//! another process over a unix socket. The device-wide counters (`GET_PARAM`) are read on a
//! second open file, so they are the kernel's view and not the manager's; after each group
//! they are back where they started, and at the end so is the process's fd table.
//!
//! The program re-runs itself as `core-flows child-import` for the two-process checks: the
//! child gets a unix socket as stdin, receives an fd over it (SCM_RIGHTS), imports it into
//! its own `MemoryManager`, checks the parent's bytes and fills the memory through the GPU.

use std::fmt;
use std::fs;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::ptr;

use ash::vk;
use extmem::alloc_info::{AllocRequest, DeviceLimits, Import};
use extmem::backend::HostImport;
use extmem::handle_types::{DeviceCaps, Platform};
use extmem::memory::{DeviceMemory, MemoryManager, Origin};
use extmem::va_allocator::VaAllocator;
use extmem::vgpu::Vgpu;
use extmem::{Error, HandleError, Vuid};
use extmem_guest_tests::device_snapshot::{counters, expect_counters};
use extmem_guest_tests::dri::{self, DrmNode, NodeKind};
use extmem_guest_tests::host_memory::{self, AnonMapping, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure, KtapWriter};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::vgpu::{self as guest_vgpu, Counters};
use extmem_guest_tests::{dma_buf, fd_table, pattern, udmabuf};
use extmem_hw::profile::VGPU;
use extmem_hw::{Alignment, GpuVa, HostVa, PageSize, PageSizes};
use extmem_uapi::{Cmd, Param};
use rustix::fs::{Mode, OFlags};
use rustix::io::{Errno, FdFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// Number of results; the runner fails the program if fewer arrive.
const PLAN: usize = 34;

/// The size of most allocations: 16 pages.
const SIZE: u64 = 64 << 10;
const SIZE_LEN: usize = 64 << 10;
const PAGE: u64 = 4096;
const PAGE_LEN: usize = 4096;

/// The memory types the ICD reports (`userspace/icd/src/physical_device.rs`): 0 is device
/// memory, 1 the application's imported host memory; both host-visible.
const TYPE_DEVICE: u32 = 0;
const TYPE_HOST: u32 = 1;
const MEMORY_TYPE_COUNT: u32 = 2;
const HOST_POINTER_TYPES: u32 = 1 << TYPE_HOST;
const DMA_BUF_TYPES: u32 = (1 << TYPE_DEVICE) | (1 << TYPE_HOST);
/// The GPU VA userspace hands out starts at 2 MiB, as in the ICD.
const VA_START: u64 = 2 << 20;

type Ktap = KtapWriter<io::Stdout>;
type Mm = MemoryManager<Vgpu>;
type Types = vk::ExternalMemoryHandleTypeFlags;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("child-import") {
        return child_import();
    }
    let fds_before = fd_table::snapshot();
    let mut ktap = KtapWriter::stdout(PLAN);
    run(&mut ktap);
    ktap.check(
        "fd table: every descriptor the program (and the manager) opened is closed again",
        || fd_table::closed_again(fds_before),
    );
    ktap.finish()
}

/// The manager under test, a second open file of the node that reads the device-wide
/// counters, and the counters before the program made anything.
struct Env {
    mm: Mm,
    observer: guest_vgpu::Vgpu,
    base: Counters,
}

fn run(ktap: &mut Ktap) {
    // The counters are read on a file opened before the manager's: each open file's VM
    // holds page-table pages of its own, so the baseline must not include the manager's.
    let what = "open: a second file of the node reads the counters (no objects, bindings, pins or attachments); the manager's node is the renderD* node whose DRM_IOCTL_VERSION says \"extmem-vgpu\" (drm_core::driver_is)";
    let opened = ktap.check(what, || {
        let observer = guest_vgpu::Vgpu::open()
            .map_err(|e| Failure::new("an extmem-vgpu node to read counters on", e.to_string()))?;
        let base = counters(&observer)?;
        let idle = Counters {
            pt_pages: base.pt_pages,
            ..Counters::default()
        };
        if base != idle {
            return Err(Failure::new(
                format!("counters {idle}"),
                format!("counters {base}"),
            ));
        }
        let (fd, path) = find_node()?;
        Ok((observer, base, fd, path))
    });
    let what = "MemoryManager::new over Vgpu::new (API_VERSION checked): DeviceLimits from GET_PARAM (MIN_IMPORT_ALIGNMENT, PAGE_SIZES, VA_BITS as extmem_hw::profile::VGPU says), a VaAllocator over [2 MiB, 2^VA_BITS)";
    let mut env = ktap.check_after(what, opened, |(observer, base, fd, path)| {
        let mm = manager(fd, &path)?;
        Ok(Env { mm, observer, base })
    });
    let vgem = ktap.check(
        "vgem: a card* node reports driver \"vgem\" (the foreign exporter)",
        || {
            dri::open_by_driver("vgem", NodeKind::Primary)
                .map_err(|e| Failure::new("a vgem node", e.to_string()))
        },
    );
    let vgem = vgem.as_ref();

    plain(ktap, &mut env);
    host_pointers(ktap, &mut env);
    foreign(ktap, &mut env, vgem);
    exports(ktap, &mut env);
    imports(ktap, &mut env, vgem);
    fd_properties(ktap, &mut env, vgem);
    two_processes(ktap, &mut env);

    let what = "end: the manager holds no GEM handle; once it is dropped (its file closed), every counter is back at the start, page-table pages included";
    ktap.check_after(what, env, |env| {
        expect_eq("live GEM handles", env.mm.live_handles(), 0)?;
        drop(env.mm);
        let seen = counters(&env.observer)?;
        if seen == env.base {
            Ok(())
        } else {
            Err(Failure::new(
                format!("counters {}", env.base),
                format!("counters {seen}"),
            ))
        }
    });
}

// ---- helpers ----------------------------------------------------------------------------

/// The first extmem-vgpu render node, found the way the ICD finds it.
fn find_node() -> CheckResult<(OwnedFd, PathBuf)> {
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
fn manager(fd: OwnedFd, path: &std::path::Path) -> CheckResult<Mm> {
    let vgpu =
        Vgpu::new(fd).map_err(|e| Failure::op(format!("Vgpu::new({})", path.display()), e))?;
    let param = |p: Param| {
        vgpu.param(p)
            .map_err(|e| Failure::op(format!("GET_PARAM {}", p.name().unwrap_or("?")), e))
    };
    let align = param(Param::MIN_IMPORT_ALIGNMENT)?;
    let min_import_alignment = Alignment::new(align)
        .ok_or_else(|| Failure::new("a power-of-two MIN_IMPORT_ALIGNMENT", align.to_string()))?;
    expect_eq(
        "MIN_IMPORT_ALIGNMENT",
        min_import_alignment,
        VGPU.min_import_alignment,
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
        caps: DeviceCaps {
            platform: Platform::Linux,
            opaque_fd: true,
            dma_buf: true,
            host_allocation: true,
            host_mapped_foreign: true,
            win32: false,
        },
        memory_type_count: MEMORY_TYPE_COUNT,
        min_import_alignment,
        host_pointer_types: HOST_POINTER_TYPES,
    };
    let va = VaAllocator::new(GpuVa::new(VA_START), GpuVa::new(end), page_sizes);
    Ok(MemoryManager::new(vgpu, limits, va, DMA_BUF_TYPES))
}

/// The counters are `want(base)`, page-table pages aside (a VM keeps the tables it grew
/// until its file closes).
fn expect_held(env: &Env, want: impl FnOnce(Counters) -> Counters) -> CheckResult<()> {
    let seen = counters(&env.observer)?;
    let expected = Counters {
        pt_pages: seen.pt_pages,
        ..want(env.base)
    };
    expect_counters(seen, expected)
}

/// Back at the start (page-table pages aside) and no GEM handle held by the manager.
fn expect_idle(env: &Env) -> CheckResult<()> {
    expect_eq("live GEM handles", env.mm.live_handles(), 0)?;
    expect_held(env, |base| base)
}

/// An `Error` with its `VkResult`, for messages.
fn describe(e: &Error) -> String {
    format!("{e} ({:?}, {:?})", e, e.result())
}

fn vk_op<T>(what: impl fmt::Display, result: Result<T, Error>) -> CheckResult<T> {
    result.map_err(|e| Failure::op(what, describe(&e)))
}

/// `result` is the error `expected` names; an allocation that succeeded anyway is freed.
fn expect_error<T>(
    mm: &mut Mm,
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
trait Freeable {
    fn describe(&self) -> String;
    fn release(self, mm: &mut Mm);
}

impl Freeable for DeviceMemory {
    fn describe(&self) -> String {
        format!("{self:?}")
    }
    fn release(self, mm: &mut Mm) {
        mm.free(self);
    }
}

impl Freeable for u32 {
    fn describe(&self) -> String {
        format!("{self:#x}")
    }
    fn release(self, _: &mut Mm) {}
}

impl Freeable for OwnedFd {
    fn describe(&self) -> String {
        format!("fd {}", self.as_raw_fd())
    }
    fn release(self, _: &mut Mm) {}
}

/// `result` is `Error::ValidUsage(vuid)`.
fn expect_vuid<T: Freeable>(
    mm: &mut Mm,
    what: &str,
    result: Result<T, Error>,
    vuid: Vuid,
) -> CheckResult<()> {
    expect_error(mm, what, result, vuid.id(), |e| {
        *e == Error::ValidUsage(vuid)
    })
}

fn plain_request(size: u64, export: Types) -> AllocRequest {
    AllocRequest {
        size,
        memory_type_index: TYPE_DEVICE,
        export,
        ..AllocRequest::default()
    }
}

fn host_request(handle_type: Types, ptr: u64, size: u64) -> AllocRequest {
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

fn allocate(mm: &mut Mm, req: &AllocRequest) -> CheckResult<DeviceMemory> {
    vk_op(format!("allocate({:?})", req.import), mm.allocate(req))
}

/// Allocates, runs `body`, frees whatever `body` did.
fn with_memory<T>(
    mm: &mut Mm,
    req: &AllocRequest,
    body: impl FnOnce(&mut Mm, &mut DeviceMemory) -> CheckResult<T>,
) -> CheckResult<T> {
    let mut memory = allocate(mm, req)?;
    let result = body(mm, &mut memory);
    mm.free(memory);
    result
}

/// An fd import as Vulkan does it: the fd number goes into the request; on success the
/// manager owns (and closes) it, on failure it is handed back.
fn import_fd(
    mm: &mut Mm,
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
fn import_fd_ok(
    mm: &mut Mm,
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
fn fd_state(raw: RawFd) -> Result<bool, Errno> {
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

fn exec(mm: &mut Mm, cmds: &[Cmd]) -> CheckResult<()> {
    mm.backend_mut()
        .exec(cmds)
        .map_err(|e| Failure::op("Vgpu::exec", format!("{e:?}")))
}

fn va(memory: &DeviceMemory) -> u64 {
    memory.gpu_va().get()
}

/// Copies `len` bytes out of this process's memory at `ptr`.
///
/// # Safety
/// `[ptr, ptr + len)` is mapped readable for the call and no Rust reference points into it.
unsafe fn read_cpu(ptr: *const u8, len: usize) -> Vec<u8> {
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
unsafe fn write_cpu(ptr: *mut u8, bytes: &[u8]) {
    // SAFETY: the caller guarantees the destination is mapped and writable; the source is a
    // separate Rust slice.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
}

/// `vkMapMemory` as a pointer of this process.
fn map_ptr(mm: &mut Mm, memory: &mut DeviceMemory) -> CheckResult<*mut u8> {
    let ptr = vk_op("map", mm.map(memory))?;
    let addr = usize::try_from(ptr.get())
        .map_err(|_| Failure::new("a CPU address that fits in usize", ptr.to_string()))?;
    Ok(addr as *mut u8)
}

/// `vkMapMemory`, then the first `len` bytes.
fn read_mapped(mm: &mut Mm, memory: &mut DeviceMemory, len: usize) -> CheckResult<Vec<u8>> {
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
fn write_mapped(mm: &mut Mm, memory: &mut DeviceMemory, bytes: &[u8]) -> CheckResult<()> {
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

fn same_bytes(what: &str, expected: &[u8], seen: &[u8]) -> CheckResult<()> {
    pattern::compare(expected, seen).map_err(|m| Failure::new(what.to_owned(), m.to_string()))
}

/// `len` bytes of the 32-bit little-endian `value`.
fn filled(value: u32, len: usize) -> Vec<u8> {
    value
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

fn read_raw(buffer: &impl RawBytes) -> CheckResult<Vec<u8>> {
    buffer
        .read(0, buffer.len())
        .map_err(|e| Failure::op("reading the buffer", e))
}

fn write_raw(buffer: &impl RawBytes, bytes: &[u8]) -> CheckResult<()> {
    buffer
        .write(0, bytes)
        .map_err(|e| Failure::op("writing the buffer", e))
}

/// Reads a whole dma-buf mapping between `DMA_BUF_IOCTL_SYNC` start and end.
fn read_view(view: &SharedMapping, dma_buf: BorrowedFd<'_>) -> CheckResult<Vec<u8>> {
    io_op(
        "DMA_BUF_IOCTL_SYNC",
        dma_buf::with_cpu_access(dma_buf, || view.read_all()),
    )
}

fn write_view(view: &SharedMapping, dma_buf: BorrowedFd<'_>, bytes: &[u8]) -> CheckResult<()> {
    io_op(
        "DMA_BUF_IOCTL_SYNC",
        dma_buf::with_cpu_access(dma_buf, || view.write(0, bytes)),
    )?
    .map_err(|e| Failure::op("writing the mapping", e))
}

fn dup(fd: BorrowedFd<'_>) -> CheckResult<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| Failure::op("F_DUPFD_CLOEXEC", e))
}

fn map_fd(fd: BorrowedFd<'_>, len: usize) -> CheckResult<SharedMapping> {
    io_op("mmap", SharedMapping::new(fd, 0, len))
}

// ---- plain allocations ------------------------------------------------------------------

fn plain(ktap: &mut Ktap, env: &mut Option<Env>) {
    let what = "allocate: two 64 KiB device allocations are bound at distinct 4 KiB-aligned VAs in [2 MiB, 2^48) (VM_QUERY: mapped, writable); LIVE_OBJECTS +2, BINDINGS +2";
    let mut pair = ktap.check_after(what, env.as_mut(), |env| {
        let a = allocate(&mut env.mm, &plain_request(SIZE, Types::empty()))?;
        let b = match allocate(&mut env.mm, &plain_request(SIZE, Types::empty())) {
            Ok(b) => b,
            Err(f) => {
                env.mm.free(a);
                return Err(f);
            }
        };
        let checked = (|| {
            for memory in [&a, &b] {
                expect_eq("origin", memory.origin(), Origin::Allocated)?;
                expect_eq("size", memory.size(), SIZE)?;
                let at = va(memory);
                if at < VA_START
                    || at % PAGE != 0
                    || at.checked_add(SIZE).is_none_or(|e| e > 1 << 48)
                {
                    return Err(Failure::new(
                        "a 4 KiB-aligned VA range in [2 MiB, 2^48)",
                        format!("{at:#x}"),
                    ));
                }
                let query = env
                    .mm
                    .backend_mut()
                    .query(memory.gpu_va())
                    .map_err(|e| Failure::op("VM_QUERY", e))?;
                if !matches!(query, Some((_, false))) {
                    return Err(Failure::new(
                        format!("{at:#x} mapped read-write"),
                        format!("{query:?}"),
                    ));
                }
            }
            if va(&a).abs_diff(va(&b)) < SIZE {
                return Err(Failure::new(
                    "non-overlapping VA ranges",
                    format!("{:#x} and {:#x}", va(&a), va(&b)),
                ));
            }
            expect_held(env, |base| Counters {
                live_objects: base.live_objects + 2,
                bindings: base.bindings + 2,
                ..base
            })
        })();
        match checked {
            Ok(()) => Ok((a, b)),
            Err(f) => {
                env.mm.free(a);
                env.mm.free(b);
                Err(f)
            }
        }
    });

    let what = "map (mmap at the GEM_INFO offset) twice gives the same pointer; CPU-written bytes, EXEC COPY from the first's gpu_va() to the second's, read back through the second's map";
    ktap.check_after(what, env.as_mut().zip(pair.as_mut()), |(env, (a, b))| {
        let first = vk_op("map", env.mm.map(a))?;
        let again = vk_op("map again", env.mm.map(a))?;
        expect_eq("second map", again, first)?;
        let expected = pattern::bytes(1, SIZE_LEN);
        write_mapped(&mut env.mm, a, &expected)?;
        exec(&mut env.mm, &[guest_vgpu::copy(va(a), va(b), SIZE)])?;
        let seen = read_mapped(&mut env.mm, b, SIZE_LEN)?;
        same_bytes(
            "the first allocation's bytes, copied by the GPU",
            &expected,
            &seen,
        )
    });

    let what = "free: both freed, their VAs unmapped (VM_QUERY), the manager holds no handle, LIVE_OBJECTS / BINDINGS / PINNED_PAGES / ATTACHMENTS back at the start";
    ktap.check_after(what, env.as_mut().zip(pair.take()), |(env, (a, b))| {
        let vas = [a.gpu_va(), b.gpu_va()];
        env.mm.free(a);
        env.mm.free(b);
        for at in vas {
            let query = env
                .mm
                .backend_mut()
                .query(at)
                .map_err(|e| Failure::op("VM_QUERY", e))?;
            expect_eq(&format!("VM_QUERY at {at}"), query, None)?;
        }
        expect_idle(env)
    });

    let what = "allocate refuses allocationSize 0 (VUID 07897) and memoryTypeIndex 2 (VUID 01714); counters unchanged";
    ktap.check_after(what, env.as_mut(), |env| {
        let zero = env.mm.allocate(&plain_request(0, Types::empty()));
        expect_vuid(&mut env.mm, "allocationSize 0", zero, Vuid::SizeNonZero)?;
        let bad_type = env.mm.allocate(&AllocRequest {
            memory_type_index: MEMORY_TYPE_COUNT,
            ..plain_request(SIZE, Types::empty())
        });
        expect_vuid(
            &mut env.mm,
            "memoryTypeIndex 2",
            bad_type,
            Vuid::MemoryTypeIndex,
        )?;
        expect_idle(env)
    });
}

// ---- host pointers ----------------------------------------------------------------------

fn host_pointers(ktap: &mut Ktap, env: &mut Option<Env>) {
    let host = Types::HOST_ALLOCATION_EXT;
    let what = "host_pointer_properties(HOST_ALLOCATION) of a 4 KiB-aligned heap buffer and of an anonymous mmap: memoryTypeBits 0b10 (the host type)";
    ktap.check_after(what, env.as_mut(), |env| {
        let heap = io_op("aligned heap buffer", HeapBuffer::new(SIZE_LEN, PAGE_LEN))?;
        let anon = io_op("anonymous mmap", AnonMapping::read_write(SIZE_LEN))?;
        for (name, addr) in [("heap", heap.addr()), ("mmap", anon.addr())] {
            let bits = vk_op(
                format!("host_pointer_properties of the {name} pointer"),
                env.mm.host_pointer_properties(host, HostVa::new(addr)),
            )?;
            expect_eq(
                &format!("memoryTypeBits ({name})"),
                bits,
                HOST_POINTER_TYPES,
            )?;
        }
        expect_idle(env)
    });

    let what = "host_pointer_properties of an unmapped page (mmap then munmap) is InvalidHandle (VK_ERROR_INVALID_EXTERNAL_HANDLE), nothing pinned";
    ktap.check_after(what, env.as_mut(), |env| {
        let hole = io_op(
            "reserving and unmapping a page",
            host_memory::unmapped_range(PAGE_LEN),
        )?;
        let result = env.mm.host_pointer_properties(host, HostVa::new(hole));
        expect_error(
            &mut env.mm,
            "host_pointer_properties of the unmapped page",
            result,
            "Error::InvalidHandle(HostRangeRefused)",
            |e| {
                matches!(
                    e,
                    Error::InvalidHandle(HandleError::HostRangeRefused { .. })
                ) && e.result() == vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
            },
        )?;
        expect_idle(env)
    });

    let what = "host_pointer_properties: a pointer 64 bytes past alignment is VUID 01753, handleType OPAQUE_FD is VUID 01752";
    ktap.check_after(what, env.as_mut(), |env| {
        let heap = io_op("aligned heap buffer", HeapBuffer::new(SIZE_LEN, PAGE_LEN))?;
        let misaligned = env
            .mm
            .host_pointer_properties(host, HostVa::new(heap.addr() + 64));
        expect_vuid(
            &mut env.mm,
            "a misaligned pointer",
            misaligned,
            Vuid::HostPropsPointerAligned,
        )?;
        let opaque = env
            .mm
            .host_pointer_properties(Types::OPAQUE_FD, HostVa::new(heap.addr()));
        expect_vuid(
            &mut env.mm,
            "handleType OPAQUE_FD",
            opaque,
            Vuid::HostPropsHandleType,
        )
    });

    let heap = HeapBuffer::new(SIZE_LEN, PAGE_LEN);
    let what = "Import::HostPointer of a 64 KiB heap buffer: origin Host { ptr, Pinned }, map returns the original pointer; LIVE_OBJECTS +1, BINDINGS +1, PINNED_PAGES +16";
    let mut imported = ktap.check_after(what, env.as_mut(), |env| {
        let heap = heap
            .as_ref()
            .map_err(|e| Failure::op("aligned heap buffer", e))?;
        let mut memory = allocate(&mut env.mm, &host_request(host, heap.addr(), SIZE))?;
        let checked = (|| {
            expect_eq(
                "origin",
                memory.origin(),
                Origin::Host {
                    ptr: HostVa::new(heap.addr()),
                    kind: HostImport::Pinned,
                },
            )?;
            let mapped = vk_op("map", env.mm.map(&mut memory))?;
            expect_eq("map of the import", mapped.get(), heap.addr())?;
            expect_held(env, |base| Counters {
                live_objects: base.live_objects + 1,
                bindings: base.bindings + 1,
                pinned_pages: base.pinned_pages + SIZE / PAGE,
                ..base
            })
        })();
        match checked {
            Ok(()) => Ok(memory),
            Err(f) => {
                env.mm.free(memory);
                Err(f)
            }
        }
    });

    let what = "host import: a GPU FILL into it is what the CPU reads from the buffer; bytes the CPU writes there are what an EXEC COPY into device memory gives";
    let heap_ok = heap.as_ref().ok();
    ktap.check_after(
        what,
        env.as_mut().zip(imported.as_mut()).zip(heap_ok),
        |((env, memory), heap)| {
            exec(
                &mut env.mm,
                &[guest_vgpu::fill(va(memory), 0x600d_f111, SIZE)],
            )?;
            same_bytes(
                "the GPU's fill, read from the heap buffer",
                &filled(0x600d_f111, SIZE_LEN),
                &read_raw(heap)?,
            )?;
            let expected = pattern::bytes(2, SIZE_LEN);
            write_raw(heap, &expected)?;
            let src = va(memory);
            with_memory(
                &mut env.mm,
                &plain_request(SIZE, Types::empty()),
                |mm, target| {
                    exec(mm, &[guest_vgpu::copy(src, va(target), SIZE)])?;
                    let seen = read_mapped(mm, target, SIZE_LEN)?;
                    same_bytes(
                        "the heap buffer's bytes, copied by the GPU",
                        &expected,
                        &seen,
                    )
                },
            )
        },
    );

    let what = "host import freed: pages unpinned, every counter back at the start";
    ktap.check_after(what, env.as_mut().zip(imported.take()), |(env, memory)| {
        env.mm.free(memory);
        expect_idle(env)
    });
    drop(heap);

    let what = "Import::HostPointer refusals: pointer +64 (VUID 01749), size 64 KiB + 64 (VUID 01745), memory type 0 (VUID 01744), handleType DMA_BUF (VUID 01747), an unmapped range (InvalidHandle); counters unchanged";
    ktap.check_after(what, env.as_mut(), |env| {
        let heap = io_op(
            "aligned heap buffer",
            HeapBuffer::new(2 * SIZE_LEN, PAGE_LEN),
        )?;
        let addr = heap.addr();
        let mm = &mut env.mm;
        let result = mm.allocate(&host_request(host, addr + 64, SIZE));
        expect_vuid(mm, "a misaligned pointer", result, Vuid::HostPointerAligned)?;
        let result = mm.allocate(&host_request(host, addr, SIZE + 64));
        expect_vuid(mm, "a misaligned size", result, Vuid::HostSizeAligned)?;
        let result = mm.allocate(&AllocRequest {
            memory_type_index: TYPE_DEVICE,
            ..host_request(host, addr, SIZE)
        });
        expect_vuid(mm, "memory type 0", result, Vuid::HostMemoryType)?;
        let result = mm.allocate(&host_request(Types::DMA_BUF_EXT, addr, SIZE));
        expect_vuid(mm, "handleType DMA_BUF", result, Vuid::HostHandleType)?;
        let hole = io_op("an unmapped range", host_memory::unmapped_range(SIZE_LEN))?;
        let result = mm.allocate(&host_request(host, hole, SIZE));
        expect_error(
            mm,
            "an unmapped range",
            result,
            "Error::InvalidHandle(HostRangeRefused)",
            |e| {
                matches!(
                    e,
                    Error::InvalidHandle(HandleError::HostRangeRefused { .. })
                )
            },
        )?;
        expect_idle(env)
    });

    let what = "the same anonymous mmap imported twice: two DeviceMemory with their own handles and VAs, both usable; a FILL through one is read through the other's map; freeing one keeps the other working";
    ktap.check_after(what, env.as_mut(), |env| {
        let anon = io_op("anonymous mmap", AnonMapping::read_write(SIZE_LEN))?;
        let req = host_request(host, anon.addr(), SIZE);
        let first = allocate(&mut env.mm, &req)?;
        let second = match allocate(&mut env.mm, &req) {
            Ok(second) => second,
            Err(f) => {
                env.mm.free(first);
                return Err(f);
            }
        };
        let mut second = Some(second);
        let mut first = Some(first);
        let result = (|| {
            let (a, b) = match (first.as_mut(), second.as_mut()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(Failure::new("both imports", "one missing")),
            };
            if a.handle() == b.handle() || va(a) == va(b) {
                return Err(Failure::new(
                    "two GEM objects at two VAs",
                    format!("{a:?} and {b:?}"),
                ));
            }
            expect_held(env, |base| Counters {
                live_objects: base.live_objects + 2,
                bindings: base.bindings + 2,
                pinned_pages: base.pinned_pages + 2 * (SIZE / PAGE),
                ..base
            })?;
            exec(&mut env.mm, &[guest_vgpu::fill(va(a), 0x0001_1111, SIZE)])?;
            let seen = read_mapped(&mut env.mm, b, SIZE_LEN)?;
            same_bytes(
                "the first import's fill, through the second's map",
                &filled(0x0001_1111, SIZE_LEN),
                &seen,
            )?;
            if let Some(a) = first.take() {
                env.mm.free(a);
            }
            let b = second
                .as_mut()
                .ok_or_else(|| Failure::new("the second import", "gone"))?;
            exec(&mut env.mm, &[guest_vgpu::fill(va(b), 0x0002_2222, SIZE)])?;
            same_bytes(
                "the second import's fill after the first was freed, in the mmap",
                &filled(0x0002_2222, SIZE_LEN),
                &read_raw(&anon)?,
            )
        })();
        for memory in [first, second].into_iter().flatten() {
            env.mm.free(memory);
        }
        result?;
        expect_idle(env)
    });
}

// ---- host-mapped foreign memory ---------------------------------------------------------

fn foreign(ktap: &mut Ktap, env: &mut Option<Env>, vgem: Option<&DrmNode>) {
    let what = "HOST_MAPPED_FOREIGN_MEMORY: host_pointer_properties of an mmap of a vgem dma-buf is 0b10; its import has origin Host { ptr, Foreign }, map returns the pointer; 1 attachment more, no pages pinned";
    let mut imported = ktap.check_after(what, env.as_mut().zip(vgem), |(env, vgem)| {
        let fd = vgem.dumb_dma_buf(SIZE)?;
        let view = map_fd(fd.as_fd(), SIZE_LEN)?;
        let ptr = HostVa::new(view.addr());
        let foreign = Types::HOST_MAPPED_FOREIGN_MEMORY_EXT;
        let bits = vk_op(
            "host_pointer_properties(HOST_MAPPED_FOREIGN_MEMORY)",
            env.mm.host_pointer_properties(foreign, ptr),
        )?;
        expect_eq("memoryTypeBits", bits, HOST_POINTER_TYPES)?;
        let mut memory = allocate(&mut env.mm, &host_request(foreign, view.addr(), SIZE))?;
        let checked = (|| {
            expect_eq(
                "origin",
                memory.origin(),
                Origin::Host {
                    ptr,
                    kind: HostImport::Foreign,
                },
            )?;
            expect_eq("map", vk_op("map", env.mm.map(&mut memory))?, ptr)?;
            expect_held(env, |base| Counters {
                live_objects: base.live_objects + 1,
                bindings: base.bindings + 1,
                attachments: base.attachments + 1,
                ..base
            })
        })();
        match checked {
            Ok(()) => Ok((memory, view, fd)),
            Err(f) => {
                env.mm.free(memory);
                Err(f)
            }
        }
    });

    let what = "foreign import: an EXEC COPY out of it gives the bytes the CPU wrote through the dma-buf mapping; a GPU FILL into it shows there; freed, the counters are back";
    ktap.check_after(
        what,
        env.as_mut().zip(imported.take()),
        |(env, (memory, view, fd))| {
            let result = (|| {
                let expected = pattern::bytes(3, SIZE_LEN);
                write_view(&view, fd.as_fd(), &expected)?;
                let src = va(&memory);
                with_memory(
                    &mut env.mm,
                    &plain_request(SIZE, Types::empty()),
                    |mm, target| {
                        exec(mm, &[guest_vgpu::copy(src, va(target), SIZE)])?;
                        let seen = read_mapped(mm, target, SIZE_LEN)?;
                        same_bytes("the dma-buf's bytes, copied by the GPU", &expected, &seen)
                    },
                )?;
                exec(&mut env.mm, &[guest_vgpu::fill(src, 0xf0e1_d2c3, SIZE)])?;
                same_bytes(
                    "the GPU's fill, through the dma-buf mapping",
                    &filled(0xf0e1_d2c3, SIZE_LEN),
                    &read_view(&view, fd.as_fd())?,
                )
            })();
            env.mm.free(memory);
            drop((view, fd));
            result?;
            expect_idle(env)
        },
    );
}

// ---- fd export --------------------------------------------------------------------------

fn exports(ktap: &mut Ktap, env: &mut Option<Env>) {
    for (name, handle_type) in [
        ("DMA_BUF", Types::DMA_BUF_EXT),
        ("OPAQUE_FD", Types::OPAQUE_FD),
    ] {
        let what = format!("get_fd({name}) of an allocation exported as DMA_BUF | OPAQUE_FD: a new fd each call, FD_CLOEXEC set, lseek(SEEK_END) = 64 KiB, both the same dma-buf");
        ktap.check_after(&what, env.as_mut(), |env| {
            let req = plain_request(SIZE, Types::DMA_BUF_EXT | Types::OPAQUE_FD);
            with_memory(&mut env.mm, &req, |mm, memory| {
                let first = vk_op("get_fd", mm.get_fd(memory, handle_type))?;
                let second = vk_op("get_fd again", mm.get_fd(memory, handle_type))?;
                if first.as_raw_fd() == second.as_raw_fd() {
                    return Err(Failure::new("two fd numbers", "the same one twice"));
                }
                for fd in [&first, &second] {
                    let flags =
                        rustix::io::fcntl_getfd(fd).map_err(|e| Failure::op("F_GETFD", e))?;
                    expect_eq("FD_CLOEXEC", flags.contains(FdFlags::CLOEXEC), true)?;
                    let size = io_op("lseek(SEEK_END)", dma_buf::size_by_seek(fd.as_fd()))?;
                    expect_eq("size", size, SIZE)?;
                }
                let ids = (
                    io_op("fstat", dma_buf::identity(first.as_fd()))?,
                    io_op("fstat", dma_buf::identity(second.as_fd()))?,
                );
                expect_eq("second fd's dma-buf", ids.1, ids.0)
            })?;
            expect_idle(env)
        });
    }

    let what = "get_fd refusals: OPAQUE_FD of memory exported only as DMA_BUF is VUID 00671, HOST_ALLOCATION is VUID 00672";
    ktap.check_after(what, env.as_mut(), |env| {
        with_memory(
            &mut env.mm,
            &plain_request(SIZE, Types::DMA_BUF_EXT),
            |mm, memory| {
                let result = mm.get_fd(memory, Types::OPAQUE_FD);
                expect_vuid(mm, "OPAQUE_FD not exported", result, Vuid::GetFdExported)?;
                let result = mm.get_fd(memory, Types::HOST_ALLOCATION_EXT);
                expect_vuid(mm, "HOST_ALLOCATION", result, Vuid::GetFdHandleType)
            },
        )?;
        expect_idle(env)
    });
}

// ---- fd import --------------------------------------------------------------------------

fn imports(ktap: &mut Ktap, env: &mut Option<Env>, vgem: Option<&DrmNode>) {
    let dma = Types::DMA_BUF_EXT;
    let what = "Import::Fd(DMA_BUF) of a vgem dma-buf: takes (closes) the fd, origin Fd(DMA_BUF); 1 object, 1 attachment, 1 binding more; a GPU FILL shows in the dma-buf's mmap";
    let mut from_vgem = ktap.check_after(what, env.as_mut().zip(vgem), |(env, vgem)| {
        let fd = vgem.dumb_dma_buf(SIZE)?;
        let view = map_fd(fd.as_fd(), SIZE_LEN)?;
        let keep = dup(fd.as_fd())?;
        let memory = import_fd_ok(&mut env.mm, dma, fd, SIZE, TYPE_DEVICE)?;
        let checked = (|| {
            expect_eq("origin", memory.origin(), Origin::Fd(dma))?;
            expect_held(env, |base| Counters {
                live_objects: base.live_objects + 1,
                attachments: base.attachments + 1,
                bindings: base.bindings + 1,
                ..base
            })?;
            exec(
                &mut env.mm,
                &[guest_vgpu::fill(va(&memory), 0x7e57_0001, SIZE)],
            )?;
            same_bytes(
                "the GPU's fill, through the dma-buf mapping",
                &filled(0x7e57_0001, SIZE_LEN),
                &read_view(&view, keep.as_fd())?,
            )
        })();
        match checked {
            Ok(()) => Ok((memory, view, keep)),
            Err(f) => {
                env.mm.free(memory);
                Err(f)
            }
        }
    });

    let what = "map of the imported vgem dma-buf (memory type 0, HOST_VISIBLE): the CPU reads the GPU's fill and its writes reach the dma-buf's own mapping";
    ktap.check_after(
        what,
        env.as_mut().zip(from_vgem.as_mut()),
        |(env, (memory, view, keep))| {
            let seen = read_mapped(&mut env.mm, memory, SIZE_LEN)?;
            same_bytes(
                "the GPU's fill, through map",
                &filled(0x7e57_0001, SIZE_LEN),
                &seen,
            )?;
            let expected = pattern::bytes(4, SIZE_LEN);
            write_mapped(&mut env.mm, memory, &expected)?;
            same_bytes(
                "bytes written through map, in the dma-buf mapping",
                &expected,
                &read_view(view, keep.as_fd())?,
            )
        },
    );
    if let (Some(env), Some((memory, _, _))) = (env.as_mut(), from_vgem.take()) {
        env.mm.free(memory);
    }

    let what = "Import::Fd(DMA_BUF) of a udmabuf: takes the fd; a GPU FILL shows in the memfd's mapping; freed, the counters are back";
    ktap.check_after(what, env.as_mut(), |env| {
        let (memfd, fd) = io_op(
            "a udmabuf over a sealed memfd",
            udmabuf::over_sealed_memfd("core-flows", SIZE),
        )?;
        let view = map_fd(memfd.as_fd(), SIZE_LEN)?;
        let memory = import_fd_ok(&mut env.mm, dma, fd, SIZE, TYPE_HOST)?;
        let result = (|| {
            expect_eq("origin", memory.origin(), Origin::Fd(dma))?;
            exec(
                &mut env.mm,
                &[guest_vgpu::fill(va(&memory), 0x7e57_0002, SIZE)],
            )?;
            same_bytes(
                "the GPU's fill, through the memfd mapping",
                &filled(0x7e57_0002, SIZE_LEN),
                &view.read_all(),
            )
        })();
        env.mm.free(memory);
        result?;
        expect_idle(env)
    });

    let what = "a failed Import::Fd (allocationSize 128 KiB, the vgem dma-buf has 64 KiB) is InvalidHandle(TooSmall) and leaves the fd open and the counters unchanged";
    ktap.check_after(what, env.as_mut().zip(vgem), |(env, vgem)| {
        let fd = vgem.dumb_dma_buf(SIZE)?;
        let (result, back, raw) = import_fd(&mut env.mm, dma, fd, 2 * SIZE, TYPE_DEVICE);
        expect_error(
            &mut env.mm,
            "the import",
            result,
            "InvalidHandle(TooSmall { have: 64 KiB, want: 128 KiB })",
            |e| {
                *e == Error::InvalidHandle(HandleError::TooSmall {
                    have: SIZE,
                    want: 2 * SIZE,
                })
            },
        )?;
        expect_eq("fd still open (F_GETFD)", fd_state(raw), Ok(true))?;
        drop(back);
        expect_idle(env)
    });

    let what = "one dma-buf imported twice: two DeviceMemory with the same GEM handle (1 object and 1 attachment more, 2 bindings); freeing one keeps the other working";
    ktap.check_after(what, env.as_mut().zip(vgem), |(env, vgem)| {
        let fd = vgem.dumb_dma_buf(SIZE)?;
        let view = map_fd(fd.as_fd(), SIZE_LEN)?;
        let keep = dup(fd.as_fd())?;
        let second_fd = dup(fd.as_fd())?;
        let first = import_fd_ok(&mut env.mm, dma, fd, SIZE, TYPE_DEVICE)?;
        let second = match import_fd_ok(&mut env.mm, dma, second_fd, SIZE, TYPE_DEVICE) {
            Ok(second) => second,
            Err(f) => {
                env.mm.free(first);
                return Err(f);
            }
        };
        let second = Some(second);
        let mut first = Some(first);
        let result = (|| {
            let (a, b) = match (first.as_ref(), second.as_ref()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(Failure::new("both imports", "one missing")),
            };
            expect_eq("second import's handle", b.handle(), a.handle())?;
            expect_eq("live GEM handles", env.mm.live_handles(), 1)?;
            expect_held(env, |base| Counters {
                live_objects: base.live_objects + 1,
                attachments: base.attachments + 1,
                bindings: base.bindings + 2,
                ..base
            })?;
            if let Some(a) = first.take() {
                env.mm.free(a);
            }
            let b = second
                .as_ref()
                .ok_or_else(|| Failure::new("the second import", "gone"))?;
            exec(&mut env.mm, &[guest_vgpu::fill(va(b), 0x7e57_0003, SIZE)])?;
            same_bytes(
                "the second import's fill after the first was freed",
                &filled(0x7e57_0003, SIZE_LEN),
                &read_view(&view, keep.as_fd())?,
            )?;
            expect_held(env, |base| Counters {
                live_objects: base.live_objects + 1,
                attachments: base.attachments + 1,
                bindings: base.bindings + 1,
                ..base
            })
        })();
        for memory in [first, second].into_iter().flatten() {
            env.mm.free(memory);
        }
        result?;
        expect_idle(env)
    });

    let what = "Import::Fd(OPAQUE_FD) of a vgem dma-buf (another device) is VUID 00668 (FdSameDevice); the fd stays open, the counters unchanged";
    ktap.check_after(what, env.as_mut().zip(vgem), |(env, vgem)| {
        let fd = vgem.dumb_dma_buf(SIZE)?;
        let (result, back, raw) = import_fd(&mut env.mm, Types::OPAQUE_FD, fd, SIZE, TYPE_DEVICE);
        expect_vuid(&mut env.mm, "the import", result, Vuid::FdSameDevice)?;
        expect_eq("fd still open (F_GETFD)", fd_state(raw), Ok(true))?;
        drop(back);
        expect_idle(env)
    });

    let what = "Import::Fd(OPAQUE_FD) of our own export: takes the fd, the same GEM handle as the exported memory, the same bytes; freeing the import keeps the original working";
    ktap.check_after(what, env.as_mut(), |env| {
        let req = plain_request(SIZE, Types::OPAQUE_FD);
        with_memory(&mut env.mm, &req, |mm, source| {
            let expected = pattern::bytes(5, SIZE_LEN);
            write_mapped(mm, source, &expected)?;
            let fd = vk_op("get_fd(OPAQUE_FD)", mm.get_fd(source, Types::OPAQUE_FD))?;
            let mut imported = import_fd_ok(mm, Types::OPAQUE_FD, fd, SIZE, TYPE_DEVICE)?;
            let result = (|| {
                expect_eq("imported handle", imported.handle(), source.handle())?;
                expect_eq("origin", imported.origin(), Origin::Fd(Types::OPAQUE_FD))?;
                let seen = read_mapped(mm, &mut imported, SIZE_LEN)?;
                same_bytes(
                    "the source's bytes through the import's map",
                    &expected,
                    &seen,
                )?;
                exec(mm, &[guest_vgpu::fill(va(&imported), 0x7e57_0004, SIZE)])?;
                let seen = read_mapped(mm, source, SIZE_LEN)?;
                same_bytes(
                    "the import's fill, in the source",
                    &filled(0x7e57_0004, SIZE_LEN),
                    &seen,
                )
            })();
            mm.free(imported);
            result?;
            exec(mm, &[guest_vgpu::fill(va(source), 0x7e57_0005, SIZE)])?;
            let seen = read_mapped(mm, source, SIZE_LEN)?;
            same_bytes(
                "a fill of the source after the import was freed",
                &filled(0x7e57_0005, SIZE_LEN),
                &seen,
            )
        })?;
        expect_idle(env)
    });
}

// ---- fd properties ----------------------------------------------------------------------

fn fd_properties(ktap: &mut Ktap, env: &mut Option<Env>, vgem: Option<&DrmNode>) {
    let what = "fd_properties(OPAQUE_FD) is VUID 00674 (FdPropsNotOpaque), even for a valid export";
    ktap.check_after(what, env.as_mut(), |env| {
        with_memory(
            &mut env.mm,
            &plain_request(SIZE, Types::OPAQUE_FD),
            |mm, memory| {
                let fd = vk_op("get_fd", mm.get_fd(memory, Types::OPAQUE_FD))?;
                let result = mm.fd_properties(Types::OPAQUE_FD, fd.as_fd());
                expect_vuid(
                    mm,
                    "fd_properties(OPAQUE_FD)",
                    result,
                    Vuid::FdPropsNotOpaque,
                )
            },
        )?;
        expect_idle(env)
    });

    let what = "fd_properties(DMA_BUF) of a vgem dma-buf and of a udmabuf: memoryTypeBits 0b11; nothing kept (counters unchanged)";
    ktap.check_after(what, env.as_mut().zip(vgem), |(env, vgem)| {
        let from_vgem = vgem.dumb_dma_buf(SIZE)?;
        let (_memfd, from_udmabuf) = io_op(
            "a udmabuf over a sealed memfd",
            udmabuf::over_sealed_memfd("core-flows", SIZE),
        )?;
        for (name, fd) in [("vgem", &from_vgem), ("udmabuf", &from_udmabuf)] {
            let bits = vk_op(
                format!("fd_properties of the {name} dma-buf"),
                env.mm.fd_properties(Types::DMA_BUF_EXT, fd.as_fd()),
            )?;
            expect_eq(&format!("memoryTypeBits ({name})"), bits, DMA_BUF_TYPES)?;
        }
        expect_idle(env)
    });

    let what = "fd_properties(DMA_BUF) of a pipe is VUID 00673 (FdPropsValid)";
    ktap.check_after(what, env.as_mut(), |env| {
        let (read_end, _write_end) = rustix::pipe::pipe().map_err(|e| Failure::op("pipe", e))?;
        let result = env.mm.fd_properties(Types::DMA_BUF_EXT, read_end.as_fd());
        expect_vuid(
            &mut env.mm,
            "fd_properties of a pipe",
            result,
            Vuid::FdPropsValid,
        )?;
        expect_idle(env)
    });
}

// ---- two processes ----------------------------------------------------------------------

/// What the parent sends with the fd: handle type, seed (of the pattern the child must see
/// and the value it fills with) and size, little-endian.
const MESSAGE_LEN: usize = 16;

fn encode(handle_type: Types, seed: u32, size: u64) -> [u8; MESSAGE_LEN] {
    let mut message = [0_u8; MESSAGE_LEN];
    message[..4].copy_from_slice(&handle_type.as_raw().to_le_bytes());
    message[4..8].copy_from_slice(&seed.to_le_bytes());
    message[8..].copy_from_slice(&size.to_le_bytes());
    message
}

fn decode(message: &[u8; MESSAGE_LEN]) -> (Types, u32, u64) {
    let [a, b, c, d, e, f, g, h, rest @ ..] = *message;
    (
        Types::from_raw(u32::from_le_bytes([a, b, c, d])),
        u32::from_le_bytes([e, f, g, h]),
        u64::from_le_bytes(rest),
    )
}

fn two_processes(ktap: &mut Ktap, env: &mut Option<Env>) {
    for (name, handle_type, seed) in [
        ("an opaque fd", Types::OPAQUE_FD, 0x0c0f_fee1_u32),
        ("a dma-buf", Types::DMA_BUF_EXT, 0x0c0f_fee2_u32),
    ] {
        let what = format!("{name} sent over a unix socket (SCM_RIGHTS) to a child process: its own node and MemoryManager import it, see the parent's bytes, FILL it through the GPU and exit 0; the parent sees the fill");
        ktap.check_after(&what, env.as_mut(), |env| {
            let req = plain_request(SIZE, handle_type);
            with_memory(&mut env.mm, &req, |mm, memory| {
                write_mapped(mm, memory, &pattern::bytes(u64::from(seed), SIZE_LEN))?;
                let fd = vk_op("get_fd", mm.get_fd(memory, handle_type))?;
                run_child(fd, encode(handle_type, seed, SIZE))?;
                let seen = read_mapped(mm, memory, SIZE_LEN)?;
                same_bytes("the child's fill", &filled(seed, SIZE_LEN), &seen)
            })?;
            expect_idle(env)
        });
    }
}

/// Starts `core-flows child-import` with one end of a socket pair as its stdin, sends `fd`
/// and `message` over the other, and waits for it to exit 0.
fn run_child(fd: OwnedFd, message: [u8; MESSAGE_LEN]) -> CheckResult<()> {
    let (parent_end, child_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Failure::op("socketpair", e))?;
    let exe = io_op("current_exe", std::env::current_exe())?;
    let child = Command::new(exe)
        .arg("child-import")
        .stdin(Stdio::from(child_end))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::op("spawning core-flows child-import", e))?;
    let fds = [fd.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let sent = if control.push(SendAncillaryMessage::ScmRights(&fds)) {
        rustix::net::sendmsg(
            &parent_end,
            &[IoSlice::new(&message)],
            &mut control,
            SendFlags::empty(),
        )
        .map_err(|e| Failure::op("sendmsg(SCM_RIGHTS)", e))
    } else {
        Err(Failure::new(
            "room for one fd in the control buffer",
            "none",
        ))
    };
    // The child has its own reference now; ours goes.
    drop(fd);
    drop(parent_end);
    let output = io_op("waiting for the child", child.wait_with_output())?;
    let sent = sent?;
    expect_eq("bytes sent", sent, MESSAGE_LEN)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Failure::new(
            "the child exits 0",
            format!(
                "{}: {} {}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ))
    }
}

/// The child: receives an fd, imports it into its own manager, checks the parent's pattern,
/// fills the memory. Failures go to stderr, for the parent's diagnostic.
fn child_import() -> ExitCode {
    match child_flow() {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("child expected: {}; seen: {}", f.expected, f.seen);
            ExitCode::FAILURE
        }
    }
}

fn child_flow() -> CheckResult<()> {
    let stdin = io::stdin();
    let mut message = [0_u8; MESSAGE_LEN];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        stdin.as_fd(),
        &mut [IoSliceMut::new(&mut message)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| Failure::op("recvmsg", e))?;
    expect_eq("bytes received", received.bytes, MESSAGE_LEN)?;
    let fd = control
        .drain()
        .find_map(|m| match m {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
        .ok_or_else(|| Failure::new("an fd in SCM_RIGHTS", "no fd"))?;
    let (handle_type, seed, size) = decode(&message);
    let len = usize::try_from(size).map_err(|_| Failure::new("a small size", size.to_string()))?;
    let (node, path) = find_node()?;
    let mut mm = manager(node, &path)?;
    let mut memory = import_fd_ok(&mut mm, handle_type, fd, size, TYPE_DEVICE)?;
    let result = (|| {
        let seen = read_mapped(&mut mm, &mut memory, len)?;
        same_bytes(
            "the parent's bytes, through the child's map",
            &pattern::bytes(u64::from(seed), len),
            &seen,
        )?;
        exec(&mut mm, &[guest_vgpu::fill(va(&memory), seed, size)])
    })();
    mm.free(memory);
    result?;
    expect_eq("live GEM handles in the child", mm.live_handles(), 0)
}
