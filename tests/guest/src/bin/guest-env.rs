//! guest-env: proves, on the real kernel, the buffer-sharing environment the rest of extmem
//! builds on — vgem and virtio-gpu exchanging dma-bufs through PRIME, udmabuf over a sealed
//! memfd, the system dma-heap (on a kernel the runner declares without one, a virtio-gpu dumb
//! buffer in its place, named in the checks) — and that the program leaves no descriptor open.
//!
//! One KTAP result per check; a failure says what was expected and what was seen.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;

use extmem_guest_tests::dri::{self, DrmNode, DumbBuffer, GemHandle, NodeKind};
use extmem_guest_tests::exporters::{self, Exporter};
use extmem_guest_tests::ktap::{CheckResult, Failure, KtapWriter};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::{dma_buf, fd_table, pattern, udmabuf};
use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::io::Errno;

/// Number of results this program writes; the runner fails it if fewer arrive.
const PLAN: usize = 20;

/// Dumb buffers: 256 x 256 pixels at 32 bpp, one 256 KiB buffer.
const DUMB_WIDTH: u32 = 256;
const DUMB_HEIGHT: u32 = 256;
const DUMB_BPP: u32 = 32;
const DUMB_PITCH: u32 = DUMB_WIDTH * DUMB_BPP / 8;
const DUMB_SIZE: u64 = 256 * 1024;

/// udmabuf and dma-heap buffers: 1 MiB.
const BUFFER_SIZE: u64 = 1024 * 1024;

fn main() -> ExitCode {
    let fds_before = fd_table::snapshot();
    let mut ktap = KtapWriter::stdout(PLAN);
    if let Ok(release) = fs::read_to_string("/proc/sys/kernel/osrelease") {
        ktap.diagnostic(format_args!("kernel {}", release.trim()));
    }

    // Everything the checks open lives inside this call and is dropped when it returns.
    run_checks(&mut ktap);

    ktap.check(
        "every descriptor the program opened is closed again",
        || fd_table::closed_again(fds_before),
    );
    ktap.finish()
}

fn run_checks(ktap: &mut KtapWriter<std::io::Stdout>) {
    let vgem = ktap.check(
        "vgem: a /dev/dri/card* node reports driver \"vgem\" (DRM_IOCTL_VERSION)",
        || find_node("vgem", NodeKind::Primary),
    );
    let virtio_card = ktap.check(
        "virtio-gpu: a /dev/dri/card* node reports driver \"virtio_gpu\"",
        || find_node("virtio_gpu", NodeKind::Primary),
    );
    let virtio_render = ktap.check(
        "virtio-gpu: a /dev/dri/renderD* node reports driver \"virtio_gpu\"",
        || find_node("virtio_gpu", NodeKind::Render),
    );

    vgem_to_virtio(ktap, vgem.as_ref(), virtio_render.as_ref());
    virtio_to_vgem(
        ktap,
        virtio_card.as_ref(),
        virtio_render.as_ref(),
        vgem.as_ref(),
    );
    udmabuf_checks(ktap, vgem.as_ref());
    dma_heap_checks(ktap);
}

/// A vgem dumb buffer exported and mapped both ways; virtio-gpu refusing to import it.
fn vgem_to_virtio(
    ktap: &mut KtapWriter<std::io::Stdout>,
    vgem: Option<&DrmNode>,
    virtio_render: Option<&DrmNode>,
) {
    let buffer = ktap.check_after(
        "vgem: CREATE_DUMB 256x256 at 32 bpp gives a 256 KiB buffer with pitch 1024",
        vgem,
        create_dumb,
    );
    let exported = ktap.check_after(
        "vgem: PRIME_HANDLE_TO_FD (DRM_CLOEXEC | DRM_RDWR) exports the buffer as a dma-buf",
        vgem.zip(buffer),
        |(vgem, buffer)| export(vgem, buffer.handle),
    );
    ktap.check_after(
        "vgem dma-buf: lseek(fd, 0, SEEK_END) returns the buffer size",
        exported.as_ref(),
        |fd| expect_size(fd.as_fd(), DUMB_SIZE),
    );
    ktap.check_after(
        "vgem: bytes written through MAP_DUMB read back through the dma-buf mmap, and the reverse",
        vgem.zip(buffer).zip(exported.as_ref()),
        |((vgem, buffer), dma_buf)| {
            let dumb = map_dumb(vgem, buffer)?;
            let shared = map_dma_buf(dma_buf.as_fd(), DUMB_SIZE)?;
            round_trip(&dumb, None, &shared, Some(dma_buf.as_fd()), 1)?;
            round_trip(&shared, Some(dma_buf.as_fd()), &dumb, None, 2)
        },
    );
    // virtio-gpu imports only dma-bufs it exported itself: in 6.12 its
    // `gem_prime_import_sg_table` returns -ENODEV for anyone else's. This pins that behaviour, so
    // a kernel that lifts it fails here and the check can become a foreign-import round trip.
    ktap.check_after(
        "virtio-gpu: PRIME_FD_TO_HANDLE of the vgem dma-buf fails with ENODEV (imports only its own)",
        virtio_render.zip(exported.as_ref()),
        |(virtio, dma_buf)| match virtio.import(dma_buf.as_fd()) {
            Err(err) if err.raw_os_error() == Some(Errno::NODEV.raw_os_error()) => Ok(()),
            Err(err) => Err(Failure::new("ENODEV", format!("error {err}"))),
            Ok(handle) => Err(Failure::new(
                "ENODEV",
                format!("handle {handle}: this kernel's virtio-gpu imports foreign dma-bufs"),
            )),
        },
    );
}

/// The working direction: a virtio-gpu dumb buffer exported, imported back by virtio-gpu's render
/// node and by vgem, each re-export being the same dma-buf.
fn virtio_to_vgem(
    ktap: &mut KtapWriter<std::io::Stdout>,
    virtio_card: Option<&DrmNode>,
    virtio_render: Option<&DrmNode>,
    vgem: Option<&DrmNode>,
) {
    let exported = ktap.check_after(
        "virtio-gpu: CREATE_DUMB 256x256 at 32 bpp and PRIME export give a 256 KiB dma-buf",
        virtio_card,
        |virtio| {
            let buffer = create_dumb(virtio)?;
            let fd = export(virtio, buffer.handle)?;
            expect_size(fd.as_fd(), DUMB_SIZE)?;
            Ok(fd)
        },
    );
    ktap.check_after(
        "virtio-gpu: the render node imports that dma-buf; its re-export is the same dma-buf, bytes shared both ways",
        virtio_render.zip(exported.as_ref()),
        |(virtio, original)| reimport_round_trip(virtio, original.as_fd(), 3),
    );
    ktap.check_after(
        "vgem: imports the virtio-gpu dma-buf; its re-export is the same dma-buf, bytes shared both ways",
        vgem.zip(exported.as_ref()),
        |(vgem, original)| reimport_round_trip(vgem, original.as_fd(), 5),
    );
}

/// Imports `original` into `node`, exports the handle again and checks both descriptors name one
/// dma-buf whose mappings share bytes both ways.
fn reimport_round_trip(node: &DrmNode, original: BorrowedFd<'_>, seed: u64) -> CheckResult<()> {
    let handle = import(node, original)?;
    let again = export(node, handle)?;
    same_dma_buf(original, again.as_fd())?;
    let first = map_dma_buf(original, DUMB_SIZE)?;
    let second = map_dma_buf(again.as_fd(), DUMB_SIZE)?;
    round_trip(&first, Some(original), &second, Some(again.as_fd()), seed)?;
    round_trip(
        &second,
        Some(again.as_fd()),
        &first,
        Some(original),
        seed + 1,
    )
}

/// A udmabuf over a sealed memfd: sealing enforced, size, bytes both ways, import into vgem.
fn udmabuf_checks(ktap: &mut KtapWriter<std::io::Stdout>, vgem: Option<&DrmNode>) {
    let setup = ktap.check(
        "udmabuf: UDMABUF_CREATE refuses a memfd without F_SEAL_SHRINK (EINVAL)",
        || {
            let device = open_rw("/dev/udmabuf")?;
            let memfd = memfd_create(
                "extmem-udmabuf",
                MemfdFlags::ALLOW_SEALING | MemfdFlags::CLOEXEC,
            )
            .map_err(|e| Failure::op("memfd_create(MFD_ALLOW_SEALING)", e))?;
            ftruncate(&memfd, BUFFER_SIZE)
                .map_err(|e| Failure::op("ftruncate(memfd, 1 MiB)", e))?;
            match udmabuf::create(device.as_fd(), memfd.as_fd(), 0, BUFFER_SIZE) {
                Err(err) if err.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                    Ok((device, memfd))
                }
                Err(err) => Err(Failure::new("EINVAL", format!("error {err}"))),
                Ok(_) => Err(Failure::new("EINVAL", "a dma-buf for an unsealed memfd")),
            }
        },
    );
    let created = ktap.check_after(
        "udmabuf: UDMABUF_CREATE on the memfd sealed with F_SEAL_SHRINK gives a dma-buf",
        setup.as_ref(),
        |(device, memfd)| {
            fcntl_add_seals(memfd, SealFlags::SHRINK)
                .map_err(|e| Failure::op("fcntl(F_ADD_SEALS, F_SEAL_SHRINK)", e))?;
            udmabuf::create(device.as_fd(), memfd.as_fd(), 0, BUFFER_SIZE)
                .map_err(|e| Failure::op("UDMABUF_CREATE", e))
        },
    );
    ktap.check_after(
        "udmabuf: lseek(fd, 0, SEEK_END) returns the memfd size",
        created.as_ref(),
        |fd| expect_size(fd.as_fd(), BUFFER_SIZE),
    );
    ktap.check_after(
        "udmabuf: bytes written through the memfd mapping read back through the dma-buf mmap, and the reverse",
        setup.as_ref().zip(created.as_ref()),
        |((_, memfd), dma_buf)| {
            let memfd_map = SharedMapping::new(memfd.as_fd(), 0, as_len(BUFFER_SIZE)?)
                .map_err(|e| Failure::op("mmap(memfd)", e))?;
            let shared = map_dma_buf(dma_buf.as_fd(), BUFFER_SIZE)?;
            round_trip(&memfd_map, None, &shared, Some(dma_buf.as_fd()), 7)?;
            round_trip(&shared, Some(dma_buf.as_fd()), &memfd_map, None, 8)
        },
    );
    ktap.check_after(
        "vgem: imports the udmabuf; its re-export is the same dma-buf with the memfd's bytes",
        vgem.zip(setup.as_ref()).zip(created.as_ref()),
        |((vgem, (_, memfd)), original)| {
            let handle = import(vgem, original.as_fd())?;
            let again = export(vgem, handle)?;
            same_dma_buf(original.as_fd(), again.as_fd())?;
            let memfd_map = SharedMapping::new(memfd.as_fd(), 0, as_len(BUFFER_SIZE)?)
                .map_err(|e| Failure::op("mmap(memfd)", e))?;
            let shared = map_dma_buf(again.as_fd(), BUFFER_SIZE)?;
            round_trip(&memfd_map, None, &shared, Some(again.as_fd()), 9)
        },
    );
}

/// The system dma-heap: allocate, size, write and read back through a fresh mapping. On a
/// kernel the runner declares without it (Debian's arm64 builds leave `CONFIG_DMABUF_HEAPS`
/// unset), the same three checks run over a virtio-gpu dumb buffer, named as the substitute.
fn dma_heap_checks(ktap: &mut KtapWriter<std::io::Stdout>) {
    let choice = exporters::choose_expected(Exporter::SystemHeap, Exporter::VirtioGpu);
    let label = match &choice {
        Ok(choice) => choice.to_string(),
        Err(_) => Exporter::SystemHeap.name().to_owned(),
    };
    let allocated = ktap.check(
        &format!("{label}: a 1 MiB dma-buf (DMA_HEAP_IOCTL_ALLOC from /dev/dma_heap/system, or the substitute's export)"),
        || {
            let choice = choice.map_err(|e| Failure::op("choosing the exporter", e))?;
            Ok(choice.exporter.export(BUFFER_SIZE)?.dma_buf)
        },
    );
    ktap.check_after(
        &format!("{label}: lseek(fd, 0, SEEK_END) returns the allocated size"),
        allocated.as_ref(),
        |fd| expect_size(fd.as_fd(), BUFFER_SIZE),
    );
    ktap.check_after(
        &format!("{label}: bytes written through one mmap read back through a second, later mmap"),
        allocated.as_ref(),
        |fd| {
            let expected = pattern::bytes(10, as_len(BUFFER_SIZE)?);
            {
                let first = map_dma_buf(fd.as_fd(), BUFFER_SIZE)?;
                dma_buf::with_cpu_access(fd.as_fd(), || first.write(0, &expected))
                    .map_err(|e| Failure::op("DMA_BUF_IOCTL_SYNC", e))?
                    .map_err(|e| Failure::op("writing the mapping", e))?;
            }
            let second = map_dma_buf(fd.as_fd(), BUFFER_SIZE)?;
            let seen = dma_buf::with_cpu_access(fd.as_fd(), || second.read_all())
                .map_err(|e| Failure::op("DMA_BUF_IOCTL_SYNC", e))?;
            pattern::compare(&expected, &seen).map_err(|m| {
                Failure::new("the bytes written through the first mapping", m.to_string())
            })
        },
    );
}

fn find_node(driver: &str, kind: NodeKind) -> CheckResult<DrmNode> {
    dri::open_by_driver(driver, kind).map_err(|err| {
        Failure::new(
            format!("a {kind:?} node of driver {driver}"),
            err.to_string(),
        )
    })
}

fn create_dumb(node: &DrmNode) -> CheckResult<DumbBuffer> {
    let buffer = node
        .create_dumb(DUMB_WIDTH, DUMB_HEIGHT, DUMB_BPP)
        .map_err(|e| Failure::op(format!("CREATE_DUMB on {}", node.path.display()), e))?;
    if buffer.size == DUMB_SIZE && buffer.pitch == DUMB_PITCH {
        Ok(buffer)
    } else {
        Err(Failure::new(
            format!("size {DUMB_SIZE}, pitch {DUMB_PITCH}"),
            format!("size {}, pitch {}", buffer.size, buffer.pitch),
        ))
    }
}

fn export(node: &DrmNode, handle: GemHandle) -> CheckResult<OwnedFd> {
    node.export(handle).map_err(|e| {
        Failure::op(
            format!(
                "PRIME_HANDLE_TO_FD of handle {handle} on {}",
                node.path.display()
            ),
            e,
        )
    })
}

fn import(node: &DrmNode, dma_buf: BorrowedFd<'_>) -> CheckResult<GemHandle> {
    node.import(dma_buf)
        .map_err(|e| Failure::op(format!("PRIME_FD_TO_HANDLE on {}", node.path.display()), e))
}

fn expect_size(dma_buf: BorrowedFd<'_>, expected: u64) -> CheckResult<()> {
    let size = dma_buf::size_by_seek(dma_buf).map_err(|e| Failure::op("lseek(SEEK_END)", e))?;
    if size == expected {
        Ok(())
    } else {
        Err(Failure::new(
            format!("{expected} bytes"),
            format!("{size} bytes"),
        ))
    }
}

fn same_dma_buf(first: BorrowedFd<'_>, second: BorrowedFd<'_>) -> CheckResult<()> {
    let a = dma_buf::identity(first).map_err(|e| Failure::op("fstat", e))?;
    let b = dma_buf::identity(second).map_err(|e| Failure::op("fstat", e))?;
    if a == b {
        Ok(())
    } else {
        Err(Failure::new(
            format!("the original dma-buf (inode {})", a.ino),
            format!("a different dma-buf (inode {})", b.ino),
        ))
    }
}

fn map_dumb(node: &DrmNode, buffer: DumbBuffer) -> CheckResult<SharedMapping> {
    let offset = node
        .map_dumb_offset(buffer.handle)
        .map_err(|e| Failure::op("MAP_DUMB", e))?;
    SharedMapping::new(node.as_fd(), offset, as_len(buffer.size)?).map_err(|e| {
        Failure::op(
            format!("mmap of {} at the MAP_DUMB offset", node.path.display()),
            e,
        )
    })
}

fn map_dma_buf(dma_buf: BorrowedFd<'_>, size: u64) -> CheckResult<SharedMapping> {
    SharedMapping::new(dma_buf, 0, as_len(size)?).map_err(|e| Failure::op("mmap(dma-buf)", e))
}

/// Writes a pattern through `writer` and reads it back through `reader`; a mapping of a dma-buf
/// is accessed inside `DMA_BUF_IOCTL_SYNC` brackets on that dma-buf.
fn round_trip(
    writer: &SharedMapping,
    writer_dma_buf: Option<BorrowedFd<'_>>,
    reader: &SharedMapping,
    reader_dma_buf: Option<BorrowedFd<'_>>,
    seed: u64,
) -> CheckResult<()> {
    let expected = pattern::bytes(seed, writer.len());
    bracketed(writer_dma_buf, || writer.write(0, &expected))?
        .map_err(|e| Failure::op("writing the mapping", e))?;
    let seen = bracketed(reader_dma_buf, || reader.read_all())?;
    pattern::compare(&expected, &seen).map_err(|mismatch| {
        Failure::new(
            format!(
                "the {} bytes written through the other mapping",
                expected.len()
            ),
            mismatch.to_string(),
        )
    })
}

fn bracketed<T>(dma_buf: Option<BorrowedFd<'_>>, access: impl FnOnce() -> T) -> CheckResult<T> {
    match dma_buf {
        Some(fd) => {
            dma_buf::with_cpu_access(fd, access).map_err(|e| Failure::op("DMA_BUF_IOCTL_SYNC", e))
        }
        None => Ok(access()),
    }
}

fn open_rw(path: &str) -> CheckResult<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Failure::op(format!("open({path}, O_RDWR)"), e))
}

fn as_len(size: u64) -> CheckResult<usize> {
    usize::try_from(size).map_err(|_| Failure::new("a size that fits in usize", size.to_string()))
}
