//! The `kmod` suite step: `extmem_vgpu.ko` built for each kernel the guests boot — x86_64
//! (Debian's backports amd64 kernel), arm64 and arm64-16k (Debian's arm64 kernels of the
//! same release, cross-built) — with three checks each: the module built, its vermagic
//! names that kernel, and the Rust object linked into it has no reachable panic.
//!
//! The guest steps load the module they need themselves; this step is what shows, without
//! booting anything, that every architecture and page size still builds.

use std::time::Instant;

use crate::kmod_build::{self, KmodError, ModuleTarget};
use crate::provision::{self, Arm64Flavour, Kernel, Provisioned};
use crate::report::{Check, Step};
use crate::workspace::Workspace;

/// The module builds the step checks, each with the kernel it is for (`None` for the
/// x86_64 one: the provisioned backports kernel).
const TARGETS: [(ModuleTarget, Option<Arm64Flavour>); 3] = [
    (ModuleTarget::X86_64, None),
    (ModuleTarget::ARM64, Some(Arm64Flavour::Pages4K)),
    (ModuleTarget::ARM64_16K, Some(Arm64Flavour::Pages16K)),
];

/// Builds the module for every target of [`TARGETS`]; without a provisioned kernel, every
/// check fails with that reason.
pub fn run(workspace: &Workspace, provisioned: Option<&Provisioned>) -> Step {
    let started = Instant::now();
    let mut step = Step::new(format!("{} builds", kmod_build::MODULE_FILE));
    for (target, flavour) in TARGETS {
        println!(
            "suite: building {} for {} …",
            kmod_build::MODULE_FILE,
            target.name
        );
        let kernel = match (provisioned, flavour) {
            (None, _) => Err("provisioning failed (see its step)".to_owned()),
            (Some(p), None) => Ok(p.kernel.clone()),
            (Some(p), Some(flavour)) => {
                provision::provision_arm64(&p.kernel, flavour).map_err(|e| e.to_string())
            }
        };
        let checks = match kernel {
            Ok(kernel) => {
                step.notes.push(format!(
                    "{}: Linux {} ({})",
                    target.name, kernel.version, kernel.origin
                ));
                target_checks(workspace, target, &kernel)
            }
            Err(reason) => {
                let reason = format!("no kernel to build against: {reason}");
                CHECKS
                    .iter()
                    .map(|what| Check::fail(check_name(target, what), reason.clone()))
                    .collect()
            }
        };
        step.checks.extend(checks);
    }
    step.elapsed = started.elapsed();
    step
}

/// The checks of one target, in this order.
const CHECKS: [&str; 3] = ["no panic in the kernel object", "built", "vermagic"];

fn check_name(target: ModuleTarget, what: &str) -> String {
    format!("{} {}: {what}", kmod_build::MODULE_FILE, target.name)
}

/// The three checks of [`CHECKS`] for `target` against `kernel`. The object is linked
/// first on its own, so that a panic in it fails that check by name; the module build
/// links it again (cargo has nothing left to do by then).
fn target_checks(workspace: &Workspace, target: ModuleTarget, kernel: &Kernel) -> Vec<Check> {
    let [no_panic, built, vermagic] = CHECKS.map(|what| check_name(target, what));
    let object = match kmod_build::kernel_object(workspace, target) {
        Ok(_) => Check::pass(no_panic),
        Err(err) => {
            let reason = format!("not built: the kernel object failed first: {err}");
            return vec![
                Check::fail(no_panic, err.to_string()),
                Check::fail(built, reason.clone()),
                Check::fail(vermagic, reason),
            ];
        }
    };
    match kmod_build::build_for(workspace, kernel, target) {
        Ok(module) => vec![
            object,
            Check::pass(format!("{built} ({})", module.module.display())),
            Check::pass(format!("{vermagic} ({})", module.vermagic)),
        ],
        Err(err @ KmodError::Vermagic { .. }) => vec![
            object,
            Check::pass(built),
            Check::fail(vermagic, err.to_string()),
        ],
        Err(err) => vec![
            object,
            Check::fail(built, err.to_string()),
            Check::fail(vermagic, "not built, so not checked".to_owned()),
        ],
    }
}
