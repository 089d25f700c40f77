//! backends: the same memory flows over every backend of `extmem` on the real kernel —
//! `DrmPrime` over vgem and virtio-gpu, udmabuf and the system dma-heap (`DmaBufDevice`),
//! with extmem-vgpu (`Vgpu`) as the device that binds and copies.
//!
//! For each exporting backend: allocate exportable memory (no GPU VM, so no GPU address),
//! map and fill it, export dma-bufs; import one into extmem-vgpu, bind it and copy through
//! the GPU, bytes checked both ways; import extmem-vgpu's export into it (virtio-gpu refuses
//! a foreign dma-buf: `VK_ERROR_INVALID_EXTERNAL_HANDLE`, the fd stays the application's);
//! hand its dma-buf to another process over SCM_RIGHTS (`core-flows child-import`, which
//! imports it into its own extmem-vgpu manager and fills it on the GPU); and at the end of
//! each group the fd table is as it was at its start. Then udmabuf's host-pointer import
//! (memfd-backed only), `GEM_USERPTR`'s answer for each kind of host range (the table
//! extmem-softgpu is held to as well), a read-only dma-buf's refused `vkMapMemory`, and a
//! render node's refused dumb buffer.
//!
//! On a kernel the runner declares without the system dma-heap (Debian's arm64 builds), the
//! heap's group runs over udmabuf, `DmaBufDevice`'s other exporter, and the read-only
//! dma-buf is a virtio-gpu dumb buffer exported without `DRM_RDWR`; the checks name the
//! substitute and why (`exporters::choose_expected`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use ash::vk;
use extmem::backend::{errno, Backend, Op};
use extmem::dma_heap::{DmaHeap, DmaHeapDevice, SYSTEM_HEAP};
use extmem::drm_prime::DrmPrime;
use extmem::handle_types::{DeviceCaps, Platform};
use extmem::memory::{DeviceMemory, MemoryManager};
use extmem::udmabuf::{Udmabuf, UdmabufDevice};
use extmem::vgpu::Vgpu;
use extmem::{Error, HandleError};
use extmem_guest_tests::dri::{self, NodeKind};
use extmem_guest_tests::exporters::{self, Choice, Exporter};
use extmem_guest_tests::gbm_buffer::VIRTIO_GPU_DRIVER;
use extmem_guest_tests::host_memory::{AnonMapping, RawBytes};
use extmem_guest_tests::host_ranges::{mismatches, HostRange, RangeKind, TABLE};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure, KtapWriter};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::memory_manager::{
    allocate, copy_cmd, describe, encode, exec, expect_error, fill_cmd, find_vgpu_node,
    host_request, import_fd, import_fd_ok, plain_request, read_mapped, same_bytes, send_to_child,
    va, vgpu_manager, vk_op, write_mapped, TYPE_DEVICE,
};
use extmem_guest_tests::{dma_buf, fd_table, pattern};
use rustix::fs::{Mode, OFlags};
use rustix::io::FdFlags;

/// Number of results; the runner fails the program if fewer arrive.
const PLAN: usize = 32;

/// The size of every allocation: 16 pages.
const SIZE: u64 = 64 << 10;
const SIZE_LEN: usize = 64 << 10;

type Ktap = KtapWriter<io::Stdout>;
type Types = vk::ExternalMemoryHandleTypeFlags;
type VgpuMm = MemoryManager<Vgpu>;

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let fds_before = fd_table::snapshot();
    let mut ktap = KtapWriter::stdout(PLAN);
    run(&mut ktap);
    // What this program adds to the suite's guest time.
    ktap.diagnostic(format_args!(
        "backends ran in {:.2} s",
        started.elapsed().as_secs_f64()
    ));
    ktap.check(
        "fd table: every descriptor the program (and its managers) opened is closed again",
        || fd_table::closed_again(fds_before),
    );
    ktap.finish()
}

/// What the backends can do, as the manager's validation sees it.
fn caps(host_allocation: bool) -> DeviceCaps {
    DeviceCaps {
        platform: Platform::Linux,
        opaque_fd: false,
        dma_buf: true,
        host_allocation,
        host_mapped_foreign: false,
        win32: false,
    }
}

fn manager<B: Backend>(backend: B, host_allocation: bool) -> MemoryManager<B> {
    extmem_guest_tests::memory_manager::manager_over(backend, caps(host_allocation))
}

/// A DRM node of `driver` opened for a `DrmPrime` (close-on-exec).
fn drm_prime(driver: &str, kind: NodeKind) -> CheckResult<MemoryManager<DrmPrime>> {
    let node = dri::open_by_driver(driver, kind)
        .map_err(|e| Failure::new(format!("a {driver} node"), e.to_string()))?;
    let fd = io_op(
        format!("open({})", node.path.display()),
        rustix::fs::open(&node.path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()),
    )?;
    Ok(manager(DrmPrime::new(fd), false))
}

/// What importing extmem-vgpu's dma-buf into an exporter gives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Foreign {
    /// It imports.
    Imports,
    /// It refuses with `ENODEV` (virtio-gpu).
    Refused,
}

fn run(ktap: &mut Ktap) {
    let mut vgpu = ktap.check(
        "open: the extmem-vgpu render node and its MemoryManager (the device that binds and copies)",
        || {
            let (fd, path) = find_vgpu_node()?;
            vgpu_manager(fd, &path)
        },
    );
    let exe = std::env::current_exe().map(|p| p.with_file_name("core-flows"));

    let before = fd_table::snapshot();
    let vgem = ktap.check("vgem: DrmPrime over its card* node", || {
        drm_prime("vgem", NodeKind::Primary)
    });
    exporter_flows(
        ktap,
        "vgem",
        vgem,
        &mut vgpu,
        &exe,
        Foreign::Imports,
        before,
    );

    let before = fd_table::snapshot();
    let virtio = ktap.check("virtio-gpu: DrmPrime over its card* node", || {
        drm_prime("virtio_gpu", NodeKind::Primary)
    });
    exporter_flows(
        ktap,
        "virtio-gpu",
        virtio,
        &mut vgpu,
        &exe,
        Foreign::Refused,
        before,
    );

    let before = fd_table::snapshot();
    let udmabuf = ktap.check("udmabuf: DmaBufDevice over /dev/udmabuf", || {
        let exporter = io_op("Udmabuf::open", Udmabuf::open())?;
        Ok(manager(UdmabufDevice::new(exporter), true))
    });
    exporter_flows(
        ktap,
        "udmabuf",
        udmabuf,
        &mut vgpu,
        &exe,
        Foreign::Imports,
        before,
    );

    heap_flows(ktap, &mut vgpu, &exe);

    udmabuf_host_pointers(ktap, &mut vgpu);
    host_ranges_table(ktap, &mut vgpu);
    read_only(ktap, &mut vgpu);
    render_node(ktap);

    ktap.check_after(
        "end: the extmem-vgpu manager holds no GEM handle",
        vgpu,
        |mm| expect_eq("live GEM handles", mm.live_handles(), 0),
    );
}

/// The system dma-heap's group; on a kernel the runner declares without the heap, the same
/// flows over `DmaBufDevice`'s other exporter, udmabuf, each check naming the substitute.
fn heap_flows(ktap: &mut Ktap, vgpu: &mut Option<VgpuMm>, exe: &io::Result<PathBuf>) {
    let before = fd_table::snapshot();
    let choice = exporters::choose_expected(Exporter::SystemHeap, Exporter::Udmabuf);
    let Ok(Choice {
        exporter: Exporter::Udmabuf,
        instead: Some(why),
    }) = &choice
    else {
        let heap = ktap.check("dma-heap: DmaBufDevice over /dev/dma_heap/system", || {
            choice.map_err(|e| Failure::op("choosing the exporter", e))?;
            let exporter = io_op("DmaHeap::open", DmaHeap::open(SYSTEM_HEAP))?;
            Ok(manager(DmaHeapDevice::new(exporter), false))
        });
        return exporter_flows(ktap, "dma-heap", heap, vgpu, exe, Foreign::Imports, before);
    };
    let name = format!("udmabuf ({why})");
    let udmabuf = ktap.check(&format!("{name}: DmaBufDevice over /dev/udmabuf"), || {
        let exporter = io_op("Udmabuf::open", Udmabuf::open())?;
        Ok(manager(UdmabufDevice::new(exporter), true))
    });
    exporter_flows(ktap, &name, udmabuf, vgpu, exe, Foreign::Imports, before);
}

/// Memory of `mm` exported as a dma-buf, imported into extmem-vgpu.
fn into_vgpu<B: Backend>(
    mm: &mut MemoryManager<B>,
    memory: &DeviceMemory,
    vgpu: &mut VgpuMm,
) -> CheckResult<DeviceMemory> {
    let fd = vk_op("get_fd(DMA_BUF)", mm.get_fd(memory, Types::DMA_BUF_EXT))?;
    import_fd_ok(vgpu, Types::DMA_BUF_EXT, fd, SIZE, TYPE_DEVICE)
}

/// The five checks of one exporting backend.
fn exporter_flows<B: Backend>(
    ktap: &mut Ktap,
    name: &str,
    mm: Option<MemoryManager<B>>,
    vgpu: &mut Option<VgpuMm>,
    exe: &io::Result<PathBuf>,
    foreign: Foreign,
    fds_before: io::Result<std::collections::BTreeMap<u32, String>>,
) {
    let seed = u64::try_from(name.len()).unwrap_or(0) * 0x0101_0101;
    let what = format!("{name}: allocate 64 KiB exportable as DMA_BUF; no GPU VM, so gpu_va() is VK_ERROR_FEATURE_NOT_PRESENT; vkMapMemory and write a pattern; vkGetMemoryFdKHR twice gives two new close-on-exec O_RDWR fds of one dma-buf (same inode) whose lseek size is 64 KiB");
    let mut state = ktap.check_after(&what, mm, |mut mm| {
        let mut memory = allocate(&mut mm, &plain_request(SIZE, Types::DMA_BUF_EXT))?;
        let result = (|| {
            match memory.gpu_va() {
                Err(e @ Error::NotSupported { op: Op::Bind }) => expect_eq(
                    "gpu_va() result",
                    e.result(),
                    vk::Result::ERROR_FEATURE_NOT_PRESENT,
                )?,
                other => {
                    return Err(Failure::new(
                        "gpu_va() = NotSupported { op: Bind }",
                        format!("{other:?}"),
                    ))
                }
            }
            write_mapped(&mut mm, &mut memory, &pattern::bytes(seed, SIZE_LEN))?;
            let a = vk_op("get_fd", mm.get_fd(&memory, Types::DMA_BUF_EXT))?;
            let b = vk_op("get_fd again", mm.get_fd(&memory, Types::DMA_BUF_EXT))?;
            if a.as_raw_fd() == b.as_raw_fd() {
                return Err(Failure::new("two fd numbers", "the same one twice"));
            }
            for fd in [&a, &b] {
                let flags = io_op("F_GETFD", rustix::io::fcntl_getfd(fd))?;
                expect_eq("FD_CLOEXEC", flags.contains(FdFlags::CLOEXEC), true)?;
                let mode = io_op("F_GETFL", rustix::fs::fcntl_getfl(fd))? & OFlags::RWMODE;
                expect_eq("access mode", mode, OFlags::RDWR)?;
                expect_eq(
                    "lseek size",
                    io_op("lseek", dma_buf::size_by_seek(fd.as_fd()))?,
                    SIZE,
                )?;
            }
            expect_eq(
                "dma-buf identity of the two fds",
                io_op("fstat", dma_buf::identity(a.as_fd()))?,
                io_op("fstat", dma_buf::identity(b.as_fd()))?,
            )
        })();
        match result {
            Ok(()) => Ok((mm, memory)),
            Err(f) => {
                mm.free(memory);
                Err(f)
            }
        }
    });

    let what = format!("{name} -> extmem-vgpu: its dma-buf imported (the fd taken) and bound at a GPU VA; EXEC COPY into extmem-vgpu device memory gives the pattern; EXEC FILL of the import shows in {name}'s own mapping");
    let fill = 0x5a5a_0000 | u32::try_from(name.len()).unwrap_or(0);
    ktap.check_after(
        &what,
        state.as_mut().zip(vgpu.as_mut()),
        |((mm, memory), vgpu)| {
            let imported = into_vgpu(mm, memory, vgpu)?;
            let result = (|| {
                let mut local = allocate(vgpu, &plain_request(SIZE, Types::empty()))?;
                let copied = (|| {
                    exec(vgpu, &[copy_cmd(va(&imported), va(&local), SIZE)])?;
                    let seen = read_mapped(vgpu, &mut local, SIZE_LEN)?;
                    same_bytes("the GPU's copy", &pattern::bytes(seed, SIZE_LEN), &seen)
                })();
                vgpu.free(local);
                copied?;
                exec(vgpu, &[fill_cmd(va(&imported), fill, SIZE)])?;
                let seen = read_mapped(mm, memory, SIZE_LEN)?;
                same_bytes(
                    &format!("the fill through {name}'s map"),
                    &pattern::filled(fill, SIZE_LEN),
                    &seen,
                )
            })();
            vgpu.free(imported);
            result
        },
    );

    let what = if foreign == Foreign::Imports {
        format!("extmem-vgpu -> {name}: vgpu device memory exported as a dma-buf and imported into {name} (the fd taken); {name}'s map shows the bytes vgpu's map wrote")
    } else {
        format!("extmem-vgpu -> {name}: {name} refuses a dma-buf it did not export (ENODEV) with VK_ERROR_INVALID_EXTERNAL_HANDLE; the fd stays the application's, nothing is held")
    };
    ktap.check_after(
        &what,
        state.as_mut().zip(vgpu.as_mut()),
        |((mm, _), vgpu)| {
            let mut source = allocate(vgpu, &plain_request(SIZE, Types::DMA_BUF_EXT))?;
            let result = (|| {
                let bytes = pattern::bytes(seed ^ 0xffff, SIZE_LEN);
                write_mapped(vgpu, &mut source, &bytes)?;
                let fd = vk_op("get_fd", vgpu.get_fd(&source, Types::DMA_BUF_EXT))?;
                let handles = mm.live_handles();
                if foreign == Foreign::Refused {
                    let (result, kept, raw) =
                        import_fd(mm, Types::DMA_BUF_EXT, fd, SIZE, TYPE_DEVICE);
                    expect_error(mm, "the import", result, "INVALID_EXTERNAL_HANDLE", |e| {
                        e.result() == vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
                    })?;
                    expect_eq(
                        "the fd handed back",
                        kept.map(|fd| fd.as_raw_fd()),
                        Some(raw),
                    )?;
                    return expect_eq("handles held", mm.live_handles(), handles);
                }
                let mut imported = import_fd_ok(mm, Types::DMA_BUF_EXT, fd, SIZE, TYPE_DEVICE)?;
                let seen = read_mapped(mm, &mut imported, SIZE_LEN);
                mm.free(imported);
                same_bytes(
                    &format!("vgpu's bytes through {name}'s map"),
                    &bytes,
                    &seen?,
                )
            })();
            vgpu.free(source);
            result
        },
    );

    let what = format!("{name}: its dma-buf sent over a unix socket (SCM_RIGHTS) to a child process (core-flows child-import): its own extmem-vgpu manager imports it, sees the pattern and FILLs it on the GPU; {name}'s map sees the fill");
    let child_seed = 0x00c0_ffee_u32 ^ u32::try_from(name.len()).unwrap_or(0);
    ktap.check_after(&what, state.as_mut(), |(mm, memory)| {
        let exe = exe.as_ref().map_err(|e| Failure::op("current_exe", e))?;
        write_mapped(mm, memory, &pattern::bytes(u64::from(child_seed), SIZE_LEN))?;
        let fd = vk_op("get_fd", mm.get_fd(memory, Types::DMA_BUF_EXT))?;
        send_to_child(
            exe,
            "child-import",
            fd,
            encode(Types::DMA_BUF_EXT, child_seed, SIZE),
        )?;
        let seen = read_mapped(mm, memory, SIZE_LEN)?;
        same_bytes(
            "the child's fill",
            &pattern::filled(child_seed, SIZE_LEN),
            &seen,
        )
    });

    let what = format!("{name}: freed, its manager holds no handle; dropped, every fd opened since the group began is closed (extmem-vgpu holds none of its imports)");
    ktap.check_after(
        &what,
        state.zip(vgpu.as_ref()),
        |((mut mm, memory), vgpu)| {
            mm.free(memory);
            expect_eq("live handles", mm.live_handles(), 0)?;
            expect_eq("extmem-vgpu's live GEM handles", vgpu.live_handles(), 0)?;
            drop(mm);
            fd_table::closed_again(fds_before)
        },
    );
}

/// A sealed memfd of `SIZE` bytes mapped shared: the application memory udmabuf can import.
fn sealed_memfd_mapping() -> CheckResult<(OwnedFd, SharedMapping)> {
    let memfd = io_op(
        "memfd_create",
        rustix::fs::memfd_create(
            "backends-host",
            rustix::fs::MemfdFlags::ALLOW_SEALING | rustix::fs::MemfdFlags::CLOEXEC,
        ),
    )?;
    io_op("ftruncate", rustix::fs::ftruncate(&memfd, SIZE))?;
    io_op(
        "F_ADD_SEALS",
        rustix::fs::fcntl_add_seals(&memfd, rustix::fs::SealFlags::SHRINK),
    )?;
    let mapping = io_op("mmap", SharedMapping::new(memfd.as_fd(), 0, SIZE_LEN))?;
    Ok((memfd, mapping))
}

fn udmabuf_host_pointers(ktap: &mut Ktap, vgpu: &mut Option<VgpuMm>) {
    let what = "udmabuf host pointer: a pointer into a shared mapping of a sealed memfd imports as HOST_ALLOCATION (/proc/self/map_files + UDMABUF_CREATE); vkMapMemory gives back the pointer; the backend's dma-buf of it (Vulkan exports no host import) imported into extmem-vgpu, a GPU FILL shows at the application's pointer";
    ktap.check_after(what, vgpu.as_mut(), |vgpu| {
        let before = fd_table::snapshot();
        let exporter = io_op("Udmabuf::open", Udmabuf::open())?;
        let mut mm = manager(UdmabufDevice::new(exporter), true);
        let (memfd, mapping) = sealed_memfd_mapping()?;
        let req = host_request(Types::HOST_ALLOCATION_EXT, mapping.addr(), SIZE);
        let mut memory = allocate(&mut mm, &req)?;
        let result = (|| {
            let ptr = vk_op("map", mm.map(&mut memory))?;
            expect_eq("vkMapMemory pointer", ptr.get(), mapping.addr())?;
            // Vulkan exports no host import (09860), so the dma-buf comes from the backend
            // itself: it proves the udmabuf is the application's own pages.
            let fd = mm
                .backend_mut()
                .export_shared(memory.handle())
                .map_err(|e| Failure::op("UdmabufDevice::export_shared", e))?;
            let imported = import_fd_ok(vgpu, Types::DMA_BUF_EXT, fd, SIZE, TYPE_DEVICE)?;
            let filled_ok = exec(vgpu, &[fill_cmd(va(&imported), 0x1234_5678, SIZE)]);
            vgpu.free(imported);
            filled_ok?;
            same_bytes(
                "the fill at the application's pointer",
                &pattern::filled(0x1234_5678, SIZE_LEN),
                &mapping.read_all(),
            )
        })();
        mm.free(memory);
        result?;
        drop((mm, mapping, memfd));
        fd_table::closed_again(before)
    });

    let what = "udmabuf host pointer: an anonymous pointer cannot become a udmabuf, refused with VK_ERROR_INVALID_EXTERNAL_HANDLE (HostRangeRefused, EOPNOTSUPP); nothing held";
    ktap.check(what, || {
        let exporter = io_op("Udmabuf::open", Udmabuf::open())?;
        let mut mm = manager(UdmabufDevice::new(exporter), true);
        let anon = io_op("anonymous mmap", AnonMapping::read_write(SIZE_LEN))?;
        let req = host_request(Types::HOST_ALLOCATION_EXT, anon.addr(), SIZE);
        let result = mm.allocate(&req);
        expect_error(
            &mut mm,
            "the import",
            result,
            "HostRangeRefused { errno: EOPNOTSUPP }",
            |e| {
                matches!(
                    e,
                    Error::InvalidHandle(HandleError::HostRangeRefused {
                        errno: errno::EOPNOTSUPP,
                        ..
                    })
                ) && e.result() == vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
            },
        )?;
        expect_eq("handles held", mm.live_handles(), 0)
    });
}

/// A read-only dma-buf from the system dma-heap; on a kernel the runner declares without the
/// heap, a virtio-gpu dumb buffer exported without `DRM_RDWR` (also `O_RDONLY`), named as the
/// substitute.
fn read_only(ktap: &mut Ktap, vgpu: &mut Option<VgpuMm>) {
    match exporters::choose_expected(Exporter::SystemHeap, Exporter::VirtioGpu) {
        Ok(Choice {
            exporter: Exporter::VirtioGpu,
            instead: Some(why),
        }) => read_only_dumb(ktap, vgpu, &why),
        choice => read_only_heap(ktap, vgpu, choice),
    }
}

fn read_only_heap(ktap: &mut Ktap, vgpu: &mut Option<VgpuMm>, choice: io::Result<Choice>) {
    let what = "read-only dma-buf (dma-heap, O_RDONLY): imports into extmem-vgpu and the GPU copies out of it; vkMapMemory of the import and of the heap's own memory is refused with VK_ERROR_MEMORY_MAP_FAILED (EACCES), the message saying it is read-only; nothing held";
    ktap.check_after(what, vgpu.as_mut(), |vgpu| {
        choice.map_err(|e| Failure::op("choosing the exporter", e))?;
        let exporter = io_op("DmaHeap::open", DmaHeap::open(SYSTEM_HEAP))?;
        let mut mm = manager(DmaHeapDevice::new(exporter.read_only()), false);
        let mut memory = allocate(&mut mm, &plain_request(SIZE, Types::DMA_BUF_EXT))?;
        let result = (|| {
            match mm.map(&mut memory) {
                Err(e) if refused_read_only(&e) => {}
                other => {
                    return Err(Failure::new(
                        "the heap's map refused with EACCES",
                        format!("{:?}", other.map_err(|e| describe(&e))),
                    ))
                }
            }
            let fd = vk_op("get_fd", mm.get_fd(&memory, Types::DMA_BUF_EXT))?;
            // The heap zeroes what it hands out.
            import_read_only(vgpu, fd, "the heap's zeroes")
        })();
        mm.free(memory);
        result?;
        expect_eq("handles held", mm.live_handles(), 0)?;
        expect_eq("extmem-vgpu's live GEM handles", vgpu.live_handles(), 0)
    });
}

fn read_only_dumb(ktap: &mut Ktap, vgpu: &mut Option<VgpuMm>, why: &str) {
    let what = format!("read-only dma-buf (virtio-gpu dumb buffer exported without DRM_RDWR, O_RDONLY, {why}): imports into extmem-vgpu and the GPU copies out of it; vkMapMemory of the import is refused with VK_ERROR_MEMORY_MAP_FAILED (EACCES), the message saying it is read-only; nothing held");
    ktap.check_after(&what, vgpu.as_mut(), |vgpu| {
        let node = dri::open_by_driver(VIRTIO_GPU_DRIVER, NodeKind::Primary)
            .map_err(|e| Failure::new("a virtio-gpu card* node", e.to_string()))?;
        // 1024 pixels at 32 bpp is one 4 KiB row.
        let rows = u32::try_from(SIZE / 4096).map_err(|e| Failure::op("rows", e))?;
        let dumb = io_op("CREATE_DUMB", node.create_dumb(1024, rows, 32))?;
        let fd = node.export_read_only(dumb.handle);
        // The dma-buf holds the buffer; the node's handle may go.
        io_op("GEM_CLOSE", node.close_handle(dumb.handle))?;
        let fd = io_op("PRIME export without DRM_RDWR", fd)?;
        expect_eq("dumb buffer size", dumb.size, SIZE)?;
        // Dumb buffers are zeroed shmem pages.
        import_read_only(vgpu, fd, "the dumb buffer's zeroes")?;
        expect_eq("extmem-vgpu's live GEM handles", vgpu.live_handles(), 0)
    });
}

/// Whether `e` is the refusal to map read-only memory.
fn refused_read_only(e: &Error) -> bool {
    *e == Error::MemoryMapFailed {
        errno: errno::EACCES,
    } && e.result() == vk::Result::ERROR_MEMORY_MAP_FAILED
        && e.to_string().contains("read-only")
}

/// Imports the read-only dma-buf `fd` (zeroed memory) into extmem-vgpu: its access mode is
/// `O_RDONLY`, the import's map is refused, the GPU copies `zeroes` out of it.
fn import_read_only(vgpu: &mut VgpuMm, fd: OwnedFd, zeroes: &str) -> CheckResult<()> {
    let mode = io_op("F_GETFL", rustix::fs::fcntl_getfl(&fd))? & OFlags::RWMODE;
    expect_eq("the export's access mode", mode, OFlags::RDONLY)?;
    let mut imported = import_fd_ok(vgpu, Types::DMA_BUF_EXT, fd, SIZE, TYPE_DEVICE)?;
    let checked = (|| {
        match vgpu.map(&mut imported) {
            Err(e) if refused_read_only(&e) => {}
            other => {
                return Err(Failure::new(
                    "extmem-vgpu's map refused with EACCES",
                    format!("{:?}", other.map_err(|e| describe(&e))),
                ))
            }
        }
        let mut local = allocate(vgpu, &plain_request(SIZE, Types::empty()))?;
        write_mapped(vgpu, &mut local, &pattern::filled(0xdead_beef, SIZE_LEN))?;
        let copied = exec(vgpu, &[copy_cmd(va(&imported), va(&local), SIZE)]);
        let seen = read_mapped(vgpu, &mut local, SIZE_LEN);
        vgpu.free(local);
        copied?;
        same_bytes(
            &format!("the GPU's copy of {zeroes}"),
            &vec![0; SIZE_LEN],
            &seen?,
        )
    })();
    vgpu.free(imported);
    checked
}

fn render_node(ktap: &mut Ktap) {
    let what = "vgem render node: DrmPrime allocates nothing there (dumb buffers are primary-node only: EACCES, VK_ERROR_FEATURE_NOT_PRESENT) and holds nothing";
    ktap.check(what, || {
        let mut mm = drm_prime("vgem", NodeKind::Render)?;
        let result = mm.allocate(&plain_request(SIZE, Types::DMA_BUF_EXT));
        expect_error(
            &mut mm,
            "the allocation",
            result,
            "NotSupported { op: Create }",
            |e| {
                *e == Error::NotSupported { op: Op::Create }
                    && e.result() == vk::Result::ERROR_FEATURE_NOT_PRESENT
            },
        )?;
        expect_eq("handles held", mm.live_handles(), 0)
    });
}

/// `GEM_USERPTR` on extmem-vgpu answers every kind of host range as the shared table says,
/// read-only and writable, probed and pinned: the answers the software device's host test
/// holds extmem-softgpu to. Files go on the guest's tmpfs (`/dev/shm`). The guest has no
/// writable filesystem that writes back (its root is read-only 9p, `/tmp` is tmpfs), so
/// the shared mapping of such a file is left to the host test; this is said in a
/// diagnostic, not counted.
fn host_ranges_table(ktap: &mut Ktap, vgpu: &mut Option<VgpuMm>) {
    ktap.diagnostic(
        "host ranges: no writable filesystem that writes back in the guest (/ is read-only 9p), \
         so the WritebackFileShared row runs on the host only",
    );
    ktap.check(
        "host ranges: GEM_USERPTR answers each kind (anonymous rw/ro, memfd, tmpfs file shared, file private, PROT_NONE, hole) as the table",
        || {
            let vgpu = vgpu
                .as_mut()
                .ok_or_else(|| Failure::new("the extmem-vgpu manager", "not open"))?;
            let backend = vgpu.backend_mut();
            let mut wrong = Vec::new();
            for case in TABLE
                .iter()
                .filter(|c| c.kind != RangeKind::WritebackFileShared)
            {
                let range = HostRange::new(case.kind, std::path::Path::new("/dev/shm"))
                    .map_err(|e| Failure::op(format!("a {:?} range", case.kind), e))?;
                wrong.extend(mismatches(backend, &range, case));
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(Failure::new("the table's errno for every range", wrong.join("; ")))
            }
        },
    );
}
