//! Windows: the portable crates' tests built for `x86_64-pc-windows-gnu` with Debian's
//! mingw-w64 and run under Debian's Wine (wine64 8.0), through cargo's target runner.
//!
//! Wine 8.0 has no `bcryptprimitives.dll`, whose `ProcessPrng` every Rust program for
//! Windows imports (std takes its randomness from it since Rust 1.78), so no test
//! executable would even load. The runner builds a shim of that DLL from
//! `process_prng.c` (forwarding to `RtlGenRandom`) and puts it next to the executables,
//! where the Windows loader looks first.
//!
//! What runs: `extmem-hw`'s unit tests and page-table model tests, the unit tests of
//! `extmem-uapi`, `extmem-kcore` and `extmem` (the memory manager's Win32 rules; its fd
//! tests are Linux-only), `extmem-softgpu`'s unit tests and its `win32` and `win32_memory`
//! integration tests (section objects shared by NT handle, name and global-share token,
//! with a second process, and the memory manager's Win32 rules over them), and the ICD:
//! its unit tests and its own `tests/win32.rs`, which loads `extmem_icd.dll` and shares
//! memory with a second process through the Vulkan entry points. The other integration
//! tests check the Linux C header and the kernel object with Linux tools, which is not a
//! Windows question.

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::host_checks;
use crate::host_command;
use crate::report::{Check, Step};
use crate::workspace::Workspace;

/// The Rust target.
pub const TARGET: &str = "x86_64-pc-windows-gnu";
/// Wine's 64-bit loader as Debian's wine64 installs it (the `/usr/bin/wine` wrapper comes
/// with the separate `wine` package).
const WINE64: &str = "/usr/lib/wine/wine64";
/// mingw-w64's C compiler (gcc-mingw-w64-x86-64).
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";
/// cargo's target-runner variable for [`TARGET`].
const RUNNER_VARIABLE: &str = "CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER";

/// The `cargo test` arguments.
const TEST_ARGS: &[&str] = &[
    "test",
    "-p",
    "extmem-hw",
    "-p",
    "extmem-uapi",
    "-p",
    "extmem-kcore",
    "-p",
    "extmem",
    "-p",
    "extmem-softgpu",
    "-p",
    "extmem-icd",
    "--lib",
    "--test",
    "page_table_model",
    "--test",
    "win32",
    "--test",
    "win32_memory",
    "--target",
    TARGET,
    "--no-fail-fast",
];

/// Builds the shim and runs the tests under Wine; one step.
pub fn run_tests(workspace: &Workspace) -> Step {
    let started = Instant::now();
    let deps = workspace.target_dir.join(TARGET).join("debug").join("deps");
    let shim = workspace.root.join("qemu/src/process_prng.c");
    let mut step = match build_shim(&shim, &deps) {
        Ok(()) => {
            let prefix = workspace.output_dir().join("wine");
            let envs = [
                (RUNNER_VARIABLE, OsString::from(WINE64)),
                ("WINEPREFIX", prefix.into_os_string()),
                // Wine's own diagnostics (fixme:, err: about the missing desktop) are noise
                // here; a test's failure shows in its own output.
                ("WINEDEBUG", OsString::from("-all")),
            ];
            let mut step = host_checks::cargo_test(workspace, TEST_ARGS, &envs, "test-windows");
            step.checks.insert(
                0,
                Check::pass("ProcessPrng shim (bcryptprimitives.dll) builds"),
            );
            step
        }
        Err(reason) => {
            let mut step = Step::new("Windows tests (x86_64-pc-windows-gnu under Wine)");
            step.checks.push(Check::fail(
                "ProcessPrng shim (bcryptprimitives.dll) builds",
                reason,
            ));
            step
        }
    };
    step.elapsed = started.elapsed();
    step
}

/// Compiles `source` into `<deps>/bcryptprimitives.dll`.
fn build_shim(source: &Path, deps: &Path) -> Result<(), String> {
    for tool in [MINGW_GCC, WINE64] {
        if !host_command::on_path(tool) {
            return Err(format!(
                "{tool} is not installed (provisioning installs gcc-mingw-w64-x86-64 and wine64)"
            ));
        }
    }
    fs::create_dir_all(deps).map_err(|e| format!("{}: {e}", deps.display()))?;
    let dll = deps.join("bcryptprimitives.dll");
    let mut command = Command::new(MINGW_GCC);
    command
        .args(["-shared", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&dll)
        .arg(source)
        .arg("-ladvapi32");
    println!("suite: {} …", host_command::describe(&command));
    host_command::output(&mut command)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
