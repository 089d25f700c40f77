//! The software device through `extmem`'s `Backend` trait, as the memory manager drives
//! it: device memory, host-pointer import, bindings, the copy engine walking kcore's page
//! tables, opaque-fd sharing with another process, and bad input refused by errno.
//!
//! Linux only: it shares memory as opaque fds and maps host pages with rustix; the Windows
//! half is tests/win32.rs.
#![cfg(not(windows))]

use std::process::Command;

use extmem::backend::{
    errno, Backend, BackendError, CopyEngine, CpuAccess, GemHandle, GpuVm, ObjectOrigin, Op,
};
use extmem::exec::{self, ExecError, Fault, FaultKind};
use extmem::sync::{SyncPoint, WaitOutcome};
use extmem_hw::{GpuVa, HostVa};
use extmem_softgpu::SoftGpu;
use extmem_uapi::Param;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd};
use rustix::mm::{MapFlags, ProtFlags};

const PAGE: u64 = 4096;
const PAGE_LEN: usize = 4096;
const VA: u64 = 0x10_0000_0000;

fn device() -> SoftGpu {
    SoftGpu::new().unwrap_or_else(|e| panic!("{e}"))
}

fn ok<T>(result: Result<T, BackendError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn errno_of<T>(result: Result<T, BackendError>) -> (Op, i32) {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => (e.op, e.errno),
    }
}

/// Page-aligned anonymous memory the test owns (and may take away early).
struct HostPages {
    ptr: *mut u8,
    len: usize,
    /// Bytes still reserved at `ptr` after [`HostPages::take_away`], unmapped on drop.
    reserved: usize,
}

impl HostPages {
    fn new(len: usize) -> Self {
        // SAFETY: a fresh anonymous mapping; nothing aliases it.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .unwrap_or_else(|e| panic!("mmap: {e}"));
        Self {
            ptr: ptr.cast(),
            len,
            reserved: 0,
        }
    }

    fn va(&self) -> HostVa {
        HostVa::new(self.ptr as u64)
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: our live mapping of `len` bytes, borrowed through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Takes the pages away behind the device's back: they are unmapped and, in the
    /// same call, the range is reserved with no access (`MAP_FIXED`, `PROT_NONE`), so no
    /// other thread's mapping can land there and make the address valid again while the
    /// test still expects it to fault.
    fn take_away(&mut self) {
        if self.len > 0 {
            // SAFETY: replaces our own mapping at the same address; no reference into it
            // outlives this call.
            unsafe {
                rustix::mm::mmap_anonymous(
                    self.ptr.cast(),
                    self.len,
                    ProtFlags::empty(),
                    MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NORESERVE,
                )
            }
            .unwrap_or_else(|e| panic!("mmap(MAP_FIXED, PROT_NONE): {e}"));
            self.reserved = self.len;
            self.len = 0;
        }
    }
}

impl Drop for HostPages {
    fn drop(&mut self) {
        let len = self.len.max(self.reserved);
        if len > 0 {
            // SAFETY: our mapping (or reservation); no reference into it outlives this call.
            let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), len) };
        }
    }
}

/// The bytes of `len` at `ptr`, a CPU mapping the device handed out.
fn mapped(ptr: HostVa, len: usize) -> &'static mut [u8] {
    let addr = usize::try_from(ptr.get()).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: `ptr` is a live mapping of at least `len` bytes from `Backend::map`, which
    // the test unmaps only after its last use of the slice.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) }
}

fn copy(src: u64, dst: u64, size: u64) -> exec::Command {
    exec::Command::Copy {
        src: GpuVa::new(src),
        dst: GpuVa::new(dst),
        size,
    }
}

fn fill(dst: u64, value: u32, size: u64) -> exec::Command {
    exec::Command::Fill {
        dst: GpuVa::new(dst),
        size,
        value,
    }
}

/// Byte `i` of the test pattern.
fn pattern(i: u32) -> u8 {
    (i.wrapping_mul(7) % 251).to_le_bytes()[0]
}

#[test]
fn host_memory_goes_through_device_memory_and_back_on_the_copy_engine() {
    let mut gpu = device();
    let len = 64 * 1024;
    let size = len as u64;
    let mut source = HostPages::new(len);
    for (b, i) in source.bytes().iter_mut().zip(0u32..) {
        *b = pattern(i);
    }
    let mut sink = HostPages::new(len);
    let device = ok(gpu.create(size));
    let (from, _) = ok(gpu.import_host(source.va(), size, false, false)).unwrap_or_else(|| {
        panic!("an import that is not a probe returns a handle");
    });
    let (to, _) =
        ok(gpu.import_host(sink.va(), size, false, false)).unwrap_or_else(|| panic!("a handle"));
    assert_eq!(ok(gpu.info(device)), (size, ObjectOrigin::Native));
    assert_eq!(ok(gpu.info(from)), (size, ObjectOrigin::Userptr));
    let (va_dev, va_from, va_to) = (VA, VA + 0x100_0000, VA + 0x200_0000);
    ok(gpu.bind(device, GpuVa::new(va_dev), 0, size, false));
    ok(gpu.bind(from, GpuVa::new(va_from), 0, size, true));
    ok(gpu.bind(to, GpuVa::new(va_to), 0, size, false));
    assert_eq!(
        ok(gpu.query(GpuVa::new(va_from + 5))),
        Some((PAGE, true)),
        "kcore's page tables map it, read-only"
    );

    // Host -> device at an odd offset, device -> host, then a fill over part of it.
    gpu.exec(&[
        copy(va_from, va_dev + 3, size - 3),
        copy(va_dev + 3, va_to, size - 3),
        fill(va_to + 4 * PAGE, 0xa5a5_a5a5, 2 * PAGE),
    ])
    .unwrap_or_else(|e| panic!("{e:?}"));
    let want: Vec<u8> = (0..size)
        .zip(0u32..)
        .map(|(at, i)| {
            if (4 * PAGE..6 * PAGE).contains(&at) {
                0xa5
            } else if at < size - 3 {
                pattern(i)
            } else {
                0
            }
        })
        .collect();
    assert!(sink.bytes() == &want[..], "every byte through the GPU");
    // The CPU sees the device memory the GPU wrote.
    let cpu = ok(gpu.map(device, size, CpuAccess::ReadWrite));
    assert_eq!(&mapped(cpu, 16)[3..8], &source.bytes()[..5]);
    gpu.unmap(cpu, size);

    // A read-only binding faults on write, at the first byte, and nothing after it runs.
    let fault = gpu.exec(&[copy(va_dev, va_from + 8, 4), fill(va_dev, 0, 4)]);
    assert_eq!(
        fault,
        Err(ExecError::Fault(Fault {
            cmd: 0,
            va: GpuVa::new(va_from + 8),
            kind: FaultKind::ReadOnly
        }))
    );
    // Unmapped VA: a translation fault naming the byte.
    let fault = gpu.exec(&[copy(va_dev, va_dev + size, 1)]);
    assert!(matches!(
        fault,
        Err(ExecError::Fault(Fault { cmd: 0, va, kind: FaultKind::Unmapped })) if va.get() == va_dev + size
    ));

    // Queued, a fault is counted and reported through JOB_FAULTS, not by the submit,
    // as the kernel reports a queued job's; the signal still happens, and a good job
    // leaves the count alone.
    let syncs = gpu
        .syncobjs()
        .unwrap_or_else(|| panic!("the device has syncobjs"));
    let done = ok(syncs.create(false));
    let signal = [SyncPoint::binary(done)];
    assert_eq!(ok(syncs.job_faults()), 0);
    assert_eq!(
        gpu.submit(&[copy(va_dev, va_dev + size, 1)], &[], &signal),
        Ok(())
    );
    assert_eq!(ok(syncs.wait(&signal, true, 0)), WaitOutcome::Signaled);
    assert_eq!(
        (ok(syncs.job_faults()), ok(gpu.param(Param::JOB_FAULTS))),
        (1, 1)
    );
    assert_eq!(gpu.submit(&[fill(va_dev, 0, 4)], &[], &signal), Ok(()));
    assert_eq!(ok(syncs.job_faults()), 1);
    syncs.destroy(done);

    for (va, handle) in [(va_dev, device), (va_from, from), (va_to, to)] {
        ok(gpu.unbind(GpuVa::new(va), size));
        gpu.close(handle);
    }
    assert_eq!(gpu.live_objects(), 0);
    assert_eq!(gpu.table_pages(), 1, "only the root table is left");
    assert_eq!(ok(gpu.param(Param::BINDINGS)), 0);
}

#[test]
fn an_imported_range_unmapped_behind_the_devices_back_is_a_memory_fault_not_a_crash() {
    let mut gpu = device();
    let mut host = HostPages::new(2 * PAGE_LEN);
    let (handle, _) = ok(gpu.import_host(host.va(), 2 * PAGE, false, false))
        .unwrap_or_else(|| panic!("a handle"));
    ok(gpu.bind(handle, GpuVa::new(VA), 0, 2 * PAGE, false));
    let scratch = ok(gpu.create(PAGE));
    ok(gpu.bind(scratch, GpuVa::new(VA + 0x10_0000), 0, PAGE, false));
    gpu.exec(&[fill(VA, 0x1234_5678, 8)])
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(&host.bytes()[..4], &0x1234_5678u32.to_le_bytes());
    host.take_away();
    for cmds in [
        [fill(VA + PAGE, 1, 4)],
        [copy(VA, VA + 0x10_0000, 4)],
        [copy(VA + 0x10_0000, VA, 4)],
    ] {
        assert_eq!(
            gpu.exec(&cmds),
            Err(ExecError::Kernel(BackendError {
                op: Op::Exec,
                errno: errno::EFAULT
            }))
        );
    }
    // A bound object outlives its handle; unbinding lets it go.
    gpu.close(handle);
    assert_eq!(gpu.live_objects(), 2);
    ok(gpu.unbind(GpuVa::new(VA), 2 * PAGE));
    assert_eq!(gpu.live_objects(), 1);
}

/// A copy of many pages moves a run of imported host memory in one system call; a page
/// taken away in the middle still stops it there, with every page before it moved and
/// none after, in both directions.
#[test]
fn a_run_with_a_page_taken_away_mid_copy_moves_exactly_the_pages_before_it() {
    const PAGES: usize = 8;
    const GONE: usize = 5;
    let size = PAGE * PAGES as u64;
    let mut gpu = device();
    let mut host = HostPages::new(PAGES * PAGE_LEN);
    for (i, byte) in (0u32..).zip(host.bytes().iter_mut()) {
        *byte = pattern(i);
    }
    let (handle, _) =
        ok(gpu.import_host(host.va(), size, false, false)).unwrap_or_else(|| panic!("a handle"));
    ok(gpu.bind(handle, GpuVa::new(VA), 0, size, false));
    let memory = ok(gpu.create(size));
    let dev_va = VA + 0x100_0000;
    ok(gpu.bind(memory, GpuVa::new(dev_va), 0, size, false));
    let cpu = ok(gpu.map(memory, size, CpuAccess::ReadWrite));
    let device_bytes = mapped(cpu, PAGES * PAGE_LEN);
    device_bytes.fill(0xee);
    // SAFETY: one page of our own mapping, replaced in place (no other mapping can land
    // there meanwhile); no reference into it is used until the test reads it back below,
    // past the page.
    unsafe {
        rustix::mm::mmap_anonymous(
            host.ptr.add(GONE * PAGE_LEN).cast(),
            PAGE_LEN,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::FIXED,
        )
    }
    .unwrap_or_else(|e| panic!("mmap(MAP_FIXED, PROT_NONE): {e}"));
    let efault = Err(ExecError::Kernel(BackendError {
        op: Op::Exec,
        errno: errno::EFAULT,
    }));
    assert_eq!(gpu.exec(&[copy(VA, dev_va, size)]), efault);
    let split = GONE * PAGE_LEN;
    for (i, byte) in (0u32..).zip(&device_bytes[..split]) {
        assert_eq!(
            *byte,
            pattern(i),
            "device byte {i}, before the page taken away"
        );
    }
    assert!(
        device_bytes[split..].iter().all(|b| *b == 0xee),
        "nothing from the page taken away on"
    );
    // Back the other way: the pages before the hole are written, the ones after are not.
    device_bytes.fill(0x11);
    assert_eq!(gpu.exec(&[copy(dev_va, VA, size)]), efault);
    let bytes = host.bytes();
    assert!(bytes[..split].iter().all(|b| *b == 0x11));
    for (i, byte) in (0u32..).zip(&bytes[split + PAGE_LEN..]) {
        let at = u32::try_from(split + PAGE_LEN).unwrap_or(0) + i;
        assert_eq!(
            *byte,
            pattern(at),
            "host byte {at}, after the page taken away"
        );
    }
    gpu.unmap(cpu, size);
}

#[test]
fn bad_requests_are_refused_with_the_kernel_devices_errnos() {
    let mut gpu = device();
    let mut host = HostPages::new(2 * PAGE_LEN);
    // Leave a hole in the second page.
    // SAFETY: the second page of our own mapping; nothing refers to it.
    unsafe { rustix::mm::munmap(host.ptr.add(PAGE_LEN).cast(), PAGE_LEN) }
        .unwrap_or_else(|e| panic!("{e}"));
    host.len = PAGE_LEN;
    assert_eq!(errno_of(gpu.create(0)), (Op::Create, errno::EINVAL));
    assert_eq!(errno_of(gpu.create(100)), (Op::Create, errno::EINVAL));
    assert_eq!(errno_of(gpu.create(1 << 40)), (Op::Create, errno::ERANGE));
    let odd = HostVa::new(host.va().get() + 8);
    assert_eq!(
        errno_of(gpu.import_host(odd, PAGE, false, false)),
        (Op::ImportHost, errno::EINVAL)
    );
    // Page 0 is never mapped; a range running into a hole is not mapped either.
    for (ptr, size) in [(HostVa::new(0x1000), PAGE), (host.va(), 2 * PAGE)] {
        for probe in [true, false] {
            assert_eq!(
                errno_of(gpu.import_host(ptr, size, false, probe)),
                (Op::ImportHost, errno::EFAULT)
            );
        }
    }
    assert_eq!(ok(gpu.import_host(host.va(), PAGE, false, true)), None);
    // Files that are not this driver's memfds are not memory.
    let file = std::fs::File::open("/proc/self/exe").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        errno_of(gpu.import_shared(file.as_fd())),
        (Op::ImportDmaBuf, errno::EINVAL)
    );
    let memory = ok(gpu.create(2 * PAGE));
    let stale = GemHandle(std::num::NonZeroU32::MAX);
    assert_eq!(
        errno_of(gpu.bind(stale, GpuVa::new(VA), 0, PAGE, false)),
        (Op::Bind, errno::ENOENT)
    );
    assert_eq!(
        errno_of(gpu.bind(memory, GpuVa::new(VA), PAGE, 2 * PAGE, false)),
        (Op::Bind, 34),
        "ERANGE: past the end of the object"
    );
    assert_eq!(
        errno_of(gpu.bind(memory, GpuVa::new(VA + 1), 0, PAGE, false)),
        (Op::Bind, errno::EINVAL)
    );
    ok(gpu.bind(memory, GpuVa::new(VA), 0, 2 * PAGE, false));
    assert_eq!(
        errno_of(gpu.bind(memory, GpuVa::new(VA + PAGE), 0, PAGE, false)),
        (Op::Bind, 17),
        "EEXIST: overlap"
    );
    assert_eq!(
        errno_of(gpu.unbind(GpuVa::new(VA), PAGE)),
        (Op::Unbind, errno::ENOENT)
    );
    assert_eq!(
        errno_of(gpu.map(memory, 3 * PAGE, CpuAccess::ReadWrite)),
        (Op::Map, errno::EINVAL)
    );
    let exec_errno = |r: Result<(), ExecError>| match r {
        Err(ExecError::Kernel(e)) => e.errno,
        other => panic!("{other:?}"),
    };
    assert_eq!(exec_errno(gpu.exec(&[])), errno::EINVAL);
    assert_eq!(exec_errno(gpu.exec(&[fill(VA + 2, 0, 4)])), errno::EINVAL);
    assert_eq!(
        errno_of(gpu.param(Param(0xdead))),
        (Op::Info, errno::EINVAL)
    );
    assert_eq!(ok(gpu.param(Param::API_VERSION)), extmem_uapi::API_VERSION);
    assert_eq!(ok(gpu.param(Param::PINNED_PAGES)), 0, "nothing is pinned");
    // What a front end reads: the same answers, checked and typed.
    let params = gpu.device_params().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(params.device_uuid, extmem_softgpu::DEVICE_UUID);
    assert_eq!(params.driver_uuid, extmem_softgpu::DRIVER_UUID);
    assert_eq!(
        params.min_import_alignment.get(),
        ok(gpu.param(Param::MIN_IMPORT_ALIGNMENT))
    );
    assert_eq!(u64::from(params.va_bits), ok(gpu.param(Param::VA_BITS)));
    assert!(gpu.engine().is_some());
    drop(gpu);
}

#[test]
fn blocks_map_2m_aligned_device_memory() {
    let mut gpu = device();
    let size = 4 << 20;
    let memory = ok(gpu.create(size));
    ok(gpu.bind(memory, GpuVa::new(VA), 0, size, false));
    assert_eq!(
        ok(gpu.query(GpuVa::new(VA + (2 << 20)))),
        Some((2 << 20, false))
    );
    gpu.exec(&[fill(VA, 7, size), copy(VA, VA + (2 << 20) + 4, 4)])
        .unwrap_or_else(|e| panic!("{e:?}"));
}

/// The environment variable that makes [`opaque_fd_child`] the child's side.
const CHILD_FD: &str = "EXTMEM_SOFTGPU_TEST_CHILD_FD";
const SHARED_LEN: usize = 8 * PAGE_LEN;
const SHARED: u64 = 8 * PAGE;

#[test]
fn opaque_fd_shares_memory_with_another_process() {
    let mut gpu = device();
    let memory = ok(gpu.create(SHARED));
    ok(gpu.bind(memory, GpuVa::new(VA), 0, SHARED, false));
    gpu.exec(&[fill(VA, 0x0101_0101, SHARED / 2)])
        .unwrap_or_else(|e| panic!("{e:?}"));
    let exported = ok(gpu.export_shared(memory));
    let again = ok(gpu.export_shared(memory));
    assert_ne!(
        exported.as_raw_fd(),
        again.as_raw_fd(),
        "a new fd every call"
    );
    // Importing our own export gives the same handle (PRIME's rule).
    assert_eq!(ok(gpu.import_shared(again.as_fd())), memory);

    // The child inherits a non-close-on-exec duplicate.
    let inherited = rustix::io::dup(&exported).unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let status = Command::new(exe)
        .args([
            "--exact",
            "opaque_fd_child",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_FD, inherited.as_raw_fd().to_string())
        .status()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    drop(inherited);
    assert!(status.success(), "the child failed: {status}");
    // What the child's GPU wrote is in our memory.
    let cpu = ok(gpu.map(memory, SHARED, CpuAccess::ReadWrite));
    let bytes = mapped(cpu, SHARED_LEN);
    let half = SHARED_LEN / 2;
    assert!(bytes[..half].iter().all(|b| *b == 1));
    assert!(bytes[half..].iter().all(|b| *b == 2), "the child's fill");
    gpu.unmap(cpu, SHARED);
}

/// The child of [`opaque_fd_shares_memory_with_another_process`]; does nothing when run
/// on its own.
#[test]
fn opaque_fd_child() {
    let Some(raw) = std::env::var(CHILD_FD).ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    // SAFETY: the parent passed this fd down to us and nothing else here uses it.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    let mut gpu = device();
    let memory = ok(gpu.import_shared(fd));
    assert_eq!(ok(gpu.info(memory)), (SHARED, ObjectOrigin::Native));
    let mut host = HostPages::new(SHARED_LEN);
    let (sink, _) =
        ok(gpu.import_host(host.va(), SHARED, false, false)).unwrap_or_else(|| panic!("a handle"));
    ok(gpu.bind(memory, GpuVa::new(VA), 0, SHARED, false));
    ok(gpu.bind(sink, GpuVa::new(VA + 0x100_0000), 0, SHARED, false));
    gpu.exec(&[
        copy(VA, VA + 0x100_0000, SHARED),
        fill(VA + SHARED / 2, 0x0202_0202, SHARED / 2),
    ])
    .unwrap_or_else(|e| panic!("{e:?}"));
    let half = SHARED_LEN / 2;
    assert!(
        host.bytes()[..half].iter().all(|b| *b == 1),
        "the parent's fill"
    );
    assert!(host.bytes()[half..].iter().all(|b| *b == 0));
}
