//! guest-demo: shares buffers between virtio-gpu, vgem and a udmabuf on the real kernel and
//! says what it does in plain words, with sizes and timings. Exits non-zero on any wrong byte.
//!
//! virtio-gpu is the exporter: on Debian's 6.12 kernel it refuses to import dma-bufs it did not
//! export itself (see guest-env), while vgem imports any dma-buf.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use extmem_guest_tests::dri::{self, DrmNode, NodeKind};
use extmem_guest_tests::ktap::Failure;
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::{dma_buf, pattern, udmabuf};
use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};

/// 1024 x 1024 pixels at 32 bpp: 4 MiB.
const SIDE: u32 = 1024;
const BUFFER_SIZE: u64 = 4 * 1024 * 1024;

fn main() -> ExitCode {
    let started = Instant::now();
    match run() {
        Ok(()) => {
            println!(
                "demo: every byte matched; done in {}",
                human(started.elapsed())
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("demo: FAILED");
            println!("  expected: {}", failure.expected);
            println!("  seen:     {}", failure.seen);
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Failure> {
    let virtio = open("virtio_gpu", NodeKind::Primary)?;
    let vgem = open("vgem", NodeKind::Primary)?;
    println!(
        "demo: virtio-gpu is {}, vgem is {}",
        virtio.path.display(),
        vgem.path.display()
    );
    let len = usize::try_from(BUFFER_SIZE)
        .map_err(|_| Failure::new("4 MiB fits in usize", BUFFER_SIZE.to_string()))?;

    // 1. One dma-buf, exported by virtio-gpu, imported by vgem.
    let (buffer, took) = timed(|| virtio.create_dumb(SIDE, SIDE, 32));
    let buffer = buffer.map_err(|e| Failure::op("CREATE_DUMB on virtio-gpu", e))?;
    println!(
        "demo: virtio-gpu created a {SIDE}x{SIDE} dumb buffer, {} (pitch {}), in {}",
        bytes(buffer.size),
        buffer.pitch,
        human(took)
    );
    let exported = virtio
        .export(buffer.handle)
        .map_err(|e| Failure::op("PRIME export from virtio-gpu", e))?;
    let size = dma_buf::size_by_seek(exported.as_fd())
        .map_err(|e| Failure::op("lseek(SEEK_END) on the dma-buf", e))?;
    println!(
        "demo: exported it as a dma-buf; lseek(SEEK_END) says {}",
        bytes(size)
    );
    let handle = vgem
        .import(exported.as_fd())
        .map_err(|e| Failure::op("PRIME import into vgem", e))?;
    let through_vgem = vgem
        .export(handle)
        .map_err(|e| Failure::op("PRIME export from vgem", e))?;
    expect_same_inode(exported.as_fd(), through_vgem.as_fd())?;
    println!("demo: vgem imported it as handle {handle}; its re-export is the same dma-buf");

    let writer = map(exported.as_fd(), len)?;
    let reader = map(through_vgem.as_fd(), len)?;
    copy_and_compare(
        "virtio-gpu's mapping",
        &writer,
        exported.as_fd(),
        "vgem's",
        &reader,
        through_vgem.as_fd(),
        1,
    )?;
    copy_and_compare(
        "vgem's mapping",
        &reader,
        through_vgem.as_fd(),
        "virtio-gpu's",
        &writer,
        exported.as_fd(),
        2,
    )?;

    // 2. A udmabuf over a sealed memfd, imported by vgem.
    let device = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/udmabuf")
        .map_err(|e| Failure::op("open(/dev/udmabuf)", e))?;
    let memfd = memfd_create(
        "extmem-demo",
        MemfdFlags::ALLOW_SEALING | MemfdFlags::CLOEXEC,
    )
    .map_err(|e| Failure::op("memfd_create", e))?;
    ftruncate(&memfd, BUFFER_SIZE).map_err(|e| Failure::op("ftruncate(memfd)", e))?;
    fcntl_add_seals(&memfd, SealFlags::SHRINK)
        .map_err(|e| Failure::op("fcntl(F_ADD_SEALS, F_SEAL_SHRINK)", e))?;
    let (created, took) = timed(|| udmabuf::create(device.as_fd(), memfd.as_fd(), 0, BUFFER_SIZE));
    let udmabuf = created.map_err(|e| Failure::op("UDMABUF_CREATE", e))?;
    println!(
        "demo: made a udmabuf over a sealed {} memfd in {}",
        bytes(BUFFER_SIZE),
        human(took)
    );
    let handle = vgem
        .import(udmabuf.as_fd())
        .map_err(|e| Failure::op("PRIME import of the udmabuf into vgem", e))?;
    let udmabuf_via_vgem = vgem
        .export(handle)
        .map_err(|e| Failure::op("PRIME export from vgem", e))?;
    expect_same_inode(udmabuf.as_fd(), udmabuf_via_vgem.as_fd())?;
    println!("demo: vgem imported the udmabuf as handle {handle}");
    let memfd_map =
        SharedMapping::new(memfd.as_fd(), 0, len).map_err(|e| Failure::op("mmap(memfd)", e))?;
    let vgem_map = map(udmabuf_via_vgem.as_fd(), len)?;
    let expected = pattern::bytes(3, len);
    let (written, took) = timed(|| memfd_map.write(0, &expected));
    written.map_err(|e| Failure::op("writing the memfd mapping", e))?;
    println!(
        "demo: wrote {} through the memfd mapping in {}",
        bytes(BUFFER_SIZE),
        human(took)
    );
    let seen = dma_buf::with_cpu_access(udmabuf_via_vgem.as_fd(), || vgem_map.read_all())
        .map_err(|e| Failure::op("DMA_BUF_IOCTL_SYNC", e))?;
    compare(&expected, &seen, "vgem's view of the udmabuf")?;
    println!(
        "demo: vgem's view of the udmabuf matches all {} bytes",
        seen.len()
    );
    Ok(())
}

/// Writes a pattern through one mapping, reads it through the other, reports and compares.
fn copy_and_compare(
    from: &str,
    writer: &SharedMapping,
    writer_fd: BorrowedFd<'_>,
    to: &str,
    reader: &SharedMapping,
    reader_fd: BorrowedFd<'_>,
    seed: u64,
) -> Result<(), Failure> {
    let expected = pattern::bytes(seed, writer.len());
    let (written, took) =
        timed(|| dma_buf::with_cpu_access(writer_fd, || writer.write(0, &expected)));
    written
        .map_err(|e| Failure::op("DMA_BUF_IOCTL_SYNC", e))?
        .map_err(|e| Failure::op("writing the mapping", e))?;
    println!(
        "demo: wrote {} through {from} in {}",
        bytes(BUFFER_SIZE),
        human(took)
    );
    let (seen, took) = timed(|| dma_buf::with_cpu_access(reader_fd, || reader.read_all()));
    let seen = seen.map_err(|e| Failure::op("DMA_BUF_IOCTL_SYNC", e))?;
    let view = format!("{to} mapping");
    compare(&expected, &seen, &view)?;
    println!(
        "demo: read it back through {view} in {}: all {} bytes match",
        human(took),
        seen.len()
    );
    Ok(())
}

fn compare(expected: &[u8], seen: &[u8], view: &str) -> Result<(), Failure> {
    pattern::compare(expected, seen).map_err(|mismatch| {
        Failure::new(
            format!("{view} shows the {} bytes written", expected.len()),
            mismatch.to_string(),
        )
    })
}

fn open(driver: &str, kind: NodeKind) -> Result<DrmNode, Failure> {
    dri::open_by_driver(driver, kind)
        .map_err(|e| Failure::new(format!("a {driver} node"), e.to_string()))
}

fn map(fd: BorrowedFd<'_>, len: usize) -> Result<SharedMapping, Failure> {
    SharedMapping::new(fd, 0, len).map_err(|e| Failure::op("mmap(dma-buf)", e))
}

fn expect_same_inode(first: BorrowedFd<'_>, second: BorrowedFd<'_>) -> Result<(), Failure> {
    let a = dma_buf::identity(first).map_err(|e| Failure::op("fstat", e))?;
    let b = dma_buf::identity(second).map_err(|e| Failure::op("fstat", e))?;
    if a == b {
        Ok(())
    } else {
        Err(Failure::new(
            format!("the same dma-buf (inode {})", a.ino),
            format!("inode {}", b.ino),
        ))
    }
}

fn timed<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = work();
    (value, start.elapsed())
}

fn human(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros < 10_000 {
        format!("{micros} µs")
    } else {
        format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
    }
}

fn bytes(size: u64) -> String {
    if size >= 1024 * 1024 && size % (1024 * 1024) == 0 {
        format!("{} MiB", size / (1024 * 1024))
    } else if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} bytes")
    }
}
