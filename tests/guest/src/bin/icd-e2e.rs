//! icd-e2e: extmem-icd end to end, as an application sees it — through the Khronos loader
//! (`libvulkan.so.1`) with only our ICD, on the real extmem-vgpu node.
//!
//! Everything valid runs on an instance under the Khronos validation layer with a
//! debug-utils messenger, and the last checks assert the layer said nothing. The deliberate
//! Valid Usage violations (unaligned host pointer, wrong handle types, bad fds) run on a
//! second instance without the layer, which would rightly report them.
//!
//! The cases follow the CTS groups `dEQP-VK.memory.external_memory_host.*` and
//! `dEQP-VK.api.external.memory.{opaque_fd,dma_buf}.*` (see SPEC.md): host-pointer import at
//! 1x and 3x the alignment, fd export and import (twice, many times, dup/dup2/dup3, over a
//! socket to another process), fd and host-pointer properties, external buffer properties for
//! every handle type, plus transfer correctness and a descriptor-leak check.
//!
//! `icd-e2e child-fill` is the other process of the socket case: it receives an opaque fd
//! over the unix socket on its stdin, imports it and fills it through the GPU. The
//! synchronisation group (fences, semaphores, timelines, sync fds across processes) is in
//! `icd-e2e/syncs.rs`, with its own two child roles.

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::process::{ExitCode, Stdio};

use ash::vk;
use extmem_guest_tests::dri::{self, NodeKind};
use extmem_guest_tests::fd_passing::FdChild;
use extmem_guest_tests::host_memory::{self, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure, KtapWriter};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::pattern::{self, expect_bytes};
use extmem_guest_tests::vgpu::Vgpu;
use extmem_guest_tests::vulkan::{
    self, expect_result, is_cloexec, recv_fd, send_fd, vk_op, FdMessage, Gpu, Image, Instance,
    VkResult,
};
use extmem_guest_tests::{dma_buf, fd_table, udmabuf};
use extmem_uapi::Param;
use rustix::io::{dup, dup2, dup3, DupFlags};

#[path = "icd-e2e/syncs.rs"]
mod syncs;

/// Results the program writes.
const PLAN: usize = 46 + syncs::CHECKS;

/// `minImportedHostPointerAlignment` this device must report: the CPU page (the kernel pins
/// whole ones), as extmem's profiles ask for no more than the GPU's 4 KiB.
fn align() -> u64 {
    host_memory::cpu_page().max(4096)
}
const KIB: u64 = 1024;
/// Size of the memory the fd cases share.
const SHARED: u64 = 64 * KIB;
const SHARED_LEN: usize = 64 * 1024;
/// How many imports "import many times" makes.
const MANY: usize = 32;

type Types = vk::ExternalMemoryHandleTypeFlags;
type Ktap = KtapWriter<io::Stdout>;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("child-fill") => return child_fill(),
        Some("child-timeline") => return syncs::child_timeline(),
        Some("child-syncfd") => return syncs::child_syncfd(),
        Some("child-held") => return syncs::child_held(),
        _ => {}
    }
    let fds_before = fd_table::snapshot();
    let mut ktap = KtapWriter::stdout(PLAN);
    run(&mut ktap);
    ktap.check(
        "descriptors: every fd the program opened (exports, imports, sockets) is closed again",
        || fd_table::closed_again(fds_before),
    );
    ktap.finish()
}

/// A `# ` diagnostic line between results (the KTAP writer is busy inside a check).
fn ktap_note(text: std::fmt::Arguments<'_>) {
    println!("# {text}");
}

fn len(size: u64) -> CheckResult<usize> {
    usize::try_from(size).map_err(|_| Failure::new("a size that fits usize", size.to_string()))
}

/// [`align`] as a buffer length.
fn align_len() -> CheckResult<usize> {
    len(align())
}

fn run(ktap: &mut Ktap) {
    let loaded = ktap.check(
        "loader: libvulkan.so.1 loads with VK_DRIVER_FILES naming only extmem_icd.json",
        || {
            let manifest = io_op("finding the ICD manifest", vulkan::isolate_loader())?;
            let entry = vulkan::load().map_err(|e| Failure::new("the loader loads", e))?;
            Ok((manifest, entry))
        },
    );
    let entry = loaded.map(|(manifest, entry)| {
        ktap.diagnostic(format_args!("ICD manifest: {}", manifest.display()));
        entry
    });
    let validation = match &entry {
        Some(entry) if vulkan::validation_available(entry) => {
            ktap.pass("validation: VK_LAYER_KHRONOS_validation is installed");
            true
        }
        Some(_) => {
            ktap.fail(
                "validation: VK_LAYER_KHRONOS_validation is installed",
                &Failure::new(
                    "the layer (Debian: vulkan-validationlayers)",
                    "the loader lists no such layer; the checks below run without it",
                ),
            );
            false
        }
        None => {
            ktap.fail(
                "validation: VK_LAYER_KHRONOS_validation is installed",
                &Failure::new("the loader loaded", "it did not"),
            );
            false
        }
    };
    let instance = ktap.check_after(
        "instance: vkCreateInstance (Vulkan 1.1, validation layer, debug-utils messenger)",
        entry.as_ref(),
        |entry| Instance::new(entry, validation).map_err(|e| Failure::new("an instance", e)),
    );
    let raw = ktap.check_after(
        "instance: a second vkCreateInstance without layers (for the deliberate violations)",
        entry.as_ref(),
        |entry| Instance::new(entry, false).map_err(|e| Failure::new("an instance", e)),
    );
    identity(ktap, instance.as_ref(), raw.as_ref());

    let gpu = ktap.check_after(
        "device: vkCreateDevice with the external-memory extensions, one transfer queue",
        instance.as_ref(),
        |instance| Gpu::new(instance).map_err(|e| Failure::new("a device", e)),
    );
    let raw_gpu = ktap.check_after(
        "device: a device of the unvalidated instance",
        raw.as_ref(),
        |raw| Gpu::new(raw).map_err(|e| Failure::new("a device", e)),
    );
    host_pointers(ktap, gpu.as_ref(), raw_gpu.as_ref());
    let description = "validation: the layer is active: a zero-sized vkCreateBuffer on the validated device is reported (VUID-VkBufferCreateInfo-size-00912)";
    match gpu.as_ref() {
        Some(gpu) if validation => {
            ktap.check(description, || {
                let heap = io_op("an aligned heap buffer", HeapBuffer::new(2 * align_len()?, align_len()?))?;
                // SAFETY: 64 bytes into an allocation of two CPU pages.
                let ptr = unsafe { heap.base().as_ptr().add(64) }.cast::<c_void>();
                let zero_buffer = vulkan::expect_messages(|| {
                    let info = vk::BufferCreateInfo::default()
                        .size(0)
                        .usage(vk::BufferUsageFlags::TRANSFER_DST);
                    // SAFETY: a live device; the driver refuses the size (we check that too).
                    if let Ok(buffer) = unsafe { gpu.device.create_buffer(&info, None) } {
                        gpu.destroy_buffer(buffer);
                    }
                });
                // Two rules the layer (1.3.239) leaves to the driver; recorded for the report.
                let null = io_op("open(/dev/null)", File::open("/dev/null"))?;
                let fd_props = vulkan::expect_messages(|| {
                    let _ = gpu.fd_properties(Types::OPAQUE_FD, null.as_raw_fd());
                });
                let host_props = vulkan::expect_messages(|| {
                    let _ = gpu.host_pointer_properties(Types::HOST_ALLOCATION_EXT, ptr as usize);
                });
                ktap_note(format_args!(
                    "validation messages for deliberate violations: zero-sized buffer {zero_buffer}, fd properties of OPAQUE_FD {fd_props}, unaligned host pointer properties {host_props}"
                ));
                if zero_buffer > 0 {
                    Ok(())
                } else {
                    Err(Failure::new("a validation message", "none"))
                }
            });
        }
        Some(_) => ktap.skip(description, "the validation layer is not installed"),
        None => {
            ktap.fail(description, &Failure::new("a device", "none"));
        }
    }
    fds(ktap, gpu.as_ref(), raw_gpu.as_ref());
    properties(ktap, instance.as_ref());
    transfers(ktap, gpu.as_ref());
    optimal_images(ktap, instance.as_ref(), gpu.as_ref());
    syncs::run(ktap, gpu.as_ref(), raw_gpu.as_ref());

    drop(raw_gpu);
    drop(raw);
    drop(gpu);
    drop(instance);
    let description = "validation: the layer reported no warning or error (instance, device, every command above, destruction)";
    if validation {
        ktap.check(description, || {
            let count = vulkan::validation_message_count();
            if count == 0 {
                Ok(())
            } else {
                Err(Failure::new(
                    "no validation message",
                    format!(
                        "{count} messages, first: {}",
                        vulkan::validation_messages().join(" | ")
                    ),
                ))
            }
        });
    } else {
        ktap.skip(description, "the validation layer is not installed");
    }
}

// ---- identity ------------------------------------------------------------------------------

fn kernel_uuids() -> CheckResult<([u8; 16], [u8; 16])> {
    let vgpu = Vgpu::open().map_err(|e| Failure::new("an extmem-vgpu node", e.to_string()))?;
    let param = |p| {
        vgpu.get_param(p)
            .map_err(|e| Failure::op(format_args!("GET_PARAM {p:?}"), e))
    };
    let join = |lo: u64, hi: u64| {
        let mut out = [0_u8; 16];
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&lo.to_le_bytes());
        b.copy_from_slice(&hi.to_le_bytes());
        out
    };
    Ok((
        join(param(Param::DEVICE_UUID_LO)?, param(Param::DEVICE_UUID_HI)?),
        join(param(Param::DRIVER_UUID_LO)?, param(Param::DRIVER_UUID_HI)?),
    ))
}

fn identity(ktap: &mut Ktap, instance: Option<&Instance>, raw: Option<&Instance>) {
    let pd = ktap.check_after(
        "instance: exactly one physical device, named extmem-vgpu, Vulkan 1.1",
        instance,
        |instance| {
            let pds = instance
                .physical_devices()
                .map_err(|e| Failure::new("physical devices", e))?;
            let [pd] = pds.as_slice() else {
                return Err(Failure::new("1 physical device", pds.len().to_string()));
            };
            // SAFETY: a live physical device.
            let props = unsafe { instance.instance.get_physical_device_properties(*pd) };
            let name = props
                .device_name_as_c_str()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.starts_with("extmem-vgpu") || vk::api_version_minor(props.api_version) != 1 {
                return Err(Failure::new(
                    "extmem-vgpu (renderD*), API 1.1",
                    format!(
                        "{name:?}, API 1.{}",
                        vk::api_version_minor(props.api_version)
                    ),
                ));
            }
            Ok((*pd, name))
        },
    );
    let pd = pd.map(|(pd, name)| {
        ktap.diagnostic(format_args!("physical device: {name}"));
        pd
    });
    ktap.check_after(
        "properties: deviceUUID and driverUUID are the node's GET_PARAM DEVICE_UUID/DRIVER_UUID",
        instance.zip(pd),
        |(instance, pd)| {
            let seen = instance.uuids(pd);
            let expected = kernel_uuids()?;
            if seen == expected {
                Ok(())
            } else {
                Err(Failure::new(
                    format!("{:02x?} / {:02x?}", expected.0, expected.1),
                    format!("{:02x?} / {:02x?}", seen.0, seen.1),
                ))
            }
        },
    );
    ktap.check_after(
        "properties: a second instance reports the same deviceUUID and driverUUID",
        instance.zip(pd).zip(raw),
        |((instance, pd), raw)| {
            let other = *raw
                .physical_devices()
                .map_err(|e| Failure::new("physical devices", e))?
                .first()
                .ok_or_else(|| Failure::new("a physical device", "none"))?;
            let (a, b) = (instance.uuids(pd), raw.uuids(other));
            if a == b {
                Ok(())
            } else {
                Err(Failure::new(format!("{a:02x?}"), format!("{b:02x?}")))
            }
        },
    );
    let align = align();
    ktap.check_after(
        &format!("properties: minImportedHostPointerAlignment is {align} (the CPU page)"),
        instance.zip(pd),
        |(instance, pd)| {
            let seen = instance.host_pointer_alignment(pd);
            if seen == align {
                Ok(())
            } else {
                Err(Failure::new(align.to_string(), seen.to_string()))
            }
        },
    );
    ktap.check_after(
        "extensions: the device lists the external-memory extensions (fd, dma_buf, host) and the synchronisation ones (external semaphore/fence fd, timeline semaphores, synchronization2)",
        instance.zip(pd),
        |(instance, pd)| {
            // SAFETY: a live physical device.
            let exts = unsafe { instance.instance.enumerate_device_extension_properties(pd) }
                .map_err(|e| Failure::op("vkEnumerateDeviceExtensionProperties", e))?;
            let names: Vec<_> = exts
                .iter()
                .filter_map(|e| e.extension_name_as_c_str().ok())
                .collect();
            let missing: Vec<String> = vulkan::DEVICE_EXTENSIONS
                .iter()
                .chain(vulkan::SYNC_EXTENSIONS.iter())
                .filter(|want| !names.contains(want))
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(Failure::new("all listed", format!("missing {missing:?}")))
            }
        },
    );
    drm_nodes(ktap, instance.zip(pd));
}

/// The `(major, minor)` of the `kind` node whose driver is extmem-vgpu.
fn vgpu_node_number(kind: NodeKind) -> CheckResult<(u32, u32, String)> {
    let node = dri::open_by_driver(extmem_uapi::DRIVER_NAME, kind)
        .map_err(|e| Failure::new(format!("an extmem-vgpu {kind:?} node"), e.to_string()))?;
    let (major, minor) = io_op(
        format_args!("fstat({})", node.path.display()),
        node.device_number(),
    )?;
    Ok((major, minor, node.path.display().to_string()))
}

fn drm_nodes(ktap: &mut Ktap, both: Option<(&Instance, vk::PhysicalDevice)>) {
    ktap.check_after(
        "drm: VK_EXT_physical_device_drm is offered; hasRender, renderMajor/renderMinor are stat() of the extmem-vgpu /dev/dri/renderD* node",
        both,
        |(instance, pd)| {
            // SAFETY: a live physical device.
            let exts = unsafe { instance.instance.enumerate_device_extension_properties(pd) }
                .map_err(|e| Failure::op("vkEnumerateDeviceExtensionProperties", e))?;
            if !exts
                .iter()
                .any(|e| e.extension_name_as_c_str() == Ok(vk::EXT_PHYSICAL_DEVICE_DRM_NAME))
            {
                return Err(Failure::new("VK_EXT_physical_device_drm listed", "it is not"));
            }
            let (major, minor, path) = vgpu_node_number(NodeKind::Render)?;
            let drm = instance.drm_properties(pd);
            let seen = (drm.has_render, drm.render_major, drm.render_minor);
            let expected = (vk::TRUE, i64::from(major), i64::from(minor));
            ktap_note(format_args!("{path} is {major}:{minor}"));
            expect_eq("(hasRender, renderMajor, renderMinor)", seen, expected)
        },
    );
    ktap.check_after(
        "drm: hasPrimary, primaryMajor/primaryMinor are stat() of the extmem-vgpu /dev/dri/card* node",
        both,
        |(instance, pd)| {
            let (major, minor, path) = vgpu_node_number(NodeKind::Primary)?;
            let drm = instance.drm_properties(pd);
            let seen = (drm.has_primary, drm.primary_major, drm.primary_minor);
            let expected = (vk::TRUE, i64::from(major), i64::from(minor));
            ktap_note(format_args!("{path} is {major}:{minor}"));
            expect_eq("(hasPrimary, primaryMajor, primaryMinor)", seen, expected)
        },
    );
}

// ---- host pointers -------------------------------------------------------------------------

fn host_pointers(ktap: &mut Ktap, gpu: Option<&Gpu<'_>>, raw: Option<&Gpu<'_>>) {
    ktap.check_after(
        "host pointer: vkGetMemoryHostPointerPropertiesEXT on an aligned heap pointer succeeds with host-visible types",
        gpu,
        |gpu| {
            let heap = io_op("an aligned heap buffer", HeapBuffer::new(align_len()?, align_len()?))?;
            let (result, bits) = gpu
                .host_pointer_properties(Types::HOST_ALLOCATION_EXT, heap.base().as_ptr() as usize);
            expect_result("the query", result, vk::Result::SUCCESS)?;
            let types = gpu.memory.memory_types_as_slice();
            let all_host_visible = types.iter().zip(0_u32..).all(|(t, i)| {
                bits.checked_shr(i).is_none_or(|b| b & 1 == 0)
                    || t.property_flags.contains(vk::MemoryPropertyFlags::HOST_VISIBLE)
            });
            let in_range = bits.checked_shr(gpu.memory.memory_type_count).is_none_or(|b| b == 0);
            match (bits != 0, all_host_visible, in_range) {
                (true, true, true) => Ok(()),
                _ => Err(Failure::new(
                    "memoryTypeBits naming host-visible types only",
                    format!("{bits:#x}"),
                )),
            }
        },
    );
    for multiple in [1_u64, 3] {
        ktap.check_after(
            &format!(
                "host pointer: import at {multiple}x the alignment ({} KiB), GPU copy into device memory, bytes match through vkMapMemory",
                multiple * align() / KIB
            ),
            gpu,
            |gpu| host_import_copy(gpu, multiple * align()),
        );
    }
    ktap.check_after(
        "host pointer: vkMapMemory of an import returns the application's pointer, and a GPU fill of the import shows there",
        gpu,
        host_import_fill,
    );
    ktap.check_after(
        "host pointer: vkGetMemoryHostPointerPropertiesEXT on an unaligned pointer is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        raw,
        |raw| {
            let heap = io_op("an aligned heap buffer", HeapBuffer::new(2 * align_len()?, align_len()?))?;
            // SAFETY: 64 bytes into an allocation of two CPU pages.
            let ptr = unsafe { heap.base().as_ptr().add(64) };
            let (result, _) =
                raw.host_pointer_properties(Types::HOST_ALLOCATION_EXT, ptr as usize);
            expect_result("the query", result, vk::Result::ERROR_INVALID_EXTERNAL_HANDLE)
        },
    );
    ktap.check_after(
        "host pointer: vkGetMemoryHostPointerPropertiesEXT with handle type OPAQUE_FD is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        raw,
        |raw| {
            let heap = io_op("an aligned heap buffer", HeapBuffer::new(align_len()?, align_len()?))?;
            let (result, _) = raw
                .host_pointer_properties(Types::OPAQUE_FD, heap.base().as_ptr() as usize);
            expect_result("the query", result, vk::Result::ERROR_INVALID_EXTERNAL_HANDLE)
        },
    );
}

/// Imports `size` bytes of a heap buffer holding a pattern, copies them on the GPU into device
/// memory and reads that back through `vkMapMemory`.
fn host_import_copy(gpu: &Gpu<'_>, size: u64) -> CheckResult<()> {
    let n = len(size)?;
    let heap = io_op("an aligned heap buffer", HeapBuffer::new(n, align_len()?))?;
    let expected = pattern::bytes(size, n);
    heap.write(0, &expected)
        .map_err(|e| Failure::op("writing the heap buffer", e))?;
    // SAFETY: the heap buffer outlives the imported memory (freed below, before it drops).
    let src_mem = vk_op(unsafe {
        gpu.import_host(
            heap.base().as_ptr().cast::<c_void>(),
            size,
            Types::HOST_ALLOCATION_EXT,
        )
    })?;
    let result = (|| {
        let dst_mem = vk_op(gpu.allocate(size, Types::empty()))?;
        let result = (|| {
            let src = vk_op(gpu.buffer(src_mem, size, Types::HOST_ALLOCATION_EXT))?;
            let dst = vk_op(gpu.buffer(dst_mem, size, Types::empty()));
            let copied = dst.and_then(|dst| {
                let copied = vk_op(gpu.copy(src, dst, size));
                gpu.destroy_buffer(dst);
                copied
            });
            gpu.destroy_buffer(src);
            copied?;
            let seen = vk_op(gpu.read(dst_mem, 0, n))?;
            expect_bytes("the device memory", &expected, &seen)
        })();
        gpu.free(dst_mem);
        result
    })();
    gpu.free(src_mem);
    drop(heap);
    result
}

fn host_import_fill(gpu: &Gpu<'_>) -> CheckResult<()> {
    let size = 4 * align();
    let n = len(size)?;
    let heap = io_op("an aligned heap buffer", HeapBuffer::new(n, align_len()?))?;
    let ptr = heap.base().as_ptr().cast::<c_void>();
    // SAFETY: the heap buffer outlives the imported memory.
    let memory = vk_op(unsafe { gpu.import_host(ptr, size, Types::HOST_ALLOCATION_EXT) })?;
    let result = (|| {
        // SAFETY: live, host-visible, unmapped memory.
        let mapped = vk_op(
            unsafe {
                gpu.device
                    .map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
            }
            .map_err(|e| format!("vkMapMemory: {e}")),
        )?;
        // SAFETY: mapped just above.
        unsafe { gpu.device.unmap_memory(memory) };
        if mapped != ptr {
            return Err(Failure::new(
                format!("vkMapMemory returns {ptr:p}"),
                format!("it returned {mapped:p}"),
            ));
        }
        let buffer = vk_op(gpu.buffer(memory, size, Types::HOST_ALLOCATION_EXT))?;
        let filled = vk_op(gpu.fill(buffer, size, 0xc0de_f00d));
        gpu.destroy_buffer(buffer);
        filled?;
        let seen = heap.read(0, n).map_err(|e| Failure::op("reading", e))?;
        expect_bytes(
            "the heap buffer",
            &vulkan::fill_pattern(0xc0de_f00d, n),
            &seen,
        )
    })();
    gpu.free(memory);
    drop(heap);
    result
}

// ---- file descriptors ----------------------------------------------------------------------

/// Device memory exportable as both fd types, holding a pattern.
struct Exported<'g, 'i> {
    gpu: &'g Gpu<'i>,
    memory: vk::DeviceMemory,
    bytes: Vec<u8>,
}

impl<'g, 'i> Exported<'g, 'i> {
    fn new(gpu: &'g Gpu<'i>, seed: u64) -> CheckResult<Self> {
        let memory = vk_op(gpu.allocate(SHARED, Types::OPAQUE_FD | Types::DMA_BUF_EXT))?;
        let bytes = pattern::bytes(seed, SHARED_LEN);
        if let Err(e) = gpu.write(memory, 0, &bytes) {
            gpu.free(memory);
            return Err(Failure::new("writing the exportable memory", e));
        }
        Ok(Self { gpu, memory, bytes })
    }

    fn export(&self, handle_type: Types) -> CheckResult<OwnedFd> {
        vk_op(self.gpu.export_fd(self.memory, handle_type))
    }

    /// Imports `fd` and checks the import shows the bytes.
    fn import_and_check(&self, fd: OwnedFd, handle_type: Types) -> CheckResult<vk::DeviceMemory> {
        let type_index = vk_op(self.gpu.device_local_type())?;
        let imported = vk_op(self.gpu.import_fd(fd, handle_type, SHARED, type_index))?;
        match vk_op(self.gpu.read(imported, 0, SHARED_LEN))
            .and_then(|seen| expect_bytes("the import", &self.bytes, &seen))
        {
            Ok(()) => Ok(imported),
            Err(e) => {
                self.gpu.free(imported);
                Err(e)
            }
        }
    }
}

impl Drop for Exported<'_, '_> {
    fn drop(&mut self) {
        self.gpu.free(self.memory);
    }
}

fn fds(ktap: &mut Ktap, gpu: Option<&Gpu<'_>>, raw: Option<&Gpu<'_>>) {
    for (name, handle_type) in [
        ("opaque fd", Types::OPAQUE_FD),
        ("dma-buf", Types::DMA_BUF_EXT),
    ] {
        ktap.check_after(
            &format!(
                "{name}: each vkGetMemoryFdKHR is a new fd, close-on-exec, of the memory's size"
            ),
            gpu,
            |gpu| {
                let exported = Exported::new(gpu, 1)?;
                let a = exported.export(handle_type)?;
                let b = exported.export(handle_type)?;
                if a.as_raw_fd() == b.as_raw_fd() {
                    return Err(Failure::new("two fds", "the same fd twice"));
                }
                for fd in [&a, &b] {
                    if !io_op("fcntl(F_GETFD)", is_cloexec(fd))? {
                        return Err(Failure::new("FD_CLOEXEC set", "it is not"));
                    }
                    let size = io_op("lseek(SEEK_END)", dma_buf::size_by_seek(fd.as_fd()))?;
                    if size < SHARED {
                        return Err(Failure::new(
                            format!("at least {SHARED} bytes"),
                            size.to_string(),
                        ));
                    }
                }
                let (ia, ib) = (
                    io_op("fstat", dma_buf::identity(a.as_fd()))?,
                    io_op("fstat", dma_buf::identity(b.as_fd()))?,
                );
                if ia != ib {
                    return Err(Failure::new(
                        "both fds name one dma-buf",
                        "two different files",
                    ));
                }
                Ok(())
            },
        );
    }
    ktap.check_after(
        "opaque fd: imported twice, two distinct VkDeviceMemory objects both show the exporter's bytes",
        gpu,
        |gpu| import_repeatedly(gpu, Types::OPAQUE_FD, 2),
    );
    ktap.check_after(
        "dma-buf: imported back twice, with the type vkGetMemoryFdPropertiesKHR gives; both show the bytes",
        gpu,
        |gpu| import_repeatedly(gpu, Types::DMA_BUF_EXT, 2),
    );
    ktap.check_after(
        &format!("opaque fd: exported and imported {MANY} times, every import shows the bytes, all freed"),
        gpu,
        |gpu| import_repeatedly(gpu, Types::OPAQUE_FD, MANY),
    );
    ktap.check_after(
        "opaque fd: dup, dup2 and dup3(O_CLOEXEC) copies of an exported fd each import and show the bytes",
        gpu,
        import_dups,
    );
    ktap.check_after(
        "dedicated: a buffer bound to a dedicated exportable allocation, then exported (bind-then-export); the import, dedicated to a second buffer, receives a GPU copy the exporter sees",
        gpu,
        dedicated_bind_then_export,
    );
    ktap.check_after(
        "opaque fd: sent over a unix socket (SCM_RIGHTS) to another process, which imports it and fills it on the GPU; the exporter sees the fill",
        gpu,
        send_to_child,
    );
    ktap.check_after(
        "fd properties: vkGetMemoryFdPropertiesKHR with OPAQUE_FD is VK_ERROR_INVALID_EXTERNAL_HANDLE",
        raw,
        |raw| {
            let exported = Exported::new(raw, 2)?;
            let fd = exported.export(Types::OPAQUE_FD)?;
            let (result, _) = raw.fd_properties(Types::OPAQUE_FD, fd.as_raw_fd());
            expect_result("the query", result, vk::Result::ERROR_INVALID_EXTERNAL_HANDLE)
        },
    );
    ktap.check_after(
        "fd properties: a dma-buf of this device gives memory type bits including the device-local type",
        gpu,
        |gpu| {
            let exported = Exported::new(gpu, 3)?;
            let fd = exported.export(Types::DMA_BUF_EXT)?;
            let (result, bits) = gpu.fd_properties(Types::DMA_BUF_EXT, fd.as_raw_fd());
            expect_result("the query", result, vk::Result::SUCCESS)?;
            let local = vk_op(gpu.device_local_type())?;
            if bits & (1 << local) != 0 && bits >> gpu.memory.memory_type_count == 0 {
                Ok(())
            } else {
                Err(Failure::new(format!("bit {local} set, no bit past the type count"), format!("{bits:#x}")))
            }
        },
    );
    ktap.check_after(
        "fd properties: a bad fd (-1, /dev/null, a closed number) is an error, not a crash",
        raw,
        |raw| {
            let null = io_op("open(/dev/null)", File::open("/dev/null"))?;
            let closed = {
                let f = io_op("open(/dev/null)", File::open("/dev/null"))?;
                f.as_raw_fd()
            };
            for (what, fd) in [
                ("-1", -1),
                ("/dev/null", null.as_raw_fd()),
                ("a closed fd", closed),
            ] {
                let (result, _) = raw.fd_properties(Types::DMA_BUF_EXT, fd);
                if result.as_raw() >= 0 {
                    return Err(Failure::new(
                        format!("an error for {what}"),
                        format!("{result}"),
                    ));
                }
            }
            Ok(())
        },
    );
    ktap.check_after(
        "foreign dma-buf: a udmabuf gets type bits from vkGetMemoryFdPropertiesKHR, imports, and a GPU fill shows in the memfd",
        gpu,
        foreign_udmabuf,
    );
    ktap.check_after(
        "host-mapped foreign memory: a pointer into an mmap of a udmabuf imports as HOST_MAPPED_FOREIGN_MEMORY, and a GPU copy into it shows in the memfd",
        gpu,
        host_mapped_foreign,
    );
}

fn import_repeatedly(gpu: &Gpu<'_>, handle_type: Types, times: usize) -> CheckResult<()> {
    let exported = Exported::new(gpu, 4)?;
    let mut imports = Vec::new();
    let result = (|| {
        for _ in 0..times {
            let fd = exported.export(handle_type)?;
            if handle_type == Types::DMA_BUF_EXT {
                let (result, bits) = gpu.fd_properties(handle_type, fd.as_raw_fd());
                expect_result("vkGetMemoryFdPropertiesKHR", result, vk::Result::SUCCESS)?;
                let local = vk_op(gpu.device_local_type())?;
                if bits & (1 << local) == 0 {
                    return Err(Failure::new(
                        "the device-local type allowed",
                        format!("{bits:#x}"),
                    ));
                }
            }
            imports.push(exported.import_and_check(fd, handle_type)?);
        }
        let mut distinct = imports.clone();
        distinct.sort_by_key(|m| ash::vk::Handle::as_raw(*m));
        distinct.dedup();
        if distinct.len() != imports.len() || imports.contains(&exported.memory) {
            return Err(Failure::new(
                "a distinct VkDeviceMemory per import",
                format!("{} distinct of {}", distinct.len(), imports.len()),
            ));
        }
        Ok(())
    })();
    for memory in imports {
        gpu.free(memory);
    }
    result
}

fn dedicated_bind_then_export(gpu: &Gpu<'_>) -> CheckResult<()> {
    let types = Types::OPAQUE_FD | Types::DMA_BUF_EXT;
    let local = vk_op(gpu.device_local_type())?;
    let create = |handle_types| {
        let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(handle_types);
        let info = vk::BufferCreateInfo::default()
            .size(SHARED)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
            .push_next(&mut external);
        // SAFETY: a live device; the chain lives across the call.
        vk_op(
            unsafe { gpu.device.create_buffer(&info, None) }
                .map_err(|e| format!("vkCreateBuffer: {e}")),
        )
    };
    let allocate = |buffer, import: Option<&mut vk::ImportMemoryFdInfoKHR<'_>>| {
        let mut dedicated = vk::MemoryDedicatedAllocateInfo::default().buffer(buffer);
        let mut export = vk::ExportMemoryAllocateInfo::default().handle_types(types);
        let mut info = vk::MemoryAllocateInfo::default()
            .allocation_size(SHARED)
            .memory_type_index(local)
            .push_next(&mut dedicated);
        info = match import {
            Some(import) => info.push_next(import),
            None => info.push_next(&mut export),
        };
        // SAFETY: a live device; the chain lives across the call.
        vk_op(
            unsafe { gpu.device.allocate_memory(&info, None) }
                .map_err(|e| format!("vkAllocateMemory (dedicated): {e}")),
        )
    };
    let first = create(types)?;
    let second = match create(Types::OPAQUE_FD) {
        Ok(b) => b,
        Err(e) => {
            gpu.destroy_buffer(first);
            return Err(e);
        }
    };
    let bind = |buffer, memory| {
        // SAFETY: live objects; each dedicated allocation is bound to its buffer, at offset 0.
        let bound = unsafe { gpu.device.bind_buffer_memory(buffer, memory, 0) };
        vk_op(bound.map_err(|e| format!("vkBindBufferMemory: {e}")))
    };
    let mut memories = Vec::new();
    let result = (|| {
        let exporter = allocate(first, None)?;
        memories.push(exporter);
        bind(first, exporter)?;
        let fd = vk_op(gpu.export_fd(exporter, Types::OPAQUE_FD))?;
        let raw = fd.as_raw_fd();
        let mut import = vk::ImportMemoryFdInfoKHR::default()
            .handle_type(Types::OPAQUE_FD)
            .fd(raw);
        let imported = match allocate(second, Some(&mut import)) {
            Ok(m) => {
                // The successful import took the fd.
                let _ = fd.into_raw_fd();
                m
            }
            Err(e) => return Err(e),
        };
        memories.push(imported);
        bind(second, imported)?;
        let source = vk_op(gpu.allocate(SHARED, Types::empty()))?;
        memories.push(source);
        let expected = pattern::bytes(11, SHARED_LEN);
        vk_op(gpu.write(source, 0, &expected))?;
        let src = vk_op(gpu.buffer(source, SHARED, Types::empty()))?;
        let copied = vk_op(gpu.copy(src, second, SHARED));
        gpu.destroy_buffer(src);
        copied?;
        let seen = vk_op(gpu.read(exporter, 0, SHARED_LEN))?;
        expect_bytes("the exporter", &expected, &seen)
    })();
    gpu.destroy_buffer(first);
    gpu.destroy_buffer(second);
    for memory in memories {
        gpu.free(memory);
    }
    result
}

fn import_dups(gpu: &Gpu<'_>) -> CheckResult<()> {
    let exported = Exported::new(gpu, 5)?;
    let original = exported.export(Types::OPAQUE_FD)?;
    let mut imports = Vec::new();
    let result = (|| {
        let copy = io_op("dup", dup(&original))?;
        imports.push(exported.import_and_check(copy, Types::OPAQUE_FD)?);
        let mut target = OwnedFd::from(io_op("open(/dev/null)", File::open("/dev/null"))?);
        io_op("dup2", dup2(&original, &mut target))?;
        imports.push(exported.import_and_check(target, Types::OPAQUE_FD)?);
        let mut target = OwnedFd::from(io_op("open(/dev/null)", File::open("/dev/null"))?);
        io_op("dup3", dup3(&original, &mut target, DupFlags::CLOEXEC))?;
        imports.push(exported.import_and_check(target, Types::OPAQUE_FD)?);
        // The original still works after its copies were taken by the imports.
        let last = io_op("dup", dup(&original))?;
        imports.push(exported.import_and_check(last, Types::OPAQUE_FD)?);
        Ok(())
    })();
    for memory in imports {
        gpu.free(memory);
    }
    result
}

/// The fill value the child writes.
const CHILD_VALUE: u32 = 0x5eed_cafe;

fn send_to_child(gpu: &Gpu<'_>) -> CheckResult<()> {
    let exported = Exported::new(gpu, 6)?;
    let fd = exported.export(Types::OPAQUE_FD)?;
    let child = io_op(
        "starting the child",
        FdChild::spawn(&["child-fill"], Stdio::null()),
    )?;
    let sent = send_fd(
        child.socket(),
        fd.as_fd(),
        FdMessage {
            size: SHARED,
            value: CHILD_VALUE,
        },
    );
    drop(fd);
    let ended = child.finish();
    io_op("sendmsg(SCM_RIGHTS)", sent)?;
    ended.map_err(|e| Failure::new("the child imports and fills, exit 0", e))?;
    let seen = vk_op(gpu.read(exported.memory, 0, SHARED_LEN))?;
    expect_bytes(
        "the exporter's memory",
        &vulkan::fill_pattern(CHILD_VALUE, SHARED_LEN),
        &seen,
    )
}

/// The child of [`send_to_child`]: receives the fd on stdin (a unix socket), imports it into
/// its own device and fills it. Exit 0 on success; a message on stderr otherwise.
fn child_fill() -> ExitCode {
    let result = (|| -> Result<(), String> {
        // The parent's environment (only our ICD, no implicit layers) is inherited.
        let entry = vulkan::load()?;
        let validated = vulkan::validation_available(&entry);
        let instance = Instance::new(&entry, validated)?;
        let gpu = Gpu::new(&instance)?;
        let (fd, message) = recv_fd(io::stdin().as_fd()).map_err(|e| format!("recvmsg: {e}"))?;
        let memory = gpu.import_fd(fd, Types::OPAQUE_FD, message.size, gpu.device_local_type()?)?;
        let filled = gpu
            .buffer(memory, message.size, Types::OPAQUE_FD)
            .and_then(|buffer| {
                let filled = gpu.fill(buffer, message.size, message.value);
                gpu.destroy_buffer(buffer);
                filled
            });
        gpu.free(memory);
        filled?;
        drop(gpu);
        drop(instance);
        let count = vulkan::validation_message_count();
        if count != 0 {
            return Err(format!(
                "{count} validation messages: {}",
                vulkan::validation_messages().join(" | ")
            ));
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("child-fill: {e}");
            ExitCode::FAILURE
        }
    }
}

fn foreign_udmabuf(gpu: &Gpu<'_>) -> CheckResult<()> {
    let size = 1 << 20;
    let n = len(size)?;
    let (memfd, buf) = io_op(
        "a udmabuf over a sealed memfd",
        udmabuf::over_sealed_memfd("icd-e2e", size),
    )?;
    let (memory, _) = vk_op(gpu.import_dma_buf(buf, size))?;
    let filled = vk_op(gpu.buffer(memory, size, Types::DMA_BUF_EXT)).and_then(|buffer| {
        let filled = vk_op(gpu.fill(buffer, size, 0x1234_5678));
        gpu.destroy_buffer(buffer);
        filled
    });
    gpu.free(memory);
    filled?;
    let view = io_op("mmap(memfd)", SharedMapping::new(memfd.as_fd(), 0, n))?;
    expect_bytes(
        "the memfd",
        &vulkan::fill_pattern(0x1234_5678, n),
        &view.read_all(),
    )
}

fn host_mapped_foreign(gpu: &Gpu<'_>) -> CheckResult<()> {
    let size = 256 * KIB;
    let n = len(size)?;
    let (memfd, buf) = io_op(
        "a udmabuf over a sealed memfd",
        udmabuf::over_sealed_memfd("icd-e2e", size),
    )?;
    let mapping = io_op("mmap(udmabuf)", SharedMapping::new(buf.as_fd(), 0, n))?;
    let addr = usize::try_from(mapping.addr())
        .map_err(|_| Failure::new("an address that fits usize", mapping.addr().to_string()))?;
    let ptr = addr as *mut c_void;
    // SAFETY: the mapping outlives the imported memory (freed below).
    let imported =
        vk_op(unsafe { gpu.import_host(ptr, size, Types::HOST_MAPPED_FOREIGN_MEMORY_EXT) })?;
    let result = (|| {
        let src_mem = vk_op(gpu.allocate(size, Types::empty()))?;
        let expected = pattern::bytes(7, n);
        let copied = vk_op(gpu.write(src_mem, 0, &expected)).and_then(|()| {
            let src = vk_op(gpu.buffer(src_mem, size, Types::empty()))?;
            let dst = vk_op(gpu.buffer(imported, size, Types::HOST_MAPPED_FOREIGN_MEMORY_EXT));
            let copied = dst.and_then(|dst| {
                let copied = vk_op(gpu.copy(src, dst, size));
                gpu.destroy_buffer(dst);
                copied
            });
            gpu.destroy_buffer(src);
            copied
        });
        gpu.free(src_mem);
        copied?;
        let view = io_op("mmap(memfd)", SharedMapping::new(memfd.as_fd(), 0, n))?;
        expect_bytes("the memfd", &expected, &view.read_all())
    })();
    gpu.free(imported);
    drop(mapping);
    result
}

// ---- properties ----------------------------------------------------------------------------

fn buffer_properties(
    instance: &Instance,
    pd: vk::PhysicalDevice,
    handle_type: Types,
) -> vk::ExternalMemoryProperties {
    let info = vk::PhysicalDeviceExternalBufferInfo::default()
        .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
        .handle_type(handle_type);
    let mut out = vk::ExternalBufferProperties::default();
    // SAFETY: a live physical device; valid structures.
    unsafe {
        instance
            .instance
            .get_physical_device_external_buffer_properties(pd, &info, &mut out)
    };
    out.external_memory_properties
}

fn properties(ktap: &mut Ktap, instance: Option<&Instance>) {
    let pd = instance.and_then(|i| i.physical_devices().ok()?.first().copied());
    let both = instance.zip(pd);
    type Features = vk::ExternalMemoryFeatureFlags;
    ktap.check_after(
        "external buffer properties: OPAQUE_FD and DMA_BUF are exportable and importable, compatible with themselves, not dedicated-only",
        both,
        |(instance, pd)| {
            for t in [Types::OPAQUE_FD, Types::DMA_BUF_EXT] {
                let p = buffer_properties(instance, pd, t);
                let features = Features::EXPORTABLE | Features::IMPORTABLE;
                if p.external_memory_features != features || !p.compatible_handle_types.contains(t) || !p.export_from_imported_handle_types.contains(t) {
                    return Err(Failure::new(format!("{t:?}: export+import, compatible and re-exportable as itself"), format!("{p:?}")));
                }
            }
            Ok(())
        },
    );
    ktap.check_after(
        "external buffer properties: HOST_ALLOCATION and HOST_MAPPED_FOREIGN_MEMORY are import-only, compatible only with themselves",
        both,
        |(instance, pd)| {
            for t in [Types::HOST_ALLOCATION_EXT, Types::HOST_MAPPED_FOREIGN_MEMORY_EXT] {
                let p = buffer_properties(instance, pd, t);
                if p.external_memory_features != Features::IMPORTABLE || p.compatible_handle_types != t || !p.export_from_imported_handle_types.is_empty() {
                    return Err(Failure::new(format!("{t:?}: importable only, compatible = itself"), format!("{p:?}")));
                }
            }
            Ok(())
        },
    );
    ktap.check_after(
        "external buffer properties: every Windows handle type answers all-zero",
        both,
        |(instance, pd)| {
            for t in [
                Types::OPAQUE_WIN32,
                Types::OPAQUE_WIN32_KMT,
                Types::D3D11_TEXTURE,
                Types::D3D11_TEXTURE_KMT,
                Types::D3D12_HEAP,
                Types::D3D12_RESOURCE,
            ] {
                let p = buffer_properties(instance, pd, t);
                let zero = p.external_memory_features.is_empty()
                    && p.export_from_imported_handle_types.is_empty()
                    && p.compatible_handle_types.is_empty();
                if !zero {
                    return Err(Failure::new(format!("{t:?}: all zero"), format!("{p:?}")));
                }
            }
            Ok(())
        },
    );
    ktap.check_after(
        "NV: vkGetPhysicalDeviceExternalImageFormatPropertiesNV reports no handle type for any NV type",
        both,
        |(instance, pd)| {
            let nv = ash::nv::external_memory_capabilities::Instance::new(&instance.entry, &instance.instance);
            type Nv = vk::ExternalMemoryHandleTypeFlagsNV;
            for t in [Nv::OPAQUE_WIN32, Nv::OPAQUE_WIN32_KMT, Nv::D3D11_IMAGE, Nv::D3D11_IMAGE_KMT] {
                let mut out = vk::ExternalImageFormatPropertiesNV::default();
                // SAFETY: a live physical device; `out` is a valid output structure.
                let result = unsafe {
                    (nv.fp().get_physical_device_external_image_format_properties_nv)(
                        pd,
                        vk::Format::R8G8B8A8_UNORM,
                        vk::ImageType::TYPE_2D,
                        vk::ImageTiling::OPTIMAL,
                        vk::ImageUsageFlags::TRANSFER_SRC,
                        vk::ImageCreateFlags::empty(),
                        t,
                        &mut out,
                    )
                };
                let none = out.external_memory_features.is_empty()
                    && out.export_from_imported_handle_types.is_empty()
                    && out.compatible_handle_types.is_empty();
                let ok_result = result == vk::Result::SUCCESS || result == vk::Result::ERROR_FORMAT_NOT_SUPPORTED;
                if !none || !ok_result {
                    return Err(Failure::new(format!("{t:?}: no handle types"), format!("{result}, {out:?}")));
                }
            }
            Ok(())
        },
    );
}

// ---- transfers -----------------------------------------------------------------------------

fn transfers(ktap: &mut Ktap, gpu: Option<&Gpu<'_>>) {
    ktap.check_after(
        "transfer: vkCmdFillBuffer, two vkCmdUpdateBuffer (1 KiB, 64 KiB) and vkCmdCopyBuffer in one submission give exactly the modelled bytes",
        gpu,
        transfer_model,
    );
}

fn transfer_model(gpu: &Gpu<'_>) -> CheckResult<()> {
    const SIZE: u64 = 256 * KIB;
    const N: usize = 256 * 1024;
    let dst_mem = vk_op(gpu.allocate(SIZE, Types::empty()))?;
    let src_mem = match vk_op(gpu.allocate(16 * KIB, Types::empty())) {
        Ok(m) => m,
        Err(e) => {
            gpu.free(dst_mem);
            return Err(e);
        }
    };
    let result = (|| {
        let source = pattern::bytes(8, 16 * 1024);
        vk_op(gpu.write(src_mem, 0, &source))?;
        let small = pattern::bytes(9, 1024);
        let large = pattern::bytes(10, 64 * 1024);
        let mut model = vulkan::fill_pattern(0x1122_3344, N);
        model[256..256 + 1024].copy_from_slice(&small);
        model[65536..65536 + 65536].copy_from_slice(&large);
        model[8192..8192 + 4096].copy_from_slice(&source[4096..8192]);
        let head: Vec<u8> = model[0..4096].to_vec();
        model[200 * 1024..200 * 1024 + 4096].copy_from_slice(&head);
        let src = vk_op(gpu.buffer(src_mem, 16 * KIB, Types::empty()))?;
        let dst = match vk_op(gpu.buffer(dst_mem, SIZE, Types::empty())) {
            Ok(b) => b,
            Err(e) => {
                gpu.destroy_buffer(src);
                return Err(e);
            }
        };
        let barrier = |device: &ash::Device, cb| {
            let memory = [vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                .dst_access_mask(vk::AccessFlags::TRANSFER_READ | vk::AccessFlags::TRANSFER_WRITE)];
            // SAFETY: recording.
            unsafe {
                device.cmd_pipeline_barrier(
                    cb,
                    vk::PipelineStageFlags::TRANSFER,
                    vk::PipelineStageFlags::TRANSFER,
                    vk::DependencyFlags::empty(),
                    &memory,
                    &[],
                    &[],
                )
            };
        };
        let ran = vk_op(gpu.run(|device, cb| {
            // SAFETY: recording; every range lies inside its bound buffer.
            unsafe {
                device.cmd_fill_buffer(cb, dst, 0, vk::WHOLE_SIZE, 0x1122_3344);
                barrier(device, cb);
                device.cmd_update_buffer(cb, dst, 256, &small);
                device.cmd_update_buffer(cb, dst, 65536, &large);
                device.cmd_copy_buffer(
                    cb,
                    src,
                    dst,
                    &[vk::BufferCopy::default()
                        .src_offset(4096)
                        .dst_offset(8192)
                        .size(4096)],
                );
                barrier(device, cb);
                device.cmd_copy_buffer(
                    cb,
                    dst,
                    dst,
                    &[vk::BufferCopy::default()
                        .src_offset(0)
                        .dst_offset(200 * 1024)
                        .size(4096)],
                );
            }
        }));
        gpu.destroy_buffer(dst);
        gpu.destroy_buffer(src);
        ran?;
        let seen = vk_op(gpu.read(dst_mem, 0, N))?;
        expect_bytes("the device memory", &model, &seen)
    })();
    gpu.free(src_mem);
    gpu.free(dst_mem);
    result
}

// ---- optimal images ------------------------------------------------------------------------

/// The images' extent: 33 RGBA texels are 132 bytes a row.
const IMAGE_EXTENT: (u32, u32) = (33, 17);
/// The row pitch the device chooses for such an image, linear or optimal: 132 bytes padded
/// to 64. The application cannot ask for it (VUID-vkGetImageSubresourceLayout-image-07790);
/// the checks read it in the memory, where another API sharing the dma-buf would.
const IMAGE_PITCH: usize = 192;
/// The memory an image takes, a whole page.
const IMAGE_MEMORY: u64 = 4096;
/// The handle types the exported image and its memory are declared for.
const FD_TYPES: Types = Types::from_raw(Types::OPAQUE_FD.as_raw() | Types::DMA_BUF_EXT.as_raw());

/// What an image check made on one device, destroyed on drop (images, then buffers, then
/// memory), also when the check fails halfway.
struct Made<'g, 'i> {
    gpu: &'g Gpu<'i>,
    images: Vec<Image>,
    buffers: Vec<vk::Buffer>,
    memories: Vec<vk::DeviceMemory>,
}

impl<'g, 'i> Made<'g, 'i> {
    fn new(gpu: &'g Gpu<'i>) -> Self {
        Self {
            gpu,
            images: Vec::new(),
            buffers: Vec::new(),
            memories: Vec::new(),
        }
    }

    /// Keeps memory just allocated or imported.
    fn memory(&mut self, memory: VkResult<vk::DeviceMemory>) -> CheckResult<vk::DeviceMemory> {
        let memory = vk_op(memory)?;
        self.memories.push(memory);
        Ok(memory)
    }

    /// A staging buffer over new, not external memory of `size` bytes.
    fn staging(&mut self, size: u64) -> CheckResult<(vk::DeviceMemory, vk::Buffer)> {
        let memory = self.memory(self.gpu.allocate(size, Types::empty()))?;
        let buffer = vk_op(self.gpu.buffer(memory, size, Types::empty()))?;
        self.buffers.push(buffer);
        Ok((memory, buffer))
    }

    /// An optimal image for external memory of `handle_types`, bound at 0 of `memory`.
    fn optimal_image(
        &mut self,
        memory: vk::DeviceMemory,
        handle_types: Types,
    ) -> CheckResult<Image> {
        let image = vk_op(
            self.gpu
                .image(IMAGE_EXTENT, vk::ImageTiling::OPTIMAL, handle_types),
        )?;
        self.images.push(image);
        vk_op(self.gpu.bind_image(image, memory))?;
        Ok(image)
    }

    /// Writes `texels` (packed) into `image` through a staging buffer and reads them back
    /// in the same submission.
    fn write_image(&mut self, image: Image, texels: &[u8]) -> CheckResult<()> {
        let (memory, buffer) = self.staging(2 * IMAGE_MEMORY)?;
        vk_op(self.gpu.write(memory, 0, texels))?;
        vk_op(self.gpu.image_round_trip(image, buffer, IMAGE_MEMORY))?;
        let seen = vk_op(self.gpu.read(memory, IMAGE_MEMORY, texels.len()))?;
        expect_bytes("the image copied back to the buffer", texels, &seen)
    }

    /// The texels of `image` (packed), read through a staging buffer.
    fn read_image(&mut self, image: Image) -> CheckResult<Vec<u8>> {
        let (memory, buffer) = self.staging(IMAGE_MEMORY)?;
        vk_op(self.gpu.read_image(image, buffer))?;
        vk_op(self.gpu.read(memory, 0, image.packed_len()))
    }
}

impl Drop for Made<'_, '_> {
    fn drop(&mut self) {
        for image in self.images.drain(..) {
            self.gpu.destroy_image(image);
        }
        for buffer in self.buffers.drain(..) {
            self.gpu.destroy_buffer(buffer);
        }
        for memory in self.memories.drain(..) {
            self.gpu.free(memory);
        }
    }
}

/// Checks that `stored` (an image's memory) holds the packed `texels` row by row at
/// [`IMAGE_PITCH`], with the padding untouched (zero).
fn expect_rows(what: &str, texels: &[u8], stored: &[u8]) -> CheckResult<()> {
    let row = Image::TEXEL * IMAGE_EXTENT.0 as usize;
    for (y, texel_row) in texels.chunks(row).enumerate() {
        let at = y * IMAGE_PITCH;
        let seen = stored
            .get(at..at + IMAGE_PITCH)
            .ok_or_else(|| Failure::new(format!("{what}: row {y}"), "past the end"))?;
        expect_bytes(&format!("{what}: row {y}"), texel_row, &seen[..row])?;
        if seen[row..].iter().any(|b| *b != 0) {
            return Err(Failure::new(
                format!("{what}: row {y} padding all zero"),
                format!("{:02x?}", &seen[row..]),
            ));
        }
    }
    Ok(())
}

/// The image the checks share: device memory exportable as both fd types, under an optimal
/// image holding `texels`.
struct Shared<'g, 'i> {
    made: Made<'g, 'i>,
    memory: vk::DeviceMemory,
    texels: Vec<u8>,
}

fn optimal_images(ktap: &mut Ktap, instance: Option<&Instance>, gpu: Option<&Gpu<'_>>) {
    ktap.check_after(
        "optimal images: RGBA8 optimalTilingFeatures are TRANSFER_SRC|DST; OPTIMAL with OPAQUE_FD and with DMA_BUF is exportable and importable, compatible with both; with HOST_ALLOCATION it is VK_ERROR_FORMAT_NOT_SUPPORTED",
        instance.zip(gpu.map(|g| g.physical)),
        |(instance, pd)| {
            // SAFETY: a live physical device.
            let formats = unsafe {
                instance
                    .instance
                    .get_physical_device_format_properties(pd, vk::Format::R8G8B8A8_UNORM)
            };
            let transfer = vk::FormatFeatureFlags::TRANSFER_SRC | vk::FormatFeatureFlags::TRANSFER_DST;
            expect_eq("optimalTilingFeatures", formats.optimal_tiling_features, transfer)?;
            let optimal = vk::ImageTiling::OPTIMAL;
            for t in [Types::OPAQUE_FD, Types::DMA_BUF_EXT] {
                let (result, limits, p) = instance.image_format_properties(pd, optimal, t);
                let both = vk::ExternalMemoryFeatureFlags::EXPORTABLE
                    | vk::ExternalMemoryFeatureFlags::IMPORTABLE;
                let ok = result.is_ok()
                    && limits.max_extent.width >= IMAGE_EXTENT.0
                    && p.external_memory_features == both
                    && p.compatible_handle_types.contains(FD_TYPES);
                if !ok {
                    return Err(Failure::new(
                        format!("{t:?}: success, export and import, compatible with {FD_TYPES:?}"),
                        format!("{result:?}, {limits:?}, {p:?}"),
                    ));
                }
            }
            let (result, _, _) =
                instance.image_format_properties(pd, optimal, Types::HOST_ALLOCATION_EXT);
            expect_eq(
                "HOST_ALLOCATION",
                result,
                Err(vk::Result::ERROR_FORMAT_NOT_SUPPORTED),
            )
        },
    );
    let other = ktap.check_after(
        "optimal images: a second device of the validated instance, to share them with",
        instance,
        |instance| Gpu::new(instance).map_err(|e| Failure::new("a device", e)),
    );
    let shared = ktap.check_after(
        "optimal image: buffer -> optimal image -> buffer in one submission gives the texels back, and the image's memory holds its rows at the device's pitch (192 bytes for 33 texels)",
        gpu,
        |gpu| {
            let mut made = Made::new(gpu);
            let memory = made.memory(gpu.allocate(IMAGE_MEMORY, FD_TYPES))?;
            let image = made.optimal_image(memory, FD_TYPES)?;
            let reqs = gpu.image_requirements(image);
            if reqs.size > IMAGE_MEMORY {
                return Err(Failure::new(
                    format!("at most {IMAGE_MEMORY} bytes"),
                    format!("{reqs:?}"),
                ));
            }
            let texels = pattern::bytes(12, image.packed_len());
            made.write_image(image, &texels)?;
            let stored = vk_op(gpu.read(memory, 0, IMAGE_PITCH * IMAGE_EXTENT.1 as usize))?;
            expect_rows("the image's memory", &texels, &stored)?;
            Ok(Shared {
                made,
                memory,
                texels,
            })
        },
    );
    let pair = shared.as_ref().zip(other.as_ref());
    ktap.check_after(
        "optimal image: its memory exported as an opaque fd and imported into the second device, an optimal image bound there reads the same texels",
        pair,
        |(shared, other)| {
            let fd = vk_op(shared.made.gpu.export_fd(shared.memory, Types::OPAQUE_FD))?;
            let mut made = Made::new(other);
            let type_index = vk_op(other.device_local_type())?;
            let imported =
                made.memory(other.import_fd(fd, Types::OPAQUE_FD, IMAGE_MEMORY, type_index))?;
            let image = made.optimal_image(imported, Types::OPAQUE_FD)?;
            let seen = made.read_image(image)?;
            expect_bytes("the second device's optimal image", &shared.texels, &seen)
        },
    );
    let imported = ktap.check_after(
        "optimal image: exported as a dma-buf, its mmap shows the rows at the pitch; imported as a dma-buf into the second device, an optimal image bound there reads the same texels",
        pair,
        |(shared, other)| {
            let fd = vk_op(shared.made.gpu.export_fd(shared.memory, Types::DMA_BUF_EXT))?;
            let id = io_op("fstat(dma-buf)", dma_buf::identity(fd.as_fd()))?;
            let mapped = io_op(
                "mmap(dma-buf)",
                SharedMapping::new(fd.as_fd(), 0, len(IMAGE_MEMORY)?),
            )?;
            let stored = io_op(
                "DMA_BUF_IOCTL_SYNC",
                dma_buf::with_cpu_access(fd.as_fd(), || mapped.read_all()),
            )?;
            drop(mapped);
            expect_rows("the dma-buf's mmap", &shared.texels, &stored)?;
            let (result, bits) = other.fd_properties(Types::DMA_BUF_EXT, fd.as_raw_fd());
            expect_result("vkGetMemoryFdPropertiesKHR", result, vk::Result::SUCCESS)?;
            let type_index = vk_op(other.memory_type(bits, vk::MemoryPropertyFlags::empty()))?;
            let mut made = Made::new(other);
            let memory = made.memory(other.import_fd_exportable(
                fd,
                Types::DMA_BUF_EXT,
                IMAGE_MEMORY,
                type_index,
                Types::DMA_BUF_EXT,
            ))?;
            let image = made.optimal_image(memory, FD_TYPES)?;
            let seen = made.read_image(image)?;
            expect_bytes("the second device's optimal image", &shared.texels, &seen)?;
            Ok((made, memory, image, id))
        },
    );
    ktap.check_after(
        "optimal image: on the second device, the GPU writes new texels into the optimal image over the imported dma-buf; that memory exported again is the same dma-buf, and the first device sees the new rows",
        shared.as_ref().zip(imported),
        |(shared, (mut made, memory, image, id))| {
            let texels = pattern::bytes(13, image.packed_len());
            made.write_image(image, &texels)?;
            let again = vk_op(made.gpu.export_fd(memory, Types::DMA_BUF_EXT))?;
            let again_id = io_op("fstat(dma-buf)", dma_buf::identity(again.as_fd()))?;
            expect_eq("the re-exported dma-buf", again_id, id)?;
            let stored = vk_op(shared.made.gpu.read(
                shared.memory,
                0,
                IMAGE_PITCH * IMAGE_EXTENT.1 as usize,
            ))?;
            expect_rows("the first device's memory", &texels, &stored)
        },
    );
}
