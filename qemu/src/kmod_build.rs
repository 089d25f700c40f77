//! Building `extmem_vgpu.ko`, the extmem-vgpu kernel module, for a guest kernel: x86_64
//! (Debian's amd64 kernels) or arm64 (Debian's arm64 and arm64-16k kernels, cross-built with
//! `gcc-aarch64-linux-gnu` and the amd64 kbuild tools of the same release), one
//! [`ModuleTarget`] each.
//!
//! 1. The Rust core as a staticlib for the architecture's bare-metal target
//!    (`x86_64-unknown-none`, `aarch64-unknown-none-softfloat`), with the pinned nightly
//!    (`rust_tools::NIGHTLY`, which the `-Z` flags need):
//!    `cargo --config kernel-shim/kmod/kcore-mitigations-<arch>.toml rustc -p extmem-kcore
//!    --profile kernel --target <target> --features kernel --crate-type staticlib` (the
//!    stable code-generation flags for the target live in `.cargo/config.toml`, the
//!    mitigation flags (x86_64: retpoline, return thunk, IBT, padding; arm64: branch
//!    protection) and the rebuild of `core` in that fragment, the `kernel` profile in the
//!    workspace manifest). Both arm64 flavours link the same object: the page size is the
//!    running kernel's, which the glue hands kcore at module init.
//! 2. One relocatable object from it: the archive's `extmem_kcore-*` members (the LTO unit;
//!    nothing of `compiler_builtins`), partially linked with `ld -r --gc-sections
//!    --strip-debug -T extmem_kcore.lds` and the `extmem_kcore_*` entry points `extmem_kcore.h`
//!    declares as roots, so the module holds only what they reach; the same recipe as
//!    `kernel-shim/core/tests/no_panic.rs`, with the architecture's binutils. Its undefined
//!    symbols must all be `extmem_plat_*`, `mem*` or the kernel's x86 thunks, and no panic
//!    machinery may be left in it.
//! 3. The build directory `<target>/kmod/<module target>/build`: the C glue and headers of
//!    `kernel-shim/kmod`,
//!    the object as `extmem_kcore.o_shipped` and a `.extmem_kcore.o.cmd` beside it (modpost
//!    reads the `.cmd` file of every object of a module, for symbol versions).
//! 4. `make -C <headers> ARCH=<arch> [CROSS_COMPILE=aarch64-linux-gnu-] M=<build dir>
//!    modules` (chrooted into the build root for kernels whose tools bookworm cannot run,
//!    `build_root.rs`), its output kept in `<target>/kmod/<module target>/make.log`. Any
//!    objtool warning fails the build: objtool checks the module as one object, and a
//!    warning there is code without the kernel's mitigations (x86_64; arm64 runs no objtool
//!    on modules). The module's vermagic (`modinfo -F vermagic`) must name the kernel it was
//!    built for. Otherwise it is copied to `<target>/kmod/<module target>/extmem_vgpu.ko`;
//!    the x86_64 one also to `<target>/kmod/extmem_vgpu.ko`, where the x86_64 guest plan's
//!    `insmod` finds it.
//!
//! Files are rewritten only when their bytes change, so a second build with nothing changed
//! makes `make` do nothing. Nothing is written into the source tree.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build_root;
use crate::host_command::{self, CommandError};
use crate::provision::Kernel;
use crate::rust_tools;
use crate::workspace::Workspace;

/// The crate of the Rust core.
const CORE_PACKAGE: &str = "extmem-kcore";
/// The cargo profile of the kernel object.
const CORE_PROFILE: &str = "kernel";
/// Where the C glue lives, relative to the workspace root.
const KMOD_SOURCE: &str = "kernel-shim/kmod";
/// The C <-> Rust boundary header, whose `extmem_kcore_*` declarations are the link roots.
const BOUNDARY_HEADER: &str = "extmem_kcore.h";
/// The linker script of the partial link (in `kernel-shim/kmod`).
const LINKER_SCRIPT: &str = "extmem_kcore.lds";
/// Archive members of the core itself (the rest is `core` and `compiler_builtins`).
const CORE_MEMBER_PREFIX: &str = "extmem_kcore-";
/// The nightly component the rebuild of `core` (`build-std`) needs.
pub const RUST_SOURCE_COMPONENT: &str = "rust-src";
/// What the core may leave undefined on every architecture: the glue's platform callbacks
/// and the string functions the kernel exports (LLVM lowers large copies and zeroing to
/// them).
const UNDEFINED_ALLOWED: &[&str] = &["extmem_plat_", "memcpy", "memmove", "memset"];
/// What the x86_64 core may leave undefined besides: the thunks the kernel exports for
/// retpolines (`__x86_indirect_thunk_<reg>`) and return thunks.
const X86_THUNKS: &[&str] = &["__x86_indirect_thunk_", "__x86_return_thunk"];
/// Parts of symbol names that only panic machinery has (mangled: `core::panicking`,
/// `core::fmt`, the slice-index failures): any of them in the linked object means a panic
/// is reachable from an entry point.
const PANIC_NAME_PARTS: &[&str] = &["panic", "9panicking", "4core3fmt", "slice_index_fail"];
/// How objtool starts a warning line (`<object>: warning: objtool: <place>: <message>`).
const OBJTOOL_WARNING: &str = "warning: objtool: ";
/// How [`warnings`] names a grouped objtool warning.
const OBJTOOL_GROUP_PREFIX: &str = "objtool: ";
/// The module's name, as Kbuild names the `.ko`.
pub const MODULE_FILE: &str = "extmem_vgpu.ko";

/// A CPU architecture the module is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64, built with the host's compiler.
    X86_64,
    /// arm64, cross-built with Debian's `gcc-aarch64-linux-gnu`.
    Arm64,
}

impl Arch {
    /// The Rust target of the kernel object, as the kernel's own Rust support picks it
    /// (arch/x86/Makefile, arch/arm64/Makefile).
    pub fn rust_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-none",
            Self::Arm64 => "aarch64-unknown-none-softfloat",
        }
    }

    /// The cargo configuration fragment (in `kernel-shim/kmod`) with the nightly-only
    /// mitigation flags for this architecture.
    pub fn mitigations_config(self) -> &'static str {
        match self {
            Self::X86_64 => "kcore-mitigations-x86_64.toml",
            Self::Arm64 => "kcore-mitigations-aarch64.toml",
        }
    }

    /// Kbuild's `ARCH`.
    fn kbuild_arch(self) -> &'static str {
        match self {
            Self::X86_64 => "x86",
            Self::Arm64 => "arm64",
        }
    }

    /// The prefix of the toolchain that builds for this architecture (`CROSS_COMPILE`, and
    /// the binutils of the partial link): none for the host's.
    pub fn tool_prefix(self) -> &'static str {
        match self {
            Self::X86_64 => "",
            Self::Arm64 => "aarch64-linux-gnu-",
        }
    }

    /// The binutils `tool` (`ld`, `ar`, `nm`) for this architecture.
    pub fn binutil(self, tool: &str) -> String {
        format!("{}{tool}", self.tool_prefix())
    }

    /// The machine `modinfo -F vermagic` names last (`... modversions aarch64`); x86_64's
    /// vermagic names none.
    fn vermagic_machine(self) -> Option<&'static str> {
        match self {
            Self::X86_64 => None,
            Self::Arm64 => Some("aarch64"),
        }
    }

    /// Symbol prefixes the kernel object may leave undefined on this architecture.
    fn undefined_allowed(self) -> Vec<&'static str> {
        let extra: &[&str] = match self {
            Self::X86_64 => X86_THUNKS,
            Self::Arm64 => &[],
        };
        UNDEFINED_ALLOWED.iter().chain(extra).copied().collect()
    }
}

/// One module build: an architecture and the name of its output directory,
/// `<target>/kmod/<name>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleTarget {
    /// The architecture.
    pub arch: Arch,
    /// The output directory's name, and how the report names the build.
    pub name: &'static str,
}

impl ModuleTarget {
    /// For Debian's x86_64 (amd64) kernels.
    pub const X86_64: Self = Self {
        arch: Arch::X86_64,
        name: "x86_64",
    };
    /// For Debian's arm64 kernel (4 KiB pages).
    pub const ARM64: Self = Self {
        arch: Arch::Arm64,
        name: "arm64",
    };
    /// For Debian's arm64-16k kernel (16 KiB pages).
    pub const ARM64_16K: Self = Self {
        arch: Arch::Arm64,
        name: "arm64-16k",
    };
}

/// What a successful build produced.
#[derive(Debug, Clone)]
pub struct BuiltModule {
    /// The module, at `<target>/kmod/<module target>/extmem_vgpu.ko` (x86_64 through
    /// [`build`]: `<target>/kmod/extmem_vgpu.ko`).
    pub module: PathBuf,
    /// Its vermagic, checked to name the kernel it was built for.
    pub vermagic: String,
    /// Warning lines of the build (objtool, modpost, the compiler), for the report.
    pub warnings: Vec<String>,
}

/// Why the module could not be built.
#[derive(Debug)]
pub enum KmodError {
    /// A tool failed.
    Command(CommandError),
    /// `make` failed; its output (both streams) explains.
    Make {
        /// The command line.
        command: String,
        /// The tail of its output.
        output: String,
    },
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Something expected is not there.
    Missing {
        /// What.
        what: String,
    },
    /// The pinned nightly toolchain (or its `rust-src`) could not be installed.
    Nightly {
        /// Why, as rustup or the check said.
        reason: String,
    },
    /// The linked kernel object can panic: panic machinery is reachable from an entry
    /// point.
    Panics {
        /// The object.
        object: PathBuf,
        /// The panic symbols in it.
        symbols: Vec<String>,
    },
    /// The kernel's configuration asks for code generation the architecture's mitigations
    /// fragment does not give the Rust object.
    Protection {
        /// The kernel release.
        kernel: String,
        /// What is missing, one line each.
        gaps: Vec<String>,
    },
    /// The module's vermagic does not name the kernel it was built against.
    Vermagic {
        /// The kernel release the headers are for.
        kernel: String,
        /// What `modinfo -F vermagic` printed.
        vermagic: String,
    },
    /// objtool found code in the module without the kernel's mitigations (or otherwise
    /// not the shape it requires).
    Objtool {
        /// The kernel the module was built for.
        kernel: String,
        /// The warnings, grouped by message.
        warnings: Vec<String>,
        /// The full `make` output.
        log: PathBuf,
    },
}

impl fmt::Display for KmodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command(err) => write!(f, "{err}"),
            Self::Make { command, output } => {
                write!(f, "`{command}` failed:\n{}", host_command::indent(output))
            }
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Missing { what } => write!(f, "{what}"),
            Self::Panics { object, symbols } => write!(
                f,
                "{} can panic: panic machinery is reachable from an extmem_kcore_* entry \
                 point ({}); `cargo test -p extmem-kcore --test no_panic` explains how to find \
                 the caller",
                object.display(),
                symbols.join(", ")
            ),
            Self::Protection { kernel, gaps } => write!(
                f,
                "Linux {kernel}'s configuration needs code generation the Rust object lacks:\n{}",
                host_command::indent(&gaps.join("\n"))
            ),
            Self::Vermagic { kernel, vermagic } => write!(
                f,
                "{MODULE_FILE}'s vermagic is `{vermagic}`, not one for Linux {kernel}"
            ),
            Self::Nightly { reason } => write!(
                f,
                "the {} toolchain the kernel object is built with: {reason}",
                rust_tools::NIGHTLY
            ),
            Self::Objtool {
                kernel,
                warnings,
                log,
            } => write!(
                f,
                "objtool warns about {MODULE_FILE} for Linux {kernel} (log {}):\n{}",
                log.display(),
                host_command::indent(&warnings.join("\n"))
            ),
        }
    }
}

impl std::error::Error for KmodError {}

impl From<CommandError> for KmodError {
    fn from(err: CommandError) -> Self {
        Self::Command(err)
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KmodError + '_ {
    move |source| KmodError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `<target>/kmod`: everything the module build writes.
pub fn kmod_dir(workspace: &Workspace) -> PathBuf {
    workspace.target_dir.join("kmod")
}

/// Removes `path` if it exists.
fn remove_stale(path: &Path) -> Result<(), KmodError> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io_error(path)(err)),
        _ => Ok(()),
    }
}

/// Builds the x86_64 module for `kernel` and puts it at `<target>/kmod/extmem_vgpu.ko`, where
/// the guest plan's `insmod` finds it. A stale module is removed first, so a failed build
/// never leaves an old `.ko` for the guest to load.
pub fn build(workspace: &Workspace, kernel: &Kernel) -> Result<BuiltModule, KmodError> {
    let module = kmod_dir(workspace).join(MODULE_FILE);
    remove_stale(&module)?;
    let built = build_for(workspace, kernel, ModuleTarget::X86_64)?;
    fs::copy(&built.module, &module).map_err(io_error(&built.module))?;
    Ok(BuiltModule { module, ..built })
}

/// Builds the module for `kernel` (whose headers are for `target`'s architecture) into
/// `<target>/kmod/<target name>/`. A stale module there is removed first.
pub fn build_for(
    workspace: &Workspace,
    kernel: &Kernel,
    target: ModuleTarget,
) -> Result<BuiltModule, KmodError> {
    let arch = target.arch;
    let out_dir = kmod_dir(workspace).join(target.name);
    let build_dir = out_dir.join("build");
    let module = out_dir.join(MODULE_FILE);
    fs::create_dir_all(&build_dir).map_err(io_error(&build_dir))?;
    remove_stale(&module)?;
    let headers = kernel.headers_dir();
    if !headers.join("Makefile").is_file() {
        return Err(KmodError::Missing {
            what: format!(
                "the kernel headers for {} are not installed in {}",
                kernel.version,
                headers.display()
            ),
        });
    }

    let source = workspace.root.join(KMOD_SOURCE);
    if arch == Arch::Arm64 {
        let config_path = headers.join(".config");
        let config = fs::read_to_string(&config_path).map_err(io_error(&config_path))?;
        let fragment_path = source.join(arch.mitigations_config());
        let fragment = fs::read_to_string(&fragment_path).map_err(io_error(&fragment_path))?;
        let gaps = arm64_protection_gaps(&config, &fragment);
        if !gaps.is_empty() {
            return Err(KmodError::Protection {
                kernel: kernel.version.clone(),
                gaps,
            });
        }
    }
    let object = kernel_object(workspace, target)?;
    let mut copied = copy_sources(&source, &build_dir)?;
    let shipped = build_dir.join("extmem_kcore.o_shipped");
    let object_bytes = fs::read(&object).map_err(io_error(&object))?;
    copied |= write_if_changed(&shipped, &object_bytes)?;
    let cmd_file = build_dir.join(".extmem_kcore.o.cmd");
    let cmd_text = format!(
        "savedcmd_{} := cat {} > {}\n",
        build_dir.join("extmem_kcore.o").display(),
        shipped.display(),
        build_dir.join("extmem_kcore.o").display()
    );
    write_if_changed(&cmd_file, cmd_text.as_bytes())?;
    if copied {
        println!(
            "guest: extmem_vgpu.ko ({}) sources changed, rebuilding",
            target.name
        );
    }

    let output = run_make(arch, kernel, &build_dir)?;
    let log = out_dir.join("make.log");
    fs::write(&log, &output).map_err(io_error(&log))?;
    let warnings = warnings(&output);
    let objtool: Vec<String> = warnings
        .iter()
        .filter(|w| w.starts_with(OBJTOOL_GROUP_PREFIX))
        .cloned()
        .collect();
    if !objtool.is_empty() {
        return Err(KmodError::Objtool {
            kernel: kernel.version.clone(),
            warnings: objtool,
            log,
        });
    }
    let built = build_dir.join(MODULE_FILE);
    let vermagic =
        host_command::stdout_text(Command::new("modinfo").args(["-F", "vermagic"]).arg(&built))?;
    let vermagic = vermagic.trim().to_owned();
    if !vermagic_matches(&vermagic, &kernel.version, arch) {
        return Err(KmodError::Vermagic {
            kernel: kernel.version.clone(),
            vermagic,
        });
    }
    fs::copy(&built, &module).map_err(io_error(&built))?;
    Ok(BuiltModule {
        module,
        vermagic,
        warnings,
    })
}

/// What an arm64 kernel configuration (`.config` text) asks of every object that the
/// mitigations fragment's `-Zbranch-protection=` does not give: `bti` for
/// CONFIG_ARM64_BTI_KERNEL (module text is mapped guarded, so an indirect branch to code
/// without a landing pad faults), `pac-ret` for CONFIG_ARM64_PTR_AUTH_KERNEL; and the shadow
/// call stack (CONFIG_SHADOW_CALL_STACK reserves x18), which the fragment does not set up.
fn arm64_protection_gaps(config: &str, fragment: &str) -> Vec<String> {
    let enabled = |option: &str| config.lines().any(|l| l.trim() == format!("{option}=y"));
    let protection: Vec<&str> = fragment
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once("-Zbranch-protection="))
        .flat_map(|(_, rest)| rest.split(['"', ' ']).next().unwrap_or_default().split(','))
        .collect();
    let mut gaps = Vec::new();
    for (option, needed) in [
        ("CONFIG_ARM64_BTI_KERNEL", "bti"),
        ("CONFIG_ARM64_PTR_AUTH_KERNEL", "pac-ret"),
    ] {
        if enabled(option) && !protection.contains(&needed) {
            gaps.push(format!("{option}=y needs -Zbranch-protection={needed}"));
        }
    }
    if enabled("CONFIG_SHADOW_CALL_STACK") {
        gaps.push(
            "CONFIG_SHADOW_CALL_STACK=y needs -Zfixed-x18 and -Zsanitizer=shadow-call-stack"
                .to_owned(),
        );
    }
    gaps
}

/// Whether `vermagic` is for the kernel release `version` on `arch`: the release first, as
/// the kernel compares it at load time, and the machine last where the architecture
/// appends one.
fn vermagic_matches(vermagic: &str, version: &str, arch: Arch) -> bool {
    let mut words = vermagic.split_whitespace();
    words.next() == Some(version)
        && arch
            .vermagic_machine()
            .is_none_or(|machine| vermagic.split_whitespace().last() == Some(machine))
}

/// Builds the Rust core for `target`'s architecture and links the kernel object from it at
/// `<target>/kmod/<target name>/extmem_kcore.o`, checked for stray undefined symbols and
/// for panic machinery (steps 1 and 2 of the module build).
pub fn kernel_object(workspace: &Workspace, target: ModuleTarget) -> Result<PathBuf, KmodError> {
    let arch = target.arch;
    let out_dir = kmod_dir(workspace).join(target.name);
    fs::create_dir_all(&out_dir).map_err(io_error(&out_dir))?;
    let source = workspace.root.join(KMOD_SOURCE);
    let header_path = source.join(BOUNDARY_HEADER);
    let header = fs::read_to_string(&header_path).map_err(io_error(&header_path))?;
    let roots = entry_points(&header);
    if roots.is_empty() {
        return Err(KmodError::Missing {
            what: format!(
                "{} declares no extmem_kcore_* functions",
                header_path.display()
            ),
        });
    }
    let staticlib = build_core(workspace, arch, &source.join(arch.mitigations_config()))?;
    let object = out_dir.join("extmem_kcore.o");
    link_core(
        arch,
        &staticlib,
        &roots,
        &source.join(LINKER_SCRIPT),
        &out_dir,
        &object,
    )?;
    Ok(object)
}

/// The functions `extmem_kcore.h` declares for the Rust side: every `extmem_kcore_<name>`
/// directly followed by `(`.
pub fn entry_points(header: &str) -> Vec<String> {
    const PREFIX: &str = "extmem_kcore_";
    let mut found: Vec<String> = Vec::new();
    let mut rest = header;
    while let Some(at) = rest.find(PREFIX) {
        let starts_word = at == 0
            || !rest
                .get(..at)
                .and_then(|before| before.chars().next_back())
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = rest.get(at..).unwrap_or_default();
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail.get(..len).unwrap_or_default();
        let after = tail.get(len..).unwrap_or_default().trim_start();
        if starts_word
            && name.len() > PREFIX.len()
            && after.starts_with('(')
            && !found.iter().any(|f| f == name)
        {
            found.push(name.to_owned());
        }
        rest = tail.get(len.max(1)..).unwrap_or_default();
    }
    found
}

/// Builds the core's staticlib with the pinned nightly and the mitigation flags of
/// `mitigations` (a cargo configuration fragment), and returns its path (from cargo's
/// artifact messages).
fn build_core(workspace: &Workspace, arch: Arch, mitigations: &Path) -> Result<PathBuf, KmodError> {
    if !mitigations.is_file() {
        return Err(KmodError::Missing {
            what: format!(
                "{} (the kernel object's mitigation flags) does not exist",
                mitigations.display()
            ),
        });
    }
    rust_tools::ensure_nightly(&[RUST_SOURCE_COMPONENT])
        .map_err(|reason| KmodError::Nightly { reason })?;
    let mut command = rust_tools::nightly_cargo(workspace);
    command.arg("--config").arg(mitigations).args([
        "rustc",
        "--quiet",
        "--message-format=json-render-diagnostics",
        "-p",
        CORE_PACKAGE,
        "--profile",
        CORE_PROFILE,
        "--target",
        arch.rust_target(),
        "--features",
        "kernel",
        "--crate-type",
        "staticlib",
    ]);
    let text = host_command::stdout_text(&mut command)?;
    staticlib_artifact(&text).ok_or_else(|| KmodError::Missing {
        what: format!(
            "`{}` reported no libextmem_kcore.a artifact",
            host_command::describe(&command)
        ),
    })
}

/// The `.a` file among the `compiler-artifact` messages of `extmem_kcore`.
fn staticlib_artifact(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| {
            m.get("reason").and_then(serde_json::Value::as_str) == Some("compiler-artifact")
        })
        .filter(|m| {
            m.get("target")
                .and_then(|t| t.get("name"))
                .and_then(serde_json::Value::as_str)
                == Some("extmem_kcore")
        })
        .filter_map(|m| {
            m.get("filenames")
                .and_then(serde_json::Value::as_array)
                .cloned()
        })
        .flatten()
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|p| p.extension().is_some_and(|e| e == "a"))
}

/// Extracts the core's members of `staticlib` into `<work_dir>/kcore-members` and links them
/// with `script`, rooted at the entry points, into `object` (with `arch`'s binutils); then
/// checks that only platform callbacks and the kernel's functions are left undefined and
/// that no panic machinery is in it.
fn link_core(
    arch: Arch,
    staticlib: &Path,
    roots: &[String],
    script: &Path,
    work_dir: &Path,
    object: &Path,
) -> Result<(), KmodError> {
    let listing =
        host_command::stdout_text(Command::new(arch.binutil("ar")).arg("t").arg(staticlib))?;
    let members: Vec<&str> = listing
        .lines()
        .filter(|m| m.starts_with(CORE_MEMBER_PREFIX))
        .collect();
    if members.is_empty() {
        return Err(KmodError::Missing {
            what: format!(
                "{} has no {CORE_MEMBER_PREFIX}* member",
                staticlib.display()
            ),
        });
    }
    let members_dir = work_dir.join("kcore-members");
    match fs::remove_dir_all(&members_dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            return Err(io_error(&members_dir)(err))
        }
        _ => {}
    }
    fs::create_dir_all(&members_dir).map_err(io_error(&members_dir))?;
    host_command::output(
        Command::new(arch.binutil("ar"))
            .current_dir(&members_dir)
            .arg("x")
            .arg(staticlib)
            .args(&members),
    )?;

    let mut link = Command::new(arch.binutil("ld"));
    link.args(["-r", "--gc-sections", "--strip-debug", "-T"])
        .arg(script)
        .arg("-o")
        .arg(object);
    for root in roots {
        link.arg("-u").arg(root);
    }
    link.args(members.iter().map(|m| members_dir.join(m)));
    host_command::output(&mut link)?;

    let symbols = host_command::stdout_text(Command::new(arch.binutil("nm")).arg(object))?;
    let stray = stray_undefined(&symbols, &arch.undefined_allowed());
    if !stray.is_empty() {
        return Err(KmodError::Missing {
            what: format!(
                "{} needs symbols neither the glue, kcore nor the kernel provide: {}",
                object.display(),
                stray.join(", ")
            ),
        });
    }
    let panics = panic_symbols(&symbols);
    if panics.is_empty() {
        Ok(())
    } else {
        Err(KmodError::Panics {
            object: object.to_owned(),
            symbols: panics,
        })
    }
}

/// The undefined symbols (`U`) of `nm` output that start with none of `allowed`.
fn stray_undefined(nm_output: &str, allowed: &[&str]) -> Vec<String> {
    nm_output
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            ["U", name] => Some(name),
            _ => None,
        })
        .filter(|name| !allowed.iter().any(|prefix| name.starts_with(prefix)))
        .map(str::to_owned)
        .collect()
}

/// The symbols of `nm` output whose names show panic machinery.
fn panic_symbols(nm_output: &str) -> Vec<String> {
    nm_output
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| PANIC_NAME_PARTS.iter().any(|part| name.contains(part)))
        .map(str::to_owned)
        .collect()
}

/// Copies `Kbuild`, `*.c` and `*.h` of the glue into `build_dir`; whether any changed.
fn copy_sources(source: &Path, build_dir: &Path) -> Result<bool, KmodError> {
    let mut changed = false;
    let entries = fs::read_dir(source).map_err(io_error(source))?;
    let mut copied = 0;
    for entry in entries {
        let path = entry.map_err(io_error(source))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == "Kbuild" || name.ends_with(".c") || name.ends_with(".h") {
            let bytes = fs::read(&path).map_err(io_error(&path))?;
            changed |= write_if_changed(&build_dir.join(name), &bytes)?;
            copied += 1;
        }
    }
    if copied == 0 {
        return Err(KmodError::Missing {
            what: format!("no Kbuild or C sources in {}", source.display()),
        });
    }
    Ok(changed)
}

/// Writes `bytes` to `path` unless it already holds exactly them (keeps mtimes for make).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, KmodError> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    fs::write(path, bytes).map_err(io_error(path))?;
    Ok(true)
}

/// `make -C <headers> ARCH=<arch> [CROSS_COMPILE=<prefix>] M=<build dir> modules`, in the
/// kernel's build root where it has one; both output streams, joined.
fn run_make(arch: Arch, kernel: &Kernel, build_dir: &Path) -> Result<String, KmodError> {
    let arch_arg = format!("ARCH={}", arch.kbuild_arch());
    let cross_arg = format!("CROSS_COMPILE={}", arch.tool_prefix());
    let mut args = vec![arch_arg.as_str()];
    if !arch.tool_prefix().is_empty() {
        args.push(cross_arg.as_str());
    }
    args.extend(["-j2", "modules"]);
    let headers = kernel.headers_dir();
    let mut command = match &kernel.build_root {
        Some(root) => build_root::make_in_root(root, &headers, build_dir, &args),
        None => {
            let mut command = Command::new("make");
            command
                .arg("-C")
                .arg(&headers)
                .arg(format!("M={}", build_dir.display()))
                .args(&args);
            command
        }
    };
    let output = host_command::capture(&mut command).map_err(|err| {
        KmodError::Command(CommandError {
            command: host_command::describe(&command),
            failure: host_command::CommandFailure::Spawn(err),
        })
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines
            .get(lines.len().saturating_sub(30)..)
            .unwrap_or_default();
        Err(KmodError::Make {
            command: host_command::describe(&command),
            output: tail.join("\n"),
        })
    }
}

/// The warnings of a Kbuild run, the compiler's, objtool's and modpost's: objtool's grouped
/// by message with a count and the first place it was seen (it repeats one message for every
/// function of the Rust object), the others as they are.
pub fn warnings(output: &str) -> Vec<String> {
    let mut grouped: Vec<(String, String, usize)> = Vec::new();
    let mut other = Vec::new();
    for line in output.lines() {
        if let Some((_, rest)) = line.split_once(OBJTOOL_WARNING) {
            let (place, message) = rest.split_once(": ").unwrap_or(("", rest));
            match grouped.iter_mut().find(|(m, _, _)| m == message) {
                Some((_, _, count)) => *count += 1,
                None => grouped.push((message.to_owned(), place.to_owned(), 1)),
            }
        } else if line.contains("warning:") || line.contains("WARNING:") {
            other.push(line.trim().to_owned());
        }
    }
    grouped
        .into_iter()
        .map(|(message, place, count)| {
            format!("{OBJTOOL_GROUP_PREFIX}{message} ({count}x, first at {place})")
        })
        .chain(other)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_are_the_declared_functions_only() {
        let header = "\
/* extmem_kcore_*  are implemented in Rust; see extmem_kcore_vm_init below. */
#define EXTMEM_KCORE_PLATFORM_PARAM 1
size_t extmem_kcore_vm_size(void);
int extmem_kcore_vm_bind(void *vm, const struct drm_extmem_vm_bind *args, u64 object,
\t\t\t u64 object_size, bool object_read_only);
int extmem_kcore_selftest(void *plat, void (*emit)(const char *line));
u64 extmem_plat_alloc_table(void *plat);
/* through extmem_kcore_check_*(), and extmem_kcore_vm_size () again */
";
        assert_eq!(
            entry_points(header),
            [
                "extmem_kcore_vm_size",
                "extmem_kcore_vm_bind",
                "extmem_kcore_selftest"
            ]
        );
    }

    #[test]
    fn the_real_header_declares_every_entry_point() -> Result<(), io::Error> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(KMOD_SOURCE)
            .join(BOUNDARY_HEADER);
        let names = entry_points(&fs::read_to_string(path)?);
        for expected in [
            "extmem_kcore_set_cpu_page_shift",
            "extmem_kcore_vm_size",
            "extmem_kcore_vm_align",
            "extmem_kcore_vm_init",
            "extmem_kcore_vm_fini",
            "extmem_kcore_get_param",
            "extmem_kcore_vm_bind",
            "extmem_kcore_exec",
            "extmem_kcore_selftest",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(names.iter().all(|n| n.starts_with("extmem_kcore_")));
        Ok(())
    }

    #[test]
    fn the_staticlib_comes_from_the_artifact_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"extmem_hw"},"filenames":["/t/libextmem_hw.rlib"]}
{"reason":"compiler-artifact","target":{"name":"extmem_kcore"},"filenames":["/t/x86_64-unknown-none/kernel/libextmem_kcore.a"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            staticlib_artifact(messages),
            Some(PathBuf::from(
                "/t/x86_64-unknown-none/kernel/libextmem_kcore.a"
            ))
        );
        assert_eq!(staticlib_artifact("{}"), None);
    }

    #[test]
    fn only_platform_callbacks_and_kernel_functions_may_stay_undefined() {
        let nm = "                 U extmem_plat_copy\n                 U memcpy\n                 U extmem_plat_fill\n\
                  U __x86_indirect_thunk_r11\n                 U __x86_return_thunk\n                 U __x86_thunk\n\
                  U strlen\n0000000000000000 T extmem_kcore_exec\n";
        let x86 = Arch::X86_64.undefined_allowed();
        let arm64 = Arch::Arm64.undefined_allowed();
        assert_eq!(stray_undefined(nm, &x86), ["__x86_thunk", "strlen"]);
        assert_eq!(
            stray_undefined(nm, &arm64),
            [
                "__x86_indirect_thunk_r11",
                "__x86_return_thunk",
                "__x86_thunk",
                "strlen"
            ]
        );
        assert!(stray_undefined("                 U extmem_plat_copy\n", &arm64).is_empty());
    }

    #[test]
    fn panic_machinery_is_found_by_its_symbols() {
        let nm = "0000000000000000 T extmem_kcore_exec\n\
                  0000000000000040 t _ZN4core9panicking5panic17h0123456789abcdefE\n\
                  0000000000000080 t _ZN4core3fmt5write17h0123456789abcdefE\n                 U memset\n";
        assert_eq!(
            panic_symbols(nm),
            [
                "_ZN4core9panicking5panic17h0123456789abcdefE",
                "_ZN4core3fmt5write17h0123456789abcdefE"
            ]
        );
        assert!(panic_symbols("0000000000000000 T extmem_kcore_vm_bind\n").is_empty());
    }

    #[test]
    fn arm64_kernel_configuration_is_matched_by_the_fragment() {
        let fragment = "# -Zbranch-protection=none in a comment\nrustflags = [\n    \"-Zbranch-protection=bti,pac-ret\",\n]\n";
        let debian = "CONFIG_ARM64_PTR_AUTH_KERNEL=y\n# CONFIG_ARM64_BTI_KERNEL is not set\n# CONFIG_SHADOW_CALL_STACK is not set\n";
        assert!(arm64_protection_gaps(debian, fragment).is_empty());
        let bti = "CONFIG_ARM64_BTI_KERNEL=y\nCONFIG_ARM64_PTR_AUTH_KERNEL=y\nCONFIG_SHADOW_CALL_STACK=y\n";
        assert_eq!(
            arm64_protection_gaps(bti, "\"-Zbranch-protection=pac-ret\","),
            [
                "CONFIG_ARM64_BTI_KERNEL=y needs -Zbranch-protection=bti",
                "CONFIG_SHADOW_CALL_STACK=y needs -Zfixed-x18 and -Zsanitizer=shadow-call-stack"
            ]
        );
        assert_eq!(
            arm64_protection_gaps(debian, "rustflags = []"),
            ["CONFIG_ARM64_PTR_AUTH_KERNEL=y needs -Zbranch-protection=pac-ret"]
        );
        // The real fragment covers Debian's arm64 configuration.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(KMOD_SOURCE)
            .join(Arch::Arm64.mitigations_config());
        let real = fs::read_to_string(path).unwrap_or_default();
        assert!(arm64_protection_gaps(debian, &real).is_empty());
        assert!(arm64_protection_gaps("CONFIG_ARM64_BTI_KERNEL=y\n", &real).is_empty());
    }

    #[test]
    fn vermagic_names_the_release_and_the_machine() {
        let arm64 = "6.12.95+deb12-arm64-16k SMP preempt mod_unload modversions aarch64";
        assert!(vermagic_matches(
            arm64,
            "6.12.95+deb12-arm64-16k",
            Arch::Arm64
        ));
        assert!(!vermagic_matches(arm64, "6.12.95+deb12-arm64", Arch::Arm64));
        assert!(!vermagic_matches(
            "6.12.95+deb12-arm64 SMP preempt mod_unload modversions",
            "6.12.95+deb12-arm64",
            Arch::Arm64
        ));
        let x86 = "6.12.95+deb12-amd64 SMP preempt mod_unload modversions ";
        assert!(vermagic_matches(x86, "6.12.95+deb12-amd64", Arch::X86_64));
        assert!(!vermagic_matches("", "6.12.95+deb12-amd64", Arch::X86_64));
    }

    #[test]
    fn the_mitigations_fragments_have_the_kernels_rust_flags_and_rebuild_core() {
        let cases: [(Arch, &[&str]); 2] = [
            (
                Arch::X86_64,
                &[
                    "-Zretpoline-external-thunk",
                    "-Zfunction-return=thunk-extern",
                    "-Zcf-protection=branch",
                    "-Zpatchable-function-entry=16,16",
                ],
            ),
            (Arch::Arm64, &["-Zbranch-protection=bti,pac-ret"]),
        ];
        for (arch, flags) in cases {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(KMOD_SOURCE)
                .join(arch.mitigations_config());
            let text = fs::read_to_string(&path).unwrap_or_default();
            // The settings, not the comments that explain them.
            let settings: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            for flag in flags {
                let quoted = format!("\"{flag}\",");
                assert!(
                    settings.contains(&quoted.as_str()),
                    "{flag} in {}",
                    path.display()
                );
            }
            let section = format!("[target.{}]", arch.rust_target());
            assert!(settings.contains(&section.as_str()), "{section}");
            assert!(settings.contains(&"build-std = [\"core\"]"));
        }
    }

    #[test]
    fn warnings_are_picked_from_kbuild_output() {
        let output = "  CC [M]  /b/extmem_vgpu_drv.o\n\
            /b/extmem_vgpu.o: warning: objtool: extmem_kcore_exec+0x1f: 'naked' return found in MITIGATION_RETHUNK build\n\
            /b/extmem_vgpu.o: warning: objtool: extmem_kcore_vm_init+0x5f: 'naked' return found in MITIGATION_RETHUNK build\n\
            /b/extmem_vgpu.o: warning: objtool: extmem_kcore_selftest+0xef: indirect call found in MITIGATION_RETPOLINE build\n\
            WARNING: modpost: missing MODULE_DESCRIPTION() in /b/extmem_vgpu.o\n  LD [M]  /b/extmem_vgpu.ko\n";
        assert_eq!(
            warnings(output),
            [
                "objtool: 'naked' return found in MITIGATION_RETHUNK build (2x, first at extmem_kcore_exec+0x1f)",
                "objtool: indirect call found in MITIGATION_RETPOLINE build (1x, first at extmem_kcore_selftest+0xef)",
                "WARNING: modpost: missing MODULE_DESCRIPTION() in /b/extmem_vgpu.o",
            ]
        );
    }
}
