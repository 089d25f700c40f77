//! What several check groups use: device calls that turn an errno into a [`Failure`] naming
//! the call, object set-up, byte comparisons and the rejection check.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};

use extmem_guest_tests::device_snapshot::{
    counters, errno_name, expect_counters, expect_errno, expect_snapshot, op, snapshot, Snapshot,
};
use extmem_guest_tests::dri::GemHandle;
use extmem_guest_tests::exporters::{self, Exporter};
use extmem_guest_tests::host_memory::{self, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::vgpu::{self, Counters, Vgpu};
use extmem_guest_tests::{dma_buf, pattern};
use extmem_uapi::{Cmd, GemInfo, GemUserptr, ObjectKind, FLAG_READ_ONLY};
use rustix::io::Errno;

use crate::Ktap;

/// The guest's RAM in bytes (what the module's device budget is 3/4 of).
#[allow(
    clippy::useless_conversion,
    reason = "sysinfo's fields are u32 on 32-bit targets"
)]
pub(crate) fn ram_bytes() -> u64 {
    let info = rustix::system::sysinfo();
    u64::from(info.totalram).saturating_mul(u64::from(info.mem_unit.max(1)))
}

/// `expected` with the page-table pages of `now`: a VM keeps the tables it grew until the
/// file closes, so group cleanups compare everything else.
pub(crate) fn tables_aside(expected: Snapshot, now: Snapshot) -> Snapshot {
    Snapshot {
        counters: Counters {
            pt_pages: now.counters.pt_pages,
            ..expected.counters
        },
        ..expected
    }
}

/// A group's closing check: everything but the page tables is back to `start`.
pub(crate) fn back_to_start(gpu: &Vgpu, start: Snapshot) -> CheckResult<()> {
    let now = snapshot(gpu)?;
    expect_snapshot(now, tables_aside(start, now))
}

/// A rejection: `attempt` fails with `expected`, and neither the device counters nor the
/// kernel's pins and attachments move.
pub(crate) fn rejected<T: fmt::Debug>(
    gpu: &Vgpu,
    what: &str,
    expected: Errno,
    attempt: impl FnOnce() -> Result<T, Errno>,
) -> CheckResult<()> {
    let before = snapshot(gpu)?;
    let result = attempt();
    let after = snapshot(gpu)?;
    expect_errno(what, result, expected)?;
    expect_snapshot(after, before)
        .map_err(|f| Failure::new(format!("{} (unchanged)", f.expected), f.seen))
}

pub(crate) fn as_len(size: u64) -> CheckResult<usize> {
    usize::try_from(size).map_err(|_| Failure::new("a size that fits in usize", size.to_string()))
}

/// The handle of a `GEM_USERPTR` that should have made an object of `kind`.
pub(crate) fn userptr_handle(answer: GemUserptr, kind: ObjectKind) -> CheckResult<GemHandle> {
    expect_eq("kind", answer.kind, kind)?;
    std::num::NonZeroU32::new(answer.handle)
        .map(GemHandle)
        .ok_or_else(|| Failure::new("a non-zero handle", "handle 0"))
}

/// `GEM_USERPTR` of `[addr, addr + size)` (`what` names it), which must make an object of
/// `kind`.
pub(crate) fn import_host(
    gpu: &Vgpu,
    what: &str,
    (addr, size): (u64, u64),
    kind: ObjectKind,
) -> CheckResult<GemHandle> {
    userptr_handle(op(what, gpu.userptr(addr, size, 0))?, kind)
}

/// GEM_INFO matches.
pub(crate) fn expect_info(
    gpu: &Vgpu,
    handle: GemHandle,
    kind: ObjectKind,
    size: u64,
    read_only: bool,
) -> CheckResult<GemInfo> {
    let info = op(format!("GEM_INFO of handle {handle}"), gpu.gem_info(handle))?;
    expect_eq("kind", info.kind, kind)?;
    expect_eq("size", info.size, size)?;
    let flags = if read_only { FLAG_READ_ONLY } else { 0 };
    expect_eq("flags", info.flags, flags)?;
    let mappable = kind == ObjectKind::SHMEM;
    if mappable == (info.mmap_offset == 0) {
        return Err(Failure::new(
            format!("an mmap offset only for SHMEM objects ({kind:?})"),
            format!("mmap_offset {:#x}", info.mmap_offset),
        ));
    }
    Ok(info)
}

/// A shmem object and its CPU mapping through the DRM file.
pub(crate) struct GemObject {
    pub(crate) handle: GemHandle,
    pub(crate) map: SharedMapping,
}

impl GemObject {
    /// The first `len` bytes of the object, through its CPU mapping.
    pub(crate) fn read(&self, len: usize) -> CheckResult<Vec<u8>> {
        self.map
            .read(0, len)
            .map_err(|e| Failure::op("reading the GEM mapping", e))
    }
}

pub(crate) fn create_gem(gpu: &Vgpu, size: u64) -> CheckResult<GemObject> {
    let handle = op(format!("GEM_CREATE of {size} bytes"), gpu.gem_create(size))?;
    let info = expect_info(gpu, handle, ObjectKind::SHMEM, size, false)?;
    let map = io_op(
        "mmap of the DRM file at the GEM_INFO offset",
        SharedMapping::new(gpu.as_fd(), info.mmap_offset, as_len(size)?),
    )?;
    Ok(GemObject { handle, map })
}

/// A GEM object of `size` bound at `va` for a whole group (`group` names it), or `None`
/// with a diagnostic: the group's checks that need it then fail on their own.
pub(crate) fn bound_gem(
    ktap: &mut Ktap,
    gpu: Option<&Vgpu>,
    (va, size): (u64, u64),
    group: &str,
) -> Option<GemObject> {
    let made = gpu.map(|gpu| {
        let gem = create_gem(gpu, size)?;
        map(gpu, gem.handle, va, size, 0)?;
        Ok::<_, Failure>(gem)
    });
    match made {
        Some(Ok(gem)) => Some(gem),
        Some(Err(failure)) => {
            ktap.diagnostic(format_args!("{group}: no GEM object: {}", failure.seen));
            None
        }
        None => None,
    }
}

/// The bytes the GPU reads at `[va, va + size)`: copied into a fresh GEM object bound at
/// `gem_va` for the copy, then read through its CPU mapping.
pub(crate) fn gpu_read(gpu: &Vgpu, va: u64, size: u64, gem_va: u64) -> CheckResult<Vec<u8>> {
    // The object is whole CPU pages (16 KiB ones hold four GPU pages); only `size` bytes of
    // it are bound and read.
    let cpu_page = host_memory::cpu_page();
    let gem = create_gem(gpu, size.div_ceil(cpu_page) * cpu_page)?;
    map(gpu, gem.handle, gem_va, size, 0)?;
    exec(gpu, &[vgpu::copy(va, gem_va, size)])?;
    let mut seen = gem.map.read_all();
    seen.truncate(as_len(size)?);
    unmap(gpu, gem_va, size)?;
    close(gpu, gem.handle)?;
    Ok(seen)
}

/// The exporter to use for `wanted` on this kernel (itself, or virtio-gpu where the kernel
/// lacks it) and its name for a check's description, which says which one and why; a failure
/// to tell is the check's failure.
pub(crate) fn exporter(wanted: Exporter) -> (CheckResult<Exporter>, String) {
    match exporters::choose(wanted) {
        Ok(choice) => (Ok(choice.exporter), choice.to_string()),
        Err(err) => (
            Err(Failure::op(
                format!("choosing the exporter of a {}", wanted.name()),
                err,
            )),
            wanted.name().to_owned(),
        ),
    }
}

/// Imports `[addr, addr + size)` (`what` names the call) as an object of `kind`, binds it at
/// `va`, has the GPU copy it to the start of `gem` (bound at `gem_va`), unbinds and closes it,
/// and returns the bytes the copy left in `gem`.
pub(crate) fn import_and_copy(
    gpu: &Vgpu,
    what: &str,
    (addr, size): (u64, u64),
    kind: ObjectKind,
    va: u64,
    (gem, gem_va): (&GemObject, u64),
) -> CheckResult<Vec<u8>> {
    let handle = import_host(gpu, what, (addr, size), kind)?;
    map(gpu, handle, va, size, 0)?;
    exec(gpu, &[vgpu::copy(va, gem_va, size)])?;
    let seen = gem.read(as_len(size)?)?;
    unmap(gpu, va, size)?;
    close(gpu, handle)?;
    Ok(seen)
}

pub(crate) fn map(
    gpu: &Vgpu,
    handle: GemHandle,
    va: u64,
    size: u64,
    flags: u32,
) -> CheckResult<()> {
    op(
        format!("VM_BIND MAP of handle {handle} at {va:#x} ({size} bytes)"),
        gpu.map(handle, va, 0, size, flags),
    )
}

pub(crate) fn unmap(gpu: &Vgpu, va: u64, size: u64) -> CheckResult<()> {
    op(format!("VM_BIND UNMAP at {va:#x}"), gpu.unmap(va, size))
}

pub(crate) fn close(gpu: &Vgpu, handle: GemHandle) -> CheckResult<()> {
    io_op(format!("GEM_CLOSE of handle {handle}"), gpu.close(handle))
}

pub(crate) fn exec(gpu: &Vgpu, cmds: &[Cmd]) -> CheckResult<()> {
    gpu.exec(cmds).map(|_| ()).map_err(|(errno, args)| {
        Failure::op(
            "EXEC",
            format!(
                "{} (fault at {:#x}, command {}, kind {:?})",
                errno_name(errno),
                args.fault_va,
                args.fault_cmd,
                args.fault_kind
            ),
        )
    })
}

pub(crate) fn same_bytes(what: &str, expected: &[u8], seen: &[u8]) -> CheckResult<()> {
    pattern::compare(expected, seen).map_err(|m| Failure::new(what.to_owned(), m.to_string()))
}

pub(crate) fn read_raw(buffer: &impl RawBytes, offset: usize, len: usize) -> CheckResult<Vec<u8>> {
    buffer
        .read(offset, len)
        .map_err(|e| Failure::op("reading the buffer", e))
}

pub(crate) fn write_raw(buffer: &impl RawBytes, offset: usize, bytes: &[u8]) -> CheckResult<()> {
    buffer
        .write(offset, bytes)
        .map_err(|e| Failure::op("writing the buffer", e))
}

pub(crate) fn map_fd(fd: BorrowedFd<'_>, offset: u64, size: u64) -> CheckResult<SharedMapping> {
    io_op("mmap", SharedMapping::new(fd, offset, as_len(size)?))
}

pub(crate) fn read_map(
    map: &SharedMapping,
    dma_buf: Option<BorrowedFd<'_>>,
) -> CheckResult<Vec<u8>> {
    match dma_buf {
        Some(fd) => io_op(
            "DMA_BUF_IOCTL_SYNC",
            dma_buf::with_cpu_access(fd, || map.read_all()),
        ),
        None => Ok(map.read_all()),
    }
}

pub(crate) fn write_map(
    map: &SharedMapping,
    dma_buf: Option<BorrowedFd<'_>>,
    bytes: &[u8],
) -> CheckResult<()> {
    let written = match dma_buf {
        Some(fd) => io_op(
            "DMA_BUF_IOCTL_SYNC",
            dma_buf::with_cpu_access(fd, || map.write(0, bytes)),
        )?,
        None => map.write(0, bytes),
    };
    written.map_err(|e| Failure::op("writing the mapping", e))
}

/// Unbinds and closes each `(va, size, handle)`, going on after a failure so that the rest
/// is still given back; the first failure is the result.
pub(crate) fn release(
    gpu: &Vgpu,
    bound: impl IntoIterator<Item = (u64, u64, GemHandle)>,
) -> CheckResult<()> {
    let mut first = Ok(());
    for (va, size, handle) in bound {
        for step in [unmap(gpu, va, size), close(gpu, handle)] {
            if first.is_ok() {
                first = step;
            }
        }
    }
    first
}

/// The counters after one new object holding `attachments` dma-buf attachments and
/// `pinned_pages` pinned pages: `before` plus those.
pub(crate) fn expect_new_object(
    gpu: &Vgpu,
    before: Counters,
    (attachments, pinned_pages): (u64, u64),
) -> CheckResult<()> {
    expect_counters(
        counters(gpu)?,
        Counters {
            live_objects: before.live_objects + 1,
            attachments: before.attachments + attachments,
            pinned_pages: before.pinned_pages + pinned_pages,
            ..before
        },
    )
}

/// A CPU-page-aligned heap buffer of `len` bytes, pinned as a USERPTR object.
pub(crate) fn pinned_heap(gpu: &Vgpu, len: usize) -> CheckResult<(HeapBuffer, GemHandle)> {
    let buffer = io_op(
        format!("allocating {len} bytes"),
        HeapBuffer::new(len, host_memory::cpu_page_len()),
    )?;
    let range = (buffer.addr(), len as u64);
    let handle = import_host(gpu, "GEM_USERPTR", range, ObjectKind::USERPTR)?;
    Ok((buffer, handle))
}
