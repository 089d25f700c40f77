//! vk-demo: what extmem does, shown through Vulkan as an application uses it — the Khronos
//! loader, extmem-icd and the extmem-vgpu kernel driver, under the Khronos validation layer.
//!
//! 1. A 4 MiB host allocation is imported (`VK_EXT_external_memory_host`) and copied by the GPU
//!    into device memory.
//! 2. That device memory is exported as a dma-buf, which vgem imports (`PRIME_FD_TO_HANDLE`);
//!    the bytes are checked through the dma-buf's own mmap (vgem cannot mmap imported objects).
//! 3. A foreign dma-buf (a udmabuf over a memfd) is imported and filled by the GPU; the memfd
//!    shows the fill.
//! 4. The device memory goes to a second process as an opaque fd over a unix socket
//!    (`SCM_RIGHTS`); it imports it, checks the bytes and fills half of it on its GPU; the first
//!    process sees that half change.
//! 5. A compositor's buffer: GBM allocates a linear ARGB8888 buffer on the virtio-gpu node and
//!    the CPU writes an image through GBM's mapping; its dma-buf is imported
//!    (`VK_EXT_external_memory_dma_buf`), the GPU copies it out, then copies a second image in,
//!    which GBM's mapping and the dma-buf's mmap show.
//! 6. Synchronised sharing: device memory and a timeline semaphore go to a second process
//!    as opaque fds (`VK_KHR_external_semaphore_fd`). This process's GPU fills the memory
//!    and signals 1 without waiting; the second process waits for 1 on the host, checks
//!    every byte, and has its GPU fill it again and signal 2; this process waits for 2 and
//!    sees the second fill. Nobody calls vkQueueWaitIdle.
//!
//! Every step says what it did in plain words, with sizes and timings. Exit status non-zero on
//! any wrong byte or failed call. `vk-demo child` is the second process of step 4 and
//! `vk-demo sync-child` that of step 6 (their socket is stdin).

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use ash::vk;
use extmem_guest_tests::dri::{self, NodeKind};
use extmem_guest_tests::fd_passing::FdChild;
use extmem_guest_tests::gbm_buffer::{self, GbmBuffer, ImportedBuffer};
use extmem_guest_tests::host_memory::{HeapBuffer, RawBytes};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::vulkan::{self, recv_fd, send_fd, FdMessage, Gpu, Instance};
use extmem_guest_tests::vulkan_sync::{SemTypes, SyncBatch};
use extmem_guest_tests::{dma_buf, pattern, udmabuf};

type Types = vk::ExternalMemoryHandleTypeFlags;

/// 4 MiB: the size of every buffer in the demo.
const SIZE: u64 = 4 << 20;
const LEN: usize = 4 << 20;
/// What the GPU writes into the udmabuf.
const UDMABUF_VALUE: u32 = 0xd00d_f00d;
/// What the second process writes into the second half of the shared memory.
const CHILD_VALUE: u32 = 0x0c0f_fee0;
/// The GBM buffer's size in ARGB8888 pixels: 4 MiB.
const GBM_WIDTH: u32 = 1024;
const GBM_HEIGHT: u32 = 1024;

fn main() -> ExitCode {
    let role = std::env::args().nth(1);
    let child = matches!(role.as_deref(), Some("child" | "sync-child"));
    let started = Instant::now();
    let result = match role.as_deref() {
        Some("child") => run_child(),
        Some("sync-child") => run_sync_child(),
        _ => run(),
    };
    match result {
        Ok(()) if child => ExitCode::SUCCESS,
        Ok(()) => {
            println!(
                "demo: every byte matched; done in {}",
                human(started.elapsed())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "demo{}: FAILED: {e}",
                if child { " (second process)" } else { "" }
            );
            ExitCode::FAILURE
        }
    }
}

type Step<T> = Result<T, String>;

fn io_step<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> Step<T> {
    result.map_err(|e| format!("{what}: {e}"))
}

fn check_bytes(view: &str, expected: &[u8], seen: &[u8]) -> Step<()> {
    pattern::compare(expected, seen).map_err(|m| format!("{view}: {m}"))
}

fn run() -> Step<()> {
    let manifest = io_step("finding the ICD manifest", vulkan::isolate_loader())?;
    gbm_buffer::configure_mesa();
    let entry = vulkan::load()?;
    let validation = vulkan::validation_available(&entry);
    let (instance, took) = timed(|| Instance::new(&entry, validation));
    let instance = instance?;
    println!(
        "demo: the Khronos loader loaded extmem-icd ({}){} in {}",
        manifest.display(),
        if validation {
            ", under VK_LAYER_KHRONOS_validation,"
        } else {
            " (the validation layer is not installed)"
        },
        human(took)
    );
    let gpu = Gpu::new(&instance)?;
    // SAFETY: a live physical device.
    let props = unsafe {
        instance
            .instance
            .get_physical_device_properties(gpu.physical)
    };
    let name = props
        .device_name_as_c_str()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (device_uuid, _) = instance.uuids(gpu.physical);
    let alignment = instance.host_pointer_alignment(gpu.physical);
    println!(
        "demo: device {name}, deviceUUID {}, minImportedHostPointerAlignment {alignment} bytes",
        hex(&device_uuid),
    );

    // 1. Host allocation → GPU copy → device memory, aligned as the device asks (the CPU
    // page: 4 or 16 KiB).
    let alignment = io_step("the alignment as a length", usize::try_from(alignment))?;
    let heap = io_step(
        "allocating 4 MiB on the heap",
        HeapBuffer::new(LEN, alignment),
    )?;
    let expected = pattern::bytes(1, LEN);
    io_step("writing the heap buffer", heap.write(0, &expected))?;
    let ptr = heap.base().as_ptr().cast::<c_void>();
    let (host_mem, took) =
        // SAFETY: the heap buffer outlives the import (freed before it drops, below).
        timed(|| unsafe { gpu.import_host(ptr, SIZE, Types::HOST_ALLOCATION_EXT) });
    let host_mem = host_mem?;
    println!(
        "demo: imported a {} heap allocation at {ptr:p} as VkDeviceMemory (pinned, no copy) in {}",
        bytes(SIZE),
        human(took)
    );
    let device_mem = gpu.allocate(SIZE, Types::OPAQUE_FD | Types::DMA_BUF_EXT)?;
    let result = (|| {
        let src = gpu.buffer(host_mem, SIZE, Types::HOST_ALLOCATION_EXT)?;
        let dst = gpu.buffer(device_mem, SIZE, Types::OPAQUE_FD | Types::DMA_BUF_EXT);
        let copied = dst.and_then(|dst| {
            let copied = timed(|| gpu.copy(src, dst, SIZE));
            gpu.destroy_buffer(dst);
            copied.0.map(|()| copied.1)
        });
        gpu.destroy_buffer(src);
        let took = copied?;
        println!(
            "demo: the GPU copied it into device memory in {} ({})",
            human(took),
            rate(SIZE, took)
        );
        let seen = gpu.read(device_mem, 0, LEN)?;
        check_bytes("the device memory (vkMapMemory)", &expected, &seen)?;
        println!(
            "demo: vkMapMemory of the device memory shows all {} bytes",
            seen.len()
        );
        Ok::<(), String>(())
    })();
    gpu.free(host_mem);
    drop(heap);
    let result = result
        .and_then(|()| share_with_vgem(&gpu, device_mem, &expected))
        .and_then(|()| foreign_udmabuf(&gpu))
        .and_then(|()| share_with_process(&gpu, device_mem, &expected))
        .and_then(|()| compositor_buffer(&gpu))
        .and_then(|()| synchronised_sharing(&gpu));
    gpu.free(device_mem);
    drop(gpu);
    drop(instance);
    result?;
    if validation {
        let count = vulkan::validation_message_count();
        if count != 0 {
            return Err(format!(
                "the validation layer reported {count} messages: {}",
                vulkan::validation_messages().join(" | ")
            ));
        }
        println!("demo: the validation layer reported nothing");
    }
    Ok(())
}

/// Step 2: the device memory as a dma-buf, imported by vgem, checked through its mmap.
fn share_with_vgem(gpu: &Gpu<'_>, memory: vk::DeviceMemory, expected: &[u8]) -> Step<()> {
    let vgem = io_step(
        "opening vgem",
        dri::open_by_driver("vgem", NodeKind::Primary),
    )?;
    let (fd, took) = timed(|| gpu.export_fd(memory, Types::DMA_BUF_EXT));
    let fd = fd?;
    let size = io_step("lseek(SEEK_END)", dma_buf::size_by_seek(fd.as_fd()))?;
    println!(
        "demo: exported the device memory as dma-buf fd {} ({}) in {}",
        fd.as_raw_fd(),
        bytes(size),
        human(took)
    );
    let (handle, took) = timed(|| vgem.import(fd.as_fd()));
    let handle = io_step("PRIME_FD_TO_HANDLE on vgem", handle)?;
    let again = io_step("PRIME_HANDLE_TO_FD on vgem", vgem.export(handle))?;
    let (a, b) = (
        io_step("fstat", dma_buf::identity(fd.as_fd()))?,
        io_step("fstat", dma_buf::identity(again.as_fd()))?,
    );
    if a != b {
        return Err("vgem's re-export is a different dma-buf".into());
    }
    println!(
        "demo: vgem ({}) imported it as GEM handle {} in {}; its re-export is the same dma-buf",
        vgem.path.display(),
        handle.0,
        human(took)
    );
    let mapping = io_step("mmap(dma-buf)", SharedMapping::new(fd.as_fd(), 0, LEN))?;
    let (seen, took) = timed(|| dma_buf::with_cpu_access(fd.as_fd(), || mapping.read_all()));
    let seen = io_step("DMA_BUF_IOCTL_SYNC", seen)?;
    check_bytes("the dma-buf's mmap", expected, &seen)?;
    println!(
        "demo: the dma-buf's own mmap shows all {} bytes ({} to read)",
        seen.len(),
        human(took)
    );
    io_step("GEM_CLOSE on vgem", vgem.close_handle(handle))
}

/// Step 3: a udmabuf imported and filled by the GPU.
fn foreign_udmabuf(gpu: &Gpu<'_>) -> Step<()> {
    let (memfd, buf) = io_step(
        "a udmabuf over a sealed memfd",
        udmabuf::over_sealed_memfd("vk-demo", SIZE),
    )?;
    let (imported, took) = timed(|| gpu.import_dma_buf(buf, SIZE));
    let (memory, bits) = imported?;
    println!(
        "demo: imported a {} udmabuf (over a sealed memfd; memoryTypeBits {bits:#b}) in {}",
        bytes(SIZE),
        human(took)
    );
    let filled = gpu
        .buffer(memory, SIZE, Types::DMA_BUF_EXT)
        .and_then(|buffer| {
            let filled = timed(|| gpu.fill(buffer, SIZE, UDMABUF_VALUE));
            gpu.destroy_buffer(buffer);
            filled.0.map(|()| filled.1)
        });
    gpu.free(memory);
    let took = filled?;
    println!(
        "demo: the GPU filled it with {UDMABUF_VALUE:#010x} in {} ({})",
        human(took),
        rate(SIZE, took)
    );
    let view = io_step("mmap(memfd)", SharedMapping::new(memfd.as_fd(), 0, LEN))?;
    check_bytes(
        "the memfd",
        &vulkan::fill_pattern(UDMABUF_VALUE, LEN),
        &view.read_all(),
    )?;
    println!("demo: the memfd shows the fill in all {LEN} bytes");
    Ok(())
}

/// Step 4: the device memory shared with a second process by opaque fd.
fn share_with_process(gpu: &Gpu<'_>, memory: vk::DeviceMemory, expected: &[u8]) -> Step<()> {
    let fd = gpu.export_fd(memory, Types::OPAQUE_FD)?;
    let started = Instant::now();
    let child = io_step(
        "starting the second process",
        FdChild::spawn(&["child"], Stdio::inherit()),
    )?;
    println!(
        "demo: started a second process (pid {}); sending it opaque fd {} over a unix socket (SCM_RIGHTS)",
        child.id(),
        fd.as_raw_fd()
    );
    let sent = send_fd(
        child.socket(),
        fd.as_fd(),
        FdMessage {
            size: SIZE,
            value: CHILD_VALUE,
        },
    );
    drop(fd);
    let ended = child.finish();
    io_step("sendmsg(SCM_RIGHTS)", sent)?;
    ended.map_err(|e| format!("the second process: {e}"))?;
    let took = started.elapsed();
    let seen = gpu.read(memory, 0, LEN)?;
    let half = LEN / 2;
    let mut model = expected.to_vec();
    model[half..].copy_from_slice(&vulkan::fill_pattern(CHILD_VALUE, LEN - half));
    check_bytes("the shared memory after the second process", &model, &seen)?;
    println!(
        "demo: back here, the first half still holds the copied bytes and the second half the other process's fill ({} round trip, its own loader and device included)",
        human(took)
    );
    Ok(())
}

/// Step 5: a GBM buffer on virtio-gpu, imported as a dma-buf, copied out and written by the GPU.
fn compositor_buffer(gpu: &Gpu<'_>) -> Step<()> {
    let (buffer, took) = timed(|| GbmBuffer::allocate(GBM_WIDTH, GBM_HEIGHT));
    let mut buffer = buffer?;
    println!(
        "demo: GBM (backend {:?}) allocated a {GBM_WIDTH}x{GBM_HEIGHT} ARGB8888 linear buffer on {} ({}): stride {}, a {} dma-buf, in {}",
        buffer.backend(),
        buffer.node().path.display(),
        buffer.node().driver,
        buffer.stride(),
        bytes(buffer.size()),
        human(took)
    );
    let (first, second) = gbm_buffer::images(buffer.len());
    let (written, took) = timed(|| buffer.write_through_gbm(&first));
    written?;
    println!(
        "demo: the CPU wrote an image into it through gbm_bo_map in {}",
        human(took)
    );
    let fd = buffer.export()?;
    let raw = fd.as_raw_fd();
    let (imported, took) = timed(|| ImportedBuffer::new(gpu, fd, buffer.size()));
    let imported = imported?;
    println!(
        "demo: imported its dma-buf fd {raw} with VK_EXT_external_memory_dma_buf (memoryTypeBits {:#b}) in {}",
        imported.memory_type_bits,
        human(took)
    );
    let (seen, took) = timed(|| imported.read_by_gpu(first.len()));
    check_bytes("the GPU's copy of the GBM buffer", &first, &seen?)?;
    println!(
        "demo: the GPU copied it out in {}; all {} bytes are the image",
        human(took),
        first.len()
    );
    let (written, took) = timed(|| imported.write_by_gpu(&second));
    written?;
    check_bytes(
        "the dma-buf's mmap",
        &second,
        &buffer.read_through_dma_buf()?,
    )?;
    check_bytes("gbm_bo_map", &second, &buffer.read_through_gbm()?)?;
    println!(
        "demo: the GPU copied a second image into it in {}; gbm_bo_map and the dma-buf's mmap show all {} bytes",
        human(took),
        second.len()
    );
    Ok(())
}

/// The second process: receives the opaque fd on stdin (a unix socket), imports it into its
/// own device, checks the first half, fills the second half.
fn run_child() -> Step<()> {
    let entry = vulkan::load()?;
    let instance = Instance::new(&entry, vulkan::validation_available(&entry))?;
    let gpu = Gpu::new(&instance)?;
    let (fd, message) = io_step("recvmsg", recv_fd(io::stdin().as_fd()))?;
    let raw = fd.as_raw_fd();
    let type_index = gpu.device_local_type()?;
    let (memory, took) = timed(|| gpu.import_fd(fd, Types::OPAQUE_FD, message.size, type_index));
    let memory = memory?;
    println!(
        "demo (second process): received fd {raw} and imported it as {} of device memory in {}",
        bytes(message.size),
        human(took)
    );
    let result = (|| {
        let len = usize::try_from(message.size).map_err(|e| e.to_string())?;
        let half = len / 2;
        let seen = gpu.read(memory, 0, half)?;
        check_bytes(
            "the first half, in the second process",
            &pattern::bytes(1, len)[..half],
            &seen,
        )?;
        println!(
            "demo (second process): the first half shows the bytes the first process's GPU copied"
        );
        let buffer = gpu.buffer(memory, message.size, Types::OPAQUE_FD)?;
        let filled = timed(|| {
            gpu.run(|device, cb| {
                let offset = message.size / 2;
                // SAFETY: recording; the buffer is bound and `size` bytes long.
                unsafe {
                    device.cmd_fill_buffer(cb, buffer, offset, vk::WHOLE_SIZE, message.value)
                };
            })
        });
        gpu.destroy_buffer(buffer);
        let took = filled.0.map(|()| filled.1)?;
        println!(
            "demo (second process): its GPU filled the second half with {:#010x} in {}",
            message.value,
            human(took)
        );
        Ok::<(), String>(())
    })();
    gpu.free(memory);
    drop(gpu);
    drop(instance);
    result?;
    let count = vulkan::validation_message_count();
    if count != 0 {
        return Err(format!(
            "the validation layer reported {count} messages: {}",
            vulkan::validation_messages().join(" | ")
        ));
    }
    Ok(())
}

/// What this process's GPU writes in step 6, and what the second process's GPU writes.
const SYNC_FIRST: u32 = 0x5111_0001;
const SYNC_SECOND: u32 = 0x5111_0002;
/// How long either side of step 6 waits for the other's signal.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A command buffer that fills `size` bytes of `buffer` with `value`.
fn record_fill(
    gpu: &Gpu<'_>,
    buffer: vk::Buffer,
    size: u64,
    value: u32,
) -> Step<vk::CommandBuffer> {
    gpu.record(|device, cb| {
        // SAFETY: recording; the buffer is bound and `size` bytes long.
        unsafe { device.cmd_fill_buffer(cb, buffer, 0, size, value) };
    })
}

/// Submits `cb`, signalling `value` of `timeline`, without waiting for it.
fn submit_signalling(
    gpu: &Gpu<'_>,
    cb: vk::CommandBuffer,
    timeline: vk::Semaphore,
    value: u64,
) -> Step<()> {
    let batch = SyncBatch {
        command_buffers: vec![cb],
        signals: vec![(timeline, value)],
        ..SyncBatch::default()
    };
    gpu.submit_batches(&[batch], vk::Fence::null())
}

/// Waits for `value` of `timeline` on the host, at most [`SYNC_TIMEOUT`].
fn wait_for(gpu: &Gpu<'_>, timeline: vk::Semaphore, value: u64) -> Step<Duration> {
    let (reached, took) = timed(|| gpu.wait_timeline(timeline, value, nanos(SYNC_TIMEOUT)));
    if reached? {
        Ok(took)
    } else {
        Err(format!(
            "value {value} not signalled within {SYNC_TIMEOUT:?}"
        ))
    }
}

/// Step 6: memory and a timeline semaphore shared with a second process, each side's GPU
/// work ordered by the other's signal.
fn synchronised_sharing(gpu: &Gpu<'_>) -> Step<()> {
    let memory = gpu.allocate(SIZE, Types::OPAQUE_FD)?;
    let buffer = match gpu.buffer(memory, SIZE, Types::OPAQUE_FD) {
        Ok(buffer) => buffer,
        Err(e) => {
            gpu.free(memory);
            return Err(e);
        }
    };
    let timeline = gpu.semaphore(Some(0), SemTypes::OPAQUE_FD);
    let result = timeline.and_then(|timeline| {
        let cb = record_fill(gpu, buffer, SIZE, SYNC_FIRST);
        let shared = cb.and_then(|cb| {
            let run = sync_with_child(gpu, memory, timeline, cb);
            // SAFETY: a live queue: the fill has finished before the buffer goes.
            let _ = unsafe { gpu.device.queue_wait_idle(gpu.queue) };
            gpu.free_command_buffer(cb);
            run
        });
        gpu.destroy_semaphore(timeline);
        shared
    });
    gpu.destroy_buffer(buffer);
    gpu.free(memory);
    result
}

fn sync_with_child(
    gpu: &Gpu<'_>,
    memory: vk::DeviceMemory,
    timeline: vk::Semaphore,
    cb: vk::CommandBuffer,
) -> Step<()> {
    let memory_fd = gpu.export_fd(memory, Types::OPAQUE_FD)?;
    let timeline_fd = gpu
        .export_semaphore(timeline, SemTypes::OPAQUE_FD)
        .map_err(|e| format!("vkGetSemaphoreFdKHR: {e}"))?;
    let child = io_step(
        "starting the second process",
        FdChild::spawn(&["sync-child"], Stdio::inherit()),
    )?;
    let message = FdMessage {
        size: SIZE,
        value: SYNC_SECOND,
    };
    let sent = send_fd(child.socket(), memory_fd.as_fd(), message)
        .and_then(|()| send_fd(child.socket(), timeline_fd.as_fd(), message));
    println!(
        "demo: sent a second process (pid {}) the {} memory and a timeline semaphore as opaque fds {} and {} (SCM_RIGHTS)",
        child.id(),
        bytes(SIZE),
        memory_fd.as_raw_fd(),
        timeline_fd.as_raw_fd()
    );
    drop((memory_fd, timeline_fd));
    let submitted = submit_signalling(gpu, cb, timeline, 1);
    if submitted.is_ok() {
        println!(
            "demo: our GPU fill of {SYNC_FIRST:#010x} is queued to signal 1; vkQueueSubmit returned at once"
        );
    }
    let waited = submitted.and_then(|()| wait_for(gpu, timeline, 2));
    let ended = child.finish();
    io_step("sendmsg(SCM_RIGHTS)", sent)?;
    ended.map_err(|e| format!("the second process: {e}"))?;
    let took = waited?;
    let seen = gpu.read(memory, 0, LEN)?;
    check_bytes(
        "the memory after value 2",
        &vulkan::fill_pattern(SYNC_SECOND, LEN),
        &seen,
    )?;
    println!(
        "demo: value 2 arrived after {} of waiting; every byte is now the second process's {SYNC_SECOND:#010x}",
        human(took)
    );
    Ok(())
}

/// The second process of step 6.
fn run_sync_child() -> Step<()> {
    let entry = vulkan::load()?;
    let instance = Instance::new(&entry, vulkan::validation_available(&entry))?;
    let gpu = Gpu::new(&instance)?;
    let (memory_fd, message) = io_step("recvmsg", recv_fd(io::stdin().as_fd()))?;
    let (timeline_fd, _) = io_step("recvmsg", recv_fd(io::stdin().as_fd()))?;
    let memory = gpu.import_fd(
        memory_fd,
        Types::OPAQUE_FD,
        message.size,
        gpu.device_local_type()?,
    )?;
    let result = (|| -> Step<()> {
        let timeline = gpu.semaphore(Some(0), SemTypes::OPAQUE_FD)?;
        let run = (|| -> Step<()> {
            gpu.import_semaphore(timeline, SemTypes::OPAQUE_FD, false, timeline_fd)
                .map_err(|(e, _)| format!("vkImportSemaphoreFdKHR: {e}"))?;
            let took = wait_for(&gpu, timeline, 1)?;
            let len = usize::try_from(message.size).map_err(|e| e.to_string())?;
            let seen = gpu.read(memory, 0, len)?;
            check_bytes(
                "the memory after value 1, in the second process",
                &vulkan::fill_pattern(SYNC_FIRST, len),
                &seen,
            )?;
            println!(
                "demo (second process): imported both; value 1 arrived after {} and every byte is the first process's {SYNC_FIRST:#010x}",
                human(took)
            );
            let buffer = gpu.buffer(memory, message.size, Types::OPAQUE_FD)?;
            let cb = record_fill(&gpu, buffer, message.size, message.value);
            let signalled = cb.and_then(|cb| {
                let queued = submit_signalling(&gpu, cb, timeline, 2);
                // SAFETY: a live queue: the fill is done before its objects go.
                let _ = unsafe { gpu.device.queue_wait_idle(gpu.queue) };
                gpu.free_command_buffer(cb);
                queued
            });
            gpu.destroy_buffer(buffer);
            signalled?;
            println!(
                "demo (second process): its GPU filled {:#010x} and signalled 2",
                message.value
            );
            Ok(())
        })();
        gpu.destroy_semaphore(timeline);
        run
    })();
    gpu.free(memory);
    drop(gpu);
    drop(instance);
    result?;
    let count = vulkan::validation_message_count();
    if count != 0 {
        return Err(format!(
            "the validation layer reported {count} messages: {}",
            vulkan::validation_messages().join(" | ")
        ));
    }
    Ok(())
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

fn rate(size: u64, duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs <= 0.0 {
        return String::from("too fast to time");
    }
    let mib = size as f64 / (1024.0 * 1024.0);
    format!("{:.0} MiB/s", mib / secs)
}

fn bytes(size: u64) -> String {
    if size >= 1 << 20 && size % (1 << 20) == 0 {
        format!("{} MiB", size >> 20)
    } else if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} bytes")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
