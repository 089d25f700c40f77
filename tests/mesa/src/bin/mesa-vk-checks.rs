//! mesa-vk-checks: the external-memory checks icd-e2e makes of extmem's ICD, made of whatever
//! Vulkan driver the loader is pointed at (`cargo mesa` runs it once with stock lavapipe and
//! once with lavapipe patched to use libextmem, through `VK_DRIVER_FILES`), on the host.
//!
//! Each case is a rule of `VK_EXT_external_memory_host` or `VK_KHR_external_memory_fd` that
//! an application can observe: the valid uses work (an import shows the bytes, an export
//! imports back), and the invalid ones get the error the specification names instead of a
//! success, a leaked or stolen fd, or a crash. No validation layer runs: the point is what
//! the driver itself answers.
//!
//! `mesa-vk-checks read-only-fill` is the child of the read-only case: it imports a
//! read-only mapping and, if the driver accepts it, fills it on the GPU. A driver that
//! accepted it dies there (SIGSEGV), which the parent reports.

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Command, ExitCode};

use ash::vk;
use extmem_guest_tests::fd_table;
use extmem_guest_tests::host_memory::{self, AnonMapping, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{io_op, CheckResult, Failure, KtapWriter};
use extmem_guest_tests::pattern::{self, expect_bytes};
use extmem_guest_tests::udmabuf;
use extmem_guest_tests::vulkan::{self, expect_result, is_cloexec, vk_op, Gpu, Instance};
use rustix::fs::{memfd_create, MemfdFlags};
use rustix::io::fcntl_getfd;
use rustix::mm::MprotectFlags;

/// Results the program writes.
const PLAN: usize = 21;
/// The size of the memory the fd cases share.
const SHARED: u64 = 64 * 1024;
/// Its length in bytes.
const SHARED_LEN: usize = 64 * 1024;
/// What the read-only child prints when the driver refused the import.
const REFUSED: &str = "refused";

type Types = vk::ExternalMemoryHandleTypeFlags;
type Ktap = KtapWriter<io::Stdout>;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("read-only-fill") {
        return read_only_child();
    }
    let fds_before = fd_table::snapshot();
    let mut ktap = KtapWriter::stdout(PLAN);
    run(&mut ktap);
    ktap.check(
        "descriptors: every fd the program opened (exports, imports) is closed again",
        || fd_table::closed_again(fds_before),
    );
    ktap.finish()
}

/// The driver's `minImportedHostPointerAlignment`.
fn alignment(gpu: &Gpu<'_>) -> CheckResult<usize> {
    let align = gpu.instance.host_pointer_alignment(gpu.physical);
    usize::try_from(align)
        .ok()
        .filter(|a| a.is_power_of_two())
        .ok_or_else(|| Failure::new("a power-of-two alignment", align.to_string()))
}

fn as_u64(len: usize) -> CheckResult<u64> {
    u64::try_from(len).map_err(|_| Failure::new("a length that fits u64", len.to_string()))
}

/// The loader with the ICD the environment names, an instance without layers and a device.
fn open(entry: &ash::Entry) -> Result<Instance, String> {
    Instance::new(entry, false)
}

fn run(ktap: &mut Ktap) {
    let entry = ktap.check(
        "loader: libvulkan.so.1 loads with the ICD in VK_DRIVER_FILES",
        || {
            let manifest = std::env::var("VK_DRIVER_FILES")
                .map_err(|_| Failure::new("VK_DRIVER_FILES naming the driver", "unset"))?;
            ktap_note(format_args!("ICD manifest: {manifest}"));
            vulkan::load().map_err(|e| Failure::new("the loader loads", e))
        },
    );
    let instance = ktap.check_after(
        "instance: vkCreateInstance (Vulkan 1.1, no layers)",
        entry.as_ref(),
        |entry| open(entry).map_err(|e| Failure::new("an instance", e)),
    );
    let gpu = ktap.check_after(
        "device: vkCreateDevice with the external-memory extensions",
        instance.as_ref(),
        |instance| {
            let gpu = Gpu::new(instance).map_err(|e| Failure::new("a device", e))?;
            // SAFETY: a live physical device.
            let props = unsafe {
                instance
                    .instance
                    .get_physical_device_properties(gpu.physical)
            };
            if let Ok(name) = props.device_name_as_c_str() {
                ktap_note(format_args!("physical device: {}", name.to_string_lossy()));
            }
            Ok(gpu)
        },
    );
    host_pointers(ktap, gpu.as_ref());
    fds(ktap, gpu.as_ref());
}

/// A `# ` diagnostic line between results.
fn ktap_note(text: std::fmt::Arguments<'_>) {
    println!("# {text}");
}

// ---- host pointers -------------------------------------------------------------------------

fn host_pointers(ktap: &mut Ktap, gpu: Option<&Gpu<'_>>) {
    ktap.check_after(
        "host pointer: import of one alignment unit of the heap, GPU copy into device memory, bytes match",
        gpu,
        host_import_copy,
    );
    let refused = vk::Result::ERROR_INVALID_EXTERNAL_HANDLE;
    ktap.check_after(
        "host pointer: vkGetMemoryHostPointerPropertiesEXT of NULL is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        gpu,
        |gpu| {
            let (result, _) = gpu.host_pointer_properties(Types::HOST_ALLOCATION_EXT, 0);
            expect_result("the query", result, refused)
        },
    );
    ktap.check_after(
        "host pointer: vkGetMemoryHostPointerPropertiesEXT of a misaligned pointer is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        gpu,
        |gpu| {
            let align = alignment(gpu)?;
            let heap = io_op("an aligned heap buffer", HeapBuffer::new(2 * align, align))?;
            let ptr = heap.base().as_ptr().wrapping_add(64);
            let (result, _) = gpu.host_pointer_properties(Types::HOST_ALLOCATION_EXT, ptr as usize);
            expect_result("the query", result, refused)
        },
    );
    ktap.check_after(
        "host pointer: vkGetMemoryHostPointerPropertiesEXT of an unmapped page is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        gpu,
        |gpu| {
            let align = alignment(gpu)?;
            let addr = io_op("an unmapped range", host_memory::unmapped_range(align))?;
            let addr = usize::try_from(addr).map_err(|_| Failure::new("an address", addr.to_string()))?;
            let (result, _) = gpu.host_pointer_properties(Types::HOST_ALLOCATION_EXT, addr);
            expect_result("the query", result, refused)
        },
    );
    ktap.check_after(
        "host pointer: vkGetMemoryHostPointerPropertiesEXT with handle type OPAQUE_FD is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        gpu,
        |gpu| {
            let align = alignment(gpu)?;
            let heap = io_op("an aligned heap buffer", HeapBuffer::new(align, align))?;
            let (result, _) =
                gpu.host_pointer_properties(Types::OPAQUE_FD, heap.base().as_ptr() as usize);
            expect_result("the query", result, refused)
        },
    );
    ktap.check_after(
        "host pointer: an import whose size is not a multiple of minImportedHostPointerAlignment is refused (VUID-VkMemoryAllocateInfo-allocationSize-01745)",
        gpu,
        |gpu| {
            let align = alignment(gpu)?;
            let heap = io_op("an aligned heap buffer", HeapBuffer::new(2 * align, align))?;
            let size = as_u64(align)?.saturating_add(64);
            expect_refused_import(gpu, heap.base().as_ptr().cast(), size)
        },
    );
    ktap.check_after(
        "host pointer: an import of an unmapped range is refused",
        gpu,
        |gpu| {
            let align = alignment(gpu)?;
            let addr = io_op("an unmapped range", host_memory::unmapped_range(align))?;
            let addr =
                usize::try_from(addr).map_err(|_| Failure::new("an address", addr.to_string()))?;
            expect_refused_import(gpu, addr as *mut c_void, as_u64(align)?)
        },
    );
    ktap.check(
        "host pointer: an import of a read-only mapping is refused, so a GPU fill cannot kill the process",
        read_only_import,
    );
}

/// A host-pointer import of `[ptr, ptr + size)` into type 0, which must fail.
fn expect_refused_import(gpu: &Gpu<'_>, ptr: *mut c_void, size: u64) -> CheckResult<()> {
    // SAFETY: the driver must refuse the range; if it accepts it, the memory is freed at
    // once and never used, so its pages are never touched through it.
    match unsafe { gpu.import_host_as(ptr, size, Types::HOST_ALLOCATION_EXT, 0) } {
        Ok(memory) => {
            gpu.free(memory);
            Err(Failure::new(
                "an error",
                "VK_SUCCESS: the driver accepted the range",
            ))
        }
        Err(_) => Ok(()),
    }
}

/// Imports `size` bytes of a heap buffer holding a pattern, copies them on the GPU into
/// device memory and reads that back through `vkMapMemory`.
fn host_import_copy(gpu: &Gpu<'_>) -> CheckResult<()> {
    let n = alignment(gpu)?;
    let size = as_u64(n)?;
    let heap = io_op("an aligned heap buffer", HeapBuffer::new(n, n))?;
    let expected = pattern::bytes(size, n);
    heap.write(0, &expected)
        .map_err(|e| Failure::op("writing the heap buffer", e))?;
    // SAFETY: the heap buffer outlives the imported memory (freed below, before it drops).
    let src_mem = vk_op(unsafe {
        gpu.import_host(
            heap.base().as_ptr().cast(),
            size,
            Types::HOST_ALLOCATION_EXT,
        )
    })?;
    let result = copy_and_read(gpu, src_mem, Types::HOST_ALLOCATION_EXT, size)
        .and_then(|seen| expect_bytes("the device memory", &expected, &seen));
    gpu.free(src_mem);
    drop(heap);
    result
}

/// Copies `size` bytes of `src_mem` (external memory of `handle_type`) into new device
/// memory on the GPU and reads them back.
fn copy_and_read(
    gpu: &Gpu<'_>,
    src_mem: vk::DeviceMemory,
    handle_type: Types,
    size: u64,
) -> CheckResult<Vec<u8>> {
    let n = usize::try_from(size).map_err(|_| Failure::new("a size", size.to_string()))?;
    let dst_mem = vk_op(gpu.allocate(size, Types::empty()))?;
    let result = (|| {
        let src = vk_op(gpu.buffer(src_mem, size, handle_type))?;
        let dst = vk_op(gpu.buffer(dst_mem, size, Types::empty()));
        let copied = dst.and_then(|dst| {
            let copied = vk_op(gpu.copy(src, dst, size));
            gpu.destroy_buffer(dst);
            copied
        });
        gpu.destroy_buffer(src);
        copied?;
        vk_op(gpu.read(dst_mem, 0, n))
    })();
    gpu.free(dst_mem);
    result
}

/// Runs the `read-only-fill` child and judges how it ended.
fn read_only_import() -> CheckResult<()> {
    let exe = io_op("the program's path", std::env::current_exe())?;
    let output = io_op(
        "running the read-only child",
        Command::new(exe).arg("read-only-fill").output(),
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match output.status.code() {
        Some(0) if stdout.trim() == REFUSED => Ok(()),
        Some(code) => Err(Failure::new(
            "the import refused",
            format!(
                "the child exited with {code}: {} {}",
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        )),
        None => Err(Failure::new(
            "the import refused",
            format!(
                "the driver accepted it, and the GPU fill killed the process ({})",
                output.status
            ),
        )),
    }
}

/// The child: imports a read-only anonymous mapping; if accepted, fills it on the GPU.
fn read_only_child() -> ExitCode {
    match read_only_fill() {
        Ok(true) => {
            println!("{REFUSED}");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("accepted, and the fill returned");
            ExitCode::from(2)
        }
        Err(e) => {
            println!("{e}");
            ExitCode::from(3)
        }
    }
}

/// Whether the driver refused the import (`Ok(false)`: accepted and the fill returned).
fn read_only_fill() -> Result<bool, String> {
    let entry = vulkan::load()?;
    let instance = open(&entry)?;
    let gpu = Gpu::new(&instance)?;
    let len = usize::try_from(gpu.instance.host_pointer_alignment(gpu.physical))
        .map_err(|e| e.to_string())?;
    let mapping = AnonMapping::read_write(len).map_err(|e| e.to_string())?;
    mapping
        .protect(MprotectFlags::READ)
        .map_err(|e| e.to_string())?;
    let size = u64::try_from(len).map_err(|e| e.to_string())?;
    // SAFETY: the mapping outlives the memory (freed below before it drops).
    let imported = unsafe {
        gpu.import_host_as(
            mapping.base().as_ptr().cast(),
            size,
            Types::HOST_ALLOCATION_EXT,
            0,
        )
    };
    let Ok(memory) = imported else {
        return Ok(true);
    };
    let filled = gpu
        .buffer(memory, size, Types::HOST_ALLOCATION_EXT)
        .and_then(|buffer| {
            let filled = gpu.fill(buffer, size, 0x5a5a_5a5a);
            gpu.destroy_buffer(buffer);
            filled
        });
    gpu.free(memory);
    filled.map(|()| false)
}

// ---- fds ------------------------------------------------------------------------------------

/// Exportable device memory of [`SHARED`] bytes holding a pattern, freed on drop.
struct Exported<'g, 'i> {
    gpu: &'g Gpu<'i>,
    memory: vk::DeviceMemory,
    bytes: Vec<u8>,
}

impl<'g, 'i> Exported<'g, 'i> {
    fn new(gpu: &'g Gpu<'i>, seed: u64) -> CheckResult<Self> {
        let memory = vk_op(gpu.allocate(SHARED, Types::OPAQUE_FD))?;
        let exported = Self {
            gpu,
            memory,
            bytes: pattern::bytes(seed, SHARED_LEN),
        };
        vk_op(gpu.write(memory, 0, &exported.bytes))?;
        Ok(exported)
    }

    fn export(&self) -> CheckResult<OwnedFd> {
        vk_op(self.gpu.export_fd(self.memory, Types::OPAQUE_FD))
    }
}

impl Drop for Exported<'_, '_> {
    fn drop(&mut self) {
        self.gpu.free(self.memory);
    }
}

fn fds(ktap: &mut Ktap, gpu: Option<&Gpu<'_>>) {
    ktap.check_after(
        "opaque fd: each vkGetMemoryFdKHR is a new fd with close-on-exec",
        gpu,
        |gpu| {
            let exported = Exported::new(gpu, 1)?;
            let a = exported.export()?;
            let b = exported.export()?;
            if a.as_raw_fd() == b.as_raw_fd() {
                return Err(Failure::new("two fds", "the same fd twice"));
            }
            for fd in [&a, &b] {
                if !io_op("fcntl(F_GETFD)", is_cloexec(fd))? {
                    return Err(Failure::new("FD_CLOEXEC set", "it is not"));
                }
            }
            Ok(())
        },
    );
    ktap.check_after(
        "opaque fd: an exported fd imports, and a GPU copy of the import shows the exporter's bytes",
        gpu,
        |gpu| {
            let exported = Exported::new(gpu, 2)?;
            let fd = exported.export()?;
            let imported = vk_op(gpu.import_fd(fd, Types::OPAQUE_FD, SHARED, 0))?;
            let seen = copy_and_read(gpu, imported, Types::OPAQUE_FD, SHARED);
            gpu.free(imported);
            expect_bytes("the import", &exported.bytes, &seen?)
        },
    );
    ktap.check_after(
        "opaque fd: a refused import (of /dev/null) leaves the fd open and the application's",
        gpu,
        |gpu| {
            let null = OwnedFd::from(io_op("open(/dev/null)", File::open("/dev/null"))?);
            let raw = null.as_raw_fd();
            let mut import = vk::ImportMemoryFdInfoKHR::default()
                .handle_type(Types::OPAQUE_FD)
                .fd(raw);
            let info = vk::MemoryAllocateInfo::default()
                .allocation_size(SHARED)
                .memory_type_index(0)
                .push_next(&mut import);
            // SAFETY: a live device; the chain lives across the call; `null` stays ours
            // whatever the driver does, and is checked below before it is closed.
            match unsafe { gpu.device.allocate_memory(&info, None) } {
                Ok(memory) => {
                    gpu.free(memory);
                    // The driver took the fd on success: forget ours.
                    std::mem::forget(null);
                    Err(Failure::new(
                        "an error",
                        "the import of /dev/null succeeded",
                    ))
                }
                Err(_) => match fcntl_getfd(null.as_fd()) {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        // Closed by the driver: do not close the number a second time.
                        std::mem::forget(null);
                        Err(Failure::new("the fd still open", format!("fcntl: {e}")))
                    }
                },
            }
        },
    );
    let refused = vk::Result::ERROR_INVALID_EXTERNAL_HANDLE;
    ktap.check_after(
        "fd properties: vkGetMemoryFdPropertiesKHR with OPAQUE_FD is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        gpu,
        |gpu| {
            let exported = Exported::new(gpu, 3)?;
            let fd = exported.export()?;
            let (result, _) = gpu.fd_properties(Types::OPAQUE_FD, fd.as_raw_fd());
            expect_result("the query", result, refused)
        },
    );
    ktap.check_after(
        "fd properties: a dma-buf query of /dev/null is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        gpu,
        |gpu| {
            let null = io_op("open(/dev/null)", File::open("/dev/null"))?;
            let (result, _) = gpu.fd_properties(Types::DMA_BUF_EXT, null.as_raw_fd());
            expect_result("the query", result, refused)
        },
    );
    ktap.check_after(
        "fd properties: a dma-buf query of a closed fd is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        gpu,
        |gpu| {
            let closed = io_op("open(/dev/null)", File::open("/dev/null"))?.as_raw_fd();
            let (result, _) = gpu.fd_properties(Types::DMA_BUF_EXT, closed);
            expect_result("the query", result, refused)
        },
    );
    ktap.check_after(
        "fd properties: a dma-buf query of a memfd (not a dma-buf) is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        gpu,
        |gpu| {
            let memfd = io_op(
                "memfd_create",
                memfd_create("mesa-vk-checks", MemfdFlags::CLOEXEC),
            )?;
            io_op("ftruncate", rustix::fs::ftruncate(&memfd, SHARED))?;
            let (result, _) = gpu.fd_properties(Types::DMA_BUF_EXT, memfd.as_raw_fd());
            expect_result("the query", result, refused)
        },
    );
    ktap.check_after(
        "fd properties: a dma-buf query of fd -1 is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        gpu,
        |gpu| {
            let (result, _) = gpu.fd_properties(Types::DMA_BUF_EXT, -1);
            expect_result("the query", result, refused)
        },
    );
    let description = "dma-buf: a udmabuf gets memory type bits, imports, and a GPU copy of it shows the memfd's bytes";
    if std::path::Path::new("/dev/udmabuf").exists() {
        ktap.check_after(description, gpu, import_udmabuf);
    } else {
        ktap.skip(
            description,
            "no /dev/udmabuf on this host: no dma-buf to import",
        );
    }
}

/// Imports a udmabuf over a sealed memfd holding a pattern and reads it back on the GPU.
fn import_udmabuf(gpu: &Gpu<'_>) -> CheckResult<()> {
    let (memfd, dmabuf) = udmabuf::over_sealed_memfd("mesa-vk-checks", SHARED)
        .map_err(|e| Failure::op("a udmabuf", e))?;
    let expected = pattern::bytes(7, SHARED_LEN);
    io_op("pwrite", rustix::io::pwrite(&memfd, &expected, 0))?;
    let (memory, _) = vk_op(gpu.import_dma_buf(dmabuf, SHARED))?;
    let seen = copy_and_read(gpu, memory, Types::DMA_BUF_EXT, SHARED);
    gpu.free(memory);
    expect_bytes("the import", &expected, &seen?)
}
