//! extmem-qemu: the project's test command.
//!
//! `cargo suite` runs everything (formatting, clippy, the API docs, the workspace's tests, Miri,
//! a short fuzz run, the no_std builds, the Cortex-M tests, the Windows tests under Wine and the
//! guest tests in QEMU: all of them on Debian's backports kernel, the vgpu suite on Debian
//! stable's 6.1 and on the newest Debian kernel, 7.x) and ends with one line `N passed, M
//! failed`; `cargo suite STEP...` runs only the steps named, and `--kernel 6.1|6.12|7.x`
//! boots only that kernel. `cargo demo` boots the guest and runs the
//! demo. Both provision what they need on Debian first (see `provision.rs`). `cargo
//! bench-all` runs the benchmarks (host, then guest); they are not tests and `suite` does not
//! run them. `cargo fuzz-long` runs the fuzz targets for longer than the suite does.
//! `extmem-qemu --help` lists every command, step and option.

mod arm64_root;
mod build_root;
mod capi_step;
mod console_log;
mod cortex_m;
mod debug_kernel;
mod debug_reports;
mod fuzz_step;
mod guest_arch;
mod guest_boot;
mod guest_plan;
mod guest_suite;
mod host_checks;
mod host_command;
mod initramfs;
mod kernel_modules;
mod kmod_build;
mod kmod_step;
mod ktap;
mod mesa_build;
mod mesa_source;
mod mesa_step;
mod miri_step;
mod provision;
mod report;
mod rust_tools;
mod windows_tests;
mod workspace;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use guest_arch::GuestArch;
use guest_boot::Accel;
use guest_suite::GuestOptions;
use provision::{Freshness, Provisioned};
use report::{Check, Step};
use workspace::Workspace;

/// The runner's commands and what each does, one usage line each.
const COMMANDS: &[(&str, &str)] = &[
    (
        "suite [STEP...]",
        "provision, then every step below in order, or only the named ones (cargo suite)",
    ),
    (
        "guest",
        "provision and run the guest suites in QEMU (the same as `suite guest`)",
    ),
    (
        "demo",
        "provision, boot the guest and run the demo, printing each step (cargo demo)",
    ),
    (
        "setup",
        "provision only: apt source, packages, rustup targets, kernel image and headers",
    ),
    (
        "bench",
        "benchmarks: the host ones, then the guest one in QEMU (cargo bench-all)",
    ),
    (
        "bench-host [ARG...]",
        "the host benchmarks alone, with Mesa's allocator as a reference (cargo bench-host)",
    ),
    (
        "fuzz",
        "each fuzz target for --seconds from its kept corpus (cargo fuzz-long)",
    ),
    (
        "fuzz-guest",
        "boot the guest and run the vgpu-fuzz ioctl fuzzer for --calls calls",
    ),
    (
        "mesa",
        "build lavapipe with tests/mesa's libextmem patch, check it and Debian's (cargo mesa)",
    ),
    ("help", "print this text and exit (also -h, --help)"),
];

/// The options and what each does, one usage line each.
const OPTIONS: &[(&str, &str)] = &[
    (
        "--kvm",
        "boot the guest with KVM instead of TCG (needs /dev/kvm)",
    ),
    (
        "--timeout SECONDS",
        "limit for one guest boot (default 600)",
    ),
    ("--seconds SECONDS", "fuzz: time per target (default 600)"),
    (
        "--calls N",
        "fuzz-guest: ioctl calls in the run (default 1000000; give it --timeout)",
    ),
    (
        "--debug-kernel",
        "add the debug-kernel step (suite, guest), or fuzz on that kernel (fuzz-guest)",
    ),
    (
        "--kernel 6.1|6.12|7.x",
        "only this guest kernel (default: all three); on 6.1 and 7.x the vgpu suite only",
    ),
    (
        "--arch ARCH",
        "x86_64, arm64 or arm64-16k: the guest to boot (default: all three; demo: x86_64)",
    ),
];

/// The guests `suite` and `guest` boot without `--arch`: every one, x86_64 and arm64 with 4
/// KiB and 16 KiB pages (Debian's arm64 kernels have no dma-heaps; the heap checks run over
/// named substitutes there).
const DEFAULT_ARCHES: &[GuestArch] = &[
    GuestArch::X86_64,
    GuestArch::Arm64,
    GuestArch::Arm64Pages16k,
];

/// The usage text: every command, suite step and option with one line each.
fn usage() -> String {
    let mut text = String::from(
        "usage: extmem-qemu <command> [STEP...] [options]\n\
         (cargo suite, cargo demo, cargo bench-all and cargo fuzz-long run it; see .cargo/config.toml)\n",
    );
    let mut section = |title: &str, rows: &mut dyn Iterator<Item = (&str, &str)>| {
        text.push_str(&format!("\n{title}:\n"));
        for (name, summary) in rows {
            text.push_str(&format!("  {name:<19} {summary}\n"));
        }
    };
    section("commands", &mut COMMANDS.iter().copied());
    section(
        "suite steps, in the order suite runs them",
        &mut SuiteStep::ALL
            .iter()
            .map(|step| (step.name(), step.summary())),
    );
    section("options", &mut OPTIONS.iter().copied());
    text
}

/// Which Debian kernel the guest boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelChoice {
    /// Debian stable's LTS kernel (bookworm's 6.1): the vgpu suite only in `guest`.
    Lts,
    /// Debian's backports kernel (6.12 on bookworm): every guest suite.
    Backports,
    /// Debian's newest kernel (7.x from trixie-backports, its module built in a trixie
    /// root): the vgpu suite only in `guest`.
    Newest,
}

impl KernelChoice {
    /// Every kernel, in the order the guest step boots them.
    const ALL: [KernelChoice; 3] = [Self::Backports, Self::Lts, Self::Newest];

    /// The series a user names with `--kernel`.
    fn series(self) -> &'static str {
        match self {
            Self::Lts => provision::LTS_SERIES,
            Self::Backports => "6.12",
            Self::Newest => build_root::SERIES,
        }
    }

    fn from_series(series: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|choice| choice.series() == series)
    }

    /// The console log of a boot on it.
    fn console_log(self) -> &'static str {
        match self {
            Self::Backports => "guest-console.log",
            Self::Lts => "guest-console-6.1.log",
            Self::Newest => "guest-console-7.x.log",
        }
    }
}

/// The default limit for one guest boot.
const DEFAULT_GUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The default number of calls of `fuzz-guest`.
const DEFAULT_FUZZ_CALLS: u64 = 1_000_000;
/// The default limit for the debug kernel's boot: KASAN, lockdep and kmemleak slow every
/// allocation and lock, and TCG slows them again.
const DEBUG_KERNEL_TIMEOUT: Duration = Duration::from_secs(3 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subcommand {
    Setup,
    Suite,
    /// `suite guest`, by its older name.
    Guest,
    Demo,
    Bench,
    /// The host benchmarks alone; `main` hands its later arguments to the bench.
    BenchHost,
    Fuzz,
    /// The guest ioctl fuzzer for a number of calls.
    FuzzGuest,
    /// lavapipe with libextmem, beside Debian's (`mesa_step`).
    Mesa,
}

/// One step of `suite`, which a user can also run alone (`cargo suite doc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SuiteStep {
    Fmt,
    Clippy,
    Doc,
    Test,
    Capi,
    Miri,
    Fuzz,
    NoStd,
    CortexM,
    Windows,
    Kmod,
    Guest,
    /// Not in the default run: the first one builds a kernel (`--debug-kernel` adds it).
    DebugKernel,
}

impl SuiteStep {
    /// Every step, in the order `suite` runs them.
    const ALL: [SuiteStep; 13] = [
        Self::Fmt,
        Self::Clippy,
        Self::Doc,
        Self::Test,
        Self::Capi,
        Self::Miri,
        Self::Fuzz,
        Self::NoStd,
        Self::CortexM,
        Self::Windows,
        Self::Kmod,
        Self::Guest,
        Self::DebugKernel,
    ];

    /// The name a user gives it on the command line.
    fn name(self) -> &'static str {
        match self {
            Self::Fmt => "fmt",
            Self::Clippy => "clippy",
            Self::Doc => "doc",
            Self::Test => "test",
            Self::Capi => "capi",
            Self::Miri => "miri",
            Self::Fuzz => "fuzz",
            Self::NoStd => "no-std",
            Self::CortexM => "cortex-m",
            Self::Windows => "windows",
            Self::Kmod => "kmod",
            Self::Guest => "guest",
            Self::DebugKernel => "debug-kernel",
        }
    }

    /// What it runs, for the usage text.
    fn summary(self) -> &'static str {
        match self {
            Self::Fmt => "cargo fmt --check",
            Self::Clippy => "cargo clippy -D warnings, for the host and for x86_64-pc-windows-gnu",
            Self::Doc => "cargo doc --workspace --no-deps with RUSTDOCFLAGS='-D warnings'",
            Self::Test => "cargo test --workspace",
            Self::Capi => "libextmem's C tests under ASan and UBSan, linked through pkg-config",
            Self::Miri => "the unit tests of hw, kcore and core under Miri (dated nightly)",
            Self::Fuzz => "each fuzz target for 15 s from the checked-in seeds",
            Self::NoStd => "the no_std crates built for bare-metal x86_64, arm64 and thumbv7em",
            Self::CortexM => "the no_std tests on a Cortex-M3 under qemu-system-arm",
            Self::Windows => "the Windows build's tests under Wine",
            Self::Kmod => "extmem_vgpu.ko built for Debian's x86_64, arm64 and arm64-16k kernels",
            Self::Guest => {
                "the guest suites in QEMU x86_64: all on Linux 6.12, the vgpu suite on 6.1 and 7.x"
            }
            Self::DebugKernel => {
                "the vgpu suites on a KASAN/lockdep/kmemleak kernel (built once; not by default)"
            }
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|step| step.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Which suite steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StepSet {
    bits: u16,
}

impl StepSet {
    const NONE: StepSet = StepSet { bits: 0 };

    /// The steps `suite` runs when none is named: all but the debug kernel's.
    fn every() -> Self {
        Self {
            bits: SuiteStep::ALL
                .iter()
                .filter(|step| **step != SuiteStep::DebugKernel)
                .fold(0, |bits, step| bits | step.bit()),
        }
    }

    fn with(self, step: SuiteStep) -> Self {
        Self {
            bits: self.bits | step.bit(),
        }
    }

    fn contains(self, step: SuiteStep) -> bool {
        self.bits & step.bit() != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Options {
    command: Subcommand,
    /// The steps `suite` runs.
    steps: StepSet,
    accel: Accel,
    timeout: Duration,
    /// The limit for the debug kernel's boot: `--timeout`, else [`DEBUG_KERNEL_TIMEOUT`].
    debug_kernel_timeout: Duration,
    /// Seconds per fuzz target for `fuzz`.
    fuzz_seconds: u64,
    /// Calls of the guest fuzzer for `fuzz-guest`.
    fuzz_calls: u64,
    /// The kernel `--kernel` chose; without it, the backports one.
    kernel: Option<KernelChoice>,
    /// The guest `--arch` chose; without it, [`DEFAULT_ARCHES`] (`demo`: x86_64).
    arch: Option<GuestArch>,
}

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// The usage text on stdout, exit 0.
    Help,
    /// A command to run.
    Run(Options),
}

fn parse_args(args: &[String]) -> Result<Request, String> {
    // Asking for help wins over anything else on the line, mistakes included.
    if args
        .iter()
        .any(|word| matches!(word.as_str(), "help" | "-h" | "--help"))
    {
        return Ok(Request::Help);
    }
    let mut command = None;
    let mut steps = StepSet::NONE;
    let mut accel = Accel::Tcg;
    let mut timeout = None;
    let mut debug_kernel = false;
    let mut fuzz_seconds = fuzz_step::LONG_SECONDS;
    let mut fuzz_calls = DEFAULT_FUZZ_CALLS;
    let mut kernel = None;
    let mut arch = None;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--kvm" => accel = Accel::Kvm,
            "--timeout" => {
                let value = words.next().ok_or("--timeout needs a number of seconds")?;
                let seconds: u64 = value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("--timeout {value:?} is not a positive number of seconds")
                })?;
                timeout = Some(Duration::from_secs(seconds));
            }
            "--debug-kernel" => debug_kernel = true,
            "--seconds" => {
                let value = words.next().ok_or("--seconds needs a number of seconds")?;
                fuzz_seconds = value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("--seconds {value:?} is not a positive number of seconds")
                })?;
            }
            "--calls" => {
                let value = words.next().ok_or("--calls needs a number of calls")?;
                fuzz_calls = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("--calls {value:?} is not a positive number of calls")
                })?;
            }
            "--kernel" => {
                let value = words.next().ok_or("--kernel needs 6.1, 6.12 or 7.x")?;
                kernel = Some(KernelChoice::from_series(value).ok_or_else(|| {
                    format!(
                        "--kernel {value:?} is not a kernel the runner boots (6.1, 6.12 or 7.x)"
                    )
                })?);
            }
            "--arch" => {
                let value = words
                    .next()
                    .ok_or("--arch needs x86_64, arm64 or arm64-16k")?;
                arch = Some(GuestArch::from_name(value).ok_or_else(|| {
                    format!("--arch {value:?} is not a guest the runner boots (x86_64, arm64 or arm64-16k)")
                })?);
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other:?}")),
            other if command.is_none() => {
                command = Some(match other {
                    "setup" => Subcommand::Setup,
                    "suite" => Subcommand::Suite,
                    "guest" => Subcommand::Guest,
                    "demo" => Subcommand::Demo,
                    "bench" => Subcommand::Bench,
                    "bench-host" => Subcommand::BenchHost,
                    "fuzz" => Subcommand::Fuzz,
                    "fuzz-guest" => Subcommand::FuzzGuest,
                    "mesa" => Subcommand::Mesa,
                    _ => return Err(format!("unknown command {other:?}")),
                });
            }
            other if command == Some(Subcommand::Suite) => {
                let step = SuiteStep::from_name(other).ok_or_else(|| {
                    let names: Vec<&str> = SuiteStep::ALL.iter().map(|s| s.name()).collect();
                    format!(
                        "{other:?} is not a suite step (the steps: {})",
                        names.join(", ")
                    )
                })?;
                steps = steps.with(step);
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let command = command.ok_or("no command given")?;
    if kernel.is_some() && arch.is_some_and(|a| a != GuestArch::X86_64) {
        return Err(
            "--kernel chooses among the x86_64 kernels; the arm64 guests boot Debian's \
                    backports kernel"
                .into(),
        );
    }
    let mut steps = match command {
        Subcommand::Guest => StepSet::NONE.with(SuiteStep::Guest),
        _ if steps == StepSet::NONE => StepSet::every(),
        _ => steps,
    };
    if debug_kernel {
        if !matches!(
            command,
            Subcommand::Suite | Subcommand::Guest | Subcommand::FuzzGuest
        ) {
            return Err("--debug-kernel goes with suite, guest or fuzz-guest".into());
        }
        // The one debug kernel is built for x86_64 from the backports kernel's source.
        if command == Subcommand::FuzzGuest
            && (kernel.is_some() || arch.is_some_and(|a| a != GuestArch::X86_64))
        {
            return Err(
                "fuzz-guest --debug-kernel boots the x86_64 debug kernel: no --kernel or --arch"
                    .into(),
            );
        }
        steps = steps.with(SuiteStep::DebugKernel);
    }
    Ok(Request::Run(Options {
        command,
        steps,
        accel,
        timeout: timeout.unwrap_or(DEFAULT_GUEST_TIMEOUT),
        debug_kernel_timeout: timeout.unwrap_or(DEBUG_KERNEL_TIMEOUT),
        fuzz_seconds,
        fuzz_calls,
        kernel,
        arch,
    }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `bench-host` hands every later argument to the bench (groups, `--plots DIR`).
    if let Some(("bench-host", bench_args)) = args.split_first().map(|(c, r)| (c.as_str(), r)) {
        return match Workspace::locate() {
            Ok(workspace) => finish(&[host_bench(&workspace, bench_args)]),
            Err(err) => {
                eprintln!("extmem-qemu: cannot find the workspace: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse_args(&args) {
        Ok(Request::Run(options)) => options,
        Ok(Request::Help) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprint!("extmem-qemu: {message}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let workspace = match Workspace::locate() {
        Ok(workspace) => workspace,
        Err(err) => {
            eprintln!("extmem-qemu: cannot find the workspace: {err}");
            return ExitCode::FAILURE;
        }
    };
    match options.command {
        Subcommand::Setup => setup(&workspace),
        Subcommand::Suite | Subcommand::Guest => suite(&workspace, options),
        Subcommand::Demo => demo(&workspace, options),
        Subcommand::Bench => bench(&workspace, options),
        Subcommand::FuzzGuest => fuzz_guest(&workspace, options),
        Subcommand::BenchHost => finish(&[host_bench(&workspace, &[])]),
        Subcommand::Mesa => finish(&mesa_step::run(&workspace)),
        Subcommand::Fuzz => finish(&[fuzz_step::run(
            &workspace,
            fuzz_step::TARGETS,
            options.fuzz_seconds,
            fuzz_step::Corpus::Kept,
            "fuzz (libFuzzer, long run)",
        )]),
    }
}

fn setup(workspace: &Workspace) -> ExitCode {
    match provision::provision(workspace, Freshness::Refresh) {
        Ok(provisioned) => {
            let kernel = &provisioned.kernel;
            println!(
                "setup: kernel {} in {}",
                kernel.version,
                kernel.root.display()
            );
            println!("setup: headers in {}", kernel.headers_dir().display());
            println!("setup: busybox {}", provisioned.busybox.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("setup failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Provisioning as a report step: it counts only when it fails (it is no test), but a failure
/// fails the run, since the guest steps cannot run without it.
fn provision_step(workspace: &Workspace) -> (Step, Option<Provisioned>) {
    let started = Instant::now();
    let mut step = Step::new("provision");
    let provisioned = match provision::provision(workspace, Freshness::UseStamp) {
        Ok(provisioned) => {
            step.notes.push(format!(
                "kernel {}{}",
                provisioned.kernel.version,
                if provisioned.was_cached {
                    " (cached)"
                } else {
                    ""
                }
            ));
            Some(provisioned)
        }
        Err(err) => {
            step.checks.push(Check::fail("provision", err.to_string()));
            None
        }
    };
    step.elapsed = started.elapsed();
    (step, provisioned)
}

/// The console log of the arm64 boot with 4 KiB pages.
const ARM64_CONSOLE_LOG: &str = "guest-console-arm64.log";
/// The console log of the arm64 boot with 16 KiB pages.
const ARM64_16K_CONSOLE_LOG: &str = "guest-console-arm64-16k.log";

/// The guest options of one boot of `arch` (on x86_64, of `kernel`).
fn guest_options(
    options: Options,
    arch: GuestArch,
    kernel: KernelChoice,
    echo_plain_output: bool,
) -> GuestOptions {
    let (console_log, features) = match (arch, kernel) {
        (GuestArch::X86_64, KernelChoice::Lts) => {
            (kernel.console_log(), guest_plan::FeatureSet::DebianLts)
        }
        (GuestArch::X86_64, KernelChoice::Backports | KernelChoice::Newest) => {
            (kernel.console_log(), guest_plan::FeatureSet::Every)
        }
        (GuestArch::Arm64, _) => (ARM64_CONSOLE_LOG, guest_plan::FeatureSet::DebianArm64),
        (GuestArch::Arm64Pages16k, _) => {
            (ARM64_16K_CONSOLE_LOG, guest_plan::FeatureSet::DebianArm64)
        }
    };
    GuestOptions {
        arch,
        accel: options.accel,
        timeout: options.timeout,
        echo_plain_output,
        console_log,
        features,
        debug_reports: false,
    }
}

/// What booting `arch` (on x86_64, `kernel`) needs: the x86_64 backports kernel is
/// `provisioned`'s; the LTS and newest ones are unpacked (once) next to it and share its
/// busybox; an arm64 guest has its own root, busybox and kernel (`arm64_root.rs`).
fn provisioned_for(
    arch: GuestArch,
    kernel: KernelChoice,
    provisioned: &Provisioned,
) -> Result<Provisioned, provision::ProvisionError> {
    match (arch, kernel) {
        (GuestArch::X86_64, KernelChoice::Backports) => Ok(provisioned.clone()),
        (GuestArch::X86_64, KernelChoice::Lts) => Ok(Provisioned {
            kernel: provision::provision_lts()?,
            ..provisioned.clone()
        }),
        (GuestArch::X86_64, KernelChoice::Newest) => Ok(Provisioned {
            kernel: build_root::provision_newest()?,
            ..provisioned.clone()
        }),
        (GuestArch::Arm64 | GuestArch::Arm64Pages16k, _) => {
            let guest = arm64_root::provision(arch, &provisioned.kernel)?;
            Ok(Provisioned {
                kernel: guest.kernel,
                busybox: guest.busybox,
                guest_root: Some(guest.root),
                was_cached: provisioned.was_cached,
            })
        }
    }
}

/// What the guest step runs on `arch` (on x86_64, on `kernel`): every suite on the backports
/// kernels, the vgpu suite on the LTS and the newest x86_64 ones.
fn guest_suites(arch: GuestArch, kernel: KernelChoice) -> &'static [guest_plan::GuestSuite] {
    match (arch, kernel) {
        (GuestArch::X86_64, KernelChoice::Backports) | (GuestArch::Arm64, _) => {
            guest_plan::TEST_SUITES
        }
        (GuestArch::X86_64, KernelChoice::Lts | KernelChoice::Newest) => guest_plan::VGPU_ONLY,
        (GuestArch::Arm64Pages16k, _) => guest_plan::PAGES_16K_SUITES,
    }
}

/// The guest suites on `arch` (on x86_64, on `kernel`) as a step whose title names the
/// architecture, page size and kernel; a failed check names them and the console log too,
/// since each boot's checks look alike.
fn guest_step(
    workspace: &Workspace,
    provisioned: Option<&Provisioned>,
    options: Options,
    arch: GuestArch,
    kernel: KernelChoice,
) -> Step {
    let started = Instant::now();
    let chosen = provisioned.map(|p| provisioned_for(arch, kernel, p));
    let version = match &chosen {
        Some(Ok(chosen)) => chosen.kernel.version.clone(),
        _ => format!("{} ({})", kernel.series(), arch.kernel_flavour()),
    };
    let only = match (arch, kernel) {
        (GuestArch::X86_64, KernelChoice::Lts | KernelChoice::Newest) => ", vgpu only",
        _ => "",
    };
    let title = format!(
        "guest tests (QEMU {}, {} KiB pages, Linux {version}{only})",
        arch.name(),
        arch.page_kib()
    );
    let guest_options = guest_options(options, arch, kernel, false);
    let mut step = match chosen {
        Some(Ok(chosen)) => guest_suite::run(
            workspace,
            &chosen,
            guest_suites(arch, kernel),
            guest_options,
            &title,
        ),
        Some(Err(err)) => {
            let mut step = Step::new(&title);
            step.checks.push(Check::fail(
                "guest-boot",
                format!("not run: provisioning Linux {version} failed: {err}"),
            ));
            step
        }
        None => {
            let mut step = Step::new(&title);
            step.checks
                .push(Check::fail("guest-boot", "not run: provisioning failed"));
            step
        }
    };
    let console = guest_suite::console_log_path(workspace, guest_options.console_log);
    name_guest_in_failures(&mut step.checks, arch, &version, &console);
    step.elapsed = started.elapsed();
    step
}

/// The console log of the debug kernel's boot.
const DEBUG_CONSOLE_LOG: &str = "guest-console-debug.log";

/// The debug kernel (`debug_kernel.rs`), built unless cached, running the module's suites;
/// its checkers' reports and a kmemleak scan are named checks (`debug_reports.rs`).
fn debug_kernel_step(
    workspace: &Workspace,
    provisioned: Option<&Provisioned>,
    options: Options,
) -> Step {
    debug_kernel_run(
        workspace,
        provisioned,
        options,
        guest_plan::DEBUG_KERNEL_SUITES,
        "debug kernel (QEMU x86_64: KASAN, lockdep, kmemleak, DMA-API debug, UBSAN)",
    )
}

/// One boot of the debug kernel (built unless cached) running `suites`, whose plan must end
/// in the kmemleak scan; the checkers' reports are named checks.
fn debug_kernel_run(
    workspace: &Workspace,
    provisioned: Option<&Provisioned>,
    options: Options,
    suites: &[guest_plan::GuestSuite],
    title: &str,
) -> Step {
    let Some(provisioned) = provisioned else {
        let mut step = Step::new(title);
        step.checks
            .push(Check::fail("guest-boot", "not run: provisioning failed"));
        return step;
    };
    let started = Instant::now();
    let built = match debug_kernel::ensure(&provisioned.kernel) {
        Ok(built) => built,
        Err(err) => {
            let mut step = Step::new(title);
            step.checks
                .push(Check::fail("build the debug kernel", err.to_string()));
            step.elapsed = started.elapsed();
            return step;
        }
    };
    let version = built.kernel.version.clone();
    let debug = Provisioned {
        kernel: built.kernel,
        ..provisioned.clone()
    };
    let guest_options = guest_suite::GuestOptions {
        arch: GuestArch::X86_64,
        accel: options.accel,
        timeout: options.debug_kernel_timeout,
        echo_plain_output: false,
        console_log: DEBUG_CONSOLE_LOG,
        features: guest_plan::FeatureSet::Every,
        debug_reports: true,
    };
    let mut step = guest_suite::run(workspace, &debug, suites, guest_options, title);
    step.notes.insert(
        0,
        format!(
            "kernel: Debian linux-source-6.12 {} + qemu/debug-kernel.config, built in {}{}",
            built.source_version,
            report::seconds(built.build_time),
            if built.was_cached { " (cached)" } else { "" }
        ),
    );
    let console = guest_suite::console_log_path(workspace, DEBUG_CONSOLE_LOG);
    name_guest_in_failures(&mut step.checks, GuestArch::X86_64, &version, &console);
    step.elapsed = started.elapsed();
    step
}

/// Appends the architecture, the kernel and the console log to every failed check's reason.
fn name_guest_in_failures(
    checks: &mut [Check],
    arch: GuestArch,
    version: &str,
    console: &std::path::Path,
) {
    for check in checks {
        if let report::Verdict::Fail(reason) = &mut check.verdict {
            reason.push_str(&format!(
                "\n(on {}, Linux {version}; console log {})",
                arch.name(),
                console.display()
            ));
        }
    }
}

fn finish(steps: &[Step]) -> ExitCode {
    print!("{}", report::render(steps));
    if report::passed(steps) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Provisioning, then the chosen steps in suite order. Provisioning always runs: it is cheap
/// once done, and every step but fmt needs something it installs.
fn suite(workspace: &Workspace, options: Options) -> ExitCode {
    let (mut provision, provisioned) = provision_step(workspace);
    let chosen: Vec<SuiteStep> = SuiteStep::ALL
        .into_iter()
        .filter(|step| options.steps.contains(*step))
        .collect();
    if chosen.len() < SuiteStep::ALL.len() {
        let names: Vec<&str> = chosen.iter().map(|step| step.name()).collect();
        provision
            .notes
            .push(format!("steps asked for: {}", names.join(", ")));
    }
    let mut steps = vec![provision];
    for step in chosen {
        match step {
            SuiteStep::Fmt => steps.push(host_checks::fmt(workspace)),
            SuiteStep::Clippy => {
                steps.push(host_checks::clippy(workspace));
                steps.push(host_checks::clippy_windows(workspace));
            }
            SuiteStep::Doc => steps.push(host_checks::doc(workspace)),
            SuiteStep::Test => steps.push(host_checks::tests(workspace)),
            SuiteStep::Capi => steps.push(capi_step::run(workspace)),
            SuiteStep::Miri => steps.push(miri_step::run(workspace)),
            SuiteStep::Fuzz => steps.push(fuzz_step::run(
                workspace,
                fuzz_step::TARGETS,
                fuzz_step::SUITE_SECONDS,
                fuzz_step::Corpus::Scratch,
                "fuzz (libFuzzer, short run)",
            )),
            SuiteStep::NoStd => steps.push(host_checks::no_std_builds(workspace)),
            SuiteStep::CortexM => steps.push(cortex_m::run_tests(workspace)),
            SuiteStep::Windows => steps.push(windows_tests::run_tests(workspace)),
            SuiteStep::Kmod => steps.push(kmod_step::run(workspace, provisioned.as_ref())),
            // x86_64 unless `--arch` names another: there every kernel unless `--kernel`
            // names one (the full suites on the backports kernel, the vgpu suite on the LTS
            // and the newest); each arm64 guest on its one kernel.
            SuiteStep::Guest => {
                let arches = options
                    .arch
                    .as_ref()
                    .map_or(DEFAULT_ARCHES, std::slice::from_ref);
                for &arch in arches {
                    let kernels: &[KernelChoice] = match arch {
                        GuestArch::X86_64 => &KernelChoice::ALL,
                        GuestArch::Arm64 | GuestArch::Arm64Pages16k => &[KernelChoice::Backports],
                    };
                    for &kernel in kernels {
                        if options.kernel.is_some_and(|chosen| chosen != kernel) {
                            continue;
                        }
                        let provisioned = provisioned.as_ref();
                        steps.push(guest_step(workspace, provisioned, options, arch, kernel));
                    }
                }
            }
            SuiteStep::DebugKernel => {
                steps.push(debug_kernel_step(workspace, provisioned.as_ref(), options));
            }
        }
    }
    finish(&steps)
}

/// The guest a single boot (demo, bench) uses: `--arch`'s, else x86_64, on `--kernel`'s
/// kernel, else the backports one; a failure to provision it is a failed check of
/// `provision`.
fn single_boot_guest(
    provision: &mut Step,
    provisioned: Option<Provisioned>,
    options: Options,
) -> Option<(GuestArch, KernelChoice, Provisioned)> {
    let arch = options.arch.unwrap_or(GuestArch::X86_64);
    let choice = options.kernel.unwrap_or(KernelChoice::Backports);
    match provisioned_for(arch, choice, &provisioned?) {
        Ok(chosen) => {
            if choice != KernelChoice::Backports || arch != GuestArch::X86_64 {
                provision
                    .notes
                    .push(format!("booting kernel {}", chosen.kernel.version));
            }
            Some((arch, choice, chosen))
        }
        Err(err) => {
            provision.checks.push(Check::fail(
                format!("provision Linux {} ({})", choice.series(), arch.name()),
                err.to_string(),
            ));
            None
        }
    }
}

/// `fuzz-guest`: one boot that runs the guest ioctl fuzzer for `--calls` calls; with
/// `--debug-kernel`, on the debug kernel, failing on any of its checkers' reports.
fn fuzz_guest(workspace: &Workspace, options: Options) -> ExitCode {
    let (mut provision, provisioned) = provision_step(workspace);
    if options.steps.contains(SuiteStep::DebugKernel) {
        let title = format!(
            "guest ioctl fuzzer on the debug kernel (QEMU x86_64, {} calls)",
            options.fuzz_calls
        );
        let fuzz = debug_kernel_run(
            workspace,
            provisioned.as_ref(),
            options,
            &[guest_plan::fuzz_guest(options.fuzz_calls, true)],
            &title,
        );
        return finish(&[provision, fuzz]);
    }
    let Some((arch, kernel, provisioned)) = single_boot_guest(&mut provision, provisioned, options)
    else {
        return finish(&[provision]);
    };
    let fuzz = guest_suite::run(
        workspace,
        &provisioned,
        &[guest_plan::fuzz_guest(options.fuzz_calls, false)],
        guest_options(options, arch, kernel, false),
        &format!(
            "guest ioctl fuzzer (QEMU {}, {} calls)",
            arch.name(),
            options.fuzz_calls
        ),
    );
    finish(&[provision, fuzz])
}

fn demo(workspace: &Workspace, options: Options) -> ExitCode {
    let (mut provision, provisioned) = provision_step(workspace);
    let Some((arch, kernel, provisioned)) = single_boot_guest(&mut provision, provisioned, options)
    else {
        return finish(&[provision]);
    };
    let guest_options = guest_options(options, arch, kernel, true);
    let demo = guest_suite::run(
        workspace,
        &provisioned,
        &[guest_plan::DEMO],
        guest_options,
        &format!("demo (QEMU {}, {} KiB pages)", arch.name(), arch.page_kib()),
    );
    finish(&[provision, demo])
}

/// The host benchmarks, then the guest benchmark; the guest's CSV (printed between markers)
/// is saved next to the host's in `<target dir>/extmem-bench/`.
fn bench(workspace: &Workspace, options: Options) -> ExitCode {
    let host_step = host_bench(workspace, &[]);
    let (mut provision, provisioned) = provision_step(workspace);
    let Some((arch, kernel, provisioned)) = single_boot_guest(&mut provision, provisioned, options)
    else {
        return finish(&[host_step, provision]);
    };
    let guest_options = guest_options(options, arch, kernel, true);
    let mut guest = guest_suite::run(
        workspace,
        &provisioned,
        &[guest_plan::BENCH],
        guest_options,
        &format!("guest benchmark (QEMU {})", arch.name()),
    );
    let console = guest_suite::console_log_path(workspace, guest_options.console_log);
    let csv_dir = workspace.target_dir.join("extmem-bench");
    let csv_path = csv_dir.join("guest.csv");
    let saved = std::fs::read_to_string(&console).and_then(|log| {
        let csv = bench_csv(&log).ok_or_else(|| std::io::Error::other("no CSV in the log"))?;
        std::fs::create_dir_all(&csv_dir)?;
        std::fs::write(&csv_path, csv)
    });
    match saved {
        Ok(()) => guest
            .notes
            .push(format!("guest CSV: {}", csv_path.display())),
        Err(err) => guest.checks.push(Check::fail(
            "bench-csv",
            format!("{}: {err}", console.display()),
        )),
    }
    finish(&[host_step, provision, guest])
}

/// The host benchmarks (`tests/bench`), given `args`, built with Mesa's `util_vma_heap` as
/// the VA allocator's reference: Debian's Mesa source is fetched into the cache first
/// (`mesa_source`) and its tree handed to the bench's build script in `EXTMEM_MESA_SRC`.
fn host_bench(workspace: &Workspace, args: &[String]) -> Step {
    let mut step = Step::new("host benchmarks");
    let started = Instant::now();
    let mesa = match mesa_source::ensure(&provision::cache_dir()) {
        Ok(mesa) => mesa,
        Err(err) => {
            step.checks
                .push(Check::fail("mesa source", err.to_string()));
            return step;
        }
    };
    step.notes.push(format!(
        "util_vma_heap from Debian's mesa {} ({}, {})",
        mesa.version,
        if mesa.patched {
            "Debian's patches applied"
        } else {
            "upstream tarball"
        },
        mesa.tree.display()
    ));
    println!("bench: host benchmarks");
    let mut host = workspace.cargo();
    host.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "extmem-bench",
        "--bin",
        "host-bench",
        "--",
    ])
    .args(args)
    .env("EXTMEM_MESA_SRC", &mesa.tree);
    let status = host.status();
    step.elapsed = started.elapsed();
    match status {
        Ok(status) if status.success() => step.checks.push(Check::pass("host-bench")),
        Ok(status) => step
            .checks
            .push(Check::fail("host-bench", format!("exited with {status}"))),
        Err(err) => step.checks.push(Check::fail("host-bench", err.to_string())),
    }
    step
}

/// The lines the guest benchmark printed between `@@bench-csv begin` and `@@bench-csv end`.
fn bench_csv(console: &str) -> Option<String> {
    let mut lines = console.lines().map(|l| l.trim_end_matches('\r'));
    lines.find(|l| *l == "@@bench-csv begin")?;
    let mut csv = String::new();
    for line in lines {
        if line == "@@bench-csv end" {
            return Some(csv);
        }
        csv.push_str(line);
        csv.push('\n');
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &str) -> Vec<String> {
        words.split_whitespace().map(str::to_owned).collect()
    }

    fn run(words: &str) -> Result<Options, String> {
        match parse_args(&args(words))? {
            Request::Run(options) => Ok(options),
            Request::Help => Err("help".into()),
        }
    }

    #[test]
    fn commands_and_options_parse() {
        assert_eq!(
            run("suite"),
            Ok(Options {
                command: Subcommand::Suite,
                steps: StepSet::every(),
                accel: Accel::Tcg,
                timeout: DEFAULT_GUEST_TIMEOUT,
                debug_kernel_timeout: DEBUG_KERNEL_TIMEOUT,
                fuzz_seconds: fuzz_step::LONG_SECONDS,
                fuzz_calls: DEFAULT_FUZZ_CALLS,
                kernel: None,
                arch: None,
            })
        );
        assert_eq!(
            run("--kvm guest --timeout 60"),
            Ok(Options {
                command: Subcommand::Guest,
                steps: StepSet::NONE.with(SuiteStep::Guest),
                accel: Accel::Kvm,
                timeout: Duration::from_secs(60),
                debug_kernel_timeout: Duration::from_secs(60),
                fuzz_seconds: fuzz_step::LONG_SECONDS,
                fuzz_calls: DEFAULT_FUZZ_CALLS,
                kernel: None,
                arch: None,
            })
        );
        assert_eq!(run("bench").map(|o| o.command), Ok(Subcommand::Bench));
        assert_eq!(
            run("fuzz --seconds 900").map(|o| (o.command, o.fuzz_seconds)),
            Ok((Subcommand::Fuzz, 900))
        );
        assert_eq!(
            run("fuzz-guest --calls 2000000").map(|o| (o.command, o.fuzz_calls)),
            Ok((Subcommand::FuzzGuest, 2_000_000))
        );
        assert!(run("fuzz-guest --calls 0").is_err());
    }

    #[test]
    fn suite_runs_only_the_steps_named() -> Result<(), String> {
        let options = run("suite doc clippy --timeout 30")?;
        assert_eq!(options.command, Subcommand::Suite);
        let chosen: Vec<SuiteStep> = SuiteStep::ALL
            .into_iter()
            .filter(|step| options.steps.contains(*step))
            .collect();
        assert_eq!(chosen, [SuiteStep::Clippy, SuiteStep::Doc]);
        assert_eq!(
            run("suite guest").map(|o| o.steps),
            Ok(StepSet::NONE.with(SuiteStep::Guest))
        );
        for step in SuiteStep::ALL {
            assert_eq!(SuiteStep::from_name(step.name()), Some(step));
            assert_eq!(
                StepSet::every().contains(step),
                step != SuiteStep::DebugKernel
            );
        }
        Ok(())
    }

    #[test]
    fn the_debug_kernel_runs_when_asked_for() -> Result<(), String> {
        let everything = run("suite --debug-kernel")?;
        assert_eq!(
            everything.steps,
            StepSet::every().with(SuiteStep::DebugKernel)
        );
        assert_eq!(everything.debug_kernel_timeout, DEBUG_KERNEL_TIMEOUT);
        assert_eq!(everything.timeout, DEFAULT_GUEST_TIMEOUT);
        assert_eq!(
            run("suite debug-kernel")?.steps,
            StepSet::NONE.with(SuiteStep::DebugKernel)
        );
        assert_eq!(
            run("--debug-kernel guest --timeout 900")?,
            Options {
                command: Subcommand::Guest,
                steps: StepSet::NONE
                    .with(SuiteStep::Guest)
                    .with(SuiteStep::DebugKernel),
                accel: Accel::Tcg,
                timeout: Duration::from_secs(900),
                debug_kernel_timeout: Duration::from_secs(900),
                fuzz_seconds: fuzz_step::LONG_SECONDS,
                fuzz_calls: DEFAULT_FUZZ_CALLS,
                kernel: None,
                arch: None,
            }
        );
        for other in ["demo", "bench", "fuzz", "setup"] {
            assert_eq!(
                run(&format!("{other} --debug-kernel")).err().as_deref(),
                Some("--debug-kernel goes with suite, guest or fuzz-guest"),
                "{other}"
            );
        }
        let fuzz = run("fuzz-guest --debug-kernel --calls 20000")?;
        assert!(fuzz.steps.contains(SuiteStep::DebugKernel));
        assert_eq!(fuzz.fuzz_calls, 20_000);
        assert!(!run("fuzz-guest --calls 20000")?
            .steps
            .contains(SuiteStep::DebugKernel));
        for elsewhere in ["--kernel 6.1", "--arch arm64"] {
            assert!(
                run(&format!("fuzz-guest --debug-kernel {elsewhere}")).is_err(),
                "{elsewhere}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_kernel_is_chosen_by_its_series() {
        assert_eq!(
            run("suite guest --kernel 6.1").map(|o| o.kernel),
            Ok(Some(KernelChoice::Lts))
        );
        assert_eq!(
            run("--kernel 6.12 demo").map(|o| o.kernel),
            Ok(Some(KernelChoice::Backports))
        );
        assert_eq!(run("guest").map(|o| o.kernel), Ok(None));
        assert_eq!(
            run("guest --kernel").err().as_deref(),
            Some("--kernel needs 6.1, 6.12 or 7.x")
        );
        assert_eq!(
            run("demo --kernel 7.x").map(|o| o.kernel),
            Ok(Some(KernelChoice::Newest))
        );
        for bad in ["6", "6.10", "7", "6.1.0-57-amd64", "lts"] {
            assert_eq!(
                run(&format!("guest --kernel {bad}")).err(),
                Some(format!(
                    "--kernel {bad:?} is not a kernel the runner boots (6.1, 6.12 or 7.x)"
                )),
            );
        }
        let logs: std::collections::BTreeSet<&str> =
            KernelChoice::ALL.iter().map(|k| k.console_log()).collect();
        assert_eq!(logs.len(), KernelChoice::ALL.len());
    }

    #[test]
    fn failures_name_the_arch_the_kernel_and_the_console_log() {
        let mut checks = vec![Check::pass("vgpu"), Check::fail("rmmod", "exit 1")];
        name_guest_in_failures(
            &mut checks,
            GuestArch::Arm64Pages16k,
            "6.12.95+deb12-arm64-16k",
            std::path::Path::new("/o/guest-console-arm64-16k.log"),
        );
        assert_eq!(checks[0], Check::pass("vgpu"));
        assert_eq!(
            checks[1],
            Check::fail(
                "rmmod",
                "exit 1\n(on arm64-16k, Linux 6.12.95+deb12-arm64-16k; \
                 console log /o/guest-console-arm64-16k.log)"
            )
        );
    }

    #[test]
    fn the_arch_is_chosen_by_name_for_demo_suite_and_guest() {
        assert_eq!(
            run("demo --arch arm64").map(|o| (o.command, o.arch)),
            Ok((Subcommand::Demo, Some(GuestArch::Arm64)))
        );
        assert_eq!(
            run("suite guest --arch arm64-16k").map(|o| o.arch),
            Ok(Some(GuestArch::Arm64Pages16k))
        );
        assert_eq!(
            run("--arch x86_64 guest --kernel 6.1").map(|o| (o.arch, o.kernel)),
            Ok((Some(GuestArch::X86_64), Some(KernelChoice::Lts)))
        );
        assert_eq!(run("guest").map(|o| o.arch), Ok(None));
        assert_eq!(
            run("demo --arch").err().as_deref(),
            Some("--arch needs x86_64, arm64 or arm64-16k")
        );
        for bad in ["aarch64", "arm64-4k", "arm", "x86"] {
            assert_eq!(
                run(&format!("guest --arch {bad}")).err(),
                Some(format!(
                    "--arch {bad:?} is not a guest the runner boots (x86_64, arm64 or arm64-16k)"
                )),
            );
        }
        assert!(run("guest --arch arm64 --kernel 6.1")
            .err()
            .is_some_and(|e| e.starts_with("--kernel chooses among the x86_64 kernels")));
    }

    #[test]
    fn each_arch_runs_its_plan() {
        assert_eq!(
            guest_suites(GuestArch::Arm64, KernelChoice::Backports).len(),
            guest_plan::TEST_SUITES.len()
        );
        let programs: Vec<&str> = guest_suites(GuestArch::Arm64Pages16k, KernelChoice::Backports)
            .iter()
            .flat_map(|s| s.programs)
            .map(|p| p.name)
            .collect();
        assert_eq!(
            programs,
            ["vgpu", "core-flows", "icd-e2e", "vk-demo-validated"]
        );
        assert!(DEFAULT_ARCHES.contains(&GuestArch::X86_64));
        assert!(DEFAULT_ARCHES.contains(&GuestArch::Arm64Pages16k));
    }

    #[test]
    fn help_is_asked_for_in_three_ways_and_wins() {
        for words in [
            "--help",
            "-h",
            "help",
            "suite --help",
            "--bogus -h",
            "guest help",
        ] {
            assert_eq!(parse_args(&args(words)), Ok(Request::Help), "{words}");
        }
    }

    #[test]
    fn usage_lists_every_command_step_and_option_once() {
        let text = usage();
        // Each section's rows, by the section's title.
        let section = |title: &str| -> Vec<String> {
            text.split("\n\n")
                .find(|block| block.starts_with(title))
                .map(|block| block.lines().skip(1).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let listed = |rows: &[String], name: &str| {
            rows.iter()
                .filter(|row| {
                    // The whole name: `fuzz` is not `fuzz-guest`, `bench` is not `bench-host`.
                    row.strip_prefix("  ")
                        .and_then(|r| r.strip_prefix(name))
                        .is_some_and(|rest| rest.starts_with(' '))
                })
                .count()
        };
        let commands = section("commands:");
        assert_eq!(commands.len(), COMMANDS.len(), "{text}");
        for (command, _) in COMMANDS {
            assert_eq!(listed(&commands, command), 1, "{command}\n{text}");
            let word = command.split_whitespace().next().unwrap_or_default();
            if word != "help" {
                assert!(run(word).is_ok(), "{word} does not parse");
            }
        }
        let steps = section("suite steps");
        assert_eq!(steps.len(), SuiteStep::ALL.len(), "{text}");
        for step in SuiteStep::ALL {
            assert_eq!(
                listed(&steps, &format!("{} ", step.name())),
                1,
                "{}",
                step.name()
            );
        }
        let options = section("options:");
        assert_eq!(options.len(), OPTIONS.len(), "{text}");
        for (option, _) in OPTIONS {
            assert_eq!(listed(&options, option), 1, "{option}");
        }
        // One line each: no row so long that a terminal wraps it twice.
        assert!(
            text.lines().all(|line| line.chars().count() <= 110),
            "{text}"
        );
    }

    #[test]
    fn the_bench_csv_is_cut_from_the_console() {
        let log = "boot\r\n@@bench-csv begin\r\na,b\r\n1,2\r\n@@bench-csv end\r\nafter\r\n";
        assert_eq!(bench_csv(log).as_deref(), Some("a,b\n1,2\n"));
        assert_eq!(bench_csv("@@bench-csv begin\na,b\n"), None);
    }

    #[test]
    fn bad_arguments_are_refused_with_what_was_wrong() {
        let refused = |words: &str| run(words).err().unwrap_or_default();
        assert_eq!(refused(""), "no command given");
        assert_eq!(refused("suite demo"), "\"demo\" is not a suite step (the steps: fmt, clippy, doc, test, capi, miri, fuzz, no-std, cortex-m, windows, kmod, guest, debug-kernel)");
        assert_eq!(refused("demo suite"), "unexpected argument \"suite\"");
        assert_eq!(refused("guest fmt"), "unexpected argument \"fmt\"");
        assert_eq!(refused("check"), "unknown command \"check\"");
        assert_eq!(refused("suite --fast"), "unknown option \"--fast\"");
        assert_eq!(
            refused("suite --timeout"),
            "--timeout needs a number of seconds"
        );
        assert_eq!(
            refused("suite --timeout 0"),
            "--timeout \"0\" is not a positive number of seconds"
        );
        assert!(run("fuzz --seconds 0").is_err());
        assert!(run("fuzz --seconds").is_err());
    }
}
