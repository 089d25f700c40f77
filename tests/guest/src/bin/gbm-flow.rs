//! gbm-flow: what a Wayland compositor does with a client's buffer, on extmem-icd through the
//! Khronos loader under the validation layer.
//!
//! A linear ARGB8888 buffer is allocated with GBM (Mesa's libgbm) on the virtio-gpu node and
//! written by the CPU through GBM's mapping; its dma-buf export is imported into Vulkan
//! (`vkGetMemoryFdPropertiesKHR`, then `VkImportMemoryFdInfoKHR` with
//! `VK_EXTERNAL_MEMORY_HANDLE_TYPE_DMA_BUF_BIT_EXT`) and bound to a buffer; the GPU copies it
//! out (every byte checked), then copies a second image into it, which the CPU checks through
//! the dma-buf's mmap and through GBM's mapping. See `gbm_buffer` for which GBM driver serves
//! the node and why the primary node.

use std::io;
use std::process::ExitCode;

use extmem_guest_tests::fd_table;
use extmem_guest_tests::gbm_buffer::{self, GbmBuffer, ImportedBuffer};
use extmem_guest_tests::ktap::{CheckResult, Failure, KtapWriter};
use extmem_guest_tests::pattern::expect_bytes;
use extmem_guest_tests::vulkan::{self, Gpu, Instance};

/// Results the program writes, the descriptor check included.
const PLAN: usize = 10;
/// The buffer: 1024 × 1024 pixels of 4 bytes, 4 MiB.
const WIDTH: u32 = 1024;
const HEIGHT: u32 = 1024;

type Ktap = KtapWriter<io::Stdout>;

fn main() -> ExitCode {
    gbm_buffer::configure_mesa();
    fd_table::ktap_program(PLAN, run)
}

fn step<T>(result: Result<T, String>) -> CheckResult<T> {
    result.map_err(|e| Failure::new("the calls succeed", e))
}

fn run(ktap: &mut Ktap) {
    let entry = ktap.check(
        "loader: libvulkan.so.1 loads with only extmem_icd.json, and the validation layer is installed",
        || {
            step(vulkan::isolate_loader().map_err(|e| e.to_string()))?;
            let entry = step(vulkan::load())?;
            if vulkan::validation_available(&entry) {
                Ok(entry)
            } else {
                Err(Failure::new(
                    "VK_LAYER_KHRONOS_validation installed",
                    "it is not",
                ))
            }
        },
    );
    let instance = ktap.check_after(
        "vulkan: an instance under the validation layer",
        entry.as_ref(),
        |entry| step(Instance::new(entry, true)),
    );
    let gpu = ktap.check_after(
        "vulkan: a device with VK_EXT_external_memory_dma_buf",
        instance.as_ref(),
        |instance| step(Gpu::new(instance)),
    );
    let buffer = ktap.check(
        &format!(
            "gbm: the virtio-gpu card node opens as a GBM device and allocates a {WIDTH}x{HEIGHT} ARGB8888 LINEAR buffer, exported as a dma-buf"
        ),
        || step(GbmBuffer::allocate(WIDTH, HEIGHT)),
    );
    if let Some(buffer) = &buffer {
        ktap.diagnostic(format_args!(
            "{} via GBM backend {:?}: stride {}, dma-buf of {} bytes",
            buffer.node().path.display(),
            buffer.backend(),
            buffer.stride(),
            buffer.size()
        ));
    }
    let (first, second) = gbm_buffer::images(buffer.as_ref().map_or(0, GbmBuffer::len));
    let written = ktap.check_after(
        "gbm: the CPU writes an image through gbm_bo_map, between DMA_BUF_IOCTL_SYNC start and end",
        buffer,
        |mut buffer| {
            step(buffer.write_through_gbm(&first))?;
            Ok(buffer)
        },
    );
    let imported = ktap.check_after(
        "vulkan: vkGetMemoryFdPropertiesKHR gives memory types for the GBM dma-buf; it imports (VkImportMemoryFdInfoKHR) bound to a buffer",
        gpu.as_ref().zip(written.as_ref()),
        |(gpu, buffer)| {
            let fd = step(buffer.export())?;
            step(ImportedBuffer::new(gpu, fd, buffer.size()))
        },
    );
    if let Some(imported) = &imported {
        ktap.diagnostic(format_args!(
            "imported with memoryTypeBits {:#b}",
            imported.memory_type_bits
        ));
    }
    let copied_out = ktap.check_after(
        "vulkan: a GPU copy out of the import shows every byte the CPU wrote through GBM",
        imported.as_ref(),
        |imported| {
            let seen = step(imported.read_by_gpu(first.len()))?;
            expect_bytes("device memory after the copy", &first, &seen)
        },
    );
    ktap.check_after(
        "gbm: a GPU copy of a second image into the import shows in every byte through the dma-buf's mmap and through gbm_bo_map",
        imported.as_ref().zip(written.as_ref()).zip(copied_out),
        |((imported, buffer), ())| {
            step(imported.write_by_gpu(&second))?;
            expect_bytes(
                "the dma-buf's mmap",
                &second,
                &step(buffer.read_through_dma_buf())?,
            )?;
            expect_bytes("gbm_bo_map", &second, &step(buffer.read_through_gbm())?)
        },
    );
    drop(imported);
    drop(written);
    drop(gpu);
    drop(instance);
    ktap.check_after(
        "validation: VK_LAYER_KHRONOS_validation reported nothing over the whole flow",
        entry,
        |_| match vulkan::validation_message_count() {
            0 => Ok(()),
            count => Err(Failure::new(
                "no messages",
                format!("{count}: {}", vulkan::validation_messages().join(" | ")),
            )),
        },
    );
}
