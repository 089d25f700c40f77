//! Running guest suites end to end: build the guest programs, pack the initramfs (busybox, init
//! script, the kernel modules the guest needs, the plan), boot it, and turn the console into
//! checks.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::arm64_root;
use crate::console_log::{self, StepOutput, Transcript, KERNEL_LOG_STEP, MODULES_STEP};
use crate::guest_arch::{GuestArch, ARM64_MULTIARCH};
use crate::guest_boot::{self, Accel, BootEnd, BootError, BootOutcome, BootSpec};
use crate::guest_plan::{
    self, FeatureSet, GuestSuite, MissingBinary, OutputFormat, PlanValues, KERNEL_FEATURES,
};
use crate::host_command::{self, CommandError};
use crate::initramfs::{NewcArchive, NewcError};
use crate::kernel_modules::{KernelConfig, ModulesDep, ModulesError, Tristate};
use crate::kmod_build::{self, ModuleTarget};
use crate::ktap::{self, Status};
use crate::provision::Provisioned;
use crate::report::{Check, Step};
use crate::workspace::{CrossBuild, Workspace, WorkspaceError};

/// How to run the guest.
#[derive(Debug, Clone, Copy)]
pub struct GuestOptions {
    /// The guest's architecture and page size.
    pub arch: GuestArch,
    /// TCG or KVM.
    pub accel: Accel,
    /// Limit for the whole boot.
    pub timeout: Duration,
    /// Show the output of plain (non-KTAP) programs live, as the demo does.
    pub echo_plain_output: bool,
    /// The kernel features the boot needs (loaded as modules where the kernel has them so).
    pub features: FeatureSet,
    /// The console log's file name in the output directory: one per kernel, so a second boot
    /// on another kernel keeps the first one's log.
    pub console_log: &'static str,
    /// Whether the kernel is the debug kernel: its checkers' reports and the kmemleak scan
    /// become named checks (`debug_reports.rs`).
    pub debug_reports: bool,
}

/// Why the guest could not be run at all.
#[derive(Debug)]
enum GuestError {
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Building the guest programs failed.
    Build(WorkspaceError),
    /// The kernel lacks features the guest needs (Kconfig symbols, with what they are for).
    MissingFeatures(Vec<String>),
    /// `modules.dep` is damaged or lacks a module.
    Modules(ModulesError),
    /// Two modules to load share a file name.
    DuplicateModule(String),
    /// Decompressing a module failed.
    Decompress(CommandError),
    /// The initramfs could not hold an entry.
    Archive(NewcError),
    /// The plan names a program that was not built.
    Plan(MissingBinary),
    /// QEMU could not be run.
    Boot(BootError),
    /// The guest root could not be prepared.
    GuestRoot(crate::provision::ProvisionError),
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Build(err) => write!(f, "building the guest programs failed: {err}"),
            Self::MissingFeatures(missing) => {
                write!(f, "the guest kernel lacks {}", missing.join(", "))
            }
            Self::Modules(err) => write!(f, "{err}"),
            Self::DuplicateModule(name) => write!(f, "two modules to load are named {name}"),
            Self::Decompress(err) => write!(f, "{err}"),
            Self::Archive(err) => write!(f, "{err}"),
            Self::Plan(err) => write!(f, "{err}"),
            Self::Boot(err) => write!(f, "{err}"),
            Self::GuestRoot(err) => write!(f, "preparing the guest root: {err}"),
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> GuestError + '_ {
    move |source| GuestError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Boots the guest once for `suites` and reports the outcome as one step titled `title`.
pub fn run(
    workspace: &Workspace,
    provisioned: &Provisioned,
    suites: &[GuestSuite],
    options: GuestOptions,
    title: &str,
) -> Step {
    let started = Instant::now();
    let mut step = Step::new(title);
    step.list_passes = true;
    let accel = match options.accel {
        Accel::Tcg => "TCG",
        Accel::Kvm => "KVM",
    };
    step.notes.push(format!(
        "Linux {} ({}), QEMU {accel}",
        provisioned.kernel.version, provisioned.kernel.origin
    ));
    match prepare_and_boot(workspace, provisioned, suites, options, &mut step) {
        Ok(outcome) => {
            step.notes.push(format!(
                "guest ran for {} ({}); console log: {}",
                crate::report::seconds(outcome.elapsed),
                outcome.end,
                console_log_path(workspace, options.console_log).display()
            ));
            step.checks.extend(evaluate(suites, &outcome));
            if options.debug_reports {
                let transcript = Transcript::parse(&outcome.lines);
                step.checks
                    .extend(crate::debug_reports::checks(&outcome.lines, &transcript));
            }
        }
        Err(err) => step.checks.push(Check::fail("guest-boot", err.to_string())),
    }
    step.elapsed = started.elapsed();
    step
}

/// Where the guest's console is saved.
pub fn console_log_path(workspace: &Workspace, name: &str) -> PathBuf {
    workspace.output_dir().join(name)
}

/// Everything before evaluation; an error is the reason the guest could not be run at all.
fn prepare_and_boot(
    workspace: &Workspace,
    provisioned: &Provisioned,
    suites: &[GuestSuite],
    options: GuestOptions,
    step: &mut Step,
) -> Result<BootOutcome, GuestError> {
    let out_dir = workspace.output_dir();
    fs::create_dir_all(&out_dir).map_err(io_error(&out_dir))?;

    if suites.iter().any(|s| s.kernel_module) {
        build_kernel_module(workspace, provisioned, options.arch, step);
    }
    let cross = match (options.arch.rust_target(), &provisioned.guest_root) {
        (Some(target), Some(root)) => Some(CrossBuild {
            target,
            sysroot: root,
            multiarch: ARM64_MULTIARCH,
        }),
        _ => None,
    };
    let for_arch = cross
        .map(|c| format!(" for {}", c.target))
        .unwrap_or_default();
    println!("guest: building the guest programs{for_arch}");
    let binaries = build_programs(workspace, suites, cross)?;
    println!("guest: building the Vulkan ICD{for_arch}");
    workspace
        .build_library(ICD_PACKAGE, cross)
        .map_err(GuestError::Build)?;

    let kernel = &provisioned.kernel;
    let config_path = kernel.config();
    let config_text = fs::read_to_string(&config_path).map_err(io_error(&config_path))?;
    let features = classify_features(&KernelConfig::parse(&config_text), options.features)
        .map_err(GuestError::MissingFeatures)?;
    step.notes.push(format!(
        "built into the kernel: {}; loaded as modules: {}",
        features.built_in.join(", "),
        features.modules.join(", ")
    ));
    let dep_path = kernel.modules_dir().join("modules.dep");
    let dep_text = fs::read_to_string(&dep_path).map_err(io_error(&dep_path))?;
    let dep = ModulesDep::parse(&dep_text).map_err(GuestError::Modules)?;
    let modules: Vec<&str> = features.modules.iter().map(String::as_str).collect();
    let load_order = dep.load_order(&modules).map_err(GuestError::Modules)?;
    let names: Vec<String> = load_order
        .iter()
        .map(|p| crate::kernel_modules::module_name(p))
        .collect();
    step.notes
        .push(format!("insmod order: {}", names.join(" ")));

    let values = PlanValues {
        target_dir: workspace.target_dir.clone(),
        workspace: workspace.root.clone(),
        kernel: kernel.version.clone(),
        module: module_path(workspace, options.arch),
        features: options.features,
    };
    let plan = guest_plan::render_plan(suites, &binaries, &values).map_err(GuestError::Plan)?;
    // The guest gets fresh tmpfs on /tmp and /run; the workspace and the target dir must
    // stay visible even when they live there (CI may clone into /tmp).
    let keep = [workspace.root.as_path(), workspace.target_dir.as_path()];
    if let Some(root) = &provisioned.guest_root {
        arm64_root::add_mount_points(root, &keep).map_err(GuestError::GuestRoot)?;
    }
    let initramfs = build_initramfs(
        &provisioned.busybox,
        &kernel.modules_dir(),
        &load_order,
        &plan,
        &keep,
        provisioned.guest_root.is_some(),
    )?;
    let initramfs_path = out_dir.join("initramfs.cpio");
    fs::write(&initramfs_path, initramfs).map_err(io_error(&initramfs_path))?;

    let spec = BootSpec {
        arch: options.arch,
        guest_root: provisioned.guest_root.clone(),
        kernel: kernel.vmlinuz(),
        initramfs: initramfs_path,
        accel: options.accel,
        timeout: options.timeout,
        console_log: console_log_path(workspace, options.console_log),
    };
    println!(
        "guest: booting Linux {} ({} s limit; console log {})",
        kernel.version,
        options.timeout.as_secs(),
        spec.console_log.display()
    );
    let mut progress = Progress {
        echo_plain_output: options.echo_plain_output,
        in_plain_step: false,
    };
    guest_boot::boot(&spec, &mut |line| progress.line(line)).map_err(GuestError::Boot)
}

/// Builds `extmem_vgpu.ko` for the guest kernel. A failure is a failed check, not the end of
/// the run: the other suites still boot, and the module suite's `insmod` fails on the missing
/// file (the build removes a stale one first).
fn build_kernel_module(
    workspace: &Workspace,
    provisioned: &Provisioned,
    arch: GuestArch,
    step: &mut Step,
) {
    println!("guest: building {}", kmod_build::MODULE_FILE);
    let name = format!("build {}", kmod_build::MODULE_FILE);
    let built = match arch {
        GuestArch::X86_64 => kmod_build::build(workspace, &provisioned.kernel),
        GuestArch::Arm64 => {
            kmod_build::build_for(workspace, &provisioned.kernel, ModuleTarget::ARM64)
        }
        GuestArch::Arm64Pages16k => {
            kmod_build::build_for(workspace, &provisioned.kernel, ModuleTarget::ARM64_16K)
        }
    };
    match built {
        Ok(built) => {
            step.checks.push(Check::pass(name));
            step.notes
                .push(format!("module: {}", built.module.display()));
            if !built.warnings.is_empty() {
                step.notes.push(format!(
                    "{} build warnings:\n{}",
                    kmod_build::MODULE_FILE,
                    host_command::indent(&built.warnings.join("\n"))
                ));
            }
        }
        Err(err) => step.checks.push(Check::fail(name, err.to_string())),
    }
}

/// Where the build of `extmem_vgpu.ko` for `arch`'s kernel is: the x86_64 one where
/// `kmod_build::build` puts it, the arm64 ones where `build_for` does, in a directory named
/// after the module target.
fn module_path(workspace: &Workspace, arch: GuestArch) -> PathBuf {
    let dir = kmod_build::kmod_dir(workspace);
    match arch {
        GuestArch::X86_64 => dir.join(kmod_build::MODULE_FILE),
        GuestArch::Arm64 => dir
            .join(ModuleTarget::ARM64.name)
            .join(kmod_build::MODULE_FILE),
        GuestArch::Arm64Pages16k => dir
            .join(ModuleTarget::ARM64_16K.name)
            .join(kmod_build::MODULE_FILE),
    }
}

/// Live progress on our stdout while the guest runs.
struct Progress {
    echo_plain_output: bool,
    in_plain_step: bool,
}

impl Progress {
    fn line(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["@@extmem", "begin", kind, name] => {
                self.in_plain_step = *kind == "plain";
                if *kind != "dmesg" {
                    println!("guest: {kind} {name} …");
                }
            }
            ["@@extmem", "end", kind, name, rc] => {
                self.in_plain_step = false;
                if *kind != "dmesg" {
                    println!("guest: {kind} {name} finished, {rc}");
                }
            }
            ["@@extmem", "fatal", ..] => println!("guest: {line}"),
            _ if self.in_plain_step && self.echo_plain_output => println!("{line}"),
            _ => {}
        }
    }
}

fn build_programs(
    workspace: &Workspace,
    suites: &[GuestSuite],
    cross: Option<CrossBuild<'_>>,
) -> Result<BTreeMap<&'static str, PathBuf>, GuestError> {
    let mut by_package: BTreeMap<&str, Vec<&'static str>> = BTreeMap::new();
    for program in suites.iter().flat_map(|s| s.programs) {
        by_package
            .entry(program.package)
            .or_default()
            .push(program.binary);
    }
    let mut built = BTreeMap::new();
    for (package, binaries) in by_package {
        let paths = workspace
            .build_binaries(package, &binaries, cross)
            .map_err(GuestError::Build)?;
        built.extend(binaries.into_iter().zip(paths));
    }
    let mut by_program = BTreeMap::new();
    for program in suites.iter().flat_map(|s| s.programs) {
        if let Some(path) = built.get(program.binary) {
            by_program.insert(program.name, path.clone());
        }
    }
    Ok(by_program)
}

/// The package of the Vulkan ICD the guest's Vulkan programs load. Built as a release cdylib
/// for the guest's target, its build script writes `extmem_icd.json` next to
/// `libextmem_icd.so` in the directory the guest programs are built into; the Vulkan ones
/// point the loader there (`VK_DRIVER_FILES`).
const ICD_PACKAGE: &str = "extmem-icd";

/// The kernel features split by how the kernel has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Features {
    built_in: Vec<String>,
    modules: Vec<String>,
}

/// Sorts the [`KERNEL_FEATURES`] in `wanted` by how `config` has them; the error lists the absent ones.
fn classify_features(config: &KernelConfig, wanted: FeatureSet) -> Result<Features, Vec<String>> {
    let mut features = Features::default();
    let mut absent = Vec::new();
    for feature in KERNEL_FEATURES.iter().filter(|f| wanted.wants(f)) {
        match config.tristate(feature.config) {
            Tristate::BuiltIn => features.built_in.push(feature.module.to_owned()),
            Tristate::Module => features.modules.push(feature.module.to_owned()),
            Tristate::Absent => absent.push(format!("{} ({})", feature.config, feature.purpose)),
        }
    }
    if absent.is_empty() {
        Ok(features)
    } else {
        Err(absent)
    }
}

/// Packs busybox, the init script, the modules (decompressed, in load order), the plan and
/// the host paths that must survive the guest's own /tmp and /run (`/extmem/keep`); with
/// `own_root`, `/extmem/guestroot` tells the init script to chroot into the root shared as
/// `guestroot` and bind the kept paths in from the host's.
fn build_initramfs(
    busybox: &Path,
    modules_dir: &Path,
    load_order: &[String],
    plan: &str,
    keep: &[&Path],
    own_root: bool,
) -> Result<Vec<u8>, GuestError> {
    let mut archive = NewcArchive::new();
    for dir in [
        "/bin",
        "/dev",
        "/proc",
        "/sys",
        "/newroot",
        "/lib",
        "/lib/modules",
        "/extmem",
        "/hosttmp",
        "/hostrun",
        "/hostroot",
    ] {
        archive.directory(dir).map_err(GuestError::Archive)?;
    }
    // The kernel opens /dev/console for init's stdio before init mounts devtmpfs.
    archive
        .char_device("/dev/console", 0o600, 5, 1)
        .map_err(GuestError::Archive)?;
    let busybox_bytes = fs::read(busybox).map_err(io_error(busybox))?;
    archive
        .file("/bin/busybox", 0o755, &busybox_bytes)
        .map_err(GuestError::Archive)?;
    archive
        .symlink("/bin/sh", "busybox")
        .map_err(GuestError::Archive)?;
    archive
        .file("/init", 0o755, include_bytes!("guest_init.sh"))
        .map_err(GuestError::Archive)?;

    let mut list = String::new();
    for relative in load_order {
        let (file_name, bytes) = module_bytes(&modules_dir.join(relative))?;
        if list.lines().any(|l| l == file_name) {
            return Err(GuestError::DuplicateModule(file_name));
        }
        archive
            .file(&format!("/lib/modules/{file_name}"), 0o644, &bytes)
            .map_err(GuestError::Archive)?;
        list.push_str(&file_name);
        list.push('\n');
    }
    archive
        .file("/extmem/modules", 0o644, list.as_bytes())
        .map_err(GuestError::Archive)?;
    archive
        .file("/extmem/plan.sh", 0o644, plan.as_bytes())
        .map_err(GuestError::Archive)?;
    let keep: String = keep.iter().map(|p| format!("{}\n", p.display())).collect();
    archive
        .file("/extmem/keep", 0o644, keep.as_bytes())
        .map_err(GuestError::Archive)?;
    if own_root {
        archive
            .file("/extmem/guestroot", 0o644, b"")
            .map_err(GuestError::Archive)?;
    }
    Ok(archive.finish())
}

/// A module's file name and contents, decompressed: busybox's insmod loads only plain `.ko`.
fn module_bytes(path: &Path) -> Result<(String, Vec<u8>), GuestError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let decompressor = [(".ko.xz", "xz"), (".ko.zst", "zstd"), (".ko.gz", "gzip")]
        .into_iter()
        .find(|(suffix, _)| name.ends_with(suffix));
    match decompressor {
        Some((suffix, tool)) => {
            let out = host_command::output(Command::new(tool).arg("-dc").arg(path))
                .map_err(GuestError::Decompress)?;
            let stem = name.strip_suffix(suffix).unwrap_or(&name);
            Ok((format!("{stem}.ko"), out.stdout))
        }
        None => fs::read(path)
            .map(|bytes| (name, bytes))
            .map_err(io_error(path)),
    }
}

/// Turns a finished boot into checks, in plan order.
fn evaluate(suites: &[GuestSuite], outcome: &BootOutcome) -> Vec<Check> {
    let transcript = Transcript::parse(&outcome.lines);
    let why_stopped = why_stopped(&transcript, outcome);
    let mut checks = Vec::new();

    checks.push(command_check(
        "guest: load kernel modules",
        transcript.step("setup", MODULES_STEP),
        &why_stopped,
    ));
    for suite in suites {
        for command in suite.setup {
            checks.push(command_check(
                &format!("{}: setup {}", suite.name, command.name),
                transcript.step("setup", command.name),
                &why_stopped,
            ));
        }
        for program in suite.programs {
            match program.output {
                OutputFormat::Ktap => checks.extend(ktap_checks(
                    program.name,
                    transcript.step("ktap", program.name),
                    &why_stopped,
                )),
                OutputFormat::Plain => checks.push(command_check(
                    program.name,
                    transcript.step("plain", program.name),
                    &why_stopped,
                )),
            }
        }
        for command in suite.teardown {
            checks.push(command_check(
                &format!("{}: teardown {}", suite.name, command.name),
                transcript.step("teardown", command.name),
                &why_stopped,
            ));
        }
    }

    let problems = console_log::kernel_problems(&outcome.lines);
    let kernel_log = transcript.step("dmesg", KERNEL_LOG_STEP);
    checks.push(if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(10).map(String::as_str).collect();
        Check::fail(
            "guest-kernel-log",
            format!(
                "the kernel reported {} problem line(s):\n{}",
                problems.len(),
                shown.join("\n")
            ),
        )
    } else if kernel_log.and_then(|s| s.exit_code) != Some(0) {
        Check::fail(
            "guest-kernel-log",
            format!("the guest never dumped its kernel log: {why_stopped}"),
        )
    } else {
        Check::pass("guest-kernel-log")
    });

    let powered_off = matches!(outcome.end, BootEnd::Exited(status) if status.success());
    if !transcript.done || !powered_off {
        let mut reason = why_stopped.clone();
        if !outcome.qemu_stderr.trim().is_empty() {
            reason.push_str(&format!(
                "\nQEMU said:\n{}",
                host_command::indent(outcome.qemu_stderr.trim())
            ));
        }
        checks.push(Check::fail("guest-boot", reason));
    }
    checks
}

/// Why the guest stopped before finishing its plan, for messages about missing output.
fn why_stopped(transcript: &Transcript, outcome: &BootOutcome) -> String {
    if let Some(fatal) = &transcript.fatal {
        return format!("the guest init gave up: {fatal}");
    }
    if let Some(panic) = console_log::kernel_problems(&outcome.lines)
        .into_iter()
        .find(|p| p.contains("Kernel panic"))
    {
        return format!("the kernel panicked: {panic}");
    }
    match outcome.end {
        BootEnd::TimedOut(_) => outcome.end.to_string(),
        BootEnd::Exited(_) if transcript.done => format!("{} after finishing", outcome.end),
        BootEnd::Exited(_) => format!("{} before the guest finished its plan", outcome.end),
    }
}

/// A setup/teardown command or plain program: passes when it ran and exited 0.
fn command_check(name: &str, step: Option<&StepOutput>, why_stopped: &str) -> Check {
    match step {
        None => Check::fail(name, format!("did not run: {why_stopped}")),
        Some(StepOutput {
            exit_code: None,
            lines,
            ..
        }) => Check::fail(
            name,
            format!(
                "started but never finished: {why_stopped}{}",
                tail("last output", lines)
            ),
        ),
        Some(StepOutput {
            exit_code: Some(0), ..
        }) => Check::pass(name),
        Some(StepOutput {
            exit_code: Some(code),
            lines,
            ..
        }) => Check::fail(
            name,
            format!("exited with status {code}{}", tail("output", lines)),
        ),
    }
}

/// The checks of one KTAP program: one per result, plus failures for what went wrong around
/// them (no output, no plan, fewer results than planned, a crash, a non-zero exit).
pub fn ktap_checks(program: &str, step: Option<&StepOutput>, why_stopped: &str) -> Vec<Check> {
    let Some(step) = step else {
        return vec![Check::fail(program, format!("did not run: {why_stopped}"))];
    };
    let doc = ktap::parse(step.lines.iter().map(String::as_str));
    let mut checks = Vec::new();
    if let Some(reason) = doc.plan.as_ref().and_then(|p| p.skip_reason.as_ref()) {
        if doc.results.is_empty() {
            checks.push(Check::skip(program, reason.clone()));
        }
    }
    let mut any_failed = false;
    result_checks(program, &doc, &mut checks, &mut any_failed);

    let last = doc
        .results
        .last()
        .map(|r| format!("{} {}", r.number, r.description));
    let stopped_after = last
        .as_ref()
        .map(|l| format!(" (last result: {l})"))
        .unwrap_or_default();
    let exit = match step.exit_code {
        Some(0) => String::new(),
        Some(code) => format!("; it exited with status {code}"),
        None => format!("; it never finished: {why_stopped}"),
    };
    let not_ktap = tail("output that is not KTAP", &doc.other);
    let plan_failure = match (&doc.plan, doc.results.len()) {
        (None, _) => Some(format!("printed no plan line (1..N){exit}{not_ktap}")),
        (Some(plan), got) if got < plan.count => Some(format!(
            "planned {} results but printed {got}{stopped_after}{exit}{not_ktap}",
            plan.count
        )),
        (Some(plan), got) if got > plan.count => {
            Some(format!("planned {} results but printed {got}", plan.count))
        }
        _ => None,
    };
    let explained = any_failed || plan_failure.is_some();
    if let Some(reason) = plan_failure {
        checks.push(Check::fail(format!("{program}: KTAP plan"), reason));
    }
    // A bad exit not explained by a failed result or missing results is a failure of its own.
    match step.exit_code {
        None if !explained => checks.push(Check::fail(
            format!("{program}: exit"),
            format!("no end marker, the program crashed or hung: {why_stopped}{not_ktap}"),
        )),
        Some(code) if code != 0 && !explained => checks.push(Check::fail(
            format!("{program}: exit"),
            format!("exited with status {code} although no result failed{not_ktap}"),
        )),
        _ => {}
    }
    checks
}

/// One check per leaf result (subtests expanded), failures for structural problems.
fn result_checks(
    prefix: &str,
    doc: &ktap::Document,
    checks: &mut Vec<Check>,
    any_failed: &mut bool,
) {
    for problem in &doc.problems {
        *any_failed = true;
        checks.push(Check::fail(
            format!("{prefix}: KTAP structure"),
            problem.clone(),
        ));
    }
    for result in &doc.results {
        let name = format!("{prefix}: {} {}", result.number, result.description);
        let reason = || {
            if result.diagnostics.is_empty() {
                "not ok, with no diagnostic".to_owned()
            } else {
                result.diagnostics.join("\n")
            }
        };
        match (&result.subtests, &result.status) {
            (Some(subtests), status) => {
                let before = checks.len();
                result_checks(&name, subtests, checks, any_failed);
                let child_failed = checks.get(before..).is_some_and(|c| {
                    c.iter()
                        .any(|c| matches!(c.verdict, crate::report::Verdict::Fail(_)))
                });
                if *status == Status::Fail && !child_failed {
                    *any_failed = true;
                    checks.push(Check::fail(name, reason()));
                }
            }
            (None, Status::Pass) => checks.push(Check::pass(name)),
            (None, Status::Fail) => {
                *any_failed = true;
                checks.push(Check::fail(name, reason()));
            }
            (None, Status::Skip { reason }) => checks.push(Check::skip(name, reason.clone())),
        }
    }
}

/// A few lines of `lines` as a suffix for a failure reason: from a Rust panic message or a
/// kernel oops/panic line if there is one (what follows matters less), else the last ones.
fn tail(label: &str, lines: &[String]) -> String {
    const SHOWN: usize = 8;
    let lines: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines
        .iter()
        .position(|l| l.contains("panicked at") || console_log::is_kernel_problem(l))
        .unwrap_or_else(|| lines.len().saturating_sub(SHOWN));
    let end = start.saturating_add(SHOWN).min(lines.len());
    format!(
        "\n{label}:\n{}",
        host_command::indent(&lines.get(start..end).unwrap_or(&[]).join("\n"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_plan::{GuestCommand, GuestProgram};
    use crate::report::Verdict;
    use std::os::unix::process::ExitStatusExt;

    const SUITE: GuestSuite = GuestSuite {
        name: "env",
        setup: &[GuestCommand {
            name: "insmod-x",
            argv: &["insmod", "x.ko"],
        }],
        programs: &[
            GuestProgram {
                name: "prog-a",
                package: "p",
                binary: "prog-a",
                output: OutputFormat::Ktap,
            },
            GuestProgram {
                name: "prog-b",
                package: "p",
                binary: "prog-b",
                output: OutputFormat::Plain,
            },
        ],
        teardown: &[],
        kernel_module: false,
    };

    fn outcome(console: &str, end: BootEnd) -> BootOutcome {
        BootOutcome {
            lines: console.lines().map(str::to_owned).collect(),
            end,
            qemu_stderr: String::new(),
            elapsed: Duration::from_secs(5),
        }
    }

    fn powered_off() -> BootEnd {
        BootEnd::Exited(std::process::ExitStatus::from_raw(0))
    }

    const GOOD: &str =
        "@@extmem begin setup kernel-modules\n@@extmem end setup kernel-modules rc=0\n\
        @@extmem begin setup insmod-x\n@@extmem end setup insmod-x rc=0\n\
        @@extmem begin ktap prog-a\nKTAP version 1\n1..3\nok 1 first\nok 2 second # SKIP no disk\n\
        ok 3 third\n@@extmem end ktap prog-a rc=0\n\
        @@extmem begin plain prog-b\nhello\n@@extmem end plain prog-b rc=0\n\
        @@extmem begin dmesg kernel-log\n[    0.000000] Linux version 6.12\n\
        @@extmem end dmesg kernel-log rc=0\n@@extmem done\n";

    fn verdicts(checks: &[Check]) -> Vec<(String, char)> {
        checks
            .iter()
            .map(|c| {
                let mark = match c.verdict {
                    Verdict::Pass => 'P',
                    Verdict::Fail(_) => 'F',
                    Verdict::Skip(_) => 'S',
                };
                (c.name.clone(), mark)
            })
            .collect()
    }

    fn reason_of<'a>(checks: &'a [Check], name: &str) -> &'a str {
        checks
            .iter()
            .find(|c| c.name == name)
            .map_or("", |c| match &c.verdict {
                Verdict::Fail(r) | Verdict::Skip(r) => r.as_str(),
                Verdict::Pass => "",
            })
    }

    #[test]
    fn a_clean_run_passes_every_check_and_counts_the_skip() {
        let checks = evaluate(&[SUITE], &outcome(GOOD, powered_off()));
        let expected: Vec<(String, char)> = [
            ("guest: load kernel modules", 'P'),
            ("env: setup insmod-x", 'P'),
            ("prog-a: 1 first", 'P'),
            ("prog-a: 2 second", 'S'),
            ("prog-a: 3 third", 'P'),
            ("prog-b", 'P'),
            ("guest-kernel-log", 'P'),
        ]
        .iter()
        .map(|(n, m)| ((*n).to_owned(), *m))
        .collect();
        assert_eq!(verdicts(&checks), expected);
    }

    #[test]
    fn a_failed_result_names_the_test_and_its_diagnostics() {
        let console = GOOD.replace(
            "ok 3 third\n@@extmem end ktap prog-a rc=0",
            "not ok 3 third\n# expected: 4 bytes\n# seen: 3 bytes\n@@extmem end ktap prog-a rc=1",
        );
        let checks = evaluate(&[SUITE], &outcome(&console, powered_off()));
        assert_eq!(
            reason_of(&checks, "prog-a: 3 third"),
            "expected: 4 bytes\nseen: 3 bytes"
        );
        // The non-zero exit is explained by the failed result: no extra check.
        assert!(!checks.iter().any(|c| c.name == "prog-a: exit"));
    }

    #[test]
    fn a_crash_mid_program_fails_with_the_last_result_and_the_plan() {
        let console =
            "@@extmem begin setup kernel-modules\n@@extmem end setup kernel-modules rc=0\n\
            @@extmem begin setup insmod-x\n@@extmem end setup insmod-x rc=0\n\
            @@extmem begin ktap prog-a\nKTAP version 1\n1..3\nok 1 first\n\
            [    7.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008\n\
            [    7.100000] Kernel panic - not syncing: Fatal exception\n";
        let checks = evaluate(&[SUITE], &outcome(console, powered_off()));
        let plan = reason_of(&checks, "prog-a: KTAP plan");
        assert!(
            plan.starts_with("planned 3 results but printed 1 (last result: 1 first)"),
            "{plan}"
        );
        assert!(
            plan.contains("it never finished: the kernel panicked: Kernel panic"),
            "{plan}"
        );
        assert!(!checks.iter().any(|c| c.name == "prog-a: exit"));
        assert!(reason_of(&checks, "prog-b").starts_with("did not run: the kernel panicked"));
        let log = reason_of(&checks, "guest-kernel-log");
        assert!(
            log.contains("BUG: kernel NULL pointer dereference"),
            "{log}"
        );
        assert!(checks.iter().any(|c| c.name == "guest-boot"));
    }

    #[test]
    fn a_timeout_fails_the_running_program_and_the_boot() {
        let console =
            "@@extmem begin setup kernel-modules\n@@extmem end setup kernel-modules rc=0\n\
            @@extmem begin setup insmod-x\n@@extmem end setup insmod-x rc=0\n\
            @@extmem begin ktap prog-a\nKTAP version 1\n1..3\n";
        let end = BootEnd::TimedOut(Duration::from_secs(300));
        let checks = evaluate(&[SUITE], &outcome(console, end));
        assert!(reason_of(&checks, "prog-a: KTAP plan").contains("still running after 300 s"));
        assert!(reason_of(&checks, "guest-boot").contains("still running after 300 s"));
        assert!(reason_of(&checks, "guest-kernel-log").starts_with("the guest never dumped"));
    }

    #[test]
    fn no_plan_and_nonzero_exit_without_failures_are_failures() {
        let console = GOOD
            .replace("1..3\n", "")
            .replace(
                "@@extmem end ktap prog-a rc=0",
                "thread 'main' panicked\n@@extmem end ktap prog-a rc=101",
            )
            .replace(
                "@@extmem end setup insmod-x rc=0",
                "insmod: ERROR: could not insert\n@@extmem end setup insmod-x rc=1",
            );
        let checks = evaluate(&[SUITE], &outcome(&console, powered_off()));
        let plan = reason_of(&checks, "prog-a: KTAP plan");
        assert!(
            plan.starts_with("printed no plan line (1..N); it exited with status 101"),
            "{plan}"
        );
        assert!(plan.contains("thread 'main' panicked"), "{plan}");
        assert!(!checks.iter().any(|c| c.name == "prog-a: exit"));
        let setup = reason_of(&checks, "env: setup insmod-x");
        assert!(
            setup.starts_with("exited with status 1\noutput:\n    insmod: ERROR"),
            "{setup}"
        );
    }

    #[test]
    fn a_nonzero_exit_with_all_results_passing_is_a_failure() {
        let console = GOOD.replace(
            "@@extmem end ktap prog-a rc=0",
            "@@extmem end ktap prog-a rc=3",
        );
        let checks = evaluate(&[SUITE], &outcome(&console, powered_off()));
        assert_eq!(
            reason_of(&checks, "prog-a: exit"),
            "exited with status 3 although no result failed"
        );
        let hung = GOOD.replace("@@extmem end ktap prog-a rc=0\n", "");
        let checks = evaluate(&[SUITE], &outcome(&hung, powered_off()));
        assert!(reason_of(&checks, "prog-a: exit").starts_with("no end marker"));
    }

    #[test]
    fn init_fatal_is_reported_on_everything_that_did_not_run() {
        let console =
            "@@extmem begin setup kernel-modules\n@@extmem end setup kernel-modules rc=0\n\
            @@extmem fatal mounting the host root over 9p failed\n";
        let checks = evaluate(&[SUITE], &outcome(console, powered_off()));
        assert_eq!(
            reason_of(&checks, "prog-a"),
            "did not run: the guest init gave up: mounting the host root over 9p failed"
        );
    }

    #[test]
    fn nested_subtests_become_leaf_checks() {
        let console = GOOD.replace(
            "1..3\nok 1 first\nok 2 second # SKIP no disk\nok 3 third\n",
            "1..1\n    KTAP version 1\n    1..2\n    ok 1 leaf_a\n    not ok 2 leaf_b\n    # seen: x\n\
             not ok 1 parent\n",
        );
        let checks = evaluate(&[SUITE], &outcome(&console, powered_off()));
        assert_eq!(reason_of(&checks, "prog-a: 1 parent: 2 leaf_b"), "seen: x");
        assert!(checks
            .iter()
            .any(|c| c.name == "prog-a: 1 parent: 1 leaf_a"));
        assert!(!checks.iter().any(|c| c.name == "prog-a: 1 parent"));
    }

    #[test]
    fn features_missing_from_the_kernel_are_named() {
        let config = KernelConfig::parse("CONFIG_VIRTIO_PCI=y\nCONFIG_9P_FS=m\n");
        let absent = classify_features(&config, FeatureSet::Every)
            .err()
            .unwrap_or_default();
        assert!(
            absent.iter().any(|a| a.starts_with("CONFIG_DRM_VGEM (")),
            "{absent:?}"
        );
        assert!(
            !absent.iter().any(|a| a.starts_with("CONFIG_9P_FS")),
            "{absent:?}"
        );
        let all = KERNEL_FEATURES
            .iter()
            .map(|f| format!("{}=m\n", f.config))
            .collect::<String>();
        let features = classify_features(&KernelConfig::parse(&all), FeatureSet::Every);
        assert_eq!(features.map(|f| f.modules.len()), Ok(KERNEL_FEATURES.len()));
    }
}
