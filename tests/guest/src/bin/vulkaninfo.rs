//! vulkaninfo: Debian's `vulkaninfo` (vulkan-tools) through the Khronos loader with only
//! extmem-icd, on the real extmem-vgpu node — the summary, the full report (which walks every
//! property and format query the tool knows), and the summary again under the Khronos
//! validation layer. Each must exit 0 and show what the checks name.

use std::io;
use std::path::Path;
use std::process::{Command, ExitCode};

use extmem_guest_tests::dri::{self, NodeKind};
use extmem_guest_tests::host_memory;
use extmem_guest_tests::ktap::{CheckResult, Failure, KtapWriter};
use extmem_guest_tests::vulkan;

/// Results the program writes.
const PLAN: usize = 5;

fn main() -> ExitCode {
    let mut ktap = KtapWriter::stdout(PLAN);
    let manifest = ktap.check("manifest: extmem_icd.json is next to this program", || {
        vulkan::icd_manifest().map_err(|e| Failure::op("finding the ICD manifest", e))
    });
    let manifest = manifest.as_deref();
    ktap.check_after(
        "vulkaninfo --summary: exit 0, one GPU, extmem-vgpu, Vulkan 1.1",
        manifest,
        |m| {
            let out = vulkaninfo(m, &["--summary"], false)?;
            expect_in(
                &out,
                &[
                    "extmem-vgpu (renderD",
                    "apiVersion",
                    "= 1.1",
                    "PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU",
                ],
            )?;
            if out.contains("GPU1") {
                return Err(Failure::new("one GPU", "a second GPU is listed"));
            }
            Ok(())
        },
    );
    // The import alignment is the CPU page (the kernel pins whole ones; extmem's profiles ask
    // for no more than 4 KiB).
    let alignment = host_memory::cpu_page().max(4096);
    let alignment_line = format!("minImportedHostPointerAlignment = {alignment:#010x}");
    let full = ktap.check_after(
        &format!("vulkaninfo (full report): exit 0, lists the external-memory and synchronisation extensions (external semaphore/fence fd, timeline semaphores, synchronization2) and minImportedHostPointerAlignment = {alignment:#x} (the CPU page)"),
        manifest,
        |m| {
            let out = vulkaninfo(m, &[], false)?;
            expect_in(
                &out,
                &[
                    "VK_KHR_external_memory_fd",
                    "VK_EXT_external_memory_dma_buf",
                    "VK_EXT_external_memory_host",
                    "VK_NV_external_memory",
                    "VK_KHR_external_memory_capabilities",
                    "VK_KHR_external_semaphore_fd",
                    "VK_KHR_external_fence_fd",
                    "VK_KHR_external_semaphore_capabilities",
                    "VK_KHR_external_fence_capabilities",
                    "VK_KHR_timeline_semaphore",
                    "VK_KHR_synchronization2",
                    "maxTimelineSemaphoreValueDifference",
                    &alignment_line,
                    "deviceUUID",
                    "driverUUID",
                ],
            )?;
            Ok(out)
        },
    );
    ktap.check_after(
        "vulkaninfo (full report): lists VK_EXT_physical_device_drm, and VkPhysicalDeviceDrmPropertiesEXT shows the extmem-vgpu render and primary nodes' numbers",
        full.as_deref(),
        |out| {
            expect_in(out, &["VK_EXT_physical_device_drm", "VkPhysicalDeviceDrmPropertiesEXT"])?;
            let mut expected = Vec::new();
            let nodes = [
                (NodeKind::Render, ["hasRender", "renderMajor", "renderMinor"]),
                (NodeKind::Primary, ["hasPrimary", "primaryMajor", "primaryMinor"]),
            ];
            for (kind, [has, major_name, minor_name]) in nodes {
                let node = dri::open_by_driver(extmem_uapi::DRIVER_NAME, kind).map_err(|e| {
                    Failure::new(format!("an extmem-vgpu {kind:?} node"), e.to_string())
                })?;
                let (major, minor) = node
                    .device_number()
                    .map_err(|e| Failure::op(format_args!("fstat({})", node.path.display()), e))?;
                expected.push((has, "true".to_owned()));
                expected.push((major_name, major.to_string()));
                expected.push((minor_name, minor.to_string()));
            }
            let wrong: Vec<String> = expected
                .iter()
                .filter(|(name, value)| field(out, name) != Some(value.as_str()))
                .map(|(name, value)| format!("{name} = {value} (shown: {:?})", field(out, name)))
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(Failure::new("the nodes' numbers", wrong.join(", ")))
            }
        },
    );
    ktap.check_after(
        "vulkaninfo --summary under VK_LAYER_KHRONOS_validation: exit 0, no validation message",
        manifest,
        |m| {
            let out = vulkaninfo(m, &["--summary"], true)?;
            expect_in(&out, &["extmem-vgpu (renderD"])?;
            let reported = |l: &&str| {
                [
                    "Validation Error",
                    "Validation Warning",
                    "Validation Performance",
                    "VUID-",
                ]
                .iter()
                .any(|m| l.contains(m))
            };
            match out.lines().find(reported) {
                None => Ok(()),
                Some(line) => Err(Failure::new("no validation message", line.to_owned())),
            }
        },
    );
    ktap.finish()
}

/// Runs vulkaninfo with only our ICD; stdout and stderr together, if it exits 0.
fn vulkaninfo(manifest: &Path, args: &[&str], validation: bool) -> CheckResult<String> {
    let mut command = Command::new("vulkaninfo");
    command
        .args(args)
        .env("VK_DRIVER_FILES", manifest)
        .env("VK_ICD_FILENAMES", manifest)
        .env("VK_LOADER_LAYERS_DISABLE", "~implicit~");
    if validation {
        command.env(
            "VK_INSTANCE_LAYERS",
            vulkan::VALIDATION_LAYER.to_string_lossy().as_ref(),
        );
    }
    let output = command
        .output()
        .map_err(|e: io::Error| Failure::op("running vulkaninfo", e))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(text)
    } else {
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        Err(Failure::new(
            "exit status 0",
            format!(
                "{}; last lines: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        ))
    }
}

/// The value vulkaninfo prints for the property `name` (`name = value`, aligned with
/// spaces), on its first line.
fn field<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == name).then(|| value.trim())
    })
}

fn expect_in(text: &str, wanted: &[&str]) -> CheckResult<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !text.contains(w))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            format!("the output contains {wanted:?}"),
            format!("missing {missing:?}"),
        ))
    }
}
