//! A KTAP version 1 writer for guest programs.
//!
//! The output follows the kernel's `Documentation/dev-tools/ktap.rst`: a version line, a plan
//! `1..N`, then one `ok`/`not ok` line per test, each failure followed by `# ` diagnostic lines.
//! The host runner (`qemu/src/ktap.rs`) parses it back, so the format here is the contract.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

/// Why a check failed: what the test expected and what it saw instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What a working environment gives.
    pub expected: String,
    /// What this run gave.
    pub seen: String,
}

impl Failure {
    /// A failure from its two halves.
    pub fn new(expected: impl Into<String>, seen: impl Into<String>) -> Self {
        Self {
            expected: expected.into(),
            seen: seen.into(),
        }
    }

    /// An operation that should have succeeded returned an error.
    pub fn op(operation: impl fmt::Display, err: impl fmt::Display) -> Self {
        Self {
            expected: format!("{operation} succeeds"),
            seen: format!("{operation} failed: {err}"),
        }
    }
}

/// The result of one check.
pub type CheckResult<T> = Result<T, Failure>;

/// Writes one KTAP document to an output stream and counts what it wrote.
///
/// # Invariants
///
/// The header and plan are written by [`KtapWriter::begin`]; result numbers count up from 1.
pub struct KtapWriter<W: Write> {
    out: W,
    planned: usize,
    emitted: usize,
    failed: usize,
    write_error: Option<io::Error>,
}

impl KtapWriter<io::Stdout> {
    /// A writer on this process's standard output (line buffered, so every result line leaves the
    /// process as soon as it is written — a crash later still shows the results before it).
    pub fn stdout(planned: usize) -> Self {
        Self::begin(io::stdout(), planned)
    }
}

/// `result`, with an error turned into a failure that names the operation `what`.
pub fn io_op<T, E: fmt::Display>(what: impl fmt::Display, result: Result<T, E>) -> CheckResult<T> {
    result.map_err(|e| Failure::op(what, e))
}

/// A failure unless `seen == expected`, both shown as `what <value>`.
pub fn expect_eq<T: PartialEq + fmt::Debug>(what: &str, seen: T, expected: T) -> CheckResult<()> {
    if seen == expected {
        Ok(())
    } else {
        Err(Failure::new(
            format!("{what} {expected:?}"),
            format!("{what} {seen:?}"),
        ))
    }
}

impl<W: Write> KtapWriter<W> {
    /// Writes the version line and the plan for `planned` results.
    pub fn begin(out: W, planned: usize) -> Self {
        let mut writer = Self {
            out,
            planned,
            emitted: 0,
            failed: 0,
            write_error: None,
        };
        writer.line(format_args!("KTAP version 1"));
        writer.line(format_args!("1..{planned}"));
        writer
    }

    /// Records a check that ran and returns its value when it passed.
    pub fn check<T>(
        &mut self,
        description: &str,
        run: impl FnOnce() -> CheckResult<T>,
    ) -> Option<T> {
        match run() {
            Ok(value) => {
                self.pass(description);
                Some(value)
            }
            Err(failure) => {
                self.fail(description, &failure);
                None
            }
        }
    }

    /// Like [`KtapWriter::check`] for a check that needs the value of earlier checks; when that
    /// value is missing (an earlier check failed) this check fails too, saying so.
    pub fn check_after<P, T>(
        &mut self,
        description: &str,
        prerequisite: Option<P>,
        run: impl FnOnce(P) -> CheckResult<T>,
    ) -> Option<T> {
        match prerequisite {
            Some(input) => self.check(description, || run(input)),
            None => {
                self.fail(
                    description,
                    &Failure::new(
                        "the checks this one builds on passed",
                        "an earlier check it needs failed, so this one could not run",
                    ),
                );
                None
            }
        }
    }

    /// Writes an `ok` line.
    pub fn pass(&mut self, description: &str) {
        self.emitted += 1;
        let number = self.emitted;
        self.line(format_args!("ok {number} {}", one_line(description)));
    }

    /// Writes a `not ok` line followed by the diagnostic lines of `failure`.
    pub fn fail(&mut self, description: &str, failure: &Failure) {
        self.emitted += 1;
        self.failed += 1;
        let number = self.emitted;
        self.line(format_args!("not ok {number} {}", one_line(description)));
        self.line(format_args!("# expected: {}", one_line(&failure.expected)));
        self.line(format_args!("# seen: {}", one_line(&failure.seen)));
    }

    /// Writes an `ok ... # SKIP reason` line: the test did not run, which is not a pass.
    pub fn skip(&mut self, description: &str, reason: &str) {
        self.emitted += 1;
        let number = self.emitted;
        self.line(format_args!(
            "ok {number} {} # SKIP {}",
            one_line(description),
            one_line(reason)
        ));
    }

    /// Writes a free-form `# ` diagnostic line.
    pub fn diagnostic(&mut self, text: impl fmt::Display) {
        let text = text.to_string();
        self.line(format_args!("# {}", one_line(&text)));
    }

    /// Closes the document: flags a result count that differs from the plan and returns the
    /// process exit code (failure if any check failed, the count is off or output was lost).
    pub fn finish(mut self) -> ExitCode {
        if self.emitted != self.planned {
            let (planned, emitted) = (self.planned, self.emitted);
            self.line(format_args!(
                "# plan said {planned} results but {emitted} were written"
            ));
        }
        if let Err(err) = self.out.flush() {
            self.write_error.get_or_insert(err);
        }
        if let Some(err) = &self.write_error {
            eprintln!("ktap: could not write the results: {err}");
        }
        if self.failed == 0 && self.emitted == self.planned && self.write_error.is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// How many `not ok` results were written so far.
    pub fn failed(&self) -> usize {
        self.failed
    }

    fn line(&mut self, args: fmt::Arguments<'_>) {
        if let Err(err) = writeln!(self.out, "{args}") {
            // Keep the first error: `finish` turns it into a failing exit code.
            self.write_error.get_or_insert(err);
        }
    }
}

/// KTAP is line oriented: a description or diagnostic must not start a new line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(writer: KtapWriter<Vec<u8>>) -> String {
        String::from_utf8_lossy(&writer.out).into_owned()
    }

    #[test]
    fn writes_header_results_and_diagnostics() {
        let mut ktap = KtapWriter::begin(Vec::new(), 3);
        assert_eq!(ktap.check("first", || Ok(7)), Some(7));
        let missing: Option<u8> = ktap.check("second", || Err(Failure::new("4 bytes", "3 bytes")));
        assert_eq!(missing, None);
        ktap.skip("third", "no device");
        assert_eq!(ktap.failed(), 1);
        assert_eq!(
            written(ktap),
            "KTAP version 1\n1..3\nok 1 first\nnot ok 2 second\n# expected: 4 bytes\n\
             # seen: 3 bytes\nok 3 third # SKIP no device\n"
        );
    }

    #[test]
    fn check_after_fails_when_prerequisite_is_missing() {
        let mut ktap = KtapWriter::begin(Vec::new(), 1);
        let result = ktap.check_after("needs earlier", None::<u32>, |x| Ok(x + 1));
        assert_eq!(result, None);
        assert_eq!(ktap.failed(), 1);
        assert!(written(ktap).contains("not ok 1 needs earlier\n# expected:"));
    }

    #[test]
    fn finish_fails_on_a_short_count() {
        let mut ktap = KtapWriter::begin(Vec::new(), 2);
        ktap.pass("only one");
        assert_eq!(ktap.finish(), ExitCode::FAILURE);
    }

    #[test]
    fn finish_succeeds_when_all_planned_results_pass() {
        let mut ktap = KtapWriter::begin(Vec::new(), 1);
        ktap.pass("one");
        assert_eq!(ktap.finish(), ExitCode::SUCCESS);
    }

    #[test]
    fn newlines_in_descriptions_stay_on_one_line() {
        let mut ktap = KtapWriter::begin(Vec::new(), 1);
        ktap.fail("a\nb", &Failure::new("x\ny", "z"));
        assert!(written(ktap).contains("not ok 1 a b\n# expected: x y\n"));
    }
}
