//! What the guest runs: the kernel features it needs, the guest test suites (setup commands,
//! programs, teardown) and the demo, as `const` tables; and the plan script the initramfs
//! carries to run them.
//!
//! The extmem-vgpu suite `insmod`s the module by its host path (`{module}`, the build for the
//! guest's kernel,
//! built by `kmod_build.rs` because the suite sets `kernel_module`), runs its programs and
//! `rmmod`s it in its teardown.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// How the runner reads a program's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// One KTAP document on stdout; every result is a check.
    Ktap,
    /// Free text shown as is; the exit code is the one check.
    Plain,
}

/// A guest program: a binary of a workspace package, run by its host path inside the guest.
#[derive(Debug, Clone, Copy)]
pub struct GuestProgram {
    /// Name in the report and the console markers (no spaces).
    pub name: &'static str,
    /// The cargo package that builds it.
    pub package: &'static str,
    /// The binary target.
    pub binary: &'static str,
    /// Its output format.
    pub output: OutputFormat,
}

/// A command run in the guest (chrooted into the host root) before or after a suite's programs.
/// Each word may use `{target_dir}`, `{workspace}`, `{kernel}` (the guest kernel release) and
/// `{module}` (`extmem_vgpu.ko` built for that kernel).
#[derive(Debug, Clone, Copy)]
pub struct GuestCommand {
    /// Name in the report and the console markers (no spaces).
    pub name: &'static str,
    /// The command and its arguments.
    pub argv: &'static [&'static str],
}

/// A group of programs sharing setup and teardown.
#[derive(Debug, Clone, Copy)]
pub struct GuestSuite {
    /// Name in the report.
    pub name: &'static str,
    /// Run before the programs; a failure is a failed check.
    pub setup: &'static [GuestCommand],
    /// The programs, in order.
    pub programs: &'static [GuestProgram],
    /// Run after the programs; a failure is a failed check.
    pub teardown: &'static [GuestCommand],
    /// Whether the suite loads `extmem_vgpu.ko`: the runner builds it first (`kmod_build.rs`).
    pub kernel_module: bool,
}

/// A kernel feature the guest needs, loaded as a module when the kernel has it as one.
#[derive(Debug, Clone, Copy)]
pub struct KernelFeature {
    /// The module name (as in `modules.dep`, `-` or `_`).
    pub module: &'static str,
    /// Its Kconfig symbol, to tell built-in from module from absent.
    pub config: &'static str,
    /// What the guest uses it for.
    pub purpose: &'static str,
    /// Whether Debian's 6.1 (bookworm) kernel has it: its config sets neither
    /// `CONFIG_UDMABUF` nor `CONFIG_DMABUF_HEAPS`, so the LTS boot cannot ask for them.
    pub in_debian_6_1: bool,
    /// Whether Debian's arm64 kernels (`arm64`, `arm64-16k`, 6.12 in bookworm-backports) have
    /// it: their config leaves `CONFIG_DMABUF_HEAPS` unset, so there is no system dma-heap.
    pub in_debian_arm64: bool,
}

/// Everything the guest needs from the kernel; dependencies come from `modules.dep`.
pub const KERNEL_FEATURES: &[KernelFeature] = &[
    KernelFeature {
        module: "virtio_pci",
        config: "CONFIG_VIRTIO_PCI",
        purpose: "the virtio transport of 9p and virtio-gpu",
        in_debian_6_1: true,
        in_debian_arm64: true,
    },
    KernelFeature {
        module: "9pnet_virtio",
        config: "CONFIG_NET_9P_VIRTIO",
        purpose: "9p over virtio, for the host root",
        in_debian_6_1: true,
        in_debian_arm64: true,
    },
    KernelFeature {
        module: "9p",
        config: "CONFIG_9P_FS",
        purpose: "the 9p filesystem, for the host root",
        in_debian_6_1: true,
        in_debian_arm64: true,
    },
    KernelFeature {
        module: "vgem",
        config: "CONFIG_DRM_VGEM",
        purpose: "a GEM-only DRM device that exports and imports dma-bufs",
        in_debian_6_1: true,
        in_debian_arm64: true,
    },
    KernelFeature {
        module: "virtio_gpu",
        config: "CONFIG_DRM_VIRTIO_GPU",
        purpose: "the virtio-gpu-pci device's DRM driver",
        in_debian_6_1: true,
        in_debian_arm64: true,
    },
    KernelFeature {
        module: "udmabuf",
        config: "CONFIG_UDMABUF",
        purpose: "dma-bufs over memfds (/dev/udmabuf)",
        in_debian_6_1: false,
        in_debian_arm64: true,
    },
    KernelFeature {
        module: "drm_shmem_helper",
        config: "CONFIG_DRM_GEM_SHMEM_HELPER",
        purpose:
            "the shmem GEM helpers extmem_vgpu.ko links against (insmod resolves no dependencies)",
        in_debian_6_1: true,
        in_debian_arm64: true,
    },
    KernelFeature {
        module: "system_heap",
        config: "CONFIG_DMABUF_HEAPS_SYSTEM",
        purpose: "the system dma-heap (/dev/dma_heap/system)",
        in_debian_6_1: false,
        in_debian_arm64: false,
    },
];

/// Which of [`KERNEL_FEATURES`] a boot needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSet {
    /// All of them (the backports kernel).
    Every,
    /// Those Debian's 6.1 has (`in_debian_6_1`).
    DebianLts,
    /// Those Debian's arm64 kernels have (`in_debian_arm64`).
    DebianArm64,
}

impl FeatureSet {
    /// Whether a boot with this set needs `feature`.
    pub fn wants(self, feature: &KernelFeature) -> bool {
        match self {
            Self::Every => true,
            Self::DebianLts => feature.in_debian_6_1,
            Self::DebianArm64 => feature.in_debian_arm64,
        }
    }
}

/// The guest programs of this crate.
const GUEST_TESTS_PACKAGE: &str = "extmem-guest-tests";

/// The suites `guest` and `suite` run, in order.
pub const TEST_SUITES: &[GuestSuite] = &[
    GuestSuite {
        name: "environment",
        setup: &[],
        programs: &[ktap_test("guest-env")],
        teardown: &[],
        kernel_module: false,
    },
    EXTMEM_VGPU,
];

/// The extmem-vgpu module: loaded with its in-kernel self-tests, exercised, unloaded (the
/// `rmmod` succeeding proves nothing kept a reference to the module). debugfs is mounted
/// first: the tests count the device's dma-buf attachments in the dma-buf core's own list.
const EXTMEM_VGPU: GuestSuite = GuestSuite {
    name: "extmem-vgpu",
    setup: VGPU_SETUP,
    programs: &[
        VGPU_SELFTEST,
        VGPU_PROGRAM,
        VGPU_FUZZ,
        VGPU_STRESS,
        CORE_FLOWS,
        // The same flows over every backend (vgem, virtio-gpu, udmabuf, dma-heap); it starts
        // core-flows as its child, so core-flows is built too.
        ktap_test("backends"),
        ICD_E2E_PROGRAM,
        // A compositor's buffer: GBM on virtio-gpu, imported through the ICD as a dma-buf.
        ktap_test("gbm-flow"),
        ktap_test("vulkaninfo"),
        VALIDATED_DEMO_PROGRAM,
    ],
    teardown: VGPU_TEARDOWN,
    kernel_module: true,
};

/// A KTAP program of the guest tests whose binary has the program's name.
const fn ktap_test(name: &'static str) -> GuestProgram {
    GuestProgram {
        name,
        package: GUEST_TESTS_PACKAGE,
        binary: name,
        output: OutputFormat::Ktap,
    }
}

/// The module's in-kernel self-tests, as KTAP.
const VGPU_SELFTEST: GuestProgram = ktap_test("vgpu-selftest");

/// Hostile userspace: random ioctls, leak cycles, killed clients, concurrency, limits.
const VGPU_FUZZ: GuestProgram = ktap_test("vgpu-fuzz");

/// Many clients and objects at once.
const VGPU_STRESS: GuestProgram = ktap_test("vgpu-stress");

/// The memory manager's flows over the module.
const CORE_FLOWS: GuestProgram = ktap_test("core-flows");

/// The ICD end to end, through the Khronos loader and under the validation layer.
const ICD_E2E_PROGRAM: GuestProgram = ktap_test("icd-e2e");

/// The demo itself, under the validation layer: any wrong byte or validation message makes it
/// exit non-zero.
const VALIDATED_DEMO_PROGRAM: GuestProgram = GuestProgram {
    name: "vk-demo-validated",
    package: GUEST_TESTS_PACKAGE,
    binary: "vk-demo",
    output: OutputFormat::Plain,
};

/// What runs on the arm64 kernel with 16 KiB pages: the programs whose alignments follow the
/// page size (the ioctls, the memory manager, the ICD and the demo), in one boot.
pub const PAGES_16K_SUITES: &[GuestSuite] = &[GuestSuite {
    name: "extmem-vgpu",
    setup: VGPU_SETUP,
    programs: &[
        VGPU_PROGRAM,
        CORE_FLOWS,
        ICD_E2E_PROGRAM,
        VALIDATED_DEMO_PROGRAM,
    ],
    teardown: VGPU_TEARDOWN,
    kernel_module: true,
}];

/// debugfs, where the tests count dma-buf attachments and kmemleak takes its commands.
const MOUNT_DEBUGFS: GuestCommand = GuestCommand {
    name: "mount-debugfs",
    argv: &["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"],
};

/// The module built for the booted kernel (`{module}`), with its in-kernel self-tests.
const INSMOD_WITH_SELFTESTS: GuestCommand = GuestCommand {
    name: "insmod-extmem-vgpu",
    argv: &["insmod", "{module}", "selftest=1"],
};

/// The extmem-vgpu suite's setup: debugfs, then the module with its in-kernel self-tests.
const VGPU_SETUP: &[GuestCommand] = &[MOUNT_DEBUGFS, INSMOD_WITH_SELFTESTS];

/// The module's ioctl and dma-buf tests.
const VGPU_PROGRAM: GuestProgram = ktap_test("vgpu");

/// The extmem-vgpu suite's teardown: unloading proves nothing kept a reference.
const VGPU_TEARDOWN: &[GuestCommand] = &[RMMOD];

/// Unloads the module.
const RMMOD: GuestCommand = GuestCommand {
    name: "rmmod-extmem-vgpu",
    argv: &["rmmod", "extmem_vgpu"],
};

/// How many of the vgpu suite's programs, from its first, drive the kernel driver itself
/// (self-tests, vgpu, vgpu-fuzz, vgpu-stress, core-flows); the rest test through it.
const DRIVER_PROGRAMS: usize = 5;

/// What the debug kernel (`debug_kernel.rs`) runs: the module's suites that drive the kernel
/// driver, between a kmemleak baseline and a kmemleak scan. The baseline scans once and marks
/// what it found as seen (`clear`), so leaks from the boot, before the module was loaded,
/// are not reported as the driver's; the final scan comes after `rmmod` and lets every object
/// the driver freed or leaked age past kmemleak's 5 s minimum, scans twice (a pointer still
/// in flight during the first can hide a leak) and prints the suspects; any is a failure
/// (`debug_reports.rs`).
pub const DEBUG_KERNEL_SUITES: &[GuestSuite] = &[GuestSuite {
    name: "extmem-vgpu-debug",
    setup: DEBUG_VGPU_SETUP,
    programs: EXTMEM_VGPU.programs.split_at(DRIVER_PROGRAMS).0,
    teardown: DEBUG_VGPU_TEARDOWN,
    kernel_module: true,
}];

/// The debug kernel's setup: debugfs, the kmemleak baseline, the module.
const DEBUG_VGPU_SETUP: &[GuestCommand] = &[
    MOUNT_DEBUGFS,
    GuestCommand {
        name: "kmemleak-baseline",
        argv: &[
            "sh",
            "-c",
            "echo scan > /sys/kernel/debug/kmemleak && echo clear > /sys/kernel/debug/kmemleak",
        ],
    },
    INSMOD_WITH_SELFTESTS,
];

/// The debug kernel's teardown: the module unloaded, then the kmemleak scan.
const DEBUG_VGPU_TEARDOWN: &[GuestCommand] = &[
    RMMOD,
    GuestCommand {
        name: crate::debug_reports::KMEMLEAK_STEP,
        argv: &[
            "sh",
            "-c",
            "sleep 6 && echo scan > /sys/kernel/debug/kmemleak && sleep 6 && \
             echo scan > /sys/kernel/debug/kmemleak && cat /sys/kernel/debug/kmemleak",
        ],
    },
];

/// What runs on the LTS and the newest kernel (`provision::LTS_SERIES`,
/// `build_root::SERIES`): the module loaded (its self-tests
/// run at load), the `vgpu` program, the module unloaded; the same setup and teardown as the
/// full suite, so the kernel log is checked the same way.
pub const VGPU_ONLY: &[GuestSuite] = &[GuestSuite {
    name: "extmem-vgpu",
    setup: VGPU_SETUP,
    programs: &[VGPU_PROGRAM],
    teardown: VGPU_TEARDOWN,
    kernel_module: true,
}];

/// The guest ioctl fuzzer alone: `vgpu-fuzz` on the loaded module, asked by a setup command
/// for a run of `calls` calls (it reads the count from `/run/extmem-vgpu-fuzz-calls`) instead
/// of the suite's 20 s, then the module unloaded, with the same checks (every success
/// against its model, counters back, no kernel report). On the debug kernel (`debug_kernel`)
/// the run sits between the kmemleak baseline and scan, like [`DEBUG_KERNEL_SUITES`].
pub fn fuzz_guest(calls: u64, debug_kernel: bool) -> GuestSuite {
    // The plan holds 'static words; this suite is built once per run of the command, so
    // the few bytes leaked here live as long as the process anyway.
    let request: &'static str =
        Box::leak(format!("echo {calls} > /run/extmem-vgpu-fuzz-calls").into_boxed_str());
    let (setup, teardown) = if debug_kernel {
        (DEBUG_VGPU_SETUP, DEBUG_VGPU_TEARDOWN)
    } else {
        (VGPU_SETUP, VGPU_TEARDOWN)
    };
    let setup: Vec<GuestCommand> = setup
        .iter()
        .copied()
        .chain([GuestCommand {
            name: "vgpu-fuzz-calls",
            argv: Box::leak(Box::new(["sh", "-c", request])),
        }])
        .collect();
    GuestSuite {
        name: "extmem-vgpu-fuzz",
        setup: setup.leak(),
        programs: &[VGPU_FUZZ],
        teardown,
        kernel_module: true,
    }
}

/// What `demo` runs: a Vulkan application (through the Khronos loader and extmem-icd) on the
/// extmem-vgpu module, which it loads and unloads like the test suite does.
pub const DEMO: GuestSuite = GuestSuite {
    name: "demo",
    setup: &[GuestCommand {
        name: "demo-insmod-extmem-vgpu",
        argv: &["insmod", "{module}"],
    }],
    programs: &[GuestProgram {
        name: "vk-demo",
        package: GUEST_TESTS_PACKAGE,
        binary: "vk-demo",
        output: OutputFormat::Plain,
    }],
    teardown: &[GuestCommand {
        name: "demo-rmmod-extmem-vgpu",
        argv: &["rmmod", "extmem_vgpu"],
    }],
    kernel_module: true,
};

/// What `bench` runs in the guest: the benchmark program on the extmem-vgpu module (no
/// self-tests, so module load does not add to the timings). Not a test: its exit code only
/// says whether it could measure.
pub const BENCH: GuestSuite = GuestSuite {
    name: "bench",
    setup: &[GuestCommand {
        name: "bench-insmod-extmem-vgpu",
        argv: &["insmod", "{module}"],
    }],
    programs: &[GuestProgram {
        name: "bench",
        package: GUEST_TESTS_PACKAGE,
        binary: "bench",
        output: OutputFormat::Plain,
    }],
    teardown: &[GuestCommand {
        name: "bench-rmmod-extmem-vgpu",
        argv: &["rmmod", "extmem_vgpu"],
    }],
    kernel_module: true,
};

/// The run-time values a plan's commands may refer to.
#[derive(Debug, Clone)]
pub struct PlanValues {
    /// cargo's target directory.
    pub target_dir: PathBuf,
    /// The workspace root.
    pub workspace: PathBuf,
    /// The guest kernel release.
    pub kernel: String,
    /// `extmem_vgpu.ko` built for that kernel.
    pub module: PathBuf,
    /// The features the booted kernel is expected to have: the programs are told which of
    /// [`KERNEL_FEATURES`] it lacks, so a node missing on a kernel that should have it fails.
    pub features: FeatureSet,
}

impl PlanValues {
    fn expand(&self, word: &str) -> String {
        word.replace("{target_dir}", &self.target_dir.to_string_lossy())
            .replace("{workspace}", &self.workspace.to_string_lossy())
            .replace("{kernel}", &self.kernel)
            .replace("{module}", &self.module.to_string_lossy())
    }

    /// `KERNEL_WITHOUT_VAR=...`: the Kconfig symbols of the features this boot's kernel is
    /// built without, comma-separated (empty when it has them all).
    fn kernel_without(&self) -> String {
        let absent: Vec<&str> = KERNEL_FEATURES
            .iter()
            .filter(|feature| !self.features.wants(feature))
            .map(|feature| feature.config)
            .collect();
        format!("{KERNEL_WITHOUT_VAR}={}", absent.join(","))
    }
}

/// The environment variable that tells a guest program which Kconfig symbols of
/// [`KERNEL_FEATURES`] the booted kernel lacks (`tests/guest/src/exporters.rs` reads it).
pub const KERNEL_WITHOUT_VAR: &str = "EXTMEM_KERNEL_WITHOUT";

/// Renders `/extmem/plan.sh` for `suites`: one `run_step` line per setup command, program and
/// teardown command. `binaries` maps a program name to its built executable.
pub fn render_plan(
    suites: &[GuestSuite],
    binaries: &BTreeMap<&str, PathBuf>,
    values: &PlanValues,
) -> Result<String, MissingBinary> {
    let mut plan = String::from("# Written by extmem-qemu (qemu/src/guest_plan.rs).\n");
    for suite in suites {
        plan.push_str(&format!("# suite {}\n", suite.name));
        for command in suite.setup {
            plan.push_str(&command_line("setup", command, values));
        }
        for program in suite.programs {
            let path = binaries.get(program.name).ok_or(MissingBinary {
                program: program.name,
            })?;
            let kind = match program.output {
                OutputFormat::Ktap => "ktap",
                OutputFormat::Plain => "plain",
            };
            // init runs each step with a clean environment; `env` inside the root adds the
            // one variable the programs need.
            plan.push_str(&format!(
                "run_step {kind} {} 'env' {} {}\n",
                program.name,
                shell_quote(&values.kernel_without()),
                shell_quote(&path.to_string_lossy())
            ));
        }
        for command in suite.teardown {
            plan.push_str(&command_line("teardown", command, values));
        }
    }
    Ok(plan)
}

/// A program of the plan whose executable was not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingBinary {
    /// The program.
    pub program: &'static str,
}

impl std::fmt::Display for MissingBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no executable was built for guest program {}",
            self.program
        )
    }
}

impl std::error::Error for MissingBinary {}

fn command_line(kind: &str, command: &GuestCommand, values: &PlanValues) -> String {
    let words: Vec<String> = command
        .argv
        .iter()
        .map(|w| shell_quote(&values.expand(w)))
        .collect();
    format!("run_step {kind} {} {}\n", command.name, words.join(" "))
}

/// Quotes `word` for a POSIX shell.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn values() -> PlanValues {
        PlanValues {
            target_dir: PathBuf::from("/w/target"),
            workspace: PathBuf::from("/w"),
            kernel: "6.12.95+deb12-amd64".into(),
            module: PathBuf::from("/w/target/kmod/extmem_vgpu.ko"),
            features: FeatureSet::DebianArm64,
        }
    }

    #[test]
    fn plan_runs_setup_programs_and_teardown_in_order() -> Result<(), MissingBinary> {
        const SUITE: GuestSuite = GuestSuite {
            name: "module",
            setup: &[GuestCommand {
                name: "insmod",
                argv: &["insmod", "{module}"],
            }],
            programs: &[GuestProgram {
                name: "vgpu-tests",
                package: "p",
                binary: "vgpu-tests",
                output: OutputFormat::Ktap,
            }],
            teardown: &[GuestCommand {
                name: "rmmod",
                argv: &["rmmod", "extmem_vgpu"],
            }],
            kernel_module: true,
        };
        let binaries = BTreeMap::from([("vgpu-tests", PathBuf::from("/w/target/release/it's"))]);
        let plan = render_plan(&[SUITE], &binaries, &values())?;
        assert_eq!(
            plan.lines().skip(2).collect::<Vec<_>>(),
            [
                "run_step setup insmod 'insmod' '/w/target/kmod/extmem_vgpu.ko'",
                r"run_step ktap vgpu-tests 'env' 'EXTMEM_KERNEL_WITHOUT=CONFIG_DMABUF_HEAPS_SYSTEM' '/w/target/release/it'\''s'",
                "run_step teardown rmmod 'rmmod' 'extmem_vgpu'",
            ]
        );
        Ok(())
    }

    #[test]
    fn a_program_without_a_binary_is_an_error() {
        assert_eq!(
            render_plan(TEST_SUITES, &BTreeMap::new(), &values()),
            Err(MissingBinary {
                program: "guest-env"
            })
        );
    }

    #[test]
    fn the_debug_kernel_runs_the_driver_suites() {
        let names: Vec<&str> = DEBUG_KERNEL_SUITES
            .iter()
            .flat_map(|suite| suite.programs)
            .map(|program| program.name)
            .collect();
        assert_eq!(
            names,
            [
                "vgpu-selftest",
                "vgpu",
                "vgpu-fuzz",
                "vgpu-stress",
                "core-flows"
            ]
        );
    }

    /// Names travel in marker lines split on spaces, and identify results in the report.
    #[test]
    fn table_names_are_marker_safe_and_unique() {
        // The init script's own steps use these names.
        let mut seen = BTreeSet::from([
            crate::console_log::MODULES_STEP,
            crate::console_log::KERNEL_LOG_STEP,
        ]);
        let suites = TEST_SUITES.iter().chain([&DEMO, &BENCH]);
        // The debug kernel's suite reuses the vgpu suite's steps under the same names; its
        // own steps must not clash with any.
        let debug_only = DEBUG_KERNEL_SUITES.iter().flat_map(|suite| {
            let commands = suite.setup.iter().chain(suite.teardown).map(|c| c.name);
            let programs = suite.programs.iter().map(|p| p.name);
            commands.chain(programs).filter(|name| {
                !EXTMEM_VGPU
                    .setup
                    .iter()
                    .chain(EXTMEM_VGPU.teardown)
                    .any(|c| c.name == *name)
                    && !EXTMEM_VGPU.programs.iter().any(|p| p.name == *name)
            })
        });
        for name in debug_only {
            assert!(name.chars().all(|c| c.is_ascii_graphic()), "{name:?}");
            assert!(seen.insert(name), "{name} appears twice");
        }
        for suite in suites {
            let commands = suite.setup.iter().chain(suite.teardown).map(|c| c.name);
            for name in suite.programs.iter().map(|p| p.name).chain(commands) {
                assert!(
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic()),
                    "{name:?}"
                );
                assert!(seen.insert(name), "{name} appears twice");
            }
        }
    }
}
