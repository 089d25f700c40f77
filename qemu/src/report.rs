//! Checks, steps and the closing report with its `N passed, M failed` line.

use std::fmt;
use std::time::Duration;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It ran and passed.
    Pass,
    /// It ran and failed, or could not run although it should have; says why.
    Fail(String),
    /// It was skipped; says why. Never counted as passed.
    Skip(String),
}

/// One named check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it went.
    pub verdict: Verdict,
}

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            verdict: Verdict::Pass,
        }
    }

    /// A failed check and why.
    pub fn fail(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            verdict: Verdict::Fail(reason.into()),
        }
    }

    /// A skipped check and why.
    pub fn skip(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            verdict: Verdict::Skip(reason.into()),
        }
    }
}

/// Counts of tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Passed.
    pub passed: u64,
    /// Failed (or could not run).
    pub failed: u64,
    /// Skipped.
    pub skipped: u64,
}

impl Tally {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

impl fmt::Display for Tally {
    /// The project's closing-line format: `N passed, M failed` and `, K skipped` only if K > 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// One step of a run (provision, clippy, cargo test, a guest boot, …) and its checks.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// Title shown in the report.
    pub title: String,
    /// Checks reported by name.
    pub checks: Vec<Check>,
    /// Tests counted from a tool's own summary without a check each (cargo test's
    /// `test result:` lines); their failures are also listed in `checks` by name.
    pub bulk: Tally,
    /// Whether passing checks are listed one per line (guest tests) or only counted.
    pub list_passes: bool,
    /// Extra lines shown under the title (kernel version, log paths, notes).
    pub notes: Vec<String>,
    /// Wall-clock time the step took.
    pub elapsed: Duration,
}

impl Step {
    /// An empty step titled `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    /// Everything this step counts.
    pub fn tally(&self) -> Tally {
        let mut tally = self.bulk;
        for check in &self.checks {
            match check.verdict {
                Verdict::Pass => tally.passed += 1,
                Verdict::Fail(_) => tally.failed += 1,
                Verdict::Skip(_) => tally.skipped += 1,
            }
        }
        tally
    }

    /// Renders the step for the closing report. A step that counts nothing (provisioning that
    /// went well, a step not written yet) shows `[--]` and no counts.
    pub fn render(&self) -> String {
        let tally = self.tally();
        let elapsed = seconds(self.elapsed);
        let mut out = if tally == Tally::default() {
            format!("[--] {} ({elapsed})\n", self.title)
        } else {
            let status = if tally.failed > 0 { "FAIL" } else { "ok" };
            format!("[{status}] {} — {tally} ({elapsed})\n", self.title)
        };
        for note in &self.notes {
            out.push_str(&format!("       {note}\n"));
        }
        for check in &self.checks {
            let (label, reason) = match &check.verdict {
                Verdict::Pass if !self.list_passes => continue,
                Verdict::Pass => ("ok  ", None),
                Verdict::Fail(reason) => ("FAIL", Some(reason)),
                Verdict::Skip(reason) => ("SKIP", Some(reason)),
            };
            out.push_str(&format!("   {label} {}\n", check.name));
            if let Some(reason) = reason {
                for line in reason.lines() {
                    out.push_str(&format!("          {line}\n"));
                }
            }
        }
        out
    }
}

/// Formats a duration as seconds with one decimal.
pub fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// The whole report: every step, then the total as the very last line.
pub fn render(steps: &[Step]) -> String {
    let mut total = Tally::default();
    let mut out = String::from("\n==== extmem report ====\n");
    for step in steps {
        out.push_str(&step.render());
        total.add(step.tally());
    }
    out.push_str(&format!("{total}\n"));
    out
}

/// Whether the run as a whole passed: nothing failed and something was tested.
pub fn passed(steps: &[Step]) -> bool {
    let mut total = Tally::default();
    for step in steps {
        total.add(step.tally());
    }
    total.failed == 0 && total.passed > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_line_mentions_skips_only_when_there_are_some() {
        let mut tally = Tally {
            passed: 3,
            failed: 1,
            skipped: 0,
        };
        assert_eq!(tally.to_string(), "3 passed, 1 failed");
        tally.skipped = 2;
        assert_eq!(tally.to_string(), "3 passed, 1 failed, 2 skipped");
    }

    #[test]
    fn step_tally_adds_checks_to_bulk_counts() {
        let mut step = Step::new("cargo test");
        step.bulk = Tally {
            passed: 10,
            failed: 0,
            skipped: 1,
        };
        step.checks.push(Check::fail("hw::x", "assertion failed"));
        step.checks.push(Check::skip("y", "no device"));
        assert_eq!(
            step.tally(),
            Tally {
                passed: 10,
                failed: 1,
                skipped: 2
            }
        );
    }

    #[test]
    fn report_ends_with_the_total_and_lists_failures_with_reasons() {
        let mut guest = Step::new("guest");
        guest.list_passes = true;
        guest.checks.push(Check::pass("guest-env: 1 vgem found"));
        guest
            .checks
            .push(Check::fail("guest-env: 2 import", "expected: a\nseen: b"));
        let mut fmt = Step::new("fmt");
        fmt.checks.push(Check::pass("cargo fmt --check"));
        let mut provision = Step::new("provision");
        provision.notes.push("kernel 6.12".into());
        let text = render(&[provision, fmt, guest]);
        assert!(
            text.contains("[--] provision (0.0 s)\n       kernel 6.12\n"),
            "{text}"
        );
        assert!(
            text.contains("[ok] fmt — 1 passed, 0 failed (0.0 s)\n"),
            "{text}"
        );
        assert!(text.contains("[FAIL] guest — 1 passed, 1 failed"), "{text}");
        assert!(text.ends_with("\n2 passed, 1 failed\n"), "{text}");
        assert!(text.contains("   ok   guest-env: 1 vgem found\n"), "{text}");
        assert!(text
            .contains("   FAIL guest-env: 2 import\n          expected: a\n          seen: b\n"));
        assert!(!text.contains("ok   cargo fmt --check"), "{text}");
    }

    #[test]
    fn nothing_tested_is_not_a_pass() {
        assert!(!passed(&[Step::new("empty")]));
        let mut step = Step::new("one");
        step.checks.push(Check::pass("x"));
        assert!(passed(&[step.clone()]));
        step.checks.push(Check::fail("y", "z"));
        assert!(!passed(&[step]));
    }
}
