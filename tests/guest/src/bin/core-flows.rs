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

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::ExitCode;

use ash::vk;
use extmem::alloc_info::AllocRequest;
use extmem::backend::HostImport;
use extmem::memory::{MemoryManager, Origin};
use extmem::vgpu::Vgpu;
use extmem::{Error, HandleError, Vuid};
use extmem_guest_tests::device_snapshot::{counters, expect_counters};
use extmem_guest_tests::dri::{self, DrmNode, NodeKind};
use extmem_guest_tests::host_memory::{self, AnonMapping, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure, KtapWriter};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::memory_manager::{
    allocate, copy_cmd, decode, dup, encode, exec, expect_error, expect_vuid, fd_state, fill_cmd,
    find_vgpu_node, host_request, import_fd, import_fd_ok, map_fd, plain_request, read_mapped,
    receive_from_parent, same_bytes, send_to_child, va, vgpu_manager, vk_op, with_memory,
    write_mapped, DMA_BUF_TYPES, HOST_POINTER_TYPES, MEMORY_TYPE_COUNT, TYPE_DEVICE, TYPE_HOST,
    VA_START,
};
use extmem_guest_tests::vgpu::{self as guest_vgpu, Counters};
use extmem_guest_tests::{dma_buf, fd_table, pattern, udmabuf};
use extmem_hw::{GpuVa, HostVa};
use rustix::io::FdFlags;

/// Number of results; the runner fails the program if fewer arrive.
const PLAN: usize = 34;

/// The size of most allocations: 16 pages.
const SIZE: u64 = 64 << 10;
const SIZE_LEN: usize = 64 << 10;
/// The GPU's page (VA alignment); host pointers and pins count in
/// [`host_memory::cpu_page`] instead.
const PAGE: u64 = 4096;

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
        let (fd, path) = find_vgpu_node()?;
        Ok((observer, base, fd, path))
    });
    let what = "MemoryManager::new over Vgpu::new (API_VERSION checked): DeviceLimits from GET_PARAM (MIN_IMPORT_ALIGNMENT as the page size and extmem_hw::profile::VGPU say, PAGE_SIZES, VA_BITS as VGPU says), a VaAllocator over [2 MiB, 2^VA_BITS)";
    let mut env = ktap.check_after(what, opened, |(observer, base, fd, path)| {
        let mm = vgpu_manager(fd, &path)?;
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
        expect_counters(counters(&env.observer)?, env.base)
    });
}

// ---- helpers ----------------------------------------------------------------------------

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
                    .query(GpuVa::new(va(memory)))
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
        exec(&mut env.mm, &[copy_cmd(va(a), va(b), SIZE)])?;
        let seen = read_mapped(&mut env.mm, b, SIZE_LEN)?;
        same_bytes(
            "the first allocation's bytes, copied by the GPU",
            &expected,
            &seen,
        )
    });

    let what = "free: both freed, their VAs unmapped (VM_QUERY), the manager holds no handle, LIVE_OBJECTS / BINDINGS / PINNED_PAGES / ATTACHMENTS back at the start";
    ktap.check_after(what, env.as_mut().zip(pair.take()), |(env, (a, b))| {
        let vas = [GpuVa::new(va(&a)), GpuVa::new(va(&b))];
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
    let cpu_page = host_memory::cpu_page();
    let cpu_page_len = host_memory::cpu_page_len();
    let what = format!("host_pointer_properties(HOST_ALLOCATION) of a {cpu_page}-byte-aligned heap buffer (the CPU page) and of an anonymous mmap: memoryTypeBits 0b10 (the host type)");
    ktap.check_after(&what, env.as_mut(), |env| {
        let heap = io_op(
            "aligned heap buffer",
            HeapBuffer::new(SIZE_LEN, cpu_page_len),
        )?;
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
            host_memory::unmapped_range(cpu_page_len),
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
        let heap = io_op(
            "aligned heap buffer",
            HeapBuffer::new(SIZE_LEN, cpu_page_len),
        )?;
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

    let heap = HeapBuffer::new(SIZE_LEN, cpu_page_len);
    let what = format!("Import::HostPointer of a 64 KiB heap buffer: origin Host {{ ptr, Pinned }}, map returns the original pointer; LIVE_OBJECTS +1, BINDINGS +1, PINNED_PAGES +{} ({cpu_page}-byte CPU pages)", SIZE / cpu_page);
    let mut imported = ktap.check_after(&what, env.as_mut(), |env| {
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
                pinned_pages: base.pinned_pages + SIZE / cpu_page,
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
            exec(&mut env.mm, &[fill_cmd(va(memory), 0x600d_f111, SIZE)])?;
            same_bytes(
                "the GPU's fill, read from the heap buffer",
                &pattern::filled(0x600d_f111, SIZE_LEN),
                &read_raw(heap)?,
            )?;
            let expected = pattern::bytes(2, SIZE_LEN);
            write_raw(heap, &expected)?;
            let src = va(memory);
            with_memory(
                &mut env.mm,
                &plain_request(SIZE, Types::empty()),
                |mm, target| {
                    exec(mm, &[copy_cmd(src, va(target), SIZE)])?;
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

    // Off by one GPU page where the CPU page is larger (16 KiB pages: 4 KiB), else by half a
    // CPU page: aligned for the GPU, not for the CPU.
    let misalign = if cpu_page > PAGE { PAGE } else { cpu_page / 2 };
    let what = format!("Import::HostPointer refusals: pointer +64 and +{misalign} (VUID 01749), size 64 KiB + 64 and - {misalign} (VUID 01745; the CPU page is {cpu_page} bytes), memory type 0 (VUID 01744), handleType DMA_BUF (VUID 01747), an unmapped range (InvalidHandle); counters unchanged");
    ktap.check_after(&what, env.as_mut(), |env| {
        let heap = io_op(
            "aligned heap buffer",
            HeapBuffer::new(2 * SIZE_LEN, cpu_page_len),
        )?;
        let addr = heap.addr();
        let mm = &mut env.mm;
        for offset in [64, misalign] {
            let result = mm.allocate(&host_request(host, addr + offset, SIZE));
            let what = format!("a pointer {offset} bytes off the alignment");
            expect_vuid(mm, &what, result, Vuid::HostPointerAligned)?;
        }
        for size in [SIZE + 64, SIZE - misalign] {
            let result = mm.allocate(&host_request(host, addr, size));
            let what = format!("a size of {size} bytes");
            expect_vuid(mm, &what, result, Vuid::HostSizeAligned)?;
        }
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
                pinned_pages: base.pinned_pages + 2 * (SIZE / cpu_page),
                ..base
            })?;
            exec(&mut env.mm, &[fill_cmd(va(a), 0x0001_1111, SIZE)])?;
            let seen = read_mapped(&mut env.mm, b, SIZE_LEN)?;
            same_bytes(
                "the first import's fill, through the second's map",
                &pattern::filled(0x0001_1111, SIZE_LEN),
                &seen,
            )?;
            if let Some(a) = first.take() {
                env.mm.free(a);
            }
            let b = second
                .as_mut()
                .ok_or_else(|| Failure::new("the second import", "gone"))?;
            exec(&mut env.mm, &[fill_cmd(va(b), 0x0002_2222, SIZE)])?;
            same_bytes(
                "the second import's fill after the first was freed, in the mmap",
                &pattern::filled(0x0002_2222, SIZE_LEN),
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
                        exec(mm, &[copy_cmd(src, va(target), SIZE)])?;
                        let seen = read_mapped(mm, target, SIZE_LEN)?;
                        same_bytes("the dma-buf's bytes, copied by the GPU", &expected, &seen)
                    },
                )?;
                exec(&mut env.mm, &[fill_cmd(src, 0xf0e1_d2c3, SIZE)])?;
                same_bytes(
                    "the GPU's fill, through the dma-buf mapping",
                    &pattern::filled(0xf0e1_d2c3, SIZE_LEN),
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
            exec(&mut env.mm, &[fill_cmd(va(&memory), 0x7e57_0001, SIZE)])?;
            same_bytes(
                "the GPU's fill, through the dma-buf mapping",
                &pattern::filled(0x7e57_0001, SIZE_LEN),
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
                &pattern::filled(0x7e57_0001, SIZE_LEN),
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
            exec(&mut env.mm, &[fill_cmd(va(&memory), 0x7e57_0002, SIZE)])?;
            same_bytes(
                "the GPU's fill, through the memfd mapping",
                &pattern::filled(0x7e57_0002, SIZE_LEN),
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
            exec(&mut env.mm, &[fill_cmd(va(b), 0x7e57_0003, SIZE)])?;
            same_bytes(
                "the second import's fill after the first was freed",
                &pattern::filled(0x7e57_0003, SIZE_LEN),
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
                exec(mm, &[fill_cmd(va(&imported), 0x7e57_0004, SIZE)])?;
                let seen = read_mapped(mm, source, SIZE_LEN)?;
                same_bytes(
                    "the import's fill, in the source",
                    &pattern::filled(0x7e57_0004, SIZE_LEN),
                    &seen,
                )
            })();
            mm.free(imported);
            result?;
            exec(mm, &[fill_cmd(va(source), 0x7e57_0005, SIZE)])?;
            let seen = read_mapped(mm, source, SIZE_LEN)?;
            same_bytes(
                "a fill of the source after the import was freed",
                &pattern::filled(0x7e57_0005, SIZE_LEN),
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
                let exe = io_op("current_exe", std::env::current_exe())?;
                send_to_child(&exe, "child-import", fd, encode(handle_type, seed, SIZE))?;
                let seen = read_mapped(mm, memory, SIZE_LEN)?;
                same_bytes("the child's fill", &pattern::filled(seed, SIZE_LEN), &seen)
            })?;
            expect_idle(env)
        });
    }
}
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
    let (fd, message) = receive_from_parent()?;
    let (handle_type, seed, size) = decode(&message);
    let len = usize::try_from(size).map_err(|_| Failure::new("a small size", size.to_string()))?;
    let (node, path) = find_vgpu_node()?;
    let mut mm = vgpu_manager(node, &path)?;
    let mut memory = import_fd_ok(&mut mm, handle_type, fd, size, TYPE_DEVICE)?;
    let result = (|| {
        let seen = read_mapped(&mut mm, &mut memory, len)?;
        same_bytes(
            "the parent's bytes, through the child's map",
            &pattern::bytes(u64::from(seed), len),
            &seen,
        )?;
        exec(&mut mm, &[fill_cmd(va(&memory), seed, size)])
    })();
    mm.free(memory);
    result?;
    expect_eq("live GEM handles in the child", mm.live_handles(), 0)
}
