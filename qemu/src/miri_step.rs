//! The Miri step: the unit tests of the crates whose code is pure logic or runs against a
//! fake (hw, kcore on its fake platform, core's parsing, tables and allocator) under Miri,
//! which reports undefined behaviour that a normal test run cannot see.
//!
//! Tests that need real syscalls (memfds, mmap, procfs) are `#[cfg_attr(miri, ignore)]` in
//! their crates; the step counts them as skipped, never as passed. Under `cfg(miri)` the
//! heavier tests shrink their sizes and case counts so each crate takes about a minute.

use std::process::Command;
use std::time::Instant;

use crate::host_checks::{self, compiler_errors, TestOutput};
use crate::host_command;
use crate::report::{self, Check, Step, Tally};
use crate::rust_tools;
use crate::workspace::Workspace;

/// Components Miri needs on the nightly toolchain.
const COMPONENTS: &[&str] = &["miri", "rust-src"];

/// One crate's Miri run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiriCrate {
    /// The package.
    pub krate: &'static str,
    /// Its test targets.
    pub targets: &'static [&'static str],
    /// `MIRIFLAGS`.
    pub flags: &'static str,
}

/// Isolation off everywhere: proptest reads its regression files and seeds from the OS.
/// Stacked Borrows off for hw and kcore, whose test builds contain no `unsafe` of their
/// own (hw forbids it; kcore's one unsafe module, the C ABI, is not built without the
/// `kernel` feature), so there is no aliasing of ours to check and the check triples the
/// time; core keeps it, for its pNext walk and ioctl wrappers.
pub const CRATES: &[MiriCrate] = &[
    // Not hw's model-based property tests: each step walks and compares every mapping, so
    // even two cases take Miri over eight minutes. They run natively in cargo test, and the
    // page_table fuzz target checks the same model far longer.
    MiriCrate {
        krate: "extmem-hw",
        targets: &["--lib"],
        flags: "-Zmiri-disable-isolation -Zmiri-disable-stacked-borrows",
    },
    MiriCrate {
        krate: "extmem-kcore",
        targets: &["--lib"],
        flags: "-Zmiri-disable-isolation -Zmiri-disable-stacked-borrows",
    },
    MiriCrate {
        krate: "extmem",
        targets: &["--lib"],
        flags: "-Zmiri-disable-isolation",
    },
];

/// Runs every crate of [`CRATES`] under Miri; the step counts their tests.
pub fn run(workspace: &Workspace) -> Step {
    let started = Instant::now();
    let mut step = Step::new("Miri (nightly): hw, kcore, core");
    if let Err(e) = rust_tools::ensure_nightly(COMPONENTS) {
        step.checks.push(Check::fail("miri: nightly toolchain", e));
        step.elapsed = started.elapsed();
        return step;
    }
    for miri_crate in CRATES {
        let krate = miri_crate.krate;
        let crate_started = Instant::now();
        let mut command = miri_test(workspace, miri_crate);
        println!("suite: {} …", host_command::describe(&command));
        let log_name = format!("miri-{krate}");
        match host_checks::run_logged(workspace, &mut command, &log_name) {
            Ok(run) => {
                let (tally, checks) = judge(krate, &run.output, run.succeeded);
                step.bulk.add(tally);
                step.checks.extend(checks);
                step.notes.push(format!(
                    "{krate}: {} passed, {} failed, {} ignored under Miri ({})",
                    tally.passed,
                    tally.failed,
                    tally.skipped,
                    report::seconds(crate_started.elapsed())
                ));
            }
            Err(e) => step.checks.push(Check::fail(format!("miri: {krate}"), e)),
        }
    }
    step.notes.push(format!(
        "logs: {}",
        workspace.output_dir().join("logs").display()
    ));
    step.elapsed = started.elapsed();
    step
}

/// `MIRIFLAGS=<flags> cargo +<NIGHTLY> miri test -p <krate> <targets>`, in a target directory
/// named after the nightly: Miri's sysroot and dependencies built by another nightly fail to
/// load ("can't find crate"), so a toolchain change must not reuse them.
fn miri_test(workspace: &Workspace, miri_crate: &MiriCrate) -> Command {
    let mut command = rust_tools::nightly_cargo(workspace);
    command
        .env(
            "CARGO_TARGET_DIR",
            workspace
                .target_dir
                .join(format!("miri-{}", rust_tools::NIGHTLY)),
        )
        .env("MIRIFLAGS", miri_crate.flags)
        .args(["miri", "test", "--no-fail-fast", "-p", miri_crate.krate])
        .args(miri_crate.targets);
    command
}

/// The counts of one crate's run (ignored tests as skipped) and a failed check for each failed
/// test, or for a run that reported no test at all.
fn judge(krate: &str, output: &str, succeeded: bool) -> (Tally, Vec<Check>) {
    let summary = TestOutput::parse(output);
    let mut checks: Vec<Check> = summary
        .failures
        .iter()
        .map(|(name, reason)| Check::fail(format!("miri: {krate}: {name}"), reason.clone()))
        .collect();
    let named = u64::try_from(checks.len()).unwrap_or(u64::MAX);
    let tally = Tally {
        passed: summary.passed,
        failed: summary.failed.saturating_sub(named),
        skipped: summary.ignored,
    };
    if summary.result_lines == 0 {
        checks.push(Check::fail(
            format!("miri: {krate}"),
            format!("ran no test:\n{}", compiler_errors(output)),
        ));
    } else if !succeeded && summary.failed == 0 {
        checks.push(Check::fail(
            format!("miri: {krate}"),
            format!(
                "exited unsuccessfully (undefined behaviour aborts the test binary):\n{}",
                ub_report(output)
            ),
        ));
    }
    (tally, checks)
}

/// Miri's `error: Undefined Behavior` block, or the end of the output.
fn ub_report(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .skip_while(|l| !l.starts_with("error: "))
        .take(20)
        .collect();
    if lines.is_empty() {
        host_checks::last_lines(output, 20)
    } else {
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Verdict;

    #[test]
    fn ignored_tests_count_as_skipped_not_passed() {
        let output = "running 3 tests\ntest a ... ok\ntest b ... ignored\ntest c ... ok\n\n\
                      test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n";
        let (tally, checks) = judge("extmem", output, true);
        assert_eq!(
            tally,
            Tally {
                passed: 2,
                failed: 0,
                skipped: 1
            }
        );
        assert!(checks.is_empty());
    }

    #[test]
    fn undefined_behaviour_that_aborts_the_binary_is_a_failure() {
        let output = "running 2 tests\ntest a ... ok\n\
                      error: Undefined Behavior: out-of-bounds pointer use\n  --> src/lib.rs:3:5\n\
                      test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let (_, checks) = judge("extmem-hw", output, false);
        let [check] = checks.as_slice() else {
            panic!("{checks:?}");
        };
        let Verdict::Fail(reason) = &check.verdict else {
            panic!("{check:?}");
        };
        assert!(
            reason.contains("Undefined Behavior: out-of-bounds"),
            "{reason}"
        );
        let (_, checks) = judge("extmem-hw", "error: could not compile\n", false);
        assert_eq!(checks.len(), 1);
    }
}
