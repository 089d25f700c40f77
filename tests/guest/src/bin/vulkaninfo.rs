//! vulkaninfo: Debian's `vulkaninfo` (vulkan-tools) through the Khronos loader with only
//! extmem-icd, on the real extmem-vgpu node — the summary, the full report (which walks every
//! property and format query the tool knows), and the summary again under the Khronos
//! validation layer. Each must exit 0 and show what the checks name.

use std::io;
use std::path::Path;
use std::process::{Command, ExitCode};

use extmem_guest_tests::ktap::{CheckResult, Failure, KtapWriter};
use extmem_guest_tests::vulkan;

/// Results the program writes.
const PLAN: usize = 4;

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
    ktap.check_after(
        "vulkaninfo (full report): exit 0, lists the external-memory extensions and minImportedHostPointerAlignment = 0x1000",
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
                    "minImportedHostPointerAlignment = 0x00001000",
                    "deviceUUID",
                    "driverUUID",
                ],
            )
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
