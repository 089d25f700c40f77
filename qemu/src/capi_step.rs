//! The `capi` step of the suite: libextmem's C tests (`userspace/capi/tests/c/*.c`).
//!
//! It builds libextmem (`cargo build -p extmem-capi`, the static and shared library), writes
//! `extmem.pc` from `userspace/capi/extmem.pc.in` pointing at that build and the checked-in
//! header, then compiles each C test with the system `cc` under AddressSanitizer and
//! UndefinedBehaviorSanitizer, linked through `pkg-config --cflags --libs extmem` as a
//! driver's build would, runs it and turns its KTAP output into one check per result.
//! Then it builds the same tests as a meson project that takes libextmem as a subproject
//! (`tests/capi-meson`, `dependency('extmem')`, the static library) and runs
//! them again: the header, the pkg-config file, the shared and the static library and the
//! meson file are all what a driver would use.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::console_log::StepOutput;
use crate::guest_suite::ktap_checks;
use crate::host_checks::run_logged;
use crate::host_command;
use crate::report::{Check, Step};
use crate::workspace::Workspace;

/// The crate, relative to the workspace root.
pub const CAPI_DIR: &str = "userspace/capi";
/// The sanitizer flags every C test is built with: a report aborts the test.
const SANITIZE: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
];
/// Warnings are errors: the header must compile cleanly in a strict C build.
const CFLAGS: &[&str] = &["-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Werror"];

/// Builds libextmem, compiles and runs every C test, one check per KTAP result.
pub fn run(workspace: &Workspace) -> Step {
    let started = Instant::now();
    let mut step = Step::new("libextmem C tests (cc, ASan + UBSan, via pkg-config)");
    step.list_passes = true;
    if let Err(check) = run_all(workspace, &mut step) {
        step.checks.push(*check);
    }
    step.elapsed = started.elapsed();
    step
}

fn run_all(workspace: &Workspace, step: &mut Step) -> Result<(), Box<Check>> {
    let args = ["build", "-p", "extmem-capi", "--lib"];
    println!("suite: cargo {} …", args.join(" "));
    let build = run_logged(workspace, workspace.cargo().args(args), "capi-build")
        .map_err(|reason| Box::new(Check::fail("capi: cargo build -p extmem-capi", reason)))?;
    if !build.succeeded {
        return Err(Box::new(Check::fail(
            "capi: cargo build -p extmem-capi",
            format!("failed; see {}", build.log.display()),
        )));
    }
    let out_dir = workspace.output_dir().join("capi");
    let pc_dir = out_dir.join("pkgconfig");
    let pc = write_debug_pc(workspace, &pc_dir)
        .map_err(|reason| Box::new(Check::fail("capi: extmem.pc", reason)))?;
    step.notes.push(format!("pkg-config file {}", pc.display()));
    let flags = pkg_config(&pc_dir, &["--cflags", "--libs", "extmem"]).map_err(|reason| {
        Box::new(Check::fail(
            "capi: pkg-config --cflags --libs extmem",
            reason,
        ))
    })?;
    let libdir = pkg_config(&pc_dir, &["--variable=libdir", "extmem"])
        .map_err(|reason| Box::new(Check::fail("capi: pkg-config --variable=libdir", reason)))?;
    let tests_dir = workspace.root.join(CAPI_DIR).join("tests/c");
    let mut sources: Vec<PathBuf> = fs::read_dir(&tests_dir)
        .map_err(|e| {
            Box::new(Check::fail(
                "capi: C tests",
                format!("{}: {e}", tests_dir.display()),
            ))
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension() == Some(OsStr::new("c")))
        .collect();
    sources.sort();
    if sources.is_empty() {
        return Err(Box::new(Check::fail(
            "capi: C tests",
            format!("no *.c in {}", tests_dir.display()),
        )));
    }
    for source in sources {
        let name = source
            .file_stem()
            .map_or_else(|| "?".to_owned(), |s| s.to_string_lossy().into_owned());
        let binary = out_dir.join(&name);
        match compile(workspace, &source, &name, &flags, &libdir, &binary) {
            Ok(()) => step
                .checks
                .extend(run_ktap(workspace, &binary, &format!("capi: {name}"))),
            Err(check) => step.checks.push(*check),
        }
    }
    match meson_build(workspace, &out_dir.join("meson")) {
        Ok(binary) => step.checks.extend(run_ktap(
            workspace,
            &binary,
            "capi (meson, static): capi_test",
        )),
        Err(check) => step.checks.push(*check),
    }
    Ok(())
}

/// Sets up and builds `tests/capi-meson` in `build_dir` (from scratch) with libextmem from the
/// subproject, under the same sanitizers; returns the test binary.
fn meson_build(workspace: &Workspace, build_dir: &Path) -> Result<PathBuf, Box<Check>> {
    const NAME: &str = "capi (meson, static)";
    let source = workspace.root.join("tests/capi-meson");
    let _ = fs::remove_dir_all(build_dir);
    let mut setup = Command::new("meson");
    setup
        .arg("setup")
        .arg(build_dir)
        .arg(&source)
        .args([
            "--force-fallback-for=extmem",
            "-Dbuildtype=debug",
            "-Db_sanitize=address,undefined",
            "-Db_lundef=false",
        ])
        // Only the subproject may provide libextmem here, not an extmem.pc elsewhere.
        .env_remove("PKG_CONFIG_PATH");
    let mut compile = Command::new("meson");
    compile.arg("compile").arg("-C").arg(build_dir);
    for (command, log) in [
        (&mut setup, "capi-meson-setup"),
        (&mut compile, "capi-meson-compile"),
    ] {
        println!("suite: {} …", host_command::describe(command));
        let what = host_command::describe_briefly(command);
        match run_logged(workspace, command, log) {
            Ok(run) if run.succeeded => {}
            Ok(run) => {
                return Err(Box::new(Check::fail(
                    format!("{NAME}: {what}"),
                    format!("failed; see {}", run.log.display()),
                )))
            }
            Err(reason) => return Err(Box::new(Check::fail(format!("{NAME}: {what}"), reason))),
        }
    }
    Ok(build_dir.join("capi_test"))
}

/// `extmem.pc` for this build: the library in cargo's debug directory, the checked-in
/// header.
fn write_debug_pc(workspace: &Workspace, pc_dir: &Path) -> Result<PathBuf, String> {
    write_pc(
        workspace,
        &workspace.root,
        &workspace.target_dir.join("debug"),
        &workspace.root.join(CAPI_DIR).join("include"),
        pc_dir,
    )
}

/// `pc_dir/extmem.pc` from `userspace/capi/extmem.pc.in`, naming `prefix`, `libdir` and
/// `includedir`.
pub fn write_pc(
    workspace: &Workspace,
    prefix: &Path,
    libdir: &Path,
    includedir: &Path,
    pc_dir: &Path,
) -> Result<PathBuf, String> {
    let template_path = workspace.root.join(CAPI_DIR).join("extmem.pc.in");
    let template = fs::read_to_string(&template_path)
        .map_err(|e| format!("{}: {e}", template_path.display()))?;
    let text = template
        .replace("@prefix@", &prefix.to_string_lossy())
        .replace("@libdir@", &libdir.to_string_lossy())
        .replace("@includedir@", &includedir.to_string_lossy())
        .replace("@version@", env!("CARGO_PKG_VERSION"));
    let pc = pc_dir.join("extmem.pc");
    fs::create_dir_all(pc_dir)
        .and_then(|()| fs::write(&pc, text))
        .map_err(|e| format!("{}: {e}", pc.display()))?;
    Ok(pc)
}

/// `pkg-config <args>` with only our directory on its path, split into words.
fn pkg_config(pc_dir: &Path, args: &[&str]) -> Result<Vec<String>, String> {
    let mut command = Command::new("pkg-config");
    command.args(args).env("PKG_CONFIG_PATH", pc_dir);
    let text = host_command::stdout_text(&mut command).map_err(|e| e.to_string())?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

/// `cc` with the sanitizers and the flags pkg-config gave, the library found at run time
/// through an rpath to `libdir`.
fn compile(
    workspace: &Workspace,
    source: &Path,
    name: &str,
    flags: &[String],
    libdir: &[String],
    binary: &Path,
) -> Result<(), Box<Check>> {
    let check_name = format!("capi: {name}: cc");
    let mut cc = Command::new("cc");
    cc.args(CFLAGS)
        .args(SANITIZE)
        .arg(source)
        .args(flags)
        .args(libdir.iter().map(|dir| format!("-Wl,-rpath,{dir}")))
        .arg("-o")
        .arg(binary);
    println!("suite: {} …", host_command::describe(&cc));
    match run_logged(workspace, &mut cc, &format!("capi-cc-{name}")) {
        Ok(run) if run.succeeded => Ok(()),
        Ok(run) => Err(Box::new(Check::fail(
            check_name,
            format!(
                "{}\n(full output: {})",
                run.output.trim(),
                run.log.display()
            ),
        ))),
        Err(reason) => Err(Box::new(Check::fail(check_name, reason))),
    }
}

/// Runs a KTAP test binary: one check per result, and failures for a crash, a sanitizer
/// report (the binary then exits non-zero) or missing results.
fn run_ktap(workspace: &Workspace, binary: &Path, program: &str) -> Vec<Check> {
    let mut test = Command::new(binary);
    // Leak checking on, and a sanitizer report goes to stderr, which is kept in the log.
    test.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "print_stacktrace=1");
    println!("suite: {} …", binary.display());
    let output = match host_command::capture(&mut test) {
        Ok(output) => output,
        Err(e) => return vec![Check::fail(program, format!("{}: {e}", binary.display()))],
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stem: String = program
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let log = workspace
        .output_dir()
        .join("logs")
        .join(format!("{stem}.log"));
    let _ = fs::write(&log, &text);
    let step_output = StepOutput {
        kind: "ktap".to_owned(),
        name: program.to_owned(),
        lines: text.lines().map(str::to_owned).collect(),
        exit_code: output.status.code(),
    };
    let why = format!("killed by {} (log {})", output.status, log.display());
    ktap_checks(program, Some(&step_output), &why)
}
