//! The fuzz step: the libFuzzer targets of `tests/fuzz` (cargo-fuzz, nightly, AddressSanitizer),
//! each run for a fixed time, one at a time, and reported as a check with its exec count.
//!
//! The suite runs each target briefly ([`SUITE_SECONDS`]) from the checked-in seeds
//! (`tests/fuzz/seeds/<target>`, written by `tests/fuzz/src/bin/seeds.rs` from the unit tests'
//! vectors) and an emptied scratch corpus, so its time does not grow with what earlier runs
//! found (libFuzzer replays a whole corpus before its time limit applies). `cargo fuzz-long`
//! runs them for longer ([`LONG_SECONDS`] each unless `--seconds` says otherwise) from the
//! kept corpus (`tests/fuzz/corpus/<target>`, not in git) and the seeds. A crash fails the check with the panic
//! message, the saved input and the command that replays it.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::host_checks::{self, compiler_errors, last_lines};
use crate::host_command;
use crate::report::{self, Check, Step};
use crate::rust_tools::{self, CARGO_FUZZ};
use crate::workspace::Workspace;

/// The fuzz crate, relative to the workspace root.
pub const FUZZ_DIR: &str = "tests/fuzz";
/// Its targets (`fuzz_targets/<name>.rs`).
pub const TARGETS: &[&str] = &["alloc_info", "kcore_ioctls", "page_table"];
/// Seconds per target in `cargo suite`.
pub const SUITE_SECONDS: u64 = 15;
/// Seconds per target in `cargo fuzz-long` by default.
pub const LONG_SECONDS: u64 = 600;
/// libFuzzer's per-input limit: an input that takes longer is a hang, and a failure.
const INPUT_TIMEOUT_SECONDS: u64 = 20;
/// libFuzzer's memory limit; the targets need a few hundred MiB.
const RSS_LIMIT_MB: u64 = 4096;

/// Where a run keeps the inputs it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corpus {
    /// `tests/fuzz/corpus/<target>`, kept between runs.
    Kept,
    /// `<target dir>/extmem-qemu/fuzz-scratch/<target>`, emptied before the run.
    Scratch,
}

/// Builds the fuzz targets and runs each of `targets` for `seconds`.
pub fn run(
    workspace: &Workspace,
    targets: &[&str],
    seconds: u64,
    corpus: Corpus,
    title: &str,
) -> Step {
    let started = Instant::now();
    let mut step = Step::new(title);
    step.list_passes = true;
    match prepare(workspace) {
        Ok(build_time) => step
            .notes
            .push(format!("built in {}", report::seconds(build_time))),
        Err(check) => {
            step.checks.push(check);
            step.elapsed = started.elapsed();
            return step;
        }
    }
    for target in targets {
        step.checks
            .push(run_target(workspace, target, seconds, corpus));
    }
    step.notes.push(format!(
        "seeds: {FUZZ_DIR}/seeds/<target>, logs: {}",
        workspace.output_dir().join("logs").display()
    ));
    step.elapsed = started.elapsed();
    step
}

/// Nightly, cargo-fuzz and the build of every target; a failed check if any is missing.
fn prepare(workspace: &Workspace) -> Result<Duration, Check> {
    rust_tools::ensure_nightly(&[]).map_err(|e| Check::fail("fuzz: nightly toolchain", e))?;
    rust_tools::ensure_installed(workspace, CARGO_FUZZ)
        .map_err(|e| Check::fail("fuzz: cargo-fuzz", e))?;
    let started = Instant::now();
    let mut build = cargo_fuzz(workspace);
    build.args(["build", "--fuzz-dir", FUZZ_DIR]);
    println!("suite: {} …", host_command::describe(&build));
    let run = host_checks::run_logged(workspace, &mut build, "fuzz-build")
        .map_err(|e| Check::fail("fuzz: build", e))?;
    if !run.succeeded {
        return Err(Check::fail(
            "fuzz: build",
            format!(
                "{}\n(full output: {})",
                compiler_errors(&run.output),
                run.log.display()
            ),
        ));
    }
    Ok(started.elapsed())
}

/// `rustup run <NIGHTLY> cargo fuzz`, with the tool cache on PATH so cargo finds cargo-fuzz.
fn cargo_fuzz(workspace: &Workspace) -> Command {
    let mut command = rust_tools::nightly_cargo(workspace);
    let tools = rust_tools::tools_root().join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(tools).chain(std::env::split_paths(&path));
    if let Ok(joined) = std::env::join_paths(paths) {
        command.env("PATH", joined);
    }
    command.arg("fuzz");
    command
}

fn run_target(workspace: &Workspace, target: &str, seconds: u64, kind: Corpus) -> Check {
    let corpus = match kind {
        Corpus::Kept => workspace.root.join(FUZZ_DIR).join("corpus").join(target),
        Corpus::Scratch => workspace.output_dir().join("fuzz-scratch").join(target),
    };
    let seeds = format!("{FUZZ_DIR}/seeds/{target}");
    if kind == Corpus::Scratch && corpus.exists() {
        if let Err(e) = fs::remove_dir_all(&corpus) {
            return Check::fail(
                format!("fuzz: {target}"),
                format!("{}: {e}", corpus.display()),
            );
        }
    }
    if let Err(e) = fs::create_dir_all(&corpus) {
        return Check::fail(
            format!("fuzz: {target}"),
            format!("{}: {e}", corpus.display()),
        );
    }
    let mut command = cargo_fuzz(workspace);
    command
        .args(["run", "--fuzz-dir", FUZZ_DIR, target])
        .arg(&corpus)
        .args([&seeds, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1");
    println!("suite: {} …", host_command::describe(&command));
    let started = Instant::now();
    let run = match host_checks::run_logged(workspace, &mut command, &format!("fuzz-{target}")) {
        Ok(run) => run,
        Err(e) => return Check::fail(format!("fuzz: {target}"), e),
    };
    let elapsed = started.elapsed();
    let corpus_size = count_files(&corpus);
    judge(
        target,
        &run.output,
        run.succeeded,
        elapsed,
        corpus_size,
        &run.log,
    )
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |entries| entries.count())
}

/// What one libFuzzer run printed at its end.
#[derive(Debug, Default, PartialEq, Eq)]
struct FuzzStats {
    /// `stat::number_of_executed_units`.
    execs: Option<u64>,
    /// `stat::average_exec_per_sec`.
    execs_per_second: Option<u64>,
    /// `stat::peak_rss_mb`.
    peak_rss_mb: Option<u64>,
    /// Coverage counters (`cov:`) and features (`ft:`) of the last status line.
    coverage: Option<(u64, u64)>,
}

impl FuzzStats {
    fn parse(output: &str) -> Self {
        let stat = |name: &str| {
            output.lines().find_map(|line| {
                line.strip_prefix(name)?
                    .trim_start_matches(':')
                    .trim()
                    .parse()
                    .ok()
            })
        };
        Self {
            execs: stat("stat::number_of_executed_units"),
            execs_per_second: stat("stat::average_exec_per_sec"),
            peak_rss_mb: stat("stat::peak_rss_mb"),
            coverage: output.lines().rev().find_map(coverage),
        }
    }
}

/// `(cov, ft)` of a libFuzzer status line (`#123\tNEW    cov: 900 ft: 1200 corp: …`).
fn coverage(line: &str) -> Option<(u64, u64)> {
    let mut words = line.strip_prefix('#')?.split_whitespace();
    let mut value = |name: &str| -> Option<u64> {
        words.find(|w| *w == name)?;
        words.next()?.parse().ok()
    };
    Some((value("cov:")?, value("ft:")?))
}

/// The check for one run: passed when it exited 0 after executing inputs; otherwise the
/// crash (panic message or sanitizer report), the input libFuzzer saved, and how to replay it.
fn judge(
    target: &str,
    output: &str,
    succeeded: bool,
    elapsed: Duration,
    corpus_size: usize,
    log: &Path,
) -> Check {
    let stats = FuzzStats::parse(output);
    match stats.execs {
        Some(execs) if succeeded && execs > 0 => {
            let (cov, ft) = stats.coverage.unwrap_or_default();
            Check::pass(format!(
                "fuzz: {target} — {execs} execs in {} ({} exec/s), cov {cov}, ft {ft}, \
                 corpus {corpus_size}, peak {} MiB",
                report::seconds(elapsed),
                stats.execs_per_second.unwrap_or(0),
                stats.peak_rss_mb.unwrap_or(0)
            ))
        }
        _ if succeeded => Check::fail(
            format!("fuzz: {target}"),
            format!(
                "libFuzzer reported no executions:\n{}\n(full output: {})",
                last_lines(output, 10),
                log.display()
            ),
        ),
        _ => Check::fail(format!("fuzz: {target}"), crash_report(target, output, log)),
    }
}

/// The lines that say what crashed, where the input went, and the replay command.
fn crash_report(target: &str, output: &str, log: &Path) -> String {
    let mut lines: Vec<&str> = Vec::new();
    let mut keep = 0;
    for line in output.lines() {
        let starts = line.contains("panicked at")
            || line.contains("==ERROR:")
            || line.starts_with("SUMMARY:")
            || line.contains("deadly signal")
            || line.contains("timeout after");
        if starts {
            keep = 4;
        }
        if keep > 0 {
            lines.push(line);
            keep -= 1;
        }
        if lines.len() >= 16 {
            break;
        }
    }
    let artifact = output.lines().find_map(|line| {
        let (_, rest) = line.split_once("Test unit written to ")?;
        Some(rest.trim())
    });
    let mut report = if lines.is_empty() {
        last_lines(output, 15)
    } else {
        lines.join("\n")
    };
    if let Some(artifact) = artifact {
        report.push_str(&format!(
            "\ninput: {artifact}\nreplay: cargo +{} fuzz run --fuzz-dir {FUZZ_DIR} {target} \
             {artifact}",
            rust_tools::NIGHTLY
        ));
    }
    report.push_str(&format!("\n(full output: {})", log.display()));
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Verdict;

    const PASSING: &str = "\
INFO: Seed: 123
#2\tINITED cov: 400 ft: 500 corp: 20/1Kb exec/s: 0 rss: 40Mb
#227783\tDONE   cov: 812 ft: 2034 corp: 32/3Kb lim: 80 exec/s: 14236 rss: 87Mb
Done 227783 runs in 16 second(s)
stat::number_of_executed_units: 227783
stat::average_exec_per_sec:     14236
stat::new_units_added:          12
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              87
";

    const CRASHING: &str = "\
#1234\tNEW    cov: 900 ft: 1200 corp: 80/9Kb lim: 40 exec/s: 600 rss: 60Mb
thread '<unnamed>' panicked at fuzz_targets/kcore_ioctls.rs:300:17:
assertion `left == right` failed: table pages
  left: 3
 right: 2
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
==4242== ERROR: libFuzzer: deadly signal
MS: 2 ChangeBit-InsertByte-; base unit: 0123
artifact_prefix='/w/tests/fuzz/artifacts/kcore_ioctls/'; Test unit written to /w/tests/fuzz/artifacts/kcore_ioctls/crash-abc
stat::number_of_executed_units: 1235
";

    #[test]
    fn a_clean_run_passes_with_its_exec_count() {
        let check = judge(
            "alloc_info",
            PASSING,
            true,
            Duration::from_secs(16),
            21,
            Path::new("/l"),
        );
        assert_eq!(check.verdict, Verdict::Pass);
        assert_eq!(
            check.name,
            "fuzz: alloc_info — 227783 execs in 16.0 s (14236 exec/s), cov 812, ft 2034, \
             corpus 21, peak 87 MiB"
        );
    }

    #[test]
    fn a_crash_fails_with_the_panic_the_input_and_the_replay_command() {
        let check = judge(
            "kcore_ioctls",
            CRASHING,
            false,
            Duration::from_secs(3),
            80,
            Path::new("/l"),
        );
        let Verdict::Fail(reason) = check.verdict else {
            panic!("{check:?}");
        };
        assert!(
            reason.contains("panicked at fuzz_targets/kcore_ioctls.rs:300:17"),
            "{reason}"
        );
        assert!(reason.contains("table pages"), "{reason}");
        assert!(
            reason.contains("input: /w/tests/fuzz/artifacts/kcore_ioctls/crash-abc"),
            "{reason}"
        );
        assert!(reason.contains(&format!(
            "replay: cargo +{} fuzz run --fuzz-dir tests/fuzz kcore_ioctls",
            rust_tools::NIGHTLY
        )));
    }

    #[test]
    fn a_run_that_executed_nothing_is_a_failure() {
        let check = judge(
            "page_table",
            "INFO: Seed: 1\n",
            true,
            Duration::ZERO,
            0,
            Path::new("/l"),
        );
        assert!(matches!(check.verdict, Verdict::Fail(_)), "{check:?}");
        assert_eq!(
            FuzzStats::parse(PASSING),
            FuzzStats {
                execs: Some(227_783),
                execs_per_second: Some(14_236),
                peak_rss_mb: Some(87),
                coverage: Some((812, 2034)),
            }
        );
    }
}
