//! Building `extmem_vgpu.ko`, the extmem-vgpu kernel module, for the guest kernel.
//!
//! 1. The Rust core as a staticlib for `x86_64-unknown-none`, with the pinned nightly
//!    (`rust_tools::NIGHTLY`, which the `-Z` mitigation flags need):
//!    `cargo --config kernel-shim/kmod/kcore-mitigations.toml rustc -p extmem-kcore --profile
//!    kernel --target x86_64-unknown-none --features kernel --crate-type staticlib` (the
//!    stable code-generation flags for that target live in `.cargo/config.toml`, the
//!    retpoline, return-thunk, IBT and padding flags and the rebuild of `core` in that
//!    fragment, the `kernel` profile in the workspace manifest).
//! 2. One relocatable object from it: the archive's `extmem_kcore-*` members (the LTO unit;
//!    nothing of `compiler_builtins`), partially linked with `ld -r --gc-sections
//!    --strip-debug -T extmem_kcore.lds` and the `extmem_kcore_*` entry points `extmem_kcore.h`
//!    declares as roots, so the module holds only what they reach; the same recipe as
//!    `kernel-shim/core/tests/no_panic.rs`. Its undefined symbols must all be `extmem_plat_*`
//!    or the kernel's retpoline and return thunks.
//! 3. The build directory `<target>/kmod/build`: the C glue and headers of `kernel-shim/kmod`,
//!    the object as `extmem_kcore.o_shipped` and a `.extmem_kcore.o.cmd` beside it (modpost
//!    reads the `.cmd` file of every object of a module, for symbol versions).
//! 4. `make -C /usr/src/linux-headers-<version> M=<build dir> modules` (chrooted into the
//!    build root for kernels whose tools bookworm cannot run, `build_root.rs`), its output kept in
//!    `<target>/kmod/make.log`. Any objtool warning fails the build: objtool checks the
//!    module as one object, and a warning there is code without the kernel's mitigations.
//!    Otherwise the module is copied to `<target>/kmod/extmem_vgpu.ko`, where the guest
//!    plan's `insmod` finds it.
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
/// The bare-metal target the core is built for.
const CORE_TARGET: &str = "x86_64-unknown-none";
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
/// The cargo configuration fragment (in `kernel-shim/kmod`) with the nightly-only
/// mitigation flags.
const MITIGATIONS_CONFIG: &str = "kcore-mitigations.toml";
/// The nightly component the rebuild of `core` (`build-std`) needs.
pub const RUST_SOURCE_COMPONENT: &str = "rust-src";
/// What the core may leave undefined: the glue's platform callbacks, and the thunks the
/// kernel exports for retpolines (`__x86_indirect_thunk_<reg>`) and return thunks.
const UNDEFINED_ALLOWED_PREFIXES: &[&str] = &[
    "extmem_plat_",
    "__x86_indirect_thunk_",
    "__x86_return_thunk",
];
/// How objtool starts a warning line (`<object>: warning: objtool: <place>: <message>`).
const OBJTOOL_WARNING: &str = "warning: objtool: ";
/// How [`warnings`] names a grouped objtool warning.
const OBJTOOL_GROUP_PREFIX: &str = "objtool: ";
/// The module's name, as Kbuild names the `.ko`.
pub const MODULE_FILE: &str = "extmem_vgpu.ko";

/// What a successful build produced.
#[derive(Debug, Clone)]
pub struct BuiltModule {
    /// The module, at `<target>/kmod/extmem_vgpu.ko`.
    pub module: PathBuf,
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

/// Builds the module for `kernel`. A stale module is removed first, so a failed build never
/// leaves an old `.ko` for the guest to load.
pub fn build(workspace: &Workspace, kernel: &Kernel) -> Result<BuiltModule, KmodError> {
    let out_dir = kmod_dir(workspace);
    let build_dir = out_dir.join("build");
    let module = out_dir.join(MODULE_FILE);
    fs::create_dir_all(&build_dir).map_err(io_error(&build_dir))?;
    match fs::remove_file(&module) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(io_error(&module)(err)),
        _ => {}
    }
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

    let staticlib = build_core(workspace, &source.join(MITIGATIONS_CONFIG))?;
    let object = out_dir.join("extmem_kcore.o");
    link_core(
        &staticlib,
        &roots,
        &source.join(LINKER_SCRIPT),
        &out_dir,
        &object,
    )?;

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
        println!("guest: extmem_vgpu.ko sources changed, rebuilding");
    }

    let output = run_make(kernel, &build_dir)?;
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
    fs::copy(&built, &module).map_err(io_error(&built))?;
    Ok(BuiltModule { module, warnings })
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
fn build_core(workspace: &Workspace, mitigations: &Path) -> Result<PathBuf, KmodError> {
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
        CORE_TARGET,
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
/// with `script`, rooted at the entry points, into `object`; then checks that only platform
/// callbacks are left undefined.
fn link_core(
    staticlib: &Path,
    roots: &[String],
    script: &Path,
    work_dir: &Path,
    object: &Path,
) -> Result<(), KmodError> {
    let listing = host_command::stdout_text(Command::new("ar").arg("t").arg(staticlib))?;
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
        Command::new("ar")
            .current_dir(&members_dir)
            .arg("x")
            .arg(staticlib)
            .args(&members),
    )?;

    let mut link = Command::new("ld");
    link.args(["-r", "--gc-sections", "--strip-debug", "-T"])
        .arg(script)
        .arg("-o")
        .arg(object);
    for root in roots {
        link.arg("-u").arg(root);
    }
    link.args(members.iter().map(|m| members_dir.join(m)));
    host_command::output(&mut link)?;

    let undefined = host_command::stdout_text(Command::new("nm").arg("-u").arg(object))?;
    let stray = stray_undefined(&undefined);
    if stray.is_empty() {
        Ok(())
    } else {
        Err(KmodError::Missing {
            what: format!(
                "{} needs symbols neither the glue, kcore nor the kernel's thunks provide: {}",
                object.display(),
                stray.join(", ")
            ),
        })
    }
}

/// The undefined symbols of `nm -u` output that are neither platform callbacks nor the
/// kernel's thunks.
fn stray_undefined(nm_output: &str) -> Vec<String> {
    nm_output
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| {
            !UNDEFINED_ALLOWED_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
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

/// `make -C <headers> M=<build dir> modules`, in the kernel's build root where it has one;
/// both output streams, joined.
fn run_make(kernel: &Kernel, build_dir: &Path) -> Result<String, KmodError> {
    const ARGS: [&str; 2] = ["-j2", "modules"];
    let headers = kernel.headers_dir();
    let mut command = match &kernel.build_root {
        Some(root) => build_root::make_in_root(root, &headers, build_dir, &ARGS),
        None => {
            let mut command = Command::new("make");
            command
                .arg("-C")
                .arg(&headers)
                .arg(format!("M={}", build_dir.display()))
                .args(ARGS);
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
    fn only_platform_callbacks_may_stay_undefined() {
        let nm = "                 U extmem_plat_copy\n                 U memcpy\n                 U extmem_plat_fill\n\
                  U __x86_indirect_thunk_r11\n                 U __x86_return_thunk\n                 U __x86_thunk\n";
        assert_eq!(stray_undefined(nm), ["memcpy", "__x86_thunk"]);
        assert!(stray_undefined("                 U extmem_plat_copy\n").is_empty());
    }

    #[test]
    fn the_mitigations_fragment_has_the_kernels_rust_flags_and_rebuilds_core() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(KMOD_SOURCE)
            .join(MITIGATIONS_CONFIG);
        let text = fs::read_to_string(&path).unwrap_or_default();
        // The settings, not the comments that explain them.
        let settings: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        for flag in [
            "-Zretpoline-external-thunk",
            "-Zfunction-return=thunk-extern",
            "-Zcf-protection=branch",
            "-Zpatchable-function-entry=16,16",
        ] {
            let quoted = format!("\"{flag}\",");
            assert!(
                settings.contains(&quoted.as_str()),
                "{flag} in {}",
                path.display()
            );
        }
        assert!(settings.contains(&"[target.x86_64-unknown-none]"));
        assert!(settings.contains(&"build-std = [\"core\"]"));
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
