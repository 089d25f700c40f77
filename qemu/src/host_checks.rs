//! The host half of the suite: formatting, clippy, the API documentation, the workspace's tests
//! and the no_std builds, each run through cargo with its output kept in a log and read back
//! into checks.

use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::host_command;
use crate::report::{Check, Step, Tally};
use crate::workspace::Workspace;

/// Crates that must build without std, each for every target in [`NO_STD_TARGETS`].
pub const NO_STD_CRATES: &[&str] = &["extmem-hw", "extmem-uapi", "extmem-kcore"];
/// Targets the no_std crates are built for: bare-metal x86_64 and arm64 without FP/SIMD (the
/// two kernels' targets; the kernel's code model and mitigations come with the module build)
/// and a Cortex-M4F.
pub const NO_STD_TARGETS: &[&str] = &[
    "x86_64-unknown-none",
    "aarch64-unknown-none-softfloat",
    "thumbv7em-none-eabihf",
];

/// A finished cargo invocation.
pub struct CargoRun {
    /// Whether it exited 0.
    pub succeeded: bool,
    /// stdout and stderr, stdout first.
    pub output: String,
    /// Where both were saved.
    pub log: PathBuf,
}

/// Runs `cargo <args>` from the workspace root, capturing everything into
/// `<target>/extmem-qemu/logs/<log_name>.log`.
fn run_cargo(workspace: &Workspace, args: &[&str], log_name: &str) -> Result<CargoRun, String> {
    run_cargo_with(workspace, args, &[], log_name)
}

/// [`run_cargo`] with extra environment variables.
fn run_cargo_with(
    workspace: &Workspace,
    args: &[&str],
    envs: &[(&str, OsString)],
    log_name: &str,
) -> Result<CargoRun, String> {
    let mut command = workspace.cargo();
    command.args(args);
    command.envs(envs.iter().map(|(k, v)| (k, v)));
    println!("suite: {} …", describe_with_env(args, envs));
    run_logged(workspace, &mut command, log_name)
}

/// Runs `command` to completion, capturing everything into
/// `<target>/extmem-qemu/logs/<log_name>.log`.
pub fn run_logged(
    workspace: &Workspace,
    command: &mut Command,
    log_name: &str,
) -> Result<CargoRun, String> {
    let out = host_command::capture(command)
        .map_err(|e| format!("could not run `{}`: {e}", host_command::describe(command)))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = workspace.output_dir().join("logs");
    let log = logs.join(format!("{log_name}.log"));
    fs::create_dir_all(&logs)
        .and_then(|()| fs::write(&log, &output))
        .map_err(|e| format!("{}: {e}", log.display()))?;
    Ok(CargoRun {
        succeeded: out.status.success(),
        output,
        log,
    })
}

fn describe_args(args: &[&str]) -> String {
    host_command::describe(Command::new("cargo").args(args))
}

/// `NAME='value' cargo <args>`, the command line as a person would type it.
fn describe_with_env(args: &[&str], envs: &[(&str, OsString)]) -> String {
    let mut line = String::new();
    for (name, value) in envs {
        line.push_str(&format!("{name}={} ", host_command::quote(value)));
    }
    line.push_str(&describe_args(args));
    line
}

/// Runs one cargo command that is one check: passes when cargo exits 0; otherwise the reason
/// is picked from its output by `explain`.
fn single_check_step(
    workspace: &Workspace,
    args: &[&str],
    envs: &[(&str, OsString)],
    log_name: &str,
    explain: fn(&str) -> String,
) -> Step {
    let started = Instant::now();
    let title = describe_with_env(args, envs);
    let mut step = Step::new(title.clone());
    match run_cargo_with(workspace, args, envs, log_name) {
        Ok(run) if run.succeeded => step.checks.push(Check::pass(title)),
        Ok(run) => {
            step.checks.push(Check::fail(
                title,
                format!(
                    "{}\n(full output: {})",
                    explain(&run.output),
                    run.log.display()
                ),
            ));
        }
        Err(reason) => step.checks.push(Check::fail(title, reason)),
    }
    step.elapsed = started.elapsed();
    step
}

/// `cargo fmt --all -- --check`.
pub fn fmt(workspace: &Workspace) -> Step {
    single_check_step(
        workspace,
        &["fmt", "--all", "--", "--check"],
        &[],
        "fmt",
        |output| {
            let files: Vec<&str> = output
                .lines()
                .filter(|l| l.starts_with("Diff in "))
                .take(10)
                .collect();
            if files.is_empty() {
                last_lines(output, 15)
            } else {
                format!(
                    "not formatted (run `cargo fmt --all`):\n{}",
                    files.join("\n")
                )
            }
        },
    )
}

/// `cargo clippy --workspace --all-targets -- -D warnings`.
pub fn clippy(workspace: &Workspace) -> Step {
    single_check_step(
        workspace,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
        "clippy",
        compiler_errors,
    )
}

/// `cargo clippy` of the crates that build for Windows, for the Windows target: the
/// `cfg(windows)` code is invisible to the host's clippy.
pub fn clippy_windows(workspace: &Workspace) -> Step {
    single_check_step(
        workspace,
        &[
            "clippy",
            "-p",
            "extmem",
            "-p",
            "extmem-softgpu",
            "-p",
            "extmem-icd",
            "--all-targets",
            "--target",
            crate::windows_tests::TARGET,
            "--",
            "-D",
            "warnings",
        ],
        &[],
        "clippy-windows",
        compiler_errors,
    )
}

/// `RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps --keep-going`: a broken or
/// private intra-doc link, or a malformed doc comment, fails the suite instead of going
/// unnoticed. `--keep-going` so one crate's error does not hide the next crate's.
pub fn doc(workspace: &Workspace) -> Step {
    single_check_step(
        workspace,
        &["doc", "--workspace", "--no-deps", "--keep-going"],
        &[("RUSTDOCFLAGS", OsString::from("-D warnings"))],
        "doc",
        compiler_errors,
    )
}

/// The no_std builds, one check per (crate, target).
pub fn no_std_builds(workspace: &Workspace) -> Step {
    let started = Instant::now();
    let mut step = Step::new("no_std builds");
    for krate in NO_STD_CRATES {
        for target in NO_STD_TARGETS {
            let args = ["build", "-p", krate, "--target", target];
            let name = format!("{krate} builds for {target}");
            let check = match run_cargo(workspace, &args, &format!("build-{krate}-{target}")) {
                Ok(run) if run.succeeded => Check::pass(name),
                Ok(run) => Check::fail(
                    name,
                    format!(
                        "{}\n(full output: {})",
                        compiler_errors(&run.output),
                        run.log.display()
                    ),
                ),
                Err(reason) => Check::fail(name, reason),
            };
            step.checks.push(check);
        }
    }
    step.elapsed = started.elapsed();
    step
}

/// `cargo test --workspace --no-fail-fast` (no-fail-fast so a failing crate does not hide the
/// counts of the crates after it), counted from its `test result:` lines.
pub fn tests(workspace: &Workspace) -> Step {
    cargo_test(
        workspace,
        &["test", "--workspace", "--no-fail-fast"],
        &[],
        "test",
    )
}

/// One `cargo test` invocation (`args` start with `test`) as a step, counted from its
/// `test result:` lines; a failed test is a failed check with its panic output.
pub fn cargo_test(
    workspace: &Workspace,
    args: &[&str],
    envs: &[(&str, OsString)],
    log_name: &str,
) -> Step {
    let started = Instant::now();
    let mut step = Step::new(describe_args(args));
    match run_cargo_with(workspace, args, envs, log_name) {
        Ok(run) => {
            let summary = TestOutput::parse(&run.output);
            step.bulk = Tally {
                passed: summary.passed,
                failed: summary.failed.saturating_sub(count(summary.failures.len())),
                skipped: summary.ignored,
            };
            for (name, reason) in &summary.failures {
                step.checks.push(Check::fail(name.clone(), reason.clone()));
            }
            if summary.result_lines == 0 {
                step.checks.push(Check::fail(
                    "cargo test",
                    format!(
                        "ran no test binary (did the build fail?):\n{}",
                        compiler_errors(&run.output)
                    ),
                ));
            } else if !run.succeeded && summary.failed == 0 {
                step.checks.push(Check::fail(
                    "cargo test",
                    format!("exited unsuccessfully:\n{}", last_lines(&run.output, 15)),
                ));
            }
            step.notes.push(format!("log: {}", run.log.display()));
        }
        Err(reason) => step.checks.push(Check::fail("cargo test", reason)),
    }
    step.elapsed = started.elapsed();
    step
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// What `cargo test` printed, summed over all test binaries and doc-tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestOutput {
    /// Tests passed.
    pub passed: u64,
    /// Tests failed.
    pub failed: u64,
    /// Tests ignored (not run).
    pub ignored: u64,
    /// `test result:` lines seen (one per test binary).
    pub result_lines: usize,
    /// Failed tests by name, with the panic output the harness printed for each.
    pub failures: Vec<(String, String)>,
}

impl TestOutput {
    /// Sums the `test result:` lines of `output` and collects its failures.
    pub fn parse(output: &str) -> Self {
        let mut summary = Self::default();
        for line in output.lines() {
            if let Some(rest) = line.strip_prefix("test result: ") {
                summary.result_lines += 1;
                for part in rest.split(';') {
                    let words: Vec<&str> = part.split_whitespace().collect();
                    // "ok. 12 passed" / "FAILED. 3 passed" / " 1 failed" / " 2 ignored"
                    let (number, label) = match words.as_slice() {
                        [_, number, label] | [number, label] => (number, label),
                        _ => continue,
                    };
                    let Ok(number) = number.parse::<u64>() else {
                        continue;
                    };
                    match *label {
                        "passed" => summary.passed += number,
                        "failed" => summary.failed += number,
                        "ignored" => summary.ignored += number,
                        _ => {}
                    }
                }
            } else if let Some(name) = line
                .strip_prefix("test ")
                .and_then(|l| l.strip_suffix(" ... FAILED"))
            {
                let reason = panic_output(output, name);
                summary.failures.push((name.to_owned(), reason));
            }
        }
        summary
    }
}

/// The `---- <name> stdout ----` block the test harness prints for a failed test.
fn panic_output(output: &str, name: &str) -> String {
    let header = format!("---- {name} stdout ----");
    let block: Vec<&str> = output
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with("---- ") && *l != "failures:")
        .filter(|l| !l.trim().is_empty())
        .take(12)
        .collect();
    if block.is_empty() {
        "failed (no output captured)".to_owned()
    } else {
        block.join("\n")
    }
}

/// The compiler's error messages (with their location line) from cargo output.
pub fn compiler_errors(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let mut picked = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.starts_with("error") || line.starts_with("warning:") {
            if line.starts_with("warning: build failed") || line.contains("generated") {
                continue;
            }
            picked.push(*line);
            if let Some(location) = lines
                .get(index + 1)
                .filter(|l| l.trim_start().starts_with("-->"))
            {
                picked.push(location);
            }
        }
        if picked.len() >= 20 {
            break;
        }
    }
    if picked.is_empty() {
        last_lines(output, 15)
    } else {
        picked.join("\n")
    }
}

/// The last `n` lines of `output`.
pub fn last_lines(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines.get(start..).unwrap_or(&[]).join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
running 3 tests
test a::one ... ok
test a::two ... FAILED
test a::three ... ignored

failures:

---- a::two stdout ----

thread 'a::two' panicked at hw/src/lib.rs:10:5:
assertion `left == right` failed
  left: 1
 right: 2

failures:
    a::two

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

running 2 tests
test b ... ok
test c ... ok

test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests extmem_hw

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";

    #[test]
    fn counts_come_from_result_lines_and_failures_carry_their_panic() {
        let summary = TestOutput::parse(OUTPUT);
        assert_eq!(
            (
                summary.passed,
                summary.failed,
                summary.ignored,
                summary.result_lines
            ),
            (3, 1, 1, 3)
        );
        assert_eq!(summary.failures.len(), 1);
        let (name, reason) = &summary.failures[0];
        assert_eq!(name, "a::two");
        assert!(
            reason.starts_with("thread 'a::two' panicked at hw/src/lib.rs:10:5:"),
            "{reason}"
        );
        assert!(reason.ends_with(" right: 2"), "{reason}");
    }

    #[test]
    fn commands_with_variables_read_as_typed() {
        assert_eq!(
            describe_with_env(
                &["doc", "--workspace", "--no-deps"],
                &[("RUSTDOCFLAGS", OsString::from("-D warnings"))]
            ),
            "RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps"
        );
        assert_eq!(describe_with_env(&["fmt"], &[]), "cargo fmt");
    }

    #[test]
    fn compiler_errors_keep_locations() {
        let output =
            "   Compiling x\nerror[E0425]: cannot find value `y`\n  --> hw/src/lib.rs:3:5\n   |\n\
                      warning: unused import\n  --> a.rs:1:1\nerror: could not compile `x`\n";
        assert_eq!(
            compiler_errors(output),
            "error[E0425]: cannot find value `y`\n  --> hw/src/lib.rs:3:5\nwarning: unused import\n  \
             --> a.rs:1:1\nerror: could not compile `x`"
        );
    }
}
