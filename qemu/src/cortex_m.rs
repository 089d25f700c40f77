//! The Cortex-M step of the suite: extmem-hw's and extmem-kcore's no_std tests on a 32-bit
//! Cortex-M3 under `qemu-system-arm` (lm3s6965evb), from `tests/cortex-m`.
//!
//! The test crate is a cargo workspace of its own whose `.cargo/config.toml` links with
//! cortex-m-rt's and defmt's linker scripts, so cargo is started in its directory. Each of its
//! test binaries ([`TEST_BINARIES`]) is a defmt-test harness, run in its own QEMU: it logs
//! defmt frames over semihosting and ends QEMU with a semihosting exit, status 0 after
//! `all tests passed!` and 101 after a panic. QEMU's
//! stdout (the binary defmt stream) goes to a file, which `defmt-print --json` decodes once
//! QEMU is gone, so a run that hangs still shows which test it hung in.

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::host_command;
use crate::report::{self, Check, Step};
use crate::rust_tools::{self, CargoTool};
use crate::workspace::Workspace;

/// The test crate, relative to the workspace root.
pub const TEST_CRATE: &str = "tests/cortex-m";
/// Its defmt-test binaries (`[[test]] name`), one per crate whose cases they run; checks
/// are named `cortex-m: <binary>: <test>`.
const TEST_BINARIES: [&str; 2] = ["hw", "kcore"];
/// The triple its `.cargo/config.toml` builds for, also passed explicitly so that a
/// `CARGO_BUILD_TARGET` in the environment cannot change it.
const TARGET: &str = "thumbv7m-none-eabi";
/// The whole run takes well under a second; this only bounds a hang.
const QEMU_TIMEOUT: Duration = Duration::from_secs(60);
/// defmt-print 1.x decodes defmt 1's wire format (version 4).
const DEFMT_PRINT: CargoTool = CargoTool {
    krate: "defmt-print",
    version: "^1",
    binary: "defmt-print",
};
/// Title of the report step.
const TITLE: &str = "Cortex-M tests (qemu-system-arm, cortex-m3)";

/// Builds and runs the Cortex-M tests and reports each as a check named `cortex-m: <test>`.
pub fn run_tests(workspace: &Workspace) -> Step {
    let started = Instant::now();
    let mut step = Step::new(TITLE);
    step.list_passes = true;
    let logs = workspace.output_dir().join("logs");
    if let Err(err) = fs::create_dir_all(&logs) {
        step.checks.push(Check::fail(
            "cortex-m: logs",
            format!("{}: {err}", logs.display()),
        ));
        step.elapsed = started.elapsed();
        return step;
    }
    let build_started = Instant::now();
    let elfs = match build(workspace, &logs) {
        Ok(elfs) => {
            step.notes.push(format!(
                "built in {}",
                report::seconds(build_started.elapsed())
            ));
            elfs
        }
        Err(err) => {
            step.checks
                .push(Check::fail(err.check_name(), err.to_string()));
            step.elapsed = started.elapsed();
            return step;
        }
    };
    for (binary, elf) in elfs {
        match run(workspace, &logs, binary, &elf) {
            Ok(run) => {
                step.notes
                    .extend(run.notes.into_iter().map(|n| format!("{binary}: {n}")));
                step.checks
                    .extend(run.checks.into_iter().map(|check| Check {
                        name: format!("cortex-m: {binary}: {}", check.name),
                        verdict: check.verdict,
                    }));
            }
            Err(err) => step.checks.push(Check::fail(
                format!("{} ({binary})", err.check_name()),
                err.to_string(),
            )),
        }
    }
    step.elapsed = started.elapsed();
    step
}

/// Why the tests could not be run at all.
#[derive(Debug)]
pub enum CortexMError {
    /// `cargo install defmt-print` failed, or installed no binary.
    DefmtPrint(String),
    /// The test binary did not build.
    Build(String),
    /// QEMU could not be started or waited for.
    Qemu(String),
    /// defmt-print could not decode the stream.
    Decode(String),
    /// A log file could not be written or read.
    Io(String),
}

impl CortexMError {
    fn check_name(&self) -> &'static str {
        match self {
            Self::DefmtPrint(_) => "cortex-m: defmt-print",
            Self::Build(_) => "cortex-m: build",
            Self::Qemu(_) => "cortex-m: qemu-system-arm",
            Self::Decode(_) => "cortex-m: decode",
            Self::Io(_) => "cortex-m: logs",
        }
    }
}

impl fmt::Display for CortexMError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DefmtPrint(why) => write!(f, "defmt-print is not available: {why}"),
            Self::Build(why) => write!(f, "the Cortex-M tests did not build: {why}"),
            Self::Qemu(why) | Self::Decode(why) | Self::Io(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for CortexMError {}

/// A finished run: one check per test (bare test names), plus checks for anything else that
/// went wrong, and notes for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CortexMRun {
    /// Per-test checks, then run-level failures (exit status, startup panics).
    pub checks: Vec<Check>,
    /// Lines for the report (counts, times, log paths).
    pub notes: Vec<String>,
}

/// How QEMU ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuEnd {
    /// It exited by itself with this status code (`None`: killed by a signal).
    Exited(Option<i32>),
    /// It was still running at the time limit and was killed.
    TimedOut(Duration),
}

impl fmt::Display for QemuEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(Some(code)) => write!(f, "QEMU exited with status {code}"),
            Self::Exited(None) => write!(f, "QEMU was killed by a signal"),
            Self::TimedOut(limit) => write!(
                f,
                "QEMU was still running after {} s and was killed (a hang, or a fault: \
                 a stack overflow ends in the HardFault loop)",
                limit.as_secs()
            ),
        }
    }
}

/// Runs one built test binary and judges its output.
fn run(
    workspace: &Workspace,
    logs: &Path,
    binary: &str,
    elf: &Path,
) -> Result<CortexMRun, CortexMError> {
    let defmt_print = ensure_defmt_print(workspace)?;
    let raw_path = logs.join(format!("cortex-m-{binary}.defmt"));
    let stderr_path = logs.join(format!("cortex-m-{binary}.qemu-stderr"));
    let run_started = Instant::now();
    let end = run_qemu(elf, &raw_path, &stderr_path)?;
    let run_time = run_started.elapsed();
    let qemu_stderr = fs::read_to_string(&stderr_path)
        .map_err(|e| CortexMError::Io(format!("{}: {e}", stderr_path.display())))?;

    let json = decode(&defmt_print, elf, &raw_path)?;
    let frames = parse_frames(&json).map_err(CortexMError::Decode)?;
    let log_path = logs.join(format!("cortex-m-{binary}.log"));
    let text: String = frames.iter().map(|f| format!("{}\n", f.render())).collect();
    fs::write(&log_path, text)
        .map_err(|e| CortexMError::Io(format!("{}: {e}", log_path.display())))?;

    let mut run = judge(&frames, end, qemu_stderr.trim());
    run.notes
        .push(format!("ran in {} ({end})", report::seconds(run_time)));
    run.notes
        .push(format!("decoded log: {}", log_path.display()));
    Ok(run)
}

/// The defmt-print binary, installed with `cargo install` into the tool cache on first use.
fn ensure_defmt_print(workspace: &Workspace) -> Result<PathBuf, CortexMError> {
    rust_tools::ensure_installed(workspace, DEFMT_PRINT).map_err(CortexMError::DefmtPrint)
}

/// Builds every test binary and returns (name, path) for each. cargo runs in the test
/// crate's directory so that its own `.cargo/config.toml` applies.
fn build(workspace: &Workspace, logs: &Path) -> Result<Vec<(&'static str, PathBuf)>, CortexMError> {
    let mut command = Command::new(&workspace.cargo);
    command
        .current_dir(workspace.root.join(TEST_CRATE))
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
            "--target",
            TARGET,
        ])
        .args(TEST_BINARIES.iter().flat_map(|name| ["--test", name]))
        // RUSTFLAGS from the environment would replace the config's link arguments
        // (`-Tlink.x`, `-Tdefmt.x`) instead of adding to them.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    println!(
        "suite: {} (in {TEST_CRATE}) …",
        host_command::describe(&command)
    );
    let out = host_command::capture(&mut command).map_err(|e| {
        CortexMError::Build(format!(
            "could not run `{}`: {e}",
            host_command::describe(&command)
        ))
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = logs.join("cortex-m-build.log");
    fs::write(&log, format!("{stdout}{stderr}"))
        .map_err(|e| CortexMError::Io(format!("{}: {e}", log.display())))?;
    if !out.status.success() {
        return Err(CortexMError::Build(format!(
            "`{}` failed ({}):\n{}\n(full output: {})",
            host_command::describe(&command),
            out.status,
            host_command::indent(&last_lines(&stderr, 20)),
            log.display()
        )));
    }
    TEST_BINARIES
        .iter()
        .map(|&name| {
            Ok((
                name,
                test_executable(&stdout, name).map_err(CortexMError::Build)?,
            ))
        })
        .collect()
}

/// The executable of the test target `name` among cargo's JSON messages.
fn test_executable(messages: &str, name: &str) -> Result<PathBuf, String> {
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{e} in cargo's output {line:?}"))?;
        if message.get("reason").and_then(serde_json::Value::as_str) != Some("compiler-artifact") {
            continue;
        }
        let target = message.get("target");
        let is_named = target
            .and_then(|t| t.get("name"))
            .and_then(serde_json::Value::as_str)
            == Some(name);
        let is_test = target
            .and_then(|t| t.get("kind"))
            .and_then(serde_json::Value::as_array)
            .is_some_and(|kinds| kinds.iter().any(|k| k.as_str() == Some("test")));
        let executable = message
            .get("executable")
            .and_then(serde_json::Value::as_str);
        if let (true, true, Some(executable)) = (is_named, is_test, executable) {
            return Ok(PathBuf::from(executable));
        }
    }
    Err(format!(
        "cargo reported no executable for test target {name}"
    ))
}

/// The QEMU command line that runs `elf`.
fn qemu_command(elf: &Path) -> Command {
    let mut command = Command::new("qemu-system-arm");
    command.args([
        "-cpu",
        "cortex-m3",
        "-machine",
        "lm3s6965evb",
        "-nographic",
        // target=native: the semihosting console is QEMU's stdout, and SYS_EXIT ends QEMU
        // with the program's status.
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
    ]);
    command.arg(elf);
    command
}

/// Runs `elf` under QEMU, its stdout into `raw` and stderr into `stderr`, until it exits or
/// [`QEMU_TIMEOUT`] runs out.
fn run_qemu(elf: &Path, raw: &Path, stderr: &Path) -> Result<QemuEnd, CortexMError> {
    let create = |path: &Path| {
        File::create(path).map_err(|e| CortexMError::Io(format!("{}: {e}", path.display())))
    };
    let mut command = qemu_command(elf);
    command
        .stdin(Stdio::null())
        .stdout(create(raw)?)
        .stderr(create(stderr)?);
    println!("suite: {} …", host_command::describe(&command));
    let describe = host_command::describe(&command);
    let mut child = command
        .spawn()
        .map_err(|e| CortexMError::Qemu(format!("could not start `{describe}`: {e}")))?;
    let deadline = Instant::now() + QEMU_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(QemuEnd::Exited(status.code())),
            Ok(None) if Instant::now() >= deadline => {
                // Already gone is fine: it exited between the check and now.
                let _already_exited = child.kill();
                let _status = child.wait();
                return Ok(QemuEnd::TimedOut(QEMU_TIMEOUT));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                return Err(CortexMError::Qemu(format!(
                    "waiting for `{describe}` failed: {e}"
                )))
            }
        }
    }
}

/// Decodes the defmt stream in `raw` with the symbols of `elf`, as JSON lines.
fn decode(defmt_print: &Path, elf: &Path, raw: &Path) -> Result<String, CortexMError> {
    let input = File::open(raw).map_err(|e| CortexMError::Io(format!("{}: {e}", raw.display())))?;
    let mut command = Command::new(defmt_print);
    command.arg("-e").arg(elf).args(["--json", "stdin"]);
    command.stdin(input);
    host_command::stdout_text(&mut command).map_err(|e| CortexMError::Decode(e.to_string()))
}

/// One decoded defmt frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `ERROR`, `WARN`, …; `None` for `println!` frames (defmt-test's progress lines).
    pub level: Option<String>,
    /// The formatted message (may span lines).
    pub text: String,
    /// `file:line` of the logging statement, when the ELF has the debug info.
    pub location: Option<String>,
}

impl Frame {
    /// The frame as one line (or more) of the human-readable log.
    fn render(&self) -> String {
        match (&self.level, &self.location) {
            (Some(level), Some(at)) => format!("{level} {} @ {at}", self.text),
            (Some(level), None) => format!("{level} {}", self.text),
            (None, _) => self.text.clone(),
        }
    }

    fn is_error(&self) -> bool {
        self.level.as_deref() == Some("ERROR")
    }

    /// The frame as a failure reason: `defmt::panic!` and the `defmt::assert*` macros log
    /// `panicked at '…'` at the panic site, so their location is added; a core panic
    /// (`panicked at file:line:col:`) carries its own.
    fn reason(&self) -> String {
        match &self.location {
            Some(at) if self.text.starts_with("panicked at '") => {
                format!("{}\n(at {at})", self.text)
            }
            _ => self.text.clone(),
        }
    }
}

/// Parses `defmt-print --json` output: a `schema_version` line, then one frame per line.
pub fn parse_frames(json: &str) -> Result<Vec<Frame>, String> {
    let mut frames = Vec::new();
    for line in json.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("defmt-print: {e} in {line:?}"))?;
        if value.get("schema_version").is_some() {
            continue;
        }
        let text = value
            .get("data")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("defmt-print: a frame without `data`: {line:?}"))?;
        let level = value
            .get("level")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let location = value.get("location").and_then(|at| {
            let file = at.get("file")?.as_str()?;
            let line = at.get("line")?.as_u64()?;
            Some(format!("{file}:{line}"))
        });
        frames.push(Frame {
            level,
            text: text.to_owned(),
            location,
        });
    }
    Ok(frames)
}

/// defmt-test's progress line `(3/11) running `name`...` (or `ignoring`), as
/// (number, total, ignored, name).
fn progress(text: &str) -> Option<(usize, usize, bool, &str)> {
    let rest = text.strip_prefix('(')?;
    let (counts, rest) = rest.split_once(") ")?;
    let (number, total) = counts.split_once('/')?;
    let (verb, rest) = rest.split_once(" `")?;
    let name = rest.strip_suffix("`...")?;
    let ignored = match verb {
        "running" => false,
        "ignoring" => true,
        _ => return None,
    };
    Some((number.parse().ok()?, total.parse().ok()?, ignored, name))
}

/// What defmt-test prints once every test has passed.
const ALL_PASSED: &str = "all tests passed!";

/// Turns the decoded frames and the way QEMU ended into checks.
///
/// A test passes when the next one starts or `all tests passed!` follows; a test that is
/// still running when the stream ends failed, with the error frames it logged (its panic
/// message) as the reason, or else how QEMU ended. defmt-test stops at the first failure, so
/// the tests after it are not run; a note says how many.
pub fn judge(frames: &[Frame], end: QemuEnd, qemu_stderr: &str) -> CortexMRun {
    let mut run = CortexMRun::default();
    let mut running: Option<(&str, Vec<String>)> = None;
    let mut before_first: Vec<String> = Vec::new();
    let mut last = (0, None);
    let mut all_passed = false;
    for frame in frames {
        if let Some((number, total, ignored, name)) = progress(&frame.text) {
            if let Some((done, _)) = running.take() {
                run.checks.push(Check::pass(done));
            }
            last = (number, Some(total));
            if ignored {
                run.checks.push(Check::skip(name, "#[ignore]"));
            } else {
                running = Some((name, Vec::new()));
            }
        } else if frame.level.is_none() && frame.text == ALL_PASSED {
            if let Some((done, _)) = running.take() {
                run.checks.push(Check::pass(done));
            }
            all_passed = true;
        } else if frame.is_error() {
            match &mut running {
                Some((_, errors)) => errors.push(frame.reason()),
                None => before_first.push(frame.reason()),
            }
        }
    }
    let with_stderr = |reason: String| {
        if qemu_stderr.is_empty() {
            reason
        } else {
            format!(
                "{reason}\nQEMU's stderr:\n{}",
                host_command::indent(qemu_stderr)
            )
        }
    };
    if let Some((name, errors)) = running {
        let reason = if errors.is_empty() {
            format!("the test did not finish: {end}")
        } else if matches!(end, QemuEnd::Exited(Some(code)) if code != 0) {
            errors.join("\n")
        } else {
            format!("{}\n({end})", errors.join("\n"))
        };
        run.checks.push(Check::fail(name, with_stderr(reason)));
    }
    if !before_first.is_empty() {
        run.checks.push(Check::fail(
            "startup",
            with_stderr(format!(
                "before the first test: {}",
                before_first.join("\n")
            )),
        ));
    }
    let ran = run.checks.len();
    match (all_passed, end) {
        (true, QemuEnd::Exited(Some(0))) => {}
        (true, end) => run.checks.push(Check::fail(
            "exit status",
            with_stderr(format!("`{ALL_PASSED}` was printed, but {end}")),
        )),
        (false, _) if ran == 0 => run.checks.push(Check::fail(
            "run",
            with_stderr(format!("no test started: {end}")),
        )),
        (false, QemuEnd::Exited(Some(0))) => run.checks.push(Check::fail(
            "exit status",
            "QEMU exited with status 0 before defmt-test finished".to_owned(),
        )),
        (false, _) => {}
    }
    match last {
        (number, Some(total)) if !all_passed && number < total => run.notes.push(format!(
            "stopped at test {number} of {total}: defmt-test ends the run at the first failure, \
             so {} did not run",
            total - number
        )),
        (_, Some(total)) => run.notes.push(format!(
            "{total} tests on a Cortex-M3 (lm3s6965evb), defmt-test over semihosting"
        )),
        (_, None) => {}
    }
    run
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Verdict;

    /// `defmt-print --json` of a passing run of tests/cortex-m (trimmed to three tests).
    const PASSED: &str = r#"{"schema_version":1}
{"data":"(1/3) running `page_descriptor_matches_hand_worked_bits`...","host_timestamp":1795316992512271795,"level":null,"location":{"file":"tests/hw.rs","line":161,"module_path":{"crate_name":"hw","modules":["tests"],"function":"__defmt_test_entry"}},"target_timestamp":""}
{"data":"(2/3) running `read_only_block_descriptors_match_hand_worked_bits`...","host_timestamp":1795316992512300000,"level":null,"location":{"file":"tests/hw.rs","line":180,"module_path":{"crate_name":"hw","modules":["tests"],"function":"__defmt_test_entry"}},"target_timestamp":""}
{"data":"(3/3) running `table_descriptor_matches_hand_worked_bits`...","host_timestamp":1795316992512320000,"level":null,"location":{"file":"tests/hw.rs","line":198,"module_path":{"crate_name":"hw","modules":["tests"],"function":"__defmt_test_entry"}},"target_timestamp":""}
{"data":"all tests passed!","host_timestamp":1795316992512357222,"level":null,"location":{"file":"tests/hw.rs","line":153,"module_path":{"crate_name":"hw","modules":["tests"],"function":"__defmt_test_entry"}},"target_timestamp":""}
"#;

    /// A run where a `defmt::assert!` failed in the third of eleven tests (captured output).
    const ASSERT_FAILED: &str = r#"{"schema_version":1}
{"data":"(1/11) running `page_descriptor_matches_hand_worked_bits`...","host_timestamp":1795316993194500000,"level":null,"location":{"file":"tests/hw.rs","line":161,"module_path":{"crate_name":"hw","modules":["tests"],"function":"__defmt_test_entry"}},"target_timestamp":""}
{"data":"(2/11) running `read_only_block_descriptors_match_hand_worked_bits`...","host_timestamp":1795316993194520000,"level":null,"location":{"file":"tests/hw.rs","line":180,"module_path":{"crate_name":"hw","modules":["tests"],"function":"__defmt_test_entry"}},"target_timestamp":""}
{"data":"(3/11) running `table_descriptor_matches_hand_worked_bits`...","host_timestamp":1795316993194532031,"level":null,"location":{"file":"tests/hw.rs","line":198,"module_path":{"crate_name":"hw","modules":["tests"],"function":"__defmt_test_entry"}},"target_timestamp":""}
{"data":"panicked at 'Table { next: PhysAddr(0xabcd000) } at L1 encodes to 0x000000000abcd003, not 0x000000000abcd007'","host_timestamp":1795316993194543388,"level":"ERROR","location":{"file":"tests/hw.rs","line":129,"module_path":{"crate_name":"hw","modules":[],"function":"assert_encodes"}},"target_timestamp":""}
"#;

    /// A run where a core panic (`expect` on a failed translation) ended test 8.
    const CORE_PANIC: &str = r#"{"schema_version":1}
{"data":"(8/11) running `mali_block_maps_translates_splits_and_unmaps`...","host_timestamp":1795316993869487074,"level":null,"location":{"file":"tests/hw.rs","line":316,"module_path":{"crate_name":"hw","modules":["tests"],"function":"__defmt_test_entry"}},"target_timestamp":""}
{"data":"panicked at tests/hw.rs:149:42:\nmapped: NotMapped { va: GpuVa(0x100401234) }","host_timestamp":1795316993869495056,"level":"ERROR","location":{"file":"tests/hw.rs","line":42,"module_path":{"crate_name":"hw","modules":[],"function":"core_panic"}},"target_timestamp":""}
"#;

    fn frames(json: &str) -> Vec<Frame> {
        match parse_frames(json) {
            Ok(frames) => frames,
            Err(err) => panic!("{err}"),
        }
    }

    fn failure(run: &CortexMRun, name: &str) -> Option<String> {
        run.checks.iter().find_map(|c| match &c.verdict {
            Verdict::Fail(reason) if c.name == name => Some(reason.clone()),
            _ => None,
        })
    }

    #[test]
    fn a_passing_run_passes_every_test() {
        let run = judge(&frames(PASSED), QemuEnd::Exited(Some(0)), "");
        assert_eq!(
            run.checks,
            [
                Check::pass("page_descriptor_matches_hand_worked_bits"),
                Check::pass("read_only_block_descriptors_match_hand_worked_bits"),
                Check::pass("table_descriptor_matches_hand_worked_bits"),
            ]
        );
        assert_eq!(
            run.notes,
            ["3 tests on a Cortex-M3 (lm3s6965evb), defmt-test over semihosting"]
        );
    }

    #[test]
    fn a_failed_assertion_fails_its_test_with_the_message_and_location() {
        let run = judge(&frames(ASSERT_FAILED), QemuEnd::Exited(Some(101)), "");
        assert_eq!(run.checks.len(), 3, "{:?}", run.checks);
        assert_eq!(run.checks[1].verdict, Verdict::Pass);
        assert_eq!(
            failure(&run, "table_descriptor_matches_hand_worked_bits").as_deref(),
            Some(
                "panicked at 'Table { next: PhysAddr(0xabcd000) } at L1 encodes to \
                 0x000000000abcd003, not 0x000000000abcd007'\n(at tests/hw.rs:129)"
            )
        );
        assert_eq!(
            run.notes,
            ["stopped at test 3 of 11: defmt-test ends the run at the first failure, so 8 did not run"]
        );
    }

    #[test]
    fn a_core_panic_keeps_its_own_location() {
        let run = judge(&frames(CORE_PANIC), QemuEnd::Exited(Some(101)), "");
        assert_eq!(
            failure(&run, "mali_block_maps_translates_splits_and_unmaps").as_deref(),
            Some("panicked at tests/hw.rs:149:42:\nmapped: NotMapped { va: GpuVa(0x100401234) }")
        );
    }

    #[test]
    fn a_hang_fails_the_running_test_and_says_so() {
        let json = PASSED
            .lines()
            .filter(|l| !l.contains(ALL_PASSED))
            .collect::<Vec<_>>()
            .join("\n");
        let limit = Duration::from_secs(60);
        let run = judge(&frames(&json), QemuEnd::TimedOut(limit), "lockup");
        let reason = failure(&run, "table_descriptor_matches_hand_worked_bits");
        let reason = reason.unwrap_or_default();
        assert!(
            reason.starts_with("the test did not finish: QEMU was still running after 60 s"),
            "{reason}"
        );
        assert!(reason.ends_with("QEMU's stderr:\n    lockup"), "{reason}");
    }

    #[test]
    fn passing_output_with_a_failing_exit_status_is_a_failure() {
        let run = judge(&frames(PASSED), QemuEnd::Exited(Some(1)), "");
        assert!(failure(&run, "exit status").is_some(), "{:?}", run.checks);
        let silent = judge(&[], QemuEnd::Exited(Some(0)), "");
        assert_eq!(
            failure(&silent, "run").as_deref(),
            Some("no test started: QEMU exited with status 0")
        );
    }

    #[test]
    fn progress_lines_parse_and_other_text_does_not() {
        assert_eq!(
            progress("(10/11) running `bad_arguments`..."),
            Some((10, 11, false, "bad_arguments"))
        );
        assert_eq!(
            progress("(2/3) ignoring `slow`..."),
            Some((2, 3, true, "slow"))
        );
        assert_eq!(progress("(2/3) skipping `slow`..."), None);
        assert_eq!(progress("all tests passed!"), None);
        assert!(parse_frames("{\"data\":1}").is_err());
        assert!(parse_frames("not json").is_err());
    }

    #[test]
    fn the_test_executable_comes_from_the_test_artifact() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"defmt","kind":["lib"]},"executable":null}
{"reason":"build-script-executed","package_id":"x"}
{"reason":"compiler-artifact","target":{"name":"hw","kind":["test"]},"executable":"/c/target/thumbv7m-none-eabi/debug/deps/hw-0123"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executable(messages, "hw"),
            Ok(PathBuf::from(
                "/c/target/thumbv7m-none-eabi/debug/deps/hw-0123"
            ))
        );
        assert!(test_executable(messages, "other").is_err());
    }

    #[test]
    fn qemu_runs_the_elf_on_a_cortex_m3_with_native_semihosting() {
        let line = host_command::describe(&qemu_command(Path::new("/t/hw-0123")));
        assert_eq!(
            line,
            "qemu-system-arm -cpu cortex-m3 -machine lm3s6965evb -nographic \
             -semihosting-config enable=on,target=native -kernel /t/hw-0123"
        );
    }
}
